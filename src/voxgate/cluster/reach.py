"""Reaching Redis from the cluster's modules: a command that fails because Redis is away (refused,
reset, timed out) is raised as `RedisUnavailable`, one error the callers decide on (admission fails
closed, the directory and notifications log and try again at the next beat)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from voxgate.cluster.redis import RedisUnavailable

__all__ = ["UNREACHABLE", "reaching"]

#: what redis-py raises when the server cannot be reached or does not answer in time
UNREACHABLE: tuple[type[BaseException], ...] = (RedisConnectionError, RedisTimeoutError, OSError)


@contextlib.contextmanager
def reaching(what: str) -> Iterator[None]:
    """Commands in the block that cannot reach Redis raise RedisUnavailable naming `what` was tried."""
    try:
        yield
    except UNREACHABLE as exc:
        raise RedisUnavailable(f"Redis did not answer ({what}): {type(exc).__name__}") from exc
