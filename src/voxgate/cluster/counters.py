"""Throttles counted across the cluster: failed sign-ins, new sessions per client address or calling
number, anonymous refusals per client per minute. Each count changes in one Lua script, so workers
counting the same key at the same moment never lose or overshoot a count.

Keys (under the cluster's prefix; `<h>` is a keyed hash of the name, address or number, made by the
`pseudonym` each class is given, so that nothing a reader could take back to a person is in Redis):

    login:user:<h>, login:addr:<h>   hash: failures, last failure, blocked until, locked (ms)
    login:pair:<h>                   failures of one address on one username (forgiven on success)
    login:user, login:addr, login:pair
                                     sorted sets: the keys of each kind by last failure, to keep at
                                     most `max_keys` of each (the oldest dropped first)
    window:<name>:<h>                sorted set: the starts within the sliding window
    count:<name>:<minute>:<h>        a fixed window's count

Every key has a TTL: a login key lives `lock_s` after its last failure (when it is forgotten
anyway), a window as long as the window, a fixed window's count two windows. The login counts use
the clock they are given (the worker's: its tests move it), the windows Redis's own clock unless
given one. When Redis cannot be reached a count raises RedisUnavailable.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from voxgate.cluster.redis import Cluster, reaching

__all__ = ["LoginStep", "Pseudonym", "RedisFixedWindowCounts", "RedisLoginCounts", "RedisWindowThrottle"]

#: a keyed hash of an identifier: (kind, value) → hex digest, keyed with the installation's privacy
#: salt that every worker shares (e.g. `functools.partial(runtime.lockout.keyed_subject, salt)`)
Pseudonym = Callable[[str, str], str]

_SCOPES = ("username", "address")

# KEYS: 1 user key, 2 address key, 3 pair key, 4 user index, 5 address index, 6 pair index
# ARGV: 1 now (ms), 2 free failures, 3 base delay (ms), 4 lock after, 5 lock (ms), 6 max keys,
#       7 user member, 8 address member, 9 pair member, 10 user key prefix, 11 address prefix,
#       12 pair prefix
# Returns {0, scope (1 user, 2 address), wait (s), locked} refused, or {1, user newly locked,
# address newly locked} counted.
_ATTEMPT = """
local now = tonumber(ARGV[1])
local free = tonumber(ARGV[2])
local base = tonumber(ARGV[3])
local lock_after = tonumber(ARGV[4])
local lock_ms = tonumber(ARGV[5])
local max_keys = tonumber(ARGV[6])

local function live(key, index, member)
  local v = redis.call('HMGET', key, 'f', 'l', 'b', 'k')
  if not v[1] then
    return nil
  end
  local s = {f = tonumber(v[1]), l = tonumber(v[2]), b = tonumber(v[3]), k = tonumber(v[4])}
  if now - s.l >= lock_ms and s.b <= now then
    redis.call('DEL', key)
    redis.call('ZREM', index, member)
    return nil
  end
  return s
end

local function remember(index, member, prefix)
  redis.call('ZADD', index, now, member)
  redis.call('ZREMRANGEBYSCORE', index, '-inf', '(' .. (now - lock_ms))
  local extra = redis.call('ZCARD', index) - max_keys
  if extra > 0 then
    local dropped = 0
    for _, old in ipairs(redis.call('ZRANGE', index, 0, extra)) do
      if dropped < extra and old ~= member then
        redis.call('ZREM', index, old)
        redis.call('DEL', prefix .. old)
        dropped = dropped + 1
      end
    end
  end
  redis.call('PEXPIRE', index, lock_ms)
end

local scopes = {{KEYS[1], KEYS[4], ARGV[7], ARGV[10]}, {KEYS[2], KEYS[5], ARGV[8], ARGV[11]}}
local states = {}
local worst, worst_wait, worst_locked = 0, 0, 0
for i, sc in ipairs(scopes) do
  local s = live(sc[1], sc[2], sc[3])
  states[i] = s
  if s and s.b > now then
    local wait = math.max(1, math.ceil((s.b - now) / 1000))
    if worst == 0 or wait > worst_wait then
      worst, worst_wait, worst_locked = i, wait, s.k
    end
  end
end
if worst > 0 then
  return {0, worst, worst_wait, worst_locked}
