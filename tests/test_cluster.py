"""Three workers behind HAProxy on one PostgreSQL and one Redis: what a cluster must do, checked on a
real one (tests/helpers/cluster.py starts it once for this module, on loopback, and stops it).

The workers serve prod in released mode (the Harbor agent published through the real pipeline), with
their speech models preloaded; HAProxy balances round-robin with no stickiness and takes a worker out of
its rotation when its /health/ready fails. Conversations go through HAProxy as a caller's would, or to
one worker directly where a test needs to know which.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import redis.asyncio as aioredis
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.helpers.cluster import (
    ENVIRONMENT,
    MAX_CONCURRENT_CALLS,
    Cluster,
    LogsOnFailure,
    running_cluster,
    versioned_agent,
)
from tests.helpers.databases import PG_URL, query
from voxgate.cluster.notify import ReleaseNotices
from voxgate.cluster.redis import Cluster as RedisCluster
from voxgate.testing.caller import CallReport, SimulatedCall, _run, prepare_utterance, run_call

pytestmark = pytest.mark.slow

CALLER_VOICE = "flite-slt"  # not the agent's voice (as in test_voice_calls.py)
REPLY_TIMEOUT_S = 60.0  # one chat turn on a busy machine
WORKERS = (1, 2, 3)
#: how soon after a worker dies its sessions must be closed and its waiting handoffs failed (the issue's bound;
#: the workers beat every 2 s and count a worker gone after 10 s of silence)
FAILOVER_S = 30.0


@pytest.fixture(scope="module")
def started(
    tmp_path_factory: pytest.TempPathFactory, harbor_backend: Any, request: pytest.FixtureRequest
) -> Iterator[Cluster]:
    """The module's cluster as it is: three workers, HAProxy, PostgreSQL and Redis; each worker's log is
    attached to a failing test's report."""
    if not PG_URL:
        pytest.skip("the cluster runs on PostgreSQL: run the tests with scripts/run-tests.sh (make test)")
    root = tmp_path_factory.mktemp("cluster")
    with running_cluster(root, harbor_backend.url, harbor_backend.api_key) as running:
        print(running.timings)
        plugin = LogsOnFailure(running, Path(__file__))
        request.config.pluginmanager.register(plugin, "voxgate-cluster-logs")
        try:
            yield running
        finally:
            request.config.pluginmanager.unregister(plugin)


@pytest.fixture()
def cluster(started: Cluster) -> Cluster:
    """The cluster with its three workers up and in HAProxy's rotation (one that a test before stopped
    or killed is started again)."""
    started.heal()
    return started


@pytest.fixture()
async def sockets() -> AsyncIterator[list[ClientConnection]]:
    """WebSockets a test keeps open, closed after it however it ended (a desk agent left signed in
    would be offered the next test's callers)."""
    opened: list[ClientConnection] = []
    yield opened
    for ws in opened:
        await ws.close()


@pytest.fixture()
async def http() -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for the workers and the balancer, closed after the test."""
    async with httpx.AsyncClient(timeout=REPLY_TIMEOUT_S, trust_env=False) as client:
        yield client


# ---- helpers -----------------------------------------------------------------------------------------


async def _recv(ws: ClientConnection, kind: str) -> dict[str, Any]:
    """The next JSON message of type `kind` (others, and audio, skipped)."""
    async with asyncio.timeout(REPLY_TIMEOUT_S):
        while True:
            raw = await ws.recv()
            if isinstance(raw, bytes):
                continue
            msg = json.loads(raw)
            if msg.get("type") == kind:
                return msg  # type: ignore[no-any-return]
            assert msg.get("type") != "error", msg


async def _chat(base: str, question: str) -> dict[str, Any]:
    """A native WebSocket chat at `base`: the greeting, one question, the end; what each step answered."""
    async with connect(f"{base}/ws/chat/harbor-support", proxy=None, open_timeout=30) as ws:
        greeting = await _recv(ws, "turn")
        await ws.send(json.dumps({"type": "text", "text": question}))
        answer = await _recv(ws, "turn")
        await ws.send(json.dumps({"type": "end"}))
        ended = await _recv(ws, "ended")
    return {"session_id": greeting["session_id"], "answer": answer, "ended": ended}


async def _closed(ws: ClientConnection) -> None:
    """Wait until the socket is closed (whatever it still had to deliver read and dropped)."""
    async with asyncio.timeout(REPLY_TIMEOUT_S):
        with pytest.raises(ConnectionClosed):
            while True:
                await ws.recv()


def _lb_workers(cluster: Cluster, requests: int) -> list[int]:
    """Which worker answered each of `requests` GET /health sent one after another through HAProxy."""
    with httpx.Client(base_url=cluster.lb_url, timeout=10, trust_env=False) as client:
        return [cluster.number_of(client.get("/health").json()["worker"]) for _ in range(requests)]


def _new_conversation_digest(cluster: Cluster, n: int) -> str:
    """The bundle digest of a new HTTP chat started (and ended) on worker `n`."""
    started = httpx.post(f"{cluster.url(n)}/api/agents/harbor-support/sessions", timeout=30)
    assert started.status_code == 201, started.text
    sid = started.json()["session_id"]
    httpx.post(f"{cluster.url(n)}/api/sessions/{sid}/end", timeout=30)
    row = query(cluster.db_url, "SELECT bundle_digest, worker_id FROM sessions WHERE id = :s", s=sid)[0]
    assert cluster.number_of(row.worker_id) == n
    return str(row.bundle_digest)


def _call(base: str, says: list[str], **options: Any) -> asyncio.Task[CallReport]:
    return asyncio.create_task(
        run_call(base, protocol="native", says=says, voice=CALLER_VOICE, transcribe=False, **options)
    )


async def _worker_holding_the_call(cluster: Cluster, call: asyncio.Task[CallReport]) -> int:
    """The number of the worker that took the call's line (its /health counts it)."""
    while True:
        holding = [n for n, active in (await asyncio.to_thread(cluster.active_calls)).items() if active]
        if holding:
            assert len(holding) == 1, holding
            return holding[0]
        assert not call.done(), f"the call ended before it took a line: {call.result()}"
        await asyncio.sleep(0.1)


