"""Benchmark of the audit chain: appends per second and the time to verify a long chain.

For SQLite (a file in a temporary directory) and, when given, PostgreSQL (a temporary schema that
is dropped afterwards; nothing else in that database is touched):

- single appends: one event per `AuditLog.append` call, i.e. per transaction (latency p50/p95/p99);
- batched appends: `--batch` events per call (one transaction each);
- async writer: events recorded from asyncio and written by `AsyncAuditWriter` in batches;
- verify: a chain of `--events` events (signed checkpoint every 1,000) is generated with bulk
  inserts, then `AuditLog.verify()` recomputes every hash and checks every signature.

    python bench/audit.py                                   # SQLite, verify 1,000,000 events
    python bench/audit.py --postgres postgresql://u@host/db # also PostgreSQL
    python bench/audit.py --events 100000 --json            # machine-readable
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import resource
import secrets
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))  # run from a checkout without installing

from sqlalchemy import text  # noqa: E402

from voxgate.compliance.audit import GENESIS_HASH, AuditEvent, AuditLog, at_text, chain_hash  # noqa: E402
from voxgate.signing import KeyPair  # noqa: E402
from voxgate.store.db import Database  # noqa: E402

TARGETS = {"sqlite_single_appends_per_s": 5000.0, "verify_1m_s": 10.0}
CHECKPOINT_EVERY = 1000


def sample_event(i: int) -> AuditEvent:
    """A typical runtime event: ids and hashes only."""
    return AuditEvent(
        actor=f"user:{i % 50:032x}",
        action="connector.call",
        resource="env:prod/agent:harbor-support/connector:billing",
        outcome="allowed",
        environment="prod",
        data={"session": f"{i:032x}", "host": "api.harbor.example", "status": 200, "ms": 12.5},
    )


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {"p50_ms": round(at(0.50) * 1e3, 3), "p95_ms": round(at(0.95) * 1e3, 3), "p99_ms": round(at(0.99) * 1e3, 3)}


def peak_rss_mib() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


# ---- appends -----------------------------------------------------------------------------------


def bench_appends(url: str, singles: int, batched: int, batch: int) -> dict[str, Any]:
    db = Database(url)
    db.migrate()
    log = AuditLog(db, KeyPair.generate(), checkpoint_every=CHECKPOINT_EVERY)
    events = [sample_event(i) for i in range(max(singles, batch))]
    log.append(events[0])  # open the writer's connection and register the key outside the timing

    latencies = []
    start = time.perf_counter()
    for i in range(singles):
        t0 = time.perf_counter()
        log.append(events[i])
        latencies.append(time.perf_counter() - t0)
    single_s = time.perf_counter() - start

    batch_latencies = []
    start = time.perf_counter()
    for _ in range(batched // batch):
        t0 = time.perf_counter()
        log.append(*events[:batch])
        batch_latencies.append(time.perf_counter() - t0)
    batched_s = time.perf_counter() - start
    batched_done = (batched // batch) * batch

    async def through_writer() -> float:
        writer = log.writer()
        t0 = time.perf_counter()
        for i in range(batched):
            await writer.record(events[i % len(events)])
        await writer.aclose()
        return time.perf_counter() - t0

    writer_s = asyncio.run(through_writer())
    report = log.verify()
    log.close()
    db.dispose()
    if not report.ok:
        raise SystemExit(f"the benchmark chain does not verify: {report.reason}")
    return {
        "single": {"events": singles, "per_s": round(singles / single_s), **percentiles(latencies)},
        "batched": {
            "events": batched_done,
            "batch": batch,
            "per_s": round(batched_done / batched_s),
            **{f"batch_{k}": v for k, v in percentiles(batch_latencies).items()},
        },
        "async_writer": {"events": batched, "per_s": round(batched / writer_s)},
    }


# ---- verify ------------------------------------------------------------------------------------


def chain_rows(n: int, signer: KeyPair) -> Iterator[tuple[tuple[Any, ...], tuple[Any, ...] | None]]:
    """(event row, checkpoint row or None), exactly as AuditLog.append would write them."""
    prev = GENESIS_HASH
    base = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    templates = [sample_event(i) for i in range(64)]
    for seq in range(1, n + 1):
        e = templates[seq % 64]
        at = at_text(base + dt.timedelta(milliseconds=seq))
        digest = chain_hash(prev, seq, at, e.actor, e.action, e.resource, e.environment, e.outcome, e.data_json)
        row = (seq, at, e.actor, e.action, e.resource, e.environment, e.outcome, e.data_json, prev, digest)
        cp = None
        if seq % CHECKPOINT_EVERY == 0:
            cp = (seq, digest, at, signer.key_id, signer.sign(f"{seq}:{digest}".encode()))
        yield row, cp
        prev = digest


def fill_chain(db: Database, n: int, signer: KeyPair) -> None:
    """Write a valid n-event chain fast: big transactions (SQLite) or COPY (PostgreSQL)."""
    AuditLog(db, signer).checkpoint()  # registers the audit key in signing_keys, writes nothing else
    columns = "seq, at, actor, action, resource, environment, outcome, data, prev_hash, hash"
    cp_columns = "seq, hash, at, key_id, signature"
    raw = db.engine.raw_connection()
    try:
        cur = raw.cursor()
        if db.engine.dialect.name == "sqlite":
            rows: list[tuple[Any, ...]] = []
            cps: list[tuple[Any, ...]] = []

            def write() -> None:
                cur.executemany(f"INSERT INTO audit_events ({columns}) VALUES ({', '.join('?' * 10)})", rows)
                cur.executemany(f"INSERT INTO audit_checkpoints ({cp_columns}) VALUES (?, ?, ?, ?, ?)", cps)
                raw.commit()
                rows.clear()
                cps.clear()

            for row, cp in chain_rows(n, signer):
                rows.append(row)
                if cp:
                    cps.append(cp)
                if len(rows) == 100_000:
                    write()
            write()
        else:
            with cur.copy(f"COPY audit_events ({columns}) FROM STDIN") as copy:
                cps = []
                for row, cp in chain_rows(n, signer):
                    copy.write_row(row)
                    if cp:
                        cps.append(cp)
            cur.executemany(f"INSERT INTO audit_checkpoints ({cp_columns}) VALUES (%s, %s, %s, %s, %s)", cps)
            raw.commit()
        cur.close()
    finally:
        raw.close()


def bench_verify(url: str, n: int) -> dict[str, Any]:
    db = Database(url)
    db.migrate()
    signer = KeyPair.generate()
    t0 = time.perf_counter()
    fill_chain(db, n, signer)
    fill_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    report = AuditLog(db).verify()  # keys from signing_keys, as `voxgate audit verify` does
    verify_s = time.perf_counter() - t0
    db.dispose()
    if not report.ok or report.events_checked != n:
        raise SystemExit(f"the generated chain does not verify: {report.reason}")
    return {
        "events": n,
        "checkpoints": report.checkpoints_checked,
        "seconds": round(verify_s, 2),
        "events_per_s": round(n / verify_s),
        "generate_s": round(fill_s, 1),
        "peak_rss_mib": peak_rss_mib(),
    }


# ---- databases ---------------------------------------------------------------------------------


class PgSchema:
    """A throwaway schema in the given PostgreSQL database, selected through search_path."""

    def __init__(self, url: str):
        if url.startswith("postgresql://"):
            url = "postgresql+psycopg://" + url[len("postgresql://") :]
        self.base = url
        self.name = f"voxgate_bench_{secrets.token_hex(4)}"

    def __enter__(self) -> str:
        self._admin = Database(self.base)
        with self._admin.engine.begin() as conn:
            conn.execute(text(f"CREATE SCHEMA {self.name}"))
        sep = "&" if "?" in self.base else "?"
        return f"{self.base}{sep}options=-csearch_path%3D{self.name}"

    def __exit__(self, *exc: object) -> None:
        with self._admin.engine.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {self.name} CASCADE"))
        self._admin.dispose()


def run(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {"cpu_count": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="voxgate-audit-bench-") as tmp:
        results["sqlite"] = {
            "appends": bench_appends(f"sqlite:///{tmp}/appends.db", args.appends, args.batched, args.batch),
            "verify": bench_verify(f"sqlite:///{tmp}/verify.db", args.events),
        }
    if args.postgres:
        pg: dict[str, Any] = {}
        with PgSchema(args.postgres) as url:
            pg["appends"] = bench_appends(url, args.appends, args.batched, args.batch)
        with PgSchema(args.postgres) as url:
            pg["verify"] = bench_verify(url, args.pg_events or args.events)
        results["postgresql"] = pg
    results["targets"] = TARGETS
    return results


def print_table(results: dict[str, Any]) -> None:
    print(f"audit chain benchmark ({results['cpu_count']} CPUs)")
    print(f"{'database':<11} {'mode':<26} {'events':>9} {'per s':>9} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}")
    for name in ("sqlite", "postgresql"):
        if name not in results:
            continue
        a = results[name]["appends"]
        s, b, w = a["single"], a["batched"], a["async_writer"]
        print(
            f"{name:<11} {'single append':<26} {s['events']:>9} {s['per_s']:>9} "
            f"{s['p50_ms']:>8} {s['p95_ms']:>8} {s['p99_ms']:>8}"
        )
        mode = f"batched x{b['batch']} (per batch)"
        print(
            f"{name:<11} {mode:<26} {b['events']:>9} {b['per_s']:>9} "
            f"{b['batch_p50_ms']:>8} {b['batch_p95_ms']:>8} {b['batch_p99_ms']:>8}"
        )
        print(f"{name:<11} {'async writer':<26} {w['events']:>9} {w['per_s']:>9}")
    for name in ("sqlite", "postgresql"):
        if name not in results:
            continue
        v = results[name]["verify"]
        print(
            f"{name:<11} verify {v['events']:,} events ({v['checkpoints']} signed checkpoints): {v['seconds']} s "
            f"({v['events_per_s']:,}/s; generating took {v['generate_s']} s; peak RSS {v['peak_rss_mib']} MiB)"
        )
    print(
        f"targets: >= {TARGETS['sqlite_single_appends_per_s']:.0f} appends/s on SQLite, "
        f"<= {TARGETS['verify_1m_s']:.0f} s to verify 1,000,000 events"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="chain length to verify (default 1,000,000)")
    parser.add_argument("--pg-events", type=int, default=None, help="chain length to verify on PostgreSQL")
    parser.add_argument("--appends", type=int, default=5000, help="single-event appends to time")
    parser.add_argument("--batched", type=int, default=50_000, help="events to append in batches")
    parser.add_argument("--batch", type=int, default=100, help="events per batched append")
    parser.add_argument(
        "--postgres",
        default=os.environ.get("VOXGATE_TEST_POSTGRES_URL"),
        help="PostgreSQL URL (default: $VOXGATE_TEST_POSTGRES_URL); a temporary schema is used",
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    for name in ("events", "appends", "batched", "batch"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    results = run(args)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print_table(results)


if __name__ == "__main__":
    main()
