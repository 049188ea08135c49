"""Worker liveness and crash repair: which workers are alive, and closing what a worker that is
gone left open.

Every worker registers a fresh id when it starts (`workers` row: environment, host, pid), beats
every `worker_heartbeat_s` and marks `stopped_at` when it stops cleanly. A worker is *live* while
it has not stopped and its last heartbeat is within `worker_liveness_timeout_s`. Sessions carry
the id of the worker that holds them (`sessions.worker_id`) and the time of their last turn
(`sessions.last_activity_at`).

A repair pass (at start-up, then with every heartbeat) looks at one environment:

- an open session (no `ended_at`) whose worker is stopped, unknown or silent past the liveness
  timeout is closed with `end_reason` ``worker_lost``, unless any worker can continue it (a
  *portable* channel: an HTTP chat whose state waits in the cluster's snapshot store between turns):
  that one goes on where the next turn lands and is closed ``idle_timeout`` once idle past
  `session_idle_timeout_s`, as its own worker would have;
- an open session of this worker that no conversation in this process holds any more, idle past
  `session_idle_timeout_s`, is closed with ``idle_timeout``;
- a handoff still ``waiting``, ``offered`` or ``accepted`` whose session's worker is gone fails with
  ``failure_reason`` ``worker_lost``; one of this worker that the live desk does not hold (an HTTP
  chat escalated, which no person can join, or a session closed by the idle rule) fails with
  ``session_closed`` once the idle timeout has passed since it was queued;
- rows written before workers registered (`worker_id` NULL) count as ``worker_lost`` once no other
  worker of the environment is live, or once a day has passed (no worker holds a conversation or a
  queued caller that long).

Sessions of another live worker are never touched. Each worker repairs its own rows (its idle
sessions, its handoffs nobody can join); what workers that are gone left open, and rows from before
workers registered, are the cluster's, and a worker repairs them only while it holds the reaper's
lease (`WorkerLiveness(lease=…)`; one process alone always holds it), so that N workers do not all
do the same work. Should two repair at once all the same (a lease that lapsed under a slow holder,
or no lease), nothing is closed twice: every change is conditional on the row still being open,
rows are locked in id order, and what a pass reports is only what it changed itself.

A repaired session's outcome is what analytics expects of a conversation that stopped without a
decision: ``escalated`` if it had escalated, ``unengaged`` if the caller never took a turn,
``abandoned`` otherwise.

Clocks of the workers' hosts are compared (heartbeats): keep them within a few seconds.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import func, select, update

from voxgate.clock import Clock, utcnow
from voxgate.cluster.lease import Lease, LocalLease
from voxgate.cluster.redis import RedisUnavailable
from voxgate.store.db import Database
from voxgate.store.models import HandoffRow, SessionRow, WorkerRow

log = logging.getLogger("voxgate.store.liveness")


WORKER_LOST = "worker_lost"  # the worker that held it stopped, crashed or stopped heartbeating
IDLE_TIMEOUT = "idle_timeout"  # nothing happened in it for the idle timeout and nothing holds it
SESSION_CLOSED = "session_closed"  # a handoff whose conversation closed with nobody left to carry it
OPEN_HANDOFF_STATUSES = ("waiting", "offered", "accepted")
LEGACY_STALE = dt.timedelta(days=1)  # rows from before workers registered: nobody holds them this long
AUDIT_IDS_PER_EVENT = 100  # ids per audit event (an event's data is at most 8 KiB)


def _aware(value: dt.datetime) -> dt.datetime:
    """SQLite hands back naive datetimes; every time stored here is UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


# ---- the worker registry ----------------------------------------------------------------------------


class WorkerRegistry(Protocol):
    """Where workers say they are alive. Blocking calls: run them in a thread."""

    def register(self, environment: str, host: str, pid: int) -> str: ...  # a fresh worker id

    def heartbeat(self, worker_id: str) -> bool: ...  # False: the worker is not registered (or stopped)

    def stop(self, worker_id: str) -> None: ...

    def live(self, environment: str, timeout_s: float) -> frozenset[str]: ...  # ids of the live workers


