"""The voice channels without the app: `serve_call` on a fake socket with fake `CallServices`, and the
native and Twilio dialects as tables (what each accepts, and the close reason of what it refuses)."""

from __future__ import annotations

import asyncio
import base64
import json
from dataclasses import dataclass, field
from typing import Any

import pytest

from voxgate.channels.admission import Admission
from voxgate.channels.dialect import Dtmf, Mark, Media, Received, Start, Stop
from voxgate.channels.native import NativeDialect
from voxgate.channels.serve import serve_call
from voxgate.channels.services import BundleUnavailable, CallServices
from voxgate.channels.throttle import SessionThrottles, WindowThrottle
from voxgate.channels.twilio import TwilioDialect
from voxgate.channels.wire import ProtocolError
from voxgate.cluster.redis import RedisUnavailable
from voxgate.observe.voice_stats import VoiceStats
from voxgate.runtime.engine import AgentRuntime
from voxgate.voice.call.ports import CallRecorder
from voxgate.voice.engines import VoiceEngines

TWILIO_START = {"event": "start", "streamSid": "MZ1", "start": {"streamSid": "MZ1", "customParameters": {}}}


# ---- a socket and the application's services, faked ---------------------------------------------------


@dataclass
class Client:
    host: str = "192.0.2.7"


class FakeSocket:
    """A WebSocket that delivers scripted messages, then waits (or, `hang_up`, reports a disconnect)."""

    def __init__(self, *messages: str | bytes, hang_up: bool = True) -> None:
        self.inbox: list[dict[str, Any]] = [
            {"type": "websocket.receive", "text": m}
            if isinstance(m, str)
            else {"type": "websocket.receive", "bytes": m}
            for m in messages
        ]
        if hang_up:
            self.inbox.append({"type": "websocket.disconnect", "code": 1000})
        self.client = Client()
        self.accepted = False
        self.sent: list[str | bytes] = []
        self.closed: tuple[int, str] | None = None

    async def accept(self) -> None:
        self.accepted = True

    async def receive(self) -> dict[str, Any]:
        if not self.inbox:
            await asyncio.Event().wait()  # nothing more is coming
        return self.inbox.pop(0)

    async def send_text(self, text: str) -> None:
        self.sent.append(text)

    async def send_bytes(self, data: bytes) -> None:
        self.sent.append(data)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self.closed = (code, reason)


@dataclass
class FakeServices:
    """What a channel needs from the application, without one: no speech models, no database."""

    refusal: str | None = None
    allowed: bool = True
    runtime: AgentRuntime | None = None
    unusable: bool = False
    admission: Admission = field(default_factory=lambda: Admission(capacity=2))
    throttles: SessionThrottles = field(
        default_factory=lambda: SessionThrottles(per_address=WindowThrottle(0), per_number=WindowThrottle(1))
    )
    voice_stats: VoiceStats = field(default_factory=VoiceStats)
    desk: None = None
    engines_asked: int = 0
    calls_admitted: int = 0  # counted against the environment's limits (admit_call), not given back yet

    async def handshake_refusal(self, websocket: Any, channel: str) -> str | None:
        return self.refusal

    async def may_call(self, websocket: Any, agent: str) -> bool:
        return self.allowed

    async def runtime_for(self, agent: str) -> AgentRuntime | None:
        if self.unusable:
            raise BundleUnavailable("failed verification")
        return self.runtime

    async def withdrawn(self, agent: str) -> bool:
        return False

    async def voice_engines(self) -> VoiceEngines:
        self.engines_asked += 1
        raise AssertionError("no test here gets as far as loading speech models")

    async def admit_call(self) -> str | None:
        self.calls_admitted += 1
        return None

    async def release_call(self, *, started: bool = True) -> None:
        self.calls_admitted -= 1

    def call_recording(self) -> CallRecorder | None:
        return None

    def record_voice_turn(self, summary: dict[str, Any]) -> None:
        return None

    async def save_recording(self, recording: CallRecorder | None, session: Any) -> str | None:
        return None


def _serve(ws: FakeSocket, dialect: Any, services: FakeServices, agent: str = "harbor-support") -> None:
    port: CallServices = services  # the fake satisfies the port, as AppState does
    asyncio.run(asyncio.wait_for(serve_call(ws, dialect, agent=agent, services=port), 10))  # type: ignore[arg-type]


