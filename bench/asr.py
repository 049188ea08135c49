"""Benchmark of offline speech recognition on real human speech: WER and latency, clean and over a phone line.

Runs Whisper tiny.en and base through :class:`voxgate.voice.asr.WhisperRecognizer`
with the adaptive (short) mel window and with Whisper's full 30 s window, on the
human recordings of Debian's ``pocketsphinx-testdata`` (``src/voxgate/testing/data/human_speech.json``),
each both as recorded (16 kHz) and telephone-degraded (16k → 8 kHz μ-law → 16k, as a
Twilio leg delivers it). One decode thread, greedy search, one warm-up decode per model.
Also reports pocketsphinx streaming (WER of the final hypothesis, real-time factor)
and the Silero VAD cost per 32 ms window.

    python bench/asr.py                    # human-readable report
    python bench/asr.py --json             # machine-readable
    python bench/asr.py --synthetic        # add caller phrases rendered by flite (4 voices)
    python bench/asr.py --models tiny.en   # only some models
    python bench/asr.py --noise-seeds 0    # leave out the noisy-line comparison
    python bench/asr.py --digits 24        # add digit strings read out by flite and Pico voices

The noisy-line comparison puts voxgate's recogniser (fitted window, and full window) next to
the bare model (faster-whisper's ``WhisperModel`` on the same CTranslate2 files, int8, greedy,
the library's defaults otherwise, temperature fallback included) on the same audio: each
utterance through an 8 kHz μ-law phone leg, clean and with white noise at 20, 15 and 10 dB SNR
and telephone-band (300-3400 Hz) noise at 15 dB, added on the 8 kHz line before μ-law, over
`--noise-seeds` noise draws each.
"""

from __future__ import annotations

import argparse
import json
import os
import random
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

from voxgate.testing.loadgen import digits_as_words  # noqa: E402
from voxgate.voice import codec  # noqa: E402
from voxgate.voice.asr import PocketsphinxStreamer, WhisperRecognizer  # noqa: E402
from voxgate.voice.call.endpointing import DIGITS_PROMPT, heard_digits, restore_digits  # noqa: E402
from voxgate.voice.speech_text import word_errors  # noqa: E402
from voxgate.voice.tts import PicoSynthesizer  # noqa: E402
from voxgate.voice.types import FRAME_BYTES, SAMPLE_RATE  # noqa: E402
from voxgate.voice.vad import SileroVad  # noqa: E402

CORPUS_FILE = REPO / "src" / "voxgate" / "testing" / "data" / "human_speech.json"
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


#: (name, SNR in dB or None for no noise, telephone-band noise rather than white)
NOISE_CONDITIONS: tuple[tuple[str, float | None, bool], ...] = (
    ("line", None, False),
    ("white 20 dB", 20.0, False),
    ("white 15 dB", 15.0, False),
    ("white 10 dB", 10.0, False),
    ("band 15 dB", 15.0, True),
)
PHONE_BAND_HZ = (300.0, 3400.0)
LINE_RATE = 8000


def noisy_phone_line(samples16k: np.ndarray, snr_db: float | None, seed: int, band: bool = False) -> np.ndarray:
    """16 kHz int16 speech as a phone line delivers it: 8 kHz, noise at `snr_db` (relative to the
    utterance's mean power; none when None) added on the line, μ-law, back to 16 kHz."""
    line = codec.resample(np.ascontiguousarray(samples16k, dtype=np.int16), SAMPLE_RATE, LINE_RATE).astype(np.float64)
    if snr_db is not None:
        noise = np.random.default_rng(seed).standard_normal(line.size)
        if band:
            spectrum = np.fft.rfft(noise)
            freqs = np.fft.rfftfreq(noise.size, 1.0 / LINE_RATE)
            spectrum[(freqs < PHONE_BAND_HZ[0]) | (freqs > PHONE_BAND_HZ[1])] = 0
            noise = np.fft.irfft(spectrum, noise.size)
        power = float(np.mean(line**2))
        noise *= np.sqrt(power / 10 ** (snr_db / 10) / float(np.mean(noise**2)))
        line = line + noise
    pcm8k = np.clip(np.round(line), -32768, 32767).astype("<i2").tobytes()
    decoded = np.frombuffer(codec.mulaw_decode(codec.mulaw_encode(pcm8k)), dtype="<i2").astype(np.int16)
    return codec.resample(decoded, LINE_RATE, SAMPLE_RATE)


