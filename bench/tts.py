"""Benchmark of offline TTS: time to first audio and real-time factor for Piper and Pico on typical agent replies.

For each reply in ``bench/data/tts_replies.txt`` it times, with one thread:

* first chunk — from the ``synthesize()`` call to the first yielded audio (what
  a caller waits for once the reply text is known), with voxgate's chunking
  (short first clause) and, for comparison, when the first *sentence* is
  rendered whole (the engine's own per-sentence streaming);
* the whole reply — compute time, audio duration and real-time factor (compute / audio).

    python bench/tts.py            # human-readable report
    python bench/tts.py --json     # machine-readable
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))  # run from a checkout without installing

from voxgate.voice import tts  # noqa: E402
from voxgate.voice.speech_text import normalize_for_speech, split_for_speech  # noqa: E402

REPLIES_FILE = REPO / "bench" / "data" / "tts_replies.txt"


def load_replies() -> list[str]:
    lines = REPLIES_FILE.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def _stats(values: list[float]) -> dict[str, float]:
    arr = np.asarray(values, dtype=float)
    return {
        k: round(float(v), 1)
        for k, v in (("p50", np.percentile(arr, 50)), ("p95", np.percentile(arr, 95)), ("max", arr.max()))
    }


def bench(synth: Any, replies: list[str], repeats: int) -> dict[str, Any]:
    list(synth.synthesize("Warming up."))
    first_ms: list[float] = []
    first_sentence_ms: list[float] = []
    first_audio_s: list[float] = []
    total_ms = 0.0
    audio_s = 0.0
    chunk_counts: list[int] = []
    for _ in range(repeats):
        for reply in replies:
            t0 = time.perf_counter()
            first = None
            samples = 0
            chunks = 0
            for chunk in synth.synthesize(reply):
                if first is None:
                    first = (time.perf_counter() - t0) * 1000
                    first_audio_s.append(chunk.size / synth.sample_rate)
                samples += chunk.size
                chunks += 1
            total_ms += (time.perf_counter() - t0) * 1000
            audio_s += samples / synth.sample_rate
            first_ms.append(first or 0.0)
            chunk_counts.append(chunks)
            # baseline: the first sentence rendered whole, as the engine would stream it
            sentence = split_for_speech(normalize_for_speech(reply), first_max_words=10_000)[0]
            t0 = time.perf_counter()
            next(iter(synth.synthesize_chunk(sentence)))
            first_sentence_ms.append((time.perf_counter() - t0) * 1000)
    return {
        "name": synth.name,
        "sample_rate": synth.sample_rate,
        "replies": len(replies) * repeats,
        "first_chunk_ms": _stats(first_ms),
        "first_chunk_audio_s": _stats(first_audio_s),
        "first_sentence_whole_ms": _stats(first_sentence_ms),
        "chunks_per_reply": round(float(np.mean(chunk_counts)), 2),
        "audio_s": round(audio_s, 1),
        "compute_s": round(total_ms / 1000, 2),
        "rtf": round(total_ms / 1000 / audio_s, 3),
    }


def run(repeats: int) -> dict[str, Any]:
    replies = load_replies()
    results = []
    t0 = time.perf_counter()
    pico = tts.PicoSynthesizer("en-US")
    pico_load = time.perf_counter() - t0
    results.append({**bench(pico, replies, repeats), "load_s": round(pico_load, 2)})
    if tts.piper_available():
        t0 = time.perf_counter()
        piper = tts.PiperSynthesizer("joe-us", threads=1)
        piper_load = time.perf_counter() - t0
        results.insert(0, {**bench(piper, replies, repeats), "load_s": round(piper_load, 2)})
    return {"synthesizers": results, "machine": {"cpus": os.cpu_count()}}


def print_report(r: dict[str, Any]) -> None:
    print(
        f"TTS bench — {r['synthesizers'][0]['replies']} agent replies per engine, 1 thread, {r['machine']['cpus']} CPUs"
    )
    print(
        f"{'engine':<14}{'rate':>7}{'first chunk ms p50/p95':>24}{'whole 1st sentence p50/p95':>28}"
        f"{'1st chunk audio s':>19}{'RTF':>7}{'chunks':>8}{'load s':>8}"
    )
    for s in r["synthesizers"]:
        f, w, a = s["first_chunk_ms"], s["first_sentence_whole_ms"], s["first_chunk_audio_s"]
        print(
            f"{s['name']:<14}{s['sample_rate']:>7}{f['p50']:>14} / {f['p95']:<7}{w['p50']:>17} / {w['p95']:<8}"
            f"{a['p50']:>13}{s['rtf']:>11}{s['chunks_per_reply']:>8}{s['load_s']:>8}"
        )
    for s in r["synthesizers"]:
        print(f"  {s['name']}: {s['audio_s']} s of audio in {s['compute_s']} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--repeats", type=int, default=3, help="passes over the replies (default 3)")
    args = parser.parse_args(argv)
    result = run(args.repeats)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_report(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
