"""A 422 says what is wrong without echoing secrets or large inputs back."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from voxgate.api.app import create_app
from voxgate.config import Settings


@pytest.fixture()
def client(tmp_path: Path, harbor_bundle: Any) -> Iterator[TestClient]:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'v.db'}", data_dir=tmp_path)
    with TestClient(create_app(settings, [harbor_bundle])) as c:
        yield c


def test_a_password_is_never_echoed_in_a_422(client: TestClient) -> None:
    r = client.post("/api/auth/login", json={"password": "hunter2-is-my-secret"})  # no username
    assert r.status_code == 422 and "username" in r.text
    assert "hunter2-is-my-secret" not in r.text
    r = client.post("/api/auth/login", json={"username": "ada", "password": ["hunter2-is-my-secret"]})
    assert r.status_code == 422 and "hunter2-is-my-secret" not in r.text


def test_a_large_input_is_cut_short_in_a_422(client: TestClient) -> None:
    r = client.post("/api/auth/login", json={"username": ["x" * 50_000], "password": "p"})  # under the body limit
    assert r.status_code == 422
    assert len(r.content) < 2_000 and "50000 characters" in r.text


def test_the_desk_page_runs_under_the_strict_policy_and_is_never_framed(client: TestClient) -> None:
    policy = client.get("/desk").headers["content-security-policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy and "unsafe-inline" not in policy
