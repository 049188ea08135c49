"""One loop for a call on any voice socket: open it (handshake, admission, the agent), wait for a valid
`start`, take a line (or play the busy message), then carry caller audio, keys and marks to the call's
pipeline until the caller or the agent hangs up, or the caller sends something malformed (1008)."""

from __future__ import annotations

import asyncio
import logging

from starlette.websockets import WebSocket, WebSocketDisconnect

from voxgate.channels.audio import InboundAudio
from voxgate.channels.calls import CallSocket, OpenedCall, abort_socket, finish_call, open_call, play_busy
from voxgate.channels.dialect import Dialect, Dtmf, Mark, Media, Received, Start, Stop
from voxgate.channels.services import CallServices
from voxgate.channels.throttle import retry_after
from voxgate.channels.wire import ProtocolError, StartTimeout, utf8_safe
from voxgate.errors import UnavailableError
from voxgate.voice.pipeline import CallPipeline

log = logging.getLogger("voxgate.channels")


async def serve_call(ws: WebSocket, dialect: Dialect, *, agent: str, services: CallServices) -> None:
    """Carry one call with `agent` on `ws`, spoken in `dialect`, with what `services` provide."""
    opened = await open_call(ws, agent, dialect.channel, services)
    if opened is None:
        return
    output: CallSocket | None = None
    pipeline: CallPipeline | None = None
    reason = "caller_hangup"
    try:
        start = await _wait_for_start(ws, dialect, opened)
        if start is None:
            return
        output = CallSocket(ws, dialect, start)
        refused = await _throttled(dialect, opened, output, agent)
        if refused is not None:
            reason = refused
            return
        engines = await opened.admit()  # a valid start: only now does the call take a line
        if not opened.admitted or opened.runtime is None:
            await play_busy(services.admission, engines, output, unavailable=opened.runtime is None)
            reason = "busy" if opened.runtime is not None else "unavailable"
            return
        pipeline = CallPipeline(
            opened.runtime,
            engines,
            output,
            channel=dialect.session_channel,
            recording=services.call_recording(),
            on_turn=services.record_voice_turn,
            handoff=services.desk,
        )
        await output.send_event(
            {
                "type": "started",
                "session_id": pipeline.session.id,
                "sample_rate": start.sample_rate,
                "encoding": start.encoding,
            }
        )
        await pipeline.start()
        reason = await _carry(ws, dialect, opened, pipeline, start)
    except ProtocolError as exc:
        reason = "start_timeout" if isinstance(exc, StartTimeout) else "protocol_error"
        log.warning("%s call on %s closed: %s", dialect.channel, utf8_safe(agent), utf8_safe(str(exc)))
        if pipeline is not None:
            await asyncio.shield(pipeline.close("protocol_error"))  # silence the call before the close
        last_words = dialect.error(str(exc))
        if output is not None:
            await output.abort(str(exc), last_words)
        else:
            await abort_socket(ws, str(exc), last_words)
    except WebSocketDisconnect:
        reason = "caller_hangup"
    finally:
        opened.leave_pending()
        await finish_call(services, pipeline, opened.admitted, reason)


async def _receive(ws: WebSocket, opened: OpenedCall) -> Received | None:
    """The socket's next message (None: the caller went away); before `start`, only until its deadline."""
    message = await opened.receive(ws)  # bounded by the start deadline until 'start'
    if message["type"] == "websocket.disconnect":
        return None
    return Received(text=message.get("text"), data=message.get("bytes"))


async def _wait_for_start(ws: WebSocket, dialect: Dialect, opened: OpenedCall) -> Start | None:
    """The caller's valid `start` (None: they went away first); anything else before it ends the call."""
    while True:
        received = await _receive(ws, opened)
        if received is None:
            return None
        event = dialect.parse(received, None)
        if isinstance(event, Start):
            return event
        if event is not None:  # a dialect refuses these itself, saying which message it was
            raise ProtocolError("a call event before 'start'")


async def _throttled(dialect: Dialect, opened: OpenedCall, output: CallSocket, agent: str) -> str | None:
    """Why the call ends at its start because of its calling number, if it does: `throttled` when the
    number has started too many calls this minute (closed with 1008 before it takes a line or loads a
    speech model), `busy` when the cluster's count of them cannot be reached (fail closed, as admission
    does: the caller hears the busy message, no line taken). None: the call goes on (a call with no
    number is not counted)."""
    number = output.start.calling_number
    if number is None:
        return None
    services = opened.services
    try:
        wait = await services.throttles.per_number.take(number)
    except UnavailableError as exc:
        log.warning(
            "%s call on %s refused: its calling number cannot be counted (%s)", dialect.channel, utf8_safe(agent), exc
        )
        opened.leave_pending()
        engines = await services.voice_engines()
        services.admission.refused += 1
        await play_busy(services.admission, engines, output, unavailable=False)
        return "busy"
    if wait is None:
        return None
    log.warning("%s call on %s refused: too many calls from one number this minute", dialect.channel, utf8_safe(agent))
    opened.leave_pending()
    await output.abort(f"too many calls from this number; retry in {retry_after(wait)} s", None)
    return "throttled"


async def _carry(ws: WebSocket, dialect: Dialect, opened: OpenedCall, pipeline: CallPipeline, start: Start) -> str:
    """Caller audio, keys and marks to the pipeline until the call ends; returns why it ended."""
    inbound = InboundAudio(start.sample_rate, start.encoding)
    while not pipeline.closed:
        received = await _receive(ws, opened)
        if received is None:
            return "caller_hangup"
        event = dialect.parse(received, start)
        if event is None:
            continue
        if isinstance(event, Media):
            for frame in inbound.frames(event.audio):
                await pipeline.feed_audio(frame)
        elif isinstance(event, Dtmf):
            await pipeline.feed_dtmf(event.digit)
        elif isinstance(event, Mark):
            pipeline.played(event.name)
        elif isinstance(event, Stop):
            return "caller_hangup"
        else:  # a dialect refuses this itself
            raise ProtocolError("a second start message")
    return "agent_hangup"
