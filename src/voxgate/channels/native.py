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
import logging
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from voxgate.channels.calls import (
    ProtocolError,
    SocketOutput,
    StartTimeout,
    close_call,
    finish_call,
    json_object,
    open_call,
    play_busy,
)
from voxgate.voice import codec
from voxgate.voice.pipeline import CallPipeline
from voxgate.voice.types import FRAME_BYTES, SAMPLE_RATE

router = APIRouter(tags=["voice"])
log = logging.getLogger("voxgate.channels.native")

RATES = {8000, 16000, 22050, 24000, 32000, 44100, 48000}
ENCODINGS = {"pcm16", "mulaw"}
DTMF_DIGITS = set("0123456789*#")
MAX_TEXT_CHARS = 16 * 1024


class NativeOutput(SocketOutput):
    """CallOutput for the native protocol: audio converted to the client's rate and encoding."""

    def __init__(self, ws: WebSocket, rate: int, encoding: str):
        super().__init__(ws)
        self.rate = rate
        self.encoding = encoding
        self.down = codec.Resampler(SAMPLE_RATE, rate) if rate != SAMPLE_RATE else None

    async def send_audio(self, pcm16: bytes) -> None:
        out = self.down.process(pcm16) if self.down else pcm16
        if self.encoding == "mulaw":
            out = codec.mulaw_encode(out)
        if out:
            await self._send_raw(data=out)

    async def send_clear(self) -> None:
        await self.send_event({"type": "clear"})

    async def send_mark(self, name: str) -> None:
        await self.send_event({"type": "mark", "name": name})

    async def send_event(self, event: dict[str, Any]) -> None:
        await self._send_raw(text=json.dumps(event, default=str))


def _start_params(msg: dict[str, Any]) -> tuple[int, str]:
    rate = msg.get("sample_rate", SAMPLE_RATE)
    encoding = msg.get("encoding", "pcm16")
    if type(rate) is not int or rate not in RATES:  # not 16000.0 or true; a list is not even hashable
        raise ProtocolError(f"unsupported sample_rate {rate!r} (use one of {sorted(RATES)})"[:200])
    if not isinstance(encoding, str) or encoding not in ENCODINGS:
        raise ProtocolError(f"unsupported encoding {encoding!r} (use pcm16 or mulaw)")
    if encoding == "mulaw" and rate != 8000:
        raise ProtocolError("mulaw audio must be 8000 Hz")
    return rate, encoding


def _json(raw: str) -> dict[str, Any]:
    msg = json_object(raw, MAX_TEXT_CHARS)
    if not isinstance(msg.get("type"), str):
        raise ProtocolError("control messages are JSON objects with a 'type'")
    return msg


@router.websocket("/ws/voice/{agent}")
async def voice_socket(websocket: WebSocket, agent: str) -> None:
    opened = await open_call(websocket, agent, "native")
    if opened is None:
        return
    state, runtime = opened.state, opened.runtime
    pipeline: CallPipeline | None = None
    output: NativeOutput | None = None
    up: codec.Resampler | None = None
    width = 2
    reframer = codec.Reframer(FRAME_BYTES)
    reason = "caller_hangup"
    try:
        while True:
            message = await opened.receive(websocket)  # bounded by the start deadline until 'start'
            if message["type"] == "websocket.disconnect":
                break
            data, text = message.get("bytes"), message.get("text")
            if text is not None:
                msg = _json(text)
                kind = msg["type"]
                if kind == "start":
                    if output is not None:
                        raise ProtocolError("a second start message")
                    rate, encoding = _start_params(msg)
                    width = 1 if encoding == "mulaw" else 2
                    output = NativeOutput(websocket, rate, encoding)
                    up = codec.Resampler(rate, SAMPLE_RATE) if rate != SAMPLE_RATE else None
                    if not await opened.admit():  # a valid start: only now does the call take a line
                        await play_busy(state.admission, opened.engines, output, unavailable=runtime is None)
                        reason = "busy" if runtime is not None else "unavailable"
                        return
                    pipeline = CallPipeline(
                        runtime,
                        opened.engines,
                        output,
                        channel="voice",
                        recording=state.call_recording(),
                        on_turn=state.record_voice_turn,
                        handoff=state.desk,
                    )
                    await output.send_event(
                        {
                            "type": "started",
                            "session_id": pipeline.session.id,
                            "sample_rate": rate,
                            "encoding": encoding,
                        }
                    )
                    await pipeline.start()
                elif pipeline is None:
                    raise ProtocolError(f"'{kind}' before 'start'")
                elif kind == "dtmf":
                    digit = msg.get("digit")
                    if not isinstance(digit, str) or digit not in DTMF_DIGITS:
                        raise ProtocolError(f"invalid dtmf digit {digit!r}")
                    await pipeline.feed_dtmf(digit)
                elif kind == "mark":
                    if not isinstance(msg.get("name"), str):
                        raise ProtocolError("mark without a name")
                    pipeline.played(msg["name"])
                elif kind == "stop":
                    break
                else:
                    raise ProtocolError(f"unknown message type '{kind[:40]}'")
            elif data is not None:
                if pipeline is None or output is None:
                    raise ProtocolError("audio before 'start'")
                if len(data) % width or len(data) > output.rate * width:
                    raise ProtocolError(f"bad audio frame of {len(data)} bytes (whole samples, at most one second)")
                pcm = codec.mulaw_decode(data) if width == 1 else data
                for frame in reframer.push(up.process(pcm) if up else pcm):
                    await pipeline.feed_audio(frame)
            if pipeline is not None and pipeline.closed:
                reason = "agent_hangup"
                break
    except ProtocolError as exc:
        reason = "start_timeout" if isinstance(exc, StartTimeout) else "protocol_error"
        log.warning("voice call on %s closed: %s", agent, exc)
        await close_call(websocket, output, pipeline, exc, json.dumps({"type": "error", "error": str(exc)}))
    except WebSocketDisconnect:
        reason = "caller_hangup"
    finally:
        opened.leave_pending()
        await finish_call(state, pipeline, opened.admitted, reason)
