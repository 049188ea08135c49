"""Throttles counted across workers, in a real Redis: new sessions per client address or calling
number, and anonymous refusals per client per minute, add up over independent clients (as over
workers), never overshoot when many count at once, keep no raw address or number in Redis, and
expire. The verification lock-out counts in the shared database: two workers' guards on one
database lock a subject after the policy's failures between them. (Sign-in throttling, with the
same rules in memory and in Redis: tests/security/test_login_throttle.py.)

Contenders are separate Redis clients (one connection pool each), as separate workers are.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import secrets
from collections.abc import AsyncIterator, Callable

import pytest

from tests.helpers.redis import worker_redis_url
from voxgate.api.denials import AnonymousDenials
from voxgate.channels.throttle import StartThrottle, WindowThrottle
from voxgate.cluster.counters import RedisFixedWindowCounts, RedisWindowThrottle
from voxgate.cluster.redis import Cluster
from voxgate.compliance.account_protection import StoreVerificationGuard
from voxgate.runtime.lockout import LockoutPolicy, keyed_subject
from voxgate.store.db import Database

SALT = secrets.token_bytes(32)
PSEUDONYM = functools.partial(keyed_subject, SALT)
NUMBER = "+15551234567"


@pytest.fixture()
async def clusters() -> AsyncIterator[Callable[[], Cluster]]:
    """A factory of independent clients of this xdist worker's (emptied) Redis database."""
    made: list[Cluster] = []

    def make() -> Cluster:
        made.append(Cluster.from_url(worker_redis_url()))
        return made[-1]

    await make().client.flushdb()
    yield make
    for cluster in made:
        await cluster.close()


async def everything(cluster: Cluster) -> dict[str, tuple[int, list[bytes]]]:
    """Every key under the cluster's prefix: its TTL (ms) and what it holds."""
    found: dict[str, tuple[int, list[bytes]]] = {}
    async for raw in cluster.client.scan_iter(match=cluster.key("*")):
        key = raw.decode()
        kind = (await cluster.client.type(key)).decode()
        if kind == "zset":
            held = list(await cluster.client.zrange(key, 0, -1))
        elif kind == "hash":
            held = [*(await cluster.client.hgetall(key)).values()]
        else:
            held = [await cluster.client.get(key)]
        found[key] = (await cluster.client.pttl(key), held)
    return found


class Ticks:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


# ---- new sessions per address or number ---------------------------------------------------------------


@pytest.fixture(params=["memory", "redis"])
def throttle(request: pytest.FixtureRequest, clusters: Callable[[], Cluster]) -> Callable[..., StartThrottle]:
    """A `StartThrottle` maker: in this process, or counted in Redis."""

    def make(limit: int, clock: Ticks) -> StartThrottle:
        if request.param == "memory":
            return WindowThrottle(limit=limit, window_s=60, clock=clock)
        return RedisWindowThrottle(clusters(), "chat-address", limit, pseudonym=PSEUDONYM, window_s=60, clock=clock)

    return make


async def test_a_window_counts_starts_per_key_wherever_it_is_kept(throttle: Callable[..., StartThrottle]) -> None:
    ticks = Ticks()
    t = throttle(3, ticks)
    for _ in range(3):  # at +0, +5 and +10
        assert await t.take("a") is None
        ticks.now += 5
    ticks.now = 1_800_000_020.0
    assert await t.take("a") == pytest.approx(40)  # the first start leaves the window at +60
    assert await t.take("b") is None  # another key is counted apart
    ticks.now = 1_800_000_059.0
    assert await t.take("a") == pytest.approx(1)  # refused starts are not counted ...
    ticks.now = 1_800_000_060.0
    assert await t.take("a") is None  # ... so it is let in as soon as the oldest leaves
    assert await t.take("a") == pytest.approx(5)
    assert all([await throttle(0, ticks).take("a") is None for _ in range(20)])  # 0: no limit


async def test_starts_on_two_workers_add_up_and_many_at_once_never_overshoot(
    clusters: Callable[[], Cluster],
) -> None:
    workers = [RedisWindowThrottle(clusters(), "call-number", 5, pseudonym=PSEUDONYM) for _ in range(2)]
    answers = [await workers[n % 2].take(NUMBER) for n in range(10)]  # the Redis clock
    assert answers[:5] == [None] * 5 and all(a is not None and 0 < a <= 60 for a in answers[5:])
    assert workers[0].refused + workers[1].refused == 5
    many = [RedisWindowThrottle(clusters(), "chat-address", 5, pseudonym=PSEUDONYM) for _ in range(12)]
    at_once = await asyncio.gather(*(w.take("203.0.113.9") for w in many))
    assert sum(a is None for a in at_once) == 5  # twelve at once on twelve clients: exactly five let in