# ---- the cluster is up, and the balancer uses every worker ---------------------------------------------


def test_every_worker_is_ready_with_redis_and_serves_the_release(cluster: Cluster) -> None:
    for n in WORKERS:
        ready = httpx.get(f"{cluster.url(n)}/health/ready", timeout=10)
        assert ready.status_code == 200, (n, ready.text)
        assert ready.json()["checks"] == {
            "database": "ok",
            "speech_models": "ok",
            "draining": False,
            "redis": "ok",
        }, n
        health = httpx.get(f"{cluster.url(n)}/health", timeout=10).json()
        assert (health["mode"], health["environment"]) == ("released", ENVIRONMENT), health
        assert [s["bundle_digest"] for s in health["served"]] == [cluster.digest], health
        assert health["cluster"] == {"redis": cluster.redis_url, "workers": len(WORKERS)}, health
    assert set(cluster.rotation().values()) == {"UP"}


def test_the_cluster_view_through_the_balancer_lists_the_three_workers(cluster: Cluster) -> None:
    view = httpx.get(f"{cluster.lb_url}/api/cluster", headers=cluster.headers("ada"), timeout=10)
    assert view.status_code == 200, view.text
    body = view.json()
    assert body["mode"] == "cluster"
    listed = {cluster.number_of(w["id"]): w for w in body["workers"]}
    assert sorted(listed) == list(WORKERS), body["workers"]
    for n, w in listed.items():
        assert (w["url"], w["environment"], w["draining"]) == (cluster.url(n), ENVIRONMENT, False), w
    (prod,) = body["environments"]
    assert (prod["environment"], prod["workers"], prod["draining"]) == (ENVIRONMENT, 3, 0), prod
    assert (prod["active_calls"], prod["max_concurrent_calls"]) == (0, MAX_CONCURRENT_CALLS), prod
    # a person without the permission is refused, on any worker
    assert httpx.get(f"{cluster.lb_url}/api/cluster", headers=cluster.headers("dora"), timeout=10).status_code == 403


def test_the_balancer_sends_requests_round_robin_with_no_stickiness(cluster: Cluster) -> None:
    answered = _lb_workers(cluster, 9)
    assert Counter(answered) == {1: 3, 2: 3, 3: 3}, answered
    assert all(a != b for a, b in zip(answered, answered[1:], strict=False)), answered  # never twice in a row


# ---- chats through the balancer ------------------------------------------------------------------------


async def test_chats_through_the_balancer_are_spread_and_each_ends_on_its_worker(cluster: Cluster) -> None:
    questions = ["what are your opening hours", "is there an outage at two one one four six"] * 6
    mark = cluster.haproxy.log_size()
    chats = await asyncio.gather(*(_chat(cluster.lb_ws_url, q) for q in questions))
    for question, chat in zip(questions, chats, strict=True):
        assert chat["ended"] == {"type": "ended", "outcome": "resolved", "escalation": None}, chat
        if "outage" in question:
            assert chat["answer"]["actions"][0]["name"] == "check_outage", chat
        else:
            assert chat["answer"]["intent"] == "store_hours", chat
    ids = [c["session_id"] for c in chats]
    rows = {
        r.id: r
        for r in query(
            cluster.db_url,
            "SELECT id, worker_id, outcome, ended_at, bundle_digest, channel FROM sessions WHERE id = ANY(:ids)",
            ids=ids,
        )
    }
    assert sorted(rows) == sorted(ids)
    assert all(r.ended_at is not None and r.outcome == "resolved" for r in rows.values()), rows
    assert {r.bundle_digest for r in rows.values()} == {cluster.digest}
    # a socket stays on the worker that took it: each session was started and ended there, and the
    # balancer gave every worker its share
    spread = Counter(cluster.number_of(r.worker_id) for r in rows.values())
    assert set(spread) == set(WORKERS), spread
    # and HAProxy's log agrees: each worker got as many chat sockets as it holds sessions
    tunnels = await asyncio.to_thread(cluster.haproxy.tunnels, "/ws/chat/", len(chats), mark)
    assert Counter(int(name.rsplit("-", 1)[1]) for name in tunnels) == spread, (tunnels, spread)


