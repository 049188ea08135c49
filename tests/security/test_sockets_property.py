"""Every WebSocket protocol message under generated input (Hypothesis): the chat, native voice,
Twilio media-stream and desk sockets answer or close with a code and a reason that fit (1003 for a
message that is not the protocol's, 1008 for one the protocol refuses, 1000 after a proper end),
never drop the connection without a close frame (1006), log no traceback, and the worker stays healthy.

Each message kind has a strategy: a valid shape with hostile values, wrong types, missing fields,
binary frames, text that is not JSON, oversized and deeply nested JSON. Voice sockets get only
messages that do not make a valid `start` (a valid start loads the speech models, which the voice
tests cover); the test checks that the worker never loaded them. Seeded, bounded, no shrinking."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import websockets
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from tests.helpers.servers import serving
from tests.helpers.throttles import NO_THROTTLES
from tests.helpers.worker_log import Tracebacks, watching
from voxgate.api.app import create_app
from voxgate.channels import native, twilio
from voxgate.channels.calls import ProtocolError, close_reason
from voxgate.config import Settings

AGENT = "harbor-support"
SETTINGS = settings(
    max_examples=60,
    derandomize=True,
    deadline=None,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)


@dataclass
class Worker:
    base: str
    state: Any
    log: Tracebacks

    @property
    def ws(self) -> str:
        return self.base.replace("http://", "ws://")


@pytest.fixture(scope="module")
def worker(harbor_bundle: Any, harbor_backend: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    tmp = tmp_path_factory.mktemp("socket-fuzz")
    # a socket left waiting for its start is closed after 2 s, not 5
    config = Settings(
        database_url=f"sqlite:///{tmp / 'voxgate.db'}",
        data_dir=tmp / "data",
        environment="dev",
        voice_start_timeout_s=2,
        voice_pending_per_address=1000,
        voice_pending_max=1000,
        **NO_THROTTLES,
    )
    app = create_app(config, [harbor_bundle])
    with serving(app) as base, watching() as log:
        yield Worker(base, app.state.voxgate, log)
    assert app.state.voxgate.engines is None, "a fuzzed voice socket loaded the speech models"


@pytest.fixture(scope="module")
def desk_token(worker: Worker) -> str:
    identity = worker.state.identity
    user = identity.create_user("fuzz-desk", "a long enough password")
    identity.bind_role(user.id, "*", "desk_agent", None)
    token, _ = identity.create_token(user.id, "fuzz", ["*"], 1)
    return str(token)


@pytest.fixture(autouse=True)
def no_late_tracebacks(worker: Worker) -> Iterator[None]:
    """A traceback logged after its example was judged (a background write, say) still fails the test."""
    yield
    time.sleep(0.5)
    late = worker.log.take()
    assert late == [], "\n".join(late)


# ---- values and raw frames ---------------------------------------------------------------------------

HOSTILE_TEXT = st.one_of(
    st.text(max_size=60),
    st.text(st.characters(min_codepoint=0x80), min_size=30, max_size=80),  # past 123 bytes in UTF-8
    st.sampled_from(
        [
            "",
            " ",
            "\x00",
            "\ud800",
            "ok \udfff",
            "💥" * 70,
            "x" * 2001,
            "\u202e\u0000\n\r\t",
            "'; DROP TABLE sessions; --",
            "{{7*7}}",
            "<script>alert(1)</script>",
            "../../etc/passwd",
            "I want to talk to a real person",
        ]
    ),
)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.integers(min_value=2**63) | st.floats() | HOSTILE_TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)


def _deep(n: int, opener: str, closer: str) -> str:
    return opener * n + "0" + closer * n


DEEP_JSON = st.integers(600, 6000).flatmap(
    lambda n: st.sampled_from([_deep(n, "[", "]"), _deep(n, '{"a":', "}"), '{"type":' + _deep(n, "[", "]") + "}"])
)
NOT_JSON = st.text(max_size=120).filter(lambda t: not _is_json(t))
BINARY = st.binary(max_size=400) | st.integers(0, 70_000).map(lambda n: b"\x00" * n)


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except (ValueError, RecursionError):
        return False
    return True


def _with(fixed: dict[str, Any], **optional: Any) -> Any:
    """A message with these fields, and some of the optional ones (missing fields are part of the fuzz)."""
    return st.fixed_dictionaries({k: st.just(v) for k, v in fixed.items()}, optional=optional)


def _encoded(messages: Any, *raw: Any) -> Any:
    return st.one_of(messages.map(lambda m: json.dumps(m)), *raw)


# ---- one socket ---------------------------------------------------------------------------------------


@dataclass
class Outcome:
    received: list[Any]
    code: int | None  # None: the connection dropped without a close frame (1006)
    reason: str


async def _exchange(
    url: str,
    messages: list[str | bytes],
    probe: str | None,
    *,
    headers: dict[str, str] | None = None,
    greeting: bool = False,
) -> Outcome:
    """Send the messages (then the probe, a message the protocol refuses, if the socket is still open)
    and read everything until the server closes."""
    async with websockets.connect(url, open_timeout=30, max_size=None, additional_headers=headers) as ws:
        received = [json.loads(await asyncio.wait_for(ws.recv(), 30))] if greeting else []
        return await _exchange_on(ws, messages, probe, received)


async def _exchange_on(ws: Any, messages: list[str | bytes], probe: str | None, received: list[Any]) -> Outcome:
    try:
        for message in [*messages, *([probe] if probe is not None else [])]:
            await ws.send(message)
        while True:
            frame = await asyncio.wait_for(ws.recv(), 30)
            received.append(json.loads(frame) if isinstance(frame, str) else frame)
    except websockets.ConnectionClosed as closed:
        if closed.rcvd is None:
            return Outcome(received, None, "")
        return Outcome(received, closed.rcvd.code, closed.rcvd.reason)


def _check(worker: Worker, outcome: Outcome, allowed: set[int], shown: Any) -> None:
    traces = worker.log.take(expect=outcome.code is None or outcome.code == 1011)
    assert not traces, (shown, traces)
    assert outcome.code is not None, (shown, "dropped without a close frame (1006)", outcome.received[-3:])
    assert outcome.code in allowed, (shown, outcome.code, outcome.reason)
    if outcome.code != 1000:
        assert outcome.reason.strip(), (shown, outcome.code, "a close without a reason")


def _run(coro: Any) -> Outcome:
    return asyncio.run(coro)  # type: ignore[no-any-return]


# ---- /ws/chat/{agent} ---------------------------------------------------------------------------------

CHAT = _encoded(
    st.one_of(
        _with({"type": "text"}, text=HOSTILE_TEXT),  # valid shape, hostile values
        _with({"type": "dtmf"}, digits=st.text("0123456789*#ab ", max_size=40)),
        _with({"type": "end"}, reason=JSON_VALUES),
        _with({}, type=st.sampled_from(["text", "dtmf", "end"]), text=JSON_VALUES, digits=JSON_VALUES),  # wrong types
        _with({}, type=JSON_VALUES.filter(lambda t: t not in ("text", "dtmf", "end")), text=HOSTILE_TEXT),
    ),
    st.lists(JSON_VALUES, max_size=3).map(json.dumps),
    JSON_VALUES.map(json.dumps),  # not an object
    st.integers(17_000, 70_000).map(lambda n: json.dumps({"type": "text", "text": "a" * n})),  # oversized
    DEEP_JSON,
    NOT_JSON,
    BINARY,
)


@SETTINGS
@given(message=CHAT)
@example(message=json.dumps({"type": "text", "text": "my pin is ² 4"}))  # "²" broke the redaction of the turn
def test_chat_socket_answers_or_closes_cleanly(worker: Worker, message: str | bytes) -> None:
    # still open after the message: a proper end, which must give "ended" and a normal close
    outcome = _run(_exchange(f"{worker.ws}/ws/chat/{AGENT}", [message], json.dumps({"type": "end"}), greeting=True))
    _check(worker, outcome, {1000, 1003, 1008}, message[:200])
    assert outcome.received[0]["type"] == "turn"  # the greeting
    if outcome.code == 1000:
        assert outcome.received[-1]["type"] == "ended", outcome.received[-2:]
    else:
        last = outcome.received[-1]
        assert last["type"] == "error" and close_reason(last["error"]) == outcome.reason, outcome


async def _during_a_handoff(url: str, message: str | bytes) -> Outcome:
    """Escalate (nobody is at the desk, so the fallback asks for a callback number), then answer it with
    the message, then end if the socket is still open."""
    async with websockets.connect(url, open_timeout=30, max_size=None) as ws:
        await asyncio.wait_for(ws.recv(), 30)  # the greeting
        await ws.send(json.dumps({"type": "text", "text": "I want to talk to a real person"}))
        received: list[Any] = []
        while not (received and received[-1].get("type") == "agent_message"):  # the fallback's question
            received.append(json.loads(await asyncio.wait_for(ws.recv(), 30)))
        assert {"type": "handoff", "status": "fallback", "kind": "callback"} in received, received
        return await _exchange_on(ws, [message], json.dumps({"type": "end"}), received)


@SETTINGS
@given(message=CHAT)
@example(message=b"\x00\x01")  # a binary frame during a handoff was a KeyError
@example(message="[" * 5000 + "]" * 5000)  # and deeply nested JSON a RecursionError
def test_chat_socket_during_a_handoff_answers_or_closes_cleanly(worker: Worker, message: str | bytes) -> None:
    outcome = _run(_during_a_handoff(f"{worker.ws}/ws/chat/{AGENT}", message))
    _check(worker, outcome, {1000, 1003}, message[:200])
    last = outcome.received[-1]
    assert last["type"] == ("ended" if outcome.code == 1000 else "error"), outcome.received[-3:]


# ---- /ws/voice/{agent} (native) ----------------------------------------------------------------------


def _starts_a_native_call(message: Any) -> bool:
    try:
        return isinstance(message, dict) and message.get("type") == "start" and bool(native.start_params(message))
    except ProtocolError:
        return False


NATIVE = _encoded(
    st.one_of(
        _with(
            {"type": "start"},
            sample_rate=st.integers() | JSON_VALUES,
            encoding=st.sampled_from(["pcm16", "mulaw", "opus", "PCM16"]) | JSON_VALUES,
            extra=JSON_VALUES,
        ).filter(lambda m: not _starts_a_native_call(m)),
        _with(
            {},
            type=st.sampled_from(["dtmf", "mark", "stop", "teleport", "started"]),  # before a start
            digit=JSON_VALUES,
            name=JSON_VALUES,
        ),
        _with({}, type=JSON_VALUES.filter(lambda t: not isinstance(t, str))),  # a type that is not a string
        _with({}, type=HOSTILE_TEXT, digit=JSON_VALUES),  # an unknown type, named with hostile text
    ),
    st.lists(JSON_VALUES, max_size=3).map(json.dumps),
    st.integers(native.MAX_TEXT_CHARS + 1, 70_000).map(lambda n: json.dumps({"type": "start", "x": "a" * n})),
    DEEP_JSON,
    NOT_JSON,
    BINARY,
)


@SETTINGS
@given(message=NATIVE)
@example(message=json.dumps({"type": "💥" * 40}))  # a close reason past 123 bytes dropped the socket
@example(message=json.dumps({"type": "start", "encoding": [0]}))  # an unhashable value was a TypeError
@example(message=json.dumps({"type": "start", "sample_rate": {}}))
@example(message="[" * 5000 + "]" * 5000)  # a RecursionError escaped
def test_native_voice_socket_refuses_what_is_not_a_start_with_1008(worker: Worker, message: str | bytes) -> None:
    outcome = _run(_exchange(f"{worker.ws}/ws/voice/{AGENT}", [message], json.dumps({"type": "teleport"})))
    _check(worker, outcome, {1008}, message[:200])
    assert outcome.received[-1:] == [{"type": "error", "error": outcome.received[-1]["error"]}], outcome


# ---- /twilio/{agent} (media streams) ----------------------------------------------------------------


def _starts_a_twilio_call(message: Any) -> bool:
    if not isinstance(message, dict) or message.get("event") != "start" or not isinstance(message.get("start"), dict):
        return False
    try:
        twilio.check_format(message["start"])
    except ProtocolError:
        return False
    return bool(message.get("streamSid") or message["start"].get("streamSid"))


MEDIA_FORMAT = _with(
    {},
    encoding=st.sampled_from(["audio/x-mulaw", "audio/l16", "PCMU"]) | JSON_VALUES,
    sampleRate=st.sampled_from([8000, "8000", 16000, 8000.5]) | JSON_VALUES,
    channels=st.sampled_from([1, 2, "1"]) | JSON_VALUES,
)
TWILIO = _encoded(
    st.one_of(
        _with(
            {"event": "start"},
            streamSid=HOSTILE_TEXT | JSON_VALUES,
            start=_with(
                {}, streamSid=HOSTILE_TEXT, mediaFormat=MEDIA_FORMAT | JSON_VALUES, customParameters=JSON_VALUES
            )
            | JSON_VALUES,
        ).filter(lambda m: not _starts_a_twilio_call(m)),
        _with(
            {},
            event=st.sampled_from(["media", "dtmf", "mark", "stop", "teleport"]),  # before a start
            media=_with({}, payload=HOSTILE_TEXT | JSON_VALUES) | JSON_VALUES,
            dtmf=_with({}, digit=HOSTILE_TEXT | JSON_VALUES) | JSON_VALUES,
            mark=JSON_VALUES,
        ),
        _with({}, event=JSON_VALUES.filter(lambda e: not isinstance(e, str))),
        _with({}, event=HOSTILE_TEXT.filter(lambda e: e != "connected"), streamSid=JSON_VALUES),
    ),
    st.lists(JSON_VALUES, max_size=3).map(json.dumps),
    st.integers(twilio.MAX_MESSAGE_CHARS + 1, 100_000).map(lambda n: json.dumps({"event": "media", "x": "a" * n})),
    NOT_JSON,
    BINARY,
)  # deeply nested JSON: see test_twilio_deeply_nested_json_closes_with_1008


@SETTINGS
@given(messages=st.lists(TWILIO, min_size=1, max_size=2), connected=st.booleans())
@example(messages=[json.dumps({"event": "💥" * 40})], connected=False)  # a close reason past 123 bytes
@example(messages=[json.dumps({"event": "start", "start": {"mediaFormat": {"encoding": "💥" * 40}}})], connected=True)
def test_twilio_socket_refuses_what_is_not_a_start_with_1008(
    worker: Worker, messages: list[str | bytes], connected: bool
) -> None:
    hello = [json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"})] if connected else []
    outcome = _run(_exchange(f"{worker.ws}/twilio/{AGENT}", [*hello, *messages], json.dumps({"event": "teleport"})))
    _check(worker, outcome, {1008}, [m[:200] for m in messages])


@pytest.mark.parametrize(
    "message",
    ["[" * 5000 + "]" * 5000, '{"event":' + "[" * 3000 + "]" * 3000 + "}"],
    ids=["deep array", "deep event field"],
)
def test_twilio_deeply_nested_json_closes_with_1008(worker: Worker, message: str) -> None:
    outcome = _run(_exchange(f"{worker.ws}/twilio/{AGENT}", [message], None))
    _check(worker, outcome, {1008}, message[:40])


def test_native_deeply_nested_json_closes_with_1008(worker: Worker) -> None:
    outcome = _run(_exchange(f"{worker.ws}/ws/voice/{AGENT}", ["[" * 5000 + "]" * 5000], None))
    _check(worker, outcome, {1008}, "deep array")
    assert "nested too deeply" in outcome.reason


# ---- the agent in the path ----------------------------------------------------------------------------

# a "/" (even as %2F) makes another path, which no socket route matches: refused at the handshake
AGENT_NAMES = st.text(min_size=1, max_size=80).filter(lambda a: a not in (AGENT, ".", "..") and "/" not in a)


@SETTINGS
@given(agent=AGENT_NAMES, path=st.sampled_from(["/ws/voice/", "/twilio/", "/ws/chat/"]))
def test_a_socket_for_an_agent_not_served_is_closed_with_a_reason(worker: Worker, agent: str, path: str) -> None:
    outcome = _run(_exchange(worker.ws + path + quote(agent, safe=""), [], None))
    _check(worker, outcome, {1008, 4404}, (path, agent))


def test_chat_socket_for_a_long_unknown_agent_name_closes_with_4404(worker: Worker) -> None:
    outcome = _run(_exchange(f"{worker.ws}/ws/chat/" + quote("💥" * 40), [], None))
    _check(worker, outcome, {4404}, "40 emoji")


# ---- /ws/desk ----------------------------------------------------------------------------------------

HANDOFF_ID = st.integers() | JSON_VALUES
DESK = _encoded(
    st.one_of(
        _with(
            {"type": "status"},
            status=st.sampled_from(["available", "away", "busy"]) | JSON_VALUES,
            queues=st.lists(HOSTILE_TEXT, max_size=60) | JSON_VALUES,
        ),
        _with({"type": "accept"}, handoff_id=HANDOFF_ID),
        _with({"type": "decline"}, handoff_id=HANDOFF_ID),
        _with({"type": "message"}, text=HOSTILE_TEXT | JSON_VALUES),
        _with({"type": "hangup"}, extra=JSON_VALUES),
        _with(
            {"type": "wrap_up"},
            handoff_id=HANDOFF_ID,
            disposition=HOSTILE_TEXT | JSON_VALUES,
            note=HOSTILE_TEXT | JSON_VALUES,
        ),
        _with({}, type=JSON_VALUES),
    ),
    st.lists(JSON_VALUES, max_size=3).map(json.dumps),
    st.integers(8 * 1024 + 1, 40_000).map(lambda n: json.dumps({"type": "message", "text": "a" * n})),
    DEEP_JSON,
    NOT_JSON,
    BINARY,
)


@SETTINGS
@given(message=DESK)
@example(message=json.dumps({"type": "status", "status": "available", "💥" * 40: 1}))  # a long close reason
def test_desk_socket_answers_or_closes_with_1003(worker: Worker, desk_token: str, message: str | bytes) -> None:
    # still open after the message: the probe (an unknown type) must be refused with 1003 and a reason
    outcome = _run(
        _exchange(
            f"{worker.ws}/ws/desk",
            [message],
            json.dumps({"type": "teleport"}),
            headers={"Authorization": f"Bearer {desk_token}"},
        )
    )
    _check(worker, outcome, {1003}, message[:200])
    errors = [m for m in outcome.received if isinstance(m, dict) and m.get("type") == "error"]
    assert errors and close_reason(errors[-1]["error"]) == outcome.reason, outcome  # the reason, fit for a close


@pytest.mark.parametrize(
    "headers",
    [
        None,
        {"Authorization": "Bearer vxg_not-a-token"},
        {"Authorization": "Basic Og=="},
        {"Origin": "http://evil.example"},
    ],
    ids=["anonymous", "unknown token", "another scheme", "foreign origin"],
)
def test_desk_socket_without_a_desk_agent_closes_with_1008(worker: Worker, headers: dict[str, str] | None) -> None:
    outcome = _run(
        _exchange(
            f"{worker.ws}/ws/desk", [json.dumps({"type": "status", "status": "available"})], None, headers=headers
        )
    )
    _check(worker, outcome, {1008}, headers)


# ---- afterwards ---------------------------------------------------------------------------------------


def test_the_worker_is_healthy_and_still_talks_after_the_fuzz(worker: Worker) -> None:
    """Runs last in this file: the worker answers /health and a real chat turn."""
    health = httpx.get(f"{worker.base}/health", timeout=30)
    assert health.status_code == 200 and health.json()["status"] == "ok"
    outcome = _run(
        _exchange(
            f"{worker.ws}/ws/chat/{AGENT}",
            [json.dumps({"type": "text", "text": "what are your opening hours"})],
            json.dumps({"type": "end"}),
            greeting=True,
        )
    )
    _check(worker, outcome, {1000}, "a proper conversation")
    replies = [m for m in outcome.received if m.get("type") == "turn"]
    assert len(replies) == 2 and re.search(r"\w", replies[1]["agent"] or ""), replies
    assert worker.state.engines is None  # and no voice socket loaded the speech models
