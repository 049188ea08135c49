"""HTTP conversations any worker can continue, on a real Redis and a real database: the snapshot store's
turn lease and version check under many clients at once, then two workers on real sockets — a
conversation alternating between them turn by turn, turns sent at once to both, a turn held by a worker
that died, and a worker stopped in the middle of a conversation."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from sqlalchemy import create_engine, text

from tests.helpers import loopback
from tests.helpers.conversation import spoken
from tests.helpers.databases import query
from tests.helpers.redis import worker_redis_url
from tests.helpers.servers import LiveServer
from voxgate.api.app import create_app
from voxgate.api.conversations import shared_sessions
from voxgate.api.state import AppState
from voxgate.bundle.models import BundleSource
from voxgate.cluster.redis import Cluster
from voxgate.cluster.sessions import (
    REAP_GRACE_S,
    TURN_CONFLICT,
    RedisSnapshotStore,
    SnapshotSeal,
    SnapshotUnreadable,
    TurnConflict,
)
from voxgate.config import Settings
from voxgate.errors import NotFoundError
from voxgate.runtime.engine import AgentRuntime
from voxgate.runtime.recorder import MemoryRecorder
from voxgate.runtime.registry import LocalSessions, SharedSessions

IDLE_S = 900.0


@pytest.fixture()
async def redis_url() -> AsyncIterator[str]:
    """This xdist worker's Redis database, emptied."""
    url = worker_redis_url()
    client = aioredis.Redis.from_url(url)
    await client.flushdb()
    await client.aclose()
    yield url


@pytest.fixture()
async def clusters(redis_url: str) -> AsyncIterator[list[Cluster]]:
    """Twelve independent connections to the Redis (twelve workers' clients)."""
    made = [Cluster.from_url(redis_url) for _ in range(12)]
    yield made
    for cluster in made:
        await cluster.close()


def stores(clusters: list[Cluster], **kw: Any) -> list[RedisSnapshotStore]:
    return [RedisSnapshotStore(c, idle_timeout_s=IDLE_S, **kw) for c in clusters]


# ---- the store -----------------------------------------------------------------------------------------


async def test_twelve_workers_taking_one_turn_at_once_one_holds_it(clusters: list[Cluster]) -> None:
    every = stores(clusters)
    assert await every[0].create("s1", b"v1") == 1
    answers = await asyncio.gather(
        *(s.checkout("s1", f"token-{n}", None) for n, s in enumerate(every)), return_exceptions=True
    )
    holders = [n for n, a in enumerate(answers) if not isinstance(a, BaseException)]
    refused = [a for a in answers if isinstance(a, TurnConflict)]
    assert len(holders) == 1 and len(refused) == 11
    assert answers[holders[0]] == (1, b"v1")
    assert refused[0].detail["reason"] == TURN_CONFLICT and refused[0].detail["retry"] is True
    # the holder saves version 2 and lets go; a save on version 1 is refused from then on
    assert await every[holders[0]].save("s1", b"v2", 1, f"token-{holders[0]}") == 2
    other = (holders[0] + 1) % 12
    with pytest.raises(TurnConflict):
        await every[other].save("s1", b"stale", 1, f"token-{other}")
    assert await every[other].checkout("s1", f"token-{other}", 1) == (2, b"v2")  # it reloads
    assert await every[other].checkout("s1", f"token-{other}", 2) == (2, None)  # (its lease, taken again)
    assert await every[other].load("s1") == (b"v2", 2)


async def test_many_turns_at_once_from_many_workers_never_apply_two_on_one_version(clusters: list[Cluster]) -> None:
    every = stores(clusters)
    await every[0].create("s1", b"0")
    saved: list[int] = []

    async def worker(n: int, store: RedisSnapshotStore) -> None:
        for attempt in range(10_000):  # (a bound, so that a bug fails instead of hanging)
            try:
                found = await store.checkout("s1", f"w{n}-{attempt}", None)
            except TurnConflict:
                await asyncio.sleep(0)
                continue
            assert found is not None
            version, data = found
            assert data is not None and int(data) == version - 1  # every save applied on the one before it
            saved.append(await store.save("s1", str(version).encode(), version, f"w{n}-{attempt}"))
            return

    await asyncio.gather(*(worker(n, s) for n, s in enumerate(every)))
    assert sorted(saved) == list(range(2, 14))  # twelve turns, each saved on its own version, none skipped
    assert await every[0].load("s1") == (b"12", 13)


