"""Alerts as code: a burst of escalations fires the escalation-rate rule, a local webhook receiver gets it
(after a retry), an incident opens and moves through its states with a timeline."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.helpers.policies import add_dev_settings, policy_copy
from voxgate.api.app import create_app
from voxgate.config import Settings


class Receiver:
    """A webhook endpoint on loopback that refuses the first delivery (to exercise the retry)."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.attempts = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                outer.attempts += 1
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                if outer.attempts == 1:
                    self.send_response(503)
                else:
                    outer.bodies.append(json.loads(body))
                    self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/voxgate"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture()
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def _policies(tmp: Path, webhook: str) -> Path:
    rule = (
        "      alerts:\n"
        "        - {name: escalation-rate, metric: escalation_rate, above: 0.3, window: 15m, min_sessions: 5,"
        " severity: critical}\n"
        f"      webhooks: ['{webhook}']\n"
    )
    return policy_copy(tmp, add_dev_settings(rule))


def test_a_burst_of_escalations_opens_an_incident(
    db_url: str, tmp_path: Path, harbor_bundle: Any, harbor_backend: Any, receiver: Receiver
) -> None:
    settings = Settings(
        database_url=db_url,
        data_dir=tmp_path / "data",
        policy_dir=_policies(tmp_path, receiver.url),
        alert_interval_s=0.2,
    )
    with TestClient(create_app(settings, [harbor_bundle])) as client:
        state = client.app.state.voxgate  # type: ignore[attr-defined]
        user = state.identity.create_user("olga", "a long enough password")
        state.identity.bind_role(user.id, "*", "operator", None)
        token, _ = state.identity.create_token(user.id, "t", ["*"], 1)
        ops = {"Authorization": f"Bearer {token}"}
        assert client.get("/api/incidents", headers=ops).json() == []
        for _ in range(6):
            sid = client.post("/api/agents/harbor-support/sessions").json()["session_id"]
            client.post(f"/api/sessions/{sid}/turns", json={"text": "I want to talk to a real person"})
        sid = client.post("/api/agents/harbor-support/sessions").json()["session_id"]
        client.post(f"/api/sessions/{sid}/turns", json={"text": "what are your opening hours"})
        client.post(f"/api/sessions/{sid}/turns", json={"text": "no thanks that's all"})
        deadline = time.monotonic() + 30
        while not receiver.bodies and time.monotonic() < deadline:  # the server evaluates continuously
            time.sleep(0.1)
        assert receiver.bodies, "the webhook never received the alert"
        assert receiver.attempts >= 2  # the first delivery was refused and retried
        alert = receiver.bodies[0]
        assert alert["type"] == "voxgate.alert" and alert["rule"]["name"] == "escalation-rate"
        assert alert["incident"]["value"] > 0.3 and alert["incident"]["agent"] == "harbor-support"
        (incident,) = client.get("/api/incidents", headers=ops).json()
        assert incident["status"] == "open" and incident["severity"] == "critical"
        # the rule may fire while the burst is still arriving; later evaluations link the rest
        deadline = time.monotonic() + 15
        while len(incident["sessions"]) < 7 and time.monotonic() < deadline:
            time.sleep(0.1)
            (incident,) = client.get("/api/incidents", headers=ops).json()
        assert len(incident["sessions"]) == 7
        time.sleep(0.5)  # later evaluations update the same incident rather than opening new ones
        assert len(client.get("/api/incidents", headers=ops).json()) == 1
        firing = 'voxgate_alerts_firing{environment="dev",rule="escalation-rate"} 1.0'
        assert firing in client.get("/metrics", headers=ops).text
        for step in ("acknowledged", "mitigated", "resolved"):
            r = client.post(f"/api/incidents/{incident['id']}/{step}", json={"note": f"{step} by olga"}, headers=ops)
            assert r.status_code == 200, r.text
        assert client.post(f"/api/incidents/{incident['id']}/acknowledged", json={}, headers=ops).status_code == 409
        # the resolved incident is counted as such (the rule, still over its threshold, may open a new one)
        assert 'voxgate_incidents{environment="dev",status="resolved"} 1.0' in client.get("/metrics", headers=ops).text
        done = client.get("/api/incidents", params={"status": "resolved"}, headers=ops).json()[0]
        kinds = [e["kind"] for e in done["timeline"]]
        assert kinds[0] == "alert" and "delivery" in kinds
        assert [k for k in kinds if k not in ("alert", "delivery")] == ["acknowledged", "mitigated", "resolved"]
        events = [e["action"] for e in state.audit.query(limit=1000)]
        assert "incident.open" in events and "incident.resolved" in events
        # a desk agent may not see incidents
        desk = state.identity.create_user("dora", "a long enough password")
        state.identity.bind_role(desk.id, "*", "desk_agent", None)
        desk_token, _ = state.identity.create_token(desk.id, "t", ["*"], 1)
        assert client.get("/api/incidents", headers={"Authorization": f"Bearer {desk_token}"}).status_code == 403