end

local newly = {0, 0}
for i, sc in ipairs(scopes) do
  local s = states[i] or {f = 0, l = now, b = 0, k = 0}
  s.f = s.f + 1
  s.l = now
  if s.f >= lock_after then
    if s.k == 0 then
      newly[i] = 1
    end
    s.k = 1
    s.b = now + lock_ms
  elseif s.f > free then
    s.b = now + math.min(base * 2 ^ (s.f - free - 1), lock_ms)
  end
  redis.call('HSET', sc[1], 'f', s.f, 'l', s.l, 'b', string.format('%d', s.b), 'k', s.k)
  redis.call('PEXPIRE', sc[1], lock_ms)
  remember(sc[2], sc[3], sc[4])
end
redis.call('INCR', KEYS[3])
redis.call('PEXPIRE', KEYS[3], lock_ms)
remember(KEYS[6], ARGV[9], ARGV[12])
return {1, newly[1], newly[2]}
"""

# KEYS: 1 user key, 2 address key, 3 pair key, 4 user index, 5 pair index
# ARGV: 1 free failures, 2 lock after, 3 user member, 4 pair member. Returns the failures forgiven.
_FORGIVE = """
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[4], ARGV[3])
local forgiven = tonumber(redis.call('GET', KEYS[3]) or '0')
redis.call('DEL', KEYS[3])
redis.call('ZREM', KEYS[5], ARGV[4])
if forgiven > 0 and redis.call('EXISTS', KEYS[2]) == 1 then
  local f = math.max(0, tonumber(redis.call('HGET', KEYS[2], 'f')) - forgiven)
  redis.call('HSET', KEYS[2], 'f', f)
  if f < tonumber(ARGV[2]) then
    redis.call('HSET', KEYS[2], 'k', 0)
  end
  if f <= tonumber(ARGV[1]) then
    redis.call('HSET', KEYS[2], 'b', 0)
  end
end
return forgiven
"""

# KEYS[1] the window; ARGV: now (ms; -1: the Redis clock), window (ms), limit, a unique member.
# Returns -1 when the start is counted, else the ms until one would be.
_WINDOW = """
local now = tonumber(ARGV[1])
if now < 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return math.max(0, tonumber(oldest[2]) + window - now)
end
redis.call('ZADD', KEYS[1], now, ARGV[4])
redis.call('PEXPIRE', KEYS[1], window)
return -1
"""

# KEYS[1] the count; ARGV: its TTL (ms). Returns the count with this one.
_COUNT = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return n
"""


