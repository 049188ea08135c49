"""Human callers for the voice bench: people's recorded speech instead of synthetic voices.

The set is Debian's ``pocketsphinx-testdata`` (BSD-2): short phrases, a phrase with a restart,
long read sentences with pauses inside them, a digit string and a spoken command, each with its
reference transcript (``data/human_speech.json``). None of it is what the Harbor agent asks for,
so a human call is off-script from the first turn: what it measures is turn-taking on real speech
(does the agent wait through a person's pauses, and answer quickly when they stop), that every
turn gets a reply, and, on the native protocol, how well the server heard the words.

Each call draws a few utterances (seeded per caller and call); they go over the line as any
caller's audio does (for Twilio: 8 kHz μ-law, the telephone band), with the line's noise when
the run sets one.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

import numpy as np
from pydantic import BaseModel, Field, computed_field

from voxgate.testing.caller import CallReport, ProtocolName, Utterance, prepare_audio
from voxgate.testing.voices import SAMPLE_RATE, Degradation, degrade, read_wav
from voxgate.voice.speech_text import word_errors

#: the caller voice a human call is reported under
HUMAN_VOICE = "human"
#: turns a human call takes before hanging up
TURNS_PER_CALL = 3


@dataclass(frozen=True)
class HumanUtterance:
    """One recording: its id, file, what was said and what kind of turn it makes."""

    id: str
    path: Path
    text: str
    kind: str


def human_speech(root: Path | None = None) -> list[HumanUtterance]:
    """The recordings of the human set; a clear error when the package that holds them is missing."""
    listing = json.loads(resources.files("voxgate.testing").joinpath("data/human_speech.json").read_text("utf-8"))
    base = Path(root or listing["root"])
    if not base.is_dir():
        raise FileNotFoundError(
            f"{base} not found: the human caller set is Debian's pocketsphinx-testdata "
            "(apt install pocketsphinx-testdata; `make setup` installs it)"
        )
    return [HumanUtterance(u["id"], base / u["path"], u["text"], u["kind"]) for u in listing["utterances"]]


def read_recording(path: Path) -> np.ndarray:
    """A recording as 16 kHz int16 mono (WAV of any rate, or pocketsphinx's headerless 16 kHz ``.raw``)."""
    if path.suffix == ".raw":
        return np.fromfile(path, dtype="<i2").astype(np.int16)
    return read_wav(path, SAMPLE_RATE)


@cache
def prepare_human(path: Path, label: str, protocol: ProtocolName, degradation: Degradation | None) -> Utterance:
    """One recording encoded for the wire (cached: every call that draws it sends the same frames)."""
    audio = read_recording(path)
    if degradation is not None:
        audio = degrade(audio, degradation)
    return prepare_audio(audio, protocol, label=label)


def human_script(
    utterances: list[HumanUtterance], seed: int, caller: int, call: int, turns: int = TURNS_PER_CALL
) -> list[HumanUtterance]:
    """The recordings one human call says, in order: distinct, drawn reproducibly per (seed, caller, call)."""
    rng = random.Random(f"human:{seed}:{caller}:{call}")  # nosec B311: a reproducible draw, not a secret
    return rng.sample(utterances, min(turns, len(utterances)))


class HumanTurns(BaseModel):
    """What human callers' turns got: replies, and (native protocol) the words the server heard."""

    turns: int = Field(0, description="Human turns spoken in answered calls.")
    replied: int = Field(0, description="Of those, turns the agent answered with audible speech.")
    cut_ins: int = Field(0, description="Turns the agent cut into before the person's last word.")
    transcribed: int = Field(0, description="Turns whose server transcript came back (native protocol only).")
    words: int = Field(0, description="Reference words in the transcribed turns.")
    word_errors: int = Field(0, description="Substitutions, deletions and insertions against the references.")
    by_kind: dict[str, int] = Field(default_factory=dict, description="Turns spoken, per kind of utterance.")

    @computed_field  # type: ignore[prop-decorator]  # pydantic's documented use on a property
    @property
    def wer(self) -> float | None:
        """word_errors / words over the transcribed turns (None without transcripts)."""
        return round(self.word_errors / self.words, 4) if self.words else None

    def add(self, call: CallReport, by_label: dict[str, HumanUtterance]) -> None:
        """Count one call's human turns."""
        for turn in call.turns:
            said = by_label.get(turn.said or "")
            if said is None or turn.speech_start_s is None:
                continue
            self.turns += 1
            self.replied += turn.replied
            self.cut_ins += turn.cut_in
            self.by_kind[said.kind] = self.by_kind.get(said.kind, 0) + 1
            if turn.server_heard is not None:
                errors, words = word_errors(said.text, turn.server_heard)
                self.transcribed += 1
                self.words += words
                self.word_errors += errors