def bench_noise(model: str, utterances: list[dict[str, Any]], seeds: int, threads: int) -> dict[str, Any]:
    """WER per noise condition: the bare model vs voxgate's recogniser (fitted and full window)."""
    from faster_whisper import WhisperModel

    fitted = WhisperRecognizer(model, threads=threads)
    full = WhisperRecognizer(model, threads=threads, adaptive_context=False)
    bare = WhisperModel(str(fitted.model_dir), device="cpu", compute_type="int8", cpu_threads=threads)

    def bare_text(audio: np.ndarray) -> str:
        segments, _ = bare.transcribe(codec.pcm16_to_float(audio), beam_size=1, language="en")
        return " ".join(segment.text.strip() for segment in segments)

    systems = {
        "bare": bare_text,
        "voxgate": lambda audio: fitted.transcribe(codec.pcm16_to_float(audio)).text,
        "voxgate full window": lambda audio: full.transcribe(codec.pcm16_to_float(audio)).text,
    }
    conditions: dict[str, Any] = {}
    for name, snr, band in NOISE_CONDITIONS:
        draws = range(1, seeds + 1) if snr is not None else range(1)
        audio = [(u, noisy_phone_line(u["audio"], snr, seed, band)) for u in utterances for seed in draws]
        row: dict[str, Any] = {}
        for system, transcribe in systems.items():
            errors = words = 0
            misses = []
            for u, a in audio:
                hypothesis = transcribe(a)
                e, n = word_errors(u["text"], hypothesis)
                errors, words = errors + e, words + n
                if e:
                    misses.append({"id": u["id"], "reference": u["text"], "hypothesis": hypothesis, "errors": e})
            row[system] = {"wer": round(errors / words, 4), "errors": errors, "words": words, "misses": misses}
        conditions[name] = row
    return {"model": fitted.name, "seeds": seeds, "conditions": conditions}


def digit_corpus(count: int, seed: int = 11) -> list[dict[str, Any]]:
    """`count` random account numbers (8 digits) and PINs (4), read out digit by digit ("oh" or "zero"
    for 0, drawn per string) by each flite voice and Pico: what a caller says when asked for them."""
    flite = shutil.which("flite")
    if flite is None:
        raise SystemExit("--digits needs flite (apt install flite)")
    rng = random.Random(seed)  # nosec B311: reproducible test data, not a secret
    strings = ["".join(rng.choice("0123456789") for _ in range(8 if i % 2 == 0 else 4)) for i in range(count)]
    said = [digits_as_words(d, rng.choice(("oh", "zero"))) for d in strings]
    pico = PicoSynthesizer()
    out: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (digits, text) in enumerate(zip(strings, said, strict=True)):
            for voice in FLITE_VOICES:
                wav = Path(tmp) / f"{voice}_{i}.wav"
                subprocess.run([flite, "-voice", voice, "-t", text, "-o", str(wav)], check=True)
                out.append(
                    {"digits": digits, "text": text, "voice": f"flite-{voice}", "audio": codec.read_audio_16k(wav)}
                )
            pcm = np.concatenate([np.asarray(c, dtype=np.int16) for c in pico.synthesize(text)])
            out.append({"digits": digits, "text": text, "voice": "pico-en-US", "audio": pcm})
    return out


def bench_digits(model: str, strings: list[dict[str, Any]], threads: int) -> dict[str, Any]:
    """Digit strings recognised exactly (as the slot parser reads them), and how many came back short,
    per noise level: without a prompt, with the pipeline's digit prompt, with it on the full window, and
    with it plus the repair of a short reading from a beam search's alternatives (`restore_digits`)."""
    fitted = WhisperRecognizer(model, threads=threads)
    full = WhisperRecognizer(model, threads=threads, adaptive_context=False)
    systems = {
        "no prompt": (fitted, None),
        "digit prompt": (fitted, DIGITS_PROMPT),
        "prompt, full": (full, DIGITS_PROMPT),
        "prompt + restore": (fitted, DIGITS_PROMPT),  # a short reading repaired from a second reading
    }
    conditions: dict[str, Any] = {}
    for name, snr, band in NOISE_CONDITIONS:
        if band:
            continue
        audio = [noisy_phone_line(u["audio"], snr, k, band) for k, u in enumerate(strings)]
        row: dict[str, Any] = {}
        for system, (recognizer, prompt) in systems.items():
            exact = short = reread = restored = right = 0
            by_voice: dict[str, int] = {}
            misses = []
            for u, a in zip(strings, audio, strict=True):
                heard = recognizer.transcribe(codec.pcm16_to_float(a), prompt=prompt).text
                if system == "prompt + restore" and len(heard_digits(heard)) < len(u["digits"]):
                    reread += 1
                    better = restore_digits(
                        heard, recognizer.readings(codec.pcm16_to_float(a), prompt), len(u["digits"])
                    )
                    if better is not None:
                        restored += 1
                        right += heard_digits(better) == u["digits"]
                        heard = better
                got = heard_digits(heard)  # as the slot parser reads them ("oh" and "to" included)
                exact += got == u["digits"]
                short += len(got) < len(u["digits"])
                by_voice[u["voice"]] = by_voice.get(u["voice"], 0) + (got == u["digits"])
                if got != u["digits"]:
                    misses.append({"said": u["text"], "voice": u["voice"], "heard": heard, "digits": got})
            row[system] = {
                "exact": exact,
                "short": short,
                "read_again": reread,
                "restored": restored,
                "restored_right": right,
                "of": len(strings),
                "exact_by_voice": by_voice,
                "misses": misses,
            }
        conditions[name] = row
    return {"model": fitted.name, "conditions": conditions}


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
    # the model call alone, without buffering or the skip check
    window = np.zeros(512, dtype=np.int16)
    n = 2000
    t0 = time.perf_counter()
    for _ in range(n):
        vad.score_window(window)
    model_us = (time.perf_counter() - t0) / n * 1e6
    return {
        "windows": windows,
        "us_per_window_streaming": round(per_window_us, 1),
        "us_per_window_model": round(model_us, 1),
    }


