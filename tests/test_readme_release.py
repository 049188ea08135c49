"""The README's "Change the agent and release it" section, run line by line against a fresh demo.

The commands are read from the README's fenced `sh` block, so the README cannot drift from the
product: a newcomer who types them gets what this test checks. The only changes made to them
are the ports (the demo runs on free ones here), the shell they run in (a clean HOME and
the checkout's virtualenv on PATH, as `. .venv/bin/activate` gives), the folder of rendered fixed
prompts and of intent-example vectors (the test run's shared ones, when it has them), the run's choice of
voice (`VOXGATE_PIPER`, when it sets one), and prod's load gate:
the packaged policy with 1 caller for 8 s instead of 4 for 30 s (the walkthrough runs that gate
twice, which would be most of this test's time), and a p95 bound of 5 s instead of 1.5 s: with
one call the p95 is the slowest turn, and this test shares two cores with the rest of the suite,
so one turn delayed by another test's burst would fail the walkthrough for a reason that is not
the walkthrough's (the load gate itself is tested in tests/test_gates.py; latency in bench/).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sqlite3
import stat
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.helpers.paths import ROOT
from voxgate.governance.environments import DEFAULT_POLICY_DIR

pytestmark = pytest.mark.slow

SECTION = "## Change the agent and release it"
OLD_QUESTION = "What's the five digit postcode where you have the problem?"
NEW_QUESTION = "Which five digit postcode is affected?"


def readme_commands() -> list[str]:
    """The command lines of the section's first ```sh block (comments and blank lines skipped)."""
    text = (ROOT / "README.md").read_text("utf-8")
    start = text.index(SECTION)
    block = re.search(r"```sh\n(.*?)```", text[start:], re.S)
    assert block is not None, "the walkthrough section has no sh block"
    return [line.strip() for line in block.group(1).splitlines() if line.strip() and not line.lstrip().startswith("#")]


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


class Demo:
    """`voxgate demo` in a working directory of its own, its output collected as it comes."""

    def __init__(self, cwd: Path, env: dict[str, str], ports: dict[str, int]):
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [
                str(ROOT / ".venv" / "bin" / "voxgate"),
                "demo",
                "--port",
                str(ports["prod"]),
                "--dev-port",
                str(ports["dev"]),
                "--test-port",
                str(ports["test"]),
                "--backend-port",
                str(ports["backend"]),
            ],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, prefix: str, timeout_s: float) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if line.startswith(prefix):
                    return line
            assert self.proc.poll() is None, "\n".join(self.lines)
            time.sleep(0.2)
        raise AssertionError(f"no '{prefix}' line within {timeout_s} s:\n" + "\n".join(self.lines))

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.reader.join(timeout=10)
        return "\n".join(self.lines)


