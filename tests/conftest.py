"""Shared fixtures: the Harbor bundle and backend, the embedder, and databases (SQLite + PostgreSQL)."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from voxgate.governance.environments import DEFAULT_POLICY_DIR

ROOT = Path(__file__).resolve().parents[1]
HARBOR_AGENT = ROOT / "examples" / "harbor-telecom" / "agents" / "harbor-support"
PG_URL = os.environ.get("VOXGATE_TEST_POSTGRES_URL")


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get("VOXGATE_REQUIRE_POSTGRES") == "1" and not PG_URL:
        raise pytest.UsageError("VOXGATE_REQUIRE_POSTGRES=1 but VOXGATE_TEST_POSTGRES_URL is not set")


def policy_copy(tmp: Path, edit: Callable[[str], str] | None = None) -> Path:
    """The packaged policy directory copied to `tmp/policies` (once), its environments.yaml passed
    through `edit`: the policies a test's worker reads with `policy_dir=`."""
    policies = tmp / "policies"
    if not policies.exists():
        shutil.copytree(DEFAULT_POLICY_DIR, policies)
        if edit is not None:
            env_file = policies / "environments.yaml"
            env_file.write_text(edit(env_file.read_text()))
    return policies


def add_dev_settings(yaml_lines: str) -> Callable[[str], str]:
    """An environments.yaml edit adding `yaml_lines` (indented for dev's `settings:`) to dev's settings."""
    marker = "      retention_days: 7\n"

    def edit(text: str) -> str:
        assert text.count(marker) == 1, "dev's settings are not where this helper expects them"
        return text.replace(marker, marker + yaml_lines)

    return edit


def _db_params() -> list[str]:
    return ["sqlite", "postgresql"] if PG_URL else ["sqlite"]


@pytest.fixture(params=_db_params())
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database of each kind the run has."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'voxgate.db'}"
        return
    yield fresh_postgres()


def fresh_postgres() -> str:
    """The test PostgreSQL's URL (psycopg driver), its public schema dropped and recreated empty."""
    from sqlalchemy import create_engine, text

    url = PG_URL.replace("postgresql://", "postgresql+psycopg://", 1)  # type: ignore[union-attr]
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()
    return url


def query(db_url: str, sql: str, **params: object) -> list[Any]:
    """Rows of one SQL query on a database a test server writes to (its own short-lived engine)."""
    from sqlalchemy import create_engine, text

    engine = create_engine(db_url)
    with engine.connect() as conn:
        rows = list(conn.execute(text(sql), params))
    engine.dispose()
    return rows


def metric_value(state: Any, prefix: str) -> float:
    """The value of the first Prometheus sample line of a worker's /metrics starting with `prefix` (0 if none)."""
    for line in state.metrics.render().decode().splitlines():
        if line.startswith(prefix):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.fixture(scope="session")
def harbor_bundle():  # type: ignore[no-untyped-def]
    from voxgate.bundle import load_bundle

    return load_bundle(HARBOR_AGENT)


@pytest.fixture()
def agent_copy(tmp_path: Path) -> Path:
    """A writable copy of the Harbor agent, for tests that break or alter it."""
    dst = tmp_path / "harbor-support"
    shutil.copytree(HARBOR_AGENT, dst)
    return dst


@pytest.fixture(scope="session")
def embedder():  # type: ignore[no-untyped-def]
    from voxgate.runtime.nlu.embeddings import default_embedder

    return default_embedder()


@pytest.fixture(scope="session")
def harbor_backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """The real demo backend on a free loopback port; the agent's connector points at it."""
    from harbor_backend import BackgroundServer

    key = secrets.token_urlsafe(16)
    db = tmp_path_factory.mktemp("harbor") / "harbor.db"
    old = {k: os.environ.get(k) for k in ("HARBOR_API_KEY", "HARBOR_API_URL")}
    with BackgroundServer(db, key) as server:
        os.environ["HARBOR_API_KEY"] = key
        os.environ["HARBOR_API_URL"] = server.url
        yield server
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def credentials() -> list[dict[str, str]]:
    from harbor_backend import demo_credentials

    return demo_credentials()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serving(application: Any) -> Iterator[str]:
    """An ASGI app under uvicorn on a free loopback port, in a thread; yields its base URL."""
    import uvicorn

    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(application, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 60
    while not srv.started:
        assert time.time() < deadline and thread.is_alive(), "server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(timeout=30)