class Served(FakeServices):
    """An agent is served (a runtime that no test here starts a conversation with)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.runtime = object()  # type: ignore[assignment]


# ---- serve_call ------------------------------------------------------------------------------------------


def test_a_refused_handshake_is_closed_before_it_is_accepted() -> None:
    ws, services = FakeSocket(), FakeServices(refusal="invalid X-Twilio-Signature")
    _serve(ws, TwilioDialect(), services)
    assert not ws.accepted and ws.closed == (1008, "invalid X-Twilio-Signature")
    assert services.admission.pending == 0


@pytest.mark.parametrize(
    ("services", "closed"),
    [
        (FakeServices(), (1008, "no agent named 'harbor-support'")),
        (FakeServices(allowed=False), (1008, "not allowed")),
        (FakeServices(unusable=True), (1011, "agent unavailable")),
    ],
    ids=["not served", "not allowed", "bundle unusable"],
)
def test_a_socket_for_an_agent_it_cannot_call_is_closed_with_a_reason(
    services: FakeServices, closed: tuple[int, str]
) -> None:
    ws = FakeSocket()
    _serve(ws, NativeDialect(), services)
    assert ws.accepted and ws.closed == closed
    assert services.admission.pending == 0  # it no longer counts as waiting to start


def test_twilio_bad_input_before_start_closes_1008_with_the_reason_alone() -> None:
    ws, services = FakeSocket(json.dumps({"event": "teleport"})), Served()
    _serve(ws, TwilioDialect(), services)
    assert ws.closed == (1008, "'teleport' before 'start'") and ws.sent == []
    assert services.voice_stats.calls_ended == {"protocol_error": 1}
    assert (services.admission.pending, services.admission.active, services.engines_asked) == (0, 0, 0)


def test_native_bad_input_says_why_before_the_close() -> None:
    ws, services = FakeSocket(json.dumps({"type": "dtmf", "digit": "5"})), Served()
    _serve(ws, NativeDialect(), services)
    assert ws.sent == [json.dumps({"type": "error", "error": "'dtmf' before 'start'"})]
    assert ws.closed == (1008, "'dtmf' before 'start'")


def test_a_socket_that_never_starts_is_closed_at_the_deadline() -> None:
    services = Served(admission=Admission(capacity=2, start_timeout_s=0.05))
    ws = FakeSocket(json.dumps({"event": "connected", "protocol": "Call"}), hang_up=False)
    _serve(ws, TwilioDialect(), services)
    assert ws.closed == (1008, "no valid 'start' within 0.05 s")
    assert services.admission.start_timeouts == 1 and services.voice_stats.calls_ended == {"start_timeout": 1}


def test_a_caller_who_leaves_before_start_is_a_hang_up() -> None:
    ws, services = FakeSocket(), Served()
    _serve(ws, NativeDialect(), services)
    assert ws.closed is None and services.voice_stats.calls_ended == {"caller_hangup": 1}
    assert services.admission.pending == 0


def test_a_number_over_its_limit_is_refused_before_it_takes_a_line() -> None:
    start = {**TWILIO_START, "start": {"streamSid": "MZ1", "customParameters": {"From": "+1 555 000 1111"}}}
    services = Served()
    assert asyncio.run(services.throttles.per_number.take("+15550001111")) is None  # its one call this minute
    ws = FakeSocket(json.dumps(start))
    _serve(ws, TwilioDialect(), services)
    assert ws.closed is not None and ws.closed[0] == 1008
    assert ws.closed[1].startswith("too many calls from this number; retry in ")
    assert services.voice_stats.calls_ended == {"throttled": 1}
    assert (services.admission.active, services.engines_asked) == (0, 0)  # no line, no speech models


class Uncountable:
    """A cluster's count of calls per number while Redis is away."""

    async def take(self, key: str) -> float | None:
        raise RedisUnavailable("Redis did not answer (counting a new session (calls:dev)): ConnectionError")


@dataclass
class _Voice:
    sample_rate: int = 16_000


class SilentEngines:
    """Speech engines whose every message is 10 ms of silence (the busy message needs no real voice here)."""

    def synthesizer(self, voice: str) -> _Voice:
        return _Voice()

    def render(self, synth: _Voice, text: str) -> bytes:
        return b"\x00\x00" * 160

    def to_pipeline_rate(self, audio: bytes, rate: int) -> bytes:
        return audio


class ServedSilently(Served):
    async def voice_engines(self) -> VoiceEngines:
        self.engines_asked += 1
        return SilentEngines()  # type: ignore[return-value]


def test_a_number_that_cannot_be_counted_hears_the_busy_message_and_takes_no_line() -> None:
    start = {**TWILIO_START, "start": {"streamSid": "MZ1", "customParameters": {"From": "+15550001111"}}}
    services = ServedSilently(throttles=SessionThrottles(per_address=WindowThrottle(0), per_number=Uncountable()))
    ws = FakeSocket(json.dumps(start), hang_up=False)
    _serve(ws, TwilioDialect(), services)
    assert json.loads(str(ws.sent[-1])) == {"event": "mark", "streamSid": "MZ1", "mark": {"name": "busy:last"}}
    assert ws.closed is not None and ws.closed[0] == 1000  # hung up after the message: not a protocol error
    assert services.voice_stats.calls_ended == {"busy": 1}
    assert (services.calls_admitted, services.admission.active, services.admission.refused) == (0, 0, 1)
    assert services.admission.pending == 0


# ---- the dialects as tables ------------------------------------------------------------------------------

_STARTED = Start(8000, "mulaw", stream_sid="MZ1")


