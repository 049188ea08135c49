"""Turn timing: per-turn stage timestamps on the pipeline's clock, and the call's counters."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

MS_PER_S = 1000


@dataclass
class TurnTiming:
    """Per-turn stage timestamps (monotonic seconds, the pipeline's clock) and derived durations in ms."""

    turn: int
    speech_start_audio_ms: float = 0.0
    speech_end_audio_ms: float = 0.0
    speech_end_at: float = 0.0
    endpoint_at: float = 0.0
    asr_final_at: float = 0.0
    asr_compute_ms: float = 0.0
    speculative_hit: bool = False  # the early recognition was the turn's
    intent_at: float = 0.0
    first_tts_at: float = 0.0
    first_audio_at: float = 0.0
    text: str = ""
    intent: str | None = None
    interrupted: bool = False
    dtmf: bool = False
    verdict: str = ""  # the completeness judgement that chose the endpointing window
    state: str = ""  # the session state the caller answered in

    def summary(self) -> dict[str, Any]:
        """The turn's figures, as logged, traced, recorded and measured."""

        def ms(a: float, b: float) -> float | None:
            return round((b - a) * MS_PER_S, 1) if a and b else None

        return {
            "turn": self.turn,
            "speech_end_audio_ms": round(self.speech_end_audio_ms, 1),
            "endpoint_ms": ms(self.speech_end_at, self.endpoint_at),
            "asr_final_ms": ms(self.speech_end_at, self.asr_final_at),
            "asr_compute_ms": round(self.asr_compute_ms, 1),
            "speculative_hit": self.speculative_hit,
            "intent_ms": ms(self.speech_end_at, self.intent_at),
            "first_tts_ms": ms(self.speech_end_at, self.first_tts_at),
            "voice_to_voice_ms": ms(self.speech_end_at, self.first_audio_at),
            "interrupted": self.interrupted,
            "dtmf": self.dtmf,
            "verdict": self.verdict,
            "state": self.state,
        }

    def stages(self) -> dict[str, float]:
        """The stage timestamps a trace turns into spans."""
        return {
            "speech_end_at": self.speech_end_at,
            "endpoint_at": self.endpoint_at,
            "asr_final_at": self.asr_final_at,
            "intent_at": self.intent_at,
            "first_audio_at": self.first_audio_at,
        }


@dataclass
class CallStats:
    """What happened on one call, counted."""

    frames_in: int = 0
    bytes_out: int = 0
    barge_ins: int = 0
    backchannels: int = 0
    discarded_noise: int = 0
    digits_restored: int = 0  # short digit strings repaired from a second reading (endpointing.restore_digits)
    digits_unrestored: int = 0  # second readings not ready in time when the turn ended
    silence_filled_ms: float = 0.0  # line gaps (no media mid-speech) taken as silence
    turns: list[dict[str, Any]] = field(default_factory=list)
