"""``voxgate transcribe``: audio files through the recogniser, one result per file."""

from __future__ import annotations

import wave
from pathlib import Path
from typing import Any

from voxgate.voice.asr import WhisperRecognizer
from voxgate.voice.codec import pcm16_to_float, read_audio_16k

__all__ = ["transcribe_files"]


def transcribe_files(
    paths: list[str | Path],
    model: str = "tiny.en",
    recognizer: WhisperRecognizer | None = None,
    adaptive_context: bool = True,
) -> list[dict[str, Any]]:
    """Transcribe audio files (WAV of any rate/channels, or 16 kHz ``.raw``) for ``voxgate transcribe``.

    Returns one dict per file, in order: ``path``, ``text``, ``audio_ms``,
    ``compute_ms``, ``rtf`` (compute / audio), ``model``, ``no_speech_prob``,
    ``avg_logprob``; or ``path`` and ``error`` when a file cannot be read.
    """
    recognizer = recognizer or WhisperRecognizer(model=model, adaptive_context=adaptive_context)
    results: list[dict[str, Any]] = []
    for path in paths:
        try:
            samples = read_audio_16k(path)
        except (OSError, EOFError, ValueError, wave.Error) as exc:
            results.append({"path": str(path), "error": f"{type(exc).__name__}: {exc}"})
            continue
        result = recognizer.transcribe(pcm16_to_float(samples))
        results.append(
            {
                "path": str(path),
                "text": result.text,
                "audio_ms": round(result.audio_ms, 1),
                "compute_ms": round(result.compute_ms, 1),
                "rtf": round(result.compute_ms / result.audio_ms, 3) if result.audio_ms else None,
                "model": result.model,
                "no_speech_prob": None if result.no_speech_prob is None else round(result.no_speech_prob, 3),
                "avg_logprob": None if result.avg_logprob is None else round(result.avg_logprob, 3),
            }
        )
    return results
