"""`POST /api/retention/run` purges every environment in the shared database, so it is authorised
in every one: a compliance officer bound to dev alone gets 403 from a dev worker (for a dry run
too, whose report counts other environments' records) and nothing is deleted anywhere; one bound
everywhere purges the expired records of dev and test alike. Runs on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.helpers.databases import query
from voxgate.api.app import create_app
from voxgate.config import Settings
from voxgate.store.models import SessionRow

PASSWORD = "a long enough password"
OLD = dt.datetime(2001, 1, 1, tzinfo=dt.UTC)  # past every environment's retention


@pytest.fixture()
def client(db_url: str, tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(database_url=db_url, data_dir=tmp_path / "data", environment="dev", retention_interval_s=86400)
    with TestClient(create_app(settings, [])) as c:
        state = c.app.state.voxgate  # type: ignore[attr-defined]
        # the worker's own first purge is a minute after its start (then a day later): only the requests purge here
        with state.db.orm() as orm, orm.begin():
            for env in ("dev", "test", "prod"):
                orm.add(
                    SessionRow(
                        id=f"{env}-old",
                        agent="harbor-support",
                        agent_version="1",
                        environment=env,
                        channel="voice",
                        started_at=OLD,
                        turn_count=0,
                        outcome="resolved",
                    )
                )
        yield c


def token(client: TestClient, name: str, env: str) -> dict[str, str]:
    identity = client.app.state.voxgate.identity  # type: ignore[attr-defined]
    user = identity.create_user(name, PASSWORD)
    identity.bind_role(user.id, env, "compliance_officer", None)
    raw, _ = identity.create_token(user.id, "t", ["*"], 1)
    return {"Authorization": f"Bearer {raw}"}


def sessions_left(db_url: str) -> list[str]:
    return sorted(r[0] for r in query(db_url, "SELECT id FROM sessions"))


@pytest.mark.parametrize("dry_run", [False, True])
def test_retention_run_needs_the_role_in_every_environment(client: TestClient, db_url: str, dry_run: bool) -> None:
    dev_only = token(client, "dev-compliance", "dev")
    r = client.post("/api/retention/run", json={"dry_run": dry_run}, headers=dev_only)
    assert r.status_code == 403, r.text
    assert "counts" not in r.text  # not even how many records each environment holds
    assert sessions_left(db_url) == ["dev-old", "prod-old", "test-old"]


def test_retention_run_by_an_officer_of_every_environment_purges_them_all(client: TestClient, db_url: str) -> None:
    everywhere = token(client, "any-compliance", "*")
    r = client.post("/api/retention/run", json={"dry_run": True}, headers=everywhere)
    assert r.status_code == 200, r.text
    assert {env: c["sessions"] for env, c in r.json()["counts"].items()} == {"dev": 1, "test": 1, "prod": 1}
    assert sessions_left(db_url) == ["dev-old", "prod-old", "test-old"]
    r = client.post("/api/retention/run", json={}, headers=everywhere)
    assert r.status_code == 200, r.text
    assert sessions_left(db_url) == []
