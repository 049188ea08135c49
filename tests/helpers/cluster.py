"""A real voxgate cluster for the tests, throwaway and on loopback: a fresh database in the run's
PostgreSQL, a Redis of its own, N `voxgate serve` worker processes in released mode (the Harbor agent
published to prod through the real pipeline, speech models preloaded) and HAProxy in front of them
with a configuration rendered from deploy/haproxy/haproxy.cfg — what compose runs, with loopback
ports.

`running_cluster()` starts it and stops it (SIGTERM, a second SIGTERM, then SIGKILL; the ports are
checked free). `Cluster` drives it: `url(n)` and `lb_url`, `kill9(n)`, `sigterm(n)`, `restart(n)`,
which worker a session ran on, what HAProxy thinks of each worker (its admin socket), and a new
release through any worker's API. Workers are numbered from 1. Each worker's output goes to its own
log file; `LogsOnFailure` (a pytest plugin the cluster's fixture registers) attaches what each log
gained during a test to that test's failure report.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import io
import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tests.helpers import loopback
from tests.helpers.databases import PG_URL, query
from tests.helpers.org import add_user, bearer
from tests.helpers.paths import HARBOR_AGENT, ROOT
from tests.helpers.policies import policy_copy, relax_prod
from tests.helpers.servers import child_env, free_port
from voxgate.api.app import create_app
from voxgate.config import Settings
from voxgate.governance import bundle_store
from voxgate.governance.environments import load_governance
from voxgate.governance.identity import Identity
from voxgate.signing import KeyPair
from voxgate.store.db import Database

#: the environment the workers serve: released bundles only, as in production
ENVIRONMENT = "prod"
AGENT = "harbor-support"
#: prod's limit on concurrent calls in the cluster's policies (the issue's admission check uses 5)
MAX_CONCURRENT_CALLS = 5
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
HAPROXY_TEMPLATE = ROOT / "deploy" / "haproxy" / "haproxy.cfg"
BACKEND = "voxgate_workers"
#: the file descriptors HAProxy may use here (compose's maxconn needs more than a test process's limit)
HAPROXY_MAXCONN = 2000
#: three workers loading their speech models at once on a small, busy machine
START_TIMEOUT_S = 420.0
#: how long a worker may take to leave (or rejoin) HAProxy's rotation once its readiness changed
ROTATION_TIMEOUT_S = 30.0
#: how long a stopping worker gets after each signal (SIGTERM drains; a second stops at once)
STOP_TIMEOUT_S = 30.0
POLL_S = 0.1
#: how much of each log a failure report shows
LOG_TAIL_CHARS = 12000

#: what every worker runs with, besides its addresses: models in before it is ready, one speech thread
#: (three workers share the machine), heartbeats often enough that a killed worker is noticed well within
#: the 30 s the failover allows, alerts evaluated often, and no per-address limit on new chats (every
#: test client, and HAProxy, is 127.0.0.1)
WORKER_SETTINGS = {
    "VOXGATE_VOICE_PRELOAD": "true",
    "VOXGATE_SPEECH_WORKERS": "1",
    "VOXGATE_ASR_MODEL": "tiny.en",
    "VOXGATE_WORKER_HEARTBEAT_S": "2",
    "VOXGATE_WORKER_LIVENESS_TIMEOUT_S": "10",
    "VOXGATE_ALERT_INTERVAL_S": "1",
    "VOXGATE_CHAT_SESSIONS_PER_MINUTE": "0",
    "VOXGATE_LOG_LEVEL": "info",
}

#: the people of the cluster's organisation: name -> (environment, role) bindings
PEOPLE: dict[str, tuple[tuple[str, str], ...]] = {
    "mia": (("dev", "maker"), ("test", "maker"), ("prod", "maker")),
    "aaron": (("prod", "approver"),),
    "ada": (("*", "admin"),),
    "audrey": (("*", "auditor"),),
    "dora": (("*", "desk_agent"),),
}


class ClusterError(AssertionError):
    """The cluster could not be started or driven; the message says which part and shows its log."""


def cluster_policies(tmp: Path, edit: Callable[[str], str] | None = None) -> Path:
    """The packaged policies with prod's gates and checklist not blocking and its concurrent-call
    limit at MAX_CONCURRENT_CALLS, then `edit` (for a test's own change): the workers' policy_dir."""

    def change(text_: str) -> str:
        relaxed = relax_prod(text_)
        limit = "quotas: {max_concurrent_calls: 200}"
        assert relaxed.count(limit) == 1, "prod's quota is not where the cluster harness expects it"
        relaxed = relaxed.replace(limit, f"quotas: {{max_concurrent_calls: {MAX_CONCURRENT_CALLS}}}")
        return edit(relaxed) if edit is not None else relaxed

    return policy_copy(tmp, change)


# ---- the parts: PostgreSQL database, Redis, HAProxy ---------------------------------------------------


@contextlib.contextmanager
def fresh_database() -> Iterator[str]:
    """A database of its own in the run's PostgreSQL (psycopg URL), dropped afterwards."""
    if not PG_URL:
        raise ClusterError("no test PostgreSQL in this run: start the tests with scripts/run-tests.sh (make test)")
    base = make_url(PG_URL.replace("postgresql://", "postgresql+psycopg://", 1))
    name = f"voxgate_cluster_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))  # a generated identifier: no bind parameter here
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextlib.contextmanager
def own_redis(directory: Path) -> Iterator[str]:
    """A redis-server of the cluster's own (scripts/redis-throwaway.sh) on a free loopback port."""
    script = ROOT / "scripts" / "redis-throwaway.sh"
    out = subprocess.run(
        [str(script), "start", str(directory), str(free_port())], capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        raise ClusterError(f"redis-server did not start: {out.stderr or out.stdout}")
    try:
        yield out.stdout.strip()
    finally:
        subprocess.run([str(script), "stop", str(directory)], capture_output=True, check=False)


def haproxy_config(template: str, port: int, workers: dict[str, int], admin_socket: Path) -> str:
    """deploy/haproxy/haproxy.cfg with this cluster's addresses: the frontend on 127.0.0.1:`port`, one
    `server` line per worker (name -> loopback port), an admin socket, and a maxconn the test process's
    file descriptors allow. Balancing, stickiness (none), timeouts and the readiness check (its interval
    and its rise and fall counts included) are the template's own."""
    lines = template.splitlines()
    rendered: list[str] = []
    replaced = {"bind": 0, "servers": 0, "maxconn": 0}
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("bind "):
            rendered.append(f"    bind 127.0.0.1:{port}")
            replaced["bind"] += 1
        elif stripped.startswith("server "):
            if not replaced["servers"]:
                rendered += [f"    server {name} 127.0.0.1:{p} check" for name, p in workers.items()]
            replaced["servers"] += 1
        elif stripped.startswith("maxconn ") and not rendered[-1].strip().startswith("#"):
            rendered.append(f"    maxconn {HAPROXY_MAXCONN}")
            rendered.append(f"    stats socket {admin_socket} mode 600 level admin")
            replaced["maxconn"] += 1
        else:
            rendered.append(line)
    missing = [what for what, count in replaced.items() if count == 0]
    if missing:
        raise ClusterError(f"{HAPROXY_TEMPLATE} no longer has what the test cluster replaces: {', '.join(missing)}")
    for rule in ("balance roundrobin", "timeout tunnel 1h", "http-check send meth GET uri /health/ready"):
        if rule not in template:
            raise ClusterError(f"{HAPROXY_TEMPLATE} lost '{rule}', which the cluster tests rely on")
    if re.search(r"^\s*(cookie|stick|hash-type|balance source)", template, re.M):
        raise ClusterError(f"{HAPROXY_TEMPLATE} makes sessions sticky; the cluster tests expect none")
    return "\n".join(rendered) + "\n"


class HAProxy:
    """HAProxy in the foreground, its output in a log file, asked about its servers on its admin socket."""

    def __init__(self, directory: Path, workers: dict[str, int]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.socket_path = directory / "haproxy.sock"
        self.config = directory / "haproxy.cfg"
        self.log = directory / "haproxy.log"
        self.config.write_text(
            haproxy_config(HAPROXY_TEMPLATE.read_text("utf-8"), self.port, workers, self.socket_path), "utf-8"
        )
        check = subprocess.run([HAPROXY, "-c", "-q", "-f", str(self.config)], capture_output=True, text=True)
        if check.returncode != 0:
            raise ClusterError(f"HAProxy refuses the rendered configuration:\n{check.stdout}{check.stderr}")
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [HAPROXY, "-db", "-f", str(self.config)], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )

    def command(self, line: str) -> str:
        """One command on the admin socket; its answer."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(str(self.socket_path))
            s.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode("utf-8", "replace")

    def states(self) -> dict[str, str]:
        """Each worker's status in the backend as HAProxy sees it now: UP, DOWN, "UP 1/2", MAINT…"""
        stat = self.command("show stat").lstrip("# ")
        rows = csv.DictReader(io.StringIO(stat))
        return {
            row["svname"]: row["status"]
            for row in rows
            if row.get("pxname") == BACKEND and row.get("svname") not in ("FRONTEND", "BACKEND")
        }

    def wait_for_socket(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.socket_path.exists():
            if self.proc.poll() is not None:
                raise ClusterError(f"HAProxy exited ({self.proc.returncode}):\n{tail(self.log)}")
            if time.monotonic() > deadline:
                raise ClusterError(f"HAProxy did not open its admin socket:\n{tail(self.log)}")
            time.sleep(POLL_S)

    def log_size(self) -> int:
        """How long its log is now (a mark for `tunnels`)."""
        return self.log.stat().st_size if self.log.exists() else 0

    def tunnels(self, path: str, count: int, since: int = 0, timeout_s: float = 30.0) -> list[str]:
        """The servers of the first `count` WebSocket tunnels to `path` logged after byte `since` (HAProxy
        logs a tunnel when it closes: wait up to `timeout_s` for them)."""
        pattern = re.compile(rf"{BACKEND}/(\S+) \S+ 101 .*\"GET {re.escape(path)}")
        deadline = time.monotonic() + timeout_s
        while True:
            found = [m.group(1) for m in pattern.finditer(read_from(self.log, since))]
            if len(found) >= count or time.monotonic() > deadline:
                return found[:count]
            time.sleep(POLL_S)

    def routed(self, path_pattern: str, since: int = 0) -> list[tuple[str, str]]:
        """(server, the pattern's first group) of each request logged after byte `since` whose path
        matches `path_pattern` (a regular expression with one group)."""
        pattern = re.compile(rf"{BACKEND}/(\S+) .*\"[A-Z]+ {path_pattern}")
        return [(m.group(1), m.group(2)) for m in pattern.finditer(read_from(self.log, since))]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def read_from(path: Path, start: int = 0) -> str:
    """A log file from byte `start` on ("" when there is none)."""
    try:
        with path.open("rb") as f:
            f.seek(start)
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


class WebhookReceiver:
    """An HTTP endpoint on loopback that keeps the JSON body of every POST (the alerts' webhook)."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                received.append(json.loads(body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def tail(path: Path, chars: int = LOG_TAIL_CHARS, start: int = 0) -> str:
    """The end of a log file (from byte `start`), at most `chars` characters."""
    data = read_from(path, start)
    return data if len(data) <= chars else f"…{data[-chars:]}"


# ---- the workers -------------------------------------------------------------------------------------


class ClusterWorker:
    """One `voxgate serve` process of the cluster, always on the same loopback port."""

    def __init__(self, n: int, data_dir: Path, env: dict[str, str]) -> None:
        self.n = n
        self.name = f"worker-{n}"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data_dir = data_dir
        self.log = data_dir.parent / f"{self.name}.log"
        self.env = {**env, "VOXGATE_DATA_DIR": str(data_dir), "VOXGATE_ADVERTISE_URL": self.url}
        self.proc: subprocess.Popen[bytes] | None = None
        self.worker_id: str | None = None  # its id in the `workers` table, once it answered /health
        self.ids: list[str] = []  # every id it had (a restart registers a new one)

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://", 1)

    def start(self) -> None:
        with self.log.open("ab") as out:
            out.write(f"---- {self.name} starting on port {self.port} ----\n".encode())
            out.flush()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "voxgate.cli", "serve", "--port", str(self.port), "--env", ENVIRONMENT],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=ROOT,
            )

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def ready(self) -> bool:
        """Whether it answers /health/ready with 200 now (and, the first time, learn its worker id)."""
        if not self.running:
            assert self.proc is not None
            raise ClusterError(f"{self.name} exited ({self.proc.returncode}):\n{tail(self.log)}")
        try:
            if loopback.get(f"{self.url}/health/ready", timeout=5).status_code != 200:
                return False
            health = loopback.get(f"{self.url}/health", timeout=5).json()
        except httpx.TransportError:
            return False
        self.worker_id = health["worker"]
        if self.worker_id not in self.ids:
            self.ids.append(self.worker_id)
        return True

    def log_size(self) -> int:
        """How long its log is now (a mark for `log_since`)."""
        return self.log.stat().st_size if self.log.exists() else 0

    def log_since(self, mark: int) -> str:
        """What it logged after byte `mark`."""
        return read_from(self.log, mark)

    def wait_for_log(self, text_: str, since: int = 0, timeout_s: float = ROTATION_TIMEOUT_S) -> None:
        """Wait until it logs `text_` (after byte `since`)."""
        deadline = time.monotonic() + timeout_s
        while text_ not in self.log_since(since):
            if time.monotonic() > deadline:
                raise ClusterError(f"{self.name} did not log {text_!r} within {timeout_s:g} s:\n{tail(self.log)}")
            time.sleep(POLL_S)

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None and self.proc.poll() is None, f"{self.name} is not running"
        self.proc.send_signal(sig)

    def wait_exit(self, timeout_s: float = STOP_TIMEOUT_S) -> int:
        """Its exit status, once it has exited (ClusterError after `timeout_s`)."""
        assert self.proc is not None
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            raise ClusterError(f"{self.name} did not exit within {timeout_s:g} s:\n{tail(self.log)}") from None

    def stop(self) -> None:
        """SIGTERM (it drains), a second SIGTERM (it stops at once), then SIGKILL."""
        for sig in (signal.SIGTERM, signal.SIGTERM, signal.SIGKILL):
            if not self.running:
                return
            assert self.proc is not None
            self.proc.send_signal(sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(STOP_TIMEOUT_S)


# ---- the cluster -------------------------------------------------------------------------------------


@dataclass
class Timings:
    """How long starting the cluster took, in seconds (printed by the fixture; no test asserts them)."""

    seed_s: float = 0.0
    workers_ready_s: float = 0.0
    in_rotation_s: float = 0.0

    def __str__(self) -> str:
        return (
            f"cluster started: release seeded in {self.seed_s:.1f} s, workers ready (models loaded) in "
            f"{self.workers_ready_s:.1f} s, all in HAProxy's rotation {self.in_rotation_s:.1f} s later"
        )


@dataclass
class Cluster:
    """A running cluster: its workers, HAProxy, database and Redis, and the people's API tokens."""

    root: Path
    db_url: str
    redis_url: str
    policy_dir: Path
    workers: list[ClusterWorker]
    haproxy: HAProxy
    tokens: dict[str, str]
    maker_key: KeyPair
    maker_id: str
    webhooks: WebhookReceiver
    digest: str = ""
    timings: Timings = field(default_factory=Timings)

    # -- addresses

    @property
    def lb_url(self) -> str:
        """HAProxy's frontend."""
        return self.haproxy.url

    @property
    def lb_ws_url(self) -> str:
        return self.haproxy.url.replace("http://", "ws://", 1)

    def worker(self, n: int) -> ClusterWorker:
        """Worker `n` (from 1)."""
        if not 1 <= n <= len(self.workers):
            raise ValueError(f"the cluster has workers 1..{len(self.workers)}, not {n}")
        return self.workers[n - 1]

    def url(self, n: int) -> str:
        """Worker `n`'s own address (past HAProxy)."""
        return self.worker(n).url

    def ws_url(self, n: int) -> str:
        return self.worker(n).ws_url

    def headers(self, who: str) -> dict[str, str]:
        """The headers of a request made as one of PEOPLE."""
        return bearer(self.tokens[who])

    # -- which worker

    def number_of(self, worker_id: str | None) -> int:
        """The number of the worker whose id (in the `workers` table) is `worker_id`, in any of its lives."""
        for w in self.workers:
            if worker_id in w.ids:
                return w.n
        raise ClusterError(f"no worker of the cluster has id {worker_id!r}")

    def session_worker(self, session_id: str) -> int:
        """The number of the worker a session's row says holds it."""
        rows = query(self.db_url, "SELECT worker_id FROM sessions WHERE id = :s", s=session_id)
        if not rows:
            raise ClusterError(f"no session {session_id} in the database")
        return self.number_of(rows[0].worker_id)

    def active_calls(self) -> dict[int, int]:
        """Calls each running worker holds now (its /health)."""
        out = {}
        for w in self.workers:
            if w.running:
                out[w.n] = loopback.get(f"{w.url}/health", timeout=5).json()["active_calls"]
        return out

    def refused_calls(self) -> dict[int, int]:
        """Calls each running worker has refused since it started (its /health)."""
        return {
            w.n: loopback.get(f"{w.url}/health", timeout=5).json()["calls_refused"] for w in self.workers if w.running
        }

    # -- HAProxy's view

    def rotation(self) -> dict[int, str]:
        """Each worker's status in HAProxy now, by number."""
        return {int(name.rsplit("-", 1)[1]): status for name, status in self.haproxy.states().items()}

    def wait_rotation(self, n: int, up: bool, timeout_s: float = ROTATION_TIMEOUT_S) -> None:
        """Wait until HAProxy has worker `n` in rotation (UP) or out of it (DOWN)."""
        want = "UP" if up else "DOWN"
        deadline = time.monotonic() + timeout_s
        while (status := self.rotation().get(n)) != want:
            if time.monotonic() > deadline:
                raise ClusterError(
                    f"HAProxy still has worker {n} {status!r}, not {want}, after {timeout_s:g} s:\n"
                    f"{tail(self.haproxy.log, 3000)}\n{tail(self.worker(n).log, 3000)}"
                )
            time.sleep(POLL_S)

    # -- lifecycle

    def start_workers(self, numbers: list[int]) -> None:
        """Start workers `numbers` at once and wait until each is ready (its speech models loaded)."""
        for n in numbers:
            self.worker(n).start()
        deadline = time.monotonic() + START_TIMEOUT_S
        waiting = set(numbers)
        while waiting:
            waiting = {n for n in waiting if not self.worker(n).ready()}
            if waiting and time.monotonic() > deadline:
                shown = "\n".join(f"== worker-{n} ==\n{tail(self.worker(n).log, 4000)}" for n in sorted(waiting))
                raise ClusterError(f"workers {sorted(waiting)} not ready after {START_TIMEOUT_S:g} s:\n{shown}")
            if waiting:
                time.sleep(POLL_S * 5)

    def kill9(self, n: int) -> None:
        """SIGKILL worker `n`, as a crash: nothing of it runs on (its calls and sockets drop)."""
        w = self.worker(n)
        w.signal(signal.SIGKILL)
        w.wait_exit()

    def sigterm(self, n: int) -> None:
        """SIGTERM worker `n`: it drains (not ready, no new conversations, calls in progress go on)."""
        self.worker(n).signal(signal.SIGTERM)

    def restart(self, n: int) -> None:
        """Start worker `n` again on its port (after it exited or was killed; stopped first if not) and
        wait until it is ready and back in HAProxy's rotation."""
        w = self.worker(n)
        if w.running:
            w.stop()
        self.start_workers([n])
        self.wait_rotation(n, up=True)

    def heal(self) -> None:
        """Start every worker that is not running (after a test stopped or killed it) and wait until all
        are ready and in HAProxy's rotation."""
        stopped = [w.n for w in self.workers if not w.running]
        if stopped:
            self.start_workers(stopped)
        for w in self.workers:
            self.wait_rotation(w.n, up=True)

    def wait_for_calls(self, active: int, timeout_s: float = ROTATION_TIMEOUT_S) -> None:
        """Wait until the running workers hold `active` calls between them."""
        deadline = time.monotonic() + timeout_s
        while (held := sum(self.active_calls().values())) != active:
            if time.monotonic() > deadline:
                raise ClusterError(f"the workers hold {held} calls, not {active}, after {timeout_s:g} s")
            time.sleep(POLL_S)

    def stop(self) -> list[str]:
        """Stop workers and HAProxy; the ports still held afterwards (there should be none)."""
        for w in self.workers:
            if w.running:
                w.signal(signal.SIGTERM)  # all drain at once
        for w in self.workers:
            if w.proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    w.proc.wait(STOP_TIMEOUT_S)
            w.stop()  # one still draining: a second SIGTERM, then SIGKILL
        self.haproxy.stop()
        return [f"{name} port {port}" for name, port in self.ports().items() if not port_free(port)]

    def ports(self) -> dict[str, int]:
        return {**{w.name: w.port for w in self.workers}, "haproxy": self.haproxy.port}

    # -- releases

    def release(self, agent_dir: Path, via: str | None = None, reason: str = "cluster test release") -> str:
        """Build `agent_dir` for prod, sign it as the maker, and take it through the whole pipeline
        (upload, deploy to dev, promote to test, publish request, approval, publish) on the API at
        `via` (default worker 1); the digest now active in prod."""
        built = bundle_store.build_bundle(
            agent_dir, load_governance(self.policy_dir).get(ENVIRONMENT), [], self.maker_key, self.maker_id
        )
        with httpx.Client(base_url=via or self.url(1), timeout=60, trust_env=False) as client:
            publish(client, self.tokens, built, self.maker_key.public.b64, reason)
        self.digest = built.digest
        return built.digest

    # -- logs

    def logs(self) -> dict[str, Path]:
        """Every log the cluster writes, by part."""
        return {**{w.name: w.log for w in self.workers}, "haproxy": self.haproxy.log}


def port_free(port: int) -> bool:
    """Whether a server could listen on 127.0.0.1:`port` now (as uvicorn binds: SO_REUSEADDR)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def publish(
    client: httpx.Client | TestClient,
    tokens: dict[str, str],
    built: bundle_store.BuiltBundle,
    public_key: str,
    reason: str,
) -> None:
    """`built` through every step of the release pipeline on `client`'s server, each step as the person
    whose duty it is; the maker registers `public_key` (the key that signed it) first (again is harmless)."""
    maker, approver = bearer(tokens["mia"]), bearer(tokens["aaron"])

    def step(method: str, path: str, body: dict[str, Any], who: dict[str, str], expect: tuple[int, ...]) -> Any:
        r = client.request(method, path, json=body, headers=who)
        if r.status_code not in expect:
            raise ClusterError(f"{method} {path}: {r.status_code} {r.text}")
        return r.json() if r.content else None

    step("POST", "/api/me/keys", {"public_key": public_key}, maker, (201,))
    upload = {
        "archive": base64.b64encode(built.archive).decode("ascii"),
        "signature": built.signature,
        "key_id": built.key_id,
        "manifest": built.manifest,
    }
    step("POST", "/api/environments/dev/bundles", upload, maker, (201,))
    deploy = {"digest": built.digest, "reason": reason}
    step("POST", f"/api/environments/dev/agents/{AGENT}/deploy", deploy, maker, (200,))
    step("POST", f"/api/environments/test/agents/{AGENT}/promote", {"reason": reason}, maker, (200,))
    request = step("POST", f"/api/environments/prod/agents/{AGENT}/publish-requests", {"reason": reason}, maker, (201,))
    step("POST", f"/api/publish-requests/{request['id']}/approve", {"comment": "cluster test"}, approver, (200,))
    step("POST", f"/api/publish-requests/{request['id']}/publish", {"reason": reason}, approver, (200,))


def versioned_agent(tmp: Path, version: str) -> Path:
    """A copy of the Harbor agent whose agent.yaml says `version` (another bundle, another digest)."""
    target = tmp / f"harbor-support-{version}"
    shutil.copytree(HARBOR_AGENT, target)
    manifest = target / "agent.yaml"
    original = manifest.read_text("utf-8")
    changed = re.sub(r"^version:.*$", f"version: {version}", original, count=1, flags=re.M)
    if changed == original:
        raise ClusterError("the Harbor agent's agent.yaml has no top-level version line to change")
    manifest.write_text(changed, "utf-8")
    return target


def _seed(root: Path, db_url: str, redis_url: str, policy_dir: Path, keys: Path) -> tuple[dict[str, str], KeyPair, str]:
    """The organisation's people and the Harbor agent's first release to prod, through an in-process
    app on the cluster's database (before any worker starts, so that a ready worker serves it): the
    people's tokens, the maker's key and id. The installation's keys (privacy salt, audit signing key)
    are made here, once, and shared by every worker as a mounted secret would be."""
    db = Database(db_url)
    try:
        db.migrate()
        identity = Identity(db)
        tokens = {name: add_user(identity, name, *bindings) for name, bindings in PEOPLE.items()}
        maker = identity.find_user("mia")
        assert maker is not None
        maker_id = maker.id
    finally:
        db.dispose()
    key = KeyPair.generate()
    seed_dir = root / "seed"
    settings = Settings(
        data_dir=seed_dir,
        database_url=db_url,
        redis_url=redis_url,
        environment=ENVIRONMENT,
        policy_dir=policy_dir,
        secrets_dir=root / "secrets",
    )
    built = bundle_store.build_bundle(HARBOR_AGENT, load_governance(policy_dir).get(ENVIRONMENT), [], key, maker_id)
    with TestClient(create_app(settings, [])) as client:
        publish(client, tokens, built, key.public.b64, "the cluster's first release")
    shutil.copytree(seed_dir / "keys", keys)
    return tokens, key, maker_id


@contextlib.contextmanager
def running_cluster(
    root: Path,
    harbor_url: str,
    harbor_key: str,
    *,
    workers: int = 3,
    policy_edit: Callable[[str], str] | None = None,
    settings: dict[str, str] | None = None,
) -> Iterator[Cluster]:
    """A cluster under `root`: a fresh PostgreSQL database, its own Redis, `workers` workers serving prod
    (the Harbor agent released, talking to the Harbor backend at `harbor_url`) and HAProxy in front;
    stopped and removed on exit. `settings` (VOXGATE_* variables) add to or override WORKER_SETTINGS."""
    root.mkdir(parents=True, exist_ok=True)
    webhooks = WebhookReceiver()
    with contextlib.ExitStack() as stack:
        stack.callback(webhooks.stop)
        db_url = stack.enter_context(fresh_database())
        redis_url = stack.enter_context(own_redis(root / "redis"))
        t0 = time.monotonic()
        policy_dir = cluster_policies(root, policy_edit)
        keys = root / "keys"
        tokens, key, maker_id = _seed(root, db_url, redis_url, policy_dir, keys)
        seeded = time.monotonic()
        env = child_env()
        env.update(
            WORKER_SETTINGS,
            VOXGATE_DATABASE_URL=db_url,
            VOXGATE_REDIS_URL=redis_url,
            VOXGATE_ENVIRONMENT=ENVIRONMENT,
            VOXGATE_POLICY_DIR=str(policy_dir),
            VOXGATE_SECRETS_DIR=str(root / "secrets"),
            VOXGATE_ALERT_WEBHOOK_URL=webhooks.url,  # prod's alert webhook (env:VOXGATE_ALERT_WEBHOOK_URL)
            HARBOR_API_URL=harbor_url,
            HARBOR_API_KEY=harbor_key,
            PYTHONUNBUFFERED="1",
        )
        env.update(settings or {})
        members = []
        for n in range(1, workers + 1):
            data_dir = root / f"worker-{n}"
            data_dir.mkdir(mode=0o700)
            shutil.copytree(keys, data_dir / "keys")  # the installation's shared keys, as compose mounts them
            members.append(ClusterWorker(n, data_dir, env))
        proxy = HAProxy(root, {w.name: w.port for w in members})
        cluster = Cluster(
            root=root,
            db_url=db_url,
            redis_url=redis_url,
            policy_dir=policy_dir,
            workers=members,
            haproxy=proxy,
            tokens=tokens,
            maker_key=key,
            maker_id=maker_id,
            webhooks=webhooks,
        )
        try:
            proxy.wait_for_socket(30)
            cluster.start_workers([w.n for w in members])
            ready = time.monotonic()
            for w in members:
                cluster.wait_rotation(w.n, up=True)
            active = query(db_url, "SELECT digest FROM active_bundles WHERE environment = :e", e=ENVIRONMENT)
            cluster.digest = active[0].digest
            cluster.timings = Timings(seeded - t0, ready - seeded, time.monotonic() - ready)
            yield cluster
        finally:
            held = cluster.stop()
        if held:
            raise ClusterError(f"ports still held after the cluster stopped: {', '.join(held)}")


class LogsOnFailure:
    """A pytest plugin: a failed test of `module` gets what each of the cluster's logs gained while it
    ran (setup, call and teardown) as sections of its report."""

    def __init__(self, cluster: Cluster, module: Path) -> None:
        self.cluster = cluster
        self.module = module
        self.offsets: dict[str, dict[str, int]] = {}

    def _sizes(self) -> dict[str, int]:
        return {name: path.stat().st_size if path.exists() else 0 for name, path in self.cluster.logs().items()}

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        if item.path == self.module:
            self.offsets[item.nodeid] = self._sizes()

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
        report = yield
        if report.failed and item.path == self.module:
            start = self.offsets.get(item.nodeid, {})
            for name, path in self.cluster.logs().items():
                report.sections.append((f"Captured {name} log", tail(path, start=start.get(name, 0))))
        return report
