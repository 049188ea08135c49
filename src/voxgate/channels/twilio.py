"""A Twilio-Media-Streams-compatible WebSocket endpoint (8 kHz μ-law, JSON messages).

In: connected, start, media, dtmf, mark, stop (channels/twilio_messages.py). Out: media, mark, clear.
Marks come back when the caller has heard the audio queued before them, which is how the pipeline
knows what was actually played. Any malformed message ends that call (1008) with a logged reason.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from fastapi import APIRouter, Depends, WebSocket

from voxgate.channels.dialect import CallEvent, Dtmf, Frame, Mark, Media, Received, Start, Stop
from voxgate.channels.serve import serve_call
from voxgate.channels.services import CallServices, call_services
from voxgate.channels.twilio_messages import (
    TWILIO_RATE,
    DtmfMessage,
    Envelope,
    MarkMessage,
    MediaMessage,
    StartBody,
    StartMessage,
    validated,
)
from voxgate.channels.wire import ProtocolError, json_object

router = APIRouter(tags=["voice"])

MAX_MESSAGE_CHARS = 64 * 1024
MAX_EVENT_CHARS = 40  # of an unknown event's name, repeated in the close reason


def check_format(start: dict[str, Any]) -> None:
    """ProtocolError unless a `start` object's `mediaFormat` is 8 kHz μ-law mono (or absent)."""
    validated(StartBody, start)


class TwilioDialect:
    """Twilio Media Streams as a `Dialect`: JSON text frames only; transcripts and turns are not sent
    (Twilio has no place for them; they are stored and logged instead)."""

    channel = "twilio"
    session_channel = "twilio"

    def parse(self, received: Received, start: Start | None) -> CallEvent | None:
        """A media-stream message as a call event (`connected` carries none)."""
        if received.text is None:
            raise ProtocolError("binary frames are not part of the media-stream protocol")
        message = json_object(received.text, MAX_MESSAGE_CHARS)
        event = validated(Envelope, message).event
        if event == "connected":
            return None
        if event == "start":
            if start is not None:
                raise ProtocolError("a second start message")
            started = validated(StartMessage, message)
            return Start(TWILIO_RATE, "mulaw", stream_sid=started.sid, calling_number=started.start.calling_number)
        if start is None:
            raise ProtocolError(f"'{event}' before 'start'")
        if event == "media":
            return Media(validated(MediaMessage, message).media.payload)
        if event == "dtmf":
            return Dtmf(validated(DtmfMessage, message).dtmf.digit)
        if event == "mark":
            return Mark(validated(MarkMessage, message).mark.name)
        if event == "stop":
            return Stop()
        raise ProtocolError(f"unknown event '{event[:MAX_EVENT_CHARS]}'")

    def audio(self, start: Start, payload: bytes) -> Frame:
        """A `media` message with base64 μ-law."""
        media = {"payload": base64.b64encode(payload).decode("ascii")}
        return json.dumps({"event": "media", "streamSid": start.stream_sid, "media": media})

    def clear(self, start: Start) -> Frame:
        """A `clear` message: Twilio drops the audio it has queued."""
        return json.dumps({"event": "clear", "streamSid": start.stream_sid})

    def mark(self, start: Start, name: str) -> Frame:
        """A `mark` message: Twilio sends it back once the audio before it has played."""
        return json.dumps({"event": "mark", "streamSid": start.stream_sid, "mark": {"name": name}})

    def event(self, start: Start, event: dict[str, Any]) -> Frame | None:
        """Twilio has no channel for call events."""
        return None

    def error(self, reason: str) -> Frame | None:
        """Bad input is answered by the close (1008 and the reason) alone."""
        return None


@router.websocket("/twilio/{agent}")
async def twilio_stream(websocket: WebSocket, agent: str, services: CallServices = Depends(call_services)) -> None:
    """A call with `agent` from Twilio (or a gateway speaking its Media Streams protocol)."""
    await serve_call(websocket, TwilioDialect(), agent=agent, services=services)
