"""Two worker apps in this process on one database and one Redis: a cluster of two for the tests of
what workers share. Each app runs its lifespan (and its event loop) in its own TestClient thread,
with its own Redis connections, as two processes would."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import redis
from fastapi.testclient import TestClient

from tests.helpers.policies import policy_copy
from tests.helpers.redis import worker_redis_url
from voxgate.api.app import create_app
from voxgate.api.state import AppState
from voxgate.bundle.models import BundleSource
from voxgate.config import Settings

#: dev's packaged quota, replaced by the tests' limits
DEV_QUOTAS = "quotas: {max_concurrent_calls: 50}"


def fresh_redis() -> str:
    """This xdist worker's Redis database, emptied."""
    url = worker_redis_url()
    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    finally:
        client.close()
    return url


def dev_limits(tmp: Path, quotas: str) -> Path:
    """The packaged policies with dev's quotas replaced by `quotas` (e.g. "{max_concurrent_calls: 5}")."""

    def edit(text: str) -> str:
        assert DEV_QUOTAS in text, "dev's quotas are not where this helper expects them"
        return text.replace(DEV_QUOTAS, f"quotas: {quotas}", 1)  # dev comes first

    return policy_copy(tmp, edit)


@contextlib.contextmanager
def worker_pair(
    settings: Settings, bundles: list[BundleSource] | None = None
) -> Iterator[tuple[TestClient, TestClient]]:
    """Two workers started with the same settings (database, Redis, environment), one after the other."""
    with (
        TestClient(create_app(settings, list(bundles or []))) as a,
        TestClient(create_app(settings, list(bundles or []))) as b,
    ):
        yield a, b


def state_of(client: TestClient) -> AppState:
    """The worker's AppState."""
    state: AppState = client.app.state.voxgate  # type: ignore[attr-defined]
    return state


def on_loop(client: TestClient, fn: Callable[..., Any], *args: Any) -> Any:
    """`await fn(*args)` on the worker's own event loop (from the test's thread)."""
    portal = client.portal
    assert portal is not None, "the worker is not running"
    return portal.call(fn, *args)
