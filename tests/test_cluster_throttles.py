"""Throttles through two workers of one cluster: two worker apps, each served by uvicorn on its own
loopback port, on one database and one real Redis, reached over real sockets (loopback addresses
127.0.0.x stand for different clients). A client that spreads its attempts over the workers meets
the limits of one worker: failed sign-ins (back-off, lock, forgiveness on success), new chat
sessions per client address, calls per calling number, and the 429 on anonymous refusals. What the
workers count in Redis holds no username, address or number. When Redis goes away, a sign-in and a
new chat session are refused (503, or a socket closed with 1013), never let through uncounted.

The sign-in tests run on each database the run has; the workers' clock is the test's, so nothing
here waits for a back-off to pass.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import datetime as dt
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import websockets

from tests.helpers.cluster import own_redis
from tests.helpers.databases import query
from tests.helpers.redis import stop_redis
from tests.helpers.servers import serving
from tests.helpers.throttles import chat_socket
from tests.helpers.worker_pair import fresh_redis
from voxgate.api.app import create_app
from voxgate.api.conversations import UNCOUNTED
from voxgate.api.governance import SIGN_IN_UNCOUNTED
from voxgate.api.state import AppState
from voxgate.bundle.models import BundleSource
from voxgate.config import Settings
from voxgate.governance.releases import text_sha256

AGENT = "harbor-support"
ADMIN = "quinn"  # no hex letters: its name cannot turn up by chance inside a hash in Redis
PASSWORD = "correct horse battery staple"
LOCK_S = 900  # the defaults: 5 free failures, then 1, 2, 4, 8 s, and a 15-minute lock at the 10th


class Clock:
    """The workers' clock, one for both (the test moves it)."""

    def __init__(self) -> None:
        self.now = dt.datetime.now(dt.UTC).replace(second=5, microsecond=0)

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


class Worker:
    """One worker of the pair: its URL, its state, and an HTTP client per source address."""

    def __init__(self, url: str, state: AppState) -> None:
        self.url, self.state = url, state
        self.clients: dict[str, httpx.Client] = {}

    def client(self, address: str = "127.0.0.1") -> httpx.Client:
        if address not in self.clients:
            self.clients[address] = httpx.Client(
                base_url=self.url, timeout=60, trust_env=False, transport=httpx.HTTPTransport(local_address=address)
            )
        return self.clients[address]

    def login(self, username: str, password: str, address: str = "127.0.0.1") -> httpx.Response:
        return self.client(address).post("/api/auth/login", json={"username": username, "password": password})

    def close(self) -> None:
        for client in self.clients.values():
            client.close()


@contextlib.contextmanager
def two_workers(settings: Settings, bundles: list[BundleSource] | None = None) -> Iterator[tuple[Worker, Worker]]:
    """Two workers with the same settings (database, Redis, data directory: the same privacy salt),
    started one after the other, on one clock."""
    clock = Clock()
    apps = [create_app(settings, list(bundles or [])) for _ in range(2)]
    with serving(apps[0]) as url_a, serving(apps[1]) as url_b:
        workers = (Worker(url_a, apps[0].state.voxgate), Worker(url_b, apps[1].state.voxgate))
        for w in workers:
            w.state.clock = clock
        try:
            yield workers
        finally:
            for w in workers:
                w.close()


def clock_of(worker: Worker) -> Clock:
    clock = worker.state.clock
    assert isinstance(clock, Clock)
    return clock


def redis_contents(url: str, match: str) -> str:
    """Every key matching `match` in the Redis database at `url` with what it holds, as one string."""
    client = redis.Redis.from_url(url)
    try:
        found = []
        for key in client.scan_iter(match=match):
            kind = client.type(key)
            if kind == b"zset":
                held: Any = client.zrange(key, 0, -1)
            elif kind == b"hash":
                held = client.hgetall(key)
            elif kind == b"string":
                held = client.get(key)
            else:
                held = kind
            found.append(f"{key!r}: {held!r}")
        return "\n".join(found)
    finally:
        client.close()


def audit_rows(db_url: str, action: str) -> list[tuple[str, dict[str, Any]]]:
    rows = query(db_url, "SELECT outcome, data FROM audit_events WHERE action = :action ORDER BY seq", action=action)
    return [(outcome, json.loads(data)) for outcome, data in rows]


# ---- sign-in ----------------------------------------------------------------------------------------------


@pytest.fixture()
def sign_in_pair(db_url: str, tmp_path: Path) -> Iterator[tuple[Worker, Worker, str]]:
    """Two workers of one cluster, with one admin: the workers and the Redis URL."""
    redis_url = fresh_redis()
    settings = Settings(database_url=db_url, data_dir=tmp_path / "data", redis_url=redis_url)
    with two_workers(settings) as (a, b):
        a.state.identity.bootstrap_admin(ADMIN, PASSWORD)
        yield a, b, redis_url


