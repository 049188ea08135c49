"""Sign-in throttling over real sockets, on each database the run has: back-off and a temporary lock
per username and per client address (loopback addresses 127.0.0.x stand for different clients),
429 with Retry-After while throttled even for the right password, audited, and forgiven on success.
The worker's clock is the test's, so nothing here waits.

The same rules hold wherever the failures are counted: the throttle's own tests run on this
process's memory and on Redis (a cluster's workers count together: there, "two workers" are two
independent Redis clients and their failures add up)."""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import functools
import json
import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers.databases import query
from tests.helpers.redis import worker_redis_url
from tests.helpers.servers import serving
from voxgate.api.app import create_app
from voxgate.cluster.counters import RedisLoginCounts
from voxgate.cluster.redis import Cluster
from voxgate.config import ConfigError, Settings, load_settings
from voxgate.governance.releases import text_sha256
from voxgate.governance.throttle import Failure, InMemoryLoginThrottle, LoginAttempts, Refusal, SharedLoginThrottle
from voxgate.runtime.lockout import keyed_subject

pytestmark = pytest.mark.sqlite_only  # the throttle counts in memory; the database only receives its audit events

PASSWORD = "correct horse battery staple"
LOCK_S = 900  # the defaults: 5 free failures, then 1, 2, 4, 8 s, and a 15-minute lock at the 10th


class Clock:
    def __init__(self) -> None:
        self.now = dt.datetime.now(dt.UTC).replace(microsecond=0)

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


class Worker:
    """A worker's URL, its clock and database, and a client per source address."""

    def __init__(self, url: str, clock: Clock, db_url: str):
        self.url, self.clock, self.db_url = url, clock, db_url
        self.clients: dict[str, httpx.Client] = {}

    def login(self, username: str, password: str, address: str = "127.0.0.1") -> httpx.Response:
        if address not in self.clients:
            self.clients[address] = httpx.Client(
                base_url=self.url, timeout=60, trust_env=False, transport=httpx.HTTPTransport(local_address=address)
            )
        return self.clients[address].post("/api/auth/login", json={"username": username, "password": password})

    def close(self) -> None:
        for client in self.clients.values():
            client.close()


@pytest.fixture()
def worker(db_url: str, tmp_path: Path) -> Iterator[Worker]:
    app = create_app(Settings(database_url=db_url, data_dir=tmp_path / "data"), [])
    clock = Clock()
    with serving(app) as url:
        state = app.state.voxgate
        state.clock = clock
        state.identity.bootstrap_admin("ada", PASSWORD)
        worker = Worker(url, clock, db_url)
        yield worker
        worker.close()


def audit_rows(db_url: str, action: str) -> list[tuple[str, dict[str, Any]]]:
    rows = query(db_url, "SELECT outcome, data FROM audit_events WHERE action = :action ORDER BY seq", action=action)
    return [(outcome, json.loads(data)) for outcome, data in rows]


def test_six_hundred_wrong_passwords_then_the_right_one_is_refused(worker: Worker) -> None:
    statuses = collections.Counter(worker.login("ada", f"guess number {n}").status_code for n in range(600))
    assert statuses == {401: 6, 429: 594}  # five free, the sixth makes the next wait
    right = worker.login("ada", PASSWORD)
    assert right.status_code == 429 and right.headers["retry-after"] == "1"  # the answer tells a guesser nothing
    worker.clock.advance(1)
    assert worker.login("ada", PASSWORD).status_code == 200


def test_guesses_sent_all_at_once_are_throttled_like_guesses_in_a_row(worker: Worker) -> None:
    # each attempt counts before its (slow) password check: twenty at once do not get twenty checks
    with (
        httpx.Client(
            base_url=worker.url, timeout=120, trust_env=False, limits=httpx.Limits(max_connections=20)
        ) as client,
        ThreadPoolExecutor(20) as pool,
    ):
        answers = list(
            pool.map(
                lambda n: (
                    client.post(
                        "/api/auth/login", json={"username": "ada", "password": f"guess number {n}"}
                    ).status_code
                ),
                range(20),
            )
        )
    assert collections.Counter(answers) == {401: 6, 429: 14}
    assert len(audit_rows(worker.db_url, "auth.login")) == 6


