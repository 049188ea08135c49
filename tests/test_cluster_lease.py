"""Exactly-once background work across workers: leases in a real Redis (one holder at a time, fencing
tokens that only grow, a holder that stops renewing loses the lease within its TTL), and the jobs
that run under them — alert evaluation, the retention purge and the repair of what dead workers
left open — with three workers on one database doing each once. Three evaluators that miss the
lease altogether still open one incident for one breach (the database's unique index).

Contenders are separate Redis clients (one connection pool each), as separate workers are. Nothing
here asserts a duration: waits poll for a state with a generous deadline that only bounds a failure.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest
from sqlalchemy import func, select

from tests.helpers.redis import worker_redis_url
from voxgate.cluster.lease import LocalLease, RedisLease, while_held
from voxgate.cluster.redis import Cluster, RedisUnavailable
from voxgate.compliance.audit import AuditLog
from voxgate.compliance.retention import retention_loop
from voxgate.governance.environments import EnvironmentConfig, EnvironmentSettings, load_governance
from voxgate.observe.alerts import alert_loop, run_once
from voxgate.store.db import Database
from voxgate.store.incident_models import IncidentRow
from voxgate.store.liveness import WORKER_LOST, LocalHolds, SqlWorkerRegistry, WorkerLiveness
from voxgate.store.models import SecurityEventRow, SessionRow

DEADLINE_S = 30.0  # bounds a wait that should end long before; never a measured expectation


async def eventually(predicate: Callable[[], bool | Awaitable[bool]], what: str) -> None:
    """Poll until `predicate` holds (a failure names `what`)."""
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        result = predicate()
        if await result if isinstance(result, Awaitable) else result:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"never happened: {what}")


@pytest.fixture()
async def clusters() -> AsyncIterator[Callable[[], Cluster]]:
    """A factory of independent clients of this xdist worker's (emptied) Redis database."""
    made: list[Cluster] = []

    def make() -> Cluster:
        made.append(Cluster.from_url(worker_redis_url()))
        return made[-1]

    await make().client.flushdb()
    yield make
    async with asyncio.timeout(30):  # (bounded: a close that hangs fails the test instead of the run)
        for cluster in made:
            await cluster.close()


# ---- the lease --------------------------------------------------------------------------------------


async def test_three_contenders_one_holder_and_the_tokens_only_grow(clusters: Callable[[], Cluster]) -> None:
    leases = [RedisLease(clusters(), "alerts:dev") for _ in range(3)]
    tokens: list[int] = []
    for _ in range(6):
        got = await asyncio.gather(*(lease.acquire() for lease in leases))
        held = [(lease, token) for lease, token in zip(leases, got, strict=True) if token is not None]
        assert len(held) == 1, got  # one holder, whoever won the race
        holder, token = held[0]
        assert await holder.acquire() == token and await holder.renew()  # kept, same token
        assert [await other.acquire() for other in leases if other is not holder] == [None, None]
        tokens.append(token)
        await holder.release()
    assert tokens == sorted(set(tokens)) and len(tokens) == 6  # strictly increasing


async def test_a_holder_that_stops_renewing_loses_the_lease_after_its_ttl(clusters: Callable[[], Cluster]) -> None:
    stalled = RedisLease(clusters(), "retention", ttl_s=0.3)
    other = RedisLease(clusters(), "retention", ttl_s=30)
    first = await stalled.acquire()
    assert first is not None and await other.acquire() is None  # held: nobody else gets it
    taken: list[int] = []

    async def other_takes_it() -> bool:
        token = await other.acquire()
        if token is not None:
            taken.append(token)
        return token is not None

    await eventually(other_takes_it, "the lease passes on once its holder stopped renewing")
    assert taken[0] > first  # a later holder's token is larger
    assert not await stalled.renew()  # the stale holder cannot extend the new holder's lease ...
    await stalled.release()  # ... nor give it away
    assert await other.renew() and await other.acquire() == taken[0]