class SqlWorkerRegistry:
    """The registry on the `workers` table of the store."""

    def __init__(self, db: Database, clock: Clock = utcnow):
        self.db = db
        self.clock = clock

    def register(self, environment: str, host: str, pid: int) -> str:
        worker_id, now = uuid.uuid4().hex, self.clock()
        with self.db.orm() as orm, orm.begin():
            orm.add(
                WorkerRow(
                    id=worker_id, environment=environment, host=host[:200], pid=pid, started_at=now, heartbeat_at=now
                )
            )
        return worker_id

    def heartbeat(self, worker_id: str) -> bool:
        with self.db.orm() as orm, orm.begin():
            done = orm.execute(
                update(WorkerRow)
                .where(WorkerRow.id == worker_id, WorkerRow.stopped_at.is_(None))
                .values(heartbeat_at=self.clock())
            )
            return bool(done.rowcount)  # type: ignore[attr-defined]

    def stop(self, worker_id: str) -> None:
        with self.db.orm() as orm, orm.begin():
            orm.execute(
                update(WorkerRow)
                .where(WorkerRow.id == worker_id, WorkerRow.stopped_at.is_(None))
                .values(stopped_at=self.clock())
            )

    def live(self, environment: str, timeout_s: float) -> frozenset[str]:
        since = self.clock() - dt.timedelta(seconds=timeout_s)
        with self.db.orm() as orm:
            return frozenset(
                orm.scalars(
                    select(WorkerRow.id).where(
                        WorkerRow.environment == environment,
                        WorkerRow.stopped_at.is_(None),
                        WorkerRow.heartbeat_at >= since,
                    )
                )
            )


# ---- the repair decision ------------------------------------------------------------------------------


@dataclass(frozen=True)
class OpenSession:
    id: str
    worker_id: str | None
    channel: str
    started_at: dt.datetime
    last_activity_at: dt.datetime | None
    turn_count: int
    escalated: bool

    @property
    def last_seen(self) -> dt.datetime:
        return _aware(self.last_activity_at or self.started_at)


@dataclass(frozen=True)
class OpenHandoff:
    id: int
    session_id: str
    worker_id: str | None  # the worker of its session
    status: str
    created_at: dt.datetime
    session_open: bool


@dataclass(frozen=True)
class Facts:
    """What one repair pass knows: who is alive, what this process holds, and when it is."""

    me: str
    live_workers: frozenset[str]  # this worker counts as live whatever the table says
    now: dt.datetime
    idle_timeout: dt.timedelta
    liveness_timeout: dt.timedelta
    local_sessions: frozenset[str] = frozenset()  # conversations this process holds
    local_handoffs: frozenset[int] = frozenset()  # handoff rows this process's desk holds
    cluster_wide: bool = True  # this pass also repairs what others left (this worker holds the reaper's lease)
    portable_channels: frozenset[str] = frozenset()  # conversations of these any worker can continue

    def gone(self, worker_id: str) -> bool:
        return self.cluster_wide and worker_id != self.me and worker_id not in self.live_workers

    @property
    def alone(self) -> bool:
        """No other worker of the environment is live."""
        return not (self.live_workers - {self.me})


def session_verdict(s: OpenSession, facts: Facts) -> str | None:
    """Why an open session is to be closed now (`worker_lost`, `idle_timeout`), or None."""
    if s.worker_id is None:  # from before workers registered
        if not facts.cluster_wide or facts.now - s.last_seen < facts.liveness_timeout:
            return None  # (a conversation going on in something that does not register, e.g. `voxgate chat`)
        return WORKER_LOST if facts.alone or facts.now - s.last_seen >= LEGACY_STALE else None
    if s.worker_id == facts.me:
        if s.id in facts.local_sessions or facts.now - s.last_seen < facts.idle_timeout:
            return None
        return IDLE_TIMEOUT
    if not facts.gone(s.worker_id):
        return None
    if s.channel in facts.portable_channels:  # it goes on wherever its next turn lands, if one comes
        return IDLE_TIMEOUT if facts.now - s.last_seen >= facts.idle_timeout else None
    return WORKER_LOST


