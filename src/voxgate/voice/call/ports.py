"""What the call pipeline needs from its collaborators: the channel's output, a takeover, the VAD,
the call recording and the speech engines, each a small Protocol."""

from __future__ import annotations

from typing import Any, Protocol

from voxgate.voice.call.barge_in import ProbeLatency
from voxgate.voice.pool import Ticket
from voxgate.voice.types import SpeechSynthesizer, Transcript
from voxgate.voice.vad import VadWindow


class CallOutput(Protocol):
    """What a channel offers the pipeline. Audio is 16 kHz int16 mono PCM."""

    async def send_audio(self, pcm16: bytes) -> None:
        """Play audio to the caller."""
        ...

    async def send_clear(self) -> None:
        """Drop the audio queued for the caller (a barge-in)."""
        ...

    async def send_mark(self, name: str) -> None:
        """Ask to be told when the caller has heard the audio sent so far."""
        ...

    async def send_event(self, event: dict[str, Any]) -> None:
        """Send a channel event (for clients that show the conversation)."""
        ...

    async def hangup(self, reason: str) -> None:
        """End the call."""
        ...


class CallTakeover(Protocol):
    """Who has the call once its conversation escalated (the live-agent desk, `voxgate.handoff`):
    caller audio, keypad digits and the hang-up go to it instead of the conversation."""

    async def caller_audio(self, pcm16: bytes) -> None:
        """The caller's audio, as it arrives."""
        ...

    async def caller_dtmf(self, digit: str) -> None:
        """A keypad digit the caller pressed."""
        ...

    async def caller_left(self, reason: str) -> None:
        """The caller hung up."""
        ...


class Vad(Protocol):
    """A speech detector for one audio stream (`voice.vad.SpeechDetector`)."""

    def feed(self, pcm16: bytes) -> list[VadWindow]:
        """Add int16 audio; each completed window as the detector saw it."""
        ...

    def reset(self) -> None:
        """Start over on a new stream."""
        ...


class CallRecorder(Protocol):
    """Both sides of a call kept for the recording (`voice.recording.CallRecording`)."""

    def caller(self, pcm16: bytes) -> None:
        """Caller audio, as it arrives."""
        ...

    def agent(self, pcm16: bytes) -> None:
        """Agent audio, as it is sent."""
        ...

    def clear(self) -> None:
        """Playback was cleared: the caller heard the agent only up to now."""
        ...

    @property
    def duration_ms(self) -> int:
        """How long the recording is."""
        ...

    def wav(self) -> bytes:
        """The recording, to be stored."""
        ...


class SpeechEngines(Protocol):
    """The speech models a worker shares across its calls (`voice.engines.VoiceEngines`)."""

    #: how long barge-in probes lately took on this worker (every call's listener waits on it)
    probe_latency: ProbeLatency

    def synthesizer(self, voice: str) -> SpeechSynthesizer:
        """The synthesiser for a voice name."""
        ...

    async def acquire_vad(self) -> Vad:
        """A reset speech detector for a new call."""
        ...

    def release_vad(self, vad: Vad) -> None:
        """Give back a call's speech detector for the next call."""
        ...

    def chunk_text(self, text: str) -> list[str]:
        """A reply cut into what is synthesised at a time."""
        ...

    def cached_speech(self, synth: SpeechSynthesizer, text: str) -> bytes | None:
        """The cached audio for this chunk, or None; cheap enough for the event loop."""
        ...

    async def synthesize(self, synth: SpeechSynthesizer, text: str, priority: int) -> bytes:
        """16 kHz PCM for one chunk of a reply, at `priority` in the speech pool."""
        ...

    async def recognize(
        self, pcm16: bytes, priority: int, prompt: str | None = None, quick: bool = False, ticket: Ticket | None = None
    ) -> Transcript:
        """Words in 16 kHz int16 caller audio, at `priority` in the speech pool."""
        ...

    async def readings(self, pcm16: bytes, priority: int, prompt: str | None = None) -> list[str]:
        """Alternative readings of one short utterance, best first (none where the recogniser has no
        beam search), at `priority` in the speech pool."""
        ...

    def has_room(self) -> bool:
        """Whether the speech pool would start a job at once."""
        ...

    def promote(self, ticket: Ticket, priority: int) -> bool:
        """Raise a queued job's priority."""
        ...


class RecordedOutput:
    """A call's output whose audio is also recorded; a cleared playback is cut from the recording."""

    def __init__(self, inner: CallOutput, recording: CallRecorder) -> None:
        self._inner = inner
        self.recording = recording

    async def send_audio(self, pcm16: bytes) -> None:
        """Record, then send."""
        self.recording.agent(pcm16)
        await self._inner.send_audio(pcm16)

    async def send_clear(self) -> None:
        """Cut the recording to what was heard, then clear the caller's queue."""
        self.recording.clear()
        await self._inner.send_clear()

    async def send_mark(self, name: str) -> None:
        """Passed on."""
        await self._inner.send_mark(name)

    async def send_event(self, event: dict[str, Any]) -> None:
        """Passed on."""
        await self._inner.send_event(event)

    async def hangup(self, reason: str) -> None:
        """Passed on."""
        await self._inner.hangup(reason)