def test_a_guesser_who_waits_as_told_is_locked_out_and_it_is_audited(worker: Worker) -> None:
    waits: list[int] = []
    tries = 0
    while True:
        r = worker.login("ada", f"guess number {tries}")
        if r.status_code == 429:
            wait = int(r.headers["retry-after"])
            if wait > 60:
                break  # locked
            waits.append(wait)
            worker.clock.advance(wait)
            continue
        assert r.status_code == 401
        tries += 1
    assert tries == 10 and waits == [1, 2, 4, 8] and wait == LOCK_S
    assert worker.login("ada", PASSWORD).status_code == 429  # locked: the right password too
    worker.clock.advance(LOCK_S - 1)
    assert worker.login("ada", PASSWORD).status_code == 429
    worker.clock.advance(1)
    assert worker.login("ada", PASSWORD).status_code == 200

    locks = audit_rows(worker.db_url, "auth.lockout")
    assert sorted(d["scope"] for _, d in locks) == ["address", "username"]
    assert all(
        outcome == "denied"
        and d["username_sha256"] == text_sha256("ada")
        and d["client"] == "127.0.0.1"
        and d["seconds"] == LOCK_S
        for outcome, d in locks
    )
    logins = audit_rows(worker.db_url, "auth.login")
    assert [outcome for outcome, _ in logins] == ["denied"] * 10 + ["ok"]  # refused attempts are not here


def test_the_throttled_attempts_are_counted_when_the_worker_stops(db_url: str, tmp_path: Path) -> None:
    app = create_app(Settings(database_url=db_url, data_dir=tmp_path / "data"), [])
    with serving(app) as url:
        app.state.voxgate.clock = Clock()
        worker = Worker(url, app.state.voxgate.clock, db_url)
        statuses = collections.Counter(worker.login("nobody", "wrong password").status_code for _ in range(50))
        worker.close()
    assert statuses == {401: 6, 429: 44}
    [(_, counted)] = audit_rows(db_url, "auth.denied.anon")
    assert counted["route"] == "/api/auth/login" and counted["reason"] == "throttled" and counted["count"] == 44
    assert len(audit_rows(db_url, "auth.login")) == 6


def test_one_username_guessed_from_many_addresses_is_locked(worker: Worker) -> None:
    for n in range(10):
        worker.clock.advance(8 if n else 0)  # waits as told (at most 8 s before the lock)
        assert worker.login("ada", "a wrong password", address=f"127.0.0.{n + 2}").status_code == 401
    refused = worker.login("ada", PASSWORD, address="127.0.0.1")  # an address with no failures of its own
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) == LOCK_S
    assert [d["scope"] for _, d in audit_rows(worker.db_url, "auth.lockout")] == ["username"]


def test_one_address_spraying_usernames_is_locked_but_not_the_accounts(worker: Worker) -> None:
    sprayer = "127.0.0.20"
    for n in range(10):
        worker.clock.advance(8 if n else 0)  # waits as told (at most 8 s before the lock)
        assert worker.login(f"user{n}", "a wrong password", address=sprayer).status_code == 401
    assert worker.login("ada", PASSWORD, address=sprayer).status_code == 429
    assert worker.login("ada", PASSWORD, address="127.0.0.21").status_code == 200


def test_an_unknown_username_is_throttled_exactly_like_a_known_one(worker: Worker) -> None:
    known = [worker.login("ada", "a wrong password", address="127.0.0.30").status_code for _ in range(8)]
    unknown = [worker.login("nobody", "a wrong password", address="127.0.0.31").status_code for _ in range(8)]
    assert known == unknown == [401] * 6 + [429] * 2


def test_signing_in_forgives_that_address_its_failures_on_that_account(worker: Worker) -> None:
    for _ in range(4):
        assert worker.login("ada", "a wrong password").status_code == 401
    assert worker.login("ada", PASSWORD).status_code == 200
    # the slate is clean: five free failures again, then the wait
    assert [worker.login("ada", "a wrong password").status_code for _ in range(7)] == [401] * 6 + [429]


# ---- the in-memory throttle on its own ------------------------------------------------------------------


def test_back_off_doubles_then_locks_then_forgets() -> None:
    clock = Clock()
    throttle = InMemoryLoginThrottle(free_failures=2, base_delay_s=3, lock_after=5, lock_s=60, clock=clock)
    waits = []
    for _ in range(5):
        refusal = throttle.check("ada", "10.0.0.1")
        assert refusal is None
        failure = throttle.failed("ada", "10.0.0.1")
        refusal = throttle.check("ada", "10.0.0.1")
        waits.append(refusal.retry_after_s if refusal else 0)
        if refusal and not refusal.locked:
            clock.advance(refusal.retry_after_s)
    assert waits == [0, 0, 3, 6, 60]
    assert failure.locked == ("username", "address") and failure.lock_s == 60
    clock.advance(60)
    assert throttle.check("ada", "10.0.0.1") is None
    assert throttle.failed("ada", "10.0.0.1").locked == ()  # forgotten: a fresh start
    assert throttle.check("ada", "10.0.0.1") is None


