"""Live sessions by id, behind a small interface so a shared store can replace it later."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from voxgate.runtime.session import Session

log = logging.getLogger("voxgate.runtime")


class SessionRegistry(Protocol):
    """The live sessions of a worker, by id."""

    def add(self, session: Session) -> None:
        """Keep a session."""
        ...

    def get(self, session_id: str) -> Session | None:
        """The session with this id, or None."""
        ...

    def remove(self, session_id: str) -> None:
        """Forget a session (no error if it is not kept)."""
        ...

    def __len__(self) -> int: ...


@dataclass
class _Entry:
    session: Session
    seen: float  # when it was last used or last took a turn (clock seconds)
    turns: int  # its turn number then


class LocalSessions:
    """In-process registry; sessions idle longer than `idle_s` are closed with `idle_timeout` (their
    stored rows closed with them). A session is busy while it is fetched (an HTTP turn) or takes
    turns (a chat socket holds its session and never fetches it)."""

    def __init__(self, idle_s: float = 900.0, clock: Callable[[], float] = time.monotonic):
        self.idle_s = idle_s
        self.clock = clock
        self._sessions: dict[str, _Entry] = {}

    def add(self, session: Session) -> None:
        """Keep a session, seen now."""
        self._sessions[session.id] = _Entry(session, self.clock(), session.turn_no)

    def get(self, session_id: str) -> Session | None:
        """The session with this id, or None; marks it as seen now."""
        entry = self._sessions.get(session_id)
        if entry is None:
            return None
        entry.seen = self.clock()
        return entry.session

    def remove(self, session_id: str) -> None:
        """Forget a session without closing it (no error if it is not kept)."""
        self._sessions.pop(session_id, None)

    def ids(self) -> frozenset[str]:
        """The ids of the sessions kept."""
        return frozenset(self._sessions)

    def __len__(self) -> int:
        return len(self._sessions)

    async def reap(self) -> int:
        """Close idle sessions; returns how many were closed."""
        now = self.clock()
        stale = []
        for sid, entry in self._sessions.items():
            if entry.session.turn_no != entry.turns:
                entry.seen, entry.turns = now, entry.session.turn_no
            elif now - entry.seen > self.idle_s:
                stale.append(sid)
        for sid in stale:
            entry = self._sessions.pop(sid)
            try:
                await entry.session.close("idle_timeout")
            except Exception:  # its row stays open: the worker's repair pass closes it later
                log.exception("closing idle session %s failed", sid)
        return len(stale)

    async def close_all(self, reason: str) -> None:
        """Close every session with `reason` and forget them all."""
        for sid in list(self._sessions):
            entry = self._sessions.pop(sid)
            await entry.session.close(reason)

    async def reap_forever(self, every_s: float | None = None) -> None:
        """Reap every `every_s` (default: 30 s, or half the idle timeout when that is shorter)."""
        while True:
            await asyncio.sleep(every_s if every_s is not None else min(30.0, self.idle_s / 2))
            await self.reap()
