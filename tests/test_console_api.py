"""What the admin console relies on, over the real API (SQLite and PostgreSQL): the page and its
modules served from the package with nothing external, the cross-site request defence on cookie
sign-ins, the permissions the page uses to hide actions (decided by the policy engine), per-environment
reads for users whose roles are bound per environment, one environment's settings, KPIs per time
bucket, transcript search by words, revoking DLP exceptions, user names for the ids in records, gate
runs with who ran them, and a page (not JSON) for a browser that opens an unknown address."""

from __future__ import annotations

import datetime as dt
import fnmatch
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.helpers.paths import ROOT
from tests.helpers.policies import policy_copy
from voxgate.api.app import create_app
from voxgate.api.auth import CSRF_HEADER, DENIED_HEADER
from voxgate.api.console import install_not_found_page, shown_webhook
from voxgate.config import Settings
from voxgate.observe.analytics import MAX_SERIES_POINTS, series
from voxgate.store.db import Database
from voxgate.store.models import BundleRow, GateRunRow, PublishRequestRow, SessionRow, TurnRow, VoiceTurnRow

PASSWORD = "a long enough password"
CONSOLE = ROOT / "src" / "voxgate" / "console" / "static"
UTC = dt.UTC


@pytest.fixture()
def org(db_url: str, tmp_path: Path) -> Iterator[tuple[TestClient, dict[str, str], dict[str, str]]]:
    policies = policy_copy(
        tmp_path,
        lambda text: text.replace(
            'webhooks: ["env:VOXGATE_ALERT_WEBHOOK_URL"]',
            'webhooks: ["env:VOXGATE_ALERT_WEBHOOK_URL", "https://hook:s3cret@alerts.example.com:8443/in?token=abc"]',
        ),
    )
    settings = Settings(database_url=db_url, data_dir=tmp_path / "data", environment="dev", policy_dir=policies)
    with TestClient(create_app(settings, [])) as client:
        identity = client.app.state.voxgate.identity  # type: ignore[attr-defined]
        tokens: dict[str, str] = {}
        ids: dict[str, str] = {}
        for name, bindings in {
            "ada": [("*", "admin")],
            "mia": [("dev", "maker"), ("test", "maker"), ("prod", "maker")],
            "aaron": [("prod", "approver")],
            "olga": [("*", "operator")],
            "cora": [("prod", "compliance_officer")],
            "audrey": [("*", "auditor")],
        }.items():
            user = identity.create_user(name, PASSWORD)
            for env, role in bindings:
                identity.bind_role(user.id, env, role, None)
            tokens[name], _ = identity.create_token(user.id, "t", ["*"], 1)
            ids[name] = user.id
        yield client, tokens, ids


