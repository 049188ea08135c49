"""Voice sockets that never start a call: they take no phone line, they are closed after the start
timeout, and the ones not started yet are bounded per worker and per client address."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from tests.helpers.servers import serving
from voxgate.api.app import create_app
from voxgate.channels import calls
from voxgate.config import Settings
from voxgate.testing.caller import run_call

CALLER_VOICE = "flite-slt"
AGENT = "harbor-support"


@contextlib.contextmanager
def _env(**values: str) -> Iterator[None]:
    """VOXGATE_* variables while the settings are read (as an operator would set them)."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _settings(tmp: Path, **env: str) -> Settings:
    with _env(**env):
        return Settings(database_url=f"sqlite:///{tmp / 'voxgate.db'}", data_dir=tmp)


def _ws(base: str) -> str:
    return base.replace("http://", "ws://")


@contextlib.asynccontextmanager
async def _idle(url: str, host: str) -> AsyncIterator[Any]:
    """A socket from `host` (a loopback address) that says nothing, or nothing more than Twilio's `connected`."""
    async with websockets.connect(url, open_timeout=10, local_addr=(host, 0)) as ws:
        if "/twilio/" in url:
            # a refused socket may be closed before this arrives: the close is read by _close_code
            with contextlib.suppress(websockets.ConnectionClosed):
                await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
        yield ws


async def _close_code(ws: Any, within_s: float = 60) -> tuple[int | None, str]:
    """How the server closed the socket (waits at most `within_s`, a guard against hanging)."""
    try:
        while True:
            await asyncio.wait_for(ws.recv(), timeout=within_s)
    except websockets.ConnectionClosed as closed:
        return (closed.rcvd.code, closed.rcvd.reason) if closed.rcvd else (None, "")


async def _still_open(ws: Any) -> bool:
    try:
        await asyncio.wait_for(ws.recv(), timeout=0.05)
    except TimeoutError:
        return True
    except websockets.ConnectionClosed:
        return False
    return True


@pytest.mark.slow
async def test_idle_sockets_take_no_phone_line_and_a_real_call_completes(
    harbor_bundle: Any, harbor_backend: Any, tmp_path: Path
) -> None:
    """25 idle Twilio sockets and 25 idle native ones, held open (the start timeout and the
    not-yet-started caps raised so that all of them stay), then a real caller: answered normally,
    not told the lines are busy (the worker has the default 20 lines)."""
    settings = _settings(
        tmp_path,
        VOXGATE_VOICE_START_TIMEOUT_S="300",
        VOXGATE_VOICE_PENDING_MAX="200",
        VOXGATE_VOICE_PENDING_PER_ADDRESS="100",
        VOXGATE_VOICE_PRELOAD="true",
    )
    app = create_app(settings, [harbor_bundle])
    with serving(app) as base:
        url = _ws(base)
        async with contextlib.AsyncExitStack() as stack:
            idle = []
            for path, host in ((f"/twilio/{AGENT}", "127.0.0.2"), (f"/ws/voice/{AGENT}", "127.0.0.3")):
                for _ in range(25):
                    idle.append(await stack.enter_async_context(_idle(url + path, host)))
            await asyncio.sleep(0.5)  # let the server take in every socket
            assert all([await _still_open(ws) for ws in idle])
            async with httpx.AsyncClient() as http:
                health = (await http.get(f"{base}/health")).json()
            assert health["active_calls"] == 0 and health["calls_refused"] == 0
            report = await run_call(
                url, protocol="twilio", says=["what are your opening hours"], voice=CALLER_VOICE, transcribe=True
            )
            assert not report.refused, report.greeting_text
            assert report.error is None, report.error
            assert "busy" not in (report.greeting_text or "").lower()
            assert report.turns[0].replied
            assert all([await _still_open(ws) for ws in idle])  # held all along, and still no line taken
        assert app.state.voxgate.admission.refused == 0


@pytest.fixture()
def strict_worker(harbor_bundle: Any, tmp_path: Path) -> Iterator[tuple[str, Any]]:
    """A worker whose not-yet-started sockets must start within 4 s, at most 4 of them, 2 per address."""
    settings = _settings(
        tmp_path,
        VOXGATE_VOICE_START_TIMEOUT_S="4",
        VOXGATE_VOICE_PENDING_MAX="4",
        VOXGATE_VOICE_PENDING_PER_ADDRESS="2",
    )
    app = create_app(settings, [harbor_bundle])
    with serving(app) as base:
        yield base, app


@pytest.mark.parametrize("path", [f"/twilio/{AGENT}", f"/ws/voice/{AGENT}"])
async def test_a_socket_that_never_starts_is_closed_with_1008(strict_worker: tuple[str, Any], path: str) -> None:
    base, app = strict_worker
    async with _idle(_ws(base) + path, "127.0.0.1") as ws:
        code, reason = await _close_code(ws)
    assert code == 1008 and "start" in reason
    admission = app.state.voxgate.admission
    assert admission.start_timeouts == 1 and admission.pending == 0 and admission.active == 0
    async with httpx.AsyncClient() as http:
        assert (await http.get(f"{base}/health")).status_code == 200


async def test_sockets_not_started_are_capped_per_address_and_per_worker(strict_worker: tuple[str, Any]) -> None:
    base, app = strict_worker
    url = _ws(base)
    twilio, native = f"{url}/twilio/{AGENT}", f"{url}/ws/voice/{AGENT}"
    async with contextlib.AsyncExitStack() as stack:
        held = [
            await stack.enter_async_context(_idle(twilio, "127.0.0.2")),
            await stack.enter_async_context(_idle(native, "127.0.0.2")),
        ]
        # a burst from one address is let in (a gateway's callers start at once); sockets that
        # have waited without starting count against their address
        await asyncio.sleep(calls.PENDING_GRACE_S + 0.5)
        async with _idle(native, "127.0.0.2") as third:  # a third from the same address
            code, reason = await _close_code(third, within_s=10)
        assert code == 1008 and "address" in reason
        held += [
            await stack.enter_async_context(_idle(twilio, "127.0.0.3")),
            await stack.enter_async_context(_idle(native, "127.0.0.4")),
        ]
        async with _idle(twilio, "127.0.0.5") as fifth:  # a fifth on the worker, from a new address
            code, reason = await _close_code(fifth, within_s=10)
        assert code == 1008 and "try again later" in reason
        assert all([await _still_open(ws) for ws in held])
        assert app.state.voxgate.admission.pending == 4
        for ws in held:  # then the start timeout closes the idle ones, and the room is back
            assert (await _close_code(ws))[0] == 1008
    admission = app.state.voxgate.admission
    assert admission.pending == 0 and admission.pending_refused == 2 and admission.active == 0
