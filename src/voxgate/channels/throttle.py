"""How many new conversations one client address (chat) or one calling number (telephony) may
start per minute: beyond it the start is refused with how long to wait.

A refused start is not counted, so a client that keeps trying is let in again as soon as its
oldest counted start leaves the window. `StartThrottle` is the port every implementation has and
every caller uses: `WindowThrottle` counts in this process (it also has the synchronous
`SessionThrottle` form), and `voxgate.cluster.counters.RedisWindowThrottle` counts across the
workers of a cluster, so a client that spreads its starts over several workers is held to one limit.

A shared count that cannot be reached raises `UnavailableError` (`RedisUnavailable`), and the start
is refused, not let through uncounted: the chat routes answer 503 (or close the socket with 1013,
try again later) and a call hears the busy message. Failing closed is the cluster's rule for
admission (a worker that cannot reach Redis refuses new calls, since no worker could keep the
environment's limits without the shared count); a worker in that state is also not ready, so the
load balancer sends the new conversations to workers that can count them.
"""

from __future__ import annotations

import math
import re
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from voxgate.config import Settings

#: most distinct keys one in-process throttle remembers; the idlest are forgotten first
MAX_KEYS = 100_000


class SessionThrottle(Protocol):
    """Counts new sessions per key within a window."""

    def hit(self, key: str) -> float | None:
        """Count one new session for `key`; None if allowed, else the seconds until one would be."""
        ...


class StartThrottle(Protocol):
    """Counts new sessions per key within a window, wherever the count is kept."""

    async def take(self, key: str) -> float | None:
        """Count one new session for `key`; None if allowed, else the seconds until one would be."""
        ...


@dataclass
class WindowThrottle:
    """At most `limit` starts per key within any `window_s` seconds (0: no limit)."""

    limit: int
    window_s: float = 60.0
    clock: Callable[[], float] = time.monotonic
    refused: int = 0
    _starts: dict[str, deque[float]] = field(default_factory=dict)

    def hit(self, key: str) -> float | None:
        """Count one new session for `key`; None if allowed, else the seconds until one would be."""
        if self.limit <= 0:
            return None
        now = self.clock()
        starts = self._starts.pop(key, None) or deque()
        while starts and now - starts[0] >= self.window_s:
            starts.popleft()
        self._starts[key] = starts  # re-inserted last: the dict's order is least recently seen first
        if len(starts) >= self.limit:
            self.refused += 1
            return max(0.0, starts[0] + self.window_s - now)
        starts.append(now)
        while len(self._starts) > MAX_KEYS:
            del self._starts[next(iter(self._starts))]
        return None

    async def take(self, key: str) -> float | None:
        """`hit`: this process's count is the whole count."""
        return self.hit(key)


def retry_after(seconds: float) -> int:
    """Whole seconds for a Retry-After header (at least 1)."""
    return max(1, math.ceil(seconds))


_NUMBER_KEYS = ("from", "caller", "callerid", "caller_id", "callernumber", "caller_number")
_NUMBER_SEPARATORS = re.compile(r"[\s\-.()]")
_PLAUSIBLE_NUMBER = re.compile(r"\+?\d{3,15}")


def calling_number(start: Mapping[str, Any]) -> str | None:
    """The caller's number from a media stream's `start`: the `<Parameter>` the TwiML passes
    (`customParameters`: from, caller, …, any case), or a gateway's own `from`. Digits and a
    leading + only; None when absent or not a plausible number (anonymous callers)."""
    params = start.get("customParameters")
    return calling_number_of(params if isinstance(params, Mapping) else {}, start.get("from"))


def calling_number_of(params: Mapping[str, object], gateway_from: object) -> str | None:
    """The caller's number from a stream's `<Parameter>`s (from, caller, …, any case) or, failing
    them, a gateway's own `from` (see `calling_number`)."""
    lowered = {str(k).lower(): v for k, v in params.items()}
    candidates = [lowered.get(k) for k in _NUMBER_KEYS]
    candidates.append(gateway_from)
    for value in candidates:
        if not isinstance(value, str):
            continue
        digits = _NUMBER_SEPARATORS.sub("", value.strip())
        if _PLAUSIBLE_NUMBER.fullmatch(digits):
            return digits
    return None


@dataclass
class SessionThrottles:
    """A worker's throttles on new conversations: per client address (chat) and per calling number,
    counted in this process (`of`) or across the cluster (`RedisWindowThrottle`s, made by the app)."""

    per_address: StartThrottle
    per_number: StartThrottle

    @classmethod
    def of(cls, settings: Settings) -> SessionThrottles:
        """The in-process throttles with the limits of `settings`."""
        return cls(
            per_address=WindowThrottle(settings.chat_sessions_per_minute),
            per_number=WindowThrottle(settings.calls_per_number_per_minute),
        )
