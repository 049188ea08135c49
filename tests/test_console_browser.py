"""The admin console in a real browser (Debian's Chromium through Playwright) against a real server.

One dev worker on loopback serves the Harbor agent; the module's fixture builds and signs two real
bundles and takes the first through dev → test → an approved publish to prod, then leaves the
second waiting for approval. Tests sign in as different users: an approver approves and publishes
the pending request and sees it in the history; a maker sees no approve button and is refused by
the API; the analytics page counts conversations made during the test; every page renders for an
admin without script errors and passes basic accessibility checks. Screenshots go to
`screenshot_dir()` (docs/screenshots via scripts/screenshots.sh).
"""

from __future__ import annotations

import base64
import datetime as dt
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from tests.browser import A11Y_CHECK, LiveServer, launch, screenshot_dir
from tests.conftest import HARBOR_AGENT
from tests.test_releases import relax_prod
from voxgate.api.app import create_app
from voxgate.config import Settings
from voxgate.governance import bundles
from voxgate.governance.environments import load_governance
from voxgate.governance.identity import Identity
from voxgate.governance.signing import KeyPair
from voxgate.store.db import Database

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

PASSWORD = "correct horse battery staple"
AGENT = "harbor-support"
VIEWPORT = {"width": 1280, "height": 800}
# prod keeps its checklist but only items this setup can pass block a publish (the gates are
# covered by test_gates.py); dev gets an alert rule so escalations open a real incident here
PROD_CHECKLIST = ("      gates: []\n      checklist: {required: [environments, no_direct_publish, dlp_policy, approval, "
                  "credentials, signed_bundle]}\n")
DEV_ALERT = ("      alerts:\n        - {name: escalation-rate, metric: escalation_rate, above: 0.3, window: 1h, "
             "min_sessions: 2, severity: critical}\n")
PAGES = {  # route → main heading
    "environments": "Environments", "agents": "Agents and versions", "releases": "Releases",
    "gates": "Gates and readiness", "dlp": "DLP policies", "users": "Users and roles", "audit": "Audit log",
    "transcripts": "Transcripts", "analytics": "Analytics", "incidents": "Alerts and incidents",
    "usage": "Usage and capacity", "phone": "Browser phone",
}


def console_policies(tmp: Path) -> Path:
    policies = tmp / "policies"
    shutil.copytree(Path(bundles.__file__).parent / "policies", policies)
    env_file = policies / "environments.yaml"
    text = relax_prod(env_file.read_text(), PROD_CHECKLIST)
    dev_gates = "      retention_days: 7\n      gates: []\n"
    assert text.count(dev_gates) == 1
    env_file.write_text(text.replace(dev_gates, dev_gates + DEV_ALERT))
    return policies


@dataclass
class Site:
    url: str
    tokens: dict[str, str]
    versions: dict[str, str] = field(default_factory=dict)  # version → digest
    pending_request: str = ""

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


GREETINGS = {"1.0.0": "How can I help you today?", "1.1.0": "What can I do for you today?",
             "1.2.0": "Hello, what do you need today?"}


