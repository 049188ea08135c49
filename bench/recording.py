"""Encrypted call recordings: what recording costs per call.

    .venv/bin/python bench/recording.py [--minutes 5] [--calls 20] [--json]

Feeds N calls of M minutes (caller speech-like noise, agent tones, 20 ms frames) through
``CallRecording``, then builds each WAV (8 kHz μ-law stereo), encrypts and stores it with
``RecordingVault`` on SQLite, and reads one back. Prints per-call p50/p95 of each step, the
stored size per minute and the capture's memory per minute of call.
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from sqlalchemy import text  # noqa: E402

from voxgate.compliance.recording import RecordingVault  # noqa: E402
from voxgate.store.db import Database  # noqa: E402
from voxgate.voice.recording import CallRecording  # noqa: E402

RATE = 16000


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--calls", type=int, default=20)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    rng = np.random.default_rng(7)
    frame = (rng.normal(0, 3000, 320)).astype("<i2").tobytes()
    reply = (np.sin(2 * np.pi * 440 * np.arange(RATE) / RATE) * 6000).astype("<i2").tobytes()
    frames = int(args.minutes * 60 * 50)
    with tempfile.TemporaryDirectory() as tmp:
        db = Database(f"sqlite:///{tmp}/rec.db")
        db.migrate()
        vault = RecordingVault(db, secrets.token_bytes(32), secrets.token_bytes(32))
        capture, build, store, sizes = [], [], [], []
        for call in range(args.calls):
            sid = f"s{call}"
            with db.engine.begin() as conn:
                conn.execute(
                    text(
                        "INSERT INTO sessions (id, agent, agent_version, environment, channel, started_at, "
                        "verified, turn_count) VALUES (:id, 'a', '1', 'dev', 'voice', CURRENT_TIMESTAMP, "
                        "false, 0)"
                    ),
                    {"id": sid},
                )
            rec = CallRecording("dev")
            t0 = time.perf_counter()
            for i in range(frames):
                rec.caller(frame)
                if i % 250 == 0:  # the agent says a second of something every five seconds
                    rec.agent(reply)
            capture.append((time.perf_counter() - t0) * 1000 / frames)
            t0 = time.perf_counter()
            wav = rec.wav()
            build.append((time.perf_counter() - t0) * 1000)
            t0 = time.perf_counter()
            rid = vault.store(
                session_id=sid, environment="dev", customer_id=f"C{call % 5}", wav=wav, duration_ms=rec.duration_ms
            )
            store.append((time.perf_counter() - t0) * 1000)
            sizes.append(len(wav))
        t0 = time.perf_counter()
        _, back = vault.read(rid)
        read_ms = (time.perf_counter() - t0) * 1000
        assert back == wav
        db.dispose()
    minutes = args.minutes
    out = {
        "calls": args.calls,
        "minutes_per_call": minutes,
        "capture_us_per_frame_p50": round(statistics.median(capture) * 1000, 2),
        "wav_build_ms": {"p50": pct(build, 0.5), "p95": pct(build, 0.95)},
        "encrypt_store_ms": {"p50": pct(store, 0.5), "p95": pct(store, 0.95)},
        "read_decrypt_ms": round(read_ms, 2),
        "stored_kib_per_minute": round(statistics.mean(sizes) / 1024 / minutes, 1),
        "capture_mib_per_minute": round(2 * RATE * 2 * 60 / 2**20, 2),
    }
    if args.json:
        print(json.dumps(out, indent=2))
        return
    print(f"recordings: {args.calls} calls of {minutes:g} min")
    print(f"  capture      {out['capture_us_per_frame_p50']} µs per 20 ms frame (p50)")
    print(f"  build WAV    p50 {out['wav_build_ms']['p50']} ms, p95 {out['wav_build_ms']['p95']} ms per call")
    print(f"  encrypt+store p50 {out['encrypt_store_ms']['p50']} ms, p95 {out['encrypt_store_ms']['p95']} ms per call")
    print(
        f"  read+decrypt {out['read_decrypt_ms']} ms; stored {out['stored_kib_per_minute']} KiB per minute; "
        f"held in memory while the call lasts: {out['capture_mib_per_minute']} MiB per minute"
    )


if __name__ == "__main__":
    main()