async def test_lease_keys_expire_and_the_fence_stays(clusters: Callable[[], Cluster]) -> None:
    cluster = clusters()
    lease = RedisLease(cluster, "reaper:dev", ttl_s=15)
    assert await lease.acquire() == 1
    assert 0 < await cluster.client.pttl(cluster.key("lease", "reaper:dev")) <= 15_000
    assert await cluster.client.pttl(cluster.key("lease", "reaper:dev", "fence")) == -1  # tokens never go back
    await lease.release()
    assert await cluster.client.exists(cluster.key("lease", "reaper:dev")) == 0
    assert await RedisLease(clusters(), "reaper:dev").acquire() == 2


async def test_work_runs_on_one_worker_at_a_time_and_moves_when_its_holder_goes(
    clusters: Callable[[], Cluster],
) -> None:
    running: list[int] = []  # contenders whose work runs now
    most = 0
    started: list[tuple[int, int]] = []  # (contender, token)

    def work_of(n: int) -> Callable[[int], Any]:
        async def work(token: int) -> None:
            nonlocal most
            running.append(n)
            most = max(most, len(running))
            started.append((n, token))
            try:
                await asyncio.Event().wait()  # runs until cancelled
            finally:
                running.remove(n)

        return work

    tasks = [
        asyncio.create_task(while_held(RedisLease(clusters(), "alerts:dev"), work_of(n), renew_s=0.05))
        for n in range(3)
    ]
    await eventually(lambda: len(started) == 1, "one contender starts its work")
    for _ in range(2):  # the holder goes (a clean stop gives the lease back): another takes over
        holder = started[-1][0]
        tasks[holder].cancel()
        await asyncio.gather(tasks[holder], return_exceptions=True)
        count = len(started)
        await eventually(lambda: len(started) == count + 1, "another contender takes over")  # noqa: B023
        assert started[-1][0] != holder
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert most == 1 and not running
    tokens = [token for _, token in started]
    assert tokens == sorted(set(tokens))


async def test_work_is_cancelled_when_its_lease_lapses(clusters: Callable[[], Cluster]) -> None:
    # this test was once seen to hang (a full run, and this file after another): bounded, a hang fails it
    async with asyncio.timeout(60):
        await _work_is_cancelled_when_its_lease_lapses(clusters)


async def _work_is_cancelled_when_its_lease_lapses(clusters: Callable[[], Cluster]) -> None:
    events: list[tuple[str, int]] = []

    def work_of(name: str) -> Callable[[int], Any]:
        async def work(token: int) -> None:
            events.append((f"{name} started", token))
            try:
                await asyncio.Event().wait()
            finally:
                events.append((f"{name} stopped", token))

        return work

    # renews every second a lease that lapses after 0.2 s: too slow (a paused or overloaded worker)
    slow = asyncio.create_task(while_held(RedisLease(clusters(), "alerts:dev", ttl_s=0.2), work_of("slow"), renew_s=1))
    await eventually(lambda: ("slow started", 1) in events, "the slow worker holds the lease first")
    fast = asyncio.create_task(while_held(RedisLease(clusters(), "alerts:dev"), work_of("fast"), renew_s=0.05))
    await eventually(lambda: any(e == "fast started" for e, _ in events), "another worker takes the lapsed lease")
    await eventually(lambda: ("slow stopped", 1) in events, "the slow worker's work is cancelled at its renewal")
    [fast_token] = [token for e, token in events if e == "fast started"]
    assert fast_token > 1
    assert [e for e, _ in events].count("slow started") == 1  # it does not get the lease back
    for task in (slow, fast):
        task.cancel()
    await asyncio.gather(slow, fast, return_exceptions=True)


