"""Calls admitted across the cluster: an environment's `max_concurrent_calls` and `max_calls_per_day`
held in Redis and changed only by Lua scripts, so calls that start at the same moment on many
workers never overshoot either limit.

Keys (under the cluster's prefix; `<n>` is the UTC day, days since 1970-01-01 by the Redis clock):

    calls:<env>:live      sorted set: call id → when its slot lapses (ms, Redis clock)
    calls:<env>:day:<n>   calls admitted that day; expires DAY_MARGIN_S after the day ends

A call takes a slot when it starts (`admit`: lapsed slots are dropped, both limits checked, the slot
added and the day counted, in one script), the worker renews every slot it holds with each heartbeat
(`renew`, one script) and the call gives its slot back when it ends (`release`). A worker that dies
stops renewing: its slots lapse `slot_ttl_s` after its last heartbeat and count no more. Call ids are
random tokens; nothing about the caller goes to Redis.

When Redis cannot be reached `admit` raises RedisUnavailable and the worker refuses the call (fail
closed: without the shared count no worker can know the limit is kept); `release` and `renew` log
and leave it to the slot's expiry.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from voxgate.cluster.redis import Cluster, RedisUnavailable, reaching

__all__ = [
    "DAY_MARGIN_S",
    "MAX_CALLS_PER_DAY",
    "MAX_CONCURRENT_CALLS",
    "ClusterCalls",
    "EnvironmentCalls",
    "Limits",
]

log = logging.getLogger("voxgate.cluster")

#: the limits a refusal names (as in environments.yaml)
MAX_CONCURRENT_CALLS = "max_concurrent_calls"
MAX_CALLS_PER_DAY = "max_calls_per_day"
#: how long a day's counter outlives its day (a slow worker's clock, a late read for the console)
DAY_MARGIN_S = 3600
_MS_PER_DAY = 86_400_000

# KEYS[1] the live set, KEYS[2] the day counter's prefix; ARGV: call id, slot ttl (ms), max live
# (-1: none), max per day (-1: none), margin (ms). Returns {1, day} admitted or {0, limit}.
_ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
local max_live = tonumber(ARGV[3])
local max_day = tonumber(ARGV[4])
local day = math.floor(now / 86400000)
local day_key = KEYS[2] .. day
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  return {1, day}
end
if max_live >= 0 and redis.call('ZCARD', KEYS[1]) >= max_live then
  return {0, 'max_concurrent_calls'}
end
local today = tonumber(redis.call('GET', day_key) or '0')
if max_day >= 0 and today >= max_day then
  return {0, 'max_calls_per_day'}
end
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('INCR', day_key)
redis.call('PEXPIREAT', day_key, (day + 1) * 86400000 + tonumber(ARGV[5]))
return {1, day}
"""

# KEYS[1] the live set, KEYS[2] the day counter's prefix; ARGV: call id, the day it was admitted
# ('' when the call started: the day keeps counting it). Returns 1 when the slot was held.
_RELEASE = """
local removed = redis.call('ZREM', KEYS[1], ARGV[1])
if removed == 1 and ARGV[2] ~= '' then
  local day_key = KEYS[2] .. ARGV[2]
  if tonumber(redis.call('GET', day_key) or '0') > 0 then
    redis.call('DECR', day_key)
  end
end
return removed
"""

# KEYS[1] the live set; ARGV: slot ttl (ms), then the call ids to renew. A slot that is gone (it
# lapsed) is not brought back: it may have been given to another call meanwhile. Returns those ids.
_RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local missing = {}
for i = 2, #ARGV do
  if redis.call('ZSCORE', KEYS[1], ARGV[i]) then
    redis.call('ZADD', KEYS[1], 'XX', now + ttl, ARGV[i])
  else
    table.insert(missing, ARGV[i])
  end
end
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('PEXPIRE', KEYS[1], ttl)
end
return missing
"""

# KEYS[1] the live set, KEYS[2] the day counter's prefix. Returns {live slots, calls today, day}.
_COUNTS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local day = math.floor(now / 86400000)
local live = redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf')
return {live, tonumber(redis.call('GET', KEYS[2] .. day) or '0'), day}
"""