async def test_a_lapsed_lease_lets_another_worker_on_and_the_late_save_is_refused(
    clusters: list[Cluster], redis_url: str
) -> None:
    a, b = stores(clusters[:2])
    await a.create("s1", b"start")
    assert await a.checkout("s1", "a", None) == (1, b"start")
    await clusters[0].client.delete(a.keys("s1")[1])  # a's turn outlived its lease (its worker hung)
    assert await b.checkout("s1", "b", None) == (1, b"start")
    with pytest.raises(TurnConflict):  # b holds the turn now
        await a.save("s1", b"late", 1, "a")
    assert await b.save("s1", b"b's turn", 1, "b") == 2
    with pytest.raises(TurnConflict):  # and the version moved on
        await a.save("s1", b"late", 1, "a")
    await a.release("s1", "a")  # a lease a no longer holds: nothing happens
    assert await a.load("s1") == (b"b's turn", 2)


async def test_keys_expire_with_the_idle_timeout_and_each_save_renews_them(clusters: list[Cluster]) -> None:
    store = RedisSnapshotStore(clusters[0], idle_timeout_s=IDLE_S, lease_s=30)
    client = clusters[0].client
    snapshot, lease = store.keys("s1")
    assert snapshot == "voxgate:chat:{s1}" and lease == "voxgate:chat:{s1}:turn"
    await store.create("s1", b"x")
    ttl_ms = (IDLE_S + REAP_GRACE_S) * 1000
    assert 0 < await client.pttl(snapshot) <= ttl_ms
    await store.checkout("s1", "t", 1)
    assert 0 < await client.pttl(lease) <= 30_000
    await client.pexpire(snapshot, 5_000)
    await store.save("s1", b"y", 1, "t")
    assert await client.pttl(snapshot) > 5_000 and await client.exists(lease) == 0
    assert sorted(await client.keys("*")) == [snapshot.encode()]


async def test_an_idle_conversation_is_deleted_only_at_its_latest_version_with_no_turn_running(
    clusters: list[Cluster],
) -> None:
    store = stores(clusters[:1])[0]
    await store.create("s1", b"x")
    await store.checkout("s1", "t", 1)
    assert not await store.delete_idle("s1", 1)  # a turn runs
    await store.save("s1", b"y", 1, "t")
    assert not await store.delete_idle("s1", 1)  # another worker took a turn since
    assert await store.delete_idle("s1", 2)
    assert await store.load("s1") is None and await store.checkout("s1", "t", None) is None
    assert await store.load("../../etc") is None  # not an id: nothing to look up


# ---- two workers ---------------------------------------------------------------------------------------


def _resolver(state: AppState) -> Any:
    async def resolve(agent: str, digest: str | None) -> AgentRuntime | None:
        runtime = state.runtimes.get(agent)
        return runtime if runtime is not None and runtime.digest == digest else None

    return resolve


def _cluster_sessions(state: AppState, redis_url: str) -> SharedSessions:
    """The worker's registry in cluster mode (built by the app once its wiring does; else here, alike)."""
    if isinstance(state.sessions, SharedSessions):
        return state.sessions
    state.sessions = shared_sessions(state, Cluster.from_url(redis_url), _resolver(state))
    return state.sessions


class Workers:
    """Two `voxgate serve` apps (the Harbor agent, development mode) on one database and one Redis, each on
    its own loopback port and event loop."""

    def __init__(self, settings: Settings, bundle: BundleSource, redis_url: str) -> None:
        self.settings, self.bundle, self.redis_url = settings, bundle, redis_url
        self.servers: list[LiveServer | None] = []
        self.stack = contextlib.ExitStack()

    def start(self) -> None:
        server = self.stack.enter_context(LiveServer(create_app(self.settings, [self.bundle])))
        _cluster_sessions(server.app.state.voxgate, self.redis_url)
        self.servers.append(server)

    def url(self, n: int) -> str:
        server = self.servers[n]
        assert server is not None, f"worker {n} is stopped"
        return server.url

    def state(self, n: int) -> AppState:
        server = self.servers[n]
        assert server is not None
        state: AppState = server.app.state.voxgate
        return state

    def worker_id(self, n: int) -> str:
        liveness = self.state(n).liveness
        assert liveness is not None and liveness.worker_id is not None
        return liveness.worker_id

    def stop(self, n: int) -> None:
        server = self.servers[n]
        assert server is not None
        server.__exit__(None, None, None)
        self.servers[n] = None


