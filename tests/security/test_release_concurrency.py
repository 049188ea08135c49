"""One approval is published once: concurrent publishes, decisions and rollbacks are compare-and-set steps.

Ten publishes of one approved request sent at the same moment over real HTTP (a uvicorn server,
so the requests run in parallel worker threads) give exactly one 200 and one release row; the
others are refused with 409 and a message that says it was already published. The same holds for
two decisions on one pending request and for two rollbacks of one release. Runs on SQLite and
PostgreSQL.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.helpers import loopback
from tests.helpers.databases import query
from tests.helpers.org import Org, bearer, upload_built
from tests.helpers.paths import HARBOR_AGENT
from tests.helpers.servers import serving
from voxgate.api.app import create_app

AGENT = "harbor-support"


@pytest.fixture()
def org(db_url: str, tmp_path: Path) -> Org:
    return Org(db_url, tmp_path / "data")


@pytest.fixture()
def agent_dir(tmp_path: Path) -> Path:
    import shutil

    target = tmp_path / AGENT
    shutil.copytree(HARBOR_AGENT, target)
    return target


def _pending_request(client: TestClient, org: Org, digest: str) -> str:
    maker = bearer(org.maker)
    assert (
        client.post(f"/api/environments/dev/agents/{AGENT}/deploy", json={"digest": digest}, headers=maker).status_code
        == 200
    )
    assert client.post(f"/api/environments/test/agents/{AGENT}/promote", json={}, headers=maker).status_code == 200
    r = client.post(f"/api/environments/prod/agents/{AGENT}/publish-requests", json={"reason": "r"}, headers=maker)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def _all_at_once(n: int, call: Callable[[int], httpx.Response]) -> list[httpx.Response]:
    """`call(i)` for i in range(n), in n threads released together."""
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = call(i)
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert all(isinstance(r, httpx.Response) for r in results), results
    return results


def _release_rows(org: Org, action: str) -> int:
    return int(query(org.db_url, "SELECT count(*) FROM releases WHERE action = :a", a=action)[0][0])


def test_one_approval_is_published_once(org: Org, agent_dir: Path) -> None:
    app = create_app(org.settings, [])
    with TestClient(app) as client:
        assert (
            client.post("/api/me/keys", json={"public_key": org.key.public.b64}, headers=bearer(org.maker)).status_code
            == 201
        )
        digest = upload_built(client, org, org.build(agent_dir))["digest"]
        request_id = _pending_request(client, org, digest)
        with serving(app) as url:
            # two approvers' decisions at once: one wins, the other is told it was already decided
            decisions = _all_at_once(
                2,
                lambda i: loopback.post(
                    f"{url}/api/publish-requests/{request_id}/{'approve' if i == 0 else 'reject'}",
                    json={"comment": f"decision {i}"},
                    headers=bearer(org.approver),
                    timeout=120,
                ),
            )
            assert sorted(r.status_code for r in decisions) == [200, 409], [r.text for r in decisions]
            if decisions[1].status_code == 200:  # rejected: ask again and approve this time
                request_id = _pending_request(client, org, digest)
                assert (
                    client.post(
                        f"/api/publish-requests/{request_id}/approve",
                        json={"comment": "ok"},
                        headers=bearer(org.approver),
                    ).status_code
                    == 200
                )
            loser = next(r for r in decisions if r.status_code == 409)
            assert "already" in loser.json()["detail"]["error"], loser.text

            publishes = _all_at_once(
                10,
                lambda i: loopback.post(
                    f"{url}/api/publish-requests/{request_id}/publish",
                    json={},
                    headers=bearer(org.approver if i % 2 else org.operator),
                    timeout=120,
                ),
            )
            codes = sorted(r.status_code for r in publishes)
            assert codes == [200] + [409] * 9, [(r.status_code, r.text) for r in publishes]
            for r in publishes:
                if r.status_code == 409:
                    assert "already published" in r.json()["detail"]["error"], r.text
            assert _release_rows(org, "publish") == 1
            status = query(org.db_url, "SELECT status FROM publish_requests WHERE id = :i", i=request_id)
            assert status[0][0] == "published"
            active = query(org.db_url, "SELECT digest, release_id FROM active_bundles WHERE environment = 'prod'")
            release = query(org.db_url, "SELECT id, digest FROM releases WHERE action = 'publish'")
            assert active == [(digest, release[0][0])]

            # two rollbacks of the one release at once: one withdraws it, the other finds nothing to roll back
            rollbacks = _all_at_once(
                2,
                lambda i: loopback.post(
                    f"{url}/api/environments/prod/agents/{AGENT}/rollback",
                    json={"reason": "x"},
                    headers=bearer(org.operator),
                    timeout=120,
                ),
            )
            assert sorted(r.status_code for r in rollbacks) == [200, 409], [r.text for r in rollbacks]
            assert _release_rows(org, "rollback") == 1
            assert query(org.db_url, "SELECT count(*) FROM active_bundles WHERE environment = 'prod'")[0][0] == 0
