"""The speech models a test process loads once and lends to every worker app it starts."""

from __future__ import annotations

from dataclasses import dataclass, fields

from voxgate.voice.engines import VoiceEngines, load_engines

#: how a set of loaded models is told apart: (asr model, voices, speech threads, Piper allowed)
EnginesKey = tuple[str, tuple[str, ...], int | None, bool]


@dataclass
class LentEngines(VoiceEngines):
    """Loaded models lent to one worker app: the app's shutdown leaves them open for the next app."""

    def close(self) -> None:
        """Kept open: the process closes the models once, at the end of the session."""


class ProcessEngines:
    """One load per configuration for the whole test process, instead of one per worker app."""

    def __init__(self) -> None:
        self.loaded: dict[EnginesKey, VoiceEngines] = {}

    def load(
        self,
        *,
        asr_model: str = "tiny.en",
        voices: tuple[str, ...] = ("default",),
        workers: int | None = None,
        piper: bool = True,
    ) -> VoiceEngines:
        """What `voxgate.voice.engines.load_engines` returns, loaded on the first ask only."""
        key: EnginesKey = (asr_model, tuple(voices), workers, piper)
        if key not in self.loaded:
            self.loaded[key] = load_engines(asr_model=asr_model, voices=voices, workers=workers, piper=piper)
        engines = self.loaded[key]
        return LentEngines(**{f.name: getattr(engines, f.name) for f in fields(engines) if f.init})

    def close(self) -> None:
        """Close every set of models loaded."""
        for engines in self.loaded.values():
            engines.close()
        self.loaded.clear()