@pytest.fixture()
def workers(
    db_url: str, tmp_path: Path, harbor_bundle: BundleSource, harbor_backend: Any, redis_url: str
) -> Iterator[Workers]:
    settings = Settings(
        database_url=db_url,
        data_dir=tmp_path / "data",  # one privacy salt for the cluster, as the deployment mounts it
        redis_url=redis_url,
        # no repair pass of its own during a test: the tests run the passes they are about
        worker_heartbeat_s=300,
        worker_liveness_timeout_s=1200,
    )
    pair = Workers(settings, harbor_bundle, redis_url)
    with pair.stack:
        pair.start()
        pair.start()
        yield pair


def _post(url: str, json: dict[str, Any] | None = None) -> httpx.Response:
    return loopback.post(url, json=json, timeout=30)


def _session_row(db_url: str, sid: str) -> Any:
    rows = query(db_url, "SELECT outcome, end_reason, worker_id, turn_count FROM sessions WHERE id = :id", id=sid)
    assert len(rows) == 1
    return rows[0]


def _turn_seqs(db_url: str, sid: str) -> list[int]:
    return [r.seq for r in query(db_url, "SELECT seq FROM turns WHERE session_id = :id ORDER BY seq", id=sid)]


def test_a_sealed_snapshot_opens_only_with_the_same_salt_for_the_same_conversation() -> None:
    seal = SnapshotSeal(b"the installation's salt")
    data = b'{"customer": {"first_name": "Ada", "account_number": "40012345"}}'
    sealed = seal.seal("s1", data)
    assert b"Ada" not in sealed and b"40012345" not in sealed
    assert seal.seal("s1", data) != sealed  # a fresh nonce each time
    assert SnapshotSeal(b"the installation's salt").open("s1", sealed) == data  # another worker, same salt
    with pytest.raises(SnapshotUnreadable, match="same privacy salt"):
        SnapshotSeal(b"another installation's salt").open("s1", sealed)
    with pytest.raises(SnapshotUnreadable):
        seal.open("s2", sealed)  # copied to another conversation's key
    with pytest.raises(SnapshotUnreadable):
        seal.open("s1", sealed[:-1] + bytes([sealed[-1] ^ 1]))  # changed in Redis
    with pytest.raises(SnapshotUnreadable, match="not sealed"):
        seal.open("s1", data)  # stored unsealed
    with pytest.raises(ValueError):
        SnapshotSeal(b"")


async def test_what_redis_holds_of_a_verified_conversation_names_nobody(
    workers: Workers, credentials: list[dict[str, str]], redis_url: str
) -> None:
    cred = credentials[7]
    sid = _post(f"{workers.url(0)}/api/agents/harbor-support/sessions").json()["session_id"]
    for kind, body in (
        ("turns", {"text": "I think you charged me twice this month"}),
        ("dtmf", {"digits": cred["account_number"]}),
        ("turns", {"text": spoken(cred["pin"])}),
    ):
        answer = _post(f"{workers.url(0)}/api/sessions/{sid}/{kind}", body)
        assert answer.status_code == 200, answer.text
    assert answer.json()["state"] == "collecting:amount"  # verified: the customer is in the conversation
    client = aioredis.Redis.from_url(redis_url)
    try:
        stored = await client.hget(f"voxgate:chat:{{{sid}}}", "d")
    finally:
        await client.aclose()
    assert stored is not None and stored.startswith(b"vxs1")
    for secret in ("account_number", "pin", "customer_id", "first_name", "phone", "postcode", "dob"):
        value = str(cred.get(secret) or "")
        if len(value) >= 3:
            assert value.encode() not in stored, secret
    # and the other worker, with the cluster's salt, goes on from it
    answer = _post(f"{workers.url(1)}/api/sessions/{sid}/turns", {"text": "forty two dollars and ninety nine cents"})
    assert answer.status_code == 200 and answer.json()["state"] == "collecting:reason", answer.text