# ---- HTTP chats through the balancer, with no stickiness ----------------------------------------------------


async def test_thirty_http_chats_through_the_balancer_without_stickiness_end_as_they_should(
    cluster: Cluster, credentials: list[dict[str, str]]
) -> None:
    """Each request of a chat may land on any worker: the conversation carries on from its last turn
    wherever the next one lands (verification included), and ends as it would on one worker."""
    lb_mark = cluster.haproxy.log_size()
    kinds = ["payment_due", "store_hours", "person"] * 10
    async with httpx.AsyncClient(base_url=cluster.lb_url, timeout=60, trust_env=False) as client:

        async def chat(k: int, kind: str) -> tuple[str, str]:
            started = await client.post("/api/agents/harbor-support/sessions")
            assert started.status_code == 201, started.text
            sid = started.json()["session_id"]

            async def send(path: str, body: dict[str, str]) -> dict[str, Any]:
                r = await client.post(f"/api/sessions/{sid}/{path}", json=body)
                assert r.status_code == 200, (kind, r.status_code, r.text)
                return dict(r.json())

            if kind == "payment_due":
                customer = credentials[100 + k]
                assert (await send("turns", {"text": "how much do I owe"}))["intent"] == "payment_due"
                await send("dtmf", {"digits": customer["account_number"]})
                verified = await send("dtmf", {"digits": customer["pin"]})
                done = {a["name"]: a["status"] for a in verified["actions"]}
                assert done == {"verify_customer": "ok", "get_balance": "ok"}, verified
            elif kind == "store_hours":
                assert (await send("turns", {"text": "what are your opening hours"}))["intent"] == "store_hours"
            else:
                escalated = await send("turns", {"text": "talk to a person please"})
                assert escalated["outcome"] == "escalated", escalated
                return sid, "escalated"
            ended = await send("end", {})
            return sid, str(ended["outcome"])

        chats = await asyncio.gather(*(chat(k, kind) for k, kind in enumerate(kinds)))
    expected = {"payment_due": "resolved", "store_hours": "resolved", "person": "escalated"}
    assert [outcome for _, outcome in chats] == [expected[k] for k in kinds]
    ids = [sid for sid, _ in chats]
    rows = {
        r.id: r
        for r in query(
            cluster.db_url, "SELECT id, outcome, end_reason, ended_at FROM sessions WHERE id = ANY(:ids)", ids=ids
        )
    }
    assert {sid: rows[sid].outcome for sid in ids} == {sid: expected[k] for sid, k in zip(ids, kinds, strict=True)}
    assert all(r.ended_at is not None and r.end_reason != "worker_lost" for r in rows.values()), rows
    # every turn stored once, in order, whichever worker took it
    turns = query(
        cluster.db_url, "SELECT session_id, seq FROM turns WHERE session_id = ANY(:ids) ORDER BY seq", ids=ids
    )
    by_session: dict[str, list[int]] = {sid: [] for sid in ids}
    for t in turns:
        by_session[t.session_id].append(t.seq)
    assert all(seqs == list(range(len(seqs))) and seqs for seqs in by_session.values()), by_session
    # and the balancer spread each conversation's requests over the workers: every worker took turns,
    # and most conversations of more than one request had them taken by more than one worker
    routed = await asyncio.to_thread(cluster.haproxy.routed, r"/api/sessions/([0-9a-f]+)/", lb_mark)
    requests = {sid: [server for server, s in routed if s == sid] for sid in ids}
    assert {server for server, _ in routed} == {f"worker-{n}" for n in WORKERS}, routed
    several = [servers for servers in requests.values() if len(servers) > 1]
    moved = sum(len(set(servers)) > 1 for servers in several)
    print(f"{moved} of the {len(several)} chats of more than one request had them taken by more than one worker")
    assert moved >= len(several) / 2, requests


# ---- the audit chain, written by three processes at once ---------------------------------------------------


