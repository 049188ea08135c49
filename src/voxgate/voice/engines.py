"""The speech models and worker pool a voice worker shares across all its calls."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from voxgate.voice.call.barge_in import ProbeLatency
from voxgate.voice.call.ports import Vad
from voxgate.voice.pool import Batch, SpeechPool, Ticket
from voxgate.voice.prompt_audio import PromptAudioStore
from voxgate.voice.types import INT16_SCALE, SAMPLE_RATE, SpeechRecognizer, SpeechSynthesizer, Transcript

log = logging.getLogger("voxgate.voice")

MAX_FREE_VADS = 64
#: recognitions decoded together at most when several calls' utterances wait for the pool at once
ASR_BATCH = 4
#: one utterance to recognise: (float32 16 kHz samples, prompt, quick)
Recognition = tuple[np.ndarray, str | None, bool]
INT16_MAX = 32767
SILENCE_LEVEL = 330  # about -40 dBFS
KEEP_LEAD_MS = 10
KEEP_TRAIL_MS = 150
RESAMPLE_QUALITY = "HQ"
#: how `speech` turns a synthesiser's output into stored audio: part of a stored prompt's key
PIPELINE_AUDIO = f"pcm16@{SAMPLE_RATE}|soxr={RESAMPLE_QUALITY}|trim={SILENCE_LEVEL},{KEEP_LEAD_MS},{KEEP_TRAIL_MS}"


@dataclass
class VoiceEngines:
    """The models and the speech pool, shared by every call on a worker (`call.ports.SpeechEngines`)."""

    pool: SpeechPool
    recognizer: SpeechRecognizer
    synthesizers: dict[str, SpeechSynthesizer]
    default_voice: str
    vad_factory: Callable[[], Vad]
    chunker: Callable[[str], list[str]] | None = None
    piper: bool = True  # False: voices that ask for Piper are spoken with Pico (the worker's `piper` setting)
    cache_entries: int = 600
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _cache: OrderedDict[tuple[str, str], bytes] = field(default_factory=OrderedDict)
    _free_vads: list[Vad] = field(default_factory=list)
    cache_hits: int = 0
    cache_misses: int = 0
    probe_latency: ProbeLatency = field(default_factory=ProbeLatency)
    #: how many waiting recognitions one decode takes at most (1: each on its own)
    batch_size: int = ASR_BATCH
    _recognitions: Batch[Recognition, Transcript] = field(init=False)

    def __post_init__(self) -> None:
        self._recognitions = Batch(self.transcribe_many, self.batch_size)

    def synthesizer(self, voice: str) -> SpeechSynthesizer:
        """The synthesiser for a voice name, made on first use."""
        if voice in self.synthesizers:
            return self.synthesizers[voice]
        if voice in ("default", ""):
            return self.synthesizers[self.default_voice]
        with self._lock:
            if voice not in self.synthesizers:
                self.synthesizers[voice] = make_synthesizer(voice, piper=self.piper)
        return self.synthesizers[voice]

    def transcribe(self, audio: np.ndarray, prompt: str | None = None, quick: bool = False) -> Transcript:
        """Recognise one utterance (blocking: run it in the pool)."""
        return self.recognizer.transcribe(audio, prompt=prompt, quick=quick)

    def transcribe_many(self, requests: list[Recognition]) -> Sequence[Transcript]:
        """Recognise several calls' utterances in one go where the recogniser can (blocking: the pool runs
        it with the recognitions waiting together, see `pool.Batch`)."""
        many = getattr(self.recognizer, "transcribe_many", None)
        if many is not None:
            found: Sequence[Transcript] = many(requests)
            return found
        return [self.recognizer.transcribe(audio, prompt=prompt, quick=quick) for audio, prompt, quick in requests]

    async def recognize(
        self, pcm16: bytes, priority: int, prompt: str | None = None, quick: bool = False, ticket: Ticket | None = None
    ) -> Transcript:
        """Words in 16 kHz int16 caller audio, recognised in the pool at `priority` (with other calls'
        utterances waiting at the same time, in one batch)."""
        samples = np.frombuffer(pcm16, dtype=np.int16).astype(np.float32) / INT16_SCALE
        return await self.pool.run_batched(priority, self._recognitions, (samples, prompt, quick), ticket=ticket)

    async def readings(self, pcm16: bytes, priority: int, prompt: str | None = None) -> list[str]:
        """Alternative readings of 16 kHz int16 caller audio, best first, from the recogniser's beam
        search in the pool at `priority` (none where the recogniser has no `readings`)."""
        read = getattr(self.recognizer, "readings", None)
        if read is None:
            return []
        samples = np.frombuffer(pcm16, dtype=np.int16).astype(np.float32) / INT16_SCALE
        found: list[str] = await self.pool.run(priority, read, samples, prompt)
        return found

    async def synthesize(self, synth: SpeechSynthesizer, text: str, priority: int) -> bytes:
        """16 kHz PCM for one chunk of a reply, synthesised in the pool at `priority` (or cached)."""
        return await self.pool.run(priority, self.speech, synth, text)

    def batching(self) -> dict[str, float | int | None]:
        """How recognitions shared decodes: decodes run, recognitions they ran, the mean per decode."""
        runs, jobs = self._recognitions.runs, self._recognitions.jobs
        return {
            "asr_decodes": runs,
            "asr_recognitions": jobs,
            "asr_mean_batch": round(jobs / runs, 2) if runs else None,
        }

    def has_room(self) -> bool:
        """Whether the pool would start a job at once."""
        return self.pool.has_room()

    def promote(self, ticket: Ticket, priority: int) -> bool:
        """Raise a queued job's priority."""
        return self.pool.promote(ticket, priority)

    async def acquire_vad(self) -> Vad:
        """A reset speech detector for a new call: reused when one is free, otherwise made in a thread
        (the first makes the process's shared Silero session, which takes ~60 ms)."""
        with self._lock:
            vad = self._free_vads.pop() if self._free_vads else None
        if vad is None:
            return await asyncio.to_thread(self.vad_factory)
        vad.reset()
        return vad

    def stock_vads(self, count: int) -> int:
        """Make speech detectors ahead until `count` are free for the next calls (engines shared by
        several apps of one process are stocked once, not once per app); returns how many were made.
        Blocking: run it in a thread."""
        made = 0
        while True:
            with self._lock:
                if len(self._free_vads) >= min(count, MAX_FREE_VADS):
                    return made
            self.release_vad(self.vad_factory())
            made += 1

    def release_vad(self, vad: Vad) -> None:
        """Keep a call's VAD for the next call."""
        with self._lock:
            if len(self._free_vads) < MAX_FREE_VADS:
                self._free_vads.append(vad)

    def chunk_text(self, text: str) -> list[str]:
        """A reply cut into what is synthesised at a time."""
        if self.chunker is not None:
            return [c for c in self.chunker(text) if any(ch.isalnum() for ch in c)]
        return [text]

    def cached_speech(self, synth: SpeechSynthesizer, text: str) -> bytes | None:
        """The cached audio for this chunk, or None; cheap enough for the event loop, so a
        cache hit never queues in the pool behind other calls' synthesis."""
        key = (synth.name, text)
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                self.cache_hits += 1
            return hit

    def speech(self, synth: SpeechSynthesizer, text: str) -> bytes:
        """16 kHz PCM for one chunk of a reply, from the cache when the same words were said before.

        Agents repeat themselves (prompts, confirmations, apologies), so most first chunks
        of a reply are cache hits and cost no synthesis at all. Blocking: run in the pool.
        """
        key = (synth.name, text)
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                self.cache_hits += 1
                return hit
            self.cache_misses += 1
        pcm = trim_silence(self.to_pipeline_rate(self.render(synth, text), synth.sample_rate))
        self._remember(key, pcm)
        return pcm

    def _remember(self, key: tuple[str, str], pcm: bytes) -> None:
        with self._lock:
            self._cache[key] = pcm
            while len(self._cache) > self.cache_entries:
                self._cache.popitem(last=False)

    def warm(self, synth: SpeechSynthesizer, texts: list[str], store: PromptAudioStore | None = None) -> int:
        """Pre-render the chunks of an agent's fixed prompts; returns how many were synthesised. With a
        `store`, a chunk rendered before (by this worker or another sharing the folder) is read from it,
        what is rendered here is kept there, and a chunk another worker is rendering now is read when it
        is done rather than rendered twice (blocking: run it in the pool)."""
        identity = getattr(synth, "fingerprint", None)  # a synthesiser without one is never stored
        key = f"{identity}|{PIPELINE_AUDIO}" if isinstance(identity, str) and store is not None else None
        chunks = list(dict.fromkeys(chunk for text in texts for chunk in self.chunk_text(text)))
        done = 0
        deferred: list[str] = []
        for wait, todo in ((False, chunks), (True, deferred)):
            for chunk in todo:
                if (synth.name, chunk) in self._cache:
                    continue
                if store is None or key is None:
                    self.speech(synth, chunk)
                    done += 1
                    continue
                if self._remember_stored(store, key, synth.name, chunk):
                    continue
                with store.claim(key, chunk, wait=wait) as claimed:
                    if not claimed:  # another worker is rendering it: come back to it at the end
                        deferred.append(chunk)
                        continue
                    if self._remember_stored(store, key, synth.name, chunk):  # written while we waited
                        continue
                    store.put(key, chunk, self.speech(synth, chunk))
                    done += 1
        if store is not None and done:
            store.prune()
        return done

    def _remember_stored(self, store: PromptAudioStore, key: str, voice: str, chunk: str) -> bool:
        stored = store.get(key, chunk)
        if stored is None:
            return False
        self._remember((voice, chunk), stored)
        return True

    @staticmethod
    def render(synth: SpeechSynthesizer, text: str) -> np.ndarray:
        """The synthesiser's int16 audio for `text`, at its own sample rate."""
        parts = [np.asarray(c, dtype=np.int16) for c in synth.synthesize(text)]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int16)

    @staticmethod
    def to_pipeline_rate(audio: np.ndarray, rate: int) -> bytes:
        """Synthesised int16 audio at `rate` as 16 kHz PCM bytes."""
        if audio.size == 0:
            return b""
        if rate == SAMPLE_RATE:
            return audio.astype(np.int16).tobytes()
        import soxr

        out = soxr.resample(audio.astype(np.float32) / INT16_SCALE, rate, SAMPLE_RATE, quality=RESAMPLE_QUALITY)
        pcm: bytes = (np.clip(out, -1.0, 1.0) * INT16_MAX).astype(np.int16).tobytes()
        return pcm

    def close(self) -> None:
        """Stop the speech pool's workers."""
        self.pool.close()


