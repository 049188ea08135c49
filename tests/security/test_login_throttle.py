"""Sign-in throttling over real sockets, on each database the run has: back-off and a temporary lock
per username and per client address (loopback addresses 127.0.0.x stand for different clients),
429 with Retry-After while throttled even for the right password, audited, and forgiven on success.
The worker's clock is the test's, so nothing here waits."""

from __future__ import annotations

import collections
import datetime as dt
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers.databases import query
from tests.helpers.servers import serving
from voxgate.api.app import create_app
from voxgate.config import ConfigError, Settings, load_settings
from voxgate.governance.releases import text_sha256
from voxgate.governance.throttle import InMemoryLoginThrottle

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
