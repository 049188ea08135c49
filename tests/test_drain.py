"""Probes and the graceful drain: `GET /health/live` and `/health/ready`, and what a worker does
between a SIGTERM and its exit.

The fast tests run the readiness registry and its checks against real databases (one of them a port
nothing listens on), the app's probes and refusals through its ASGI interface, and `WorkerServer`
(real uvicorn on a loopback socket) told to stop while a line is held. The slow ones start
`voxgate serve` as a process with the Harbor agent and its speech models preloaded, place a real
voice call with the simulated caller, send SIGTERM mid-call and watch the worker drain.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient
from starlette.applications import Starlette
from starlette.websockets import WebSocketDisconnect

from tests.helpers.databases import query
from tests.helpers.paths import HARBOR_AGENT
from tests.helpers.servers import child_env, free_port
from voxgate.api.app import create_app
from voxgate.api.drain import drain
from voxgate.api.health import Check, ReadinessChecks, database_check
from voxgate.api.server import WorkerServer
from voxgate.bundle import BundleSource
from voxgate.channels.admission import DRAINING, Admission
from voxgate.config import Settings
from voxgate.store.db import Database
from voxgate.testing.caller import CallReport, run_call

CALLER_VOICE = "flite-slt"  # a different speaker from the agent's voice (as in test_voice_calls.py)
START_TIMEOUT_S = 180.0  # a loaded machine takes long to load the speech models
EXIT_TIMEOUT_S = 30.0
POLL_S = 0.1


# ---- the readiness registry and its checks ---------------------------------------------------------------


async def test_readiness_is_every_check_and_the_body_names_what_each_found() -> None:
    async def passing() -> Check:
        return Check(True, "ok")

    async def loading() -> Check:
        return Check(False, "loading")

    async def broken() -> Check:
        raise RuntimeError("password=hunter2 in an error message")

    async def hanging() -> Check:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    checks = ReadinessChecks(timeout_s=0.2)
    checks.add("database", passing)
    assert await checks.run() == (True, {"database": "ok"})
    checks.add("speech_models", loading)
    checks.add("redis", broken)
    checks.add("queue", hanging)
    ready, found = await checks.run()
    assert not ready
    assert found == {"database": "ok", "speech_models": "loading", "redis": "error", "queue": "timeout"}
    with pytest.raises(ValueError, match="'redis' is already registered"):
        checks.add("redis", passing)
    checks.add("redis", passing, replace=True)
    checks.remove("speech_models")
    checks.remove("queue")
    assert await checks.run() == (True, {"database": "ok", "redis": "ok"})
    assert checks.names == ["database", "redis"]


async def test_the_database_check_asks_the_database_itself(db_url: str) -> None:
    db = Database(db_url)
    try:
        assert await database_check(db)() == Check(True, "ok")
    finally:
        db.dispose()
    gone = Database(f"postgresql+psycopg://voxgate@127.0.0.1:{free_port()}/voxgate")  # nothing listens there
    try:
        assert await database_check(gone)() == Check(False, "unreachable")
    finally:
        gone.dispose()


# ---- the app's probes and refusals -------------------------------------------------------------------------


@pytest.fixture()
def client(db_url: str, tmp_path: Path, harbor_bundle: BundleSource) -> Iterator[TestClient]:
    settings = Settings(database_url=db_url, data_dir=tmp_path / "data")
    with TestClient(create_app(settings, [harbor_bundle])) as client:
        yield client


def test_the_probes_answer_without_credentials_and_ready_names_a_database_that_is_down(client: TestClient) -> None:
    live = client.get("/health/live")
    assert (live.status_code, live.json()) == (200, {"status": "live"})
    ready = client.get("/health/ready")
    assert ready.status_code == 200, ready.text
    # the models load at the first call (voice_preload is off): readiness does not wait for them
    assert ready.json() == {
        "status": "ready",
        "checks": {"database": "ok", "speech_models": "on_demand", "draining": False},
    }
    state = client.app.state.voxgate  # type: ignore[attr-defined]
    gone = Database(f"postgresql+psycopg://voxgate:secret@127.0.0.1:{free_port()}/voxgate")
    state.readiness_checks.add("database", database_check(gone), replace=True)
    try:
        down = client.get("/health/ready")
    finally:
        gone.dispose()
    assert down.status_code == 503
    assert down.json() == {
        "status": "not ready",
        "checks": {"database": "unreachable", "speech_models": "on_demand", "draining": False},
    }
    assert "secret" not in down.text and "127.0.0.1" not in down.text
    assert client.get("/health/live").status_code == 200  # the worker is alive, only not ready


def test_a_draining_worker_is_not_ready_and_refuses_new_chats_while_open_ones_go_on(client: TestClient) -> None:
    state = client.app.state.voxgate  # type: ignore[attr-defined]
    opened = client.post("/api/agents/harbor-support/sessions")
    assert opened.status_code == 201, opened.text
    health_before = client.get("/health").json()

    state.admission.drain()

    ready = client.get("/health/ready")
    assert ready.status_code == 503
    assert ready.json() == {
        "status": "not ready",
        "checks": {"database": "ok", "speech_models": "on_demand", "draining": True},
    }
    assert client.get("/health/live").status_code == 200
    assert client.get("/health").json().keys() == health_before.keys()  # /health is as it was

    refused = client.post("/api/agents/harbor-support/sessions")
    assert refused.status_code == 503
    assert refused.json()["detail"]["reason"] == DRAINING
    assert "another worker" in refused.json()["detail"]["message"]
    with client.websocket_connect("/ws/chat/harbor-support") as ws, pytest.raises(WebSocketDisconnect) as closed:
        ws.receive_json()
    assert closed.value.code == 1013 and closed.value.reason.startswith(f"{DRAINING}: ")

    turn = client.post(
        f"/api/sessions/{opened.json()['session_id']}/turns", json={"text": "what are your opening hours"}
    )
    assert turn.status_code == 200, turn.text  # the chat already open goes on

    assert not state.admission.try_admit()  # a new voice call hears the busy message
    assert (state.admission.refused_draining, state.admission.refusal_reason) == (1, DRAINING)


async def test_drain_waits_for_the_calls_in_progress_or_the_grace() -> None:
    admission = Admission(capacity=2)
    assert admission.try_admit()
    asyncio.get_running_loop().call_later(0.05, admission.release)
    assert await drain(admission, grace_s=60, poll_s=0.01) is True  # the call ended: drained
    assert admission.draining and not admission.try_admit()

    stuck = Admission(capacity=2)
    assert stuck.try_admit()
    assert await drain(stuck, grace_s=0.05, poll_s=0.01) is False  # the grace ran out with a call in progress
    assert stuck.active == 1 and stuck.refusal_reason == DRAINING


# ---- WorkerServer: the signal, on a real uvicorn -----------------------------------------------------------


class _Served:
    """A WorkerServer in a thread over a bare app whose worker state holds one line; `signal` calls its
    handler as the signal would (uvicorn installs no handlers outside the main thread)."""

    def __init__(self, grace_s: float) -> None:
        self.admission = Admission(capacity=1)
        assert self.admission.try_admit()  # a call in progress
        app = Starlette()
        app.state.voxgate = SimpleNamespace(admission=self.admission)
        config = uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning", lifespan="off")
        self.server = WorkerServer(config, drain_grace_s=grace_s)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> _Served:
        self.thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "the server did not start"
            time.sleep(0.01)
        return self

    def signal(self, sig: signal.Signals) -> None:
        self.server.handle_exit(sig, None)

    def stopped(self, timeout_s: float = EXIT_TIMEOUT_S) -> bool:
        self.thread.join(timeout_s)
        return not self.thread.is_alive()

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(EXIT_TIMEOUT_S)


def test_sigterm_drains_until_the_last_call_ends_and_a_second_signal_stops_at_once() -> None:
    with _Served(grace_s=3600) as served:
        served.signal(signal.SIGTERM)
        assert served.admission.draining and served.server.draining
        assert not served.stopped(0.5)  # a call holds a line: the worker waits (no shutdown yet)
        assert not served.server.should_exit
        served.admission.release()  # the call ends
        assert served.stopped()
        assert not served.server.force_exit  # a normal shutdown: connections and lifespan finished

    with _Served(grace_s=3600) as served:
        served.signal(signal.SIGTERM)
        assert not served.stopped(0.3)
        served.signal(signal.SIGINT)  # a second signal during the drain: stop now, the call is cut
        assert served.stopped()
        assert served.admission.active == 1

    with _Served(grace_s=0.2) as served:
        served.signal(signal.SIGTERM)
        assert served.stopped()  # the grace ran out with the call still holding its line
        assert served.admission.active == 1


def test_sigint_alone_stops_at_once_as_before() -> None:
    with _Served(grace_s=3600) as served:
        served.signal(signal.SIGINT)
        assert served.stopped()
        assert not served.server.draining and not served.admission.draining


# ---- `voxgate serve` as a process, with a real call --------------------------------------------------------


class Worker:
    """`voxgate serve` (development mode, the Harbor agent, speech models preloaded) in its own process."""

    def __init__(self, data_dir: Path, **settings: str) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.db_url = f"sqlite:///{data_dir / 'voxgate.db'}"
        self.log = data_dir / "worker.log"
        env = child_env()
        env.update(
            VOXGATE_DATABASE_URL=self.db_url,
            VOXGATE_DATA_DIR=str(data_dir),
            VOXGATE_VOICE_PRELOAD="true",
            VOXGATE_SPEECH_WORKERS="1",
            PYTHONUNBUFFERED="1",
            **settings,
        )
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "voxgate.cli",
                    "serve",
                    "--agent-dir",
                    str(HARBOR_AGENT),
                    "--port",
                    str(self.port),
                ],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def output(self) -> str:
        return self.log.read_text("utf-8", "replace")

    async def ready(self, client: httpx.AsyncClient) -> httpx.Response:
        """The first answer of /health/ready: the socket opens once the lifespan (model load included) is done."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert self.proc.poll() is None, f"the worker exited:\n{self.output()[-6000:]}"
            assert time.monotonic() < deadline, f"the worker did not start:\n{self.output()[-6000:]}"
            try:
                return await client.get(f"{self.url}/health/ready")
            except httpx.TransportError:
                await asyncio.sleep(POLL_S)

    async def wait_for_a_call(self, client: httpx.AsyncClient, call: asyncio.Task[CallReport]) -> None:
        while (await client.get(f"{self.url}/health")).json()["active_calls"] < 1:
            assert not call.done(), f"the call ended before it took a line: {call.result()}"
            await asyncio.sleep(POLL_S)

    async def exit_code(self) -> int:
        return await asyncio.to_thread(self.proc.wait, EXIT_TIMEOUT_S)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Worker]]:
    """Two workers, started together so that their model loads overlap: one with the default grace,
    one with a grace of 1 s."""
    root = tmp_path_factory.mktemp("drain")
    started = {"patient": Worker(root / "patient"), "hasty": Worker(root / "hasty", VOXGATE_DRAIN_GRACE_S="1")}
    try:
        yield started
    finally:
        for worker in started.values():
            worker.stop()


