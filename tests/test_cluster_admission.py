"""Calls admitted across the cluster (cluster/admission.py), on the run's real Redis: an environment's
`max_concurrent_calls` and `max_calls_per_day` hold however many workers admit at once, slots are
given back and lapse when their worker dies, and a Redis that cannot be reached refuses calls
(fail closed) without crashing anything. Then the same through two worker apps (api/state.py)."""

from __future__ import annotations

import asyncio
import datetime as dt
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from fastapi.testclient import TestClient

from tests.helpers.paths import ROOT
from tests.helpers.redis import stop_redis
from tests.helpers.servers import free_port
from tests.helpers.worker_pair import dev_limits, fresh_redis, on_loop, state_of, worker_pair
from voxgate.api.app import create_app
from voxgate.bundle.models import BundleSource
from voxgate.channels.calls import OpenedCall
from voxgate.cluster.admission import DAY_MARGIN_S, MAX_CALLS_PER_DAY, MAX_CONCURRENT_CALLS, ClusterCalls, Limits
from voxgate.cluster.redis import Cluster, RedisUnavailable
from voxgate.config import Settings
from voxgate.store.db import Database
from voxgate.store.models import SessionRow

ENV = "prod"


@pytest.fixture()
def redis_url() -> str:
    return fresh_redis()


@pytest.fixture()
async def clusters(redis_url: str) -> AsyncIterator[list[Cluster]]:
    """Three independent connections to the same Redis, as three workers have."""
    made = [Cluster.from_url(redis_url) for _ in range(3)]
    yield made
    for c in made:
        await c.close()


def _calls(cluster: Cluster, **kwargs: Any) -> ClusterCalls:
    return ClusterCalls(cluster, ENV, **kwargs)


async def test_twelve_calls_at_once_from_three_workers_admit_exactly_the_limit(clusters: list[Cluster]) -> None:
    workers = [_calls(c) for c in clusters]
    limits = Limits(max_concurrent_calls=5)
    results = await asyncio.gather(*(workers[i % 3].admit(f"call-{i}", limits) for i in range(12)))
    assert results.count(None) == 5
    assert [r for r in results if r is not None] == [MAX_CONCURRENT_CALLS] * 7
    assert sum(len(w.held) for w in workers) == 5
    counts = await workers[0].counts()
    assert (counts.active, counts.today) == (5, 5)  # refused calls are not counted for the day


async def test_a_released_slot_is_free_again_and_a_release_is_counted_once(clusters: list[Cluster]) -> None:
    a, b = _calls(clusters[0]), _calls(clusters[1])
    limits = Limits(max_concurrent_calls=2)
    assert await a.admit("a1", limits) is None
    assert await a.admit("a2", limits) is None
    assert await b.admit("b1", limits) == MAX_CONCURRENT_CALLS
    assert await a.release("a1") is True
    assert await a.release("a1") is False  # not held any more: nothing happens
    assert await b.admit("b1", limits) is None
    assert await b.admit("b2", limits) == MAX_CONCURRENT_CALLS
    assert (await a.counts()).active == 2


async def test_a_dead_workers_slots_lapse_and_a_living_workers_are_renewed(clusters: list[Cluster]) -> None:
    dead, alive, newcomer = (_calls(c, slot_ttl_s=30) for c in clusters)
    limits = Limits(max_concurrent_calls=2)
    assert await dead.admit("d1", limits) is None
    assert await alive.admit("l1", limits) is None
    assert await newcomer.admit("n1", limits) == MAX_CONCURRENT_CALLS
    live = clusters[0].key("calls", ENV, "live")
    before = await clusters[0].client.zscore(live, "l1")
    # the dead worker's last heartbeat was a slot's lifetime ago: its slot's time is up (the living
    # worker's heartbeat renews its own)
    await clusters[0].client.zadd(live, {"d1": 1})
    assert await alive.renew() == []
    after = await clusters[0].client.zscore(live, "l1")
    assert before is not None and after is not None and after >= before
    assert await newcomer.admit("n1", limits) is None  # the lapsed slot counts no more
    assert await dead.renew() == ["d1"]  # not brought back: the call goes on uncounted, said in the log
    assert dead.held == {}
    assert (await newcomer.counts()).active == 2


async def test_slots_and_their_set_expire_on_their_own(clusters: list[Cluster]) -> None:
    calls = _calls(clusters[0], slot_ttl_s=30)
    assert await calls.admit("c1", Limits()) is None
    client = clusters[0].client
    live = clusters[0].key("calls", ENV, "live")
    assert 0 < await client.pttl(live) <= 30_000  # a cluster whose workers all died leaves nothing behind
    now_ms = int(time.time() * 1000)
    score = await client.zscore(live, "c1")
    assert score is not None and now_ms - 5_000 < score <= now_ms + 35_000  # Redis and this host agree to a few s