def test_the_throttle_keeps_at_most_max_keys_of_each_kind() -> None:
    throttle = InMemoryLoginThrottle(clock=Clock(), max_keys=50)
    for n in range(1000):
        throttle.failed(f"user{n}", f"10.0.{n // 250}.{n % 250}")
    assert all(len(keys) <= 50 for keys in throttle._keys.values()) and len(throttle._pairs) <= 50


def test_the_lock_must_come_after_the_free_failures() -> None:
    with pytest.raises(ConfigError, match="login_lockout_after"):
        load_settings(login_free_failures=5, login_lockout_after=5)


# ---- the throttle on its own, in this process's memory and in Redis ----------------------------------


class Throttles:
    """Throttles with the same rules and clock: `worker()` is one more worker of the same cluster (in
    memory there is only this process, so it is the same throttle)."""

    def __init__(self, kind: str, clock: Clock, redis_url: str | None, rules: dict[str, Any]) -> None:
        self.kind, self.clock, self.rules = kind, clock, rules
        self.redis_url = redis_url
        self.clusters: list[Cluster] = []
        self._memory = InMemoryLoginThrottle(clock=clock, **rules) if kind == "memory" else None
        self.pseudonym = functools.partial(keyed_subject, secrets.token_bytes(32))

    def worker(self) -> LoginAttempts:
        if self._memory is not None:
            return self._memory
        assert self.redis_url is not None
        self.clusters.append(Cluster.from_url(self.redis_url))
        counts = RedisLoginCounts(self.clusters[-1], pseudonym=self.pseudonym, **self.rules)
        return SharedLoginThrottle(counts, clock=self.clock)


@pytest.fixture(params=["memory", "redis"])
async def throttles(request: pytest.FixtureRequest) -> AsyncIterator[Callable[..., Throttles]]:
    made: list[Throttles] = []
    redis_url = worker_redis_url() if request.param == "redis" else None
    if redis_url is not None:
        flushing = Cluster.from_url(redis_url)
        await flushing.client.flushdb()
        await flushing.close()

    def make(**rules: Any) -> Throttles:
        made.append(Throttles(request.param, Clock(), redis_url, rules))
        return made[-1]

    yield make
    for t in made:
        for cluster in t.clusters:
            await cluster.close()


async def statuses(throttle: LoginAttempts, username: str, address: str, n: int) -> list[int]:
    """What n wrong passwords in a row are answered (401 counted, 429 refused)."""
    return [401 if isinstance(await throttle.attempt(username, address), Failure) else 429 for _ in range(n)]


async def test_six_hundred_guesses_then_the_right_one_is_refused_wherever_counted(
    throttles: Callable[..., Throttles],
) -> None:
    t = throttles()
    throttle = t.worker()
    assert collections.Counter(await statuses(throttle, "ada", "10.0.0.1", 600)) == {401: 6, 429: 594}
    right = await throttle.attempt("ada", "10.0.0.1")
    assert right == Refusal(scope="username", retry_after_s=1, locked=False)
    t.clock.advance(1)
    assert isinstance(await throttle.attempt("ada", "10.0.0.1"), Failure)  # tried (and forgiven when right)
    await throttle.forgive("ada", "10.0.0.1")
    assert await statuses(throttle, "ada", "10.0.0.1", 7) == [401] * 6 + [429]  # a clean slate


async def test_guesses_sent_at_once_to_many_workers_are_throttled_like_guesses_in_a_row(
    throttles: Callable[..., Throttles],
) -> None:
    t = throttles()
    workers = [t.worker() for _ in range(20)]
    answers = await asyncio.gather(*(w.attempt("ada", "10.0.0.1") for w in workers))
    assert collections.Counter(type(a).__name__ for a in answers) == {"Failure": 6, "Refusal": 14}


