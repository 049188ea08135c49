"""Time, one way: the wall clock as an aware UTC datetime, the type of a clock a class takes
instead of reading it (so that tests and simulations can hand it another one), and the monotonic
clock the real-time voice path runs on, with a virtual one that tests advance by hand."""

from __future__ import annotations

import asyncio
import datetime as dt
import heapq
import itertools
import time
from collections.abc import Callable
from typing import Protocol

#: a source of "now": `utcnow` in production, a controllable one in tests
Clock = Callable[[], dt.datetime]


def utcnow() -> dt.datetime:
    """The current time in UTC (timezone-aware)."""
    return dt.datetime.now(dt.UTC)


class MonotonicClock(Protocol):
    """Monotonic time in seconds and a way to wait on it: what a real-time stage reads instead of
    `time.perf_counter` and `asyncio.sleep`."""

    def now(self) -> float:
        """Seconds on a monotonic scale (only differences mean anything)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait `seconds` on this clock."""
        ...


class SystemClock:
    """The real clock: `time.perf_counter` and `asyncio.sleep`."""

    def now(self) -> float:
        """`time.perf_counter()`."""
        return time.perf_counter()

    async def sleep(self, seconds: float) -> None:
        """`asyncio.sleep(seconds)`."""
        await asyncio.sleep(seconds)


SYSTEM_CLOCK = SystemClock()

#: how many rounds of the event loop `VirtualClock.settle` runs at most before it gives up waiting
#: for the loop to go quiet (a task that never waits would otherwise hold it forever)
MAX_SETTLE_ROUNDS = 10_000
#: where a virtual clock starts: timing records treat 0.0 as "never happened"
VIRTUAL_EPOCH = 1000.0


class VirtualClock:
    """A clock for tests: time stands still until the test moves it.

    `advance(seconds)` moves it forward, waking the sleepers whose time has come in order, and
    after each wake-up lets every task that can run do so before time moves on (`settle`). So a
    test that feeds a frame and advances 20 ms drives a call frame by frame, deterministically,
    and without sleeping. `run_until(condition)` advances from one sleeper's deadline to the next,
    i.e. whenever every task is waiting on the clock, until the condition holds.
    """

    def __init__(self, start: float = VIRTUAL_EPOCH) -> None:
        self._now = start
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def now(self) -> float:
        """The virtual time in seconds."""
        return self._now

    async def sleep(self, seconds: float) -> None:
        """Wait until the clock has been advanced by `seconds` (0 or less: just yield once)."""
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._seq), future))
        await future

    async def settle(self) -> None:
        """Let every task that is ready run, until all wait (on the clock or on each other)."""
        loop = asyncio.get_running_loop()
        for _ in range(MAX_SETTLE_ROUNDS):
            await asyncio.sleep(0)
            # the loop's queue of ready callbacks: empty once every other task is waiting
            if not getattr(loop, "_ready", None):
                return

    def next_deadline(self) -> float | None:
        """When the earliest sleeper wakes (None: nobody sleeps)."""
        while self._sleepers and self._sleepers[0][2].done():  # cancelled sleepers
            heapq.heappop(self._sleepers)
        return self._sleepers[0][0] if self._sleepers else None

    async def advance(self, seconds: float) -> None:
        """Move time forward by `seconds`, waking sleepers in order and settling after each."""
        target = self._now + seconds
        await self.settle()
        while True:
            deadline = self.next_deadline()
            if deadline is None or deadline > target:
                break
            self._now = max(self._now, deadline)
            while self._sleepers and self._sleepers[0][0] <= self._now:
                _, _, future = heapq.heappop(self._sleepers)
                if not future.done():
                    future.set_result(None)
            await self.settle()
        self._now = max(self._now, target)
        await self.settle()

    async def run_until(self, condition: Callable[[], bool], *, timeout: float) -> bool:
        """Advance to each next deadline while `condition()` is false, for at most `timeout` seconds
        of virtual time; whether the condition came to hold."""
        end = self._now + timeout
        await self.settle()
        while not condition():
            deadline = self.next_deadline()
            if deadline is None or deadline > end:
                await self.advance(max(0.0, end - self._now))
                return condition()
            await self.advance(deadline - self._now)
        return True
