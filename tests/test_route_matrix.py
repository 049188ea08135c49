"""Every authorised route × every role (and an anonymous caller): expected allow or deny, zero unexpected allows.

The expectations below are written by hand from what each role is for (issue 4), not derived
from the Cedar files, so a policy that grants too much fails here. A request counts as allowed
when the policy let it through (whatever the route then answered: 404, 409 or 422 for the
deliberately empty bodies); a denial by policy carries the X-Voxgate-Denied header.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.helpers.roles import role_users
from voxgate.api.app import create_app
from voxgate.api.auth import DENIED_HEADER, ROUTE_ACTIONS
from voxgate.config import Settings
from voxgate.governance.actions import ACTIONS, ROLES
from voxgate.store.models import BundleRow, PublishRequestRow

pytestmark = pytest.mark.sqlite_only  # who may call which route: the policy decides, not the database

READ = {"bundle.read", "release.read", "environment.read", "policy.read"}
SELF = {"token.manage_own", "call.start"}  # every signed-in user may also talk to the served agents
# what each role may do in a production environment (bound on every environment)
PROD: dict[str, set[str]] = {
    "admin": set(ACTIONS) - {"bundle.deploy", "bundle.promote"},
    "maker": SELF | READ | {"bundle.upload", "publish.request"},
    "tester": SELF | READ,
    "approver": SELF | READ | {"publish.approve", "bundle.publish"},
    "operator": SELF
    | {
        "release.rollback",
        "bundle.publish",
        "voice.stats",
        "cluster.read",
        "analytics.read",
        "incident.read",
        "incident.manage",
        "handoff.read",
        "release.read",
        "environment.read",
        "handoff.accept",
        "desk.manage",
    },
    "desk_agent": SELF | {"handoff.read", "handoff.accept"},
    "auditor": SELF | READ | {"audit.read", "session.read", "analytics.read", "incident.read"},
    "compliance_officer": SELF
    | READ
    | {
        "audit.read",
        "session.read",
        "analytics.read",
        "incident.read",
        "dlp.exception.grant",
        "privacy.manage",
        "retention.run",
        "recording.read",
    },
    "caller": {"call.start"},
}
# in a development environment makers also deploy and promote
DEV = {role: set(allowed) for role, allowed in PROD.items()}
DEV["maker"] |= {"bundle.deploy", "bundle.promote"}
DEV["admin"] |= {"bundle.deploy", "bundle.promote"}


@pytest.fixture()
def setup(db_url: str, tmp_path: Path, harbor_bundle: object) -> Iterator[tuple[TestClient, dict[str, str], str]]:
    settings = Settings(database_url=db_url, data_dir=tmp_path / "data", environment="dev")
    with TestClient(create_app(settings, [harbor_bundle])) as client:  # type: ignore[list-item]
        state = client.app.state.voxgate  # type: ignore[attr-defined]
        tokens = {
            role: state.identity.create_token(user_id, "matrix", ["*"], 1)[0]
            for role, user_id in role_users(state.identity).items()
        }
        author = state.identity.create_user("someone-else", "a long enough password")
        # a pending publish request by another user, so approve/publish reach their policy checks
        with state.db.orm() as orm, orm.begin():
            orm.add(
                BundleRow(
                    digest="sha256:" + "0" * 64,
                    agent="harbor-support",
                    version="1",
                    author_id=author.id,
                    built_for="prod",
                    key_id="k",
                    signature="s",
                    manifest={},
                    archive=b"",
                )
            )
            orm.add(
                PublishRequestRow(
                    id="req1",
                    agent="harbor-support",
                    digest="sha256:" + "0" * 64,
                    source_environment="test",
                    target_environment="prod",
                    requested_by=author.id,
                )
            )
        yield client, tokens, author.id


def _path(template: str, env: str, user_id: str) -> str:
    values = {
        "env": env,
        "agent": "harbor-support",
        "request_id": "req1",
        "digest": "sha256:nothing",
        "other": "sha256:nothing",
        "user_id": user_id,
        "token_id": "none",
        "session_id": "none",
        "incident_id": "none",
        "status": "acknowledged",
        "callback_id": "none",
        "exception_id": "none",
    }
    return re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], template)


def test_every_route_has_an_action() -> None:
    # the routers registered their actions when voxgate.api.app was imported above
    assert ROUTE_ACTIONS, "no guarded routes registered"
    assert set(ROUTE_ACTIONS.values()) <= set(ACTIONS)
    # release.override_window is asked inside publish and rollback when an override is requested
    covered = set(ROUTE_ACTIONS.values()) | {"release.override_window"}
    assert covered == set(ACTIONS), f"actions without a route: {set(ACTIONS) - covered}"


def test_console_routes_reuse_existing_actions() -> None:
    # the admin console's own routes (api/console.py) and the DLP revoke it offers
    assert ROUTE_ACTIONS[("GET", "/api/me/permissions")] == "token.manage_own"
    assert ROUTE_ACTIONS[("GET", "/api/environments/{env}")] == "environment.read"
    assert ROUTE_ACTIONS[("GET", "/api/stats/series")] == "analytics.read"
    assert ROUTE_ACTIONS[("DELETE", "/api/environments/{env}/dlp/exceptions/{exception_id}")] == "dlp.exception.grant"
    # the cluster's workers and calls against the limits (api/cluster.py): admins and operators
    assert ROUTE_ACTIONS[("GET", "/api/cluster")] == "cluster.read"


def test_route_role_matrix(setup: tuple[TestClient, dict[str, str], str]) -> None:
    client, tokens, user_id = setup
    unexpected_allows: list[str] = []
    unexpected_denials: list[str] = []
    checked = 0
    for (method, template), action in sorted(ROUTE_ACTIONS.items()):
        envs = ["dev", "prod"] if "{env}" in template else ["dev"]
        for env in envs:
            expected = DEV if env == "dev" else PROD
            if "{request_id}" in template:
                expected = PROD  # the request targets prod
            for who in [*ROLES, "caller"]:
                headers = {"Authorization": f"Bearer {tokens[who]}"} if who != "caller" else {}
                path = _path(template, env, user_id)
                body = None if method in ("GET",) else {}
                r = client.request(method, path, headers=headers, json=body)
                denied = DENIED_HEADER.lower() in {k.lower() for k in r.headers} or r.status_code == 401
                allowed = action in expected[who]
                if not denied and not allowed:
                    unexpected_allows.append(f"{who} {method} {path} ({action}) -> {r.status_code}")
                if denied and allowed:
                    unexpected_denials.append(f"{who} {method} {path} ({action}) -> {r.status_code}")
                checked += 1
    assert checked > 200
    assert unexpected_allows == []
    assert unexpected_denials == []


def test_denials_are_audited(setup: tuple[TestClient, dict[str, str], str]) -> None:
    client, tokens, _ = setup
    r = client.post(
        "/api/environments/prod/agents/harbor-support/rollback",
        json={},
        headers={"Authorization": f"Bearer {tokens['maker']}"},
    )
    assert r.status_code == 403
    events = client.get(
        "/api/audit/events", params={"action": "auth.denied"}, headers={"Authorization": f"Bearer {tokens['auditor']}"}
    ).json()
    assert any(
        e["data"].get("attempted") == "release.rollback"
        if isinstance(e["data"], dict)
        else "release.rollback" in e["data"]
        for e in events
    )
