"""Shared fixtures: the Harbor bundle and backend, the embedder, databases (SQLite + this worker's
PostgreSQL database), and the speech models (loaded once per test process). Helpers that are not
fixtures live in tests/helpers/."""

from __future__ import annotations

import gc
import os
import secrets
import shutil
from collections.abc import AsyncIterator, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher

from tests.helpers.databases import PG_URL, at_head, db_kinds, fresh_postgres, worker_postgres
from tests.helpers.org import PASSWORD
from tests.helpers.paths import HARBOR_AGENT
from tests.helpers.policies import mechanics_policies
from tests.helpers.scheduling import schedule_rank
from tests.helpers.servers import serving
from tests.helpers.speech_models import ProcessEngines
from voxgate.api.app import create_app
from voxgate.bundle import BundleSource, load_bundle
from voxgate.config import Settings
from voxgate.governance.identity import Identity
from voxgate.runtime.engine import AgentRuntime
from voxgate.runtime.recorder import MemoryRecorder
from voxgate.store.db import Database
from voxgate.voice.engines import VoiceEngines

HARBOR_ENV = ("HARBOR_API_KEY", "HARBOR_API_URL")
#: argon2id for users made by tests: one pass over 1 MiB, one lane (production: argon2-cffi's defaults)
CHEAP_TIME_COST, CHEAP_MEMORY_KIB, CHEAP_LANES = 1, 1024, 1
#: fixtures that carry calls through the real speech models in real time, and the xdist group of the
#: tests using each: a group runs on one worker, so its models load and its module's server starts once
REAL_TIME_VOICE_GROUPS = {"engines": "inprocess-voice", "voice_server": "voice-calls", "voice_desk": "desk-voice"}


def pytest_configure(config: pytest.Config) -> None:
    """A run that must cover PostgreSQL refuses to start without one."""
    if os.environ.get("VOXGATE_REQUIRE_POSTGRES") == "1" and not PG_URL:
        raise pytest.UsageError("VOXGATE_REQUIRE_POSTGRES=1 but VOXGATE_TEST_POSTGRES_URL is not set")


def cheap_hasher(*args: Any, **kwargs: Any) -> PasswordHasher:
    """`PasswordHasher` as tests make it: with no parameters given, the cheap ones."""
    return (
        PasswordHasher(*args, **kwargs)
        if args or kwargs
        else PasswordHasher(time_cost=CHEAP_TIME_COST, memory_cost=CHEAP_MEMORY_KIB, parallelism=CHEAP_LANES)
    )


