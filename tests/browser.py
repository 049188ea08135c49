"""Shared helpers for browser tests: a live voxgate server on loopback and Debian's Chromium
driven by Playwright through `executable_path` (never `playwright install`).

Screenshots go to ``$VOXGATE_SCREENSHOT_DIR`` (default ``var/screenshots``, ignored by git);
``scripts/screenshots.sh`` copies the main pages into ``docs/screenshots`` for the README.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

import uvicorn

from tests.conftest import ROOT

CHROMIUM = os.environ.get("VOXGATE_CHROMIUM", "/usr/lib/chromium/chromium")
# A fake camera/microphone that needs no permission prompt; pass
# f"--use-file-for-fake-audio-capture={wav}" as an extra argument to speak a known file.
MEDIA_ARGS = ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
              "--autoplay-policy=no-user-gesture-required"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiveServer:
    """A voxgate app served by uvicorn in a thread on a free loopback port."""

    def __init__(self, app: Any, port: int | None = None):
        self.app = app
        self.port = port or free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> "LiveServer":
        self.thread.start()
        deadline = time.time() + 120
        while not self.server.started:
            assert time.time() < deadline, "server did not start"
            assert self.thread.is_alive(), "server crashed on start"
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def screenshot_dir() -> Path:
    path = Path(os.environ.get("VOXGATE_SCREENSHOT_DIR", ROOT / "var" / "screenshots"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def launch(playwright: Any, extra_args: list[str] | None = None) -> Any:
    """Chromium from Debian, headless, with fake media devices."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=[*MEDIA_ARGS, *(extra_args or [])])
