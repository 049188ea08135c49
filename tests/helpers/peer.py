"""A JSON WebSocket peer for the desk and chat tests: what it read is kept, so a test waits for one kind
of message and can show everything it saw when that never came."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from websockets.asyncio.client import connect

#: how long a peer waits for a message by default (a desk on a busy machine)
TIMEOUT_S = 20.0


class Peer:
    """A JSON WebSocket peer that keeps every message it read, so a test can wait for one kind."""

    def __init__(self, ws: Any):
        self.ws = ws
        self.seen: list[dict[str, Any]] = []

    async def send(self, **message: Any) -> None:
        await self.ws.send(json.dumps(message))

    async def expect(self, type_: str, /, timeout: float = TIMEOUT_S, **match: Any) -> dict[str, Any]:
        """The next message of `type_` whose fields match `match` (binary frames are passed over)."""
        async with asyncio.timeout(timeout):
            while True:
                raw = await self.ws.recv()
                if isinstance(raw, bytes):
                    continue
                msg = json.loads(raw)
                self.seen.append(msg)
                if msg.get("type") == type_ and all(msg.get(k) == v for k, v in match.items()):
                    return msg


async def escalated_chat(url: str) -> Peer:
    """A chat socket at `url` (ws://…/ws/chat/<agent>) whose caller asked for a person: the agent's
    conversation ended `escalated`, and the caller waits for the desk."""
    chat = Peer(await connect(url, proxy=None, open_timeout=10))
    await chat.expect("turn")
    await chat.send(type="text", text="I want to talk to a real person")
    turn = await chat.expect("turn")
    assert turn["ended"] and turn["outcome"] == "escalated", turn
    return chat
