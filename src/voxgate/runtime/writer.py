"""One ordered writer per session: its records are written one at a time, in the order they happened.

A conversation never waits for storage unless it asks to (``submit`` returns a future it may
await); a write that fails is tried again (tenacity) and, when it keeps failing, reported: logged
with the session and the kind of record, counted in ``failures``, and raised to whoever awaits it.
It is never dropped silently, and the writes after it still happen, in order.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from voxgate.retry import RetryPolicy

log = logging.getLogger("voxgate.runtime.writer")

#: a record write: three tries, 50 ms then 100 ms apart (a database that hiccups, a busy SQLite file)
RECORD_WRITE = RetryPolicy(attempts=3, wait_s=0.05, exponential=True, max_wait_s=1.0)

Write = Callable[[], Awaitable[None]]


@dataclass(frozen=True)
class WriteFailure:
    """A write that failed every attempt: what it was, and the last error."""

    what: str
    error: BaseException


class OrderedWriter:
    """Applies writes one at a time in the order submitted; retries a failed one, then reports it."""

    def __init__(
        self,
        owner: str,
        *,
        policy: RetryPolicy = RECORD_WRITE,
        on_failure: Callable[[WriteFailure], None] | None = None,
    ) -> None:
        self.owner = owner  # whose writes these are (a session id), for the report
        self.policy = policy
        self.on_failure = on_failure
        self.failures: list[WriteFailure] = []
        self._queue: deque[tuple[str, Write, asyncio.Future[None]]] = deque()
        self._task: asyncio.Task[None] | None = None
        self._last: asyncio.Future[None] | None = None

    def submit(self, write: Write, what: str) -> asyncio.Future[None]:
        """Queue `write` behind the earlier ones; the future resolves when it is written (or has failed)."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.add_done_callback(_retrieved)  # a failure nobody awaits is still reported, by the writer
        self._queue.append((what, write, done))
        self._last = done
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name=f"writer:{self.owner}")
        return done

    async def drain(self) -> None:
        """Wait until every write submitted so far is done (written or reported); never raises a write's error."""
        last = self._last
        if last is not None and not last.done():
            await asyncio.wait([last])

    @property
    def pending(self) -> int:
        """Writes submitted and not yet done."""
        return len(self._queue)

    async def _run(self) -> None:
        try:
            while self._queue:
                what, write, done = self._queue[0]
                try:
                    await self._apply(what, write)
                except Exception as exc:
                    self._report(WriteFailure(what, exc))
                    _settle(done, exc)
                else:
                    _settle(done, None)
                self._queue.popleft()
        except asyncio.CancelledError:
            while self._queue:  # the loop is going away: nobody may wait forever for these
                _, _, done = self._queue.popleft()
                done.cancel()
            raise

    async def _apply(self, what: str, write: Write) -> None:
        async for attempt in self.policy.async_retrying(Exception):
            with attempt:
                try:
                    await write()
                except Exception:
                    tried = attempt.retry_state.attempt_number
                    if tried < self.policy.attempts:
                        log.warning(
                            "writing %s of %s failed (attempt %d of %d), trying again",
                            what,
                            self.owner,
                            tried,
                            self.policy.attempts,
                            exc_info=True,
                        )
                    raise

    def _report(self, failure: WriteFailure) -> None:
        self.failures.append(failure)
        log.error(
            "writing %s of %s failed %d times; it is not stored",
            failure.what,
            self.owner,
            self.policy.attempts,
            exc_info=failure.error,
        )
        if self.on_failure is not None:
            self.on_failure(failure)


def _settle(done: asyncio.Future[None], error: BaseException | None) -> None:
    if done.done():  # whoever waited was cancelled: the write went on regardless
        return
    if error is None:
        done.set_result(None)
    else:
        done.set_exception(error)


def _retrieved(done: asyncio.Future[None]) -> None:
    if not done.cancelled():
        done.exception()