async def test_audit_events_from_three_workers_at_once_form_one_chain_that_verifies(cluster: Cluster) -> None:
    """Each signed-in refusal is one audit event, written by the worker that refused it: 60 at once, 20
    on each worker (each refusing in its own environment, so that the events say which wrote them), must
    land in one unbroken chain."""
    per_worker = 20
    refused_in = {1: "dev", 2: "test", 3: "prod"}
    auditor = cluster.headers("audrey")  # auditors read records; they never deploy
    mark = query(cluster.db_url, "SELECT COALESCE(MAX(seq), 0) AS seq FROM audit_events")[0].seq

    async def refused(client: httpx.AsyncClient, n: int) -> int:
        r = await client.post(
            f"{cluster.url(n)}/api/environments/{refused_in[n]}/agents/harbor-support/deploy",
            json={"digest": "sha256:" + "0" * 64},
            headers=auditor,
        )
        return r.status_code

    async with httpx.AsyncClient(timeout=60, trust_env=False) as client:
        statuses = await asyncio.gather(*(refused(client, n) for _ in range(per_worker) for n in WORKERS))
    assert set(statuses) == {403}, Counter(statuses)
    events = query(
        cluster.db_url,
        "SELECT seq, environment FROM audit_events WHERE seq > :m AND action = 'auth.denied' ORDER BY seq",
        m=mark,
    )
    assert Counter(e.environment for e in events) == {env: per_worker for env in refused_in.values()}, events
    interleaved = sum(a.environment != b.environment for a, b in zip(events, events[1:], strict=False))
    print(f"{len(events)} refusals audited by three workers; the writer changed {interleaved} times along the chain")

    verify = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "voxgate.cli", "audit", "verify", "--json"],
        env={**os.environ, "VOXGATE_DATABASE_URL": cluster.db_url, "VOXGATE_DATA_DIR": str(cluster.root / "seed")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    report = json.loads(verify.stdout)
    assert report["ok"] is True and report["events_checked"] >= len(events), report
    seqs = [r.seq for r in query(cluster.db_url, "SELECT seq FROM audit_events ORDER BY seq")]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "the chain has a gap"


# ---- a publish on one worker is what the others serve next ---------------------------------------------------


async def test_a_publish_on_worker_1_reaches_workers_2_and_3_for_their_next_conversation(
    cluster: Cluster, tmp_path: Path
) -> None:
    listening = aioredis.Redis.from_url(cluster.redis_url)
    channel = ReleaseNotices(RedisCluster(listening), ENVIRONMENT).channel
    try:
        subscribers = dict(await listening.pubsub_numsub(channel))
        assert subscribers == {channel.encode(): len(WORKERS)}, subscribers  # every worker listens
        notices = listening.pubsub()
        await notices.subscribe(channel)
        before = cluster.digest
        digest = await asyncio.to_thread(cluster.release, versioned_agent(tmp_path, "1.0.1"), cluster.url(1))
        published_at = time.monotonic()
        assert digest != before
        # worker 1 told the others on the channel they listen to
        async with asyncio.timeout(REPLY_TIMEOUT_S):
            while (message := await notices.get_message(ignore_subscribe_messages=True, timeout=1.0)) is None:
                pass
        assert digest in message["data"].decode(), message
        await notices.aclose()  # type: ignore[no-untyped-call]
    finally:
        await listening.aclose()
    # and the next conversation on either of them gets the new bundle (polled: the notice travels
    # asynchronously; the issue's bound is 2 s, printed here rather than asserted on a shared machine)
    reached = {}
    for n in (2, 3):
        while (got := await asyncio.to_thread(_new_conversation_digest, cluster, n)) != digest:
            assert got == before, got
            assert time.monotonic() - published_at < REPLY_TIMEOUT_S, f"worker {n} still serves {got}"
            await asyncio.sleep(0.1)
        reached[n] = round(time.monotonic() - published_at, 2)
    print(f"after the publish returned, the next conversation on workers 2 and 3 had the new bundle in {reached} s")


# ---- admission: the environment's limit, across the cluster ---------------------------------------------


async def test_twelve_calls_started_at_once_through_the_balancer_with_a_limit_of_five_admit_exactly_five(
    cluster: Cluster,
) -> None:
    refused_before = await asyncio.to_thread(cluster.refused_calls)
    lb_mark = cluster.haproxy.log_size()
    (since,) = query(cluster.db_url, "SELECT now()")[0]
    # silent callers: an admitted one holds its line (the agent waits for it to speak), a refused one
    # hears the busy message and is hung up on within seconds
    calls = [_call(cluster.lb_ws_url, [], hangup_after=False, timeout_s=120) for _ in range(12)]
    async with asyncio.timeout(REPLY_TIMEOUT_S):
        while sum(c.done() for c in calls) < 12 - MAX_CONCURRENT_CALLS:
            await asyncio.sleep(0.1)
    done = [c.result() for c in calls if c.done()]
    holding = [c for c in calls if not c.done()]
    assert len(holding) == MAX_CONCURRENT_CALLS and all(r.refused for r in done), done
    view = httpx.get(f"{cluster.lb_url}/api/cluster", headers=cluster.headers("ada"), timeout=10).json()
    assert view["environments"][0]["active_calls"] == MAX_CONCURRENT_CALLS, view
    assert sum(w["active_calls"] for w in view["workers"]) == MAX_CONCURRENT_CALLS, view
    for call in holding:
        call.cancel()  # the admitted callers hang up
    await asyncio.gather(*holding, return_exceptions=True)

    # the balancer spread the twelve evenly (so no worker's own capacity of 5 refused any): the workers
    # refused seven between them, on the environment's count
    tunnels = await asyncio.to_thread(cluster.haproxy.tunnels, "/ws/voice/", 12, lb_mark)
    assert Counter(tunnels) == {f"worker-{n}": 4 for n in WORKERS}, tunnels
    refused = await asyncio.to_thread(cluster.refused_calls)
    assert sum(refused.values()) - sum(refused_before.values()) == 12 - MAX_CONCURRENT_CALLS, refused
    started = query(cluster.db_url, "SELECT id FROM sessions WHERE channel = 'voice' AND started_at >= :t", t=since)
    assert len(started) == MAX_CONCURRENT_CALLS
    # and the slots come back as the calls end
    await asyncio.to_thread(cluster.wait_for_calls, 0)


# ---- alerts: one breach, one incident, one webhook delivery -------------------------------------------------


async def _escalated_chats(cluster: Cluster, count: int) -> None:
    """`count` chats through the balancer in which the caller asks for a person at once."""

    async def one() -> None:
        async with connect(f"{cluster.lb_ws_url}/ws/chat/harbor-support", proxy=None, open_timeout=30) as ws:
            await _recv(ws, "turn")
            await ws.send(json.dumps({"type": "text", "text": "talk to a person please"}))
            turn = await _recv(ws, "turn")
            assert turn["outcome"] == "escalated", turn

    await asyncio.gather(*(one() for _ in range(count)))


async def test_three_workers_evaluating_alerts_open_one_incident_for_one_breach_and_deliver_it_once(
    cluster: Cluster,
) -> None:
    rule = "escalation-rate"  # prod: above 0.3 of at least 20 conversations in 15 minutes
    (sessions, escalated) = query(
        cluster.db_url,
        "SELECT count(*), count(*) FILTER (WHERE outcome = 'escalated') FROM sessions "
        "WHERE environment = :e AND started_at > now() - interval '15 minutes'",
        e=ENVIRONMENT,
    )[0]
    breach = max(20 - sessions, math.ceil((0.3 * sessions - escalated) / 0.7)) + 5
    await _escalated_chats(cluster, breach)
    # every worker evaluates the rules each second: wait until the incident has been seen firing by four
    # evaluations, any one of which could have opened a second incident if nothing kept it to one
    incidents = await asyncio.to_thread(
        _wait_for_rows,
        cluster,
        "SELECT id, status FROM incidents WHERE environment = :e AND rule = :r AND fired_count > :n",
        1,
        REPLY_TIMEOUT_S,
        e=ENVIRONMENT,
        r=rule,
        n=len(WORKERS),
    )
    everything = query(
        cluster.db_url, "SELECT id FROM incidents WHERE environment = :e AND rule = :r", e=ENVIRONMENT, r=rule
    )
    assert [i.id for i in everything] == [incidents[0].id], everything
    opened = query(
        cluster.db_url,
        "SELECT resource FROM audit_events WHERE action = 'incident.open' AND resource = :r",
        r=f"incident:{incidents[0].id}",
    )
    assert len(opened) == 1
    delivered = [w for w in cluster.webhooks.received if w["incident"]["id"] == incidents[0].id]
    assert len(delivered) == 1, cluster.webhooks.received
    assert delivered[0]["rule"]["name"] == rule


# ---- the voice benchmark through the balancer -------------------------------------------------------------


def test_the_voice_benchmark_runs_against_the_cluster_through_the_balancer(cluster: Cluster) -> None:
    lb_mark = cluster.haproxy.log_size()
    bench = subprocess.run(
        [sys.executable, "-m", "voxgate.cli", "bench", "voice", "--url", cluster.lb_url]
        + ["--calls", "2", "--duration", "1", "--ramp", "0", "--scenario", "outage", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bench.returncode == 0, bench.stdout[-3000:] + bench.stderr[-3000:]
    report = json.loads(bench.stdout)
    assert report["error"] is None and report["calls_total"] >= 2, report
    assert report["calls_completed"] == report["calls_total"] and not report["failures"], report
    assert report["voice_to_voice_ms"]["n"] > 0, report
    print(f"bench through HAProxy: voice-to-voice {report['voice_to_voice_ms']}")
    tunnels = cluster.haproxy.tunnels("/twilio/", report["calls_total"], lb_mark)
    assert len(set(tunnels)) >= 2, tunnels  # the calls went to different workers


# ---- one desk: the desk agent on one worker, the caller on another ------------------------------------------

TONE_HZ = 660.0
RATE = 16000
FRAME = 320  # 20 ms at 16 kHz


def _tone_frames(audio: np.ndarray) -> tuple[int, int]:
    """(frames of a 660 Hz tone, loud frames) in 16 kHz PCM16 audio, per 20 ms frame."""
    n = audio.size // FRAME
    frames = audio[: n * FRAME].reshape(n, FRAME).astype(np.float64)
    energy = (frames * frames).sum(axis=1)
    loud = np.sqrt(energy / FRAME) >= 200
    basis = np.exp(-2j * np.pi * TONE_HZ * np.arange(FRAME) / RATE)
    share = np.where(energy > 0, 2 * np.abs(frames @ basis) ** 2 / (FRAME * np.maximum(energy, 1e-9)), 0.0)
    return int((loud & (share >= 0.8)).sum()), int(loud.sum())


class ListeningCall(SimulatedCall):
    """A simulated caller that keeps the agent audio it hears, with when each frame arrived."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.arrivals: list[tuple[float, np.ndarray]] = []

    def _on_message(self, message: str | bytes) -> None:
        if isinstance(message, bytes):
            self.arrivals.append((time.monotonic(), np.frombuffer(message, dtype="<i2").copy()))
        super()._on_message(message)

    def heard(self, since: float) -> np.ndarray:
        parts = [a for t, a in self.arrivals if t >= since]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int16)


async def test_a_desk_agent_on_worker_1_takes_a_voice_call_on_worker_3_and_each_hears_the_other(
    cluster: Cluster,
) -> None:
    call = ListeningCall(cluster.ws_url(3), protocol="native", agent="harbor-support", voice=CALLER_VOICE, gap_ms=600)
    ask = prepare_utterance("I want to talk to a real person", CALLER_VOICE, "native")
    hello = prepare_utterance("hello, can you hear me", CALLER_VOICE, "native")
    connected = asyncio.Event()

    async def script(c: SimulatedCall) -> None:
        assert await c.wait_reply(-1, REPLY_TIMEOUT_S)
        c.begin_turn(0)
        await c.say(ask)
        await connected.wait()
        c.begin_turn(1)
        await c.say(hello)  # to the person, on the other worker
        await c.server_closed.wait()

    async with connect(
        f"{cluster.ws_url(1)}/ws/desk", proxy=None, open_timeout=30, additional_headers=cluster.headers("dora")
    ) as desk:
        await _recv(desk, "hello")
        await desk.send(json.dumps({"type": "status", "status": "available"}))
        await _recv(desk, "status")
        caller = asyncio.create_task(_run(call, script, timeout_s=150, hangup_after=False))
        offer = (await _recv(desk, "offer"))["handoff"]  # offered on worker 1
        (session_id,) = query(cluster.db_url, "SELECT session_id FROM handoffs WHERE id = :i", i=offer["id"])[0]
        assert cluster.session_worker(session_id) == 3  # the caller's line is on worker 3
        await desk.send(json.dumps({"type": "accept", "handoff_id": offer["id"]}))
        await _recv(desk, "connected")  # after the caller heard they are being put through
        bridged_at = time.monotonic()
        connected.set()

        # the desk's microphone: a 660 Hz tone in real time, 20 ms a frame, while it keeps what it hears
        heard_at_desk: list[np.ndarray] = []
        told: list[str] = []  # the types of the desk's messages from here on

        async def listen() -> None:
            with contextlib.suppress(ConnectionClosed):
                async for raw in desk:
                    if isinstance(raw, bytes):
                        heard_at_desk.append(np.frombuffer(raw, dtype="<i2").copy())
                    else:
                        told.append(json.loads(raw).get("type"))

        async def told_of(kind: str) -> None:
            async with asyncio.timeout(REPLY_TIMEOUT_S):
                while kind not in told:
                    await asyncio.sleep(0.05)

        listening = asyncio.create_task(listen())
        t = np.arange(RATE * 4) / RATE
        tone = (0.5 * 32767 * np.sin(2 * np.pi * TONE_HZ * t)).astype("<i2").tobytes()
        for k in range(0, len(tone), 2 * FRAME):
            await desk.send(tone[k : k + 2 * FRAME])
            await asyncio.sleep(FRAME / RATE)
        async with asyncio.timeout(REPLY_TIMEOUT_S):  # the caller's "hello" reaches the desk on worker 1
            while _tone_frames(np.concatenate(heard_at_desk) if heard_at_desk else np.zeros(0, np.int16))[1] < 25:
                await asyncio.sleep(0.1)
        tone_at_caller, loud_at_caller = _tone_frames(call.heard(bridged_at))
        assert tone_at_caller >= 75 and tone_at_caller >= 0.8 * loud_at_caller, (tone_at_caller, loud_at_caller)

        await desk.send(json.dumps({"type": "hangup"}))
        await told_of("call_ended")
        await desk.send(json.dumps({"type": "wrap_up", "handoff_id": offer["id"], "disposition": "resolved"}))
        await told_of("wrapped_up")
        await asyncio.wait_for(caller, REPLY_TIMEOUT_S)
        listening.cancel()
    assert call.report.error is None and call.report.outcome == "escalated", call.report
    row = query(cluster.db_url, "SELECT status, disposition FROM handoffs WHERE id = :i", i=offer["id"])[0]
    assert (row.status, row.disposition) == ("wrapped_up", "resolved")


# ---- failover: kill -9 -------------------------------------------------------------------------------------


def _wait_for_rows(cluster: Cluster, sql: str, want: int, timeout_s: float, **params: object) -> list[Any]:
    """The rows of `sql` once there are `want` of them (an AssertionError after `timeout_s`)."""
    deadline = time.monotonic() + timeout_s
    while len(rows := query(cluster.db_url, sql, **params)) < want:
        assert time.monotonic() < deadline, f"{len(rows)} of {want} rows after {timeout_s:g} s: {sql}"
        time.sleep(0.2)
    return rows


async def test_kill_9_of_a_worker_ends_its_calls_and_the_others_close_its_sessions_and_handoffs_as_worker_lost(
    cluster: Cluster, sockets: list[ClientConnection], http: httpx.AsyncClient, credentials: list[dict[str, str]]
) -> None:
    victim = 2
    ws = cluster.ws_url(victim)
    # a desk agent signed in on another worker (one desk for the cluster)
    desk = await connect(
        f"{cluster.ws_url(1)}/ws/desk", proxy=None, open_timeout=30, additional_headers=cluster.headers("dora")
    )
    sockets.append(desk)
    await _recv(desk, "hello")
    await desk.send(json.dumps({"type": "status", "status": "available"}))
    await _recv(desk, "status")
    # a caller who asked for a person and waits in the queue (the desk agent declined the offer) ...
    waiting = _call(ws, ["I want to talk to a real person"], hangup_after=False, timeout_s=150)
    offer = (await _recv(desk, "offer"))["handoff"]
    await desk.send(json.dumps({"type": "decline", "handoff_id": offer["id"]}))
    await asyncio.to_thread(
        _wait_for_rows,
        cluster,
        "SELECT id FROM handoffs WHERE id = :i AND status = 'waiting' AND CAST(events AS TEXT) LIKE '%offer_withdrawn%'",
        1,
        REPLY_TIMEOUT_S,
        i=offer["id"],
    )
    # ... a caller in the middle of a conversation with the agent, and a chat in the middle of its own
    talking = _call(ws, ["what are your opening hours"] * 8, hangup_after=False, timeout_s=150)
    chat = await connect(f"{ws}/ws/chat/harbor-support", proxy=None, open_timeout=30)
    chat_session = (await _recv(chat, "turn"))["session_id"]
    await chat.send(json.dumps({"type": "text", "text": "is there an outage in my area"}))
    assert not (await _recv(chat, "turn"))["ended"]
    # ... and an HTTP chat whose last turn the victim took (its state waits in Redis between turns)
    started = await http.post(f"{cluster.url(victim)}/api/agents/harbor-support/sessions")
    assert started.status_code == 201, started.text
    portable = started.json()["session_id"]
    asked = await http.post(f"{cluster.url(victim)}/api/sessions/{portable}/turns", json={"text": "how much do I owe"})
    assert asked.status_code == 200 and asked.json()["intent"] == "payment_due", asked.text
    in_conversation = await asyncio.to_thread(
        _wait_for_rows,
        cluster,
        "SELECT id FROM sessions WHERE worker_id = :w AND channel = 'voice' AND ended_at IS NULL AND turn_count > 0",
        1,
        REPLY_TIMEOUT_S,
        w=cluster.worker(victim).worker_id,
    )
    assert not talking.done(), talking.result()

    killed_at = time.monotonic()
    cluster.kill9(victim)
    # the calls end with their worker (a call cannot move to another) and the sockets close
    reports = await asyncio.wait_for(asyncio.gather(waiting, talking), REPLY_TIMEOUT_S)
    escalated, cut = (str(r.session_id) for r in reports)
    for report in reports:
        assert report.session_id is not None and report.outcome is None, report  # neither heard an ending
    await _closed(chat)
    assert [r.id for r in in_conversation] == [cut]
    assert {cluster.session_worker(s) for s in (escalated, cut, chat_session, portable)} == {victim}

    # the surviving workers' repair closes what the dead one held, well within the 30 s the failover allows
    handoff = (
        await asyncio.to_thread(
            _wait_for_rows,
            cluster,
            "SELECT status, failure_reason FROM handoffs WHERE id = :i AND status = 'failed'",
            1,
            FAILOVER_S,
            i=offer["id"],
        )
    )[0]
    await asyncio.to_thread(
        _wait_for_rows,
        cluster,
        "SELECT id FROM sessions WHERE id IN (:c, :s) AND ended_at IS NOT NULL",
        2,
        FAILOVER_S,
        c=cut,
        s=chat_session,
    )
    print(f"worker {victim} killed: its sessions and handoff closed {time.monotonic() - killed_at:.1f} s later")
    assert handoff.failure_reason == "worker_lost"
    rows = query(
        cluster.db_url,
        "SELECT id, outcome, end_reason FROM sessions WHERE id IN (:e, :c, :s)",
        e=escalated,
        c=cut,
        s=chat_session,
    )
    assert {r.id: (r.outcome, r.end_reason) for r in rows} == {
        escalated: ("escalated", "completed"),  # its conversation had ended in the handoff, before the crash
        cut: ("abandoned", "worker_lost"),
        chat_session: ("abandoned", "worker_lost"),
    }
    repairs = query(cluster.db_url, "SELECT data FROM audit_events WHERE action = 'worker.repair'")
    repaired = " ".join(json.dumps(r.data) for r in repairs)
    assert cut in repaired and chat_session in repaired, "the repair is audited"
    # the HTTP chat was left open by the repair, and goes on through the balancer from its last turn: the
    # account number and PIN it was asking for, then its end, on the workers that live on
    assert portable not in repaired
    assert query(cluster.db_url, "SELECT ended_at FROM sessions WHERE id = :s", s=portable)[0].ended_at is None
    customer = credentials[90]
    for digits in (customer["account_number"], customer["pin"]):
        went_on = await http.post(f"{cluster.lb_url}/api/sessions/{portable}/dtmf", json={"digits": digits})
        assert went_on.status_code == 200, went_on.text
    done = {a["name"]: a["status"] for a in went_on.json()["actions"]}
    assert done == {"verify_customer": "ok", "get_balance": "ok"}, went_on.json()
    ended = await http.post(f"{cluster.lb_url}/api/sessions/{portable}/end", json={})
    assert ended.status_code == 200 and ended.json()["outcome"] == "resolved", ended.text
    assert cluster.session_worker(portable) != victim  # its row follows the worker that took its last turn
    seqs = [
        t.seq for t in query(cluster.db_url, "SELECT seq FROM turns WHERE session_id = :s ORDER BY seq", s=portable)
    ]
    assert seqs == list(range(len(seqs))) and len(seqs) >= 4, seqs  # greeting, question, account, PIN: once each
    # the desk agent, on a worker that lives on, is still signed in and free for the next caller
    await desk.send(json.dumps({"type": "status", "status": "available"}))
    assert (await _recv(desk, "status"))["status"] == "available"


# ---- drain: SIGTERM mid-call -------------------------------------------------------------------------------


async def test_sigterm_mid_call_drains_that_worker_without_dropping_the_call_and_the_balancer_skips_it(
    started: Cluster,
) -> None:
    """On the workers that are up (the last test: the one killed before is not started again), at least two."""
    cluster = started
    live = {w.n for w in cluster.workers if w.running}
    assert len(live) >= 2, live
    call = _call(cluster.lb_ws_url, ["are you open on public holidays"])  # a short answer, then the agent ends it
    n = await _worker_holding_the_call(cluster, call)
    others = live - {n}
    cluster.sigterm(n)
    async with httpx.AsyncClient(timeout=10, trust_env=False) as client:
        ready = await client.get(f"{cluster.url(n)}/health/ready")
        assert ready.status_code == 503 and ready.json()["checks"]["draining"] is True, ready.text
        # the other workers see it draining in the directory at once
        other = min(others)
        async with asyncio.timeout(REPLY_TIMEOUT_S):
            while True:
                view = (await client.get(f"{cluster.url(other)}/api/cluster", headers=cluster.headers("ada"))).json()
                if any(w["draining"] for w in view["workers"]):
                    break
                await asyncio.sleep(0.05)
        assert [cluster.number_of(w["id"]) for w in view["workers"] if w["draining"]] == [n], view
        await asyncio.to_thread(cluster.wait_rotation, n, False)
        # new work through the balancer goes to the other two only, and is served
        answered = await asyncio.to_thread(_lb_workers, cluster, 6)
        assert set(answered) == others, answered
        chat = await _chat(cluster.lb_ws_url, "what are your opening hours")
        assert chat["ended"]["outcome"] == "resolved"
        assert cluster.session_worker(chat["session_id"]) in others
        report = await call
    assert report.error is None and report.turns and all(t.replied for t in report.turns), report
    assert await asyncio.to_thread(cluster.worker(n).wait_exit) == 0
    assert report.session_id is not None
    row = query(
        cluster.db_url,
        "SELECT outcome, end_reason, ended_at, worker_id FROM sessions WHERE id = :s",
        s=report.session_id,
    )[0]
    assert cluster.number_of(row.worker_id) == n
    assert row.ended_at is not None and row.outcome == "resolved", row
    assert row.end_reason in ("completed", "caller_hangup"), row  # neither cut by the shutdown nor lost
    assert "drain: no call in progress; shutting down" in cluster.worker(n).log_since(0)