def trim_silence(pcm: bytes) -> bytes:
    """Cut synthesised silence: the caller should hear the first word at once, and a sentence
    should not end in a long pause (engines pad both ends, Pico by over half a second)."""
    samples = np.frombuffer(pcm, dtype=np.int16)
    loud = np.flatnonzero(np.abs(samples.astype(np.int32)) > SILENCE_LEVEL)
    if loud.size == 0:
        return b""
    start = max(0, int(loud[0]) - KEEP_LEAD_MS * SAMPLE_RATE // 1000)
    end = min(samples.size, int(loud[-1]) + KEEP_TRAIL_MS * SAMPLE_RATE // 1000)
    return samples[start:end].tobytes()


def make_synthesizer(voice: str, *, piper: bool = True) -> SpeechSynthesizer:
    """The synthesiser for a voice name; Pico stands in for Piper when its extra is not installed, or
    when `piper` is false (the worker's `piper` setting)."""
    from voxgate.voice import tts

    if voice.startswith("pico"):
        lang = voice.split("-", 1)[1] if "-" in voice else "en-US"
        return tts.PicoSynthesizer(voice=lang)
    if voice in ("joe-us", "piper", "default"):
        if not piper:
            if voice != "default":
                log.info("voice %r is spoken with Pico: this worker is set not to use Piper (piper: false)", voice)
            return tts.PicoSynthesizer(voice="en-US")
        if not tts.piper_available():  # Piper is an optional (GPL-3.0) extra
            if voice != "default":
                log.warning("voice %r needs the 'piper' extra, which is not installed; speaking with Pico", voice)
            return tts.PicoSynthesizer(voice="en-US")
        return tts.PiperSynthesizer(voice="joe-us")
    raise ValueError(f"unknown voice '{voice}' (known: joe-us, pico-en-US, pico-en-GB, default)")


def default_speech_workers(cores: int | None = None) -> int:
    """General speech threads for `cores` (default: this machine's): one per core but the one the urgent
    thread takes. One more decode at a time than there are cores only makes them share the cores: on
    2 cores with 30 callers, 2 + 1 threads answered at p95 1.5 s where 1 + 1 answered at 1.2 s."""
    return max(1, (cores if cores is not None else os.cpu_count() or 1) - 1)


def load_engines(
    *,
    asr_model: str = "tiny.en",
    voices: tuple[str, ...] = ("default",),
    workers: int | None = None,
    piper: bool = True,
) -> VoiceEngines:
    """Load every model once; `workers`: speech threads that take any job, by default one fewer than the
    cores (at least one), so that with the thread kept for callers who are waiting there is one per core;
    `piper`: see `make_synthesizer`."""
    from voxgate.voice import asr, speech_text, vad

    workers = workers or default_speech_workers()
    pool = SpeechPool(workers, urgent_workers=1)
    # one model replica per thread that may run a decode at the same time
    recognizer = asr.WhisperRecognizer(model=asr_model, threads=1, workers=workers + pool.urgent_workers)
    synthesizers = {v: make_synthesizer(v, piper=piper) for v in voices}
    default_voice = voices[0]
    return VoiceEngines(
        pool=pool,
        recognizer=recognizer,
        synthesizers=synthesizers,
        default_voice=default_voice,
        vad_factory=vad.SpeechDetector,
        chunker=lambda text: speech_text.split_for_speech(speech_text.normalize_for_speech(text)),
        piper=piper,
    )
