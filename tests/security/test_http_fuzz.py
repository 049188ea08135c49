"""Every HTTP route under generated input, as an anonymous caller and as each role: no 5xx, a 4xx that
says something, no traceback in the worker's log, and the worker healthy afterwards.

The operations come from the live worker's own OpenAPI schema (Schemathesis builds valid and invalid
requests from it; path parameters are random, or the served agent and a real environment so that the
route's own checks run too). Bounded and seeded: a few examples per operation, derandomized, drawn
once and sent as each caller, no shrinking. The routes left out of the schema (pages, console, metrics) get a fixed set of requests."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.generation import GenerationMode

from tests.helpers.roles import role_users
from tests.helpers.servers import serving
from tests.helpers.throttles import NO_THROTTLES
from tests.helpers.worker_log import Tracebacks, watching
from voxgate.api.app import create_app
from voxgate.config import Settings
from voxgate.governance.actions import ROLES

AGENT = "harbor-support"
CALLERS = ["anonymous", *ROLES]
EXAMPLES = 4  # per operation, caller and kind of path parameters
# Known server errors whose cause lies in a module this suite does not own: {what the traceback says:
# why}. The fuzz lets a 500 pass only when every traceback it logged matches one of these, and each has
# its own strict xfail below, keyed to a route and an input, that turns red once the cause is fixed.
# None today: the audit chain is given names from a request only by hash when they are not printable
# or too long (api/auth.py `audit_name`).
KNOWN_SERVER_ERRORS: dict[str, str] = {}
# the routes the schema leaves out, and what a browser or a scraper asks of them
UNLISTED = [
    "/",
    "/phone",
    "/desk",
    "/console",
    "/console/",
    "/console/agents/../../etc/passwd",
    "/console/%00",
    "/metrics",
    "/static/chat.js",
    "/static/../pyproject.toml",
    "/docs",
    "/redoc",
    "/openapi.json",
]


@dataclass
class Worker:
    base: str
    state: Any
    users: dict[str, str]
    schema: Any
    log: Tracebacks
    http: requests.Session = field(default_factory=requests.Session)

    def headers(self, caller: str) -> dict[str, str]:
        """A fresh token per use: the fuzzed logout and token routes may revoke the one they were given."""
        if caller == "anonymous":
            return {}
        token, _ = self.state.identity.create_token(self.users[caller], "fuzz", ["*"], 1)
        return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def worker(harbor_bundle: Any, harbor_backend: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    tmp = tmp_path_factory.mktemp("http-fuzz")
    settings_ = Settings(
        database_url=f"sqlite:///{tmp / 'voxgate.db'}", data_dir=tmp / "data", environment="dev", **NO_THROTTLES
    )
    app = create_app(settings_, [harbor_bundle])
    with serving(app) as base, watching() as log:
        state = app.state.voxgate
        schema = schemathesis.openapi.from_url(f"{base}/openapi.json", timeout=30)
        yield Worker(base, state, role_users(state.identity), schema, log)


@pytest.fixture(autouse=True)
def no_late_tracebacks(worker: Worker) -> Iterator[None]:
    """A traceback logged after its example was judged (a background write, say) still fails the test."""
    yield
    time.sleep(0.5)
    late = worker.log.take()
    assert late == [], "\n".join(late)


def _known_path_parameters(path: str, session_id: str) -> dict[str, str]:
    values = {"agent": AGENT, "env": "dev", "session_id": session_id}
    return {name: values[name] for name in re.findall(r"\{(\w+)\}", path) if name in values}


def _strategy(operation: Any, session_id: str) -> Any:
    kinds = [operation.as_strategy(GenerationMode.POSITIVE), operation.as_strategy(GenerationMode.NEGATIVE)]
    known = _known_path_parameters(operation.path, session_id)
    if known:
        kinds += [
            operation.as_strategy(mode, path_parameters=known)
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
        ]
    return st.one_of(kinds)


def _drawn(operation: Any, session_id: str) -> list[Any]:
    """The requests Hypothesis draws for one operation (derandomized, so the same for every caller):
    drawn once and sent as each caller, not drawn again per caller."""

    cases: list[Any] = []

    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=_strategy(operation, session_id))
    def draw(case: Any) -> None:
        cases.append(case)

    draw()
    return cases


def _fuzz(worker: Worker, operation: Any, caller: str, cases: list[Any]) -> list[str]:
    """What went wrong for one operation and caller: server errors, empty 4xx, tracebacks."""
    problems: list[str] = []
    for case in cases:
        response = case.call(base_url=worker.base, session=worker.http, headers=worker.headers(caller), timeout=60)
        shown = f"{operation.label} as {caller}: {case.as_curl_command()}"
        traces = worker.log.take(expect=response.status_code >= 500)
        known = bool(traces) and all(any(re.search(sig, t) for sig in KNOWN_SERVER_ERRORS) for t in traces)
        if response.status_code >= 500 and not known:
            problems.append(f"{response.status_code} {shown}\n    {response.text[:300]}")
        elif 400 <= response.status_code < 500 and not response.content:
            problems.append(f"{response.status_code} without a body: {shown}")
        if not known:
            problems.extend(f"traceback after {shown}\n{trace}" for trace in traces)
    return problems


def _operations(worker: Worker) -> list[Any]:
    return [result.ok() for result in worker.schema.get_all_operations()]


@pytest.fixture(scope="module")
def session_id(worker: Worker) -> str:
    """A real chat session, so that session routes get past their lookup too."""
    r = worker.http.post(f"{worker.base}/api/agents/{AGENT}/sessions", json={}, timeout=60)
    assert r.status_code in (200, 201), r.text
    return str(r.json()["session_id"])


def test_the_schema_lists_the_routes(worker: Worker) -> None:
    labels = {op.label for op in _operations(worker)}
    assert len(labels) > 50
    for expected in (
        "POST /api/agents/{agent}/sessions",
        "POST /api/auth/login",
        "POST /api/environments/{env}/bundles",
        "POST /api/privacy/erase",
        "GET /api/audit/events",
        "GET /health",
    ):
        assert expected in labels


@pytest.fixture(scope="module")
def drawn(worker: Worker, session_id: str) -> dict[str, list[Any]]:
    """Each operation's drawn requests, by label (drawn at its first use)."""
    return {}