def test_a_guesser_spreading_sign_ins_over_two_workers_is_locked_as_on_one(
    sign_in_pair: tuple[Worker, Worker, str], db_url: str
) -> None:
    a, b, redis_url = sign_in_pair
    clock = clock_of(a)
    waits: list[int] = []
    tries = 0
    while True:
        worker = (a, b)[(tries + len(waits)) % 2]  # every other attempt on the other worker
        r = worker.login(ADMIN, f"guess number {tries}")
        if r.status_code == 429:
            wait = int(r.headers["retry-after"])
            if wait > 60:
                break  # locked
            waits.append(wait)
            clock.advance(wait)
            continue
        assert r.status_code == 401
        tries += 1
    assert tries == 10 and waits == [1, 2, 4, 8] and wait == LOCK_S  # one worker's rules, over both
    assert a.login(ADMIN, PASSWORD).status_code == 429  # locked on both: the right password too
    refused = b.login(ADMIN, PASSWORD, address="127.0.0.2")  # and from an address with no failures
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) == LOCK_S
    clock.advance(LOCK_S)
    assert b.login(ADMIN, PASSWORD).status_code == 200

    locks = audit_rows(db_url, "auth.lockout")  # each lock audited once, by the worker whose failure placed it
    assert sorted(d["scope"] for _, d in locks) == ["address", "username"]
    assert all(d["username_sha256"] == text_sha256(ADMIN) and d["seconds"] == LOCK_S for _, d in locks)
    logins = audit_rows(db_url, "auth.login")
    assert [outcome for outcome, _ in logins] == ["denied"] * 10 + ["ok"]
    held = redis_contents(redis_url, "voxgate:login*")
    assert held and ADMIN not in held and "127.0.0." not in held  # keyed hashes only


def test_guesses_sent_at_once_to_both_workers_are_throttled_like_guesses_in_a_row(
    sign_in_pair: tuple[Worker, Worker, str], db_url: str
) -> None:
    a, b, _ = sign_in_pair

    def guess(n: int) -> int:
        worker = (a, b)[n % 2]
        return worker.login(ADMIN, f"guess number {n}").status_code

    for w in (a, b):
        w.client()  # made before the threads share it
    with ThreadPoolExecutor(20) as pool:
        answers = collections.Counter(pool.map(guess, range(20)))
    assert answers == {401: 6, 429: 14}  # counted in one step before each password check, wherever
    assert len(audit_rows(db_url, "auth.login")) == 6


def test_a_sign_in_on_one_worker_forgives_the_failures_counted_on_the_other(
    sign_in_pair: tuple[Worker, Worker, str],
) -> None:
    a, b, _ = sign_in_pair
    for _ in range(4):
        assert a.login(ADMIN, "a wrong password").status_code == 401
    assert b.login(ADMIN, PASSWORD).status_code == 200
    # a clean slate on both: five free failures again, then the wait
    answers = [(a, b)[n % 2].login(ADMIN, "a wrong password").status_code for n in range(7)]
    assert answers == [401] * 6 + [429]


# ---- anonymous refusals ---------------------------------------------------------------------------------


@pytest.mark.sqlite_only
def test_anonymous_refusals_spread_over_two_workers_meet_one_limit(db_url: str, tmp_path: Path) -> None:
    settings = Settings(
        database_url=db_url, data_dir=tmp_path / "data", redis_url=fresh_redis(), anonymous_denials_per_minute=3
    )
    with two_workers(settings) as (a, b):
        answers = [(a, b)[n % 2].client().get("/api/users") for n in range(6)]
        other = b.client("127.0.0.2").get("/api/users")
    assert [r.status_code for r in answers] == [401] * 3 + [429] * 3  # the 4th anywhere: 429
    assert all(1 <= int(r.headers["retry-after"]) <= 55 for r in answers[3:])  # to the minute's end
    assert other.status_code == 401  # another address has its own count
    # each worker audited the refusals it answered (written as it stopped): none lost, none twice
    counted: collections.Counter[tuple[str, str]] = collections.Counter()
    for _, d in audit_rows(db_url, "auth.denied.anon"):
        counted[(d["client"], d["reason"])] += d["count"]
    assert counted == {("127.0.0.1", "denied"): 3, ("127.0.0.1", "rate_limited"): 3, ("127.0.0.2", "denied"): 1}


# ---- new conversations --------------------------------------------------------------------------------------