def uses_a_module_fixture(item: pytest.Item) -> bool:
    """Whether a test uses a module-scoped fixture (pytest keeps what a test uses in `_fixtureinfo`)."""
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return False
    return any(defs[-1].scope == "module" for defs in info.name2fixturedefs.values() if defs)


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A test that carries a call through the real speech models in real time (it uses one of
    REAL_TIME_VOICE_GROUPS) belongs to the slow acceptance set and to that fixture's xdist group; the
    tests of a module with a module-scoped fixture share one worker; slow tests run first. The
    benchmarks' end-to-end runs (marked bench) are left out unless VOXGATE_BENCH_SMOKE=1 (`make
    bench-smoke`): each starts a cluster of its own, minutes that `make test` does not spend."""
    if os.environ.get("VOXGATE_BENCH_SMOKE") != "1":
        benches = [item for item in items if item.get_closest_marker("bench") is not None]
        if benches:
            config.hook.pytest_deselected(items=benches)
            items[:] = [item for item in items if item.get_closest_marker("bench") is None]
    for item in items:
        used = [name for name in getattr(item, "fixturenames", ()) if name in REAL_TIME_VOICE_GROUPS]
        if used:
            item.add_marker(pytest.mark.slow)
            item.add_marker(pytest.mark.xdist_group(REAL_TIME_VOICE_GROUPS[used[0]]))
        elif uses_a_module_fixture(item):
            # its module's server, browser or world is set up once, on one worker, not once per worker
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::", 1)[0]))
    # the long ones first, so that the xdist workers do not end waiting on one that started late: the
    # modules of LONGEST_FIRST in its order, then the other slow tests, then the rest (scripts/run-tests.sh
    # runs xdist with --no-loadscope-reorder, which keeps this order instead of sorting groups by size)
    items.sort(key=schedule_rank)


def pytest_collection_finish(session: pytest.Session) -> None:
    """What collection imported (voxgate, its dependencies, every test module) lives as long as the process:
    it is frozen, so that the garbage collector's full passes stop scanning it (they took some 5 % of a
    worker's CPU time). What the tests create later is collected, in fewer, larger passes."""
    gc.collect()
    gc.freeze()
    # and it runs less often: a pass every 50,000 new container objects rather than every 700 (a test makes
    # hundreds of thousands), a full one at most every 20 second-generation passes
    gc.set_threshold(50_000, 20, 20)


@pytest.hookimpl(tryfirst=True)  # before the fixture's own params are applied
def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test marked `sqlite_only` that needs a database gets SQLite alone (see tests/helpers/databases.py)."""
    if "db_url" in metafunc.fixturenames and metafunc.definition.get_closest_marker("sqlite_only") is not None:
        # as a parametrize mark (the fixture's own params then give way to it), not a call here
        metafunc.definition.add_marker(pytest.mark.parametrize("db_url", ["sqlite"], indirect=True))


def utf8_safe(text: str) -> str:
    """`text` with any lone surrogate written as an escape: what a fuzzed string looks like in a report."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A report that quotes a fuzzed string with a lone surrogate travels from an xdist worker (which
    sends it as UTF-8) with the surrogate escaped, instead of crashing the run."""
    report = yield
    report.sections = [(title, utf8_safe(content)) for title, content in report.sections]
    if report.longrepr is not None:
        text = str(report.longrepr)
        if utf8_safe(text) != text:
            report.longrepr = utf8_safe(text)
    return report


@pytest.fixture(scope="session", autouse=True)
def cheap_password_hashing() -> Iterator[None]:
    """Users made in this process get argon2id with small parameters (a fraction of the production
    cost: the suite makes hundreds of users); a test marked `production_hasher` gets the real one."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("voxgate.governance.identity.PasswordHasher", cheap_hasher)
        yield


@pytest.fixture(autouse=True)
def _production_hasher_when_marked(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """The production argon2id parameters for a test marked `production_hasher`."""
    if request.node.get_closest_marker("production_hasher") is not None:
        monkeypatch.setattr("voxgate.governance.identity.PasswordHasher", PasswordHasher)


@pytest.fixture(params=db_kinds())
def empty_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database of each kind the run has (PostgreSQL: this xdist worker's own database),
    for the tests of what migrating from nothing does."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'voxgate.db'}"
    return fresh_postgres()


@pytest.fixture(params=db_kinds())
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database of each kind the run has, migrated to the head revision and holding nothing: copied
    from this process's template rather than migrated again by every server a test starts on it (the
    migrations from an empty database are tested on `empty_db_url`)."""
    url = f"sqlite:///{tmp_path / 'voxgate.db'}" if request.param == "sqlite" else worker_postgres()
    at_head(url)  # PostgreSQL: the worker's database dropped and made again from the template
    return url


@pytest.fixture()
def db(db_url: str) -> Iterator[Database]:
    """The database of each kind the run has, at the head revision."""
    database = Database(db_url)
    database.migrate()  # a no-op at head, as a worker's start-up is
    yield database
    database.dispose()


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
def process_engines() -> Iterator[ProcessEngines]:
    """The speech models this test process has loaded, one load per configuration, closed at the end."""
    loaded = ProcessEngines()
    yield loaded
    loaded.close()


@pytest.fixture(scope="session", autouse=True)
def one_speech_model_load_per_process(process_engines: ProcessEngines) -> Iterator[None]:
    """Worker apps a test starts in this process borrow its speech models instead of loading their own
    (they load them as before, at their first call or at start-up: only the load itself is shared)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("voxgate.api.state.load_engines", process_engines.load)
        yield


@pytest.fixture(scope="session")
def engines(process_engines: ProcessEngines) -> VoiceEngines:
    """The real speech models (VAD, Whisper, the default voice) with one speech thread, for tests that
    drive a call in-process."""
    return process_engines.load(voices=("default",), workers=1, piper=Settings().piper)


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
