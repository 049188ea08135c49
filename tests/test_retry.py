"""Retry policies (voxgate/retry.py) and the alert webhook delivery built on them, in virtual time."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from voxgate.errors import InvalidError
from voxgate.observe.alerts import deliver
from voxgate.retry import WEBHOOK_DELIVERY, RetryPolicy


class Flaky(Exception):
    """A failure that goes away."""


class VirtualSleep:
    """Records the waits instead of waiting."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)

    def sync(self, seconds: float) -> None:
        self.waits.append(seconds)


def test_a_failure_that_goes_away_is_retried_with_linear_waits() -> None:
    sleep = VirtualSleep()
    calls = 0

    async def main() -> str:
        nonlocal calls
        async for attempt in RetryPolicy(attempts=4, wait_s=0.5).async_retrying(Flaky, sleep=sleep):
            with attempt:
                calls += 1
                if calls < 3:
                    raise Flaky
                return "done"
        raise AssertionError("unreachable")

    assert asyncio.run(main()) == "done"
    assert (calls, sleep.waits) == (3, [0.5, 1.0])


def test_the_last_failure_is_raised_as_itself_after_the_last_attempt() -> None:
    sleep = VirtualSleep()
    calls = 0
    with pytest.raises(Flaky):
        for attempt in RetryPolicy(attempts=3, wait_s=1.0, exponential=True).retrying(Flaky, sleep=sleep.sync):
            with attempt:
                calls += 1
                raise Flaky
    assert calls == 3
    assert sleep.waits == [1.0, 2.0]  # no wait after the last attempt


def test_an_error_not_named_is_raised_at_once() -> None:
    calls = 0
    with pytest.raises(KeyError):
        for attempt in RetryPolicy(attempts=3, wait_s=0).retrying(Flaky, sleep=VirtualSleep().sync):
            with attempt:
                calls += 1
                raise KeyError("not transient")
    assert calls == 1


def test_waits_are_capped() -> None:
    sleep = VirtualSleep()
    with pytest.raises(Flaky):
        for attempt in RetryPolicy(attempts=5, wait_s=1.0, exponential=True, max_wait_s=3.0).retrying(
            Flaky, sleep=sleep.sync
        ):
            with attempt:
                raise Flaky
    assert sleep.waits == [1.0, 2.0, 3.0, 3.0]


@pytest.mark.parametrize(("attempts", "wait_s"), [(0, 1.0), (1, -1.0)])
def test_a_policy_that_cannot_be_followed_is_refused(attempts: int, wait_s: float) -> None:
    with pytest.raises(InvalidError):
        RetryPolicy(attempts=attempts, wait_s=wait_s)


# ---- alert webhooks ---------------------------------------------------------------------------------


def _webhook(answers: list[int | type[Exception]]) -> tuple[httpx.MockTransport, list[httpx.Request]]:
    """A webhook that answers each delivery with the next status (or raises the next error)."""
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        answer = answers[min(len(seen), len(answers)) - 1]
        if isinstance(answer, int):
            return httpx.Response(answer)
        raise answer("refused", request=request)

    return httpx.MockTransport(handle), seen


def test_a_refused_delivery_is_retried_until_the_webhook_takes_it() -> None:
    transport, seen = _webhook([503, httpx.ConnectError, 204])  # type: ignore[list-item]
    sleep = VirtualSleep()
    records = asyncio.run(deliver(["https://hooks.example/a?token=x"], {"n": 1}, transport=transport, sleep=sleep))
    assert records == [{"webhook": "https://hooks.example/a", "ok": True, "attempts": 3}]
    assert len(seen) == 3
    assert sleep.waits == [WEBHOOK_DELIVERY.wait_s, 2 * WEBHOOK_DELIVERY.wait_s]


def test_a_webhook_that_keeps_refusing_is_recorded_with_its_last_error() -> None:
    transport, seen = _webhook([500])
    records = asyncio.run(deliver(["https://hooks.example/b"], {}, transport=transport, sleep=VirtualSleep()))
    assert records == [{"webhook": "https://hooks.example/b", "ok": False, "attempts": 3, "error": "HTTP 500"}]
    assert len(seen) == WEBHOOK_DELIVERY.attempts

    transport, _ = _webhook([httpx.ConnectError])  # type: ignore[list-item]
    records = asyncio.run(
        deliver(["https://hooks.example/c"], {}, attempts=2, transport=transport, sleep=VirtualSleep())
    )
    assert records == [{"webhook": "https://hooks.example/c", "ok": False, "attempts": 2, "error": "ConnectError"}]


def test_a_webhook_secret_that_cannot_be_resolved_is_not_tried(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VOXGATE_TEST_NO_SUCH_HOOK", raising=False)
    transport, seen = _webhook([204])
    records = asyncio.run(deliver(["env:VOXGATE_TEST_NO_SUCH_HOOK"], {}, transport=transport, sleep=VirtualSleep()))
    assert records[0]["ok"] is False and records[0]["attempts"] == 0 and seen == []
