"""Benchmark of offline speech recognition on real human speech: WER and latency, clean and over a phone line.

Runs Whisper tiny.en and base through :class:`voxgate.voice.asr.WhisperRecognizer`
with the adaptive (short) mel window and with Whisper's full 30 s window, on the
human recordings of Debian's ``pocketsphinx-testdata`` (``bench/data/asr_corpus.json``),
each both as recorded (16 kHz) and telephone-degraded (16k → 8 kHz μ-law → 16k, as a
Twilio leg delivers it). One decode thread, greedy search, one warm-up decode per model.
Also reports pocketsphinx streaming (WER of the final hypothesis, real-time factor)
and the Silero VAD cost per 32 ms window.

    python bench/asr.py                    # human-readable report
    python bench/asr.py --json             # machine-readable
    python bench/asr.py --synthetic        # add caller phrases rendered by flite (4 voices)
    python bench/asr.py --models tiny.en   # only some models
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))  # run from a checkout without installing
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from voxgate.voice import codec  # noqa: E402
from voxgate.voice.asr import PocketsphinxStreamer, WhisperRecognizer  # noqa: E402
from voxgate.voice.speech_text import word_errors  # noqa: E402
from voxgate.voice.types import FRAME_BYTES, SAMPLE_RATE  # noqa: E402
from voxgate.voice.vad import SileroVad  # noqa: E402

CORPUS_FILE = REPO / "bench" / "data" / "asr_corpus.json"
PHRASES_FILE = REPO / "bench" / "data" / "asr_caller_phrases.txt"
FLITE_VOICES = ("kal", "slt", "awb", "rms")


def load_corpus() -> list[dict[str, Any]]:
    """The human utterances: id, set, reference text and 16 kHz int16 audio."""
    corpus = json.loads(CORPUS_FILE.read_text(encoding="utf-8"))
    root = Path(corpus["root"])
    if not root.is_dir():
        raise SystemExit(
            f"{root} not found: install Debian's pocketsphinx-testdata (apt install pocketsphinx-testdata)"
        )
    return [{**u, "audio": codec.read_audio_16k(root / u["path"])} for u in corpus["utterances"]]


def synthetic_corpus() -> list[dict[str, Any]]:
    """Caller phrases rendered by flite in four voices (synthetic, for loop/retry statistics only)."""
    flite = shutil.which("flite")
    if flite is None:
        raise SystemExit("--synthetic needs flite (apt install flite)")
    phrases = [
        p.strip() for p in PHRASES_FILE.read_text(encoding="utf-8").splitlines() if p.strip() and not p.startswith("#")
    ]
    out: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, text in enumerate(phrases):
            for voice in FLITE_VOICES:
                wav = Path(tmp) / f"{voice}_{i}.wav"
                subprocess.run([flite, "-voice", voice, "-t", text, "-o", str(wav)], check=True)
                out.append(
                    {
                        "id": f"flite-{voice}-{i}",
                        "set": f"flite-{voice}",
                        "text": text,
                        "audio": codec.read_audio_16k(wav),
                    }
                )
    return out


def _stats(values: list[float]) -> dict[str, float]:
    arr = np.asarray(values, dtype=float)
    return {
        "p50": round(float(np.percentile(arr, 50)), 1),
        "p95": round(float(np.percentile(arr, 95)), 1),
        "mean": round(float(arr.mean()), 1),
        "max": round(float(arr.max()), 1),
    }


def bench_whisper(model: str, adaptive: bool, corpora: dict[str, list[dict[str, Any]]], threads: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    recognizer = WhisperRecognizer(model, threads=threads, adaptive_context=adaptive)
    load_s = time.perf_counter() - t0
    recognizer.transcribe(codec.pcm16_to_float(next(iter(corpora.values()))[0]["audio"]))  # warm-up
    conditions: dict[str, Any] = {}
    for condition, utts in corpora.items():
        retries_before = recognizer.retries
        rows = []
        for u in utts:
            result = recognizer.transcribe(codec.pcm16_to_float(u["audio"]))
            errors, words = word_errors(u["text"], result.text)
            rows.append(
                {
                    "id": u["id"],
                    "audio_ms": round(result.audio_ms),
                    "compute_ms": round(result.compute_ms, 1),
                    "errors": errors,
                    "words": words,
                    "reference": u["text"],
                    "hypothesis": result.text,
                }
            )
        errors = sum(r["errors"] for r in rows)
        words = sum(r["words"] for r in rows)
        conditions[condition] = {
            "wer": round(errors / words, 4),
            "errors": errors,
            "words": words,
            "utterances": len(rows),
            "latency_ms": _stats([r["compute_ms"] for r in rows]),
            "rtf": round(sum(r["compute_ms"] for r in rows) / sum(r["audio_ms"] for r in rows), 3),
            "full_window_retries": recognizer.retries - retries_before,
            "per_utterance": rows,
        }
    return {
        "model": recognizer.name,
        "adaptive_context": adaptive,
        "threads": threads,
        "load_s": round(load_s, 2),
        "conditions": conditions,
    }


def bench_pocketsphinx(corpora: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    streamer = PocketsphinxStreamer()
    streamer.start()
    streamer.finish()  # load once, outside the timings
    out: dict[str, Any] = {}
    for condition, utts in corpora.items():
        errors = words = 0
        compute = audio = 0.0
        first_partial: list[float] = []
        for u in utts:
            pcm = u["audio"].astype("<i2").tobytes()
            streamer = PocketsphinxStreamer()
            t0 = time.perf_counter()
            streamer.start()
            first = None
            for i in range(0, len(pcm), FRAME_BYTES):
                if streamer.feed(pcm[i : i + FRAME_BYTES]) and first is None:
                    first = (i + FRAME_BYTES) / 32.0  # ms of audio fed when the first word appeared
            final = streamer.finish()
            compute += time.perf_counter() - t0
            audio += len(pcm) / 32000.0
            e, n = word_errors(u["text"], final)
            errors, words = errors + e, words + n
            if first is not None:
                first_partial.append(first)
        out[condition] = {
            "wer": round(errors / words, 4),
            "rtf": round(compute / audio, 3),
            "first_partial_audio_ms": _stats(first_partial) if first_partial else None,
        }
    return out


def bench_vad(audio: np.ndarray) -> dict[str, Any]:
    vad = SileroVad()
    pcm = np.tile(audio, max(1, 10 * SAMPLE_RATE // audio.size)).astype("<i2").tobytes()
    vad.feed(pcm[: FRAME_BYTES * 10])  # warm-up
    vad.reset()
    t0 = time.perf_counter()
    windows = sum(len(vad.feed(pcm[i : i + FRAME_BYTES])) for i in range(0, len(pcm), FRAME_BYTES))
    per_window_us = (time.perf_counter() - t0) / windows * 1e6
    # the model call alone, without buffering and conversion
    window = np.zeros(512, dtype=np.float32)
    view = memoryview(window.data)
    model = vad._model
    n = 2000
    t0 = time.perf_counter()
    for _ in range(n):
        model.process(view)
    model_us = (time.perf_counter() - t0) / n * 1e6
    return {
        "windows": windows,
        "us_per_window_streaming": round(per_window_us, 1),
        "us_per_window_model": round(model_us, 1),
    }


def run(models: list[str], threads: int, synthetic: bool) -> dict[str, Any]:
    human = load_corpus()
    corpora: dict[str, list[dict[str, Any]]] = {
        "clean": human,
        "phone": [{**u, "audio": codec.telephone_degrade(u["audio"])} for u in human],
    }
    if synthetic:
        corpora["flite"] = synthetic_corpus()
    results = []
    for model in models:
        for adaptive in (True, False):
            results.append(bench_whisper(model, adaptive, corpora, threads))
    return {
        "corpus": {
            name: {"utterances": len(u), "audio_s": round(sum(x["audio"].size for x in u) / SAMPLE_RATE, 1)}
            for name, u in corpora.items()
        },
        "whisper": results,
        "pocketsphinx": bench_pocketsphinx({k: v for k, v in corpora.items() if k in ("clean", "phone")}),
        "vad": bench_vad(human[-1]["audio"]),
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
    }


def print_report(r: dict[str, Any], verbose: bool) -> None:
    corpus = ", ".join(f"{k}: {v['utterances']} utterances / {v['audio_s']} s" for k, v in r["corpus"].items())
    print(f"ASR bench — {corpus}; {r['machine']['cpus']} CPUs")
    print(
        f"{'model':<18}{'window':<10}{'cond':<7}{'WER':>8}{'err/words':>11}"
        f"{'p50 ms':>9}{'p95 ms':>9}{'max ms':>9}{'RTF':>7}{'retries':>9}"
    )
    for w in r["whisper"]:
        for cond, c in w["conditions"].items():
            lat = c["latency_ms"]
            window = "adaptive" if w["adaptive_context"] else "full 30s"
            print(
                f"{w['model']:<18}{window:<10}{cond:<7}{100 * c['wer']:>7.1f}%{c['errors']:>5}/{c['words']:<5}"
                f"{lat['p50']:>9}{lat['p95']:>9}{lat['max']:>9}{c['rtf']:>7}{c['full_window_retries']:>9}"
            )
    for cond, p in r["pocketsphinx"].items():
        first = p["first_partial_audio_ms"]
        print(
            f"pocketsphinx (streaming) {cond:<6} WER {100 * p['wer']:.1f}%  RTF {p['rtf']}  "
            f"first partial after {first['p50'] if first else '-'} ms of audio (p50)"
        )
    v = r["vad"]
    print(
        f"silero VAD: {v['us_per_window_streaming']} µs per 32 ms window streaming "
        f"({v['us_per_window_model']} µs model call), {v['windows']} windows"
    )
    print(
        "load: "
        + ", ".join(f"{w['model']}{'' if w['adaptive_context'] else ' (full)'} {w['load_s']} s" for w in r["whisper"])
    )
    if verbose:
        for w in r["whisper"]:
            for cond, c in w["conditions"].items():
                for u in c["per_utterance"]:
                    if u["errors"]:
                        mode = "adaptive" if w["adaptive_context"] else "full"
                        print(f"  [{w['model']} {mode} {cond}] {u['id']}: {u['reference']!r} -> {u['hypothesis']!r}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--verbose", action="store_true", help="list every utterance with errors")
    parser.add_argument("--models", default="tiny.en,base", help="comma-separated: tiny.en, base (default both)")
    parser.add_argument("--threads", type=int, default=1, help="CTranslate2 intra-op threads (default 1)")
    parser.add_argument("--synthetic", action="store_true", help="also run flite-rendered caller phrases")
    args = parser.parse_args(argv)
    result = run([m.strip() for m in args.models.split(",") if m.strip()], args.threads, args.synthetic)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_report(result, args.verbose)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
