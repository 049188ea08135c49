"""Edges that carry a conversation in: text chat now; voice sockets and the browser phone next."""
