"""A voice call's side of a handoff: the escalation message, hold audio, the desk agent's audio
both ways once they accept, and the spoken fallback (a callback number, or a message).

`VoiceLeg` takes over an escalated `CallPipeline` (it is the pipeline's `CallTakeover`): caller
frames (16 kHz int16, 20 ms) come here instead of to the conversation. The caller hears:

1. the escalation message, to its end;
2. hold audio generated here (a soft two-note chime every few seconds, no recording), with the
   agent's "thanks for holding" message every `hold_message_every_s`;
3. once a desk agent accepts: the queued hold audio is cleared and the agent's browser audio is
   sent to the caller as it arrives, while the caller's audio goes to the agent; if the desk
   agent's socket drops, the caller hears the "reconnecting" message and hold audio again until
   they are back (bridged again) or the queue's `reconnect_grace_s` is over (the fallback);
4. or, when nobody takes the call: the fallback — the agent asks for a phone number (speech,
   recognised with the digits-primed recogniser and the phone-number parser, or keypad digits;
   `#` ends), reads it back and stores it; or records a short message, transcribes it and stores
   it redacted — then says goodbye and hangs up.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import deque

import numpy as np

from voxgate.bundle.models import HandoffMessages
from voxgate.handoff.live import CALLBACK_NUMBER_ASKS, DeskAgent, FailureReason, HandoffDesk, LiveHandoff, NotANumber
from voxgate.runtime.nlu.slots import parse_slot
from voxgate.voice.pipeline import CallPipeline
from voxgate.voice.types import FRAME_BYTES, FRAME_MS, SAMPLE_RATE

log = logging.getLogger("voxgate.handoff.bridge")

#: The hold chime's notes (Hz): low and soft, well apart from the band a test tone or a voice's
#: formants would be measured in.
HOLD_NOTES_HZ = (330.0, 415.0, 330.0)
HOLD_LEVEL = 0.12  # of full scale
HOLD_CYCLE_S = 4.0
HOLD_AHEAD_S = 1.0  # hold audio queued at the caller ahead of playback
BEEP_HZ = 1000.0
PREROLL_FRAMES = 15  # 300 ms kept from before the detected onset
NO_INPUT_S = 8.0  # no answer at all after a prompt
NUMBER_END_SILENCE_S = 1.3  # callers pause between digit groups
MESSAGE_END_SILENCE_S = 2.5
MAX_NUMBER_S = 15.0
DTMF_GAP_S = 3.0  # keyed digits end after this long without another (or at '#')


def hold_audio() -> bytes:
    """One cycle of hold audio (16 kHz int16): a soft three-note chime, then quiet."""
    total = np.zeros(int(SAMPLE_RATE * HOLD_CYCLE_S))
    note_len = int(0.45 * SAMPLE_RATE)
    t = np.arange(note_len) / SAMPLE_RATE
    envelope = np.minimum(1.0, t / 0.02) * np.exp(-t * 4.0)
    for i, freq in enumerate(HOLD_NOTES_HZ):
        start = int(i * 0.5 * SAMPLE_RATE)
        total[start : start + note_len] += HOLD_LEVEL * envelope * np.sin(2 * np.pi * freq * t)
    return (total * 32767).astype("<i2").tobytes()


def beep() -> bytes:
    """The tone before a caller leaves a message (16 kHz int16)."""
    t = np.arange(int(0.3 * SAMPLE_RATE)) / SAMPLE_RATE
    envelope = np.minimum(1.0, np.minimum(t, t[::-1]) / 0.01)
    return (0.2 * envelope * np.sin(2 * np.pi * BEEP_HZ * t) * 32767).astype("<i2").tobytes()


_HOLD = hold_audio()
_BEEP = beep()


def spoken_number(e164: str) -> str:
    """A phone number as the agent reads it back: digits in groups, without the country code."""
    digits = re.sub(r"\D", "", e164)
    if len(digits) == 11 and digits.startswith("1"):
        groups = [digits[1:4], digits[4:7], digits[7:]]
    else:
        groups = [digits[i : i + 3] for i in range(0, len(digits), 3)]
    return ", ".join(" ".join(group) for group in groups if group)


class _Capture:
    """Caller audio from the end of a prompt: speech found by the call's VAD, with a little preroll."""

    def __init__(self) -> None:
        self.preroll: deque[bytes] = deque(maxlen=PREROLL_FRAMES)
        self.audio = bytearray()
        self.started = time.monotonic()
        self.first_speech: float | None = None
        self.last_speech_end: float | None = None
        self.in_speech = False

    def feed(self, pcm16: bytes, vad: object) -> None:
        """One frame of caller audio: speech onsets and ends from the call's detector."""
        for window in vad.feed(pcm16):  # type: ignore[attr-defined]
            if window.event == "onset":
                self.in_speech = True
                if self.first_speech is None:
                    self.first_speech = time.monotonic()
                    self.audio.extend(b"".join(self.preroll))
            elif window.event == "offset":
                self.in_speech = False
                self.last_speech_end = time.monotonic()
        if self.first_speech is not None:
            self.audio.extend(pcm16)
        else:
            self.preroll.append(pcm16)


