"""Rolling per-stage voice timings of this worker, for `GET /api/voice/stats` and the bench."""

from __future__ import annotations

import os
import time
from collections import deque
from typing import Any

import numpy as np

STAGES = ("endpoint_ms", "asr_final_ms", "asr_compute_ms", "intent_ms", "first_tts_ms", "voice_to_voice_ms")


class VoiceStats:
    def __init__(self, keep: int = 5000):
        self.turns: deque[dict[str, Any]] = deque(maxlen=keep)
        self.calls_ended: dict[str, int] = {}
        # calls whose media stopped mid-speech (silence suppression, a client that stops sending)
        self.line_gap_calls = 0
        self.silence_filled_ms = 0.0
        self.started = time.time()

    def record_turn(self, summary: dict[str, Any]) -> None:
        self.turns.append(summary)

    def record_call(self, reason: str, silence_filled_ms: float = 0.0) -> None:
        self.calls_ended[reason] = self.calls_ended.get(reason, 0) + 1
        if silence_filled_ms:
            self.line_gap_calls += 1
            self.silence_filled_ms += silence_filled_ms

    def reset(self) -> None:
        self.turns.clear()
        self.calls_ended.clear()
        self.line_gap_calls = 0
        self.silence_filled_ms = 0.0

    def snapshot(self) -> dict[str, Any]:
        stages: dict[str, Any] = {}
        for stage in STAGES:
            values = np.array([t[stage] for t in self.turns if t.get(stage) is not None], dtype=float)
            if values.size:
                stages[stage] = {
                    "n": int(values.size),
                    "p50": round(float(np.percentile(values, 50)), 1),
                    "p95": round(float(np.percentile(values, 95)), 1),
                    "max": round(float(values.max()), 1),
                }
        turns = list(self.turns)
        by_verdict: dict[str, Any] = {}
        for verdict in sorted({t.get("verdict") or "" for t in turns} - {""}):
            endpoint = np.array(
                [t["endpoint_ms"] for t in turns if t.get("verdict") == verdict and t.get("endpoint_ms") is not None],
                dtype=float,
            )
            by_verdict[verdict] = {
                "turns": sum(1 for t in turns if t.get("verdict") == verdict),
                "endpoint_p50_ms": round(float(np.percentile(endpoint, 50)), 1) if endpoint.size else None,
            }
        return {
            "turns": len(turns),
            "speculative_hit_rate": round(sum(1 for t in turns if t.get("speculative_hit")) / len(turns), 3)
            if turns
            else None,
            "interrupted": sum(1 for t in turns if t.get("interrupted")),
            "stages": stages,
            "endpoint_by_verdict": by_verdict,
            "calls_ended": dict(self.calls_ended),
            "line_gaps": {"calls": self.line_gap_calls, "silence_filled_ms": round(self.silence_filled_ms)},
            "process": _process(),
        }


def _process() -> dict[str, Any]:
    try:
        import psutil
    except ImportError:
        return {}
    proc = psutil.Process(os.getpid())
    times = proc.cpu_times()
    return {
        "pid": proc.pid,
        "rss_mib": round(proc.memory_info().rss / 2**20, 1),
        "cpu_user_s": round(times.user, 2),
        "cpu_system_s": round(times.system, 2),
        "threads": proc.num_threads(),
    }
