"""What tracing costs a conversation: OpenTelemetry spans off (the default) and on.

    .venv/bin/python bench/tracing.py [--conversations 2000] [--json]

Each conversation makes the spans of a five-turn voice call (a conversation span, five turn
spans, five voice-turn spans with four stage spans each) through ``ConversationTrace``. "on"
exports through a BatchSpanProcessor to an exporter that drops what it gets, so the figure is
voxgate's and the SDK's own cost, not a network's.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHILD = r"""
import json, sys, time
sys.path.insert(0, sys.argv[3])
from voxgate import tracing
if sys.argv[2] == "on":
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
    class Drop(SpanExporter):
        def export(self, spans): return SpanExportResult.SUCCESS
    tracing.add_processor(BatchSpanProcessor(Drop()))
n = int(sys.argv[1])
times = []
for i in range(n):
    t0 = time.perf_counter()
    trace = tracing.ConversationTrace(session_id=f"s{i}", agent="a", version="1", environment="dev", channel="voice")
    for turn in range(1, 6):
        now = time.perf_counter()
        trace.turn(turn, start_ns=tracing.wall_ns(now - 0.05), end_ns=tracing.wall_ns(now),
                   attributes={"intent": "order_status", "confidence": 0.9, "state": "idle", "escalated": False})
        trace.voice_turn({"speech_end_at": now - 0.6, "endpoint_at": now - 0.25, "asr_final_at": now - 0.24,
                          "intent_at": now - 0.2, "first_audio_at": now},
                         {"turn": turn, "verdict": "complete", "voice_to_voice_ms": 600.0})
    trace.end(outcome="resolved")
    times.append((time.perf_counter() - t0) * 1e6)
tracing.flush()
times.sort()
print(json.dumps({"p50_us": round(times[len(times) // 2], 1), "p95_us": round(times[int(len(times) * 0.95)], 1)}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--conversations", type=int, default=2000)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    out = {}
    for mode in ("off", "on"):
        run = subprocess.run(
            [sys.executable, "-c", CHILD, str(args.conversations), mode, str(ROOT / "src")],
            capture_output=True,
            text=True,
            check=True,
        )
        out[mode] = json.loads(run.stdout.strip().splitlines()[-1])
    if args.json:
        print(json.dumps(out, indent=2))
        return
    print(f"spans of one five-turn voice call ({args.conversations} calls, 26 spans each when on):")
    for mode in ("off", "on"):
        print(f"  tracing {mode:3}  p50 {out[mode]['p50_us']} µs, p95 {out[mode]['p95_us']} µs per call")


if __name__ == "__main__":
    main()
