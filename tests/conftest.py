"""Shared fixtures: the Harbor bundle and backend, the embedder, databases (SQLite + this worker's
PostgreSQL database), and the speech models (loaded once per test process). Helpers that are not
fixtures live in tests/helpers/."""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.helpers.databases import PG_URL, db_kinds, fresh_postgres
from tests.helpers.org import PASSWORD
from tests.helpers.paths import HARBOR_AGENT
from tests.helpers.policies import mechanics_policies
from tests.helpers.servers import serving
from voxgate.api.app import create_app
from voxgate.bundle import BundleSource, load_bundle
from voxgate.config import Settings
from voxgate.governance.identity import Identity
from voxgate.runtime.engine import AgentRuntime
from voxgate.runtime.recorder import MemoryRecorder
from voxgate.store.db import Database

if TYPE_CHECKING:
    from voxgate.voice.engines import VoiceEngines

HARBOR_ENV = ("HARBOR_API_KEY", "HARBOR_API_URL")


def pytest_configure(config: pytest.Config) -> None:
    """A run that must cover PostgreSQL refuses to start without one."""
    if os.environ.get("VOXGATE_REQUIRE_POSTGRES") == "1" and not PG_URL:
        raise pytest.UsageError("VOXGATE_REQUIRE_POSTGRES=1 but VOXGATE_TEST_POSTGRES_URL is not set")


@pytest.fixture(params=db_kinds())
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database of each kind the run has (PostgreSQL: this xdist worker's own database)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'voxgate.db'}"
    return fresh_postgres()


@pytest.fixture(scope="session")
def harbor_bundle() -> BundleSource:
    """The Harbor demo agent, loaded once."""
    return load_bundle(HARBOR_AGENT)


@pytest.fixture()
def agent_copy(tmp_path: Path) -> Path:
    """A writable copy of the Harbor agent, for tests that break or alter it."""
    dst = tmp_path / "harbor-support"
    shutil.copytree(HARBOR_AGENT, dst)
    return dst


@pytest.fixture(scope="session")
def embedder() -> Any:
    """The default sentence embedder, loaded once."""
    from voxgate.runtime.nlu.embeddings import default_embedder

    return default_embedder()


@pytest.fixture(scope="session")
def harbor_backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The real demo backend on a free loopback port; the agent's connector points at it."""
    from harbor_backend import BackgroundServer

    key = secrets.token_urlsafe(16)
    db = tmp_path_factory.mktemp("harbor") / "harbor.db"
    old = {k: os.environ.get(k) for k in HARBOR_ENV}
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
    """The demo backend's customers and their secrets."""
    from harbor_backend import demo_credentials

    return demo_credentials()  # type: ignore[no-any-return]


@pytest.fixture(scope="session")
def engines() -> Iterator[VoiceEngines]:
    """The real speech models (VAD, Whisper, the default voice), loaded once per test process and
    shared by every test that drives a call in-process."""
    from voxgate.voice.engines import load_engines  # only processes that run a voice test load them

    loaded = load_engines(voices=("default",), workers=1)
    yield loaded
    loaded.close()


@pytest.fixture()
async def runtime(harbor_bundle: BundleSource, harbor_backend: Any) -> AsyncIterator[AgentRuntime]:
    """The Harbor agent's runtime against the real backend, recording in memory."""
    rt = AgentRuntime(harbor_bundle, recorder=MemoryRecorder())
    yield rt
    await rt.aclose()


@pytest.fixture()
def release_server(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """A prod worker on loopback for the release CLI (gates and checklist not blocking): its URL and the
    API tokens of mia (maker everywhere), aaron (prod approver) and olga (prod operator)."""
    db_url = f"sqlite:///{tmp_path / 'voxgate.db'}"
    db = Database(db_url)
    db.migrate()
    identity = Identity(db)
    tokens = {}
    for name, env, role in (("mia", "*", "maker"), ("aaron", "prod", "approver"), ("olga", "prod", "operator")):
        user = identity.create_user(name, PASSWORD)
        identity.bind_role(user.id, env, role, None)
        tokens[name], _ = identity.create_token(user.id, "cli", ["*"], 1)
    db.dispose()
    settings = Settings(
        data_dir=tmp_path / "data", database_url=db_url, environment="prod", policy_dir=mechanics_policies(tmp_path)
    )
    with serving(create_app(settings, [])) as url:
        yield url, tokens
