"""Leases for work that one worker of the cluster does at a time: alert evaluation, the retention
purge, the repair of what dead workers left open.

A `Lease` is taken (`acquire`), kept (`renew`, or `acquire` again) and given back (`release`).
Each time a worker takes it anew it gets a *fencing token*, a number larger than every token given
before for that lease, so a write can say which holder made it and a holder that lost the lease
without knowing it (paused, cut off from Redis) can be told apart from the one that has it now.

`LocalLease` is the single-process default: always held. `RedisLease` keeps the holder in Redis:

    lease:<name>         "<owner>:<token>", SET NX with a TTL (`ttl_s`, about 3 renewals): a worker
                         that dies stops renewing and loses it within the TTL
    lease:<name>:fence   the last token given (INCR); the one key without a TTL, so that tokens
                         never go back while Redis keeps its data

Renewal and release compare the owner first (Lua), so a worker never extends or deletes a lease
that lapsed and was taken by another. `while_held` runs a coroutine only while this worker holds
the lease: it is cancelled when a renewal fails, and started again (with a new token) when the
lease is taken again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from voxgate.cluster.redis import Cluster, RedisUnavailable, reaching

__all__ = ["RENEW_S", "Lease", "LocalLease", "RedisLease", "while_held"]

log = logging.getLogger("voxgate.cluster.lease")

#: how often `while_held` renews a lease (the TTL of a RedisLease is three times that by default)
RENEW_S = 5.0

# KEYS[1] the lease, KEYS[2] its fence counter; ARGV: owner, ttl (ms). Takes the lease when it is free
# (a new token) or renews it when this owner holds it (its token). Returns the token, or 0.
_ACQUIRE = """
local held = redis.call('GET', KEYS[1])
if held then
  local owner, token = string.match(held, '^(.*):(%d+)$')
  if owner == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return tonumber(token)
  end
  return 0
