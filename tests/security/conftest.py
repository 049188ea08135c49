"""What the security tests share: a live worker serving the Harbor agent (development mode), and an
organisation whose maker uploads bundles through a test client."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.helpers.org import Org, bearer
from tests.helpers.servers import serving
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


@pytest.fixture()
def org(db_url: str, tmp_path: Path) -> Org:
    """An organisation on each database the run has."""
    return Org(db_url, tmp_path / "data")


@pytest.fixture()
def client(org: Org) -> Iterator[TestClient]:
    """A test client of the organisation's prod worker, the maker's key registered."""
    # a 500 must show up as a status here, not as an exception inside the test
    with TestClient(create_app(org.settings, []), raise_server_exceptions=False) as c:
        r = c.post("/api/me/keys", json={"public_key": org.key.public.b64}, headers=bearer(org.maker))
        assert r.status_code == 201, r.text
        yield c