@dataclass(frozen=True)
class Limits:
    """An environment's limits on calls (None: no limit), as its settings' quotas say."""

    max_concurrent_calls: int | None = None
    max_calls_per_day: int | None = None


@dataclass(frozen=True)
class EnvironmentCalls:
    """An environment's calls across the cluster now: slots held, and calls admitted today (UTC)."""

    active: int
    today: int


@dataclass
class ClusterCalls:
    """One worker's side of an environment's cluster-wide call limits.

    `held` is what this worker holds: call id → the day it was admitted (renewed with each heartbeat)."""

    cluster: Cluster
    environment: str
    slot_ttl_s: float = 30.0
    held: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        client = self.cluster.client
        self._admit = client.register_script(_ADMIT)
        self._release = client.register_script(_RELEASE)
        self._renew = client.register_script(_RENEW)
        self._counts = client.register_script(_COUNTS)

    def _keys(self, environment: str | None = None) -> list[str]:
        env = environment or self.environment
        return [self.cluster.key("calls", env, "live"), self.cluster.key("calls", env, "day") + ":"]

    @property
    def _ttl_ms(self) -> int:
        return max(1, int(self.slot_ttl_s * 1000))

    async def admit(self, call_id: str, limits: Limits) -> str | None:
        """Take a slot for the call `call_id` if both limits leave room: None when it is taken, else
        the limit that refuses it (`max_concurrent_calls`, `max_calls_per_day`). RedisUnavailable
        when Redis cannot be reached (the caller refuses the call)."""
        argv: list[Any] = [
            call_id,
            self._ttl_ms,
            -1 if limits.max_concurrent_calls is None else limits.max_concurrent_calls,
            -1 if limits.max_calls_per_day is None else limits.max_calls_per_day,
            DAY_MARGIN_S * 1000,
        ]
        with reaching("admitting a call"):
            admitted, detail = await self._admit(keys=self._keys(), args=argv)
        if int(admitted) != 1:
            return detail.decode() if isinstance(detail, bytes) else str(detail)
        self.held[call_id] = int(detail)
        return None

    async def release(self, call_id: str, *, started: bool = True) -> bool:
        """Give back the slot of `call_id` (its call ended; `started` False: it never started, and
        the day does not count it). Whether it was still held; False too when Redis cannot be
        reached (logged: the slot lapses on its own)."""
        day = self.held.pop(call_id, None)
        if day is None:
            return False
        try:
            with reaching("releasing a call's slot"):
                removed = await self._release(keys=self._keys(), args=[call_id, "" if started else str(day)])
        except RedisUnavailable as exc:
            log.warning("a call's slot could not be given back (it lapses within %g s): %s", self.slot_ttl_s, exc)
            return False
        return int(removed) == 1

    async def renew(self) -> list[str]:
        """Renew every slot this worker holds (one script); the ids of those that had lapsed (their
        calls go on, but no longer count: logged). RedisUnavailable when Redis cannot be reached."""
        ids = list(self.held)
        if not ids:
            return []
        with reaching("renewing this worker's call slots"):
            missing = await self._renew(keys=self._keys()[:1], args=[self._ttl_ms, *ids])
        lapsed = [m.decode() if isinstance(m, bytes) else str(m) for m in missing]
        if lapsed:
            log.warning(
                "%d call slot(s) of this worker had lapsed before they were renewed (Redis was away, or the "
                "heartbeat was late): those calls go on but no longer count against %s",
                len(lapsed),
                MAX_CONCURRENT_CALLS,
            )
            for call_id in lapsed:
                self.held.pop(call_id, None)
        return lapsed

    async def counts(self, environment: str | None = None) -> EnvironmentCalls:
        """Slots held now and calls admitted today in `environment` (default: this worker's)."""
        with reaching("counting calls"):
            live, today, _ = await self._counts(keys=self._keys(environment), args=[])
        return EnvironmentCalls(active=int(live), today=int(today))

    async def release_all(self) -> None:
        """Give back every slot this worker holds (it is shutting down)."""
        for call_id in list(self.held):
            await self.release(call_id)
