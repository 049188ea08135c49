"""Gates and the readiness checklist: evidence stored per digest, publishing refused without it, and
the 18 items computed from configuration, policy decisions and evidence."""

from __future__ import annotations

import asyncio
import base64
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.helpers.policies import policy_copy, relax_prod
from voxgate.api.app import create_app
from voxgate.api.gate_worker import LocalWorkers
from voxgate.bundle.models import BundleSource
from voxgate.config import Settings
from voxgate.governance import bundle_store, checklist, gates
from voxgate.governance.environments import GateSpec, load_governance
from voxgate.governance.identity import Identity
from voxgate.governance.principals import Principal
from voxgate.runtime.engine import AgentRuntime
from voxgate.signing import KeyPair
from voxgate.store.db import Database
from voxgate.testing.gates import RUNNERS
from voxgate.testing.results import SuiteResult

# the gate suites (speech, the red team, the checklist) find the same on any database, and
# publishing on their evidence runs on both databases in test_releases.py
pytestmark = pytest.mark.sqlite_only

HARBOR_AGENT = Path(__file__).resolve().parents[1] / "examples" / "harbor-telecom" / "agents" / "harbor-support"


def _policies(tmp: Path, prod_extra: str) -> Path:
    return policy_copy(tmp, lambda text: relax_prod(text, prod_extra))


class World:
    def __init__(self, db_url: str, tmp: Path, prod_extra: str):
        self.policies = _policies(tmp, prod_extra)
        self.settings = Settings(
            data_dir=tmp / "data", database_url=db_url, environment="prod", policy_dir=self.policies
        )
        self.config = load_governance(self.policies)
        db = Database(db_url)
        db.migrate()
        identity = Identity(db)
        self.tokens: dict[str, str] = {}
        for name, env, role in (("mia", "*", "maker"), ("aaron", "prod", "approver")):
            user = identity.create_user(name, "a long enough password")
            identity.bind_role(user.id, env, role, None)
            self.tokens[name], _ = identity.create_token(user.id, "t", ["*"], 1)
            if name == "mia":
                self.maker_id = user.id
        db.dispose()
        self.key = KeyPair.generate()
        self.agent_dir = tmp / "harbor-support"
        shutil.copytree(HARBOR_AGENT, self.agent_dir)

    def h(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}

    def ship_to_test(self, client: TestClient, version: str) -> str:
        yaml = self.agent_dir / "agent.yaml"
        text = yaml.read_text()
        yaml.write_text(text.replace(text.split("version: ", 1)[1].split("\n", 1)[0], version, 1))
        built = bundle_store.build_bundle(self.agent_dir, self.config.get("prod"), [], self.key, self.maker_id)
        client.post("/api/me/keys", json={"public_key": self.key.public.b64}, headers=self.h("mia"))
        r = client.post(
            "/api/environments/dev/bundles",
            headers=self.h("mia"),
            json={
                "archive": base64.b64encode(built.archive).decode(),
                "signature": built.signature,
                "key_id": built.key_id,
                "manifest": built.manifest,
            },
        )
        assert r.status_code == 201, r.text
        for path, body in (
            ("dev/agents/harbor-support/deploy", {"digest": built.digest}),
            ("test/agents/harbor-support/promote", {}),
        ):
            r = client.post(f"/api/environments/{path}", json=body, headers=self.h("mia"))
            assert r.status_code == 200, r.text
        return built.digest

    def approved_request(self, client: TestClient) -> str:
        r = client.post("/api/environments/prod/agents/harbor-support/publish-requests", json={}, headers=self.h("mia"))
        assert r.status_code == 201, r.text
        rid = r.json()["id"]
        assert (
            client.post(
                f"/api/publish-requests/{rid}/approve", json={"comment": "ok"}, headers=self.h("aaron")
            ).status_code
            == 200
        )
        return rid  # type: ignore[no-any-return]


def _run_gate(client: TestClient, world: World, digest: str, name: str) -> gates.GateOutcome:
    state = client.app.state.voxgate  # type: ignore[attr-defined]
    stored = bundle_store.load_stored(state.db, digest)
    spec = next(s for s in world.config.get("prod").settings.gates if s.name == name)
    ctx = gates.GateContext(
        digest=digest,
        bundle=stored.source,
        target=world.config.get("prod"),
        ran_in=world.config.get("test"),
        spec=spec,
        runtime_factory=lambda: AgentRuntime(stored.source, environment="test", digest=digest),
        db=state.db,
        releases=state.releases,
        actor=Principal(kind="user", id="gate-runner"),
    )
    return asyncio.run(gates.run_gate(ctx, RUNNERS, actor="user:gate-runner", audit=state.audit))