async def test_a_guesser_who_waits_as_told_is_locked_out_wherever_counted(throttles: Callable[..., Throttles]) -> None:
    t = throttles()
    workers = [t.worker(), t.worker()]  # the guesser's requests alternate between two workers
    waits: list[int] = []
    locks: list[tuple[str, ...]] = []
    tries = 0
    while True:
        outcome = await workers[tries % 2].attempt("ada", "10.0.0.1")
        if isinstance(outcome, Refusal):
            if outcome.locked:
                break
            waits.append(outcome.retry_after_s)
            t.clock.advance(outcome.retry_after_s)
            continue
        locks += [outcome.locked] if outcome.locked else []
        tries += 1
    assert tries == 10 and waits == [1, 2, 4, 8] and outcome.retry_after_s == LOCK_S
    assert locks == [("username", "address")]
    t.clock.advance(LOCK_S - 1)
    assert isinstance(await workers[0].attempt("ada", "10.0.0.1"), Refusal)  # the right password too
    t.clock.advance(1)
    assert await workers[1].attempt("ada", "10.0.0.1") == Failure()  # forgotten: a fresh start


async def test_one_username_from_many_addresses_and_one_address_spraying_usernames(
    throttles: Callable[..., Throttles],
) -> None:
    t = throttles()
    throttle = t.worker()
    for n in range(10):
        t.clock.advance(8 if n else 0)  # waits as told (at most 8 s before the lock)
        outcome = await throttle.attempt("ada", f"10.0.0.{n + 2}")
        assert isinstance(outcome, Failure)
    assert outcome.locked == ("username",) and outcome.lock_s == LOCK_S
    assert await throttle.attempt("ada", "10.0.0.1") == Refusal(scope="username", retry_after_s=LOCK_S, locked=True)
    for n in range(10):
        t.clock.advance(8 if n else 0)
        assert isinstance(await throttle.attempt(f"user{n}", "10.0.0.20"), Failure)
    assert await throttle.attempt("bob", "10.0.0.20") == Refusal(scope="address", retry_after_s=LOCK_S, locked=True)
    assert isinstance(await throttle.attempt("bob", "10.0.0.21"), Failure)  # the accounts are not locked


async def test_signing_in_forgives_that_address_only_its_failures_on_that_account(
    throttles: Callable[..., Throttles],
) -> None:
    t = throttles()
    throttle = t.worker()
    assert await statuses(throttle, "eve", "10.0.0.1", 3) == [401] * 3  # the address tried another account
    assert await statuses(throttle, "ada", "10.0.0.1", 2) == [401] * 2
    assert isinstance(await throttle.attempt("ada", "10.0.0.1"), Failure)
    await throttle.forgive("ada", "10.0.0.1")  # the third try on ada was right
    # the address keeps its three failures on eve: three more are answered (the sixth starts the wait)
    assert await statuses(throttle, "bob", "10.0.0.1", 4) == [401, 401, 401, 429]


async def test_back_off_doubles_then_locks_then_forgets_wherever_counted(throttles: Callable[..., Throttles]) -> None:
    t = throttles(free_failures=2, base_delay_s=3, lock_after=5, lock_s=60)
    throttle = t.worker()
    waits = []
    failures: list[Failure] = []
    while len(failures) < 5:
        outcome = await throttle.attempt("ada", "10.0.0.1")
        if isinstance(outcome, Refusal):
            waits.append(outcome.retry_after_s)
            t.clock.advance(outcome.retry_after_s)
        else:
            failures.append(outcome)
    assert waits == [3, 6] and failures[-1] == Failure(locked=("username", "address"), lock_s=60)
    assert await throttle.attempt("ada", "10.0.0.1") == Refusal(scope="username", retry_after_s=60, locked=True)
    t.clock.advance(60)
    assert await throttle.attempt("ada", "10.0.0.1") == Failure()  # forgotten: a fresh start


async def test_the_redis_throttle_keeps_at_most_max_keys_of_each_kind_expiring_and_keyed() -> None:
    cluster = Cluster.from_url(worker_redis_url())
    await cluster.client.flushdb()
    counts = RedisLoginCounts(
        cluster, pseudonym=functools.partial(keyed_subject, secrets.token_bytes(32)), max_keys=50, lock_s=900
    )
    throttle = SharedLoginThrottle(counts, clock=Clock())
    try:
        for n in range(300):
            await throttle.attempt(f"user{n}@example.com", f"10.0.{n // 250}.{n % 250}")
        names = [k.decode() async for k in cluster.client.scan_iter(match=cluster.key("login", "*"))]
        for kind in ("user", "addr", "pair"):
            assert len([k for k in names if k.startswith(cluster.key("login", kind) + ":")]) <= 50
            assert await cluster.client.zcard(cluster.key("login", kind)) <= 50
        assert all([0 < await cluster.client.pttl(k) <= 900_000 for k in names])  # every key expires
        assert not any("example.com" in k or "10.0." in k for k in names)  # keyed hashes, not names or addresses
    finally:
        await cluster.close()