def test_a_conversation_alternating_workers_turn_by_turn_completes(
    workers: Workers, db_url: str, credentials: list[dict[str, str]]
) -> None:
    cred = credentials[5]
    started = _post(f"{workers.url(0)}/api/agents/harbor-support/sessions")
    assert started.status_code == 201, started.text
    sid = started.json()["session_id"]
    lines = [
        ("turns", {"text": "I think you charged me twice this month"}),
        ("dtmf", {"digits": cred["account_number"]}),
        ("turns", {"text": spoken(cred["pin"])}),
        ("turns", {"text": "forty two dollars and ninety nine cents"}),
        ("turns", {"text": "the router fee appears twice"}),
        ("turns", {"text": "yes please"}),
        ("turns", {"text": "no thanks, that's all"}),
    ]
    states = []
    for n, (kind, body) in enumerate(lines, start=1):
        worker = n % 2  # 1, 0, 1, 0 …: never the worker that took the turn before
        answer = _post(f"{workers.url(worker)}/api/sessions/{sid}/{kind}", body)
        assert answer.status_code == 200, answer.text
        states.append(answer.json()["state"])
        assert _session_row(db_url, sid).worker_id == workers.worker_id(worker)  # it holds the row now
    assert states == [
        "verifying:identify",
        "verifying:secret",
        "collecting:amount",
        "collecting:reason",
        "confirming",
        "anything_else",
        "ended",
    ]
    row = _session_row(db_url, sid)
    assert (row.outcome, row.end_reason, row.turn_count) == ("resolved", "completed", len(lines))
    assert _turn_seqs(db_url, sid) == list(range(len(lines) + 1))  # the greeting, then each turn once
    actions = query(
        db_url,
        "SELECT COUNT(*) AS n FROM turns WHERE session_id = :id AND agent_text LIKE :t",
        id=sid,
        t="%opened case%",
    )
    assert actions[0].n == 1
    gone = _post(f"{workers.url(0)}/api/sessions/{sid}/turns", {"text": "hello?"})
    assert gone.status_code == 404  # an ended conversation is forgotten by every worker


async def test_turns_sent_at_once_to_both_workers_are_applied_one_after_the_other_or_refused(
    workers: Workers, db_url: str
) -> None:
    async with httpx.AsyncClient(timeout=30) as client:
        started = await client.post(f"{workers.url(0)}/api/agents/harbor-support/sessions")
        sid = started.json()["session_id"]
        answers = await asyncio.gather(
            *(
                client.post(
                    f"{workers.url(n % 2)}/api/sessions/{sid}/turns", json={"text": "what are your opening hours"}
                )
                for n in range(8)
            )
        )
    codes = sorted(a.status_code for a in answers)
    assert set(codes) <= {200, 409} and 200 in codes
    applied = codes.count(200)
    for answer in answers:
        if answer.status_code == 409:
            assert answer.json()["detail"]["reason"] == TURN_CONFLICT
    assert _turn_seqs(db_url, sid) == list(range(applied + 1))  # no turn number twice, none skipped
    assert _session_row(db_url, sid).turn_count == applied


async def test_a_turn_held_by_a_worker_that_died_is_refused_until_its_lease_is_gone(
    workers: Workers, db_url: str, redis_url: str
) -> None:
    started = _post(f"{workers.url(0)}/api/agents/harbor-support/sessions")
    sid = started.json()["session_id"]
    cluster = Cluster.from_url(redis_url)
    store = RedisSnapshotStore(cluster, idle_timeout_s=IDLE_S)
    try:
        assert await store.checkout(sid, "a worker that died mid-turn", None) is not None
        busy = await asyncio.to_thread(_post, f"{workers.url(1)}/api/sessions/{sid}/turns", {"text": "hello"})
        assert busy.status_code == 409
        detail = busy.json()["detail"]
        assert detail["reason"] == TURN_CONFLICT and "send this turn again" in detail["message"]
        assert _turn_seqs(db_url, sid) == [0]  # not applied
        await cluster.client.delete(store.keys(sid)[1])  # the dead worker's lease lapses
        again = await asyncio.to_thread(_post, f"{workers.url(1)}/api/sessions/{sid}/turns", {"text": "hello"})
        assert again.status_code == 200 and _turn_seqs(db_url, sid) == [0, 1]
    finally:
        await cluster.close()


def test_a_worker_stopped_mid_conversation_leaves_it_to_the_other(
    workers: Workers, db_url: str, credentials: list[dict[str, str]]
) -> None:
    cred = credentials[2]
    sid = _post(f"{workers.url(0)}/api/agents/harbor-support/sessions").json()["session_id"]
    for body in ({"text": "how much do I owe"}, {"text": spoken(cred["account_number"])}):
        assert _post(f"{workers.url(0)}/api/sessions/{sid}/turns", body).status_code == 200
    first = workers.worker_id(0)
    workers.stop(0)  # shut down: it lets go of its HTTP conversations without closing them
    assert _session_row(db_url, sid).outcome is None
    answer = _post(f"{workers.url(1)}/api/sessions/{sid}/turns", {"text": spoken(cred["pin"])})
    assert answer.status_code == 200, answer.text
    assert answer.json()["state"] == "anything_else"  # verified from where worker 0 left it: the balance said
    assert _session_row(db_url, sid).worker_id not in (None, first)
    done = _post(f"{workers.url(1)}/api/sessions/{sid}/turns", {"text": "no that's all, bye"})
    assert done.json()["outcome"] == "resolved"
    row = _session_row(db_url, sid)
    assert (row.outcome, row.end_reason) == ("resolved", "completed")
    assert _turn_seqs(db_url, sid) == [0, 1, 2, 3, 4]


