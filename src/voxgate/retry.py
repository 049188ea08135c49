"""Retry policies: how voxgate tries again an operation that may fail for a moment (a webhook, a
backend, a connection), written once on top of tenacity instead of a hand-written loop per caller.

A :class:`RetryPolicy` names how many attempts an operation gets and how long to wait between them;
``policy.async_retrying(...)`` / ``policy.retrying(...)`` give the tenacity iterator to use::

    async for attempt in WEBHOOK_DELIVERY.async_retrying(httpx.HTTPError):
        with attempt:
            await client.post(url, json=payload)

The last failure is raised as itself (``reraise=True``), never wrapped in tenacity's ``RetryError``.
The sleep is injectable, so tests run the waits in virtual time. This module is a leaf: it imports
nothing from voxgate but the error model.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import tenacity

from voxgate.errors import InvalidError

__all__ = ["WEBHOOK_DELIVERY", "RetryOn", "RetryPolicy"]

#: the exception types an attempt is retried on; anything else is raised at once
RetryOn = type[BaseException] | tuple[type[BaseException], ...]


@dataclass(frozen=True)
class RetryPolicy:
    """At most `attempts` tries, waiting `wait_s`, 2·`wait_s`, 3·`wait_s`… between them (doubling
    instead with `exponential`), each wait capped at `max_wait_s`."""

    attempts: int
    wait_s: float
    exponential: bool = False
    max_wait_s: float | None = None

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise InvalidError(f"a retry policy needs at least 1 attempt, not {self.attempts}")
        if self.wait_s < 0 or (self.max_wait_s is not None and self.max_wait_s < 0):
            raise InvalidError("a retry policy cannot wait a negative time")

    def with_attempts(self, attempts: int, wait_s: float | None = None) -> RetryPolicy:
        """This policy with another number of attempts (and wait)."""
        return RetryPolicy(attempts, self.wait_s if wait_s is None else wait_s, self.exponential, self.max_wait_s)

    def _wait(self) -> tenacity.wait.wait_base:
        cap = self.max_wait_s if self.max_wait_s is not None else float("inf")
        if self.exponential:
            return tenacity.wait_exponential(multiplier=self.wait_s, max=cap)
        return tenacity.wait_incrementing(start=self.wait_s, increment=self.wait_s, max=cap)

    def async_retrying(
        self, retry_on: RetryOn, *, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    ) -> tenacity.AsyncRetrying:
        """An `async for attempt in …: with attempt: …` iterator that retries on `retry_on`."""
        return tenacity.AsyncRetrying(
            stop=tenacity.stop_after_attempt(self.attempts),
            wait=self._wait(),
            retry=tenacity.retry_if_exception_type(retry_on),
            reraise=True,
            sleep=sleep,
        )

    def retrying(self, retry_on: RetryOn, *, sleep: Callable[[float], None] = time.sleep) -> tenacity.Retrying:
        """A blocking `for attempt in …: with attempt: …` iterator that retries on `retry_on` (off the event loop)."""
        return tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.attempts),
            wait=self._wait(),
            retry=tenacity.retry_if_exception_type(retry_on),
            reraise=True,
            sleep=sleep,
        )


#: an alert to a webhook: three tries, 0.5 s then 1 s apart
WEBHOOK_DELIVERY = RetryPolicy(attempts=3, wait_s=0.5)