@pytest.fixture()
def gated(db_url: str, tmp_path: Path) -> Iterator[tuple[TestClient, World]]:
    world = World(db_url, tmp_path, "      gates: [rollback]\n      checklist: {required: []}\n")
    with TestClient(create_app(world.settings, [])) as client:
        yield client, world


def test_publishing_needs_the_gates_passed_on_that_digest(gated: tuple[TestClient, World]) -> None:
    client, world = gated
    first = world.ship_to_test(client, "1.0.0")
    candidate = world.ship_to_test(client, "1.1.0")
    rid = world.approved_request(client)
    r = client.post(f"/api/publish-requests/{rid}/publish", json={}, headers=world.h("aaron"))
    assert r.status_code == 409 and r.json()["detail"]["rule"] == "gates.not_passed", r.text
    # the rollback rehearsal runs in test: previous version, smoke, candidate back, smoke
    outcome = _run_gate(client, world, candidate, "rollback")
    assert outcome.status == "passed", outcome.suite
    state = client.app.state.voxgate  # type: ignore[attr-defined]
    assert state.releases.active("test", "harbor-support") == candidate  # the candidate is back
    assert [r.action for r in state.releases.history("test", "harbor-support")][:2] == ["rehearsal", "rehearsal"]
    # evidence is per digest: the older bundle has none
    assert gates.missing_gates(state.db, first, world.config.get("prod")) == ["rollback: never ran on this digest"]
    r = client.post(f"/api/publish-requests/{rid}/publish", json={}, headers=world.h("aaron"))
    assert r.status_code == 200, r.text
    assert r.json()["evidence"]["gates"][0] == {"gate": "rollback", "run_id": outcome.run_id, "status": "passed"}


def test_a_first_release_rehearses_rollback_to_nothing_served(gated: tuple[TestClient, World]) -> None:
    client, world = gated
    only = world.ship_to_test(client, "1.0.0")
    outcome = _run_gate(client, world, only, "rollback")
    assert outcome.status == "passed", outcome.suite
    assert outcome.suite["cases"][0]["name"] == "withdraw the first release: no version is served"
    state = client.app.state.voxgate  # type: ignore[attr-defined]
    history = state.releases.history("test", "harbor-support")
    # withdrawn (nothing active: new callers get no agent), then the candidate back
    assert [(r.action, r.digest) for r in history[:2]] == [("rehearsal", only), ("rehearsal", None)]
    assert state.releases.active("test", "harbor-support") == only
    rid = world.approved_request(client)
    r = client.post(f"/api/publish-requests/{rid}/publish", json={}, headers=world.h("aaron"))
    assert r.status_code == 200, r.text


def test_a_failed_gate_run_is_evidence_too(gated: tuple[TestClient, World]) -> None:
    client, world = gated
    only = world.ship_to_test(client, "1.0.0")
    state = client.app.state.voxgate  # type: ignore[attr-defined]
    state.releases.rehearse("test", "harbor-support", None, Principal(kind="user", id="gate-runner"))
    outcome = _run_gate(client, world, only, "rollback")  # the candidate is not what test serves
    assert outcome.status == "failed"
    assert "not the candidate" in outcome.suite["cases"][0]["failures"][0]
    state.releases.rehearse("test", "harbor-support", only, Principal(kind="user", id="gate-runner"))
    rid = world.approved_request(client)
    r = client.post(f"/api/publish-requests/{rid}/publish", json={}, headers=world.h("aaron"))
    assert r.status_code == 409 and "last run failed" in r.text


def test_publishing_is_blocked_while_a_required_checklist_item_fails(db_url: str, tmp_path: Path) -> None:
    world = World(db_url, tmp_path, "      checklist: {required: [rollback, signed_bundle]}\n")
    with TestClient(create_app(world.settings, [])) as client:
        world.ship_to_test(client, "1.0.0")
        rid = world.approved_request(client)
        r = client.post(f"/api/publish-requests/{rid}/publish", json={}, headers=world.h("aaron"))
        assert r.status_code == 409, r.text
        detail = r.json()["detail"]
        assert detail["rule"] == "checklist.failing" and "rollback" in detail["error"]
        assert "signed_bundle" not in detail["error"]  # that one passes