def run(models: list[str], threads: int, synthetic: bool, noise_seeds: int = 3, digits: int = 0) -> dict[str, Any]:
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
    spoken = human + (corpora["flite"] if synthetic else [])
    noise = [bench_noise(model, spoken, noise_seeds, threads) for model in models] if noise_seeds > 0 else []
    strings = digit_corpus(digits) if digits > 0 else []
    return {
        "noise": noise,
        "digits": [bench_digits(model, strings, threads) for model in models] if strings else [],
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
    for n in r["noise"]:
        systems = list(next(iter(n["conditions"].values())))
        print(f"noisy phone line, {n['model']} ({n['seeds']} noise draws per utterance): WER")
        print(f"  {'condition':<13}" + "".join(f"{s:>21}" for s in systems))
        for cond, row in n["conditions"].items():
            cells = "".join(
                f"{100 * row[s]['wer']:>12.1f}% {row[s]['errors']:>3}/{row[s]['words']:<4}" for s in systems
            )
            print(f"  {cond:<13}{cells}")
    for d in r["digits"]:
        systems = list(next(iter(d["conditions"].values())))
        print(f"digit strings read out ({d['model']}): recognised exactly / came back short, of each total")
        print(f"  {'condition':<13}" + "".join(f"{s:>18}" for s in systems))
        for cond, row in d["conditions"].items():
            cells = "".join(f"{row[s]['exact']:>9} / {row[s]['short']:<3}of {row[s]['of']:<3}" for s in systems)
            print(f"  {cond:<13}{cells}")
        for cond, row in d["conditions"].items():
            cell = row["prompt + restore"]
            print(
                f"  {cond}: {cell['read_again']} short readings read again with a beam search, "
                f"{cell['restored']} repaired ({cell['restored_right']} to the right number)"
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
        for d in r["digits"]:
            for cond, row in d["conditions"].items():
                for system, cell in row.items():
                    for m in cell["misses"]:
                        print(f"  [{d['model']} {system} {cond}] {m['voice']}: {m['said']!r} -> {m['heard']!r}")
        for n in r["noise"]:
            for cond, row in n["conditions"].items():
                for system, cell in row.items():
                    for m in cell["misses"]:
                        print(f"  [{n['model']} {system} {cond}] {m['id']}: {m['reference']!r} -> {m['hypothesis']!r}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--verbose", action="store_true", help="list every utterance with errors")
    parser.add_argument("--models", default="tiny.en,base", help="comma-separated: tiny.en, base (default both)")
    parser.add_argument("--threads", type=int, default=1, help="CTranslate2 intra-op threads (default 1)")
    parser.add_argument("--synthetic", action="store_true", help="also run flite-rendered caller phrases")
    parser.add_argument(
        "--noise-seeds", type=int, default=3, help="noise draws per utterance and noisy condition (0: no noise table)"
    )
    parser.add_argument(
        "--digits", type=int, default=0, help="digit strings (8- and 4-digit, alternating) per voice to add (0: none)"
    )
    args = parser.parse_args(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    result = run(models, args.threads, args.synthetic, args.noise_seeds, args.digits)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_report(result, args.verbose)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
