"""A Twilio-Media-Streams-compatible WebSocket endpoint (8 kHz μ-law, JSON messages).

In: connected, start, media, dtmf, mark, stop. Out: media, mark, clear. Marks come back when
the caller has heard the audio queued before them, which is how the pipeline knows what was
actually played. Any malformed message ends that call with a logged reason.
"""

from __future__ import annotations

import base64
import binascii
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
from voxgate.channels.throttle import calling_number, retry_after
from voxgate.voice import codec
from voxgate.voice.pipeline import CallPipeline
from voxgate.voice.types import FRAME_BYTES, SAMPLE_RATE

router = APIRouter(tags=["voice"])
log = logging.getLogger("voxgate.channels.twilio")

TWILIO_RATE = 8000
MAX_PAYLOAD_BYTES = 8000  # one second of μ-law: far more than the 160-byte frames Twilio sends
MAX_MESSAGE_CHARS = 64 * 1024
MULAW_NAMES = {"audio/x-mulaw", "audio/mulaw", "audio/pcmu", "pcmu", "mulaw", "g711_ulaw"}
DTMF_DIGITS = set("0123456789*#")


class TwilioOutput(SocketOutput):
    """CallOutput that speaks the Twilio media-stream dialect."""

    def __init__(self, ws: WebSocket, stream_sid: str):
        super().__init__(ws)
        self.stream_sid = stream_sid
        self.down = codec.Resampler(SAMPLE_RATE, TWILIO_RATE)

    async def _send(self, message: dict[str, Any]) -> None:
        await self._send_raw(text=json.dumps(message))

    async def send_audio(self, pcm16: bytes) -> None:
        mulaw = codec.mulaw_encode(self.down.process(pcm16))
        if mulaw:
            payload = base64.b64encode(mulaw).decode("ascii")
            await self._send({"event": "media", "streamSid": self.stream_sid, "media": {"payload": payload}})

    async def send_clear(self) -> None:
        await self._send({"event": "clear", "streamSid": self.stream_sid})

    async def send_mark(self, name: str) -> None:
        await self._send({"event": "mark", "streamSid": self.stream_sid, "mark": {"name": name}})

    async def send_event(self, event: dict[str, Any]) -> None:
        return None  # Twilio has no channel for transcripts; they are stored and logged instead


def _parse(raw: str) -> dict[str, Any]:
    msg = json_object(raw, MAX_MESSAGE_CHARS)
    if not isinstance(msg.get("event"), str):
        raise ProtocolError("message must be a JSON object with an 'event' string")
    return msg


def _check_format(start: dict[str, Any]) -> None:
    fmt = start.get("mediaFormat") or {}
    if not isinstance(fmt, dict):
        raise ProtocolError("start.mediaFormat must be an object")
    encoding = fmt.get("encoding", "audio/x-mulaw")
    rate = fmt.get("sampleRate", TWILIO_RATE)
    channels = fmt.get("channels", 1)
    # Twilio writes audio/x-mulaw; look-alike gateways and clients write the same codec otherwise
    mulaw = isinstance(encoding, str) and encoding.lower() in MULAW_NAMES
    if not mulaw or str(rate) != str(TWILIO_RATE) or str(channels) != "1":
        raise ProtocolError(
            f"unsupported media format {encoding} {rate} Hz x{channels}; expected audio/x-mulaw 8000 Hz mono"
        )


def _payload(msg: dict[str, Any]) -> bytes:
    media = msg.get("media")
    if not isinstance(media, dict) or not isinstance(media.get("payload"), str):
        raise ProtocolError("media message without media.payload")
    payload = media["payload"]
    if len(payload) > MAX_PAYLOAD_BYTES * 4 // 3 + 4:
        raise ProtocolError("media payload larger than one second of audio")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError("media payload is not valid base64") from None


@router.websocket("/twilio/{agent}")
async def twilio_stream(websocket: WebSocket, agent: str) -> None:
    opened = await open_call(websocket, agent, "twilio")
    if opened is None:
        return
    state, runtime = opened.state, opened.runtime
    pipeline: CallPipeline | None = None
    output: TwilioOutput | None = None
    up = codec.Resampler(TWILIO_RATE, SAMPLE_RATE)
    reframer = codec.Reframer(FRAME_BYTES)
    reason = "caller_hangup"
    try:
        while True:
            message = await opened.receive(websocket)  # bounded by the start deadline until 'start'
            if message["type"] == "websocket.disconnect":
                break
            if message.get("text") is None:
                raise ProtocolError("binary frames are not part of the media-stream protocol")
            msg = _parse(message["text"])
            event = msg["event"]
            if event == "connected":
                continue
            if event == "start":
                if output is not None:
                    raise ProtocolError("a second start message")
                start = msg.get("start")
                if not isinstance(start, dict):
                    raise ProtocolError("start message without a start object")
                _check_format(start)
                sid = str(msg.get("streamSid") or start.get("streamSid") or "")
                if not sid:
                    raise ProtocolError("start message without streamSid")
                output = TwilioOutput(websocket, sid)
                number = calling_number(start)
                wait = state.throttles.per_number.hit(number) if number is not None else None
                if wait is not None:  # before it takes a line or loads a speech model
                    log.warning("twilio call on %s refused: too many calls from one number this minute", agent)
                    reason = "throttled"
                    opened.leave_pending()
                    output.closed = True
                    await websocket.close(
                        code=1008, reason=f"too many calls from this number; retry in {retry_after(wait)} s"
                    )
                    return
                if not await opened.admit():  # a valid start: only now does the call take a line
                    await play_busy(state.admission, opened.engines, output, unavailable=runtime is None)
                    reason = "busy" if runtime is not None else "unavailable"
                    return
                pipeline = CallPipeline(
                    runtime,
                    opened.engines,
                    output,
                    channel="twilio",
                    recording=state.call_recording(),
                    on_turn=state.record_voice_turn,
                    handoff=state.desk,
                )
                await pipeline.start()
                continue
            if output is None or (pipeline is None and event != "stop"):
                raise ProtocolError(f"'{event}' before 'start'")
            if event == "media":
                for frame in reframer.push(up.process(codec.mulaw_decode(_payload(msg)))):
                    await pipeline.feed_audio(frame)  # type: ignore[union-attr]
            elif event == "dtmf":
                digit = (msg.get("dtmf") or {}).get("digit") if isinstance(msg.get("dtmf"), dict) else None
                if not isinstance(digit, str) or digit not in DTMF_DIGITS:
                    raise ProtocolError(f"invalid dtmf digit {digit!r}")
                await pipeline.feed_dtmf(digit)  # type: ignore[union-attr]
            elif event == "mark":
                name = (msg.get("mark") or {}).get("name") if isinstance(msg.get("mark"), dict) else None
                if not isinstance(name, str):
                    raise ProtocolError("mark message without mark.name")
                pipeline.played(name)  # type: ignore[union-attr]
            elif event == "stop":
                break
            else:
                raise ProtocolError(f"unknown event '{event[:40]}'")
            if pipeline is not None and pipeline.closed:
                reason = "agent_hangup"
                break
    except ProtocolError as exc:
        reason = "start_timeout" if isinstance(exc, StartTimeout) else "protocol_error"
        log.warning("twilio call on %s closed: %s", agent, exc)
        await close_call(websocket, output, pipeline, exc)
    except WebSocketDisconnect:
        reason = "caller_hangup"
    finally:
        opened.leave_pending()
        await finish_call(state, pipeline, opened.admitted, reason)