class VoiceLeg:
    """The caller's side of a voice handoff (see the module docstring)."""

    channel = "voice"

    def __init__(self, desk: HandoffDesk, pipeline: CallPipeline):
        self.desk = desk
        self.pipeline = pipeline
        self.handoff: LiveHandoff | None = None
        self.mode = "message"  # message | hold | connecting | connected | fallback | ended
        self._gone = False
        self._hold_task: asyncio.Task[None] | None = None
        self._capture: _Capture | None = None
        self._dtmf: list[str] = []
        self._dtmf_at = 0.0
        self._open: asyncio.Task[None] | None = None
        self._message_done = False  # the escalation message has played out
        self.first_agent_audio_at: float | None = None
        self.connected_at: float | None = None

    @property
    def gone(self) -> bool:
        """The caller has hung up."""
        return self._gone

    def begin(self) -> None:
        """Hand the escalated call to the desk (in the background)."""
        self._open = asyncio.ensure_future(self._escalate())

    async def _escalate(self) -> None:
        try:
            self.handoff = await self.desk.escalated(self.pipeline.session, self)
        except Exception:
            log.exception("call %s: the desk could not take the escalation; ending the call", self.pipeline.session.id)
            await self._end("handoff_error")

    # ---- from the pipeline (CallTakeover) -------------------------------------------------------

    async def caller_audio(self, pcm16: bytes) -> None:
        """Caller audio: to the desk agent once connected, else to the fallback's listener."""
        if self.mode == "connected" and self.handoff is not None:
            self.desk.caller_audio(self.handoff, pcm16)
        elif self._capture is not None and self.pipeline.vad is not None:
            self._capture.feed(pcm16, self.pipeline.vad)

    async def caller_dtmf(self, digit: str) -> None:
        """A key the caller pressed (only the fallback listens to keys)."""
        if self.mode == "fallback":
            self._dtmf.append(digit)
            self._dtmf_at = time.monotonic()

    async def caller_left(self, reason: str) -> None:
        """The caller hung up: tell the desk."""
        if self.mode == "ended":
            return  # our own hang-up
        self.mode = "ended"
        self._gone = True
        self._stop_hold()
        if self.handoff is not None:
            await self.desk.caller_left(self.handoff)
        # else: the desk is still recording the escalation; it sees `gone` and treats it as a hang-up

    # ---- from the desk (CallerLeg) ---------------------------------------------------------------

    def hold(self, handoff: LiveHandoff) -> None:
        """The caller waits for a person: hold audio after the escalation message."""
        if self.mode == "message":
            self.mode = "hold"
            self._hold_task = asyncio.ensure_future(self._hold(handoff))

    async def _hold(self, handoff: LiveHandoff, intro: str = "") -> None:
        pipeline, output = self.pipeline, self.pipeline.output
        await self._after_message()
        if intro and not pipeline.closed:
            await output.send_clear()  # what the desk agent said that had not played yet
            await pipeline.say(intro)
        every = handoff.messages.hold_message_every_s
        next_message = time.monotonic() + every
        ahead_until = time.monotonic()
        while self.mode == "hold" and not pipeline.closed:
            now = time.monotonic()
            if now >= next_message and ahead_until <= now:
                await pipeline.say(handoff.messages.hold)
                next_message = time.monotonic() + every
                ahead_until = time.monotonic()
                continue
            if ahead_until - now < HOLD_AHEAD_S / 2:
                for start in range(0, len(_HOLD), FRAME_BYTES):
                    if self.mode != "hold":
                        return
                    await output.send_audio(_HOLD[start : start + FRAME_BYTES])
                ahead_until = max(ahead_until, now) + len(_HOLD) / 2 / SAMPLE_RATE
            await asyncio.sleep(min(0.2, max(0.02, ahead_until - now - HOLD_AHEAD_S)))

    async def _after_message(self) -> None:
        if not self._message_done:
            await self.pipeline.wait_played()
            self._message_done = True

    async def _quiet(self) -> None:
        """Let the escalation message finish, cut a hold message, clear queued hold audio."""
        await self._after_message()
        if self.pipeline.agent_speaking:
            await self.pipeline.stop_speaking()
        await self.pipeline.output.send_clear()

    def _stop_hold(self) -> None:
        if self._hold_task is not None and not self._hold_task.done():
            self._hold_task.cancel()
        self._hold_task = None

    async def connect(self, handoff: LiveHandoff, agent: DeskAgent) -> None:
        """A desk agent accepted: clear the hold audio once the escalation message is over, then bridge."""
        self.mode = "connecting"
        self._stop_hold()
        pipeline = self.pipeline
        if pipeline.takeover is not self or pipeline.closed:
            return
        await self._quiet()
        if self.mode == "connecting":
            self.mode = "connected"
            self.connected_at = time.monotonic()
            log.info("call %s connected to desk agent user:%s", pipeline.session.id, agent.user_id)

    async def agent_audio(self, pcm16: bytes) -> None:
        """The desk agent's audio, to the caller once connected."""
        if self.mode != "connected" or self.pipeline.closed:
            return
        if self.first_agent_audio_at is None:
            self.first_agent_audio_at = time.monotonic()
        await self.pipeline.output.send_audio(pcm16)
        self.pipeline.stats.bytes_out += len(pcm16)

    async def agent_text(self, text: str, agent: DeskAgent) -> None:
        """A voice call takes audio, not text."""
        raise RuntimeError("a voice call takes audio, not text")

    async def agent_hung_up(self) -> None:
        """The desk agent ended the call: hang up."""
        await self._end("desk_agent_hangup")

    async def agent_lost(self, handoff: LiveHandoff) -> None:
        """The desk agent's socket dropped: hold again (a message, then hold audio) until they are back."""
        if self.mode not in ("connecting", "connected") or self.pipeline.closed:
            return
        self.mode = "hold"
        self._stop_hold()
        self._hold_task = asyncio.ensure_future(self._hold(handoff, intro=handoff.messages.reconnecting))

    # ---- the fallback --------------------------------------------------------------------------------

    async def fallback(self, handoff: LiveHandoff, reason: str) -> None:
        """Nobody can take the call: take a callback number or a message, by voice."""
        if self.mode == "ended":
            return
        # straight from the escalation message (nobody staffs the queue): the prompt follows it
        # without a pause; after hold audio or a person, the line is cleared first
        follow_on = self.mode == "message"
        self._dtmf.clear()
        self.mode = "fallback"  # keys pressed from here on count (a caller may key ahead of the prompt)
        self._stop_hold()
        messages = handoff.messages
        if not follow_on:
            await self._quiet()
        lost = reason in (FailureReason.agent_disconnected.value, FailureReason.bridge_error.value)
        intro = messages.lost if lost else messages.unavailable
        if handoff.config.fallback == "message":
            await self._take_message(handoff, intro, follow_on)
        else:
            await self._take_number(handoff, intro, follow_on)

    async def _take_number(self, handoff: LiveHandoff, intro: str, follow_on: bool) -> None:
        messages = handoff.messages
        number = await self._callback_number(handoff.messages, f"{intro} {messages.callback_prompt}", follow_on)
        if number is not None:
            await self.desk.fallback_stored(handoff, "callback", number=number)
            await self.pipeline.say(messages.callback_confirm.replace("{number}", spoken_number(number)))
            await self._end("fallback_callback")
            return
        await self.desk.fallback_failed(handoff)
        await self.pipeline.say(messages.callback_failed)
        await self._end("fallback_incomplete")

    async def _callback_number(self, messages: HandoffMessages, prompt: str, follow_on: bool) -> str | None:
        """The number the caller says or keys in, asked again once when there is none it can use."""
        try:
            async for attempt in CALLBACK_NUMBER_ASKS.async_retrying(NotANumber):
                with attempt:
                    if attempt.retry_state.attempt_number == 1:
                        await self.pipeline.say(prompt, follow_on=follow_on)
                    else:
                        await self.pipeline.say(messages.callback_retry)
                    source, text = await self._listen(
                        digits=True, max_s=MAX_NUMBER_S, end_silence_s=NUMBER_END_SILENCE_S
                    )
                    self._dtmf.clear()
                    if not text:
                        raise NotANumber("no answer")
                    parsed = parse_slot("phone", text)
                    log.info(
                        "call %s: callback number by %s: %s",
                        self.pipeline.session.id,
                        source,
                        "understood" if parsed.ok else parsed.error,
                    )
                    if not parsed.ok:
                        raise NotANumber(parsed.error or "not a phone number")
                    return str(parsed.value)
        except NotANumber:
            return None
        return None

    async def _take_message(self, handoff: LiveHandoff, intro: str, follow_on: bool) -> None:
        messages = handoff.messages
        await self.pipeline.say(f"{intro} {messages.message_prompt}", follow_on=follow_on)
        for start in range(0, len(_BEEP), FRAME_BYTES):
            await self.pipeline.output.send_audio(_BEEP[start : start + FRAME_BYTES])
        await asyncio.sleep(len(_BEEP) / 2 / SAMPLE_RATE)
        self._dtmf.clear()  # a '#' pressed during the prompt does not end the message before it starts
        _, text = await self._listen(
            digits=False, max_s=float(handoff.config.max_message_s), end_silence_s=MESSAGE_END_SILENCE_S
        )
        if text.strip():
            await self.desk.fallback_stored(handoff, "message", message=text.strip())
            await self.pipeline.say(messages.message_thanks)
            await self._end("fallback_message")
            return
        await self.desk.fallback_failed(handoff)
        await self.pipeline.say(messages.message_failed)
        await self._end("fallback_incomplete")

    async def _listen(self, *, digits: bool, max_s: float, end_silence_s: float) -> tuple[str, str]:
        """The caller's answer: ('dtmf', digits), ('speech', recognised words) or ('', '') for none."""
        capture = _Capture()
        self._capture = capture
        try:
            while True:
                await asyncio.sleep(FRAME_MS / 1000 * 2)
                now = time.monotonic()
                if self._dtmf and (digits or "#" in self._dtmf):
                    if "#" in self._dtmf or now - self._dtmf_at >= DTMF_GAP_S or len(self._dtmf) >= 15:
                        if digits:
                            return "dtmf", "".join(d for d in self._dtmf if d.isdigit())
                        break  # '#' ends a message
                    continue
                if capture.first_speech is None:
                    if now - capture.started >= NO_INPUT_S:
                        return "", ""
                    continue
                if (
                    not capture.in_speech
                    and capture.last_speech_end is not None
                    and now - capture.last_speech_end >= end_silence_s
                ):
                    break
                if now - capture.first_speech >= max_s:
                    break
        finally:
            self._capture = None
        if not capture.audio:
            return "", ""
        return "speech", (await self.pipeline.recognize(bytes(capture.audio), digits=digits)).strip()

    async def _end(self, reason: str) -> None:
        if self.mode == "ended":
            return
        self.mode = "ended"
        self._stop_hold()
        await self.pipeline.end_call(reason)
