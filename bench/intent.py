"""Benchmark of the offline intent classifier on the harbor-support example agent.

Fits :class:`voxgate.runtime.nlu.IntentClassifier` on the ``triggers:`` of
``examples/harbor-telecom/agents/harbor-support/topics/*.yaml`` and evaluates it
on the held-out caller phrasings in ``bench/data/intent_eval.yaml``.

    python bench/intent.py            # human-readable report
    python bench/intent.py --json     # machine-readable
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from ruamel.yaml import YAML

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))  # run from a checkout without installing

from voxgate.bundle import load_bundle  # noqa: E402
from voxgate.runtime.nlu import Embedder, IntentClassifier  # noqa: E402

AGENT_DIR = REPO / "examples" / "harbor-telecom" / "agents" / "harbor-support"
EVAL_FILE = REPO / "bench" / "data" / "intent_eval.yaml"
TARGETS = {"in_scope_accuracy": 0.90, "out_of_scope_rejection": 0.85, "p95_ms": 10.0}


def load_agent(agent_dir: Path = AGENT_DIR) -> tuple[dict[str, list[str]], list[str]]:
    """What the runtime fits on: each topic's triggers, and the agent's refuse_examples."""
    bundle = load_bundle(agent_dir)
    triggers = {name: list(topic.triggers) for name, topic in bundle.topics.items()}
    return triggers, list(bundle.agent.scope.refuse_examples)


def load_eval(path: Path = EVAL_FILE) -> tuple[list[tuple[str, str]], list[str]]:
    data = YAML(typ="safe").load(path.read_text(encoding="utf-8"))
    in_scope = [(intent, str(text)) for intent, texts in data["in_scope"].items() for text in texts]
    return in_scope, [str(t) for t in data["out_of_scope"]]


def rss_mib() -> tuple[float, float]:
    """(current RSS, peak RSS) of this process in MiB."""
    current = 0.0
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmRSS:"):
                current = int(line.split()[1]) / 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return round(current, 1), round(peak, 1)


def run(threads: int) -> dict[str, Any]:
    triggers, negatives = load_agent()
    in_scope, out_of_scope = load_eval()

    t0 = time.perf_counter()
    embedder = Embedder(intra_op_threads=threads, cache_size=0)  # no cache: time every utterance for real
    embedder.load()
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    classifier = IntentClassifier(embedder)
    classifier.fit(triggers, negatives=negatives or None)
    fit_s = time.perf_counter() - t0

    for text, _ in zip(out_of_scope, range(20)):  # warm-up
        classifier.predict(text)

    latencies: list[float] = []
    predictions = []
    for text in [t for _, t in in_scope] + out_of_scope:
        t0 = time.perf_counter()
        predictions.append(classifier.predict(text))
        latencies.append((time.perf_counter() - t0) * 1000)
    in_preds, oos_preds = predictions[: len(in_scope)], predictions[len(in_scope) :]

    per_intent: dict[str, dict[str, Any]] = {}
    confusions: Counter[tuple[str, str]] = Counter()
    for (gold, _), pred in zip(in_scope, in_preds):
        stats = per_intent.setdefault(gold, {"n": 0, "correct": 0, "rejected": 0})
        stats["n"] += 1
        stats["correct"] += pred.intent == gold
        stats["rejected"] += pred.out_of_scope
        if pred.intent is not None and pred.intent != gold:
            confusions[(gold, pred.intent)] += 1
    for stats in per_intent.values():
        stats["accuracy"] = round(stats["correct"] / stats["n"], 4)
    oos_accepted: Counter[str] = Counter(p.intent for p in oos_preds if p.intent is not None)
    lat = np.asarray(latencies)
    cal = classifier.calibration
    current_rss, peak_rss = rss_mib()
    return {
        "n_triggers": {k: len(v) for k, v in triggers.items()},
        "n_in_scope": len(in_scope),
        "n_out_of_scope": len(out_of_scope),
        "in_scope_accuracy": round(sum(p.intent == g for (g, _), p in zip(in_scope, in_preds)) / len(in_scope), 4),
        "out_of_scope_rejection": round(sum(p.out_of_scope for p in oos_preds) / len(oos_preds), 4),
        "in_scope_false_reject": round(sum(p.out_of_scope for p in in_preds) / len(in_preds), 4),
        "per_intent": per_intent,
        "confusions": [{"gold": g, "predicted": p, "count": n} for (g, p), n in confusions.most_common()],
        "out_of_scope_accepted_as": dict(oos_accepted.most_common()),
        "latency_ms": {
            "p50": round(float(np.percentile(lat, 50)), 2),
            "p95": round(float(np.percentile(lat, 95)), 2),
            "max": round(float(lat.max()), 2),
            "n": len(lat),
        },
        "model_load_s": round(load_s, 3),
        "fit_s": round(fit_s, 3),
        "rss_mib": current_rss,
        "peak_rss_mib": peak_rss,
        "threads": threads,
        "threshold": cal.threshold,
        "calibration": {
            "method": cal.method,
            "loo_accuracy": cal.loo_accuracy,
            "expected_false_reject": cal.expected_false_reject,
            "expected_background_rejection": cal.expected_background_rejection,
            "n_background": cal.n_background,
            "n_background_dropped": cal.n_background_dropped,
        },
        "model": {"sha256": embedder.model_info.sha256, "path": embedder.model_info.path},
        "errors": {
            "in_scope": [
                {"text": t, "gold": g, "predicted": p.intent, "nearest": p.nearest, "reason": p.reason}
                for (g, t), p in zip(in_scope, in_preds)
                if p.intent != g
            ],
            "out_of_scope_accepted": [
                {"text": t, "predicted": p.intent} for t, p in zip(out_of_scope, oos_preds) if not p.out_of_scope
            ],
        },
    }


def _pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def print_report(r: dict[str, Any], *, show_errors: bool) -> None:
    def verdict(ok: bool) -> str:
        return "ok" if ok else "MISSED"

    print(
        f"intent bench: {sum(r['n_triggers'].values())} triggers over {len(r['n_triggers'])} intents; "
        f"eval {r['n_in_scope']} in-scope, {r['n_out_of_scope']} out-of-scope"
    )
    print(f"threshold {r['threshold']:.4f}  ({r['calibration']['method']})")
    print(
        f"in-scope accuracy        {_pct(r['in_scope_accuracy']):>8}   target >= 90 %  "
        f"{verdict(r['in_scope_accuracy'] >= TARGETS['in_scope_accuracy'])}"
    )
    print(
        f"out-of-scope rejection   {_pct(r['out_of_scope_rejection']):>8}   target >= 85 %  "
        f"{verdict(r['out_of_scope_rejection'] >= TARGETS['out_of_scope_rejection'])}"
    )
    print(f"in-scope false reject    {_pct(r['in_scope_false_reject']):>8}")
    print("per intent:")
    for name, s in sorted(r["per_intent"].items()):
        print(f"  {name:<16} {_pct(s['accuracy']):>8}  ({s['correct']}/{s['n']}, {s['rejected']} rejected)")
    print("confusions (gold -> predicted):")
    for c in r["confusions"] or [{"gold": "-", "predicted": "-", "count": 0}]:
        print(f"  {c['gold']} -> {c['predicted']}: {c['count']}")
    print(f"out-of-scope accepted as: {r['out_of_scope_accepted_as'] or '-'}")
    lat = r["latency_ms"]
    print(
        f"latency per utterance (ms, n={lat['n']}, {r['threads']} thread): p50 {lat['p50']}  p95 {lat['p95']}  "
        f"max {lat['max']}   target p95 < 10 ms  {verdict(lat['p95'] < TARGETS['p95_ms'])}"
    )
    print(
        f"model load {r['model_load_s']:.3f} s, fit {r['fit_s']:.3f} s, "
        f"RSS {r['rss_mib']} MiB (peak {r['peak_rss_mib']} MiB)"
    )
    if show_errors:
        print("in-scope errors:")
        for e in r["errors"]["in_scope"]:
            got = e["predicted"] or f"REJECTED ({e['reason']}, nearest {e['nearest']})"
            print(f"  [{e['gold']} -> {got}] {e['text']}")
        print("out-of-scope accepted:")
        for e in r["errors"]["out_of_scope_accepted"]:
            print(f"  [{e['predicted']}] {e['text']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--errors", action="store_true", help="list every misclassified utterance")
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads (default 1)")
    args = parser.parse_args(argv)
    result = run(args.threads)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_report(result, show_errors=args.errors)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