def _as(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _publish_request(
    client: TestClient, author: str, requester: str, request_id: str = "req1", digest: str = "sha256:" + "0" * 64
) -> None:
    with client.app.state.voxgate.db.orm() as orm, orm.begin():  # type: ignore[attr-defined]
        orm.add(
            BundleRow(
                digest=digest,
                agent="harbor-support",
                version="1",
                author_id=author,
                built_for="prod",
                key_id="k",
                signature="s",
                manifest={},
                archive=b"",
            )
        )
        orm.add(
            PublishRequestRow(
                id=request_id,
                agent="harbor-support",
                digest=digest,
                source_environment="test",
                target_environment="prod",
                requested_by=requester,
            )
        )


# ---- the page ----------------------------------------------------------------------------------------


def test_the_console_page_and_its_modules_are_served_and_nothing_is_fetched_from_elsewhere(org: Any) -> None:
    client, _, _ = org
    r = client.get("/console", follow_redirects=False)
    assert r.status_code == 307 and r.headers["location"] == "/console/"
    page = client.get("/console/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp and "unsafe" not in csp
    # every module the page loads, followed import by import, comes from this server
    pending = re.findall(r'(?:src|href)="(/static/admin/[^"]+)"', page.text)
    assert "/static/admin/main.js" in pending and "/static/admin/console.css" in pending
    seen: set[str] = set()
    while pending:
        path = pending.pop()
        if path in seen:
            continue
        seen.add(path)
        r = client.get(path)
        assert r.status_code == 200, path
        if path.endswith(".js"):
            assert "javascript" in r.headers["content-type"], path
            base = path.rsplit("/", 1)[0]
            for ref in re.findall(r'^import [^;]*? from "(\.{1,2}/[^"]+)";', r.text, re.M):
                parts = (base + "/" + ref).split("/")
                resolved: list[str] = []
                for part in parts:
                    if part == "..":
                        resolved.pop()
                    elif part != ".":
                        resolved.append(part)
                pending.append("/".join(resolved))
    modules = {p.relative_to(CONSOLE).as_posix() for p in (CONSOLE / "admin").rglob("*.js")}
    assert {p.removeprefix("/static/") for p in seen if p.endswith(".js")} == modules  # none unused, none missing
    # air-gapped: no address outside this server anywhere in the console (the SVG namespace is a name, not a fetch)
    for file in (CONSOLE / "admin").rglob("*"):
        if file.is_file():
            urls = set(re.findall(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}[^\s\"'`)]*", file.read_text()))
            assert urls <= {"http://www.w3.org/2000/svg"}, (file, urls)


BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"


def test_a_mistyped_console_address_gets_the_console_page_answered_404(org: Any) -> None:
    client, _, _ = org
    for path in ("/console/nope", "/console/agents/xyz", "/console/releases/request/none"):
        r = client.get(path, headers={"Accept": BROWSER})
        assert r.status_code == 404 and "text/html" in r.headers["content-type"], path
        assert '<script type="module" src="/static/admin/main.js">' in r.text  # its router says "page not found"
        assert "script-src 'self'" in r.headers["content-security-policy"]
        r = client.get(path, headers={"Accept": "application/json"})
        assert r.status_code == 404 and r.json() == {"detail": "Not Found"}
    assert client.get("/console/", headers={"Accept": BROWSER}).status_code == 200


@pytest.fixture()
def site_with_404_page(tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'v.db'}", data_dir=tmp_path / "data", environment="dev")
    app = create_app(settings, [])
    install_not_found_page(app)
    install_not_found_page(app)  # a second call changes nothing
    with TestClient(app) as client:
        yield client


def test_a_browser_opening_an_unknown_address_gets_a_page_and_api_clients_json(site_with_404_page: TestClient) -> None:
    client = site_with_404_page
    for path in ("/consol", "/phones", "/nope/deeper", "/static/nope.js"):
        r = client.get(path, headers={"Accept": BROWSER})
        assert r.status_code == 404 and r.headers["content-type"].startswith("text/html"), path
        assert "Page not found" in r.text and path in r.text
        for link in ('href="/console/"', 'href="/phone"', 'href="/desk"'):
            assert link in r.text
        assert "<script" not in r.text and "default-src 'none'" in r.headers["content-security-policy"]
    r = client.get("/<b>x</b>", headers={"Accept": BROWSER})  # the address is shown as text, never as markup
    assert r.status_code == 404 and "<b>x</b>" not in r.text and "&lt;b&gt;x&lt;/b&gt;" in r.text
    r = client.get("/console/nope", headers={"Accept": BROWSER})  # the console's own page, as without the handler
    assert r.status_code == 404 and "/static/admin/main.js" in r.text
    # API clients: what they asked for, and everything under /api/, stays JSON
    for path, accept in (
        ("/consol", "application/json"),
        ("/consol", "*/*"),
        ("/consol", ""),
        ("/consol", "application/json, text/html;q=0.5"),
        ("/api/nope", BROWSER),
        ("/api", BROWSER),
        ("/console/nope", "application/json"),
    ):
        r = client.get(path, headers={"Accept": accept})
        assert r.status_code == 404 and r.json() == {"detail": "Not Found"}, (path, accept)
    r = client.get("/api/sessions/none", headers={"Accept": BROWSER})  # a route's own 404 (or refusal) is JSON
    assert r.headers["content-type"].startswith("application/json")
    r = client.post("/consol", headers={"Accept": "application/json"})
    assert r.status_code in (404, 405) and r.headers["content-type"].startswith("application/json")
    # other errors are untouched
    assert client.get("/api/me/permissions", headers={"Accept": BROWSER}).status_code == 401
    assert client.get("/console/", headers={"Accept": BROWSER}).status_code == 200


def test_a_non_editable_install_ships_every_console_file() -> None:
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["voxgate"]
    package = ROOT / "src" / "voxgate"
    files = [
        p.relative_to(package).as_posix() for p in CONSOLE.rglob("*") if p.is_file() and "__pycache__" not in p.parts
    ]
    assert any(f.startswith("console/static/admin/pages/") for f in files)
    # setuptools matches package-data globs within one directory level: '*' does not cross '/'
    unmatched = [
        f for f in files if not any(fnmatch.fnmatch(f, pat) and f.count("/") == pat.count("/") for pat in patterns)
    ]
    assert unmatched == []


# ---- the cross-site request defence ------------------------------------------------------------------


def test_a_cookie_sign_in_changes_nothing_without_the_csrf_header(org: Any) -> None:
    client, tokens, _ = org
    r = client.post("/api/auth/login", json={"username": "ada", "password": PASSWORD})
    assert r.status_code == 200
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    assert client.get("/api/me").json()["username"] == "ada"  # reads need nothing more
    # a change carried by the cookie alone (what a cross-site form could send) is refused, and does nothing
    r = client.post("/api/users", json={"username": "mallory", "password": PASSWORD})
    assert r.status_code == 403 and CSRF_HEADER in r.json()["detail"]
    r = client.request("DELETE", f"/api/users/{'x' * 32}/roles", json={"environment": "*", "role": "admin"})
    assert r.status_code == 403
    assert "mallory" not in [u["username"] for u in client.get("/api/users").json()]
    # with the header the same request goes through
    r = client.post("/api/users", json={"username": "mallory", "password": PASSWORD}, headers={CSRF_HEADER: "1"})
    assert r.status_code == 201
    # a public channel still works for a signed-in user's chat page (the cookie is simply not used)
    r = client.post("/api/agents/harbor-support/sessions")
    assert r.status_code not in (401, 403)
    # API tokens are not cookies: no header needed
    client.cookies.clear()
    r = client.post("/api/users", json={"username": "trent", "password": PASSWORD}, headers=_as(tokens["ada"]))
    assert r.status_code == 201


# ---- permissions -------------------------------------------------------------------------------------


def test_permissions_are_the_policy_engines_decisions(org: Any) -> None:
    client, tokens, ids = org
    assert client.get("/api/me/permissions").status_code == 401
    maker = client.get("/api/me/permissions", headers=_as(tokens["mia"])).json()
    assert maker["user"]["username"] == "mia" and maker["worker_environment"] == "dev"
    assert {"bundle.deploy", "bundle.promote", "publish.request"} <= set(maker["environments"]["dev"])
    assert "bundle.deploy" not in maker["environments"]["prod"]  # separation of duties: never straight to prod
    assert "publish.approve" not in maker["environments"]["prod"] and maker["global_actions"] == [
        "token.manage_own",
        "call.start",
    ]
    approver = client.get("/api/me/permissions", headers=_as(tokens["aaron"])).json()
    assert "publish.approve" in approver["environments"]["prod"] and approver["environments"]["dev"] == [
        "token.manage_own",
        "call.start",
    ]
    admin = client.get("/api/me/permissions", headers=_as(tokens["ada"])).json()
    assert {"user.manage", "audit.read"} <= set(admin["global_actions"])
    assert "bundle.deploy" not in admin["environments"]["prod"] and "bundle.deploy" in admin["environments"]["dev"]
    # on one publish request: who wrote or asked for it may not approve it, whatever their roles
    _publish_request(client, author=ids["mia"], requester=ids["ada"])

    def on(who: str) -> Any:
        response = client.get("/api/me/permissions", params={"publish_request": "req1"}, headers=_as(tokens[who]))
        return response.json()["publish_request"]["actions"]

    assert on("aaron") == ["publish.approve", "bundle.publish"]
    assert on("ada") == ["bundle.publish"]  # the requester
    assert on("mia") == []
    # and the routes agree with what the page was told
    r = client.post("/api/publish-requests/req1/approve", json={"comment": "mine"}, headers=_as(tokens["ada"]))
    assert r.status_code == 403 and r.headers[DENIED_HEADER] == "publish.approve"


def test_readers_bound_per_environment_list_what_their_environment_needs(org: Any) -> None:
    client, tokens, ids = org
    _publish_request(client, author=ids["mia"], requester=ids["mia"])
    approver = _as(tokens["aaron"])
    assert client.get("/api/publish-requests", headers=approver).status_code == 403  # only prod is theirs
    mine = client.get("/api/publish-requests", params={"environment": "prod"}, headers=approver)
    assert mine.status_code == 200 and [r["id"] for r in mine.json()] == ["req1"]
    assert client.get("/api/publish-requests", params={"environment": "test"}, headers=approver).status_code == 403
    assert (
        client.get("/api/publish-requests", params={"environment": "dev"}, headers=_as(tokens["mia"])).json() == []
    )  # filtered: none target dev
    assert client.get("/api/publish-requests", params={"env": "prod"}, headers=approver).status_code == 403
    r = client.get("/api/bundles", params={"environment": "prod"}, headers=approver)
    assert r.status_code == 200 and [b["version"] for b in r.json()] == ["1"]
    assert client.get("/api/bundles", headers=approver).status_code == 403
    r = client.get(
        f"/api/bundles/sha256:{'0' * 64}/diff/sha256:{'1' * 64}", params={"environment": "prod"}, headers=approver
    )
    # allowed (not 403); the first is a row written straight into the store, which fails verification
    # and is never shown (409), and there is no such second bundle
    assert r.status_code == 409 and "failed verification" in r.text
    assert client.get("/api/publish-requests", headers=_as(tokens["audrey"])).status_code == 200  # auditor on *


# ---- one environment ---------------------------------------------------------------------------------


def test_environment_detail_has_its_settings_and_alert_rules_but_no_webhook_credentials(org: Any) -> None:
    client, tokens, _ = org
    assert client.get("/api/environments/prod").status_code == 401
    r = client.get("/api/environments/prod", headers=_as(tokens["olga"]))
    assert r.status_code == 200
    prod = r.json()
    assert prod["tier"] == "production" and prod["previous"] == "test" and prod["next"] is None
    assert prod["position"] == 2 and prod["requires_approval"] is True and prod["served_here"] is False
    rules = {rule["name"]: rule for rule in prod["settings"]["alerts"]}
    assert rules["escalation-rate"]["above"] == 0.3 and rules["escalation-rate"]["window"] == "15m"
    assert prod["settings"]["webhooks"] == ["env:VOXGATE_ALERT_WEBHOOK_URL", "https://alerts.example.com:8443/in"]
    assert "s3cret" not in r.text and "token=abc" not in r.text
    dev = client.get("/api/environments/dev", headers=_as(tokens["olga"])).json()
    assert dev["served_here"] is True and dev["previous"] is None and dev["worker_url"] is None
    assert client.get("/api/environments/nowhere", headers=_as(tokens["olga"])).status_code == 404
    assert client.get("/api/environments/prod", headers=_as(tokens["mia"])).status_code == 200
    assert shown_webhook("https://user@h.example/p?q=1#f") == "https://h.example/p"


# ---- KPIs over time ----------------------------------------------------------------------------------

NOW = dt.datetime(2026, 11, 26, 12, 30, tzinfo=UTC)


def _session(
    orm: Any,
    sid: str,
    started: dt.datetime,
    outcome: str | None,
    *,
    env: str = "dev",
    agent: str = "harbor-support",
    reason: str | None = None,
    turns: tuple[tuple[str, str], ...] = (),
    voice_ms: tuple[float, ...] = (),
) -> None:
    orm.add(
        SessionRow(
            id=sid,
            agent=agent,
            agent_version="1",
            environment=env,
            channel="http",
            started_at=started,
            ended_at=started + dt.timedelta(minutes=2) if outcome else None,
            outcome=outcome,
            escalation_reason=reason,
            turn_count=len(turns),
        )
    )
    orm.flush()
    for seq, (user, reply) in enumerate(turns):
        orm.add(TurnRow(session_id=sid, seq=seq, user_text=user, agent_text=reply, intent="x", state="s", data={}))
    for seq, ms in enumerate(voice_ms):
        orm.add(VoiceTurnRow(session_id=sid, seq=seq, voice_to_voice_ms=ms))


def _history(db: Database) -> None:
    at = lambda h, m: NOW.replace(hour=h, minute=m)  # noqa: E731
    with db.orm() as orm, orm.begin():
        _session(orm, "s1", at(9, 10), "resolved", turns=(("What are your OPENING hours", "9 to 5"),))
        _session(orm, "s2", at(9, 40), "escalated", reason="caller_request", turns=(("a person please", "One moment"),))
        _session(orm, "s3", at(9, 50), "abandoned", turns=(("where is my order", "Your account number?"),))
        _session(orm, "s4", at(11, 5), "unengaged")
        _session(orm, "s5", at(12, 20), "resolved", voice_ms=(400.0, 800.0), turns=(("100% sure", "Good"),))
        _session(orm, "p1", at(9, 15), "escalated", env="prod")  # another environment
        _session(orm, "old", at(7, 55), "resolved")  # before the first bucket


def test_series_has_every_bucket_aligned_with_kpis_per_bucket(db_url: str) -> None:
    db = Database(db_url)
    db.migrate()
    _history(db)
    try:
        result = series(
            db, since=NOW - dt.timedelta(hours=4), until=NOW, bucket=dt.timedelta(hours=1), environment="dev"
        )
        # 08:30 rounds down to 08:00; buckets 08, 09, 10, 11, 12 (the last one still open)
        assert result.since == "2026-11-26T08:00:00+00:00" and result.bucket_s == 3600
        assert [p.start[11:16] for p in result.points] == ["08:00", "09:00", "10:00", "11:00", "12:00"]
        assert [p.sessions for p in result.points] == [0, 3, 0, 1, 1]
        nine = result.points[1]
        assert nine.outcomes == {"resolved": 1, "escalated": 1, "abandoned": 1, "unengaged": 0}
        assert nine.escalation_rate == round(1 / 3, 4) and nine.resolution_rate == round(1 / 3, 4)
        assert result.points[0].outcomes == {"resolved": 0, "escalated": 0, "abandoned": 0, "unengaged": 0}
        assert result.points[0].escalation_rate is None
        assert result.points[3].escalation_rate is None  # only an unengaged session: no engaged ones
        assert result.points[4].voice_p50_ms == 600.0 and result.points[4].voice_p95_ms == 780.0
        assert result.totals.sessions == 5 and result.totals.outcomes["escalated"] == 1
        # the default bucket follows the span; another environment is counted apart
        assert series(db, since=NOW - dt.timedelta(hours=4), until=NOW).bucket_s == 3600
        assert series(db, since=NOW - dt.timedelta(minutes=90), until=NOW).bucket_s == 300
        prod = series(db, since=NOW - dt.timedelta(hours=4), until=NOW, environment="prod")
        assert prod.totals.sessions == 1 and prod.totals.escalation_rate == 1.0
        with pytest.raises(ValueError, match="too many"):
            series(db, since=NOW - dt.timedelta(days=30), until=NOW, bucket=dt.timedelta(minutes=5))
        assert 30 * 24 * 12 > MAX_SERIES_POINTS
        with pytest.raises(ValueError, match="before"):
            series(db, since=NOW, until=NOW - dt.timedelta(hours=1))
    finally:
        db.dispose()


def test_series_and_transcript_search_over_the_api(org: Any) -> None:
    client, tokens, _ = org
    db = client.app.state.voxgate.db  # type: ignore[attr-defined]
    now = dt.datetime.now(UTC)
    with db.orm() as orm, orm.begin():
        _session(
            orm, "a", now - dt.timedelta(minutes=20), "resolved", turns=(("What are your OPENING hours", "9 to 5"),)
        )
        _session(
            orm,
            "b",
            now - dt.timedelta(minutes=10),
            "escalated",
            reason="caller_request",
            turns=(("100% a person please", "One moment"),),
        )
    operator = _as(tokens["olga"])
    r = client.get("/api/stats/series", params={"env": "dev", "since": "1h", "bucket": "15m"}, headers=operator)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["bucket_s"] == 900 and len(body["points"]) in (4, 5)
    assert sum(p["sessions"] for p in body["points"]) == 2 and body["totals"]["escalation_rate"] == 0.5
    assert client.get("/api/stats/series", params={"since": "30d", "bucket": "5m"}, headers=operator).status_code == 422
    assert client.get("/api/stats/series", params={"since": "soon"}, headers=operator).status_code == 422
    assert client.get("/api/stats/series", headers=_as(tokens["mia"])).status_code == 403
    assert client.get("/api/stats/series").status_code == 401

    auditor = _as(tokens["audrey"])
    found = lambda q: [s["id"] for s in client.get("/api/sessions", params={"q": q}, headers=auditor).json()]  # noqa: E731
    assert found("opening hours") == ["a"]  # either speaker, any case
    assert found("ONE MOMENT") == ["b"]
    assert found("100%") == ["b"] and found("%") == ["b"] and found("_") == []  # wildcards are literal
    assert sorted(found("  ")) == ["a", "b"]  # blank: no word filter
    assert client.get("/api/sessions", params={"q": "x" * 201}, headers=auditor).status_code == 422


# ---- DLP exceptions ----------------------------------------------------------------------------------


def test_a_dlp_exception_can_be_revoked_by_who_may_grant_it(org: Any) -> None:
    client, tokens, _ = org
    officer = _as(tokens["cora"])
    expires = (dt.datetime.now(UTC) + dt.timedelta(days=3)).isoformat()
    r = client.post(
        "/api/environments/prod/dlp/exceptions",
        headers=officer,
        json={
            "connector": "harbor_api",
            "rule": "endpoint",
            "host": "billing.harbor.internal",
            "reason": "migration window",
            "expires_at": expires,
        },
    )
    assert r.status_code == 201, r.text
    exception_id = r.json()["id"]
    path = f"/api/environments/prod/dlp/exceptions/{exception_id}"
    r = client.delete(path, headers=_as(tokens["mia"]))
    assert r.status_code == 403 and r.headers[DENIED_HEADER] == "dlp.exception.grant"
    assert (
        client.delete(f"/api/environments/dev/dlp/exceptions/{exception_id}", headers=_as(tokens["ada"])).status_code
        == 404
    )
    r = client.delete(path, headers=officer)
    assert r.status_code == 200 and r.json()["revoked_at"] is not None
    assert client.get("/api/environments/prod/dlp", headers=officer).json()["exceptions"] == []
    shown = client.get("/api/environments/prod/dlp", params={"include_inactive": "true"}, headers=officer).json()
    assert [e["id"] for e in shown["exceptions"]] == [exception_id]
    events = client.get("/api/audit/events", params={"action": "dlp.exception.*"}, headers=_as(tokens["audrey"])).json()
    assert [e["action"] for e in events] == ["dlp.exception.revoke", "dlp.exception.grant"]


# ---- who is who, and who ran a gate -----------------------------------------------------------------


def test_people_names_the_users_behind_ids_for_readers_of_records_that_name_them(org: Any) -> None:
    client, tokens, ids = org
    identity = client.app.state.voxgate.identity  # type: ignore[attr-defined]
    desk = identity.create_user("dana", PASSWORD)
    identity.bind_role(desk.id, "*", "desk_agent", None)
    tokens["dana"], _ = identity.create_token(desk.id, "t", ["*"], 1)
    asked = ",".join(
        [ids["mia"], f"user:{ids['aaron']}/token:abc123", f"user:{ids['olga']}", "system", "caller", "0" * 32]
    )
    for reader in ("aaron", "audrey", "mia", "olga", "ada"):  # none of them but ada may list the users
        r = client.get("/api/people", params={"ids": asked}, headers=_as(tokens[reader]))
        assert r.status_code == 200, (reader, r.text)
        assert r.json() == {"names": {ids["mia"]: "mia", ids["aaron"]: "aaron", ids["olga"]: "olga"}}, reader
    assert client.get("/api/users", headers=_as(tokens["aaron"])).status_code == 403
    # a desk agent reads no record that names users: no names
    assert client.get("/api/people", params={"ids": asked}, headers=_as(tokens["dana"])).json() == {"names": {}}
    assert client.get("/api/people", params={"ids": ids["mia"]}).status_code == 401
    assert client.get("/api/people", headers=_as(tokens["aaron"])).json() == {"names": {}}
    too_many = ",".join(f"{i:032x}" for i in range(501))
    assert client.get("/api/people", params={"ids": too_many}, headers=_as(tokens["aaron"])).status_code == 422


def test_gate_runs_say_who_ran_them(org: Any) -> None:
    client, tokens, ids = org
    db = client.app.state.voxgate.db  # type: ignore[attr-defined]
    digest = "sha256:" + "1" * 64
    with db.orm() as orm, orm.begin():
        for n, (gate, actor, status) in enumerate(
            (
                ("conversations", f"user:{ids['mia']}", "passed"),
                ("escalation", f"user:{ids['olga']}/token:t1", "failed"),
                ("load", "system", "error"),
            )
        ):
            orm.add(
                GateRunRow(
                    id=f"run{n}",
                    digest=digest if n < 2 else "sha256:" + "2" * 64,
                    agent="harbor-support",
                    target_environment="prod",
                    ran_in="test",
                    gate=gate,
                    status=status,
                    actor_id=actor,
                    started_at=dt.datetime(2026, 11, 26, 10, n, tzinfo=UTC),
                    duration_ms=100.0 * n,
                )
            )
    path = "/api/environments/prod/agents/harbor-support/gate-runs"
    r = client.get(path, headers=_as(tokens["aaron"]))
    assert r.status_code == 200, r.text
    runs = r.json()
    assert [(g["id"], g["gate"], g["status"], g["actor_name"]) for g in runs] == [
        ("run2", "load", "error", None),
        ("run1", "escalation", "failed", "olga"),
        ("run0", "conversations", "passed", "mia"),
    ]
    assert runs[1]["actor"] == f"user:{ids['olga']}/token:t1" and runs[2]["ran_in"] == "test"
    assert [g["id"] for g in client.get(path, params={"digest": digest}, headers=_as(tokens["aaron"])).json()] == [
        "run1",
        "run0",
    ]
    assert (
        client.get("/api/environments/test/agents/harbor-support/gate-runs", headers=_as(tokens["aaron"])).status_code
        == 403
    )  # aaron reads prod only
    assert client.get("/api/environments/dev/agents/harbor-support/gate-runs", headers=_as(tokens["ada"])).json() == []
    assert client.get(
        "/api/environments/nowhere/agents/harbor-support/gate-runs", headers=_as(tokens["ada"])
    ).status_code in (403, 404)
    assert client.get(path).status_code == 401
