"""The admin console in a real browser (Debian's Chromium through Playwright) against a real server.

One dev worker on loopback serves the Harbor agent; the module's fixture builds and signs two real
bundles and takes the first through dev → test → an approved publish to prod, then leaves the
second waiting for approval. Tests sign in as different users: an approver approves and publishes
the pending request and sees it in the history; a maker sees no approve button and is refused by
the API; the analytics page counts conversations made during the test; every page renders for an
admin without script errors and passes basic accessibility checks; people are named, not numbered;
the worker says it serves development builds; mistyped addresses get a page, not JSON; the browser
phone's controls follow the call. A second, released-mode worker starts empty (the empty pages) and
shows an approval that still cannot be published. Screenshots go to `screenshot_dir()`
(docs/screenshots via scripts/screenshots.sh).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers.browser import A11Y_CHECK, LiveServer, launch, screenshot_dir
from tests.helpers.paths import HARBOR_AGENT
from tests.helpers.policies import policy_copy, relax_prod
from voxgate.api.app import create_app
from voxgate.api.console import install_not_found_page
from voxgate.config import Settings
from voxgate.governance import bundle_store
from voxgate.governance.environments import load_governance
from voxgate.governance.identity import Identity
from voxgate.signing import KeyPair
from voxgate.store.db import Database
from voxgate.store.models import GateRunRow

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

PASSWORD = "correct horse battery staple"
AGENT = "harbor-support"
VIEWPORT = {"width": 1280, "height": 800}
# prod keeps its checklist but only items this setup can pass block a publish (the gates are
# covered by test_gates.py); dev gets an alert rule so escalations open a real incident here
PROD_CHECKLIST = (
    "      gates: []\n      checklist: {required: [environments, no_direct_publish, dlp_policy, approval, "
    "credentials, signed_bundle]}\n"
)
DEV_ALERT = (
    "      alerts:\n        - {name: escalation-rate, metric: escalation_rate, above: 0.3, window: 1h, "
    "min_sessions: 2, severity: critical}\n"
)
PAGES = {  # route → main heading
    "environments": "Environments",
    "agents": "Agents and versions",
    "releases": "Releases",
    "gates": "Gates and readiness",
    "dlp": "DLP policies",
    "users": "Users and roles",
    "audit": "Audit log",
    "transcripts": "Transcripts",
    "analytics": "Analytics",
    "incidents": "Alerts and incidents",
    "usage": "Usage and capacity",
    "cluster": "Cluster",
    "phone": "Browser phone",
}


def console_policies(tmp: Path) -> Path:
    def edit(text: str) -> str:
        text = relax_prod(text, PROD_CHECKLIST)
        dev_gates = "      retention_days: 7\n      gates: []\n"
        assert text.count(dev_gates) == 1
        return text.replace(dev_gates, dev_gates + DEV_ALERT)

    return policy_copy(tmp, edit)


@dataclass
class Site:
    url: str
    tokens: dict[str, str]
    versions: dict[str, str] = field(default_factory=dict)  # version → digest
    pending_request: str = ""
    ids: dict[str, str] = field(default_factory=dict)  # user name → user id

    def api(self, who: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.tokens[who]}"} if who else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60, trust_env=False)


def talk(site: Site, *lines: str) -> str:
    """A real chat conversation with the served agent, as an anonymous caller."""
    with site.api() as client:
        r = client.post(f"/api/agents/{AGENT}/sessions")
        assert r.status_code == 201, r.text
        sid: str = r.json()["session_id"]
        for line in lines:
            assert client.post(f"/api/sessions/{sid}/turns", json={"text": line}).status_code == 200
        assert client.post(f"/api/sessions/{sid}/end").status_code in (200, 404)  # 404: the agent ended it
    return sid


GREETINGS = {
    "1.0.0": "How can I help you today?",
    "1.1.0": "What can I do for you today?",
    "1.2.0": "Hello, what do you need today?",
}


def _version(agent_dir: Path, version: str) -> None:
    """The agent as of `version`: only its version and the end of its greeting change."""
    path = agent_dir / "agent.yaml"
    text = path.read_text()
    current = text.split("version: ", 1)[1].split("\n", 1)[0]
    path.write_text(
        text.replace(f"version: {current}", f"version: {version}", 1).replace(
            GREETINGS.get(current, GREETINGS["1.0.0"]), GREETINGS[version]
        )
    )


USERS = {
    "ada": [("*", "admin")],
    "mia": [("dev", "maker"), ("test", "maker"), ("prod", "maker")],
    "aaron": [("prod", "approver")],
    "olga": [("*", "operator")],
    "audrey": [("*", "auditor")],
}


def make_users(db_url: str, users: dict[str, list[tuple[str, str]]]) -> tuple[dict[str, str], dict[str, str]]:
    """The users with their role bindings and an API token each: (tokens, ids) by user name."""
    db = Database(db_url)
    db.migrate()
    identity = Identity(db)
    tokens: dict[str, str] = {}
    ids: dict[str, str] = {}
    for name, bindings in users.items():
        user = identity.create_user(name, PASSWORD, name.capitalize())
        for env, role in bindings:
            identity.bind_role(user.id, env, role, None)
        tokens[name], _ = identity.create_token(user.id, "console test", ["*"], 1)
        ids[name] = user.id
    db.dispose()
    return tokens, ids


def console_app(settings: Settings, bundles_served: list[Any]) -> Any:
    app = create_app(settings, bundles_served)
    install_not_found_page(app)  # create_app may install it already: a second call changes nothing
    return app


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, harbor_bundle: Any) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("console")
    policies = console_policies(tmp)
    db_url = f"sqlite:///{tmp / 'voxgate.db'}"
    tokens, ids = make_users(db_url, USERS)
    settings = Settings(
        data_dir=tmp / "data",
        database_url=db_url,
        environment="dev",
        policy_dir=policies,
        alert_interval_s=1.0,
        environment_urls={"prod": "http://127.0.0.1:9"},
    )
    config = load_governance(policies)
    key = KeyPair.generate()
    agent_dir = tmp / AGENT
    shutil.copytree(HARBOR_AGENT, agent_dir)
    with LiveServer(console_app(settings, [harbor_bundle])) as server:
        s = Site(server.url, tokens, ids=ids)
        with s.api("mia") as maker, s.api("aaron") as approver:
            assert maker.post("/api/me/keys", json={"public_key": key.public.b64}).status_code == 201

            def upload(version: str) -> str:
                _version(agent_dir, version)
                built = bundle_store.build_bundle(agent_dir, config.get("prod"), [], key, ids["mia"])
                r = maker.post(
                    "/api/environments/dev/bundles",
                    json={
                        "archive": base64.b64encode(built.archive).decode(),
                        "signature": built.signature,
                        "key_id": built.key_id,
                        "manifest": built.manifest,
                    },
                )
                assert r.status_code == 201, r.text
                s.versions[version] = built.digest
                return built.digest

            def to_test_and_request(digest: str, reason: str) -> str:
                for path, body in (
                    (f"/api/environments/dev/agents/{AGENT}/deploy", {"digest": digest, "reason": reason}),
                    (f"/api/environments/test/agents/{AGENT}/promote", {"reason": reason}),
                ):
                    r = maker.post(path, json=body)
                    assert r.status_code == 200, r.text
                r = maker.post(f"/api/environments/prod/agents/{AGENT}/publish-requests", json={"reason": reason})
                assert r.status_code == 201, r.text
                return str(r.json()["id"])

            first = to_test_and_request(upload("1.0.0"), "first release")
            assert (
                approver.post(f"/api/publish-requests/{first}/approve", json={"comment": "reviewed"}).status_code == 200
            )
            r = approver.post(f"/api/publish-requests/{first}/publish", json={})
            assert r.status_code == 200, r.text
            s.pending_request = to_test_and_request(upload("1.1.0"), "friendlier greeting")
            upload("1.2.0")  # uploaded, not yet deployed anywhere
        # a gate run on 1.2.0 for entering prod, by the maker (evidence as `voxgate gates run` stores it)
        db = Database(db_url)
        with db.orm() as orm, orm.begin():
            orm.add(
                GateRunRow(
                    id="run-conversations-1",
                    digest=s.versions["1.2.0"],
                    agent=AGENT,
                    target_environment="prod",
                    ran_in="test",
                    gate="conversations",
                    status="passed",
                    actor_id=f"user:{ids['mia']}",
                    duration_ms=4200.0,
                )
            )
        db.dispose()
        with s.api("ada") as admin:  # a time-limited DLP exception, so the DLP page has one to show
            r = admin.post(
                "/api/environments/prod/dlp/exceptions",
                json={
                    "connector": "harbor_api",
                    "rule": "endpoint",
                    "host": "billing.harbor.internal",
                    "reason": "billing API moves to its own host during the migration",
                    "expires_at": (dt.datetime.now(dt.UTC) + dt.timedelta(days=7)).isoformat(),
                },
            )
            assert r.status_code == 201, r.text
        talk(s, "what are your opening hours", "no thanks that's all")
        talk(s, "I want to talk to a person")
        talk(s)
        yield s


@pytest.fixture(scope="module")
def browser(site: Site) -> Iterator[Any]:
    with playwright_api.sync_playwright() as p:
        chromium = launch(p)
        yield chromium
        chromium.close()


class Page:
    """A signed-in browser page that records script errors."""

    def __init__(self, browser: Any, site: Site):
        self.context = browser.new_context(viewport=VIEWPORT)
        self.context.set_default_timeout(15_000)
        self.page = self.context.new_page()
        self.site = site
        self.errors: list[str] = []
        self.page.on(
            "console", lambda m: self.errors.append(f"console.{m.type}: {m.text}") if m.type == "error" else None
        )
        self.page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))

    def sign_in(self, username: str) -> Any:
        page = self.page
        page.goto(f"{self.site.url}/console/")
        page.get_by_label("User name").fill(username)
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        page.get_by_role("navigation", name="Console sections").wait_for()
        # the probe before signing in answered 401 (Chromium logs that as an error); nothing after may fail
        self.errors.clear()
        return page

    def open(self, route: str, heading: str | None = None) -> Any:
        page = self.page
        page.goto(f"{self.site.url}/console/#/{route}")
        if heading:
            page.get_by_role("heading", level=1, name=heading).wait_for()
        page.locator("main .loading").first.wait_for(state="detached")
        return page

    def shot(self, name: str, top: bool = False) -> None:
        self.page.mouse.move(5, VIEWPORT["height"] - 5)  # no hover effects in the picture
        if top:
            self.page.evaluate("window.scrollTo(0, 0)")
        self.page.screenshot(path=str(screenshot_dir() / f"console-{name}.png"))

    def close(self) -> None:
        self.context.close()


@pytest.fixture()
def tab(browser: Any, site: Site) -> Iterator[Page]:
    page = Page(browser, site)
    yield page
    page.close()


def test_an_approver_reviews_approves_and_publishes(tab: Page, site: Site) -> None:
    page = tab.sign_in("aaron")
    tab.open("releases", "Releases")
    row = page.locator(f"tr[data-request='{site.pending_request}']")
    assert row.get_attribute("data-status") == "pending"
    row.get_by_role("link", name="Review the request to publish harbor-support 1.1.0 to prod").click()
    page.get_by_role("heading", level=1, name="Review publish request").wait_for()
    page.locator("main .loading").first.wait_for(state="detached")
    # the readiness checklist: all 18 items with their evidence, the required ones passing
    items = page.locator("[data-section=checklist] tr[data-checklist-item]")
    assert items.count() == 18
    assert page.locator("[data-section=checklist] [data-ready]").get_attribute("data-ready") == "yes"
    assert page.locator("tr[data-checklist-item=approval]").get_attribute("data-status") == "pass"
    assert "required" in page.locator("tr[data-checklist-item=signed_bundle]").inner_text()
    tab.shot("release-review", top=True)
    # and the change itself: the diff against what prod serves now
    page.get_by_role("button", name="Show the differences from the version live in prod").click()
    diff = page.get_by_label("Differences between the live version and this one")
    assert "What can I do for you today?" in diff.inner_text()
    diff.scroll_into_view_if_needed()
    tab.shot("release-diff")

    approve = page.get_by_role("button", name="Approve")
    approve.click()  # without a comment: refused in the page, nothing sent
    page.locator("#main").get_by_text("Write a comment first").wait_for()
    page.get_by_label("Comment (required: what you checked)").fill("diff and checklist reviewed")
    approve.click()
    page.get_by_text("Approved. It can now be published.").first.wait_for()
    page.get_by_role("button", name="Publish to prod").click()
    page.get_by_text("Published harbor-support 1.1.0 to prod.").first.wait_for()
    page.get_by_role("link", name="See the release history of prod").click()
    page.get_by_role("heading", level=1, name="Releases").wait_for()
    newest = page.locator("tr[data-release]").first
    newest.wait_for()
    assert newest.get_attribute("data-action") == "publish"
    assert newest.get_attribute("data-digest") == site.versions["1.1.0"]
    assert "1.1.0" in newest.inner_text() and "you" in newest.inner_text()  # approved by you
    with site.api("audrey") as auditor:
        history = auditor.get("/api/environments/prod/releases").json()
    assert history[0]["digest"] == site.versions["1.1.0"] and history[0]["request_id"] == site.pending_request
    assert tab.errors == []


def test_a_maker_cannot_approve_in_the_page_or_through_the_api(tab: Page, site: Site) -> None:
    page = tab.sign_in("mia")
    # the maker moves 1.2.0 along the pipeline with the page's own buttons
    tab.open("releases", "Releases")
    page.get_by_label(f"Version of {AGENT} to deploy to dev").select_option(site.versions["1.2.0"])
    page.get_by_role("button", name="Deploy to dev").click()
    page.get_by_text(f"Deployed {AGENT} 1.2.0 to dev.").first.wait_for()
    page.get_by_role("button", name="Promote from dev").click()
    page.get_by_text(f"Promoted {AGENT} 1.2.0 to test.").first.wait_for()
    assert page.get_by_role("button", name="Roll back prod").count() == 0  # not a maker's to do
    page.get_by_role("button", name="Request publish from test").click()
    page.get_by_text(f"Asked to publish {AGENT} 1.2.0 to prod").first.wait_for()
    row = page.locator("tr[data-status=pending]", has_text="1.2.0")
    request_id = row.get_attribute("data-request")
    assert request_id
    row.get_by_role("link").click()
    page.get_by_role("heading", level=1, name="Review publish request").wait_for()
    decision = page.locator("[data-section=decision]")
    decision.get_by_text("You asked for this publish").wait_for()
    assert page.get_by_role("button", name="Approve").count() == 0
    assert page.get_by_role("button", name="Reject").count() == 0
    assert page.get_by_label("Comment (required: what you checked)").count() == 0
    tab.shot("release-maker")

    # the server is the authority: the maker's own sign-in, asking directly, is refused by policy
    answer = page.evaluate(
        """async (id) => {
        const r = await fetch(`/api/publish-requests/${id}/approve`, {method: "POST", credentials: "same-origin",
            headers: {"Content-Type": "application/json", "X-Voxgate-CSRF": "1"}, body: JSON.stringify({comment: "mine"})});
        return {status: r.status, denied: r.headers.get("X-Voxgate-Denied")};
    }""",
        request_id,
    )
    assert answer == {"status": 403, "denied": "publish.approve"}
    # and with the maker's API token
    with site.api("mia") as maker:
        r = maker.post(f"/api/publish-requests/{request_id}/approve", json={"comment": "mine"})
        assert r.status_code == 403 and r.headers["X-Voxgate-Denied"] == "publish.approve"
        assert request_id in [
            r["id"]
            for r in maker.get("/api/publish-requests", params={"status": "pending", "environment": "prod"}).json()
        ]
    tab.errors = [e for e in tab.errors if "403" not in e]  # the refused fetch above is logged by Chromium
    assert tab.errors == []


def _kpi(page: Any, name: str) -> int:
    return int(page.locator(f"[data-kpi={name}] .value").inner_text())


def _chart_total(page: Any, name: str) -> int:
    return int(
        page.evaluate(f"""() => [...document.querySelectorAll("svg[data-chart={name}] g[data-total]")]
        .reduce((sum, g) => sum + Number(g.dataset.total), 0)""")
    )


def _voice_call(site: Site, *says: str) -> Any:
    """A real-time simulated caller on the native voice socket (its own thread and event loop)."""
    import asyncio
    import concurrent.futures

    from voxgate.testing.caller import run_call

    ws = site.url.replace("http://", "ws://")
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(
            asyncio.run, run_call(ws, protocol="native", voice="flite-slt", transcribe=False, says=list(says))
        ).result(timeout=180)


@pytest.mark.slow
def test_analytics_shows_the_conversations_just_made(tab: Page, site: Site) -> None:
    page = tab.sign_in("olga")
    tab.open("analytics", "Analytics")
    sessions, escalated, resolved = _kpi(page, "sessions"), _kpi(page, "escalated"), _kpi(page, "resolved")
    assert sessions >= 3  # the fixture's conversations
    assert _chart_total(page, "outcomes") == sessions
    assert "no voice turns" in page.locator("[data-kpi=latency]").inner_text()

    talk(site, "what are your opening hours", "no thanks that's all")
    talk(site, "I want to talk to a person")
    talk(site, "I want to talk to a person")
    call = _voice_call(site, "what are your opening hours", "no thanks that's all")  # a phone call too
    assert call.error is None and all(t.replied for t in call.turns), call.error
    made = 4
    page.get_by_role("button", name="Refresh").click()
    expect(page.locator("[data-kpi=sessions] .value")).to_have_text(str(sessions + made))
    assert _kpi(page, "escalated") == escalated + 2
    assert _kpi(page, "resolved") == resolved + 2
    assert _chart_total(page, "outcomes") == sessions + made
    # the call's turns are on the latency KPI and chart, as measured by the server
    assert "2 turns" in page.locator("[data-kpi=latency]").inner_text()
    page.locator("[data-chart-figure=latency] summary").click()
    p50s = [
        t
        for t in page.locator("table[data-chart-table=latency] tbody tr td:nth-of-type(1)").all_inner_texts()
        if t.strip() != "—"
    ]
    assert len(p50s) == 1 and float(p50s[0].split()[0].replace(",", "")) > 0
    page.locator("[data-chart-figure=latency] summary").click()
    # the numbers behind the chart, as a screen reader (or anyone) can read them
    page.locator("[data-chart-figure=outcomes] summary").click()
    totals = page.locator("table[data-chart-table=outcomes] tbody tr td:last-child").all_inner_texts()
    assert sum(int(t) for t in totals) == sessions + made
    summary = page.locator("[data-chart-figure=outcomes] p.sr-only").inner_text()
    assert f"Total {sessions + made}." in summary
    # the escalation rate over the period matches the API's
    with site.api("olga") as operator:
        api = operator.get("/api/stats/series", params={"env": "dev", "since": "24h", "bucket": "1h"}).json()
    rate = api["totals"]["escalation_rate"]
    assert page.locator("[data-kpi=escalated] small").inner_text() == f"{int(rate * 100 + 0.5)} %"
    page.locator("[data-chart-figure=outcomes] summary").click()  # fold the table away again
    page.evaluate("document.querySelector('[data-chart-figure=outcomes]').scrollIntoView()")
    tab.shot("analytics-charts")
    assert tab.errors == []


def test_every_page_renders_for_an_admin_and_passes_basic_accessibility_checks(tab: Page, site: Site) -> None:
    page = tab.sign_in("ada")
    links = page.get_by_role("navigation", name="Console sections").get_by_role("link")
    assert links.all_inner_texts() == list(PAGES.values())  # an admin sees every page
    with site.api("ada") as admin:
        live = {env: admin.get(f"/api/environments/{env}").json()["active"] for env in ("dev", "test", "prod")}
    for route, heading in PAGES.items():
        tab.open(route, heading)
        assert page.locator("h1").inner_text() == heading
        # this worker serves the agent directory it was started with: every page says so
        banner = page.locator("#dev-banner")
        assert banner.is_visible(), route
        assert "serves unreleased development builds from agent directories" in banner.inner_text()
        assert page.evaluate("document.activeElement.tagName") == "H1", route  # focus moved to the new page
        assert page.locator(f"nav a[aria-current=page][data-page={route}]").count() == 1
        assert page.locator("main .message.error").count() == 0, page.locator("main .message.error").all_inner_texts()
        if route == "agents":  # every uploaded version, and the diff between two of them, in the page
            assert page.locator("main table tbody tr").count() == len(site.versions)
            assert page.get_by_text("No bundles have been uploaded yet.").count() == 0
            page.get_by_role("button", name="Show the differences").click()
            diff = page.locator("pre.diff").inner_text()
            assert "+version: 1.2.0" in diff and "Hello, what do you need today?" in diff
        if route == "releases":  # per environment, what is live there now
            assert page.get_by_text("No agents yet.").count() == 0
            for env, active in live.items():
                row = page.locator(f"tr[data-live-env={env}][data-live-agent='{AGENT}']")
                assert row.get_attribute("data-live-digest") == active[AGENT], env
                version = next(v for v, d in site.versions.items() if d == active[AGENT])
                assert version in row.inner_text()
        if route == "gates":  # agents with bundles, and the gate runs stored for them
            assert page.get_by_label("Agent").locator("option").all_inner_texts() == [AGENT]
            run = page.locator("tr[data-gate-run=run-conversations-1]")
            assert run.locator("[data-user-id]").inner_text() == "mia"
        problems = page.evaluate(A11Y_CHECK)
        assert problems == [], f"{route}: {problems}"
        assert page.locator("nav[aria-label]").count() >= 1, route  # a labelled nav landmark
        tab.shot(route, top=True)
    assert tab.errors == []
    # pages show real content: the incident the dev alert rule opened, the checklist, the verified chain
    deadline = time.monotonic() + 30
    tab.open("incidents", PAGES["incidents"])
    while page.locator("article[data-incident]").count() == 0:
        assert time.monotonic() < deadline, "the dev alert rule opened no incident"
        time.sleep(0.5)
        page.reload()
        page.get_by_role("heading", level=1, name=PAGES["incidents"]).wait_for()
        page.locator("main .loading").first.wait_for(state="detached")
    tab.shot("incidents")
    tab.open("audit", "Audit log")
    page.get_by_role("button", name="Verify the chain").click()
    page.locator("#main").get_by_text("The chain verifies").wait_for()
    tab.shot("audit")
    tab.open("gates", "Gates and readiness")
    assert page.locator("tr[data-checklist-item]").count() == 18

    # keyboard: after a page load the first Tab reaches the skip link, which moves focus into the page
    page.reload()
    page.get_by_role("heading", level=1, name="Gates and readiness").wait_for()
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.className") == "skip-link"
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.closest('main') !== null")
    assert tab.errors == []


def test_sign_out_and_a_wrong_password(tab: Page, site: Site) -> None:
    page = tab.sign_in("ada")
    page.get_by_role("button", name="Sign out").click()
    page.get_by_role("heading", level=1, name="Sign in").wait_for()
    page.get_by_label("User name").fill("ada")
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("alert").get_by_text("Wrong user name or password.").wait_for()
    assert page.get_by_role("navigation", name="Console sections").is_hidden()


def _named(locator: Any) -> list[tuple[str, str]]:
    """(shown text, user id) of each person shown inside `locator`."""
    people = locator.locator("[data-user-id]")
    return [
        (people.nth(i).inner_text(), people.nth(i).get_attribute("data-user-id") or "") for i in range(people.count())
    ]


def test_people_are_named_with_their_ids_at_hand(tab: Page, site: Site, browser: Any) -> None:
    # an auditor may not list the users: the names come with the records (or GET /api/people)
    ids = site.ids
    page = tab.sign_in("audrey")
    tab.open("releases", "Releases")
    for row in page.locator("tr[data-request]").all():
        assert _named(row)[0] == ("mia", ids["mia"])
    first = page.locator("tr[data-request]").first
    assert ids["mia"] in (first.locator("[data-user-id]").get_attribute("title") or "")  # the id, in the tooltip
    history = page.locator("tr[data-release]")
    history.first.wait_for()
    for row in history.all():
        assert _named(row) == [("aaron", ids["aaron"]), ("aaron", ids["aaron"])]  # published by, approved by
    tab.open("agents", "Agents and versions")
    assert {p for p in _named(page.locator("main table"))} == {("mia", ids["mia"])}  # every version's author
    tab.open("gates", "Gates and readiness")
    assert _named(page.locator("tr[data-gate-run=run-conversations-1]")) == [("mia", ids["mia"])]
    tab.open("audit", "Audit log")
    actors = page.locator("tr[data-seq] td:nth-child(3)").all_inner_texts()
    assert "mia (API token)" in actors and "aaron (API token)" in actors  # uploads, approvals and publishes
    assert not [a for a in actors if a.startswith("user")], actors
    assert page.locator("main code.person").count() == 0  # no user is shown by id alone
    # an approver bound in prod only: the review names the author and the requester
    other = Page(browser, site)
    try:
        page = other.sign_in("aaron")
        other.open(f"releases/request/{site.pending_request}", None)
        page.get_by_role("heading", level=1, name="Review publish request").wait_for()
        page.locator("main .loading").first.wait_for(state="detached")
        facts = page.locator("dl.facts")
        assert ("mia", ids["mia"]) in _named(facts)
        assert page.locator("main code.person").count() == 0
        assert other.errors == []
    finally:
        other.close()
    assert tab.errors == []


def test_the_audit_data_column_wraps_instead_of_being_cut(tab: Page, site: Site) -> None:
    with site.api() as client:  # a failed sign-in: its event names the user name by a sha256 (one long word)
        assert (
            client.post("/api/auth/login", json={"username": "nobody-at-all", "password": "wrong"}).status_code == 401
        )
    page = tab.sign_in("audrey")
    tab.open("audit", "Audit log")
    cells = page.locator("tr[data-seq] td.data")
    texts = cells.all_inner_texts()
    assert texts and not [t for t in texts if t.endswith("…")], texts  # nothing shortened
    # the longest (a release's two digests, or whatever this module's other tests logged before) is there in
    # full, over several lines
    longest = max(range(len(texts)), key=lambda i: len(texts[i]))
    assert len(texts[longest]) > 150, texts[longest]
    lines = page.evaluate(
        "(td) => td.querySelector('span').getClientRects().length", cells.nth(longest).element_handle()
    )
    assert lines > 1
    # a hash is one long word: it breaks too
    assert any(len(t) >= 80 and "_sha256=" in t for t in texts)
    # and nothing sticks out of the table or its cells
    sizes = page.evaluate("""() => {
        const wrap = document.querySelector("tr[data-seq]").closest(".table-wrap");
        const cells = [...document.querySelectorAll("tr[data-seq] td.data")];
        return {wrap: [wrap.scrollWidth, wrap.clientWidth],
                cells: cells.filter((td) => td.scrollWidth > td.clientWidth + 1).length};
    }""")
    assert sizes["wrap"][0] <= sizes["wrap"][1] + 1, sizes
    assert sizes["cells"] == 0, sizes
    assert tab.errors == []


def test_transcripts_say_which_build_answered(tab: Page, site: Site) -> None:
    """This worker serves an agent directory, so its sessions carry no bundle digest. The responses
    are passed through with `bundle_digest` defaulted to null where a record leaves it out, and the
    oldest one given a released digest, so both labels are seen."""
    released = site.versions["1.1.0"]

    def sessions(route: Any) -> None:
        response = route.fetch()
        data = response.json()
        rows = data if isinstance(data, list) else [data]
        for row in rows:
            row.setdefault("bundle_digest", None)
        if isinstance(data, list) and len(data) > 1:
            data[-1]["bundle_digest"] = released
        route.fulfill(
            response=response, body=json.dumps(data), headers={**response.headers, "content-type": "application/json"}
        )

    page = tab.sign_in("audrey")
    page.route("**/api/sessions?*", sessions)
    page.route("**/api/sessions/*", sessions)
    tab.open("transcripts", "Transcripts")
    rows = page.locator("tr[data-session]")
    assert rows.count() >= 3
    builds = page.locator("tr[data-session] [data-build]")
    labels = builds.all_inner_texts()
    assert labels[:-1] == ["unreleased development build"] * (len(labels) - 1)
    assert labels[-1] == released.removeprefix("sha256:")[:12]
    assert builds.last.get_attribute("data-build") == released
    rows.first.get_by_role("link").click()
    page.get_by_role("heading", level=1, name="Transcript").wait_for()
    assert page.locator("dl.facts [data-build]").inner_text() == "unreleased development build"
    assert tab.errors == []


def test_a_mistyped_address_gets_a_page_not_json(tab: Page, site: Site) -> None:
    page = tab.page
    for path in ("/console/nope", "/console/agents/xyz"):  # the console itself says it has no such page
        r = page.goto(f"{site.url}{path}")
        assert r is not None and r.status == 404
        page.get_by_role("heading", level=1, name="Page not found").wait_for()
        assert path in page.locator("main").inner_text()
        assert "Not Found" not in page.content()
    page.get_by_role("link", name="Go to the console").click()
    page.get_by_role("heading", level=1, name="Sign in").wait_for()
    assert page.url == f"{site.url}/console/"
    r = page.goto(f"{site.url}/consol")  # outside the console: a small page with the ways in
    assert r is not None and r.status == 404 and r.headers["content-type"].startswith("text/html")
    page.get_by_role("heading", level=1, name="Page not found").wait_for()
    assert "/consol" in page.locator("main").inner_text()
    hrefs = [a.get_attribute("href") for a in page.locator("main a").all()]
    assert hrefs == ["/console/", "/phone", "/desk"]
    assert page.evaluate(A11Y_CHECK) == []
    # signed in, an unknown page of the console's own
    tab.sign_in("ada")
    page.goto(f"{site.url}/console/#/nope")
    page.get_by_role("heading", level=1, name="Page not found").wait_for()
    page.get_by_role("link", name="Go to Environments").click()
    page.get_by_role("heading", level=1, name="Environments").wait_for()
    # API clients keep their JSON
    with site.api() as client:
        for path, accept in (
            ("/consol", "application/json"),
            ("/consol", "*/*"),
            ("/api/nope", "text/html"),
            ("/console/nope", "application/json"),
        ):
            r = client.get(path, headers={"Accept": accept})
            assert r.status_code == 404 and r.json() == {"detail": "Not Found"}, (path, accept)
    tab.errors = [e for e in tab.errors if "404" not in e]  # the pages themselves answered 404
    assert tab.errors == []


def test_the_phone_controls_follow_the_call(tab: Page, site: Site) -> None:
    page = tab.page
    page.goto(f"{site.url}/phone?agent={AGENT}")
    status = page.locator("#status")
    expect(status).to_have_text("Ready.")
    banner = page.locator("#dev-banner")
    expect(banner).to_be_visible()
    assert "serves unreleased development builds from agent directories" in banner.inner_text()
    call = page.get_by_role("button", name="Call", exact=True)
    hangup = page.get_by_role("button", name="Hang up")
    keys = page.locator("#keypad button")

    def looks(button: Any) -> tuple[float, str]:
        opacity, cursor = button.evaluate("(b) => [getComputedStyle(b).opacity, getComputedStyle(b).cursor]")
        return float(opacity), cursor

    def keypad_enabled() -> set[bool]:
        return {keys.nth(i).is_enabled() for i in range(keys.count())}

    # before a call: only Call does something, and the rest looks disabled
    expect(call).to_be_enabled()
    expect(hangup).to_be_disabled()
    assert keys.count() == 12 and keypad_enabled() == {False}
    assert looks(call) == (1.0, "pointer")
    opacity, cursor = looks(hangup)
    assert opacity < 0.7 and cursor == "not-allowed"
    assert looks(keys.first)[1] == "not-allowed"

    call.click()
    expect(status).to_contain_text("Connected", timeout=60_000)
    expect(call).to_be_disabled()
    expect(hangup).to_be_enabled()
    assert keypad_enabled() == {True}
    assert looks(call)[1] == "not-allowed" and looks(hangup)[1] == "pointer"

    hangup.click()
    expect(status).to_contain_text("Ready")
    assert "Connected" not in status.inner_text()
    expect(call).to_be_enabled()
    expect(hangup).to_be_disabled()
    assert keypad_enabled() == {False}
    page.wait_for_timeout(2500)  # the socket closes after the server ended the conversation
    assert "Connected" not in status.inner_text() and "Ready" in status.inner_text()
    expect(call).to_be_enabled()
    assert tab.errors == []


BLOCKED_PROD = "      gates: [escalation]\n      checklist: {required: [approval, signed_bundle, escalation_tested]}\n"


def test_empty_pages_then_an_approval_that_cannot_be_published_yet(browser: Any, tmp_path: Path) -> None:
    """A released-mode worker on an empty store: the empty pages. Then a version waits for approval
    while prod requires a gate that never ran on it: approving says what still blocks publishing."""
    policies = policy_copy(tmp_path, lambda text: relax_prod(text, BLOCKED_PROD))
    db_url = f"sqlite:///{tmp_path / 'voxgate.db'}"
    tokens, ids = make_users(db_url, {name: USERS[name] for name in ("ada", "mia", "aaron")})
    settings = Settings(data_dir=tmp_path / "data", database_url=db_url, environment="dev", policy_dir=policies)
    with LiveServer(console_app(settings, [])) as server:
        s = Site(server.url, tokens, ids=ids)
        tab = Page(browser, s)
        try:
            page = tab.sign_in("ada")
            tab.open("agents", "Agents and versions")
            page.get_by_text("No bundles have been uploaded yet.").wait_for()
            assert page.locator("#dev-banner").is_hidden()  # released mode: nothing to warn about
            tab.open("releases", "Releases")
            page.get_by_text("No agents yet.").wait_for()
            assert page.locator("tr[data-live-env=prod]").inner_text().count("nothing released here yet") == 1
            tab.open("gates", "Gates and readiness")
            page.get_by_text("No agents yet").wait_for()
            assert tab.errors == []

            key = KeyPair.generate()
            with s.api("mia") as maker:
                assert maker.post("/api/me/keys", json={"public_key": key.public.b64}).status_code == 201
                built = bundle_store.build_bundle(
                    HARBOR_AGENT, load_governance(policies).get("prod"), [], key, ids["mia"]
                )
                r = maker.post(
                    "/api/environments/dev/bundles",
                    json={
                        "archive": base64.b64encode(built.archive).decode(),
                        "signature": built.signature,
                        "key_id": built.key_id,
                        "manifest": built.manifest,
                    },
                )
                assert r.status_code == 201, r.text
                for path, body in (
                    (f"/api/environments/dev/agents/{AGENT}/deploy", {"digest": built.digest}),
                    (f"/api/environments/test/agents/{AGENT}/promote", {}),
                ):
                    assert maker.post(path, json=body).status_code == 200
                r = maker.post(f"/api/environments/prod/agents/{AGENT}/publish-requests", json={"reason": "first"})
                assert r.status_code == 201, r.text
                request_id = r.json()["id"]
            tab.close()

            tab = Page(browser, s)
            page = tab.sign_in("aaron")
            tab.open(f"releases/request/{request_id}")
            page.get_by_role("heading", level=1, name="Review publish request").wait_for()
            ready = page.locator("[data-publish-ready]")
            assert ready.get_attribute("data-publish-ready") == "no"
            page.get_by_label("Comment (required: what you checked)").fill("looked at the diff")
            page.get_by_role("button", name="Approve").click()
            done = page.locator(".message.warn", has_text="Approved")
            done.wait_for()
            text = done.inner_text()
            assert text.startswith("Approved, but it cannot be published yet"), text
            assert '"escalation tested with context preserved"' in text and "escalation (never ran)" in text
            assert "It can now be published" not in page.locator("main").inner_text()
            # the banner and the checklist say the same as the message
            assert page.locator("[data-publish-ready]").get_attribute("data-publish-ready") == "no"
            assert page.locator("[data-section=checklist] [data-ready]").get_attribute("data-ready") == "no"
            assert "escalation (never ran)" in page.locator("[data-publish-ready]").inner_text()
            assert "cannot be published yet" in page.locator("[data-section=decision]").inner_text()
            with s.api("aaron") as approver:  # and the server agrees
                r = approver.post(f"/api/publish-requests/{request_id}/publish", json={})
                assert r.status_code == 409 and "escalation" in r.text
            assert tab.errors == []
        finally:
            tab.close()