async def test_the_day_counter_refuses_the_call_past_the_daily_limit(clusters: list[Cluster]) -> None:
    a, b = _calls(clusters[0]), _calls(clusters[1])
    limits = Limits(max_calls_per_day=3)
    for i in range(3):
        worker = a if i % 2 else b
        assert await worker.admit(f"c{i}", limits) is None
        await worker.release(f"c{i}")  # each call is over before the next: only the day's count is left
    assert await a.admit("c3", limits) == MAX_CALLS_PER_DAY
    assert await b.admit("c4", limits) == MAX_CALLS_PER_DAY
    counts = await a.counts()
    assert (counts.active, counts.today) == (0, 3)
    # the counter goes at the end of the UTC day (plus a margin), by the Redis clock
    seconds, _ = await clusters[0].client.time()
    day = seconds // 86_400
    key = clusters[0].key("calls", ENV, "day") + f":{day}"
    ttl_ms = await clusters[0].client.pttl(key)
    assert 0 < ttl_ms <= ((day + 1) * 86_400 - seconds + DAY_MARGIN_S) * 1000


async def test_a_call_the_worker_refused_after_all_is_not_counted_for_the_day(clusters: list[Cluster]) -> None:
    calls = _calls(clusters[0])
    limits = Limits(max_calls_per_day=1)
    assert await calls.admit("c1", limits) is None
    await calls.release("c1", started=False)  # e.g. the worker was full or draining
    assert (await calls.counts()).today == 0
    assert await calls.admit("c2", limits) is None
    assert await calls.admit("c3", limits) == MAX_CALLS_PER_DAY


async def test_each_environment_counts_on_its_own(clusters: list[Cluster]) -> None:
    prod, dev = ClusterCalls(clusters[0], "prod"), ClusterCalls(clusters[1], "dev")
    one = Limits(max_concurrent_calls=1)
    assert await prod.admit("p1", one) is None
    assert await dev.admit("d1", one) is None
    assert await prod.admit("p2", one) == MAX_CONCURRENT_CALLS


def _unreachable_url() -> str:
    return f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there


async def test_redis_unreachable_is_a_clear_error_and_releases_never_raise() -> None:
    cluster = Cluster.from_url(_unreachable_url())
    calls = ClusterCalls(cluster, ENV)
    try:
        with pytest.raises(RedisUnavailable, match="admitting a call"):
            await calls.admit("c1", Limits(max_concurrent_calls=5))
        assert calls.held == {}
        with pytest.raises(RedisUnavailable, match="renewing"):
            calls.held["c0"] = 0  # a slot taken before Redis went away
            await calls.renew()
        assert await calls.release("c0") is False  # logged; the slot lapses on its own
        assert not await cluster.ping()
    finally:
        await cluster.close()


# ---- through the workers ----------------------------------------------------------------------------------


@pytest.fixture()
def settings(tmp_path: Path, redis_url: str) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        database_url=f"sqlite:///{tmp_path / 'voxgate.db'}",
        environment="dev",
        redis_url=redis_url,
        worker_heartbeat_s=0.5,
        worker_liveness_timeout_s=5,
        policy_dir=dev_limits(tmp_path, "{max_concurrent_calls: 5, max_calls_per_day: 7}"),
    )


def _admit_many(client: Any, n: int, into: list[str | None], ready: threading.Barrier) -> None:
    state = state_of(client)

    async def many() -> list[str | None]:
        return list(await asyncio.gather(*(state.admit_call() for _ in range(n))))

    ready.wait()
    into.extend(on_loop(client, many))