def _ms(when: dt.datetime) -> int:
    """Milliseconds since 1970 (UTC) of an aware or UTC-naive datetime."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return int(when.timestamp() * 1000)


@dataclass(frozen=True)
class LoginStep:
    """What one attempt came to: refused by a key (nothing counted), or counted as a failure."""

    refused: str | None = None  # "username" or "address": the key that makes it wait
    retry_after_s: int = 0
    locked: bool = False  # the refusing key is locked, not only backing off
    newly_locked: tuple[str, ...] = ()  # the keys this failure locked
    lock_s: int = 0  # how long those locks last


class RedisLoginCounts:
    """Failed sign-ins per username and per client address, counted in Redis by the rules of
    `governance.throttle.InMemoryLoginThrottle` (back-off, lock, forgiveness, at most `max_keys`
    keys of each kind): the `LoginCounts` of a `SharedLoginThrottle`."""

    def __init__(
        self,
        cluster: Cluster,
        *,
        pseudonym: Pseudonym,
        free_failures: int = 5,
        base_delay_s: float = 1.0,
        lock_after: int = 10,
        lock_s: float = 900.0,
        max_keys: int = 10_000,
    ) -> None:
        if lock_after <= free_failures:
            raise ValueError("lock_after must be more than free_failures")
        self.cluster = cluster
        self.free_failures = free_failures
        self.base_delay_s = base_delay_s
        self.lock_after = lock_after
        self.lock_s = lock_s
        self.max_keys = max_keys
        self._pseudonym = pseudonym
        self._attempt = cluster.client.register_script(_ATTEMPT)
        self._forgive = cluster.client.register_script(_FORGIVE)

    def _names(self, username: str, address: str) -> tuple[str, str, str]:
        return (
            self._pseudonym("username", username),
            self._pseudonym("address", address),
            self._pseudonym("login-pair", f"{username}\x00{address}"),
        )

    def _index(self, kind: str) -> str:
        return self.cluster.key("login", kind)

    def _prefix(self, kind: str) -> str:
        return self.cluster.key("login", kind) + ":"

    async def attempt(self, username: str, address: str, now: dt.datetime) -> LoginStep:
        """Refuse the attempt at `now` (the longest wait of the two keys; nothing counted), or count
        it as a failure of the username and the address (delaying or locking each)."""
        user, addr, pair = self._names(username, address)
        keys = [
            self._prefix("user") + user,
            self._prefix("addr") + addr,
            self._prefix("pair") + pair,
            self._index("user"),
            self._index("addr"),
            self._index("pair"),
        ]
        args: list[Any] = [
            _ms(now),
            self.free_failures,
            int(self.base_delay_s * 1000),
            self.lock_after,
            int(self.lock_s * 1000),
            self.max_keys,
            user,
            addr,
            pair,
            self._prefix("user"),
            self._prefix("addr"),
            self._prefix("pair"),
        ]
        with reaching("counting a sign-in attempt"):
            result = [int(n) for n in await self._attempt(keys=keys, args=args)]
        if result[0] == 0:
            return LoginStep(refused=_SCOPES[result[1] - 1], retry_after_s=result[2], locked=bool(result[3]))
        locked = tuple(scope for scope, newly in zip(_SCOPES, result[1:3], strict=True) if newly)
        return LoginStep(newly_locked=locked, lock_s=int(self.lock_s) if locked else 0)

    async def forgive(self, username: str, address: str) -> None:
        """Forget the username's failures and those of this address on it."""
        user, addr, pair = self._names(username, address)
        keys = [
            self._prefix("user") + user,
            self._prefix("addr") + addr,
            self._prefix("pair") + pair,
            self._index("user"),
            self._index("pair"),
        ]
        with reaching("forgiving a sign-in"):
            await self._forgive(keys=keys, args=[self.free_failures, self.lock_after, user, pair])


class RedisWindowThrottle:
    """At most `limit` starts per key within any `window_s` seconds across the cluster (0: no
    limit), like `channels.throttle.WindowThrottle`: a refused start is not counted. `clock` (s)
    is Redis's own unless one is given; `refused` counts this worker's refusals."""

    def __init__(
        self,
        cluster: Cluster,
        name: str,
        limit: int,
        *,
        pseudonym: Pseudonym,
        window_s: float = 60.0,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.cluster = cluster
        self.name = name
        self.limit = limit
        self.window_s = window_s
        self.refused = 0
        self._pseudonym = pseudonym
        self._clock = clock
        self._script = cluster.client.register_script(_WINDOW)

    async def take(self, key: str) -> float | None:
        """Count one new session for `key`; None if allowed, else the seconds until one would be."""
        if self.limit <= 0:
            return None
        now = -1 if self._clock is None else int(self._clock() * 1000)
        args: list[Any] = [now, int(self.window_s * 1000), self.limit, secrets.token_hex(8)]
        with reaching(f"counting a new session ({self.name})"):
            wait_ms = int(
                await self._script(
                    keys=[self.cluster.key("window", self.name, self._pseudonym(self.name, key))], args=args
                )
            )
        if wait_ms < 0:
            return None
        self.refused += 1
        return wait_ms / 1000


class RedisFixedWindowCounts:
    """Counts per key in fixed windows (a minute by default) across the cluster: each worker adds
    its own, every worker reads the sum."""

    def __init__(self, cluster: Cluster, name: str, *, pseudonym: Pseudonym, window_s: float = 60.0) -> None:
        self.cluster = cluster
        self.name = name
        self.window_s = window_s
        self._pseudonym = pseudonym
        self._script = cluster.client.register_script(_COUNT)

    async def add(self, key: str, window_start: dt.datetime) -> int:
        """Count one for `key` in the window starting at `window_start`: the window's count so far."""
        name = self.cluster.key("count", self.name, str(_ms(window_start)), self._pseudonym(self.name, key))
        with reaching(f"counting {self.name}"):
            return int(await self._script(keys=[name], args=[int(2 * self.window_s * 1000)]))