def _call(worker: Worker, says: list[str], **options: Any) -> asyncio.Task[CallReport]:
    return asyncio.create_task(
        run_call(
            f"ws://127.0.0.1:{worker.port}",
            protocol="native",
            says=says,
            voice=CALLER_VOICE,
            transcribe=False,
            **options,
        )
    )


def _session(worker: Worker, session_id: str | None) -> Any:
    assert session_id, "the call never started"
    rows = query(worker.db_url, "SELECT outcome, end_reason, ended_at FROM sessions WHERE id = :s", s=session_id)
    assert len(rows) == 1
    return rows[0]


@pytest.mark.slow
async def test_sigterm_mid_call_drains_the_worker_and_the_call_completes(workers: dict[str, Worker]) -> None:
    worker = workers["patient"]
    async with httpx.AsyncClient(timeout=10) as client:
        ready = await worker.ready(client)
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"] == {"database": "ok", "speech_models": "ok", "draining": False}
        assert (await client.get(f"{worker.url}/health/live")).json() == {"status": "live"}

        call = _call(worker, ["are you open on public holidays"])  # a short answer; then the agent ends the call
        await worker.wait_for_a_call(client, call)
        worker.proc.send_signal(signal.SIGTERM)

        ready = await client.get(f"{worker.url}/health/ready")
        assert ready.status_code == 503, ready.text
        assert ready.json()["status"] == "not ready" and ready.json()["checks"]["draining"] is True
        assert (await client.get(f"{worker.url}/health/live")).status_code == 200

        chat = await client.post(f"{worker.url}/api/agents/harbor-support/sessions")
        assert chat.status_code == 503 and chat.json()["detail"]["reason"] == DRAINING, chat.text
        assert worker.proc.poll() is None and not call.done()  # the call goes on, and the worker with it
        newcomer = await run_call(
            f"ws://127.0.0.1:{worker.port}",
            protocol="twilio",
            says=[],
            voice=CALLER_VOICE,
            transcribe=False,
            hangup_after=False,
            timeout_s=20,
        )
        assert newcomer.refused and newcomer.closed_by == "server", newcomer  # it heard the busy message

        report = await call
    assert report.error is None and all(turn.replied for turn in report.turns), report
    assert await worker.exit_code() == 0, worker.output()[-6000:]
    session = _session(worker, report.session_id)
    assert session.ended_at is not None
    # ended by the agent or the caller as any call ends: neither cut (worker_lost, server_shutdown) nor closed early
    assert session.outcome == "resolved" and session.end_reason in ("completed", "caller_hangup"), session
    log = worker.output()
    assert f"call refused: {DRAINING}" in log and "drain: no call in progress; shutting down" in log


@pytest.mark.slow
async def test_calls_still_in_progress_when_the_grace_runs_out_are_closed_by_the_server(
    workers: dict[str, Worker],
) -> None:
    worker = workers["hasty"]
    async with httpx.AsyncClient(timeout=10) as client:
        assert (await worker.ready(client)).status_code == 200
        call = _call(worker, ["what are your opening hours"] * 6, hangup_after=False)
        await worker.wait_for_a_call(client, call)
        worker.proc.send_signal(signal.SIGTERM)
        report = await call
    assert report.closed_by == "server" and report.close_code == 1012, report  # 1012: the service restarts
    assert await worker.exit_code() == 0, worker.output()[-6000:]
    assert "drain: the grace of 1 s is over with 1 call(s) in progress" in worker.output()
    session = _session(worker, report.session_id)
    assert session.ended_at is not None and session.outcome is not None  # its record closed, as at any shutdown
