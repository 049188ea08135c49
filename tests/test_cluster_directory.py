"""The worker directory (cluster/directory.py) and `GET /api/cluster` (api/cluster.py): on the run's
real Redis, workers announce themselves, drop out when their entry expires, and say at once when
they drain; two worker apps on one database and one Redis list each other, with each environment's
calls against its limits; a single worker lists itself."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.helpers.roles import role_users
from tests.helpers.worker_pair import dev_limits, fresh_redis, on_loop, state_of, worker_pair
from voxgate import __version__
from voxgate.api.app import create_app
from voxgate.bundle.models import BundleSource
from voxgate.cluster.directory import CpuLoad, RedisDirectory, WorkerInfo
from voxgate.cluster.redis import Cluster
from voxgate.config import Settings

#: how long a test waits for something a worker does in its own time (a safety net, not a measurement)
WAIT_S = 30.0


def _info(worker_id: str, environment: str = "prod", **changes: Any) -> WorkerInfo:
    info = WorkerInfo(
        id=worker_id,
        environment=environment,
        url=f"http://10.0.0.{len(worker_id)}:8600",
        capacity=20,
        active_calls=3,
        pending_sockets=1,
        live_sessions=4,
        load=12.5,
        draining=False,
        version="1.0.0",
        started_at="2026-01-01T00:00:00+00:00",
        seen_at="2026-01-01T00:00:10+00:00",
    )
    return dataclasses.replace(info, **changes)


@pytest.fixture()
def redis_url() -> str:
    return fresh_redis()


@pytest.fixture()
async def pair(redis_url: str) -> AsyncIterator[tuple[Cluster, Cluster]]:
    a, b = Cluster.from_url(redis_url), Cluster.from_url(redis_url)
    yield a, b
    await a.close()
    await b.close()


async def test_workers_list_each_other_and_a_draining_flag_is_seen(pair: tuple[Cluster, Cluster]) -> None:
    one, two = (RedisDirectory(c, ttl_s=30) for c in pair)
    await one.announce(_info("w1"))
    await two.announce(_info("w2", environment="dev"))
    assert [w.id for w in await one.workers()] == ["w2", "w1"]  # by environment, then start
    assert await one.workers() == await two.workers()
    (listed,) = [w for w in await two.workers() if w.id == "w1"]
    assert listed == _info("w1")  # every field comes back as it was announced
    await one.announce(_info("w1", draining=True, active_calls=2))
    (listed,) = [w for w in await two.workers() if w.id == "w1"]
    assert listed.draining and listed.active_calls == 2


async def test_an_entry_expires_after_its_ttl_and_leaves_the_index(pair: tuple[Cluster, Cluster]) -> None:
    directory = RedisDirectory(pair[0], ttl_s=30)
    await directory.announce(_info("w1"))
    await directory.announce(_info("w2"))
    client = pair[0].client
    assert 0 < await client.pttl(pair[0].key("workers", "w1")) <= 30_000
    await client.delete(pair[0].key("workers", "w1"))  # what its expiry does once w1 stops beating
    assert [w.id for w in await directory.workers()] == ["w2"]
    assert await client.zrange(pair[0].key("workers", "index"), 0, -1) == [b"w2"]  # the index is tidied
    await directory.leave("w2")  # a worker that stops takes itself off at once
    assert await directory.workers() == []


async def test_an_entry_with_a_short_ttl_goes_on_its_own(pair: tuple[Cluster, Cluster]) -> None:
    directory = RedisDirectory(pair[0], ttl_s=0.2)
    await directory.announce(_info("w1"))
    deadline = time.monotonic() + WAIT_S
    while await directory.workers():
        assert time.monotonic() < deadline, "the entry never expired"
        await asyncio.sleep(0.05)
    assert await pair[0].client.exists(pair[0].key("workers", "w1")) == 0


def test_cpu_load_is_the_process_time_over_the_interval() -> None:
    cpu, wall = [10.0], [100.0]
    load = CpuLoad(min_interval_s=0.5, cpu=lambda: cpu[0], wall=lambda: wall[0])
    cpu[0], wall[0] = 10.5, 102.0
    assert load.read() == 25.0  # half a second of CPU in two seconds
    cpu[0], wall[0] = 10.6, 102.1
    assert load.read() == 25.0  # too soon: the last reading stands
    cpu[0], wall[0] = 12.5, 103.0  # measured from the last reading that counted
    assert load.read() == 200.0  # two threads busy: more than one core


# ---- GET /api/cluster through two workers ---------------------------------------------------------------


@pytest.fixture()
def settings(tmp_path: Path, redis_url: str) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        database_url=f"sqlite:///{tmp_path / 'voxgate.db'}",
        environment="dev",
        redis_url=redis_url,
        advertise_url="http://10.1.2.3:8600",
        # one announcement at start-up, none after within a test: what the list shows later came from
        # the draining hook, not from a heartbeat
        worker_heartbeat_s=300,
        worker_liveness_timeout_s=900,
        policy_dir=dev_limits(tmp_path, "{max_concurrent_calls: 5, max_calls_per_day: 40}"),
    )


def _tokens(client: TestClient) -> dict[str, str]:
    state = state_of(client)
    return {
        role: state.identity.create_token(uid, "t", ["*"], 1)[0] for role, uid in role_users(state.identity).items()
    }


def _wait_for(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not check():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.05)


@pytest.mark.sqlite_only
def test_two_workers_show_each_other_with_the_environments_calls(
    settings: Settings, harbor_bundle: BundleSource
) -> None:
    with worker_pair(settings, [harbor_bundle]) as (a, b):
        tokens = _tokens(a)
        admin = {"Authorization": f"Bearer {tokens['admin']}"}
        ids = {state_of(w).liveness.worker_id for w in (a, b)}  # type: ignore[union-attr]
        view = a.get("/api/cluster", headers=admin)
        assert view.status_code == 200, view.text
        body = view.json()
        assert body["mode"] == "cluster" and body["redis"] == settings.redis_url
        assert {w["id"] for w in body["workers"]} == ids
        for w in body["workers"]:
            assert w["environment"] == "dev" and w["url"] == "http://10.1.2.3:8600"
            assert w["version"] == __version__ and w["capacity"] == 5  # at most the environment's limit
            assert w["draining"] is False and w["active_calls"] == 0
            assert dt.datetime.fromisoformat(w["seen_at"]).tzinfo is not None
        # a call admitted on b counts in the environment's totals, whichever worker answers
        assert on_loop(b, state_of(b).admit_call) is None
        (dev,) = a.get("/api/cluster", headers=admin).json()["environments"]
        assert dev == {
            "environment": "dev",
            "workers": 2,
            "draining": 0,
            "capacity": 10,
            "active_calls": 1,
            "max_concurrent_calls": 5,
            "calls_today": 1,
            "max_calls_per_day": 40,
        }
        assert a.get("/health").json()["cluster"] == {"redis": settings.redis_url, "workers": 2}
        assert a.get("/health/ready").json()["checks"]["redis"] == "ok"
        # b starts to drain: a lists it as draining at once, not at its next heartbeat (minutes away)
        b_id = state_of(b).liveness.worker_id  # type: ignore[union-attr]

        def b_draining() -> bool:
            listed = a.get("/api/cluster", headers=admin).json()["workers"]
            return any(w["id"] == b_id and w["draining"] for w in listed)

        state_of(b).admission.drain()
        _wait_for(b_draining, "b listed as draining")
        assert a.get("/api/cluster", headers=admin).json()["environments"][0]["draining"] == 1
        # operators may look; makers may not
        assert a.get("/api/cluster", headers={"Authorization": f"Bearer {tokens['operator']}"}).status_code == 200
        assert a.get("/api/cluster", headers={"Authorization": f"Bearer {tokens['maker']}"}).status_code == 403
        assert a.get("/api/cluster").status_code == 401
        a_id = state_of(a).liveness.worker_id  # type: ignore[union-attr]
    # both stopped: each took itself off the list (a new worker finds only itself)
    with worker_pair(settings, [harbor_bundle]) as (c, _d):
        listed = {w["id"] for w in c.get("/api/cluster", headers=admin).json()["workers"]}
        assert not listed & {a_id, b_id} and len(listed) == 2


@pytest.mark.sqlite_only
def test_a_single_worker_lists_itself(tmp_path: Path, harbor_bundle: BundleSource) -> None:
    settings = Settings(
        data_dir=tmp_path / "data", database_url=f"sqlite:///{tmp_path / 'voxgate.db'}", environment="dev"
    )
    with TestClient(create_app(settings, [harbor_bundle])) as client:
        tokens = _tokens(client)
        body = client.get("/api/cluster", headers={"Authorization": f"Bearer {tokens['operator']}"}).json()
        assert body["mode"] == "single" and body["redis"] is None
        (me,) = body["workers"]
        assert me["id"] == client.get("/health").json()["worker"]
        assert me["url"] == "http://127.0.0.1:8600"  # no advertise_url: host and port
        (dev,) = body["environments"]
        assert (dev["workers"], dev["active_calls"], dev["max_concurrent_calls"], dev["calls_today"]) == (1, 0, 50, 0)
