"""The whole release, through the real API: build → dev → test → publish request → approval → prod → rollback.

A maker builds and deploys, promotes to test and asks for a publish; the maker's own approval
or publish is refused (403, audited); a different approver approves and publishes; a new
conversation on the prod worker uses the new digest; rollback restores the previous one in one
step; the audit chain verifies. Runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text

from tests.helpers.org import Org, add_user, bearer, upload_built
from tests.helpers.paths import HARBOR_AGENT
from tests.helpers.policies import mechanics_policies
from voxgate.api.app import create_app
from voxgate.config import Settings
from voxgate.governance import bundle_store
from voxgate.governance.identity import Identity
from voxgate.store.db import Database
from voxgate.store.models import AuditEventRow, SessionRow


@pytest.fixture()
def org(db_url: str, tmp_path: Path) -> Org:
    return Org(db_url, tmp_path / "data")


@pytest.fixture()
def agent_dir(tmp_path: Path) -> Path:
    target = tmp_path / "harbor-support"
    shutil.copytree(HARBOR_AGENT, target)
    return target


@pytest.fixture()
def client(org: Org) -> Iterator[TestClient]:
    with TestClient(create_app(org.settings, [])) as c:
        yield c


def _release_to_prod(client: TestClient, org: Org, digest: str, reason: str) -> dict[str, Any]:
    maker, approver = bearer(org.maker), bearer(org.approver)
    r = client.post(
        "/api/environments/dev/agents/harbor-support/deploy", json={"digest": digest, "reason": reason}, headers=maker
    )
    assert r.status_code == 200, r.text
    r = client.post("/api/environments/test/agents/harbor-support/promote", json={"reason": reason}, headers=maker)
    assert r.status_code == 200, r.text
    assert r.json()["evidence"]["gates"] == []  # recorded: no gates ran yet
    r = client.post(
        "/api/environments/prod/agents/harbor-support/publish-requests", json={"reason": reason}, headers=maker
    )
    assert r.status_code == 201, r.text
    request = r.json()
    assert request["digest"] == digest and request["status"] == "pending"
    # the maker may neither approve nor publish their own bundle
    r = client.post(f"/api/publish-requests/{request['id']}/approve", json={"comment": "lgtm"}, headers=maker)
    assert r.status_code == 403, r.text
    r = client.post(f"/api/publish-requests/{request['id']}/publish", json={}, headers=maker)
    assert r.status_code == 403, r.text
    # a different approver approves, with a comment, and publishes
    r = client.post(
        f"/api/publish-requests/{request['id']}/approve", json={"comment": "checked the diff"}, headers=approver
    )
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "approved"
    r = client.post(f"/api/publish-requests/{request['id']}/publish", json={}, headers=approver)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def _new_session_digest(client: TestClient, org: Org) -> str:
    r = client.post("/api/agents/harbor-support/sessions")
    assert r.status_code == 201, r.text
    sid = r.json()["session_id"]
    client.post(f"/api/sessions/{sid}/end")
    db = Database(org.db_url)
    try:
        with db.orm() as orm:
            row = orm.get(SessionRow, sid)
            assert row is not None and row.environment == "prod"
            return row.bundle_digest or ""
    finally:
        db.dispose()


def test_the_whole_release(client: TestClient, org: Org, agent_dir: Path) -> None:
    # nothing is published yet: prod serves no agent
    assert client.post("/api/agents/harbor-support/sessions").status_code == 404
    v1 = org.build(agent_dir)
    r = client.post("/api/me/keys", json={"public_key": org.key.public.b64}, headers=bearer(org.maker))
    assert r.status_code == 201, r.text
    stored = upload_built(client, org, v1)
    assert stored["digest"] == v1.digest
    published = _release_to_prod(client, org, v1.digest, "first release")
    assert published["action"] == "publish" and published["digest"] == v1.digest
    assert _new_session_digest(client, org) == v1.digest

    # version 2: a changed greeting goes through the same pipeline
    agent_yaml = agent_dir / "agent.yaml"
    agent_yaml.write_text(
        agent_yaml.read_text()
        .replace("version: 1.0.0", "version: 1.1.0")
        .replace("How can I help you today?", "What can I do for you today?")
    )
    v2 = org.build(agent_dir)
    assert v2.digest != v1.digest
    upload_built(client, org, v2)
    # a conversation that started on v1 ...
    ongoing = client.post("/api/agents/harbor-support/sessions").json()
    assert "How can I help you today?" in ongoing["greeting"]
    _release_to_prod(client, org, v2.digest, "friendlier greeting")
    assert _new_session_digest(client, org) == v2.digest
    # ... finishes on v1 while new ones take v2
    turn = client.post(f"/api/sessions/{ongoing['session_id']}/turns", json={"text": "what are your opening hours"})
    assert turn.status_code == 200, turn.text
    client.post(f"/api/sessions/{ongoing['session_id']}/end")
    db = Database(org.db_url)
    with db.orm() as orm:
        assert orm.get(SessionRow, ongoing["session_id"]).bundle_digest == v1.digest  # type: ignore[union-attr]
    db.dispose()
    r = client.post("/api/agents/harbor-support/sessions")
    assert "What can I do for you today?" in r.json()["greeting"]

    # the diff between the two bundles names the change
    diff = client.get(f"/api/bundles/{v1.digest}/diff/{v2.digest}", headers=bearer(org.auditor))
    assert diff.status_code == 200 and "What can I do for you today?" in diff.text

    # the maker cannot roll back prod; the operator can, in one step, to the previous digest
    r = client.post(
        "/api/environments/prod/agents/harbor-support/rollback", json={"reason": "x"}, headers=bearer(org.maker)
    )
    assert r.status_code == 403
    r = client.post(
        "/api/environments/prod/agents/harbor-support/rollback",
        json={"reason": "complaints"},
        headers=bearer(org.operator),
    )
    assert r.status_code == 200, r.text
    assert r.json()["digest"] == v1.digest and r.json()["previous_digest"] == v2.digest
    assert _new_session_digest(client, org) == v1.digest

    history = client.get("/api/environments/prod/releases", headers=bearer(org.auditor)).json()
    assert [h["action"] for h in history] == ["rollback", "publish", "publish"]
    assert history[1]["evidence"]["approved_by"] != org.maker_id

    # the audit chain holds every step, the refusals included, and verifies
    verify = client.get("/api/audit/verify", headers=bearer(org.auditor)).json()
    assert verify["ok"] is True, verify
    db = Database(org.db_url)
    with db.orm() as orm:
        actions = [a for (a,) in orm.execute(select(AuditEventRow.action).order_by(AuditEventRow.seq))]
        denied = orm.execute(select(AuditEventRow.data).where(AuditEventRow.action == "auth.denied")).all()
    db.dispose()
    for step in (
        "bundle.upload",
        "release.deploy",
        "release.promote",
        "publish.request",
        "publish.approve",
        "release.publish",
        "release.rollback",
    ):
        assert step in actions, step
    assert any("bundle.publish" in d for (d,) in denied) and any("publish.approve" in d for (d,) in denied)


def test_a_tampered_stored_bundle_is_not_served(client: TestClient, org: Org, agent_dir: Path) -> None:
    v1 = org.build(agent_dir)
    r = client.post("/api/me/keys", json={"public_key": org.key.public.b64}, headers=bearer(org.maker))
    assert r.status_code == 201, r.text
    upload_built(client, org, v1)
    _release_to_prod(client, org, v1.digest, "first")
    # someone with database access points the connector elsewhere inside the stored archive
    files, manifest = bundle_store.read_archive(v1.archive)
    files["agent.yaml"] = files["agent.yaml"].replace(b"127.0.0.1", b"203.0.113.9")
    forged = bundle_store.make_archive(files, manifest["content"] if "content" in manifest else manifest)
    db = Database(org.db_url)
    with db.engine.begin() as conn:
        conn.execute(text("UPDATE bundles SET archive = :a WHERE digest = :d"), {"a": forged, "d": v1.digest})
    db.dispose()
    # a fresh worker (nothing cached) refuses to serve it
    with TestClient(create_app(org.settings, [])) as fresh:
        r = fresh.post("/api/agents/harbor-support/sessions")
        assert r.status_code == 503, r.text
        assert "integrity" in r.text or "verif" in r.text


@pytest.mark.sqlite_only  # the change window is policy, not storage
def test_publishing_outside_the_change_window_needs_an_admin_override(
    db_url: str, tmp_path: Path, agent_dir: Path
) -> None:
    import datetime as dt

    from voxgate.governance.environments import WEEKDAYS

    policies = mechanics_policies(tmp_path)
    # prod changes only during one minute of tomorrow: closed now, whenever the test runs
    tomorrow = WEEKDAYS[(dt.datetime.now(dt.UTC).weekday() + 1) % 7]
    env_file = policies / "environments.yaml"
    env_file.write_text(
        env_file.read_text()
        .replace("  prod:\n    tier: production\n", "  prod:\n    tier: production\n", 1)
        .replace(
            "    change_windows: []\n    secret_scope: {}\n    settings:\n      retention_days: 90",
            f"    change_windows: [{{days: [{tomorrow}], start: '03:00', end: '03:01'}}]\n"
            "    secret_scope: {}\n    settings:\n      retention_days: 90",
            1,
        )
    )
    org = Org(db_url, tmp_path / "data")
    org.settings = Settings(data_dir=tmp_path / "data", database_url=db_url, environment="prod", policy_dir=policies)
    db = Database(db_url)
    identity = Identity(db)
    admin = add_user(identity, "ada", ("*", "admin"))
    db.dispose()
    with TestClient(create_app(org.settings, [])) as client:
        assert client.app.state.voxgate.governance.get("prod").change_windows  # type: ignore[attr-defined]
        r = client.post("/api/me/keys", json={"public_key": org.key.public.b64}, headers=bearer(org.maker))
        assert r.status_code == 201
        v1 = org.build(agent_dir)
        upload_built(client, org, v1)
        maker, approver = bearer(org.maker), bearer(org.approver)
        client.post("/api/environments/dev/agents/harbor-support/deploy", json={"digest": v1.digest}, headers=maker)
        client.post("/api/environments/test/agents/harbor-support/promote", json={}, headers=maker)
        request = client.post(
            "/api/environments/prod/agents/harbor-support/publish-requests", json={}, headers=maker
        ).json()
        assert (
            client.post(
                f"/api/publish-requests/{request['id']}/approve", json={"comment": "ok"}, headers=approver
            ).status_code
            == 200
        )
        # the approver is refused outside the window, and may not override it
        assert (
            client.post(f"/api/publish-requests/{request['id']}/publish", json={}, headers=approver).status_code == 403
        )
        assert (
            client.post(
                f"/api/publish-requests/{request['id']}/publish", json={"override_window": True}, headers=approver
            ).status_code
            == 403
        )
        # an admin without the override flag gets a clear refusal; with it, the publish goes through, audited
        r = client.post(f"/api/publish-requests/{request['id']}/publish", json={}, headers=bearer(admin))
        assert r.status_code == 409 and r.json()["detail"]["rule"] == "release.change_window"
        r = client.post(
            f"/api/publish-requests/{request['id']}/publish",
            json={"override_window": True, "reason": "hotfix"},
            headers=bearer(admin),
        )
        assert r.status_code == 200, r.text
        assert r.json()["evidence"]["change_window_override"] is True
        events = client.get(
            "/api/audit/events", params={"action": "release.override_window"}, headers=bearer(org.auditor)
        ).json()
        assert len(events) == 1


@pytest.mark.sqlite_only  # the order of steps is policy, not storage
def test_a_step_out_of_order_names_the_missing_step(client: TestClient, org: Org, agent_dir: Path) -> None:
    maker, approver = bearer(org.maker), bearer(org.approver)
    r = client.post("/api/environments/test/agents/harbor-support/promote", json={}, headers=maker)
    assert r.status_code == 409 and "deploy it there" in r.json()["detail"]["error"], r.text
    client.post("/api/me/keys", json={"public_key": org.key.public.b64}, headers=maker)
    digest = upload_built(client, org, org.build(agent_dir))["digest"]
    client.post("/api/environments/dev/agents/harbor-support/deploy", json={"digest": digest}, headers=maker)
    r = client.post("/api/environments/prod/agents/harbor-support/publish-requests", json={}, headers=maker)
    assert r.status_code == 409 and "promote it there" in r.json()["detail"]["error"], r.text
    client.post("/api/environments/test/agents/harbor-support/promote", json={}, headers=maker)
    request = client.post(
        "/api/environments/prod/agents/harbor-support/publish-requests", json={}, headers=maker
    ).json()
    r = client.post(f"/api/publish-requests/{request['id']}/publish", json={}, headers=approver)
    assert r.status_code == 409 and "needs an approver's approval first" in r.json()["detail"]["error"], r.text
    # a first release rolled back withdraws the agent; then there is nothing left to roll back
    client.post(f"/api/publish-requests/{request['id']}/approve", json={"comment": "ok"}, headers=approver)
    assert client.post(f"/api/publish-requests/{request['id']}/publish", json={}, headers=approver).status_code == 200
    assert client.post("/api/agents/harbor-support/sessions").status_code == 201
    operator = bearer(org.operator)
    r = client.post("/api/environments/prod/agents/harbor-support/rollback", json={"reason": "x"}, headers=operator)
    assert r.status_code == 200 and r.json()["digest"] is None and r.json()["previous_digest"] == digest
    assert client.post("/api/agents/harbor-support/sessions").status_code == 404  # new callers: not served
    assert client.get("/health").json()["served"] == []
    # a phone call to the withdrawn agent is answered with the unavailable message, then hung up
    with client.websocket_connect("/twilio/harbor-support") as ws:
        ws.send_json({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        ws.send_json(
            {
                "event": "start",
                "streamSid": "MZ1",
                "start": {
                    "streamSid": "MZ1",
                    "callSid": "CA1",
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                },
            }
        )
        events = []
        while not events or events[-1].get("event") != "mark":
            events.append(ws.receive_json())
    assert sum(e["event"] == "media" for e in events) > 50  # seconds of speech
    assert events[-1]["mark"]["name"] == "unavailable:last"
    r = client.post("/api/environments/prod/agents/harbor-support/rollback", json={"reason": "x"}, headers=operator)
    assert r.status_code == 409 and "nothing to roll back" in r.json()["detail"]["error"]
