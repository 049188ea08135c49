"""HTTP and WebSocket API: one router per area, thin over the domain code."""
