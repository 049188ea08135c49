"""Benchmark of the DLP host check and the bundle pipeline: p50/p95/p99 latency and throughput.

- `host check`: `DlpHostPolicy.allowed` on the default prod policy, as the runtime calls it before
  every connector request (allowed host, host refused by the endpoint filter, blocked host), and
  `allowed_url` with path rules;
- `check_bundle`: the Harbor agent against the prod DLP policy;
- `scan_secrets`, `build_bundle` (validate + scan + DLP + pack + sign), `verify_bundle`, and
  `load_stored` (read back from SQLite with digest, signatures and columns re-verified).

    python bench/bundles.py            # table
    python bench/bundles.py --json     # machine-readable
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))  # run from a checkout without installing

from voxgate.bundle import load_bundle  # noqa: E402
from voxgate.bundle.models import HttpConnector  # noqa: E402
from voxgate.governance.bundle_store import (  # noqa: E402
    build_bundle,
    load_stored,
    register_signing_key,
    scan_secrets,
    store_bundle,
    verify_bundle,
)
from voxgate.governance.dlp import DlpHostPolicy, check_bundle  # noqa: E402
from voxgate.governance.environments import load_governance  # noqa: E402
from voxgate.signing import KeyPair  # noqa: E402
from voxgate.store.db import Database  # noqa: E402

HARBOR = REPO / "examples" / "harbor-telecom" / "agents" / "harbor-support"


def _measure(fn: Callable[[], Any], n: int, warmup: int) -> dict[str, float]:
    for _ in range(warmup):
        fn()
    samples = []
    start = time.perf_counter()
    for _ in range(n):
        t = time.perf_counter_ns()
        fn()
        samples.append((time.perf_counter_ns() - t) / 1000.0)
    elapsed = time.perf_counter() - start
    samples.sort()
    pick = lambda q: samples[min(len(samples) - 1, int(q * len(samples)))]  # noqa: E731
    return {
        "n": n,
        "p50_us": pick(0.50),
        "p95_us": pick(0.95),
        "p99_us": pick(0.99),
        "mean_us": statistics.fmean(samples),
        "per_s": n / elapsed,
    }


def run(scale: float) -> dict[str, Any]:
    gov = load_governance()
    prod = gov.get("prod")
    policy = DlpHostPolicy.for_environment(prod)
    conn = HttpConnector(
        base_url="http://127.0.0.1:8700",
        hosts=["127.0.0.1", "exfil.example.net", "x.ngrok.io"],
        classification="personal",
    )
    source = load_bundle(HARBOR)
    key = KeyPair.generate()
    built = build_bundle(HARBOR, prod, [], key, "u-bench")
    n_fast = max(1000, int(100_000 * scale))
    n_slow = max(5, int(50 * scale))
    results: dict[str, Any] = {
        "host check: allowed host": _measure(lambda: policy.allowed("harbor_api", conn, "127.0.0.1"), n_fast, 1000),
        "host check: endpoint-denied host": _measure(
            lambda: policy.allowed("harbor_api", conn, "exfil.example.net"), n_fast, 1000
        ),
        "host check: blocked host": _measure(lambda: policy.allowed("harbor_api", conn, "x.ngrok.io"), n_fast, 1000),
        "host check: allowed_url with path rules": _measure(
            lambda: policy.allowed_url("harbor_api", conn, "http://127.0.0.1:8700/api/customers/1/balance"),
            n_fast,
            1000,
        ),
        "check_bundle (Harbor, prod)": _measure(lambda: check_bundle(source, prod), max(200, n_slow * 20), 20),
        "scan_secrets (Harbor, 9 files)": _measure(lambda: scan_secrets(HARBOR), n_slow, 2),
        "build_bundle (Harbor, prod)": _measure(lambda: build_bundle(HARBOR, prod, [], key, "u-bench"), n_slow, 2),
        "verify_bundle (Harbor)": _measure(
            lambda: verify_bundle(built.archive, built.signature, key.public, built.digest), max(200, n_slow * 20), 20
        ),
    }
    with tempfile.TemporaryDirectory() as tmp:
        db = Database(f"sqlite:///{tmp}/bench.db")
        db.migrate()
        register_signing_key(db, key.public, "u-bench")
        store_bundle(db, built)
        results["load_stored (SQLite, re-verified)"] = _measure(
            lambda: load_stored(db, built.digest), max(200, n_slow * 20), 20
        )
        db.dispose()
    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "archive_bytes": len(built.archive),
        "results": results,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="Print JSON.")
    parser.add_argument("--scale", type=float, default=1.0, help="Multiply the number of iterations.")
    args = parser.parse_args()
    out = run(args.scale)
    if args.json:
        print(json.dumps(out, indent=2))
        return
    print(f"python {out['python']} on {out['machine']}; Harbor archive {out['archive_bytes']} bytes")
    print(f"{'operation':<42} {'n':>7} {'p50':>10} {'p95':>10} {'p99':>10} {'per s':>10}")
    for name, r in out["results"].items():
        print(
            f"{name:<42} {r['n']:>7} {r['p50_us']:>8.1f}us {r['p95_us']:>8.1f}us {r['p99_us']:>8.1f}us {r['per_s']:>10.0f}"
        )


if __name__ == "__main__":
    main()
