"""DELETE /api/me/tokens/{id} revokes one's own token only, and the audit log says what happened."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from tests.helpers.org import PASSWORD
from tests.helpers.policies import mechanics_policies
from voxgate.api.app import create_app
from voxgate.config import Settings
from voxgate.governance.identity import Identity
from voxgate.store.db import Database
from voxgate.store.models import ApiTokenRow, AuditEventRow


class People:
    def __init__(self, db_url: str, data_dir: Path):
        db = Database(db_url)
        db.migrate()
        identity = Identity(db)
        dora = identity.create_user("dora", PASSWORD)
        identity.bind_role(dora.id, "*", "desk_agent", None)
        mia = identity.create_user("mia", PASSWORD)
        identity.bind_role(mia.id, "dev", "maker", None)
        self.dora_id, self.mia_id = dora.id, mia.id
        self.dora, self.dora_info = identity.create_token(dora.id, "desk", ["*"], 1)
        self.mia, self.mia_info = identity.create_token(mia.id, "ci", ["*"], 1)
        db.dispose()
        self.db_url = db_url
        self.settings = Settings(
            data_dir=data_dir, database_url=db_url, environment="dev", policy_dir=mechanics_policies(data_dir.parent)
        )

    def token_row(self, token_id: str) -> ApiTokenRow:
        db = Database(self.db_url)
        try:
            with db.orm() as s:
                row = s.get(ApiTokenRow, token_id)
                assert row is not None
                s.expunge(row)
                return row
        finally:
            db.dispose()

    def revoke_events(self) -> list[AuditEventRow]:
        db = Database(self.db_url)
        try:
            with db.orm() as s:
                rows = list(
                    s.scalars(
                        select(AuditEventRow).where(AuditEventRow.action == "token.revoke").order_by(AuditEventRow.seq)
                    )
                )
                for r in rows:
                    s.expunge(r)
                return rows
        finally:
            db.dispose()


@pytest.fixture()
def people(db_url: str, tmp_path: Path) -> People:
    return People(db_url, tmp_path / "data")


@pytest.fixture()
def client(people: People) -> Iterator[TestClient]:
    with TestClient(create_app(people.settings, [])) as c:
        yield c


def _as(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_tokens_revoking_another_users_token_is_404_and_audited_as_denied(people: People, client: TestClient) -> None:
    r = client.delete(f"/api/me/tokens/{people.mia_info.id}", headers=_as(people.dora))
    assert r.status_code == 404, r.text
    assert people.token_row(people.mia_info.id).revoked_at is None
    assert client.get("/api/me", headers=_as(people.mia)).status_code == 200  # mia's token still works
    [event] = people.revoke_events()
    assert event.outcome == "denied" and event.actor.startswith(f"user:{people.dora_id}")
    assert json.loads(event.data)["token_id"] == people.mia_info.id
    assert json.loads(event.data)["reason"] == "not_yours"


def test_tokens_revoking_an_unknown_token_is_404_and_audited_as_failed(people: People, client: TestClient) -> None:
    r = client.delete("/api/me/tokens/" + "0" * 32, headers=_as(people.dora))
    assert r.status_code == 404, r.text
    long_id = "x" * 5000  # recorded by hash, never breaking the audit event's limits
    assert client.delete(f"/api/me/tokens/{long_id}", headers=_as(people.dora)).status_code == 404
    events = people.revoke_events()
    assert [(e.outcome, json.loads(e.data)["reason"]) for e in events] == [("failed", "not_found")] * 2
    assert long_id not in events[1].data


def test_tokens_revoking_ones_own_token_still_works(people: People, client: TestClient) -> None:
    _, other = people.mia, people.mia_info
    r = client.delete(f"/api/me/tokens/{other.id}", headers=_as(people.mia))
    assert r.status_code == 204, r.text
    assert people.token_row(other.id).revoked_at is not None
    assert client.get("/api/me", headers=_as(people.mia)).status_code == 401
    [event] = people.revoke_events()
    assert event.outcome == "ok" and json.loads(event.data) == {"token_id": other.id}