def handoff_verdict(h: OpenHandoff, facts: Facts, closing: Iterable[str] = ()) -> str | None:
    """Why a handoff still open is to fail now (`worker_lost`, `session_closed`), or None.
    `closing`: sessions this pass closes."""
    age = facts.now - _aware(h.created_at)
    if h.worker_id is None:
        if not facts.cluster_wide or age < facts.liveness_timeout:
            return None
        return WORKER_LOST if facts.alone or age >= LEGACY_STALE else None
    if h.worker_id == facts.me:
        if h.id in facts.local_handoffs:
            return None
        if h.session_id in closing or (not h.session_open and age >= facts.idle_timeout):
            return SESSION_CLOSED
        return None
    return WORKER_LOST if facts.gone(h.worker_id) else None


def repaired_outcome(s: OpenSession) -> str:
    """The outcome of a session closed by repair, in analytics' terms."""
    if s.escalated:
        return "escalated"
    return "abandoned" if s.turn_count > 0 else "unengaged"


@dataclass
class RepairReport:
    """What one pass changed (only what this pass changed: another worker may have been first)."""

    at: dt.datetime
    sessions: dict[str, list[str]] = field(default_factory=dict)  # reason -> session ids
    handoffs: dict[str, list[int]] = field(default_factory=dict)  # reason -> handoff ids
    lost_workers: list[str] = field(default_factory=list)  # workers whose rows were repaired
    lease: int | None = None  # the reaper lease's fencing token when the pass was cluster-wide

    @property
    def empty(self) -> bool:
        return not any(self.sessions.values()) and not any(self.handoffs.values())

    def counts(self) -> dict[str, dict[str, int]]:
        return {
            "sessions": {r: len(ids) for r, ids in sorted(self.sessions.items())},
            "handoffs": {r: len(ids) for r, ids in sorted(self.handoffs.items())},
        }

    def audit_data(self) -> list[dict[str, object]]:
        """The audit events' data: the counts in each, the ids spread over as many as they need."""
        items: list[tuple[str, str, str | int]] = [
            ("sessions", r, i) for r, ids in sorted(self.sessions.items()) for i in ids
        ]
        items += [("handoffs", r, i) for r, ids in sorted(self.handoffs.items()) for i in ids]
        chunks = [items[n : n + AUDIT_IDS_PER_EVENT] for n in range(0, len(items), AUDIT_IDS_PER_EVENT)] or [[]]
        out: list[dict[str, object]] = []
        for part, chunk in enumerate(chunks, 1):
            ids: dict[str, dict[str, list[str | int]]] = {}
            for kind, reason, ident in chunk:
                ids.setdefault(kind, {}).setdefault(reason, []).append(ident)
            data: dict[str, object] = {"counts": self.counts(), "lost_workers": self.lost_workers[:20], **ids}
            if self.lease is not None:
                data["lease"] = self.lease
            if len(chunks) > 1:
                data["part"] = f"{part}/{len(chunks)}"
            out.append(data)
        return out


