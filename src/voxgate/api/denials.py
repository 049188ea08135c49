"""Refusals of anonymous requests: counted per minute instead of audited one by one, and rate-limited.

A signed-in user's refusal is a fact about an account and is audited on its own (`api/auth.py`).
An anonymous caller's is not: anyone can send thousands, and one audit event each would grow the
chain without bound. So each refusal of an anonymous request (refused by policy, an invalid API
token, a throttled sign-in, or the rate limit below) is counted under (route template, client
address, reason) for the current minute, and each minute ends as one `auth.denied.anon`
event per key with its count. The counts of the minute under way are written when the worker
stops, so none are lost on a clean shutdown.

Memory is bounded: at most `max_keys` keys a minute; refusals beyond that are counted under the
route and client "*". A client address refused more than `per_client_per_minute` times in a minute
gets 429 (with Retry-After: the rest of the minute) for its anonymous refusals until the minute
ends; those are counted too, as "rate_limited".

The worker counts each refusal through `count` (`api/auth.py` `refused_anonymously`). In a cluster
the refusals that decide the 429 are counted across the workers (`shared`, a `ClientCounts` such as
`voxgate.cluster.counters.RedisFixedWindowCounts`): an address spreading its requests over the
workers meets one limit. The audit counts stay each
worker's own: every worker writes the events of the refusals it answered, so none is counted twice.
If the shared count cannot be reached the worker counts alone for that refusal (it is refused
either way).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import math
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from voxgate.compliance.audit import AuditEvent, at_text
from voxgate.errors import UnavailableError

log = logging.getLogger("voxgate.api")

ACTION = "auth.denied.anon"  # one unbroken word in the console's audit table: kept as short as its neighbours
WINDOW = dt.timedelta(minutes=1)
OVERFLOW = "*"  # the route and client under which refusals past the key limit are counted
MAX_ROUTE_CHARS = 150
MAX_CLIENT_CHARS = 64
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f]")
Reason = Literal["denied", "invalid_token", "throttled", "rate_limited"]
#: the reasons that count towards a client's rate limit (a throttled sign-in has its own limit)
_LIMITED: frozenset[str] = frozenset({"denied", "invalid_token"})


@dataclass
class _Window:
    start: dt.datetime
    counts: dict[tuple[str, str, str], int] = field(default_factory=dict)  # (route, client, reason) → count
    per_client: dict[str, int] = field(default_factory=dict)  # refusals that count towards the rate limit


def _printable(text: str) -> str:
    """`text` as an audit field may hold it (a raw path may carry escaped control characters)."""
    return _UNPRINTABLE.sub("?", text.encode("utf-8", "replace").decode("utf-8"))


def _minute(when: dt.datetime) -> dt.datetime:
    return when.replace(second=0, microsecond=0)


class ClientCounts(Protocol):
    """Refusals per client address and minute, counted where every worker adds its own."""

    async def add(self, key: str, window_start: dt.datetime) -> int:
        """Count one for `key` in the minute starting at `window_start`: that minute's count so far."""
        ...


class AnonymousDenials:
    """Per-minute counts of anonymous refusals, and the rate limit on them. Thread-safe."""

    def __init__(
        self,
        *,
        environment: str,
        per_client_per_minute: int,
        clock: Callable[[], dt.datetime],
        max_keys: int = 1000,
        shared: ClientCounts | None = None,
    ) -> None:
        self.environment = environment
        self.per_client_per_minute = per_client_per_minute
        self.max_keys = max_keys
        self.shared = shared
        self._clock = clock
        self._lock = threading.Lock()
        self._current: _Window | None = None
        self._closed: list[_Window] = []  # ended minutes not yet written

    def record(self, route: str, client: str, reason: Reason) -> int | None:
        """Count one refusal in this worker. Returns None, or the seconds to wait when `client` is
        over its limit (the refusal is then counted as "rate_limited" and the caller answers 429)."""
        return self._record(route, client, reason, self._clock(), None)

    async def count(self, route: str, client: str, reason: Reason) -> int | None:
        """`record`, with the refusals that decide the limit counted across the cluster when this
        worker has `shared` counts (else in this worker alone)."""
        now = self._clock()
        if self.shared is None or reason not in _LIMITED:
            return self._record(route, client, reason, now, None)
        try:
            so_far = await self.shared.add(client, _minute(now))
        except UnavailableError as exc:  # refused all the same: this worker's own count decides
            log.warning("refusals of anonymous requests counted in this worker alone: %s", exc)
            return self._record(route, client, reason, now, None)
        return self._record(route, client, reason, now, so_far)

    def _record(self, route: str, client: str, reason: Reason, now: dt.datetime, so_far: int | None) -> int | None:
        """Count one refusal at `now`; `so_far`: the client's refusals this minute across the cluster
        (None: count them here)."""
        with self._lock:
            window = self._window(now)
            if reason in _LIMITED:
                if so_far is None:
                    counted = (
                        client if client in window.per_client or len(window.per_client) < self.max_keys else OVERFLOW
                    )
                    so_far = window.per_client[counted] = window.per_client.get(counted, 0) + 1
                if so_far > self.per_client_per_minute:
                    reason = "rate_limited"
            route, client = _printable(route)[:MAX_ROUTE_CHARS] or "/", _printable(client)[:MAX_CLIENT_CHARS]
            key = (route, client or "unknown", reason)
            if key not in window.counts and len(window.counts) >= self.max_keys:
                key = (OVERFLOW, OVERFLOW, reason)
            window.counts[key] = window.counts.get(key, 0) + 1
            if reason != "rate_limited":
                return None
            return max(1, math.ceil((window.start + WINDOW - now).total_seconds()))

    def _window(self, now: dt.datetime) -> _Window:
        start = _minute(now)
        if self._current is None or start > self._current.start:
            if self._current is not None and self._current.counts:
                self._closed.append(self._current)
            self._current = _Window(start)
        return self._current

    def due(self, final: bool = False) -> list[AuditEvent]:
        """The events of the minutes that have ended (and, when `final`, of the one under way),
        taken out of memory: the caller writes them."""
        now = self._clock()
        with self._lock:
            self._window(now)  # closes the current minute if it has ended
            windows, self._closed = self._closed, []
            if final and self._current is not None:
                if self._current.counts:
                    windows.append(self._current)
                self._current = None
        return [self._event(w, key, count) for w in windows for key, count in sorted(w.counts.items())]

    def _event(self, window: _Window, key: tuple[str, str, str], count: int) -> AuditEvent:
        route, client, reason = key
        return AuditEvent(
            actor="anonymous",
            action=ACTION,
            resource=f"route:{route}",
            outcome="denied",
            environment=self.environment,
            data={
                "route": route,
                "client": client,
                "reason": reason,
                "count": count,
                "window_start": at_text(window.start),
            },
        )

    async def flush(self, audit: Any, final: bool = False) -> int:
        """Write the counts of the ended minutes (all of them when `final`) to the audit chain."""
        events = self.due(final)
        if events:
            try:
                await asyncio.to_thread(audit.append, *events)
            except Exception:  # counted refusals are evidence, but never worth a crashed worker
                log.exception("could not write %d counts of refused anonymous requests to the audit log", len(events))
        return len(events)

    async def flush_forever(self, audit: Any, interval_s: float = 5.0) -> None:
        """Write each minute's counts soon after it ends; runs until cancelled."""
        while True:
            await asyncio.sleep(interval_s)
            await self.flush(audit)