@pytest.mark.sqlite_only
def test_two_workers_keep_the_environments_limits_together(settings: Settings, harbor_bundle: BundleSource) -> None:
    with worker_pair(settings, [harbor_bundle]) as (a, b):
        results: list[str | None] = []
        ready = threading.Barrier(2)
        threads = [threading.Thread(target=_admit_many, args=(w, 6, results, ready)) for w in (a, b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert len(results) == 12
        assert results.count(None) == 5  # max_concurrent_calls: 5, across both workers
        assert set(results) == {None, MAX_CONCURRENT_CALLS}
        held_a, held_b = len(state_of(a).cluster_calls.held), len(state_of(b).cluster_calls.held)  # type: ignore[union-attr]
        assert held_a + held_b == 5
        # the calls end: their slots are free again, and the day's calls count on
        for client, held in ((a, held_a), (b, held_b)):
            for _ in range(held):
                on_loop(client, state_of(client).release_call)
        assert on_loop(a, state_of(a).admit_call) is None
        assert on_loop(b, state_of(b).admit_call) is None  # the 7th call today
        assert on_loop(a, state_of(a).admit_call) == MAX_CALLS_PER_DAY
    # a worker that stops gives back what it holds: the next worker finds both slots free
    with worker_pair(settings, [harbor_bundle]) as (c, _):
        counts = on_loop(c, state_of(c).cluster_calls.counts)  # type: ignore[union-attr]
        assert (counts.active, counts.today) == (0, 7)


class _NoSpeech:
    """A worker's services, without loading speech models (a call's admission needs none)."""

    def __init__(self, state: Any) -> None:
        self._state = state

    def __getattr__(self, name: str) -> Any:
        return getattr(self._state, name)

    async def voice_engines(self) -> None:
        return None


@pytest.fixture()
def own_redis(tmp_path: Path) -> Iterator[tuple[str, Callable[[], None]]]:
    """A Redis of this test's own (it is stopped in the middle of the test): its URL and how to stop it."""
    where, port = tmp_path / "redis", free_port()
    url = subprocess.run(
        [str(ROOT / "scripts" / "redis-throwaway.sh"), "start", str(where), str(port)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()

    def stop() -> None:
        stop_redis(url, where)

    yield url, stop
    stop()


@pytest.mark.sqlite_only
def test_when_redis_goes_away_a_worker_refuses_new_calls_politely_and_is_not_ready(
    tmp_path: Path, harbor_bundle: BundleSource, own_redis: tuple[str, Callable[[], None]]
) -> None:
    url, stop_redis = own_redis
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=f"sqlite:///{tmp_path / 'voxgate.db'}",
        environment="dev",
        redis_url=url,
    )
    with TestClient(create_app(settings, [harbor_bundle])) as client:
        state = state_of(client)
        assert client.get("/health/ready").json()["checks"]["redis"] == "ok"
        stop_redis()
        ready = client.get("/health/ready")
        assert ready.status_code == 503 and ready.json()["checks"]["redis"] in ("unreachable", "timeout")
        assert ready.json()["checks"]["database"] == "ok"
        # a caller who starts a call: counted as refused, hears the busy message (no line taken)
        opened = OpenedCall(_NoSpeech(state), object(), "127.0.0.1", time.monotonic())  # type: ignore[arg-type]
        on_loop(client, opened.admit)
        assert opened.admitted is False
        assert (state.admission.active, state.admission.refused) == (0, 1)
        health = client.get("/health").json()
        assert health["cluster"] == {"redis": url, "workers": None}
        assert health["status"] == "ok"  # the worker itself is up
        assert client.get("/api/cluster", headers=_admin(state)).status_code == 503


def _admin(state: Any) -> dict[str, str]:
    user = state.identity.create_user("ada", "a long enough password")
    state.identity.bind_role(user.id, "*", "admin", None)
    return {"Authorization": f"Bearer {state.identity.create_token(user.id, 't', ['*'], 1)[0]}"}


@pytest.mark.sqlite_only
def test_on_its_own_a_worker_counts_the_days_calls_in_the_database(tmp_path: Path, harbor_bundle: BundleSource) -> None:
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=f"sqlite:///{tmp_path / 'voxgate.db'}",
        environment="dev",
        policy_dir=dev_limits(tmp_path, "{max_concurrent_calls: 5, max_calls_per_day: 1}"),
    )
    with worker_pair(settings, [harbor_bundle]) as (client, _):
        state = state_of(client)
        assert state.cluster is None and state.cluster_calls is None
        assert "redis" not in client.get("/health/ready").json()["checks"]
        assert "cluster" not in client.get("/health").json()
        assert on_loop(client, state.admit_call) is None
        db = Database(settings.db_url)
        try:
            with db.orm() as orm, orm.begin():
                now = dt.datetime.now(dt.UTC)
                orm.add(
                    SessionRow(
                        id="s1",
                        agent="harbor-support",
                        agent_version="1",
                        environment="dev",
                        channel="voice",
                        started_at=now,
                    )
                )
        finally:
            db.dispose()
        assert on_loop(client, state.admit_call) == MAX_CALLS_PER_DAY
        on_loop(client, state.release_call)  # nothing to give back


def test_the_sync_client_sees_what_the_scripts_wrote(redis_url: str) -> None:
    # the keys are where docs/operations.md says they are
    async def admit() -> None:
        cluster = Cluster(aioredis.Redis.from_url(redis_url))
        try:
            assert await ClusterCalls(cluster, ENV).admit("k1", Limits()) is None
        finally:
            await cluster.close()

    asyncio.run(admit())
    client = redis.Redis.from_url(redis_url)
    try:
        assert client.zrange("voxgate:calls:prod:live", 0, -1) == [b"k1"]
        assert any(k.startswith(b"voxgate:calls:prod:day:") for k in client.keys("voxgate:calls:*"))
    finally:
        client.close()
