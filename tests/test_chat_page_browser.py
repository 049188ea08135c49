"""The chat page at `/` in a real browser (Debian's Chromium through Playwright) against a real
worker: served under the console's strict content-security policy, never framed, and it still
chats, with no policy violation and no script error."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.browser import A11Y_CHECK, LiveServer, launch
from voxgate.api.app import create_app
from voxgate.api.console import CONTENT_SECURITY_POLICY
from voxgate.config import Settings

playwright_api = pytest.importorskip("playwright.sync_api")

# every violation the page reports, kept where the test can read it
WATCH_VIOLATIONS = """
window.cspViolations = [];
document.addEventListener("securitypolicyviolation",
  (e) => window.cspViolations.push(`${e.violatedDirective}: ${e.blockedURI || "inline"}`));
"""


@pytest.fixture(scope="module")
def worker(harbor_bundle: Any, harbor_backend: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp: Path = tmp_path_factory.mktemp("chat-page")
    settings = Settings(database_url=f"sqlite:///{tmp / 'voxgate.db'}", data_dir=tmp)
    with LiveServer(create_app(settings, [harbor_bundle])) as server:
        yield server.url


def test_the_chat_page_chats_under_the_strict_policy(worker: str) -> None:
    with playwright_api.sync_playwright() as p:
        browser = launch(p)
        try:
            page = browser.new_page()
            page.set_default_timeout(30_000)
            errors: list[str] = []
            page.on("console", lambda m: errors.append(f"console.{m.type}: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
            page.on("response", lambda r: errors.append(f"{r.status} {r.url}") if r.status >= 400 else None)
            page.add_init_script(WATCH_VIOLATIONS)
            response = page.goto(f"{worker}/")
            assert response is not None and response.status == 200
            assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
            assert "frame-ancestors 'none'" in CONTENT_SECURITY_POLICY
            assert "unsafe-inline" not in CONTENT_SECURITY_POLICY

            log = page.get_by_role("log")
            agent = log.locator(".msg.agent")
            agent.first.wait_for()  # the greeting: the page found the agent and opened its socket
            box = page.get_by_label("Your message")
            playwright_api.expect(box).to_be_enabled()
            box.fill("what are your opening hours")
            page.get_by_role("button", name="Send").click()
            playwright_api.expect(log.locator(".msg.user")).to_have_text("what are your opening hours")
            playwright_api.expect(agent).to_have_count(2)
            playwright_api.expect(page.locator("#details")).not_to_have_text("—")
            # the stylesheet applied too (an inline style would have been blocked)
            assert page.evaluate("getComputedStyle(document.querySelector('header')).display") == "flex"

            assert page.evaluate("window.cspViolations") == []
            assert errors == []
            assert page.evaluate(A11Y_CHECK) == []
        finally:
            browser.close()
