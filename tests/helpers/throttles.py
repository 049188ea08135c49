"""Worker settings for tests that send many requests from one loopback address, and a chat socket
opened from a chosen one (the throttles count per client address)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import websockets

#: the agent the throttle tests start conversations with
AGENT = "harbor-support"

#: per-address limits lifted, so that generated requests and messages reach each route's and
#: protocol's own checks instead of the throttles (which have their own tests)
NO_THROTTLES: dict[str, Any] = {"chat_sessions_per_minute": 0, "anonymous_denials_per_minute": 1_000_000}


async def chat_socket(url: str, host: str, agent: str = AGENT) -> tuple[str, Any]:
    """A chat socket to the worker at `url` from the loopback address `host`: ("turn", the greeting) when
    it was let in, or ("closed", (code, reason))."""
    async with websockets.connect(
        url.replace("http://", "ws://") + f"/ws/chat/{agent}", open_timeout=10, local_addr=(host, 0)
    ) as ws:
        try:
            message = json.loads(await asyncio.wait_for(ws.recv(), timeout=30))
        except websockets.ConnectionClosed as closed:
            return "closed", (closed.rcvd.code, closed.rcvd.reason) if closed.rcvd else (None, "")
        return message["type"], message
