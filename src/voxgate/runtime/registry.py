"""Live sessions by id, behind a small interface so a shared store can replace it later."""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

from voxgate.runtime.session import Session


class SessionRegistry(Protocol):
    def add(self, session: Session) -> None: ...

    def get(self, session_id: str) -> Session | None: ...

    def remove(self, session_id: str) -> None: ...

    def __len__(self) -> int: ...


class LocalSessions:
    """In-process registry; sessions idle longer than `idle_s` are closed as abandoned."""

    def __init__(self, idle_s: float = 900.0):
        self.idle_s = idle_s
        self._sessions: dict[str, tuple[Session, float]] = {}

    def add(self, session: Session) -> None:
        self._sessions[session.id] = (session, time.monotonic())

    def get(self, session_id: str) -> Session | None:
        entry = self._sessions.get(session_id)
        if entry is None:
            return None
        self._sessions[session_id] = (entry[0], time.monotonic())
        return entry[0]

    def remove(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)

    def __len__(self) -> int:
        return len(self._sessions)

    async def reap(self) -> int:
        """Close idle sessions; returns how many were closed."""
        now = time.monotonic()
        stale = [sid for sid, (_, seen) in self._sessions.items() if now - seen > self.idle_s]
        for sid in stale:
            session, _ = self._sessions.pop(sid)
            await session.close("idle_timeout")
        return len(stale)

    async def close_all(self, reason: str) -> None:
        for sid in list(self._sessions):
            session, _ = self._sessions.pop(sid)
            await session.close(reason)

    async def reap_forever(self, every_s: float = 30.0) -> None:
        while True:
            await asyncio.sleep(every_s)
            await self.reap()
