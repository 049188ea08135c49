"""`voxgate demo` starts the backend and the server, serves a conversation, and stops on Ctrl-C."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import ROOT


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_demo_serves_and_stops_cleanly(tmp_path: Path) -> None:
    port, backend_port = _free_port(), _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VOXGATE_", "HARBOR_"))}
    env["VOXGATE_DATA_DIR"] = str(tmp_path / "var")
    proc = subprocess.Popen(
        [sys.executable, "-m", "voxgate.cli", "demo", "--port", str(port), "--backend-port", str(backend_port)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(1200):  # speech models load before the server answers
            try:
                if httpx.get(base + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            time.sleep(0.1)
        started = httpx.post(base + "/api/agents/harbor-support/sessions", timeout=10).json()
        sid = started["session_id"]
        turn = httpx.post(f"{base}/api/sessions/{sid}/turns", json={"text": "is there an outage at 21146"},
                          timeout=10).json()
        assert turn["actions"][0]["status"] == "ok"  # the demo agent reached the demo backend
        assert httpx.get(f"http://127.0.0.1:{backend_port}/health", timeout=5).json()["customers"] == 300
    finally:
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, output
    assert "Ctrl-C stops everything" in output and "demo stopped" in output
    for p in (port, backend_port):  # both ports are free again (a restarted demo could listen)
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", p))
            s.listen()