def _version(agent_dir: Path, version: str) -> None:
    """The agent as of `version`: only its version and the end of its greeting change."""
    path = agent_dir / "agent.yaml"
    text = path.read_text()
    current = text.split("version: ", 1)[1].split("\n", 1)[0]
    path.write_text(text.replace(f"version: {current}", f"version: {version}", 1)
                    .replace(GREETINGS.get(current, GREETINGS["1.0.0"]), GREETINGS[version]))


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, harbor_bundle: Any) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("console")
    policies = console_policies(tmp)
    db_url = f"sqlite:///{tmp / 'voxgate.db'}"
    db = Database(db_url)
    db.migrate()
    identity = Identity(db)
    tokens: dict[str, str] = {}
    ids: dict[str, str] = {}
    for name, bindings in {"ada": [("*", "admin")], "mia": [("dev", "maker"), ("test", "maker"), ("prod", "maker")],
                           "aaron": [("prod", "approver")], "olga": [("*", "operator")],
                           "audrey": [("*", "auditor")]}.items():
        user = identity.create_user(name, PASSWORD, name.capitalize())
        for env, role in bindings:
            identity.bind_role(user.id, env, role, None)
        tokens[name], _ = identity.create_token(user.id, "console test", ["*"], 1)
        ids[name] = user.id
    db.dispose()
    settings = Settings(data_dir=tmp / "data", database_url=db_url, environment="dev", policy_dir=policies,
                        alert_interval_s=1.0, environment_urls={"prod": "http://127.0.0.1:9"})
    config = load_governance(policies)
    key = KeyPair.generate()
    agent_dir = tmp / AGENT
    shutil.copytree(HARBOR_AGENT, agent_dir)
    with LiveServer(create_app(settings, [harbor_bundle])) as server:
        s = Site(server.url, tokens)
        with s.api("mia") as maker, s.api("aaron") as approver:
            assert maker.post("/api/me/keys", json={"public_key": key.public.b64}).status_code == 201

            def upload(version: str) -> str:
                _version(agent_dir, version)
                built = bundles.build_bundle(agent_dir, config.get("prod"), [], key, ids["mia"])
                r = maker.post("/api/environments/dev/bundles", json={
                    "archive": base64.b64encode(built.archive).decode(), "signature": built.signature,
                    "key_id": built.key_id, "manifest": built.manifest})
                assert r.status_code == 201, r.text
                s.versions[version] = built.digest
                return built.digest

            def to_test_and_request(digest: str, reason: str) -> str:
                for path, body in ((f"/api/environments/dev/agents/{AGENT}/deploy", {"digest": digest, "reason": reason}),
                                   (f"/api/environments/test/agents/{AGENT}/promote", {"reason": reason})):
                    r = maker.post(path, json=body)
                    assert r.status_code == 200, r.text
                r = maker.post(f"/api/environments/prod/agents/{AGENT}/publish-requests", json={"reason": reason})
                assert r.status_code == 201, r.text
                return str(r.json()["id"])

            first = to_test_and_request(upload("1.0.0"), "first release")
            assert approver.post(f"/api/publish-requests/{first}/approve", json={"comment": "reviewed"}).status_code == 200
            r = approver.post(f"/api/publish-requests/{first}/publish", json={})
            assert r.status_code == 200, r.text
            s.pending_request = to_test_and_request(upload("1.1.0"), "friendlier greeting")
            upload("1.2.0")  # uploaded, not yet deployed anywhere
        with s.api("ada") as admin:  # a time-limited DLP exception, so the DLP page has one to show
            r = admin.post("/api/environments/prod/dlp/exceptions", json={
                "connector": "harbor_api", "rule": "endpoint", "host": "billing.harbor.internal",
                "reason": "billing API moves to its own host during the migration",
                "expires_at": (dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=7)).isoformat()})
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
        self.page.on("console", lambda m: self.errors.append(f"console.{m.type}: {m.text}") if m.type == "error" else None)
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
    page.get_by_text("Write a comment first").wait_for()
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
    answer = page.evaluate("""async (id) => {
        const r = await fetch(`/api/publish-requests/${id}/approve`, {method: "POST", credentials: "same-origin",
            headers: {"Content-Type": "application/json", "X-Voxgate-CSRF": "1"}, body: JSON.stringify({comment: "mine"})});
        return {status: r.status, denied: r.headers.get("X-Voxgate-Denied")};
    }""", request_id)
    assert answer == {"status": 403, "denied": "publish.approve"}
    # and with the maker's API token
    with site.api("mia") as maker:
        r = maker.post(f"/api/publish-requests/{request_id}/approve", json={"comment": "mine"})
        assert r.status_code == 403 and r.headers["X-Voxgate-Denied"] == "publish.approve"
        assert request_id in [r["id"] for r in maker.get("/api/publish-requests", params={"status": "pending", "environment": "prod"}).json()]
    tab.errors = [e for e in tab.errors if "403" not in e]  # the refused fetch above is logged by Chromium
    assert tab.errors == []


def _kpi(page: Any, name: str) -> int:
    return int(page.locator(f"[data-kpi={name}] .value").inner_text())


def _chart_total(page: Any, name: str) -> int:
    return int(page.evaluate(f"""() => [...document.querySelectorAll("svg[data-chart={name}] g[data-total]")]
        .reduce((sum, g) => sum + Number(g.dataset.total), 0)"""))


def _voice_call(site: Site, *says: str) -> Any:
    """A real-time simulated caller on the native voice socket (its own thread and event loop)."""
    import asyncio
    import concurrent.futures

    from voxgate.testing.caller import run_call

    ws = site.url.replace("http://", "ws://")
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, run_call(ws, protocol="native", voice="flite-slt", transcribe=False,
                                                 says=list(says))).result(timeout=180)


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
    p50s = [t for t in page.locator("table[data-chart-table=latency] tbody tr td:nth-of-type(1)").all_inner_texts()
            if t.strip() != "—"]
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
    for route, heading in PAGES.items():
        tab.open(route, heading)
        assert page.locator("h1").inner_text() == heading
        assert page.evaluate("document.activeElement.tagName") == "H1", route  # focus moved to the new page
        assert page.locator(f"nav a[aria-current=page][data-page={route}]").count() == 1
        assert page.locator("main .message.error").count() == 0, page.locator("main .message.error").all_inner_texts()
        if route == "agents":  # the diff between two versions, in the page
            page.get_by_role("button", name="Show the differences").click()
            diff = page.locator("pre.diff").inner_text()
            assert "+version: 1.2.0" in diff and "Hello, what do you need today?" in diff
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
    page.get_by_text("The chain verifies").wait_for()
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