class Repairer:
    """Repair passes for one environment on behalf of one worker (blocking: run in a thread).

    After the first pass (which reads every open session of the environment) a pass reads only the
    sessions started since the oldest one still open at the previous pass, so it stays cheap on a
    large table."""

    def __init__(
        self,
        db: Database,
        environment: str,
        worker_id: str,
        registry: WorkerRegistry,
        *,
        liveness_timeout_s: float,
        idle_timeout_s: float,
        clock: Clock = utcnow,
        portable_channels: Iterable[str] = (),
    ):
        self.db = db
        self.portable_channels = frozenset(portable_channels)
        self.environment = environment
        self.worker_id = worker_id
        self.registry = registry
        self.liveness_timeout = dt.timedelta(seconds=liveness_timeout_s)
        self.idle_timeout = dt.timedelta(seconds=idle_timeout_s)
        self.clock = clock
        self._since: dt.datetime | None = None  # sessions started before this were closed at the last pass
        self._legacy: set[str] = set()  # rows from before workers registered, still open at the last pass

    def facts(
        self, local_sessions: Iterable[str] = (), local_handoffs: Iterable[int] = (), *, cluster_wide: bool = True
    ) -> Facts:
        return Facts(
            me=self.worker_id,
            now=self.clock(),
            idle_timeout=self.idle_timeout,
            liveness_timeout=self.liveness_timeout,
            live_workers=self.registry.live(self.environment, self.liveness_timeout.total_seconds()),
            local_sessions=frozenset(local_sessions),
            local_handoffs=frozenset(local_handoffs),
            cluster_wide=cluster_wide,
            portable_channels=self.portable_channels,
        )

    def run(
        self,
        local_sessions: Iterable[str] = (),
        local_handoffs: Iterable[int] = (),
        *,
        cluster_wide: bool = True,
        lease: int | None = None,
    ) -> RepairReport:
        """One pass: this worker's own rows, and when `cluster_wide` (it holds the reaper's lease,
        whose fencing token `lease` the report carries) what gone workers left open."""
        facts = self.facts(local_sessions, local_handoffs, cluster_wide=cluster_wide)
        report = RepairReport(at=facts.now, lease=lease if cluster_wide else None)
        sessions = self._open_sessions() if cluster_wide else self._own_open_sessions()
        closing = {s.id: (verdict, s) for s in sessions if (verdict := session_verdict(s, facts)) is not None}
        if closing:
            self._close_sessions(closing, facts, report)
        handoffs = self._open_handoffs(own=not cluster_wide)
        failing = {h.id: verdict for h in handoffs if (verdict := handoff_verdict(h, facts, closing)) is not None}
        if failing:
            self._fail_handoffs(failing, facts, report)
        lost = {s.worker_id for s in sessions if s.id in closing and s.worker_id and s.worker_id != self.worker_id}
        lost |= {h.worker_id for h in handoffs if h.id in failing and h.worker_id and h.worker_id != self.worker_id}
        report.lost_workers = sorted(lost)
        if cluster_wide:  # (a pass over this worker's own rows leaves the cluster-wide bookmark as it was)
            still_open = [s for s in sessions if s.id not in closing]
            self._legacy = {s.id for s in still_open if s.worker_id is None}
            # (a session whose row is not committed yet may start a little before now)
            floor = facts.now - max(self.liveness_timeout, dt.timedelta(seconds=60))
            self._since = min([floor, *(_aware(s.started_at) for s in still_open if s.worker_id is not None)])
        return report

    # ---- reading ------------------------------------------------------------------------------------

    _SESSION_COLUMNS = (
        SessionRow.id,
        SessionRow.worker_id,
        SessionRow.channel,
        SessionRow.started_at,
        SessionRow.last_activity_at,
        SessionRow.turn_count,
        SessionRow.escalation_reason,
    )

    def _own_open_sessions(self) -> list[OpenSession]:
        """The open sessions of this worker (a pass that repairs only its own)."""
        stmt = select(*self._SESSION_COLUMNS).where(
            SessionRow.environment == self.environment,
            SessionRow.ended_at.is_(None),
            SessionRow.worker_id == self.worker_id,
        )
        with self.db.orm() as orm:
            return [_open_session(r) for r in orm.execute(stmt)]

    def _open_sessions(self) -> list[OpenSession]:
        stmt = select(*self._SESSION_COLUMNS).where(
            SessionRow.environment == self.environment, SessionRow.ended_at.is_(None)
        )
        with self.db.orm() as orm:
            if self._since is None:
                rows = list(orm.execute(stmt))
            else:
                rows = list(orm.execute(stmt.where(SessionRow.started_at >= self._since)))
                known = {r.id for r in rows}
                legacy = sorted(self._legacy - known)
                for n in range(0, len(legacy), 500):
                    rows += orm.execute(stmt.where(SessionRow.id.in_(legacy[n : n + 500])))
        return [_open_session(r) for r in rows]

    def _open_handoffs(self, *, own: bool = False) -> list[OpenHandoff]:
        """The open handoffs of the environment (`own`: of this worker's sessions only)."""
        stmt = (
            select(
                HandoffRow.id,
                HandoffRow.session_id,
                HandoffRow.status,
                HandoffRow.created_at,
                SessionRow.worker_id,
                SessionRow.ended_at,
            )
            .join(SessionRow, SessionRow.id == HandoffRow.session_id)
            .where(SessionRow.environment == self.environment, HandoffRow.status.in_(OPEN_HANDOFF_STATUSES))
        )
        if own:
            stmt = stmt.where(SessionRow.worker_id == self.worker_id)
        with self.db.orm() as orm:
            return [
                OpenHandoff(
                    id=r.id,
                    session_id=r.session_id,
                    worker_id=r.worker_id,
                    status=r.status,
                    created_at=_aware(r.created_at),
                    session_open=r.ended_at is None,
                )
                for r in orm.execute(stmt)
            ]

    # ---- writing (each change conditional on the row being open still; rows in id order) -----------

    def _close_sessions(self, closing: dict[str, tuple[str, OpenSession]], facts: Facts, report: RepairReport) -> None:
        with self.db.orm() as orm, orm.begin():
            for sid in sorted(closing):
                reason, s = closing[sid]
                done = orm.execute(
                    update(SessionRow)
                    .where(SessionRow.id == sid, SessionRow.ended_at.is_(None))
                    .values(ended_at=facts.now, end_reason=reason, outcome=repaired_outcome(s))
                )
                if done.rowcount:  # type: ignore[attr-defined]
                    report.sessions.setdefault(reason, []).append(sid)

    def _fail_handoffs(self, failing: dict[int, str], facts: Facts, report: RepairReport) -> None:
        at = facts.now.isoformat()
        with self.db.orm() as orm, orm.begin():
            for hid in sorted(failing):
                reason = failing[hid]
                # a write first: the row is this transaction's from here on (SQLite waits its turn
                # for the write lock instead of failing a read that turned into a write)
                done = orm.execute(
                    update(HandoffRow)
                    .where(HandoffRow.id == hid, HandoffRow.status.in_(OPEN_HANDOFF_STATUSES))
                    .values(
                        status="failed",
                        failure_reason=func.coalesce(HandoffRow.failure_reason, reason),
                        ended_at=func.coalesce(HandoffRow.ended_at, facts.now),
                    )
                )
                if not done.rowcount:  # type: ignore[attr-defined]
                    continue  # finished (or erased) meanwhile
                row = orm.get(HandoffRow, hid, populate_existing=True)
                if row is not None:  # (the first failure stays the reason, as on the desk; every step is an event)
                    row.events = [
                        *(row.events or []),
                        {"event": "failure", "at": at, "reason": reason, "by": f"worker:{self.worker_id}"},
                        {"event": "failed", "at": at},
                    ]
                report.handoffs.setdefault(reason, []).append(hid)