def test_a_repair_pass_leaves_a_stopped_workers_http_chat_to_go_on(
    workers: Workers, db_url: str, credentials: list[dict[str, str]]
) -> None:
    sid = _post(f"{workers.url(0)}/api/agents/harbor-support/sessions").json()["session_id"]
    assert (
        _post(f"{workers.url(0)}/api/sessions/{sid}/turns", {"text": "what are your opening hours"}).status_code == 200
    )
    workers.stop(0)
    liveness = workers.state(1).liveness
    assert liveness is not None and liveness.repairer is not None
    liveness.repairer.run()  # the other worker's pass, now that worker 0 is gone
    assert _session_row(db_url, sid).outcome is None
    answer = _post(f"{workers.url(1)}/api/sessions/{sid}/turns", {"text": "no, bye"})
    assert answer.status_code == 200 and answer.json()["outcome"] == "resolved"


def test_a_conversation_closed_by_a_repair_pass_is_continued_by_no_worker(workers: Workers, db_url: str) -> None:
    sid = _post(f"{workers.url(0)}/api/agents/harbor-support/sessions").json()["session_id"]
    engine = create_engine(db_url)  # as a repair pass closes it: its worker was thought gone
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE sessions SET ended_at = started_at, end_reason = 'worker_lost' WHERE id = :id"), {"id": sid}
        )
    engine.dispose()
    refused = _post(f"{workers.url(1)}/api/sessions/{sid}/turns", {"text": "hello"})
    assert refused.status_code == 404
    assert _turn_seqs(db_url, sid) == [0]  # the turn was not applied
    assert _post(f"{workers.url(0)}/api/sessions/{sid}/turns", {"text": "hello"}).status_code == 404  # nor stored


# ---- the registry ------------------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_an_idle_conversation_is_closed_by_the_worker_that_took_its_last_turn(
    clusters: list[Cluster], harbor_bundle: BundleSource
) -> None:
    recorder = MemoryRecorder()
    runtime = AgentRuntime(harbor_bundle, recorder=recorder)

    async def resolve(agent: str, digest: str | None) -> AgentRuntime | None:
        return runtime

    clock = Clock()
    a, b = (
        SharedSessions(RedisSnapshotStore(c, idle_timeout_s=IDLE_S), resolve=resolve, idle_s=IDLE_S, clock=clock)
        for c in clusters[:2]
    )
    try:
        session = runtime.new_session(channel="http")
        await session.start()
        await a.begin(session)
        async with b.turn(session.id) as on_b:  # b continues it: a's copy is behind now
            await on_b.handle("what are your opening hours")
        assert a.ids() == b.ids() == {session.id}
        clock.now = IDLE_S + 1
        assert await a.reap() == 0 and a.ids() == frozenset()  # not a's to close: forgotten, not closed
        assert recorder.ended == []
        assert await b.reap() == 1 and b.ids() == frozenset()
        assert recorder.ended == [(session.id, "resolved")]  # its real outcome: the question was answered
        with pytest.raises(NotFoundError):
            async with a.turn(session.id):
                pass
    finally:
        await runtime.aclose()


async def test_turns_of_one_conversation_on_one_worker_wait_for_each_other() -> None:
    class Slow:
        id, turn_no, ended = "s1", 0, False

    registry = LocalSessions()
    registry.add(Slow())  # type: ignore[arg-type]
    first_in, first_may_go, inside = asyncio.Event(), asyncio.Event(), []

    async def first() -> None:
        async with registry.turn("s1"):
            inside.append("first")
            first_in.set()
            await first_may_go.wait()
            inside.append("first done")

    async def second() -> None:
        await first_in.wait()
        async with registry.turn("s1"):
            inside.append("second")

    both = asyncio.gather(first(), second())
    await first_in.wait()
    for _ in range(10):  # the second turn gets every chance to run
        await asyncio.sleep(0)
    assert inside == ["first"]
    first_may_go.set()
    await both
    assert inside == ["first", "first done", "second"]