def test_the_readme_release_walkthrough_works_as_printed(tmp_path: Path) -> None:
    commands = readme_commands()
    assert any(c.startswith("voxgate release publish") for c in commands)
    prod, dev, test, backend = _free_ports(4)
    ports = {"prod": prod, "dev": dev, "test": test, "backend": backend}
    work, home = tmp_path / "checkout", tmp_path / "home"
    work.mkdir()
    home.mkdir()
    (work / "examples").symlink_to(ROOT / "examples")  # the checkout's examples, as a newcomer has them
    (work / "docs").symlink_to(ROOT / "docs")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VOXGATE_", "HARBOR_"))}
    for shared in ("VOXGATE_SPEECH_CACHE_DIR", "VOXGATE_EMBEDDING_CACHE_DIR", "VOXGATE_PIPER"):
        if shared in os.environ:
            # the prompts and vectors the run's other workers already made, as workers sharing a volume have
            # them, and the run's choice of voice
            env[shared] = os.environ[shared]
    env.update(
        HOME=str(home),
        PATH=f"{ROOT / '.venv' / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}",
        VIRTUAL_ENV=str(ROOT / ".venv"),
        PYTHONUNBUFFERED="1",
        # the connector's base_url default names the demo backend's default port
        HARBOR_API_URL=f"http://127.0.0.1:{backend}",
    )
    env["VOXGATE_POLICY_DIR"] = str(_short_load_gate_policies(tmp_path / "policies"))
    demo = Demo(work, env, ports)
    outputs: list[tuple[str, str]] = []
    try:
        ready = demo.wait_for("ready:", 420)
        assert "harbor-support sha256:" in ready, "\n".join(demo.lines)
        v1 = _check_the_seeded_release(work, prod)
        # the released agent reaches the demo backend with the key the demo keeps as a secret file
        started = httpx.post(f"http://127.0.0.1:{prod}/api/agents/harbor-support/sessions", timeout=10).json()
        turn = httpx.post(
            f"http://127.0.0.1:{prod}/api/sessions/{started['session_id']}/turns",
            json={"text": "is there an outage at 21146"},
            timeout=10,
        ).json()
        assert turn["actions"][0]["status"] == "ok", turn
        assert httpx.get(f"http://127.0.0.1:{backend}/health", timeout=5).json()["customers"] == 300
        for command in commands:
            line = (
                command.replace("127.0.0.1:8600", f"127.0.0.1:{prod}")
                .replace("127.0.0.1:8601", f"127.0.0.1:{dev}")
                .replace("127.0.0.1:8602", f"127.0.0.1:{test}")
            )
            done = subprocess.run(["bash", "-c", line], cwd=work, env=env, capture_output=True, text=True, timeout=400)
            output = done.stdout + done.stderr
            assert done.returncode == 0, f"{command}\n exited {done.returncode}:\n{output}"
            assert "Traceback" not in output, f"{command}\n{output}"
            outputs.append((command, output))

        def said(prefix: str) -> list[str]:
            return [out for cmd, out in outputs if cmd.startswith(prefix)]

        dev_chat, prod_chat = (
            said("voxgate chat --url http://127.0.0.1:8601"),
            said("voxgate chat --url http://127.0.0.1:8600"),
        )
        assert NEW_QUESTION in dev_chat[0]  # the dev worker serves the deployed change
        assert OLD_QUESTION in prod_chat[0] and NEW_QUESTION not in prod_chat[0]  # prod: only what was published
        # what the caller heard (transcribed by the simulated caller: approximately)
        published_call, rolled_back_call = (out.lower() for out in said("voxgate call "))
        assert "affected" in published_call or "which" in published_call, published_call
        assert "affected" not in rolled_back_call, rolled_back_call
        history = said("voxgate release history")[0]
        assert re.search(r"rollback .* by olga", history) and re.search(r"publish .* by omar", history), history
        gates_out = said("voxgate gates run")[0]
        assert "6/6 gates passed" in gates_out, gates_out

        # prod serves v1 again, and the calls it took are stored with the digest that answered them
        after = httpx.get(f"http://127.0.0.1:{prod}/health", timeout=10).json()
        assert after["served"][0]["bundle_digest"] == v1
        with sqlite3.connect(work / "var" / "voxgate.db") as conn:
            rows = conn.execute(
                "SELECT bundle_digest FROM sessions WHERE environment = 'prod' AND channel = 'twilio' "
                "ORDER BY started_at"
            ).fetchall()
            v2 = rows[0][0]
            # what the prod agent said on each call, exactly: the new question, then after the rollback the old
            asked = [
                conn.execute("SELECT group_concat(agent_text, ' ') FROM turns WHERE session_id = ?", (sid,)).fetchone()[
                    0
                ]
                for (sid,) in conn.execute(
                    "SELECT id FROM sessions WHERE environment = 'prod' AND channel = 'twilio' ORDER BY started_at"
                )
            ]
            maya = conn.execute("SELECT id FROM users WHERE username = 'maya'").fetchone()[0]
            runners = {
                r[0].split("/")[0] for r in conn.execute("SELECT actor_id FROM gate_runs WHERE digest = ?", (v2,))
            }
        assert len(rows) == 2 and rows[1][0] == v1 and v2 not in (None, v1)
        assert NEW_QUESTION in asked[0] and OLD_QUESTION in asked[1] and NEW_QUESTION not in asked[1], asked
        assert runners == {f"user:{maya}"}  # the gates ran as the maker who was signed in
    finally:
        log = demo.stop()
    assert demo.proc.returncode == 0 and "demo stopped" in log, log
    for port in ports.values():  # every port is free again (a restarted demo could listen)
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", port))
    # one line per conversation the demo's workers held
    assert re.search(r"call \w+ started: harbor-support 1\.1\.0 in prod", log), log
    assert re.search(r"chat \w+ started: harbor-support 1\.1\.0 in dev", log), log


