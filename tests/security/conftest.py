"""What the security tests share: a live worker serving the Harbor agent (development mode)."""

from __future__ import annotations

from typing import Any, Iterator

import pytest

from tests.conftest import serving
from voxgate.api.app import create_app
from voxgate.config import Settings


@pytest.fixture(scope="module")
def harbor_worker(harbor_bundle: Any, harbor_backend: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The base URL of a worker on a free loopback port, with its own SQLite store."""
    tmp = tmp_path_factory.mktemp("worker")
    # the tests here start many sessions from one loopback address: no per-address throttle (it
    # has its own tests, test_session_throttles.py)
    settings = Settings(database_url=f"sqlite:///{tmp / 'voxgate.db'}", data_dir=tmp, chat_sessions_per_minute=0)
    with serving(create_app(settings, [harbor_bundle])) as url:
        yield url