@pytest.mark.sqlite_only
def test_new_chat_sessions_per_address_are_counted_across_two_workers(
    db_url: str, tmp_path: Path, harbor_bundle: BundleSource, harbor_backend: Any
) -> None:
    redis_url = fresh_redis()
    settings = Settings(
        database_url=db_url, data_dir=tmp_path / "data", redis_url=redis_url, chat_sessions_per_minute=3
    )
    start = f"/api/agents/{AGENT}/sessions"
    with two_workers(settings, [harbor_bundle]) as (a, b):
        assert a.client("127.0.0.7").post(start).status_code == 201
        assert b.client("127.0.0.7").post(start).status_code == 201
        assert asyncio.run(chat_socket(a.url, "127.0.0.7"))[0] == "turn"  # HTTP and WebSocket count together
        refused = b.client("127.0.0.7").post(start)
        assert refused.status_code == 429 and 1 <= int(refused.headers["retry-after"]) <= 60
        kind, (code, reason) = asyncio.run(chat_socket(b.url, "127.0.0.7"))
        assert kind == "closed" and code == 1008 and "too many new sessions" in reason
        assert a.client("127.0.0.7").post(start).status_code == 429
        # another address is not affected
        assert a.client("127.0.0.8").post(start).status_code == 201
    windows = redis_contents(redis_url, "voxgate:window:*")
    assert "window:chats:dev" in windows and "127.0.0." not in windows


async def twilio_call(url: str, custom: dict[str, str]) -> tuple[str, Any]:
    """Start a Twilio media stream: ("answered", None) once the greeting's audio arrives, or
    ("closed", (code, reason))."""
    silence = base64.b64encode(b"\xff" * 160).decode()
    async with websockets.connect(url.replace("http://", "ws://") + f"/twilio/{AGENT}", open_timeout=10) as ws:
        await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
        start = {
            "streamSid": "MZ1",
            "accountSid": "AC1",
            "callSid": "CA1",
            "tracks": ["inbound"],
            "customParameters": custom,
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        }
        await ws.send(json.dumps({"event": "start", "sequenceNumber": "1", "streamSid": "MZ1", "start": start}))
        try:
            while True:
                message = json.loads(await asyncio.wait_for(ws.recv(), timeout=120))
                if message.get("event") == "media":
                    media = {"track": "inbound", "payload": silence}
                    await ws.send(json.dumps({"event": "media", "streamSid": "MZ1", "media": media}))
                    await ws.send(json.dumps({"event": "stop", "streamSid": "MZ1", "stop": {"callSid": "CA1"}}))
                    return "answered", None
        except websockets.ConnectionClosed as closed:
            return "closed", (closed.rcvd.code, closed.rcvd.reason) if closed.rcvd else (None, "")


@pytest.mark.sqlite_only
def test_calls_per_number_are_counted_across_two_workers(
    db_url: str, tmp_path: Path, harbor_bundle: BundleSource, harbor_backend: Any
) -> None:
    redis_url = fresh_redis()
    settings = Settings(
        database_url=db_url, data_dir=tmp_path / "data", redis_url=redis_url, calls_per_number_per_minute=1
    )
    with two_workers(settings, [harbor_bundle]) as (a, b):

        async def scenario() -> list[tuple[str, Any]]:
            return [
                await twilio_call(a.url, {"from": "+15550001111"}),
                await twilio_call(b.url, {"from": "+1 555 000 1111"}),  # the same number, on the other worker
                await twilio_call(b.url, {"from": "+15550002222"}),
            ]

        first, again, other = asyncio.run(scenario())
    assert first[0] == "answered"
    assert again[0] == "closed" and again[1][0] == 1008 and "too many calls from this number" in again[1][1]
    assert other[0] == "answered"
    windows = redis_contents(redis_url, "voxgate:window:*")
    assert "window:calls:dev" in windows and "5550001111" not in windows and "5550002222" not in windows


# ---- when Redis goes away ----------------------------------------------------------------------------------


@pytest.mark.sqlite_only
def test_while_redis_is_away_sign_ins_and_new_chats_are_refused_not_let_through(
    db_url: str, tmp_path: Path, harbor_bundle: BundleSource, harbor_backend: Any
) -> None:
    where = tmp_path / "redis"
    with own_redis(where) as redis_url:
        settings = Settings(database_url=db_url, data_dir=tmp_path / "data", redis_url=redis_url)
        app = create_app(settings, [harbor_bundle])
        with serving(app) as url:
            worker = Worker(url, app.state.voxgate)
            worker.state.identity.bootstrap_admin(ADMIN, PASSWORD)
            try:
                assert worker.login(ADMIN, "a wrong password").status_code == 401  # counted in Redis
                stop_redis(redis_url, where)
                for password in (PASSWORD, "another wrong password"):
                    refused = worker.login(ADMIN, password)
                    assert refused.status_code == 503, refused.text  # neither checked nor let through
                    assert refused.json()["detail"] == SIGN_IN_UNCOUNTED
                    assert refused.headers["retry-after"] == "5"
                chat = worker.client().post(f"/api/agents/{AGENT}/sessions")
                assert chat.status_code == 503 and chat.json()["detail"] == UNCOUNTED
                kind, (code, reason) = asyncio.run(chat_socket(url, "127.0.0.1"))
                assert kind == "closed" and code == 1013 and reason == UNCOUNTED
                # an anonymous refusal is refused all the same, counted by this worker alone
                assert worker.client().get("/api/users").status_code == 401
            finally:
                worker.close()
    logins = audit_rows(db_url, "auth.login")
    assert [outcome for outcome, _ in logins] == ["denied"]  # the refused attempts reached no password check
