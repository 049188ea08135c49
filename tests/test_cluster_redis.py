"""The cluster's Redis client (`voxgate.cluster.redis`): a task cancelled while it talks to Redis stops,
and the connection it used stays in step with the server; URLs it cannot use are refused clearly."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator

import pytest

from tests.helpers.redis import worker_redis_url
from voxgate.cluster.lease import RedisLease
from voxgate.cluster.redis import Cluster, connect

#: cancellations tried at random moments of a loop of short commands
TRIES = 300
#: how long a cancelled task may take to stop (it stops at its next await)
STOP_S = 5.0


@pytest.fixture()
async def cluster() -> AsyncIterator[Cluster]:
    made = Cluster.from_url(worker_redis_url())
    await made.client.flushdb()
    yield made
    async with asyncio.timeout(30):
        await made.close()


async def _cancelled_stops(loop_of_commands: asyncio.Task[None], rng: random.Random) -> bool:
    """Cancel the task after a short random while; whether it stopped."""
    await asyncio.sleep(rng.random() * 0.003)
    loop_of_commands.cancel()
    done, _ = await asyncio.wait({loop_of_commands}, timeout=STOP_S)
    return bool(done) and loop_of_commands.cancelled()


async def test_a_task_cancelled_while_it_sends_commands_stops_every_time(cluster: Cluster) -> None:
    # (Python 3.11's asyncio.wait_for, which redis-py writes with, used to lose most of these: the task
    # carried on renewing a lease after it was told to stop, and the run that waited for it hung)
    rng = random.Random(7)
    lease = RedisLease(cluster, "alerts:dev", ttl_s=30)
    assert await lease.acquire() == 1

    async def renew_forever() -> None:
        while True:
            await lease.renew()

    async def read_forever() -> None:
        while True:
            await cluster.client.get(cluster.key("nothing"))

    kept = []
    for n in range(TRIES):
        work = renew_forever if n % 2 else read_forever
        task = asyncio.create_task(work())
        stopped = await _cancelled_stops(task, rng)
        if not stopped:
            task.cancel()
        kept.append(stopped)
    assert all(kept), f"{kept.count(False)} of {TRIES} cancelled tasks went on"


async def test_after_many_cancellations_each_answer_still_belongs_to_its_command(cluster: Cluster) -> None:
    rng = random.Random(11)
    client = cluster.client
    keys = [cluster.key("k", str(i)) for i in range(20)]
    for i, key in enumerate(keys):
        await client.set(key, str(i))

    async def read_forever() -> None:
        while True:
            for key in keys:
                await client.get(key)

    for _ in range(100):
        await _cancelled_stops(asyncio.create_task(read_forever()), rng)
    # a connection given back with an answer unread would hand it to the next command: each reads its own
    answers = await asyncio.gather(*(client.get(key) for key in keys * 5))
    assert answers == [str(i).encode() for i in range(20)] * 5


async def test_a_cancelled_timeout_around_redis_commands_still_fires() -> None:
    made = Cluster.from_url(worker_redis_url())
    try:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):
                while True:
                    await made.client.ping()
    finally:
        await made.close()


@pytest.mark.parametrize("url", ["http://127.0.0.1:6379/0", "127.0.0.1:6379", "valkey://:secret@127.0.0.1/0"])
def test_a_url_that_is_not_redis_is_refused_naming_the_schemes_without_its_password(url: str) -> None:
    with pytest.raises(ValueError, match=r"redis://, rediss:// or unix://") as refused:
        connect(url)
    assert "secret" not in str(refused.value)
