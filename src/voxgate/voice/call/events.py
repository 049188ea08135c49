"""The typed events the call stages hand the pipeline. Events without data are singletons, so a
frame that changes nothing allocates nothing."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class VoiceBack:
    """The caller's voice came back after a quiet frame or more (any early guess is stale)."""


@dataclass(frozen=True, slots=True)
class QuietSpell:
    """The voice has been quiet long enough, in a long enough utterance, to guess at it early."""


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    """The VAD confirmed speech; `onset_ms` is where it began in the caller's audio."""

    onset_ms: float


@dataclass(frozen=True, slots=True)
class SpeechEnded:
    """The caller paused: `vad_ms` is where the VAD put the end, `end_ms` the last loud frame."""

    vad_ms: float
    end_ms: float


@dataclass(frozen=True, slots=True)
class ProbeWanted:
    """Barge-in: recognise the speech heard over the agent so far, primed with `prompt`."""

    prompt: str | None


@dataclass(frozen=True, slots=True)
class Backchannel:
    """Barge-in: the speech over the agent ended before it interrupted; `heard` what a probe heard."""

    heard: str


@dataclass(frozen=True, slots=True)
class Interruption:
    """Barge-in: the caller interrupts the agent after `heard_ms` of speech."""

    heard_ms: float
    heard: str


@dataclass(frozen=True, slots=True)
class BargeOver:
    """Barge-in: the agent finished speaking first; the speech is an ordinary turn."""


@dataclass(frozen=True, slots=True)
class EndOfTurn:
    """Endpointing: the pause is long enough, the turn is over."""


@dataclass(frozen=True, slots=True)
class NoiseOnly:
    """Endpointing: the early recognition heard no words in a long enough pause; drop the sound."""


@dataclass(frozen=True, slots=True)
class DigitsEntered:
    """DTMF: the keyed digits make a turn."""

    digits: str


VOICE_BACK = VoiceBack()
QUIET_SPELL = QuietSpell()
BARGE_OVER = BargeOver()
END_OF_TURN = EndOfTurn()
NOISE_ONLY = NoiseOnly()

#: a segmenter's events for one frame
SegmentEvent = VoiceBack | QuietSpell | SpeechStarted | SpeechEnded
#: a barge-in judgement
BargeEvent = ProbeWanted | Backchannel | Interruption | BargeOver
#: what endpointing decides, or None to wait
EndpointEvent = EndOfTurn | NoiseOnly
NO_EVENTS: tuple[SegmentEvent, ...] = ()