async def test_window_keys_expire_and_hold_no_address_or_number(clusters: Callable[[], Cluster]) -> None:
    cluster = clusters()
    per_number = RedisWindowThrottle(cluster, "call-number", 3, pseudonym=PSEUDONYM, window_s=30)
    per_address = RedisWindowThrottle(cluster, "chat-address", 3, pseudonym=PSEUDONYM, window_s=30)
    for _ in range(4):
        await per_number.take(NUMBER)
        await per_address.take("198.51.100.7")
    keys = await everything(cluster)
    assert len(keys) == 2 and all(0 < ttl <= 30_000 for ttl, _ in keys.values())
    text = repr(keys)
    for raw in (NUMBER, NUMBER.lstrip("+"), "198.51.100.7"):
        assert raw not in text
    assert cluster.key("window", "call-number", PSEUDONYM("call-number", NUMBER)) in keys


# ---- anonymous refusals per client per minute --------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = dt.datetime(2026, 12, 12, 12, 0, 5, tzinfo=dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now


async def test_refusals_on_two_workers_share_one_limit_and_each_audits_its_own(
    clusters: Callable[[], Cluster],
) -> None:
    clock = Clock()
    workers = [
        AnonymousDenials(
            environment="dev",
            per_client_per_minute=3,
            clock=clock,
            shared=RedisFixedWindowCounts(clusters(), "denied", pseudonym=PSEUDONYM),
        )
        for _ in range(2)
    ]
    answers = [await workers[n % 2].count("/api/users", "10.0.0.1", "denied") for n in range(6)]
    assert answers[:3] == [None] * 3 and answers[3:] == [55] * 3  # the 4th refusal anywhere: 429 to the minute's end
    assert await workers[0].count("/api/users", "10.0.0.2", "denied") is None  # another address has its own
    assert await workers[1].count("/api/auth/login", "10.0.0.1", "throttled") is None  # not counted to the limit
    clock.now += dt.timedelta(minutes=1)
    assert await workers[1].count("/api/users", "10.0.0.1", "denied") is None  # a new minute
    audited = [(e.data["client"], e.data["reason"], e.data["count"]) for w in workers for e in w.due(final=True)]
    # every refusal in exactly one worker's events: none lost, none twice
    assert sorted(audited) == sorted(
        [
            ("10.0.0.1", "denied", 2),  # worker 0, first minute: refusals 1 and 3
            ("10.0.0.1", "rate_limited", 1),  # worker 0: refusal 5
            ("10.0.0.2", "denied", 1),
            ("10.0.0.1", "denied", 1),  # worker 1, first minute: refusal 2
            ("10.0.0.1", "rate_limited", 2),  # worker 1: refusals 4 and 6
            ("10.0.0.1", "throttled", 1),
            ("10.0.0.1", "denied", 1),  # worker 1, the next minute
        ]
    )


async def test_a_minute_count_expires_and_holds_no_address(clusters: Callable[[], Cluster]) -> None:
    cluster = clusters()
    counts = RedisFixedWindowCounts(cluster, "denied", pseudonym=PSEUDONYM)
    minute = dt.datetime(2026, 12, 12, 12, 0, tzinfo=dt.UTC)
    assert [await counts.add("192.0.2.44", minute) for _ in range(3)] == [1, 2, 3]
    keys = await everything(cluster)
    assert len(keys) == 1 and all(0 < ttl <= 120_000 for ttl, _ in keys.values())
    assert "192.0.2.44" not in repr(keys)


async def test_without_redis_a_worker_counts_refusals_alone() -> None:
    unreachable = Cluster.from_url("redis://127.0.0.1:1/0")  # nothing listens on port 1
    denials = AnonymousDenials(
        environment="dev",
        per_client_per_minute=2,
        clock=Clock(),
        shared=RedisFixedWindowCounts(unreachable, "denied", pseudonym=PSEUDONYM),
    )
    try:
        assert [await denials.count("/api/users", "10.0.0.1", "denied") for _ in range(3)] == [None, None, 55]
    finally:
        await unreachable.close()


# ---- failed caller verifications ---------------------------------------------------------------------


async def test_failed_verifications_on_two_workers_lock_the_subject_between_them(db: Database, db_url: str) -> None:
    clock = Clock()
    policy = LockoutPolicy(max_failures=5)
    others = [Database(db_url) for _ in range(2)]
    guards = [StoreVerificationGuard(w, salt=SALT, clock=clock) for w in others]

    async def fail(guard: StoreVerificationGuard, account: str) -> bool:
        verdict = await guard.failed(
            environment="dev",
            agent="harbor-support",
            channel="voice",
            session_id=None,
            kind="account",
            identifier=account,
            policy=policy,
        )
        return verdict.newly_locked

    try:
        assert [await fail(guards[n % 2], "12345678") for n in range(5)] == [False] * 4 + [True]
        assert all([(await g.check(environment="dev", kind="account", identifier="12345678")).locked for g in guards])
        # five at once, spread over both workers: the subject is locked, and stays locked
        results = await asyncio.gather(*(fail(guards[n % 2], "87654321") for n in range(5)))
        assert any(results)
        assert (await guards[0].check(environment="dev", kind="account", identifier="87654321")).locked
    finally:
        for w in others:
            w.dispose()
