"""Release changes reach every worker (cluster/notify.py, the wiring in api/state.py): a deploy on
one worker is announced on Redis pub/sub, and the others drop what they kept about the active
release, load the new bundle and give it to their next new conversation; a lost notice costs at
most the short poll; a listener that lost its connection subscribes again and forgets what it kept.
The database stays the truth throughout."""

from __future__ import annotations

import asyncio
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from fastapi.testclient import TestClient

from tests.helpers.org import Org, bearer, upload_built
from tests.helpers.paths import HARBOR_AGENT
from tests.helpers.worker_pair import fresh_redis, on_loop, state_of, worker_pair
from voxgate.cluster.notify import ActiveReleases, ReleaseNotice, ReleaseNotices
from voxgate.cluster.redis import Cluster
from voxgate.store.db import Database
from voxgate.store.models import SessionRow

AGENT = "harbor-support"
#: how long a test waits for something a worker does in its own time (a safety net, not a measurement)
WAIT_S = 30.0


# ---- what a worker keeps between notices ------------------------------------------------------------------


async def test_what_is_kept_is_read_again_after_the_poll_or_a_notice() -> None:
    reads: list[str] = []
    active = {"a": "sha256:1"}
    now = [0.0]

    async def load(agent: str) -> str | None:
        reads.append(agent)
        return active.get(agent)

    kept = ActiveReleases(load, max_age_s=5.0, clock=lambda: now[0])
    assert await kept.get("a") == "sha256:1"
    active["a"] = "sha256:2"
    now[0] = 4.9
    assert await kept.get("a") == "sha256:1"  # within the poll: kept (no database read)
    now[0] = 5.0
    assert await kept.get("a") == "sha256:2"  # the poll: read again
    active["a"] = "sha256:3"
    kept.forget("a")  # a notice: read again at once
    assert await kept.get("a") == "sha256:3"
    assert await kept.get("b") is None  # nothing active is kept too
    assert reads == ["a", "a", "a", "b"]


async def test_a_read_under_way_when_a_notice_comes_is_not_kept() -> None:
    started, finish = asyncio.Event(), asyncio.Event()
    active = {"a": "sha256:old"}

    async def slow_load(agent: str) -> str | None:
        value = active.get(agent)  # read before the release changed
        started.set()
        await finish.wait()
        return value

    kept = ActiveReleases(slow_load, max_age_s=3600.0)
    reading = asyncio.create_task(kept.get("a"))
    await started.wait()
    active["a"] = "sha256:new"
    kept.forget("a")  # the notice arrives while the old value is on its way
    finish.set()
    assert await reading == "sha256:old"  # that caller got what it read...
    assert await kept.get("a") == "sha256:new"  # ...but it was not kept


# ---- the pub/sub channel -----------------------------------------------------------------------------------


@pytest.fixture()
async def two_clusters() -> AsyncIterator[tuple[Cluster, Cluster, str]]:
    """Two connections with a prefix of their own (pub/sub channels are shared by every Redis database)."""
    url, prefix, name = fresh_redis(), f"t{uuid.uuid4().hex[:12]}", f"listener-{uuid.uuid4().hex[:8]}"
    listener = Cluster(aioredis.Redis.from_url(url, client_name=name), prefix=prefix)
    speaker = Cluster(aioredis.Redis.from_url(url), prefix=prefix)
    yield listener, speaker, name
    await listener.close()
    await speaker.close()


async def _until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not check():
        assert time.monotonic() < deadline, f"never happened: {what}"
        await asyncio.sleep(0.02)


async def test_a_notice_reaches_the_listeners_of_its_environment_only(
    two_clusters: tuple[Cluster, Cluster, str],
) -> None:
    listener, speaker, _ = two_clusters
    heard: list[ReleaseNotice | None] = []

    async def on_notice(notice: ReleaseNotice | None) -> None:
        heard.append(notice)

    notices = ReleaseNotices(listener, "prod")
    listening = asyncio.create_task(notices.listen(on_notice))
    try:
        await asyncio.wait_for(notices.subscribed.wait(), WAIT_S)
        says = ReleaseNotices(speaker, "prod")
        await says.announce(ReleaseNotice("other-agent", None, "w0"), environment="dev")  # not prod's
        await speaker.client.publish(notices.channel, b"not json")  # ignored, logged
        assert await says.announce(ReleaseNotice(AGENT, "sha256:abc", "w2")) == 1  # one listener heard it
        await _until(lambda: len(heard) == 1, "the notice")
        assert heard == [ReleaseNotice(AGENT, "sha256:abc", "w2")]
        assert notices.received == 1
    finally:
        listening.cancel()
        await asyncio.gather(listening, return_exceptions=True)