@pytest.mark.parametrize("caller", CALLERS)
def test_every_operation_answers_without_a_server_error(
    worker: Worker, session_id: str, drawn: dict[str, list[Any]], caller: str
) -> None:
    problems = []
    for operation in _operations(worker):
        if operation.label not in drawn:
            drawn[operation.label] = _drawn(operation, session_id)
        problems += _fuzz(worker, operation, caller, drawn[operation.label])
    assert problems == [], "\n".join(problems)
    health = worker.http.get(f"{worker.base}/health", timeout=30)
    assert health.status_code == 200 and health.json()["status"] == "ok", health.text


@pytest.mark.parametrize(
    "path",
    ["/api/usage?env=%0E", "/api/stats?env=%07", "/api/bundles/a/diff/b?environment=%08", "/api/usage?env=" + "a" * 41],
)
def test_a_denial_in_an_environment_with_a_control_character_or_a_long_name_is_a_403(worker: Worker, path: str) -> None:
    r = worker.http.get(worker.base + path, headers=worker.headers("desk_agent"), timeout=30)  # denied all four
    worker.log.take(expect=r.status_code >= 500)
    assert r.status_code in (403, 404, 422), r.text


def test_unbinding_a_role_of_a_user_id_with_a_control_character_is_not_a_500(worker: Worker) -> None:
    r = worker.http.delete(
        f"{worker.base}/api/users/%09nobody/roles",
        headers=worker.headers("admin"),
        json={"environment": "dev", "role": "tester"},
        timeout=30,
    )
    worker.log.take(expect=r.status_code >= 500)
    assert r.status_code in (204, 404, 422), r.text


@pytest.mark.parametrize("caller", ["anonymous", "admin", "desk_agent"])
def test_routes_outside_the_schema_answer_without_a_server_error(worker: Worker, caller: str) -> None:
    problems = []
    for path in UNLISTED:
        for method in ("GET", "HEAD", "POST"):
            r = worker.http.request(
                method, worker.base + path, headers=worker.headers(caller), timeout=60, allow_redirects=False
            )
            if r.status_code >= 500:
                problems.append(f"{r.status_code} {method} {path} as {caller}: {r.text[:200]}")
            problems += [f"traceback after {method} {path}\n{t}" for t in worker.log.take()]
    assert problems == [], "\n".join(problems)
    assert worker.http.get(f"{worker.base}/health", timeout=30).status_code == 200