async def test_without_redis_nothing_runs_under_a_lease_and_one_process_always_holds_it() -> None:
    unreachable = Cluster.from_url("redis://127.0.0.1:1/0")  # nothing listens on port 1
    lease = RedisLease(unreachable, "alerts:dev")
    with pytest.raises(RedisUnavailable):
        await lease.acquire()
    ran: list[int] = []

    async def work(token: int) -> None:
        ran.append(token)

    task = asyncio.create_task(while_held(lease, work, renew_s=0.01))
    await eventually(lambda: lease.attempts >= 4, "the worker keeps trying")
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await unreachable.close()
    assert ran == []
    await while_held(LocalLease("alerts:dev"), work, renew_s=0.01)  # held at once; returns when the work does
    assert ran == [1]


# ---- the jobs under their leases --------------------------------------------------------------------


class Receiver:
    """A webhook endpoint on loopback that counts the alerts it is sent."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                outer.bodies.append(json.loads(self.rfile.read(int(self.headers.get("content-length", 0)))))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture()
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.server.shutdown()


def _breach(db: Database) -> None:
    """A session and a locked verification in it: the default rule `verification-locked` fires."""
    now = dt.datetime.now(dt.UTC)
    with db.orm() as orm, orm.begin():
        orm.add(
            SessionRow(
                id="s-breach",
                agent="harbor-support",
                agent_version="1",
                environment="dev",
                channel="http",
                started_at=now,
                turn_count=2,
            )
        )
        orm.add(
            SecurityEventRow(
                session_id="s-breach", kind="verification_locked", agent="harbor-support", environment="dev"
            )
        )


def _incidents(db: Database) -> list[IncidentRow]:
    with db.orm() as orm:
        return list(orm.scalars(select(IncidentRow)))


async def test_three_evaluators_at_once_open_one_incident_for_one_breach(
    db: Database, db_url: str, receiver: Receiver
) -> None:
    # no lease at all (the worst case: three workers that each believe they hold it)
    env = EnvironmentConfig(name="dev", tier="development", settings=EnvironmentSettings(webhooks=[receiver.url]))
    _breach(db)
    workers = [Database(db_url) for _ in range(3)]
    try:
        created = []
        for _ in range(2):
            rounds = await asyncio.gather(*(run_once(w, env, AuditLog(w), lease=n) for n, w in enumerate(workers, 1)))
            assert [r["rule"] for results in rounds for r in results] == ["verification-locked"] * 3
            created.append(sum(r["created"] for results in rounds for r in results))
        assert created == [1, 0]  # one of the first three opened it; the second round found it open
    finally:
        for w in workers:
            w.dispose()
    (incident,) = _incidents(db)
    assert incident.fired_count == 6  # every evaluation counted, none lost
    assert len(receiver.bodies) == 1 and receiver.bodies[0]["incident"]["id"] == incident.id  # delivered once
    assert [e["action"] for e in AuditLog(db).query(action="incident.open")] == ["incident.open"]


async def test_three_alert_loops_evaluate_on_the_lease_holder_only(
    db: Database, db_url: str, clusters: Callable[[], Cluster], receiver: Receiver
) -> None:
    env = EnvironmentConfig(name="dev", tier="development", settings=EnvironmentSettings(webhooks=[receiver.url]))
    _breach(db)
    workers = [Database(db_url) for _ in range(3)]
    leases = [RedisLease(clusters(), "alerts:dev") for _ in workers]
    tasks = [
        asyncio.create_task(alert_loop(w, env, AuditLog(w), every_s=0.05, lease=lease, renew_s=0.05))
        for w, lease in zip(workers, leases, strict=True)
    ]
    try:
        await eventually(lambda: len(receiver.bodies) == 1, "the breach is delivered")
        await eventually(lambda: sum(lease.attempts >= 3 for lease in leases) == 2, "the others keep trying")
        [holder] = [lease for lease in leases if lease.token is not None]
        token = holder.token
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for w in workers:
            w.dispose()
    (incident,) = _incidents(db)
    (opened,) = AuditLog(db).query(action="incident.open")
    assert len(receiver.bodies) == 1 and incident.fired_count >= 1
    assert opened["data"]["lease"] == incident.timeline[0]["lease"] == token  # the holder's writes name its token


async def test_three_workers_purge_once(db: Database, db_url: str, clusters: Callable[[], Cluster]) -> None:
    config = load_governance()
    workers = [Database(db_url) for _ in range(3)]
    leases = [RedisLease(clusters(), "retention") for _ in workers]
    tasks = [
        asyncio.create_task(retention_loop(w, config, AuditLog(w), every_s=3600, lease=lease, renew_s=0.05))
        for w, lease in zip(workers, leases, strict=True)
    ]
    audit = AuditLog(db)
    try:
        await eventually(lambda: len(audit.query(action="retention.purge")) >= 1, "a purge runs")
        await eventually(lambda: sum(lease.attempts >= 3 for lease in leases) == 2, "the others keep trying")
        (purge,) = audit.query(action="retention.purge")  # once, not once per worker
        [holder] = [lease for lease in leases if lease.token is not None]
        assert purge["data"]["lease"] == holder.token
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for w in workers:
            w.dispose()


class Clock:
    def __init__(self) -> None:
        self.now = dt.datetime.now(dt.UTC).replace(microsecond=0)

    def __call__(self) -> dt.datetime:
        return self.now


def _open_session(db: Database, sid: str, worker: str, at: dt.datetime) -> None:
    with db.orm() as orm, orm.begin():
        orm.add(
            SessionRow(
                id=sid,
                agent="harbor-support",
                agent_version="1",
                environment="dev",
                channel="websocket",
                started_at=at,
                last_activity_at=at,
                turn_count=1,
                worker_id=worker,
            )
        )


async def test_three_workers_close_a_dead_workers_sessions_once(
    db: Database, db_url: str, clusters: Callable[[], Cluster]
) -> None:
    clock = Clock()
    registry = SqlWorkerRegistry(db, clock)
    dead = registry.register("dev", "host-dead", 1)
    for n in range(12):
        _open_session(db, f"lost-{n:02}", dead, clock.now)
    workers = [Database(db_url) for _ in range(3)]
    live = [
        WorkerLiveness(
            SqlWorkerRegistry(w, clock),
            w,
            "dev",
            heartbeat_s=3600,  # passes are called here, not by the loop
            liveness_timeout_s=60,
            idle_timeout_s=900,
            clock=clock,
            holds=LocalHolds(),
            lease=RedisLease(clusters(), "reaper:dev", ttl_s=30),
        )
        for w in workers
    ]
    try:
        for worker in live:
            await worker.start()
        mine = live[1].worker_id
        assert mine is not None
        _open_session(db, "idle-own", mine, clock.now)  # a session of a worker that does not hold the lease
        clock.now += dt.timedelta(seconds=3600)  # the dead worker is silent past the liveness timeout
        for worker in live:
            await worker.beat()
        reports = await asyncio.gather(*(worker.repair() for worker in live))
        lost = [sid for r in reports for sid in r.sessions.get(WORKER_LOST, [])]
        assert sorted(lost) == [f"lost-{n:02}" for n in range(12)]
        [reaper] = [r for r in reports if r.sessions.get(WORKER_LOST)]  # one worker did it
        assert reaper.lease is not None and reaper.lost_workers == [dead]
        # each worker still expires its own idle sessions, lease or not
        assert [sid for r in reports for sid in r.sessions.get("idle_timeout", [])] == ["idle-own"]
        holder = next(w for w in live if w.lease.token is not None)  # type: ignore[attr-defined]
        await holder.stop()  # a clean stop hands the lease on at once
        _open_session(db, "lost-later", dead, clock.now)
        later = await asyncio.gather(*(worker.repair() for worker in live if worker is not holder))
        assert [sid for r in later for sid in r.sessions.get(WORKER_LOST, [])] == ["lost-later"]
    finally:
        for worker in live:
            await worker.stop()
        for w in workers:
            w.dispose()
    with db.orm() as orm:
        open_rows = orm.scalar(select(func.count()).select_from(SessionRow).where(SessionRow.ended_at.is_(None)))
    assert open_rows == 0