end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. ':' .. token, 'PX', ARGV[2])
return token
"""

# KEYS[1] the lease; ARGV: "<owner>:<token>", ttl (ms). 1 when renewed, 0 when it is not ours any more.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

# KEYS[1] the lease; ARGV: "<owner>:<token>". 1 when released, 0 when it was not ours.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class Lease(Protocol):
    """A named lease that at most one worker of the cluster holds at a time."""

    name: str

    async def acquire(self) -> int | None:
        """Take the lease if it is free, or keep it if this worker holds it: the fencing token
        while this worker holds it, None while another does."""
        ...

    async def renew(self) -> bool:
        """Extend the lease this worker holds; False when it does not hold it any more."""
        ...

    async def release(self) -> None:
        """Give the lease back (if this worker holds it) so another worker can take it at once."""
        ...


class LocalLease:
    """One process, nobody to share with: the lease is always held (token 1)."""

    def __init__(self, name: str) -> None:
        self.name = name

    async def acquire(self) -> int | None:
        """Always held: token 1."""
        return 1

    async def renew(self) -> bool:
        """Always held."""
        return True

    async def release(self) -> None:
        """Nothing to give back."""


class RedisLease:
    """A lease held in Redis (see the module's docstring); one instance per worker and name.

    `attempts` counts the calls to `acquire` (how often this worker tried or kept it)."""

    def __init__(self, cluster: Cluster, name: str, *, ttl_s: float = 3 * RENEW_S) -> None:
        if ttl_s <= 0:
            raise ValueError(f"a lease's ttl_s must be positive, not {ttl_s}")
        self.cluster = cluster
        self.name = name
        self.ttl_s = ttl_s
        self.owner = secrets.token_hex(16)
        self.token: int | None = None  # the token of the hold this worker believes it has
        self.attempts = 0
        self._key = cluster.key("lease", name)
        self._fence = cluster.key("lease", name, "fence")
        self._acquire = cluster.client.register_script(_ACQUIRE)
        self._renew = cluster.client.register_script(_RENEW)
        self._release = cluster.client.register_script(_RELEASE)

    @property
    def _ttl_ms(self) -> int:
        return max(1, int(self.ttl_s * 1000))

    async def acquire(self) -> int | None:
        """Take the lease if it is free, or keep it if this worker holds it: the fencing token
        while this worker holds it, None while another does. RedisUnavailable when Redis cannot
        be reached."""
        self.attempts += 1
        with reaching(f"taking the lease {self.name}"):
            token = int(await self._acquire(keys=[self._key, self._fence], args=[self.owner, self._ttl_ms]))
        if token and token != self.token:
            log.info("this worker holds the lease %s (token %d)", self.name, token)
        elif not token and self.token is not None:
            log.warning("this worker lost the lease %s (token %d): another worker holds it", self.name, self.token)
        self.token = token or None
        return self.token

    async def renew(self) -> bool:
        """Extend the lease by its TTL if this worker still holds it; False when it does not (it
        lapsed and may be another's). RedisUnavailable when Redis cannot be reached."""
        if self.token is None:
            return False
        with reaching(f"renewing the lease {self.name}"):
            renewed = int(await self._renew(keys=[self._key], args=[f"{self.owner}:{self.token}", self._ttl_ms]))
        if not renewed:
            log.warning("this worker lost the lease %s (token %d): it lapsed before renewal", self.name, self.token)
            self.token = None
        return bool(renewed)

    async def release(self) -> None:
        """Give the lease back if this worker holds it (Redis away: it lapses within its TTL)."""
        token, self.token = self.token, None
        if token is None:
            return
        try:
            with reaching(f"releasing the lease {self.name}"):
                await self._release(keys=[self._key], args=[f"{self.owner}:{token}"])
        except RedisUnavailable as exc:
            log.warning("the lease %s could not be given back (it lapses within %g s): %s", self.name, self.ttl_s, exc)


async def _try_acquire(lease: Lease) -> int | None:
    """`lease.acquire()`, with Redis away counting as not held."""
    try:
        return await lease.acquire()
    except RedisUnavailable as exc:
        log.warning("lease %s not taken: %s", lease.name, exc)
        return None


async def _try_renew(lease: Lease) -> bool:
    """`lease.renew()`, with Redis away counting as lost (this worker cannot know it still holds it)."""
    try:
        return await lease.renew()
    except RedisUnavailable as exc:
        log.warning("lease %s not renewed: %s", lease.name, exc)
        return False


async def while_held(
    lease: Lease, work: Callable[[int], Coroutine[Any, Any, None]], *, renew_s: float = RENEW_S
) -> None:
    """Run `work(token)` only while this worker holds `lease`, until cancelled.

    Tries to take the lease every `renew_s`; once held, starts `work` with the fencing token and
    renews every `renew_s`. When a renewal fails (the lease lapsed and may be another's, or Redis
    cannot be reached) `work` is cancelled and the worker goes back to trying. When `work` fails
    the failure is logged, the lease given back and taken again after `renew_s`; when it returns,
    the lease is given back and so does this. When this coroutine is cancelled, `work` is
    cancelled and the lease given back, so another worker takes over at once."""
    if renew_s <= 0:
        raise ValueError(f"renew_s must be positive, not {renew_s}")
    try:
        while True:
            token = await _try_acquire(lease)
            if token is None:
                await asyncio.sleep(renew_s)
                continue
            task = asyncio.create_task(work(token), name=f"lease:{lease.name}:{token}")
            try:
                while not task.done():
                    await asyncio.wait({task}, timeout=renew_s)
                    if not task.done() and not await _try_renew(lease):
                        break
            finally:
                if not task.done():
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
            if task.cancelled():
                continue  # the lease was lost: try to take it again
            failure = task.exception()
            await lease.release()
            if failure is None:
                return
            log.error("work under the lease %s failed", lease.name, exc_info=failure)
            await asyncio.sleep(renew_s)  # not at once: the failure may repeat
    finally:
        with contextlib.suppress(Exception):
            await lease.release()
