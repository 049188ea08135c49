"""Shared helpers for browser tests: a live voxgate server on loopback and Debian's Chromium
driven by Playwright through `executable_path` (never `playwright install`).

Screenshots go to ``$VOXGATE_SCREENSHOT_DIR`` (default ``var/screenshots``, ignored by git);
``scripts/screenshots.sh`` copies the main pages into ``docs/screenshots`` for the README.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tests.helpers.paths import ROOT
from tests.helpers.servers import LiveServer

__all__ = ["A11Y_CHECK", "CHROMIUM", "MEDIA_ARGS", "LiveServer", "launch", "screenshot_dir"]

CHROMIUM = os.environ.get("VOXGATE_CHROMIUM", "/usr/lib/chromium/chromium")
# A fake camera/microphone that needs no permission prompt; pass
# f"--use-file-for-fake-audio-capture={wav}" as an extra argument to speak a known file.
MEDIA_ARGS = [
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
]


def screenshot_dir() -> Path:
    """Where browser tests write their screenshots (created)."""
    path = Path(os.environ.get("VOXGATE_SCREENSHOT_DIR", ROOT / "var" / "screenshots"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def launch(playwright: Any, extra_args: list[str] | None = None) -> Any:
    """Chromium from Debian, headless, with fake media devices."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=[*MEDIA_ARGS, *(extra_args or [])])


#: Basic accessibility checks of a page as it stands (evaluate it with Playwright; [] means none found):
#: every control has an accessible name, images have alt text, charts, frames and links are named,
#: one visible h1 and one visible main landmark, no duplicate ids, a page language, tables with
#: header cells.
A11Y_CHECK = """() => {
  const problems = [];
  const visible = (el) => !!(el.offsetWidth || el.offsetHeight || el.getClientRects().length);
  const named = (el) => {
    if ((el.getAttribute("aria-label") || "").trim()) return true;
    const by = el.getAttribute("aria-labelledby");
    if (by && by.split(/\\s+/).some((id) => (document.getElementById(id)?.textContent || "").trim())) return true;
    if (el.id && [...document.querySelectorAll("label")].some((l) => l.htmlFor === el.id && l.textContent.trim())) return true;
    if (el.closest("label") && el.closest("label").textContent.trim()) return true;
    if ((el.getAttribute("title") || "").trim()) return true;
    if (el.tagName === "BUTTON" && el.textContent.trim()) return true;
    if (el.tagName === "INPUT" && ["submit", "button", "reset"].includes(el.type) && el.value.trim()) return true;
    return false;
  };
  for (const el of document.querySelectorAll("input:not([type=hidden]), select, textarea, button, meter")) {
    if (!named(el)) problems.push(`unnamed ${el.tagName.toLowerCase()} ${el.outerHTML.slice(0, 80)}`);
  }
  for (const img of document.querySelectorAll("img")) if (!img.hasAttribute("alt")) problems.push(`img without alt: ${img.src}`);
  for (const svg of document.querySelectorAll("main svg[role=img]")) if (!named(svg)) problems.push("chart without a name");
  for (const frame of document.querySelectorAll("iframe")) if (!(frame.title || "").trim()) problems.push("iframe without title");
  for (const a of document.querySelectorAll("a[href]")) if (!named(a) && !a.textContent.trim()) problems.push(`empty link ${a.href}`);
  const h1 = [...document.querySelectorAll("h1")].filter(visible);
  if (h1.length !== 1) problems.push(`${h1.length} visible h1 elements`);
  const ids = [...document.querySelectorAll("[id]")].map((e) => e.id);
  const dupes = ids.filter((id, i) => ids.indexOf(id) !== i);
  if (dupes.length) problems.push(`duplicate ids: ${[...new Set(dupes)].join(", ")}`);
  if ([...document.querySelectorAll("main")].filter(visible).length !== 1) problems.push("not one visible main landmark");
  if (document.documentElement.lang !== "en") problems.push("no page language");
  for (const table of document.querySelectorAll("main table")) {
    if (!table.querySelector("th")) problems.push("a table without header cells");
  }
  return problems;
}"""
