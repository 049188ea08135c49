"""New conversations are throttled per client address (HTTP and WebSocket chat, one count) and per
calling number (Twilio `start`): beyond the limit HTTP answers 429 with Retry-After, a chat socket
is closed with 1008 and a reason, and a call from that number is closed at its start; other
addresses and numbers are not affected."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from tests.helpers.servers import serving
from tests.helpers.throttles import chat_socket
from voxgate.api.app import create_app
from voxgate.channels.throttle import WindowThrottle, calling_number, retry_after
from voxgate.config import Settings

AGENT = "harbor-support"


# ---- the throttle and the calling number, as units -------------------------------------------------


class Ticks:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_window_throttle_counts_starts_per_key_within_the_window() -> None:
    ticks = Ticks()
    throttle = WindowThrottle(limit=3, window_s=60, clock=ticks)
    for _ in range(3):  # at 1000, 1005 and 1010
        assert throttle.hit("a") is None
        ticks.now += 5
    ticks.now = 1020
    assert throttle.hit("a") == pytest.approx(40)  # the first start leaves the window at 1060
    assert throttle.hit("b") is None  # another key is counted apart
    ticks.now = 1059
    assert throttle.hit("a") == pytest.approx(1)  # refused starts are not counted ...
    ticks.now = 1060
    assert throttle.hit("a") is None  # ... so it is let in as soon as the oldest leaves
    assert throttle.hit("a") == pytest.approx(5) and throttle.refused == 3
    assert all(WindowThrottle(limit=0, clock=ticks).hit("a") is None for _ in range(100))  # 0: no limit


@pytest.mark.parametrize(
    ("start", "number"),
    [
        ({"customParameters": {"from": "+15551234567"}}, "+15551234567"),
        ({"customParameters": {"From": "+1 (555) 123-4567"}}, "+15551234567"),
        ({"customParameters": {"caller": "07700 900123"}}, "07700900123"),
        ({"from": "+447700900123"}, "+447700900123"),
        ({"customParameters": {"from": "anonymous"}}, None),
        ({"customParameters": {"from": "client:alice"}}, None),
        ({"customParameters": {"other": "+15551234567"}}, None),
        ({"customParameters": "+15551234567"}, None),
        ({}, None),
    ],
)
def test_calling_number_from_a_start_message(start: dict[str, Any], number: str | None) -> None:
    assert calling_number(start) == number


def test_retry_after_is_whole_seconds_at_least_one() -> None:
    assert [retry_after(s) for s in (0.0, 0.2, 1.0, 1.01, 59.5)] == [1, 1, 1, 2, 60]


def test_the_limits_are_settings_with_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    assert (settings.chat_sessions_per_minute, settings.calls_per_number_per_minute) == (30, 10)
    monkeypatch.setenv("VOXGATE_CHAT_SESSIONS_PER_MINUTE", "0")
    monkeypatch.setenv("VOXGATE_CALLS_PER_NUMBER_PER_MINUTE", "3")
    settings = Settings(data_dir=tmp_path)
    assert (settings.chat_sessions_per_minute, settings.calls_per_number_per_minute) == (0, 3)


# ---- over real sockets -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def worker(harbor_bundle: Any, harbor_backend: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A worker allowing 3 new chat sessions per address and 1 call per number per minute."""
    tmp = tmp_path_factory.mktemp("throttles")
    settings = Settings(
        database_url=f"sqlite:///{tmp / 'voxgate.db'}",
        data_dir=tmp,
        chat_sessions_per_minute=3,
        calls_per_number_per_minute=1,
    )
    with serving(create_app(settings, [harbor_bundle])) as url:
        yield url


def _client(url: str, host: str) -> httpx.Client:
    return httpx.Client(base_url=url, timeout=30, transport=httpx.HTTPTransport(local_address=host))


def test_new_chat_sessions_are_throttled_per_client_address(worker: str) -> None:
    with _client(worker, "127.0.0.7") as client, _client(worker, "127.0.0.8") as other:
        assert client.post(f"/api/agents/{AGENT}/sessions").status_code == 201
        assert client.post(f"/api/agents/{AGENT}/sessions").status_code == 201
        assert asyncio.run(chat_socket(worker, "127.0.0.7"))[0] == "turn"  # HTTP and WebSocket count together
        refused = client.post(f"/api/agents/{AGENT}/sessions")
        assert refused.status_code == 429
        assert 1 <= int(refused.headers["Retry-After"]) <= 60
        assert "too many new sessions" in refused.json()["detail"]
        kind, (code, reason) = asyncio.run(chat_socket(worker, "127.0.0.7"))
        assert kind == "closed" and code == 1008 and "too many new sessions" in reason
        # another address is not affected; a session already started goes on
        assert other.post(f"/api/agents/{AGENT}/sessions").status_code == 201
        assert asyncio.run(chat_socket(worker, "127.0.0.8"))[0] == "turn"


async def _twilio_call(url: str, custom: dict[str, str]) -> tuple[str, Any]:
    """Start a Twilio media stream: ("answered", None) once the greeting's audio arrives, or
    ("closed", (code, reason))."""
    silence = base64.b64encode(b"\xff" * 160).decode()
    async with websockets.connect(url.replace("http://", "ws://") + f"/twilio/{AGENT}", open_timeout=10) as ws:
        await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
        await ws.send(
            json.dumps(
                {
                    "event": "start",
                    "sequenceNumber": "1",
                    "streamSid": "MZ1",
                    "start": {
                        "streamSid": "MZ1",
                        "accountSid": "AC1",
                        "callSid": "CA1",
                        "tracks": ["inbound"],
                        "customParameters": custom,
                        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                    },
                }
            )
        )
        try:
            while True:
                message = json.loads(await asyncio.wait_for(ws.recv(), timeout=120))
                if message.get("event") == "media":
                    await ws.send(
                        json.dumps(
                            {"event": "media", "streamSid": "MZ1", "media": {"track": "inbound", "payload": silence}}
                        )
                    )
                    await ws.send(json.dumps({"event": "stop", "streamSid": "MZ1", "stop": {"callSid": "CA1"}}))
                    return "answered", None
        except websockets.ConnectionClosed as closed:
            return "closed", (closed.rcvd.code, closed.rcvd.reason) if closed.rcvd else (None, "")


def test_calls_are_throttled_per_calling_number(worker: str) -> None:
    async def scenario() -> list[tuple[str, Any]]:
        return [
            await _twilio_call(worker, {"from": "+15550001111"}),
            await _twilio_call(worker, {"from": "+1 555 000 1111"}),  # the same number, written otherwise
            await _twilio_call(worker, {"from": "+15550002222"}),
            await _twilio_call(worker, {}),
        ]  # no number: not throttled by number

    first, again, other, anonymous = asyncio.run(scenario())
    assert first[0] == "answered"
    assert again[0] == "closed" and again[1][0] == 1008 and "too many calls from this number" in again[1][1]
    assert other[0] == "answered" and anonymous[0] == "answered"
