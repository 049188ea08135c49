"""Live sessions by id: in this process (`LocalSessions`, the default), or shared by the workers of a
cluster (`SharedSessions`: an HTTP conversation waits between turns in a snapshot store, and any worker
takes its next turn).

Turns of one session are taken one at a time in a worker. In a cluster a turn also holds the session's
turn lease in the store while it runs and saves with the version it started from, so that two workers
never apply turns to the same version: the second gets `ConflictError` (409; its client sends the turn
again) and never a stale state.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Protocol

from voxgate.errors import NotFoundError, UnavailableError
from voxgate.runtime.engine import AgentRuntime
from voxgate.runtime.session import Session
from voxgate.runtime.snapshot import SessionSnapshot

log = logging.getLogger("voxgate.runtime")

NO_SESSION = "no live session with that id (it may have ended or expired)"
#: the channels whose conversations may continue on another worker: one HTTP request per turn (a
#: socket, a call or a chat WebSocket, stays on the worker it is connected to)
PORTABLE_CHANNELS = frozenset({"http"})
#: the end reason of a conversation that started but could not be handed to the snapshot store
STORE_UNAVAILABLE = "unavailable"


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


class SnapshotStore(Protocol):
    """Where HTTP conversations wait between turns when several workers serve them (the Redis one is
    `voxgate.cluster.sessions.RedisSnapshotStore`). A snapshot has a version, 1 when created and one more
    at each save; a turn holds the session's turn lease (`token`) from `checkout` to `save`, `delete` or
    `release`. Errors: `ConflictError` when another worker holds the turn or saved first,
    `UnavailableError` when the store cannot be reached."""

    async def create(self, session_id: str, data: bytes) -> int:
        """Store a new conversation; its version (1)."""
        ...

    async def load(self, session_id: str) -> tuple[bytes, int] | None:
        """The snapshot and its version, or None (ended or expired)."""
        ...

    async def checkout(self, session_id: str, token: str, known_version: int | None) -> tuple[int, bytes | None] | None:
        """Take the turn lease: the current version, and the snapshot unless `known_version` is current
        (None: no such conversation). ConflictError while another turn holds the lease."""
        ...

    async def save(self, session_id: str, data: bytes, expected_version: int, token: str) -> int:
        """Store the snapshot after a turn taken on `expected_version` and give the lease back; the new
        version. ConflictError when the version moved on or another turn holds the lease."""
        ...

    async def release(self, session_id: str, token: str) -> None:
        """Give the lease back without saving (the turn failed: the next one starts from the last save)."""
        ...

    async def delete(self, session_id: str, token: str) -> None:
        """The conversation ended in the turn holding the lease: forget it."""
        ...

    async def delete_idle(self, session_id: str, version: int) -> bool:
        """Forget the conversation if `version` is still its latest and no turn holds it (an idle one, to
        be closed by the worker that took its last turn); whether it did."""
        ...


#: the runtime a conversation continues on: (agent, bundle digest it started on) -> runtime, or None
RuntimeResolver = Callable[[str, str | None], Awaitable[AgentRuntime | None]]
#: this worker becomes the holder of a conversation's stored row; False when the row is closed already
Claim = Callable[[str], Awaitable[bool]]


@dataclass
class _Entry:
    session: Session
    seen: float  # when it was last used or last took a turn (clock seconds)
    turns: int  # its turn number then


class _TurnLocks:
    """One lock per session id while anyone holds or waits for it (then forgotten)."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        """Hold `key`'s lock, waiting behind whoever holds it."""
        lock, users = self._locks.get(key, (None, 0))
        if lock is None:
            lock = asyncio.Lock()
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    def busy(self, key: str) -> bool:
        """Whether a turn of `key` runs or waits."""
        return key in self._locks


class LocalSessions:
    """In-process registry; sessions idle longer than `idle_s` are closed with `idle_timeout` (their
    stored rows closed with them). A session is busy while it is fetched (an HTTP turn) or takes
    turns (a chat socket holds its session and never fetches it)."""

    def __init__(self, idle_s: float = 900.0, clock: Callable[[], float] = time.monotonic):
        self.idle_s = idle_s
        self.clock = clock
        self._sessions: dict[str, _Entry] = {}
        self._locks = _TurnLocks()

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

    # ---- conversations over HTTP: one request per turn ----------------------------------------------

    async def begin(self, session: Session) -> None:
        """Keep a conversation that has just started (its greeting said) for its turns to come."""
        self.add(session)

    @asynccontextmanager
    async def turn(self, session_id: str) -> AsyncIterator[Session]:
        """The session, for one turn: turns of one session wait for each other. NotFoundError when there
        is no such live session; an ended one is forgotten after its turn."""
        async with self._locks.hold(session_id):
            session = self.get(session_id)
            if session is None:
                raise NotFoundError(NO_SESSION)
            yield session
            if session.ended:
                self.remove(session_id)

    async def end(self, session_id: str, reason: str) -> Session:
        """Close a conversation (its outcome decided, if it was not) and forget it; the closed session."""
        async with self.turn(session_id) as session:
            await session.close(reason)
        return session

    # ---- idle sessions ----------------------------------------------------------------------------------

    async def reap(self) -> int:
        """Close idle sessions; returns how many were closed."""
        now = self.clock()
        stale = []
        for sid, entry in self._sessions.items():
            if entry.session.turn_no != entry.turns or self._locks.busy(sid):
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


@dataclass
class _Hot:
    """An HTTP conversation this worker took a turn of, kept while it is in use: its version in the store."""

    session: Session
    version: int
    seen: float