def test_the_checklist_lists_18_items_with_evidence(db_url: str, tmp_path: Path) -> None:
    world = World(db_url, tmp_path, "      gates: [escalation, load, rollback]\n      checklist: {required: all}\n")
    with TestClient(create_app(world.settings, [])) as client:
        digest = world.ship_to_test(client, "1.0.0")
        state = client.app.state.voxgate  # type: ignore[attr-defined]
        report = checklist.evaluate(state.db, state.governance, "harbor-support", "prod", policy=state.policy)
    assert report.digest == digest
    assert [i.id for i in report.items] == list(checklist.ITEM_IDS) and len(report.items) == 18
    status = {i.id: i.status for i in report.items}
    for computed in ("environments", "no_direct_publish", "approval", "credentials", "signed_bundle", "channel_auth"):
        assert status[computed] == "pass", (computed, report.to_dict())
    for operations in ("analytics", "alerts", "incidents", "usage"):  # redaction, packaged rules, procedure, quotas
        assert status[operations] == "pass", (operations, report.to_dict())
    assert status["escalation_tested"] == "fail" and status["latency_validated"] == "fail"  # gates never ran
    assert all(i.required for i in report.items) and report.blocking()  # by default every item is required
    assert "<table>" in report.to_html() and "harbor-support" in report.to_html()
    # the same report over the API, for anyone who may read releases
    with TestClient(create_app(world.settings, [])) as client:
        api = client.get("/api/environments/prod/agents/harbor-support/checklist", headers=world.h("mia")).json()
        assert [i["id"] for i in api["items"]] == list(checklist.ITEM_IDS) and api["ready"] is False
        runs = client.get("/api/environments/prod/agents/harbor-support/gates", headers=world.h("mia")).json()
        assert runs["digest"] == digest and {g["status"] for g in runs["gates"]} == {"never_ran"}
        assert client.get("/api/environments/prod/agents/harbor-support/checklist").status_code == 401


def test_harbor_passes_its_gates_on_test(db_url: str, tmp_path: Path, harbor_backend: object) -> None:
    from voxgate.governance import dlp
    from voxgate.testing.conversations import load_fixtures

    world = World(
        db_url,
        tmp_path,
        "      gates: [conversations, escalation, red_team, data_access]\n      checklist: {required: []}\n",
    )
    fixtures = load_fixtures(
        {"customer": "harbor_backend:demo_credentials", "outage": "harbor_backend.data:draw_outages"}
    )
    with TestClient(create_app(world.settings, [])) as client:
        digest = world.ship_to_test(client, "1.0.0")
        state = client.app.state.voxgate  # type: ignore[attr-defined]
        stored = bundle_store.load_stored(state.db, digest)
        test_env = world.config.get("test")

        def factory() -> AgentRuntime:
            return AgentRuntime(
                stored.source,
                environment="test",
                digest=digest,
                host_policy=dlp.host_policy_for(
                    state.db, test_env, agent="harbor-support", connectors=stored.source.agent.connectors
                ),
            )

        outcomes = {}
        for spec in world.config.get("prod").settings.gates:
            ctx = gates.GateContext(
                digest=digest,
                bundle=stored.source,
                target=world.config.get("prod"),
                ran_in=test_env,
                spec=spec,
                runtime_factory=factory,
                fixtures=fixtures,
                db=state.db,
                releases=state.releases,
                actor=Principal(kind="user", id="gate-runner"),
            )
            outcomes[spec.name] = asyncio.run(gates.run_gate(ctx, RUNNERS, actor="user:gate-runner", audit=state.audit))
        assert {name: o.status for name, o in outcomes.items()} == dict.fromkeys(outcomes, "passed"), {
            n: o.suite.get("error") or [c["failures"] for c in o.suite["cases"] if not c["passed"]][:3]
            for n, o in outcomes.items()
        }
        assert outcomes["data_access"].suite["metrics"]["connector_calls"] > 0
        assert gates.missing_gates(state.db, digest, world.config.get("prod")) == []
        rid = world.approved_request(client)
        r = client.post(f"/api/publish-requests/{rid}/publish", json={}, headers=world.h("aaron"))
        assert r.status_code == 200, r.text
        assert {g["gate"] for g in r.json()["evidence"]["gates"]} == set(outcomes)


@pytest.mark.slow
def test_the_load_gate_drives_voice_calls_against_test(db_url: str, tmp_path: Path, harbor_backend: object) -> None:
    """Real simulated callers over the Twilio-compatible socket of a worker serving `test`."""
    world = World(
        db_url,
        tmp_path,
        "      gates: [{name: load, calls: 2, duration_s: 8, p95_ms: 5000}]\n      checklist: {required: []}\n",
    )
    with TestClient(create_app(world.settings, [])) as client:
        digest = world.ship_to_test(client, "1.0.0")
        state = client.app.state.voxgate  # type: ignore[attr-defined]
        stored = bundle_store.load_stored(state.db, digest)
        spec = world.config.get("prod").settings.gates[0]
        ctx = gates.GateContext(
            digest=digest,
            bundle=stored.source,
            target=world.config.get("prod"),
            ran_in=world.config.get("test"),
            spec=spec,
            runtime_factory=lambda: AgentRuntime(stored.source, environment="test", digest=digest),
            db=state.db,
            policy_dir=world.policies,
            start_worker=LocalWorkers(state.db.url, world.policies),
        )
        outcome = asyncio.run(gates.run_gate(ctx, RUNNERS, actor="user:gate-runner", audit=state.audit))
    metrics = outcome.suite["metrics"]
    assert metrics.get("calls", 0) >= 2, outcome.suite
    assert outcome.status == "passed", outcome.suite
    assert metrics["failed"] == 0 and metrics["voice_to_voice_ms"]["n"] > 0


