"""voxgate's own voice WebSocket: JSON control messages plus binary audio frames.

Client → server: first a text message
  {"type": "start", "sample_rate": 16000, "encoding": "pcm16" | "mulaw"}
then binary audio in that format (any frame size up to one second; 20 ms is best), and text
messages {"type": "dtmf", "digit": "5"}, {"type": "mark", "name": …} (the client has played
up to that mark) and {"type": "stop"}.
Server → client: {"type": "started", "session_id", "sample_rate", "encoding"}, binary agent
audio in the client's format, {"type": "mark", "name"} after each spoken chunk,
{"type": "clear"} on barge-in (drop queued audio), {"type": "transcript", "role", "text"},
{"type": "turn", …} (the turn document), {"type": "ended", "outcome", …}, and
{"type": "error", "error"} just before closing a call on bad input.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Depends, WebSocket

from voxgate.channels.dialect import CallEvent, Dtmf, Encoding, Frame, Mark, Media, Received, Start, Stop
from voxgate.channels.serve import serve_call
from voxgate.channels.services import CallServices, call_services
from voxgate.channels.wire import ProtocolError, json_object
from voxgate.voice.types import SAMPLE_RATE

router = APIRouter(tags=["voice"])

RATES = {8000, 16000, 22050, 24000, 32000, 44100, 48000}
ENCODINGS: dict[str, Encoding] = {"pcm16": "pcm16", "mulaw": "mulaw"}
MULAW_RATE = 8000
DTMF_DIGITS = set("0123456789*#")
MAX_TEXT_CHARS = 16 * 1024
MAX_KIND_CHARS = 40  # of an unknown message type, repeated in the close reason


def start_params(msg: dict[str, Any]) -> tuple[int, Encoding]:
    """The sample rate and encoding a `start` message asks for, or ProtocolError saying what is wrong."""
    rate = msg.get("sample_rate", SAMPLE_RATE)
    encoding = msg.get("encoding", "pcm16")
    if type(rate) is not int or rate not in RATES:  # not 16000.0 or true; a list is not even hashable
        raise ProtocolError(f"unsupported sample_rate {rate!r} (use one of {sorted(RATES)})"[:200])
    if not isinstance(encoding, str) or encoding not in ENCODINGS:
        raise ProtocolError(f"unsupported encoding {encoding!r} (use pcm16 or mulaw)")
    if encoding == "mulaw" and rate != MULAW_RATE:
        raise ProtocolError("mulaw audio must be 8000 Hz")
    return rate, ENCODINGS[encoding]


def _control(raw: str) -> dict[str, Any]:
    msg = json_object(raw, MAX_TEXT_CHARS)
    if not isinstance(msg.get("type"), str):
        raise ProtocolError("control messages are JSON objects with a 'type'")
    return msg


class NativeDialect:
    """The native protocol (see the module docstring) as a `Dialect`."""

    channel = "native"
    session_channel = "voice"

    def parse(self, received: Received, start: Start | None) -> CallEvent | None:
        """A control message or an audio frame as a call event."""
        if received.text is not None:
            return self._control(_control(received.text), start)
        if received.data is None:
            return None
        if start is None:
            raise ProtocolError("audio before 'start'")
        data, width = received.data, 1 if start.encoding == "mulaw" else 2
        if len(data) % width or len(data) > start.sample_rate * width:
            raise ProtocolError(f"bad audio frame of {len(data)} bytes (whole samples, at most one second)")
        return Media(data)

    @staticmethod
    def _control(msg: dict[str, Any], start: Start | None) -> CallEvent:
        kind: str = msg["type"]
        if kind == "start":
            if start is not None:
                raise ProtocolError("a second start message")
            rate, encoding = start_params(msg)
            return Start(rate, encoding)
        if start is None:
            raise ProtocolError(f"'{kind}' before 'start'")
        if kind == "dtmf":
            digit = msg.get("digit")
            if not isinstance(digit, str) or digit not in DTMF_DIGITS:
                raise ProtocolError(f"invalid dtmf digit {digit!r}")
            return Dtmf(digit)
        if kind == "mark":
            name = msg.get("name")
            if not isinstance(name, str):
                raise ProtocolError("mark without a name")
            return Mark(name)
        if kind == "stop":
            return Stop()
        raise ProtocolError(f"unknown message type '{kind[:MAX_KIND_CHARS]}'")

    def audio(self, start: Start, payload: bytes) -> Frame:
        """Agent audio as a binary frame in the client's format."""
        return payload

    def clear(self, start: Start) -> Frame:
        """{"type": "clear"}."""
        return self.event(start, {"type": "clear"})

    def mark(self, start: Start, name: str) -> Frame:
        """{"type": "mark", "name": …}."""
        return self.event(start, {"type": "mark", "name": name})

    def event(self, start: Start, event: dict[str, Any]) -> Frame:
        """Every call event goes to the client as JSON."""
        return json.dumps(event, default=str)

    def error(self, reason: str) -> Frame:
        """{"type": "error", "error": …} before the close."""
        return json.dumps({"type": "error", "error": reason})


@router.websocket("/ws/voice/{agent}")
async def voice_socket(websocket: WebSocket, agent: str, services: CallServices = Depends(call_services)) -> None:
    """A call with `agent` in voxgate's own protocol."""
    await serve_call(websocket, NativeDialect(), agent=agent, services=services)