async def test_a_listener_that_lost_its_connection_subscribes_again_and_forgets(
    two_clusters: tuple[Cluster, Cluster, str],
) -> None:
    listener, speaker, name = two_clusters
    heard: list[ReleaseNotice | None] = []

    async def on_notice(notice: ReleaseNotice | None) -> None:
        heard.append(notice)

    notices = ReleaseNotices(listener, "prod")
    listening = asyncio.create_task(notices.listen(on_notice))
    try:
        await asyncio.wait_for(notices.subscribed.wait(), WAIT_S)
        (mine,) = [c for c in await speaker.client.client_list(_type="pubsub") if c.get("name") == name]
        await speaker.client.client_kill_filter(_id=mine["id"])  # Redis restarted, a network blip
        await _until(lambda: heard == [None], "forgetting after subscribing again")  # notices may have been missed
        await asyncio.wait_for(notices.subscribed.wait(), WAIT_S)
        await ReleaseNotices(speaker, "prod").announce(ReleaseNotice(AGENT, "sha256:def"))
        await _until(lambda: len(heard) == 2, "a notice after subscribing again")
        assert heard[1] == ReleaseNotice(AGENT, "sha256:def")
    finally:
        listening.cancel()
        await asyncio.gather(listening, return_exceptions=True)


# ---- two workers ---------------------------------------------------------------------------------------------


def _wait_for(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not check():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.02)


def _chat_digest(client: TestClient, db_url: str) -> tuple[str, str]:
    """A new chat on `client`'s worker: its greeting and the bundle digest its session row names."""
    r = client.post(f"/api/agents/{AGENT}/sessions")
    assert r.status_code == 201, r.text
    sid, greeting = r.json()["session_id"], r.json()["greeting"]
    client.post(f"/api/sessions/{sid}/end")
    db = Database(db_url)
    try:
        with db.orm() as orm:
            row = orm.get(SessionRow, sid)
            assert row is not None
            return greeting, row.bundle_digest or ""
    finally:
        db.dispose()


@pytest.mark.sqlite_only
def test_a_deploy_on_one_worker_reaches_the_others_next_conversation(db_url: str, tmp_path: Path) -> None:
    fresh_redis()
    org = Org(db_url, tmp_path / "data")
    agent_dir = tmp_path / AGENT
    shutil.copytree(HARBOR_AGENT, agent_dir)
    v1 = org.build(agent_dir, "dev")
    agent_yaml = agent_dir / "agent.yaml"
    agent_yaml.write_text(
        agent_yaml.read_text()
        .replace("version: 1.0.0", "version: 1.1.0")
        .replace("How can I help you today?", "What can I do for you today?")
    )
    v2 = org.build(agent_dir, "dev")
    settings = org.settings.model_copy(update={"environment": "dev", "redis_url": fresh_redis()})
    maker = bearer(org.maker)
    with worker_pair(settings) as (a, b):
        state_a, state_b = state_of(a), state_of(b)
        assert state_b.active_releases is not None and state_b.release_notices is not None
        state_b.active_releases.max_age_s = 3600.0  # only a notice can tell b in time
        assert a.post("/api/me/keys", json={"public_key": org.key.public.b64}, headers=maker).status_code == 201
        for built in (v1, v2):
            upload_built(a, org, built, env="dev")
        assert on_loop(b, state_b.runtime_for, AGENT) is None  # nothing deployed yet: b keeps that
        assert b.post(f"/api/agents/{AGENT}/sessions").status_code == 404

        def deploy(digest: str) -> None:
            r = a.post(f"/api/environments/dev/agents/{AGENT}/deploy", json={"digest": digest}, headers=maker)
            assert r.status_code == 200, r.text

        deploy(v1.digest)
        _wait_for(lambda: state_b.release_notices.received >= 1, "b hears of v1")  # type: ignore[union-attr]
        greeting, digest = _chat_digest(b, db_url)
        assert digest == v1.digest and "How can I help you today?" in greeting
        heard = state_b.release_notices.received
        deploy(v2.digest)
        # b loads v2 on hearing of it, before any caller asks for it
        _wait_for(lambda: getattr(state_b.runtimes.get(AGENT), "digest", None) == v2.digest, "b loads v2")
        assert state_b.release_notices.received == heard + 1
        greeting, digest = _chat_digest(b, db_url)
        assert digest == v2.digest and "What can I do for you today?" in greeting
        # the worker that deployed forgot at once too (it heard its own notice as well)
        assert _chat_digest(a, db_url)[1] == v2.digest

        # a notice that never arrives (here: a does not send it) costs at most the poll
        state_a.releases.on_change = None
        state_b.active_releases.max_age_s = 0.2
        received = state_b.release_notices.received
        deploy(v1.digest)
        _wait_for(lambda: on_loop(b, state_b.runtime_for, AGENT).digest == v1.digest, "b's poll finds v1")
        assert state_b.release_notices.received == received