def _short_load_gate_policies(target: Path) -> Path:
    """A copy of the packaged policy directory whose load gate is smaller (its size is a setting)."""
    target.mkdir()
    for source in DEFAULT_POLICY_DIR.iterdir():
        if source.is_file() and source.suffix in (".yaml", ".cedar", ".cedarschema"):
            (target / source.name).write_text(source.read_text("utf-8"), "utf-8")
    environments = target / "environments.yaml"
    text = environments.read_text("utf-8")
    load = "{name: load, calls: 4, duration_s: 30, p95_ms: 1500,"
    assert text.count(load) == 1, "the packaged load gate changed: update this copy"
    environments.write_text(text.replace(load, "{name: load, calls: 1, duration_s: 8, p95_ms: 5000,"), "utf-8")
    return target


def _check_the_seeded_release(work: Path, prod: int) -> str:
    """What the console shows after a first start: harbor-support live in prod with a digest, its
    gate evidence, its approval by someone other than its author, and the release history."""
    profile = json.loads((work / "var" / "demo-profile.json").read_text())
    assert stat.S_IMODE((work / "var" / "demo-profile.json").stat().st_mode) == 0o600
    for name in ("admin", "maya", "omar", "olga"):
        assert stat.S_IMODE((work / "var" / "demo-users" / f"{name}.password").stat().st_mode) == 0o600
    api = httpx.Client(
        base_url=f"http://127.0.0.1:{prod}", headers={"Authorization": f"Bearer {profile['token']}"}, timeout=30
    )
    with api:
        health = api.get("/health").json()
        assert health["mode"] == "released" and health["environment"] == "prod"
        digest = health["served"][0]["bundle_digest"]
        assert digest.startswith("sha256:") and health["served"][0]["version"] == "1.0.0"
        history = api.get("/api/environments/prod/releases", params={"agent": "harbor-support"}).json()
        assert [(h["action"], h["digest"], h["actor_name"]) for h in history] == [("publish", digest, "omar")]
        gates = api.get("/api/environments/prod/agents/harbor-support/gates", params={"digest": digest}).json()
        assert {g["gate"]: g["status"] for g in gates["gates"]} == dict.fromkeys(
            ("conversations", "escalation", "red_team", "data_access", "rollback", "load"), "passed"
        )
        request = next(r for r in api.get("/api/publish-requests").json() if r["digest"] == digest)
        assert (request["requested_by_name"], request["decided_by_name"], request["status"]) == (
            "maya",
            "omar",
            "published",
        )
        bundle = next(b for b in api.get("/api/bundles").json() if b["digest"] == digest)
        assert bundle["author"] == request["requested_by"] != request["decided_by"]
        checklist = api.get("/api/environments/prod/agents/harbor-support/checklist", params={"digest": digest}).json()
        assert len(checklist["items"]) == 18 and checklist["ready"] is True
        assert all(i["status"] in ("pass", "warn") and i["evidence"] for i in checklist["items"]), checklist
        dev = api.get("/api/environments/dev/releases", params={"agent": "harbor-support"}).json()
        test = api.get("/api/environments/test/releases", params={"agent": "harbor-support"}).json()
        assert dev[-1]["action"] == "deploy" and dev[-1]["actor_name"] == "maya"
        assert test[-1]["action"] == "promote" and test[-1]["digest"] == digest
    return str(digest)


def test_the_walkthrough_is_what_the_readme_says() -> None:
    """The parser reads the block a newcomer sees: the maker edits, the approver approves, the operator rolls back."""
    commands = readme_commands()
    logins = [c.split("--username ")[1].split()[0] for c in commands if c.startswith("voxgate login")]
    assert logins == ["maya", "omar", "olga"]
    assert commands.index(next(c for c in commands if c.startswith("voxgate release request"))) < commands.index(
        next(c for c in commands if "--username omar" in c)
    )