def _twilio(message: Any, start: Start | None = _STARTED) -> Any:
    return TwilioDialect().parse(Received(text=json.dumps(message)), start)


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ({"event": 7}, "message must be a JSON object with an 'event' string"),
        ({"event": "start", "streamSid": "MZ1"}, "start message without a start object"),
        ({"event": "start", "start": {"mediaFormat": 5}}, "start.mediaFormat must be an object"),
        (
            {"event": "start", "start": {"streamSid": "MZ1", "mediaFormat": {"encoding": "audio/l16"}}},
            "unsupported media format audio/l16 8000 Hz x1; expected audio/x-mulaw 8000 Hz mono",
        ),
        ({"event": "start", "start": {}}, "start message without streamSid"),
    ],
)
def test_twilio_refuses_a_start_it_cannot_serve(message: dict[str, Any], reason: str) -> None:
    with pytest.raises(ProtocolError) as refused:
        _twilio(message, None)
    assert str(refused.value) == reason


def test_twilio_start_takes_the_stream_and_the_calling_number() -> None:
    body = {"streamSid": "MZ9", "mediaFormat": {"encoding": "PCMU", "sampleRate": "8000"}}
    start = {"event": "start", "start": {**body, "customParameters": {"Caller": "+44 20 7946 0000"}}}
    assert _twilio(start, None) == Start(8000, "mulaw", stream_sid="MZ9", calling_number="+442079460000")
    assert _twilio({"event": "connected"}, None) is None
    with pytest.raises(ProtocolError, match="a second start message"):
        _twilio(TWILIO_START)


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ({"event": "media", "media": {"payload": 5}}, "media message without media.payload"),
        ({"event": "media", "media": {"payload": "not base64!"}}, "media payload is not valid base64"),
        ({"event": "media", "media": {"payload": "A" * 11_000}}, "media payload larger than one second of audio"),
        ({"event": "dtmf", "dtmf": {"digit": "x"}}, "invalid dtmf digit 'x'"),
        ({"event": "dtmf"}, "invalid dtmf digit None"),
        ({"event": "mark", "mark": {}}, "mark message without mark.name"),
        ({"event": "teleport" * 10}, "unknown event '" + ("teleport" * 10)[:40] + "'"),
    ],
)
def test_twilio_refuses_a_malformed_message_during_a_call(message: dict[str, Any], reason: str) -> None:
    with pytest.raises(ProtocolError) as refused:
        _twilio(message)
    assert str(refused.value) == reason


def test_twilio_messages_become_call_events() -> None:
    payload = base64.b64encode(b"\xff" * 160).decode("ascii")
    assert _twilio({"event": "media", "media": {"track": "inbound", "payload": payload}}) == Media(b"\xff" * 160)
    assert _twilio({"event": "dtmf", "dtmf": {"track": "inbound_track", "digit": "#"}}) == Dtmf("#")
    assert _twilio({"event": "mark", "mark": {"name": "chunk:3"}}) == Mark("chunk:3")
    assert _twilio({"event": "stop", "stop": {"callSid": "CA1"}}) == Stop()
    with pytest.raises(ProtocolError, match="binary frames are not part of the media-stream protocol"):
        TwilioDialect().parse(Received(data=b"\x00"), _STARTED)


def test_twilio_frames_carry_the_stream_sid() -> None:
    dialect = TwilioDialect()
    assert json.loads(dialect.audio(_STARTED, b"\x01\x02")) == {
        "event": "media",
        "streamSid": "MZ1",
        "media": {"payload": base64.b64encode(b"\x01\x02").decode("ascii")},
    }
    assert json.loads(dialect.mark(_STARTED, "m1")) == {"event": "mark", "streamSid": "MZ1", "mark": {"name": "m1"}}
    assert json.loads(dialect.clear(_STARTED)) == {"event": "clear", "streamSid": "MZ1"}
    assert dialect.event(_STARTED, {"type": "turn"}) is None and dialect.error("bad") is None


def test_native_messages_become_call_events() -> None:
    dialect, pcm = NativeDialect(), Start(16000, "pcm16")
    assert dialect.parse(Received(text='{"type": "start", "sample_rate": 8000, "encoding": "mulaw"}'), None) == Start(
        8000, "mulaw"
    )
    assert dialect.parse(Received(data=b"\x00" * 640), pcm) == Media(b"\x00" * 640)
    assert dialect.parse(Received(text='{"type": "dtmf", "digit": "7"}'), pcm) == Dtmf("7")
    assert dialect.parse(Received(text='{"type": "stop"}'), pcm) == Stop()
    for received, start, reason in [
        (Received(data=b"\x00" * 3), pcm, "bad audio frame of 3 bytes (whole samples, at most one second)"),
        (Received(data=b"\x00" * 2), None, "audio before 'start'"),
        (Received(text='{"type": "start", "sample_rate": 16000.0}'), None, "unsupported sample_rate 16000.0"),
        (Received(text='{"type": "start", "encoding": "mulaw"}'), None, "mulaw audio must be 8000 Hz"),
        (Received(text='{"type": "teleport"}'), pcm, "unknown message type 'teleport'"),
        (Received(text='{"kind": "start"}'), None, "control messages are JSON objects with a 'type'"),
    ]:
        with pytest.raises(ProtocolError) as refused:
            dialect.parse(received, start)
        assert str(refused.value).startswith(reason), (received, refused.value)
