"""The cluster's Redis connection: one client per worker, built from `Settings.redis_url`, every key
under one prefix so that one Redis can serve several clusters (and the tests a database each)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from voxgate.errors import UnavailableError

if TYPE_CHECKING:
    import redis.asyncio as aioredis

# redis-py is imported when a worker first connects (`connect`, `unreachable`): a worker outside a
# cluster never loads it (about half a second of every process's start)

log = logging.getLogger("voxgate.cluster")

#: every key this cluster writes starts with it (`Cluster.key` joins the rest)
DEFAULT_PREFIX = "voxgate"
#: how long one Redis command may take before the worker treats Redis as unreachable
COMMAND_TIMEOUT_S = 2.0


class RedisUnavailable(UnavailableError):
    """Redis did not answer: what the cluster shares cannot be read or changed right now."""


@functools.cache
def unreachable() -> tuple[type[BaseException], ...]:
    """What redis-py raises when the server cannot be reached or does not answer in time (anything else
    it raises is a bug of ours, e.g. a wrong type): `except unreachable() as exc:`."""
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    return (RedisConnectionError, RedisTimeoutError, OSError)


@contextlib.contextmanager
def reaching(what: str) -> Iterator[None]:
    """Commands in the block that cannot reach Redis (refused, reset, timed out) raise RedisUnavailable
    naming what was tried: one error the callers decide on (admission fails closed, the directory and
    notifications log and try again at the next beat)."""
    try:
        yield
    except unreachable() as exc:
        raise RedisUnavailable(f"Redis did not answer ({what}): {type(exc).__name__}") from exc


def redacted(url: str) -> str:
    """A Redis URL fit for a log line: any password replaced by `***`."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    credentials, _, host = rest.rpartition("@")
    user = credentials.split(":", 1)[0] if ":" in credentials else ""
    return f"{scheme}://{user}:***@{host}"


class _KeepsCancellation:
    """A connection whose writes never lose a cancellation of the task that sends them.

    redis-py bounds a write with `asyncio.wait_for`, which on Python 3.11 returns the write's result
    when the task was cancelled just as the write finished, and the cancellation is lost: a task
    cancelled while it talks to Redis (a worker stopping, a lease lost, an `asyncio.timeout`) went on
    as if nothing had happened, most of the time when it sent many short commands. Here a write after
    which the task is being cancelled closes the connection (its answer is never read, so the
    connection must not go back to the pool) and raises the cancellation again."""

    async def send_packed_command(self, command: bytes | str | Iterable[bytes], check_health: bool = True) -> None:
        task = asyncio.current_task()
        before = task.cancelling() if task is not None else 0
        await super().send_packed_command(command, check_health)  # type: ignore[misc]
        if task is not None and task.cancelling() > before:
            await self.disconnect(nowait=True)  # type: ignore[attr-defined]
            raise asyncio.CancelledError()


@functools.cache
def connection_classes() -> dict[str, type[Any]]:
    """redis-py's connection class per URL scheme, each with `_KeepsCancellation` in front."""
    from redis.asyncio.connection import Connection, SSLConnection, UnixDomainSocketConnection

    return {
        scheme: type(
            f"Keeps{base.__name__}", (_KeepsCancellation, base), {"__doc__": f"{scheme}:// (see `_KeepsCancellation`)."}
        )
        for scheme, base in (("redis", Connection), ("rediss", SSLConnection), ("unix", UnixDomainSocketConnection))
    }


def connect(url: str) -> aioredis.Redis:
    """A client for `url` (redis://, rediss:// or unix://) that retries a dropped connection a few
    times with backoff, gives up on a command after COMMAND_TIMEOUT_S and never loses a cancellation
    (`_KeepsCancellation`)."""
    scheme = urlsplit(url).scheme
    if scheme not in ("redis", "rediss", "unix"):
        raise ValueError(f"a Redis URL starts with redis://, rediss:// or unix://, not {redacted(url)!r}")
    import redis.asyncio as aioredis
    from redis.asyncio.retry import Retry
    from redis.backoff import ExponentialBackoff

    return aioredis.Redis.from_url(
        url,
        connection_class=connection_classes()[scheme],
        decode_responses=False,
        socket_timeout=COMMAND_TIMEOUT_S,
        socket_connect_timeout=COMMAND_TIMEOUT_S,
        health_check_interval=15,
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=3),
        retry_on_error=list(unreachable()[:2]),
    )


class Cluster:
    """This worker's handle on what the cluster shares: the client and the key prefix."""

    def __init__(self, client: aioredis.Redis, *, prefix: str = DEFAULT_PREFIX, url: str = "") -> None:
        self.client = client
        self.prefix = prefix
        self.url = redacted(url)

    @classmethod
    def from_url(cls, url: str, *, prefix: str = DEFAULT_PREFIX) -> Cluster:
        """Connect to `url` (the connection opens on first use)."""
        return cls(connect(url), prefix=prefix, url=url)

    def key(self, *parts: str) -> str:
        """`prefix:part:part…`, the name of one shared thing."""
        return ":".join((self.prefix, *parts))

    async def ping(self) -> bool:
        """Whether Redis answers now (for the readiness probe)."""
        try:
            return bool(await self.client.ping())
        except unreachable():
            return False

    async def close(self) -> None:
        """Close the connections."""
        await self.client.aclose()