def _open_session(r: Any) -> OpenSession:
    return OpenSession(
        id=r.id,
        worker_id=r.worker_id,
        channel=r.channel,
        started_at=_aware(r.started_at),
        last_activity_at=_aware(r.last_activity_at) if r.last_activity_at else None,
        turn_count=r.turn_count or 0,
        escalated=r.escalation_reason is not None,
    )


# ---- the loop -------------------------------------------------------------------------------------------


@dataclass
class LocalHolds:
    """What this process holds, asked for at each pass (on the event loop)."""

    sessions: Callable[[], Iterable[str]] = lambda: ()
    handoffs: Callable[[], Iterable[int]] = lambda: ()


class WorkerLiveness:
    """One worker's registration, heartbeat and repair passes; `on_repair` hears every pass that
    changed something (the caller audits it).

    `lease` is the reaper's: taken (or kept) at each pass, it decides whether the pass also repairs
    what gone workers left open. Its TTL must be longer than a heartbeat (three heartbeats: a
    worker that dies holding it hands it on within them); it is given back when the worker stops.
    `portable_channels`: the channels whose conversations any worker can continue (in a cluster with a
    shared snapshot store, HTTP chats): those of a worker that is gone are not closed as lost."""

    def __init__(
        self,
        registry: WorkerRegistry,
        db: Database,
        environment: str,
        *,
        heartbeat_s: float,
        liveness_timeout_s: float,
        idle_timeout_s: float,
        holds: LocalHolds | None = None,
        on_repair: Callable[[RepairReport], Awaitable[None]] | None = None,
        clock: Clock = utcnow,
        lease: Lease | None = None,
        portable_channels: Iterable[str] = (),
    ):
        self.registry = registry
        self.portable_channels = frozenset(portable_channels)
        self.lease: Lease = lease or LocalLease(f"reaper:{environment}")
        self.db = db
        self.environment = environment
        self.heartbeat_s = heartbeat_s
        self.liveness_timeout_s = liveness_timeout_s
        self.idle_timeout_s = idle_timeout_s
        self.holds = holds or LocalHolds()
        self.on_repair = on_repair
        self.clock = clock
        self.worker_id: str | None = None
        self.repairer: Repairer | None = None
        self._task: asyncio.Task[None] | None = None
        self._last_beat: dt.datetime | None = None

    async def start(self) -> str:
        """Register, run the start-up repair pass, then heartbeat and repair in the background."""
        self.worker_id = await asyncio.to_thread(
            self.registry.register, self.environment, socket.gethostname(), os.getpid()
        )
        self._last_beat = self.clock()
        self.repairer = Repairer(
            self.db,
            self.environment,
            self.worker_id,
            self.registry,
            liveness_timeout_s=self.liveness_timeout_s,
            idle_timeout_s=self.idle_timeout_s,
            clock=self.clock,
            portable_channels=self.portable_channels,
        )
        log.info("worker %s registered in %s", self.worker_id, self.environment)
        try:
            await self.repair()
        except Exception:  # serve anyway: the next pass tries again
            log.exception("the start-up repair pass failed")
        self._task = asyncio.create_task(self._forever())
        return self.worker_id

    async def repair(self) -> RepairReport:
        if self.repairer is None:
            raise RuntimeError("WorkerLiveness.repair() before start()")
        try:
            token = await self.lease.acquire()
        except RedisUnavailable as exc:  # this worker's own rows only: another worker may hold it
            log.warning("repairing this worker's own rows only: %s", exc)
            token = None
        report = await asyncio.to_thread(
            functools.partial(
                self.repairer.run,
                list(self.holds.sessions()),
                list(self.holds.handoffs()),
                cluster_wide=token is not None,
                lease=token,
            )
        )
        if not report.empty:
            log.warning(
                "repaired in %s: %s (workers gone: %s)",
                self.environment,
                report.counts(),
                ", ".join(report.lost_workers) or "none",
            )
            if self.on_repair is not None:
                await self.on_repair(report)
        return report

    async def beat(self) -> None:
        if self.worker_id is None:
            raise RuntimeError("WorkerLiveness.beat() before start()")
        now = self.clock()
        if self._last_beat is not None and (now - self._last_beat).total_seconds() > self.liveness_timeout_s:
            log.warning(
                "worker %s missed its heartbeats for %.0f s: other workers may have closed its sessions as worker_lost",
                self.worker_id,
                (now - self._last_beat).total_seconds(),
            )
        if await asyncio.to_thread(self.registry.heartbeat, self.worker_id):
            self._last_beat = now
        else:
            log.error("worker %s is not registered as running any more (its heartbeat found no row)", self.worker_id)

    async def _forever(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_s)
            try:
                await self.beat()
                await self.repair()
            except Exception:  # the database may be away for a moment: try again at the next beat
                log.exception("worker heartbeat or repair failed")

    async def stop(self) -> None:
        """Stop the loop and mark the worker stopped (what it leaves open is repaired at the next start)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        try:  # another worker takes the reaper's lease at its next pass, not after the TTL
            await self.lease.release()
        except Exception:
            log.exception("giving back the lease %s failed", self.lease.name)
        if self.worker_id is not None:
            try:
                await asyncio.to_thread(self.registry.stop, self.worker_id)
            except Exception:
                log.exception("marking worker %s stopped failed", self.worker_id)