class SharedSessions(LocalSessions):
    """The registry of a worker in a cluster. An HTTP conversation lives in `store` between turns: a turn
    takes its lease, continues this worker's copy if it is still the latest (else restores the stored one
    on the bundle version the conversation started on, and `claim`s its row), then saves it with the
    version it started from. Socket conversations (chat WebSockets; calls are not kept here) stay local,
    as in `LocalSessions`.

    An idle conversation is closed, with its real outcome, by the worker that holds its latest version; a
    worker that stops lets go of its HTTP conversations without closing them: another one continues them."""

    def __init__(
        self,
        store: SnapshotStore,
        *,
        resolve: RuntimeResolver,
        claim: Claim | None = None,
        idle_s: float = 900.0,
        clock: Callable[[], float] = time.monotonic,
        portable: frozenset[str] = PORTABLE_CHANNELS,
    ):
        super().__init__(idle_s=idle_s, clock=clock)
        self.store = store
        self.resolve = resolve
        self.claim = claim
        self.portable = portable
        self._hot: dict[str, _Hot] = {}

    def ids(self) -> frozenset[str]:
        """The conversations this worker holds: its sockets' and the HTTP ones it has a copy of."""
        return super().ids() | frozenset(self._hot)

    def __len__(self) -> int:
        return super().__len__() + len(self._hot)

    async def begin(self, session: Session) -> None:
        """Store a conversation that has just started, so that any worker can take its next turn. When the
        store cannot take it, the conversation is closed (`unavailable`) and the error raised."""
        if session.channel not in self.portable:
            self.add(session)
            return
        try:
            version = await self.store.create(session.id, session.snapshot().to_bytes())
        except BaseException:
            await asyncio.shield(session.close(STORE_UNAVAILABLE))
            raise
        self._hot[session.id] = _Hot(session, version, self.clock())

    @asynccontextmanager
    async def turn(self, session_id: str) -> AsyncIterator[Session]:
        """The conversation, for one turn, as the store holds it after its last completed turn; saved (or
        deleted, when it ended) after the turn. NotFoundError when it ended or expired, ConflictError when
        another worker is taking a turn of it or saved one first, UnavailableError when the store or the
        bundle version it started on cannot be had."""
        if session_id in self._sessions:
            async with super().turn(session_id) as session:
                yield session
            return
        async with self._locks.hold(session_id):
            token = secrets.token_hex(16)
            hot = self._hot.get(session_id)
            found = await self.store.checkout(session_id, token, hot.version if hot is not None else None)
            if found is None:
                self._let_go(session_id)
                raise NotFoundError(NO_SESSION)
            version, data = found
            done = False
            try:
                if hot is None or data is not None:
                    self._let_go(session_id)
                    hot = _Hot(await self._restore(session_id, data, token), version, self.clock())
                    self._hot[session_id] = hot
                hot.seen = self.clock()
                yield hot.session
                if hot.session.ended:
                    self._hot.pop(session_id, None)
                    await self.store.delete(session_id, token)
                else:
                    hot.version = await self.store.save(session_id, hot.session.snapshot().to_bytes(), version, token)
                done = True
            except BaseException:
                self._let_go(session_id)  # its copy may hold half a turn: the next turn reloads the last save
                raise
            finally:
                if not done:
                    await self._release(session_id, token)

    async def end(self, session_id: str, reason: str) -> Session:
        """Close a conversation (its outcome decided, if it was not) and forget it, on whichever worker
        took its last turn; the closed session."""
        async with self.turn(session_id) as session:
            await session.close(reason)
        return session

    async def reap(self) -> int:
        """Close idle socket conversations, and the idle HTTP ones whose latest version this worker took;
        forget the copies of those another worker continued. Returns how many were closed."""
        closed = await super().reap()
        now = self.clock()
        for sid, hot in list(self._hot.items()):
            if self._locks.busy(sid) or now - hot.seen <= self.idle_s:
                continue
            async with self._locks.hold(sid):
                if self._hot.get(sid) is not hot:
                    continue
                try:
                    latest = await self.store.delete_idle(sid, hot.version)
                except Exception:  # the store is away: try again at the next pass
                    log.warning("could not check idle conversation %s in the snapshot store", sid, exc_info=True)
                    continue
                self._hot.pop(sid, None)
                if not latest:  # another worker took a turn since (or holds one now): it is theirs
                    hot.session.suspend()
                    continue
                try:
                    await hot.session.close("idle_timeout")
                    closed += 1
                except Exception:  # its row stays open: a repair pass closes it later
                    log.exception("closing idle session %s failed", sid)
        return closed

    async def close_all(self, reason: str) -> None:
        """Close every socket conversation with `reason`; let go of the HTTP ones (they go on elsewhere)."""
        for sid in list(self._hot):
            self._let_go(sid)
        await super().close_all(reason)

    async def _restore(self, session_id: str, data: bytes | None, token: str) -> Session:
        if data is None:  # (the store answers with the snapshot whenever no version is known)
            raise UnavailableError(f"the snapshot store answered without conversation {session_id}")
        snapshot = SessionSnapshot.from_bytes(data)
        runtime = await self.resolve(snapshot.agent, snapshot.bundle_digest)
        if runtime is None:
            raise UnavailableError(
                f"the version of '{snapshot.agent}' this conversation started on is not served by this worker"
            )
        session = Session.restore(snapshot, runtime)
        if self.claim is not None and not await self.claim(session_id):
            await self.store.delete(session_id, token)  # its row was closed (idle, or its worker repaired)
            raise NotFoundError(NO_SESSION)
        return session

    async def _release(self, session_id: str, token: str) -> None:
        try:
            await asyncio.shield(self.store.release(session_id, token))
        except Exception:  # the lease lapses on its own
            log.warning("could not give back the turn lease of %s", session_id, exc_info=True)

    def _let_go(self, session_id: str) -> None:
        hot = self._hot.pop(session_id, None)
        if hot is not None:
            hot.session.suspend()
