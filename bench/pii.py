"""PII redaction benchmark: recall and precision per type, and latency per utterance.

    .venv/bin/python bench/pii.py [--json] [--data bench/data/pii/utterances.jsonl] [--errors N]

The data set (bench/data/pii/utterances.jsonl, rendered from templates.txt by build.py) holds
customer-service utterances, written and speech-recognition style, with gold spans for cards,
phones, e-mails, SSNs, account numbers and names, plus negatives (order numbers, prices, dates,
times, quantities) that must come through untouched.

Scoring, per type:
- recall: a gold span counts as found when the redactor removed all of it (every non-space
  character covered by redacted spans) and at least one overlapping span has the gold type;
- leak-free: all of it removed, whatever type the redactor gave it (what privacy needs);
- precision: a predicted span is right when it overlaps a gold span of its own type.
Names are reported apart from the targets. Latency is the wall time of ``Redactor.redact``.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from voxgate.compliance.redaction import RedactionConfig, Redactor  # noqa: E402

TARGETED = ("CREDIT_CARD", "PHONE_NUMBER", "EMAIL_ADDRESS", "US_SSN", "ACCOUNT_NUMBER")
TARGET_RECALL, TARGET_PRECISION = 0.95, 0.85


def covered(text: str, start: int, end: int, spans: list[tuple[int, int]]) -> bool:
    return all(text[i].isspace() or any(s <= i < e for s, e in spans) for i in range(start, end))


def overlaps(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def pct(num: int, den: int) -> float | None:
    return round(num / den, 4) if den else None


MARKUP = re.compile(r"\[\[([A-Z_]+):(.+?)\]\]")


def parse_markup(line: str) -> dict:
    """'call [[PHONE_NUMBER:212 555 0147]]' -> {"text": ..., "entities": [...]}."""
    text, entities, pos = "", [], 0
    for m in MARKUP.finditer(line):
        text += line[pos:m.start()]
        entities.append({"type": m.group(1), "start": len(text), "end": len(text) + len(m.group(2))})
        text += m.group(2)
        pos = m.end()
    return {"text": text + line[pos:], "style": "heldout", "entities": entities}


def load(path: Path) -> list[dict]:
    """JSON lines with gold spans, or a text file of lines with [[TYPE:value]] markup."""
    lines = [line for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in lines]
    return [parse_markup(line) for line in lines]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT / "bench" / "data" / "pii" / "utterances.jsonl")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--errors", type=int, default=0, help="print up to N missed and N spurious spans")
    parser.add_argument("--repeat", type=int, default=3, help="latency passes over the set")
    args = parser.parse_args()

    records = load(args.data)
    t0 = time.perf_counter()
    redactor = Redactor(RedactionConfig())
    build_ms = (time.perf_counter() - t0) * 1000

    gold_n, found_n, leak_free_n, pred_n, pred_ok = Counter(), Counter(), Counter(), Counter(), Counter()
    negatives = negatives_clean = 0
    misses: list[str] = []
    spurious: list[str] = []
    for rec in records:
        text = rec["text"]
        spans = redactor.find(text)
        cover = [(s.start, s.end) for s in spans]
        for g in rec["entities"]:
            gold_n[g["type"]] += 1
            whole = covered(text, g["start"], g["end"], cover)
            typed = any(s.type == g["type"] and overlaps((s.start, s.end), (g["start"], g["end"])) for s in spans)
            leak_free_n[g["type"]] += whole
            found_n[g["type"]] += whole and typed
            if not (whole and typed):
                got = [(s.type, text[s.start:s.end]) for s in spans if overlaps((s.start, s.end), (g["start"], g["end"]))]
                misses.append(f"{g['type']}: {text[g['start']:g['end']]!r} in {text!r} -> {got}")
        for s in spans:
            pred_n[s.type] += 1
            ok = any(g["type"] == s.type and overlaps((s.start, s.end), (g["start"], g["end"])) for g in rec["entities"])
            pred_ok[s.type] += ok
            if not ok:
                spurious.append(f"{s.type}: {text[s.start:s.end]!r} in {text!r}")
        if not rec["entities"]:
            negatives += 1
            negatives_clean += not spans

    latencies: list[float] = []
    for _ in range(args.repeat):
        for rec in records:
            t = time.perf_counter()
            redactor.redact(rec["text"])
            latencies.append((time.perf_counter() - t) * 1000)
    latencies.sort()

    types = sorted(set(gold_n) | set(pred_n), key=lambda t: (t not in TARGETED, t == "PERSON", t))
    per_type = {
        t: {"gold": gold_n[t], "recall": pct(found_n[t], gold_n[t]), "leak_free": pct(leak_free_n[t], gold_n[t]),
            "predicted": pred_n[t], "precision": pct(pred_ok[t], pred_n[t])}
        for t in types
    }
    targeted_ok = all(
        (per_type[t]["recall"] or 0) >= TARGET_RECALL and (per_type[t]["precision"] or 0) >= TARGET_PRECISION
        for t in TARGETED if t in per_type
    )
    summary = {
        "utterances": len(records),
        "styles": dict(Counter(r.get("style", "?") for r in records)),
        "per_type": per_type,
        "negatives": negatives,
        "negatives_untouched": pct(negatives_clean, negatives),
        "targets": {"recall": TARGET_RECALL, "precision": TARGET_PRECISION, "met": targeted_ok},
        "latency_ms": {
            "p50": round(statistics.median(latencies), 3),
            "p95": round(latencies[int(0.95 * (len(latencies) - 1))], 3),
            "max": round(latencies[-1], 3),
            "mean": round(statistics.fmean(latencies), 3),
            "samples": len(latencies),
        },
        "build_ms": round(build_ms, 1),
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"PII redaction bench: {len(records)} utterances {summary['styles']}, "
              f"redactor built in {summary['build_ms']} ms")
        print(f"{'type':16} {'gold':>5} {'recall':>8} {'leakfree':>9} {'pred':>5} {'precision':>10}")
        for t, row in per_type.items():
            def f(v: float | None) -> str:
                return "-" if v is None else f"{v * 100:.1f}%"
            label = t + (" (names, reported apart)" if t == "PERSON" else "")
            print(f"{t:16} {row['gold']:>5} {f(row['recall']):>8} {f(row['leak_free']):>9} "
                  f"{row['predicted']:>5} {f(row['precision']):>10}" + ("" if t != "PERSON" else "   " + label[7:]))
        print(f"negatives untouched: {negatives_clean}/{negatives}")
        lat = summary["latency_ms"]
        print(f"latency per utterance: p50 {lat['p50']} ms, p95 {lat['p95']} ms, max {lat['max']} ms "
              f"({lat['samples']} calls)")
        print(f"targets (recall >= {TARGET_RECALL:.0%}, precision >= {TARGET_PRECISION:.0%} for "
              f"{', '.join(TARGETED)}): {'met' if targeted_ok else 'NOT met'}")
    if args.errors:
        stream = sys.stderr if args.json else sys.stdout
        print(f"\nmissed ({len(misses)}):", file=stream)
        for line in misses[:args.errors]:
            print("  " + line, file=stream)
        print(f"spurious ({len(spurious)}):", file=stream)
        for line in spurious[:args.errors]:
            print("  " + line, file=stream)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