def test_gates_and_checklist_from_the_command_line(db_url: str, tmp_path: Path) -> None:
    import json

    from typer.testing import CliRunner

    from voxgate.cli import app as cli

    world = World(db_url, tmp_path, "      gates: [rollback]\n      checklist: {required: all}\n")
    with TestClient(create_app(world.settings, [])) as client:
        world.ship_to_test(client, "1.0.0")
        candidate = world.ship_to_test(client, "1.1.0")
    env = {
        "VOXGATE_DATABASE_URL": db_url,
        "VOXGATE_DATA_DIR": str(tmp_path / "data"),
        "VOXGATE_POLICY_DIR": str(world.policies),
    }
    runner = CliRunner()
    result = runner.invoke(cli, ["gates", "run", "--agent", "harbor-support", "--for", "prod"], env=env)
    assert result.exit_code == 0, result.output
    assert "passed" in result.output
    status = runner.invoke(cli, ["gates", "status", "--agent", "harbor-support", "--for", "prod"], env=env)
    assert "rollback" in status.output and "passed" in status.output
    report_file = tmp_path / "readiness.html"
    result = runner.invoke(
        cli, ["checklist", "harbor-support", "--env", "prod", "--json", "--html", str(report_file)], env=env
    )
    assert result.exit_code == 1  # not ready: the escalation gate never ran, no approver signed off
    report = json.loads(result.output)
    assert report["digest"] == candidate and len(report["items"]) == 18 and report["ready"] is False
    items = {i["id"]: i for i in report["items"]}
    assert items["rollback"]["status"] == "pass" and items["escalation_tested"]["status"] == "fail"
    # whatever passes or warns says what it rests on
    assert all(i["evidence"] for i in report["items"] if i["status"] != "fail"), [
        i["id"] for i in report["items"] if i["status"] != "fail" and not i["evidence"]
    ]
    assert "sod-approver-not-author" in items["approval"]["evidence"]["probe"]["policies"]
    assert len(items["incidents"]["evidence"]["sha256"]) == 64
    assert "harbor-support" in report_file.read_text()


def test_gates_name_the_missing_database_instead_of_creating_one(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from voxgate.cli import app as cli

    env = {"VOXGATE_DATA_DIR": str(tmp_path / "nowhere"), "VOXGATE_DATABASE_URL": None}
    result = CliRunner().invoke(cli, ["gates", "run", "--agent", "harbor-support"], env=env)
    assert result.exit_code == 2 and "no voxgate database" in result.output
    assert not (tmp_path / "nowhere").exists()


def _bare_context(bundle: BundleSource, name: str) -> gates.GateContext:
    """A gate context with no database: what `run_gate` stores goes nowhere, its outcome is what we read."""
    config = load_governance()
    return gates.GateContext(
        digest="sha256:" + "0" * 64,
        bundle=bundle,
        target=config.get("prod"),
        ran_in=config.get("test"),
        spec=GateSpec(name=name),
        runtime_factory=lambda: AgentRuntime(bundle),
    )


def test_the_runners_are_handed_in_and_a_missing_one_is_evidence_of_an_error(harbor_bundle: BundleSource) -> None:
    ctx = _bare_context(harbor_bundle, "rollback")
    outcome = asyncio.run(gates.run_gate(ctx, {}, actor="user:gate-runner"))
    assert outcome.status == "error"
    # the same results an empty suite of the test tooling has, plus the reason
    assert outcome.suite == {**SuiteResult(suite="rollback").to_dict(), "error": "no runner for gate 'rollback'"}

    async def judged(_: gates.GateContext) -> SuiteResult:
        return SuiteResult(suite="rollback", metrics={"gate_passed": True})

    assert asyncio.run(gates.run_gate(ctx, {"rollback": judged}, actor="user:gate-runner")).status == "passed"


def test_gates_missing_a_service_they_need_say_which(harbor_bundle: BundleSource) -> None:
    load = asyncio.run(gates.run_gate(_bare_context(harbor_bundle, "load"), RUNNERS, actor="user:gate-runner"))
    assert load.status == "error" and "start_worker" in load.suite["error"]
    rollback = asyncio.run(gates.run_gate(_bare_context(harbor_bundle, "rollback"), RUNNERS, actor="user:gate-runner"))
    assert rollback.status == "error" and "release pipeline" in rollback.suite["error"]
