"""The audit chain: appends, tamper detection (edit, delete, swap, rewrite, truncate, forged checkpoint),
concurrent writers (threads and processes), export, query, the async writer and `voxgate audit`."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import io
import json
import math
import multiprocessing
import pickle
import sqlite3
import threading
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import DBAPIError
from typer.testing import CliRunner

from voxgate.cli.audit import app as audit_cli
from voxgate.compliance.audit import (
    GENESIS_HASH,
    AuditError,
    AuditEvent,
    AuditLog,
    AuditWriteError,
    audit_public_keys,
    parse_at,
)
from voxgate.signing import KeyPair
from voxgate.store.db import Database
from voxgate.store.models import AuditCheckpointRow, AuditEventRow, SigningKeyRow

# ---- helpers ------------------------------------------------------------------------------------


def event(i: int, action: str = "connector.call", **data: Any) -> AuditEvent:
    return AuditEvent(
        actor=f"user:u{i % 3}",
        action=action,
        resource=f"env:prod/agent:harbor-support/connector:c{i}",
        outcome="ok",
        environment="prod",
        data={"i": i, **data},
    )


def tamper(db_url: str, *statements: str) -> None:
    """Change the stored chain from outside voxgate, as an attacker with file or superuser access would.

    SQLite: the sqlite3 module on the database file. PostgreSQL: psycopg as the superuser, with
    triggers switched off for the session (the append-only trigger would refuse otherwise).
    """
    if db_url.startswith("sqlite"):
        conn = sqlite3.connect(db_url.split("///", 1)[1])
        try:
            for sql in statements:
                conn.execute(sql)
            conn.commit()
        finally:
            conn.close()
        return
    with psycopg.connect(db_url.replace("postgresql+psycopg://", "postgresql://", 1)) as conn:
        conn.execute("SET session_replication_role = replica")
        for sql in statements:
            conn.execute(sql)


def rows_of(db: Database) -> list[AuditEventRow]:
    with db.orm() as session:
        return list(session.execute(select(AuditEventRow).order_by(AuditEventRow.seq)).scalars())


def recompute(prev: str, row: dict[str, Any], data_text: str) -> str:
    """The documented chain hash, written out here independently of voxgate's code."""
    fields = [
        str(row["seq"]),
        row["at"],
        row["actor"],
        row["action"],
        row["resource"],
        row["environment"],
        row["outcome"],
        data_text,
    ]
    return hashlib.sha256((prev + "\n" + "\n".join(fields)).encode("utf-8")).hexdigest()


# ---- events ------------------------------------------------------------------------------------


def test_event_data_is_canonical_and_read_only() -> None:
    e = AuditEvent("user:1", "bundle.publish", "bundle:sha256:ab", "ok", "prod", {"b": [1, 2], "a": "é"})
    assert e.data_json == '{"a":"é","b":[1,2]}'
    assert dict(e.data) == {"a": "é", "b": [1, 2]}
    with pytest.raises(TypeError):
        e.data["a"] = "x"  # type: ignore[index]
    assert AuditEvent("system", "server.start", "env:dev").outcome == "ok"  # the default
    copy = pickle.loads(pickle.dumps(e))  # events can cross to worker processes
    assert copy == e and copy.data_json == e.data_json


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"data": {"card": b"4111"}}, "data['card']: a bytes value cannot be stored as JSON"),
        ({"data": {"ids": {1, 2}}}, "data['ids']: a set value"),
        ({"data": {"x": object()}}, "data['x']: a object value"),
        ({"data": {"ratio": math.nan}}, "data['ratio']: a float value"),
        ({"data": {1: "a"}}, "data key 1: keys must be text"),
        ({"data": ["a"]}, "data: must be a mapping"),
        ({"data": {"blob": "x" * 9000}}, "at most 8192"),
        ({"outcome": "maybe"}, "outcome 'maybe': must be one of allowed, denied, failed, ok"),
        ({"actor": ""}, "actor: must not be empty"),
        ({"actor": "user:1\nadmin"}, "actor: line breaks"),
        ({"resource": "r" * 201}, "resource: 201 characters, at most 200"),
        ({"environment": 3}, "environment: must be text"),
    ],
)
def test_bad_events_are_refused_naming_the_field(kwargs: dict[str, Any], message: str) -> None:
    fields: dict[str, Any] = {"actor": "user:1", "action": "auth.denied", "resource": "route:/x", "outcome": "denied"}
    fields.update(kwargs)
    with pytest.raises(AuditError) as info:
        AuditEvent(**fields)
    assert message in str(info.value)


def test_append_takes_only_events(db: Database) -> None:
    log = AuditLog(db)
    with pytest.raises(TypeError, match="AuditEvent"):
        log.append({"actor": "user:1"})  # type: ignore[arg-type]
    assert log.append() == []
    assert rows_of(db) == []


# ---- the chain ---------------------------------------------------------------------------------


def test_appends_make_a_contiguous_chain_that_verifies(db: Database) -> None:
    log = AuditLog(db)
    assert log.verify().ok and log.head() == (0, GENESIS_HASH)
    assert log.append(event(1)) == [1]
    assert log.append(*(event(i) for i in range(2, 7))) == [2, 3, 4, 5, 6]
    report = log.verify()
    assert report.ok and report.events_checked == 6 and report.first_bad_seq is None
    assert report.unsigned_tail == 6 and report.checkpoints_checked == 0
    rows = rows_of(db)
    assert [r.seq for r in rows] == [1, 2, 3, 4, 5, 6]
    prev = GENESIS_HASH
    for r in rows:
        assert r.prev_hash == prev
        assert r.hash == recompute(prev, r.__dict__, r.data)
        assert r.data == json.dumps(json.loads(r.data), sort_keys=True, separators=(",", ":"))
        prev = r.hash
    assert log.head() == (6, prev) and report.head_hash == prev
    ats = [r.at for r in rows]
    assert ats == sorted(ats) and all(parse_at(a).tzinfo is dt.UTC for a in ats)
    log.close()


def test_an_edited_row_is_named(db: Database, db_url: str) -> None:
    log = AuditLog(db)
    log.append(*(event(i) for i in range(10)))
    tamper(db_url, """UPDATE audit_events SET data = '{"i":99}' WHERE seq = 4""")
    report = log.verify()
    assert not report.ok and report.first_bad_seq == 4 and report.events_checked == 3
    assert "altered" in (report.reason or "")


def test_an_edited_actor_is_named(db: Database, db_url: str) -> None:
    log = AuditLog(db)
    log.append(*(event(i) for i in range(10)))
    tamper(db_url, "UPDATE audit_events SET actor = 'user:someone-else' WHERE seq = 9")
    assert log.verify().first_bad_seq == 9


def test_a_deleted_row_is_named(db: Database, db_url: str) -> None:
    log = AuditLog(db)
    log.append(*(event(i) for i in range(10)))
    tamper(db_url, "DELETE FROM audit_events WHERE seq = 6")
    report = log.verify()
    assert not report.ok and report.first_bad_seq == 6
    assert report.reason == "event 6 is missing (deleted)"


def test_swapped_rows_name_the_first(db: Database, db_url: str) -> None:
    log = AuditLog(db)
    log.append(*(event(i) for i in range(10)))
    tamper(
        db_url,
        "UPDATE audit_events SET seq = -1 WHERE seq = 3",
        "UPDATE audit_events SET seq = 3 WHERE seq = 7",
        "UPDATE audit_events SET seq = 7 WHERE seq = -1",
    )
    report = log.verify()
    assert not report.ok and report.first_bad_seq == 3


def test_a_forged_row_with_a_line_break_in_a_field_is_caught(db: Database, db_url: str) -> None:
    """Even with its hash recomputed, a row no append could have written (a field holding a line
    break, which would make two different events hash alike) is named."""
    log = AuditLog(db)
    log.append(*(event(i) for i in range(5)))
    rows = [r.__dict__ for r in rows_of(db)]
    prev = rows[1]["hash"]
    statements = []
    for r in rows[2:]:
        forged = {**r, "actor": "user:u0\nadmin"} if r["seq"] == 3 else r
        new_hash = recompute(prev, forged, r["data"])
        statements.append(
            f"UPDATE audit_events SET actor = '{forged['actor']}', prev_hash = '{prev}', hash = '{new_hash}' "
            f"WHERE seq = {r['seq']}"
        )
        prev = new_hash
    tamper(db_url, *statements)
    report = log.verify()
    assert not report.ok and report.first_bad_seq == 3 and "line break" in (report.reason or "")


# ---- checkpoints -------------------------------------------------------------------------------


def test_checkpoints_are_signed_every_n_and_on_demand(db: Database) -> None:
    signer = KeyPair.generate()
    log = AuditLog(db, signer, checkpoint_every=5)
    log.append(*(event(i) for i in range(7)))
    log.append(*(event(i) for i in range(5)))
    assert log.checkpoint() == 12
    assert log.checkpoint() == 12  # the head is signed already: no second row
    with db.orm() as session:
        cps = list(session.execute(select(AuditCheckpointRow).order_by(AuditCheckpointRow.seq)).scalars())
        key = session.get(SigningKeyRow, signer.key_id)
    assert [c.seq for c in cps] == [5, 10, 12]
    assert all(signer.public.verify(c.signature, f"{c.seq}:{c.hash}".encode()) for c in cps)
    assert key is not None and key.purpose == "audit" and key.public_key == signer.public.b64
    # A reader without the private key finds the public one in signing_keys.
    report = AuditLog(db).verify()
    assert report.ok and report.checkpoints_checked == 3 and report.last_checkpoint_seq == 12
    assert report.unsigned_tail == 0
    assert AuditLog(db).checkpoint() is None  # no signer, nothing to sign with


def test_rewriting_the_chain_with_fresh_hashes_is_caught_by_a_checkpoint(db: Database, db_url: str) -> None:
    log = AuditLog(db, KeyPair.generate(), checkpoint_every=5)
    log.append(*(event(i) for i in range(12)))
    # The attacker edits event 7 and recomputes every later hash, so the chain links up again.
    rows = [r.__dict__ for r in rows_of(db)]
    prev = rows[5]["hash"]
    statements = []
    for r in rows[6:]:
        data = '{"i":700}' if r["seq"] == 7 else r["data"]
        new_hash = recompute(prev, r, data)
        statements.append(
            f"UPDATE audit_events SET data = '{data}', prev_hash = '{prev}', hash = '{new_hash}' WHERE seq = {r['seq']}"
        )
        prev = new_hash
    tamper(db_url, *statements)
    unsigned = AuditLog(db).verify(public_keys={})
    assert unsigned.first_bad_seq == 5  # without keys even the honest checkpoint at 5 counts for nothing
    report = log.verify()
    assert not report.ok and report.first_bad_seq == 6
    assert "checkpoint at seq 10" in (report.reason or "") and "6..10" in (report.reason or "")


def test_a_forged_checkpoint_signature_is_named(db: Database, db_url: str) -> None:
    log = AuditLog(db, KeyPair.generate(), checkpoint_every=5)
    log.append(*(event(i) for i in range(12)))
    cp = next(r for r in rows_of(db) if r.seq == 10)
    forged = KeyPair.generate().sign(f"10:{cp.hash}".encode())
    tamper(db_url, f"UPDATE audit_checkpoints SET signature = '{forged}' WHERE seq = 10")
    report = log.verify()
    assert not report.ok and report.first_bad_seq == 10
    assert "does not verify" in (report.reason or "")
    assert report.checkpoints_checked == 1


def test_a_checkpoint_by_an_unknown_key_is_named(db: Database) -> None:
    log = AuditLog(db, KeyPair.generate(), checkpoint_every=5)
    log.append(*(event(i) for i in range(7)))
    stranger = KeyPair.generate()
    report = log.verify({stranger.key_id: stranger.public})
    assert report.first_bad_seq == 5 and "not a known audit key" in (report.reason or "")


def test_truncation_behind_a_checkpoint_is_detected(db: Database, db_url: str) -> None:
    log = AuditLog(db, KeyPair.generate(), checkpoint_every=5)
    log.append(*(event(i) for i in range(12)))
    assert log.verify().unsigned_tail == 2  # 11 and 12 are not signed yet
    log.checkpoint()
    tamper(db_url, "DELETE FROM audit_events WHERE seq >= 11")
    report = log.verify()
    assert not report.ok and report.first_bad_seq == 11
    assert "truncated" in (report.reason or "") and "11..12" in (report.reason or "")


def test_postgres_refuses_update_and_delete_sqlite_relies_on_verify(db: Database) -> None:
    log = AuditLog(db, KeyPair.generate(), checkpoint_every=2)
    log.append(*(event(i) for i in range(4)))
    if db.engine.dialect.name == "postgresql":
        for stmt in (
            update(AuditEventRow).where(AuditEventRow.seq == 2).values(actor="user:x"),
            delete(AuditEventRow).where(AuditEventRow.seq == 2),
            delete(AuditCheckpointRow),
        ):
            with pytest.raises(DBAPIError, match="append-only"):
                with db.engine.begin() as conn:
                    conn.execute(stmt)
        assert log.verify().ok and len(rows_of(db)) == 4
    else:
        # SQLite has no trigger to refuse it; the chain is what catches the change.
        with db.engine.begin() as conn:
            conn.execute(update(AuditEventRow).where(AuditEventRow.seq == 2).values(actor="user:x"))
        assert log.verify().first_bad_seq == 2


# ---- concurrency -------------------------------------------------------------------------------


def test_threads_never_fork_the_chain(db: Database) -> None:
    log = AuditLog(db, KeyPair.generate(), checkpoint_every=7)
    start = threading.Barrier(6)
    results: list[list[int]] = []
    errors: list[BaseException] = []

    def worker(t: int) -> None:
        try:
            start.wait()
            mine: list[int] = []
            for i in range(20):
                if i % 4 == 0:
                    mine += log.append(*(event(t * 100 + i + k) for k in range(3)))
                else:
                    mine += log.append(event(t * 100 + i))
            results.append(mine)
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(6)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    every = sorted(s for mine in results for s in mine)
    assert every == list(range(1, 6 * 30 + 1))  # 15 singles + 5 batches of 3 per thread
    report = log.verify()
    assert report.ok and report.events_checked == 180 and report.checkpoints_checked == 180 // 7


def _append_from_process(url: str, who: int, count: int, start: Any) -> list[int]:
    db = Database(url)
    log = AuditLog(db)
    start.wait()
    seqs = []
    for i in range(count):
        seqs += log.append(event(who * 1000 + i))
    log.close()
    db.dispose()
    return seqs


def test_processes_never_fork_the_chain(db: Database, db_url: str) -> None:
    """Two processes (each with its own engine) and this one append to the same database at once."""
    ctx = multiprocessing.get_context("spawn")
    with ctx.Manager() as manager:
        start = manager.Barrier(3)
        with ctx.Pool(2) as pool:
            pending = [pool.apply_async(_append_from_process, (db_url, who, 150, start)) for who in (1, 2)]
            here = AuditLog(db)
            start.wait()
            mine = [s for i in range(150) for s in here.append(event(i))]
            theirs = [p.get(timeout=120) for p in pending]
    assert sorted(mine + theirs[0] + theirs[1]) == list(range(1, 451))
    report = here.verify()
    assert report.ok and report.events_checked == 450
    with db.orm() as session:
        distinct = session.execute(select(func.count(func.distinct(AuditEventRow.data)))).scalar_one()
    assert distinct == 450  # every event of every writer is in the chain, none overwritten


# ---- export and query --------------------------------------------------------------------------


def test_export_is_jsonl_an_outside_tool_can_verify(db: Database) -> None:
    log = AuditLog(db)
    log.append(event(0, text="ünïcode ☎", nested={"z": [1, 2.5, None, True]}, quote='a"b\\c'))
    for i in range(1, 20):
        log.append(event(i, action="bundle.publish" if i % 2 else "auth.denied"))
    out = io.StringIO()
    assert log.export(out) == 20
    lines = out.getvalue().splitlines()
    prev = GENESIS_HASH
    for n, line in enumerate(lines, start=1):
        record = json.loads(line)
        assert record["seq"] == n and record["prev_hash"] == prev
        data_text = json.dumps(record["data"], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        assert recompute(prev, record, data_text) == record["hash"]
        prev = record["hash"]
    assert json.loads(lines[0])["data"]["nested"] == {"z": [1, 2.5, None, True]}

    ats = [json.loads(line)["at"] for line in lines]
    since, until = parse_at(ats[5]), parse_at(ats[15])
    window = io.StringIO()
    count = log.export(window, since=since, until=until)
    got = [json.loads(line) for line in window.getvalue().splitlines()]
    assert count == len(got) == sum(1 for a in ats if ats[5] <= a < ats[15]) > 0
    assert all(since <= parse_at(r["at"]) < until for r in got)
    # A naive datetime is read as UTC.
    naive = io.StringIO()
    assert log.export(naive, since=since.replace(tzinfo=None)) == sum(1 for a in ats if a >= ats[5])


def test_query_filters_and_pages_newest_first(db: Database) -> None:
    log = AuditLog(db)
    log.append(*(event(i, action="bundle.publish" if i % 3 == 0 else "auth.denied") for i in range(30)))
    log.append(AuditEvent("user:u9", "bundle_x.other", "r", "failed", "dev"))
    newest = log.query(limit=5)
    assert [r["seq"] for r in newest] == [31, 30, 29, 28, 27]
    page2 = log.query(limit=5, before_seq=27)
    assert [r["seq"] for r in page2] == [26, 25, 24, 23, 22]
    published = log.query(action="bundle.publish", limit=1000)
    assert len(published) == 10 and all(r["action"] == "bundle.publish" for r in published)
    assert {r["action"] for r in log.query(action="bundle.*", limit=1000)} == {"bundle.publish"}  # "_" is literal
    assert [r["seq"] for r in log.query(actor="user:u9")] == [31]
    assert [r["seq"] for r in log.query(environment="dev")] == [31]
    assert newest[0]["data"] == {} and page2[0]["data"] == {"i": 25}
    assert log.query(since=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)) == []
    with pytest.raises(AuditError, match="limit 0"):
        log.query(limit=0)


# ---- the async writer --------------------------------------------------------------------------


async def test_async_writer_batches_and_loses_nothing(db: Database) -> None:
    log = AuditLog(db, KeyPair.generate(), checkpoint_every=100)
    writer = log.writer(interval_s=0.002, max_batch=64)

    async def producer(p: int) -> None:
        for i in range(100):
            await writer.record(event(p * 1000 + i))
            if i % 10 == 0:
                await asyncio.sleep(0)

    await asyncio.gather(*(producer(p) for p in range(5)))
    await writer.flush()
    assert len(rows_of(db)) == 500
    await writer.record(event(9999))
    await writer.aclose()  # what is still queued is written before it stops
    rows = rows_of(db)
    assert [r.seq for r in rows] == list(range(1, 502))
    assert len({r.at for r in rows}) < 501  # batched: one transaction, one timestamp, many events
    assert log.verify().ok and writer.unwritten == ()
    with pytest.raises(AuditWriteError, match="closed"):
        await writer.record(event(1))


async def test_async_writer_raises_keeps_and_retries_a_failed_write(empty_db_url: str) -> None:
    database = Database(empty_db_url)  # not migrated yet: every append fails
    log = AuditLog(database)
    writer = log.writer(interval_s=0.001, retries=2, backoff_s=0.001)
    await writer.record(*(event(i) for i in range(10)))
    with pytest.raises(AuditWriteError, match="10 event"):
        await writer.flush()
    assert len(writer.unwritten) == 10  # kept, in order, not dropped
    database.migrate()
    await writer.flush()  # the next call tries again and now succeeds
    assert writer.unwritten == ()
    await writer.aclose()
    report = log.verify()
    assert report.ok and report.events_checked == 10
    assert [r["data"]["i"] for r in reversed(log.query())] == list(range(10))
    log.close()
    database.dispose()


def test_a_failed_append_writes_nothing_and_the_next_one_works(empty_db_url: str) -> None:
    database = Database(empty_db_url)
    log = AuditLog(database)
    with pytest.raises(AuditWriteError, match="audit append of 1 event.s. failed: .*audit_events"):
        log.append(event(1))
    database.migrate()
    assert log.append(event(2), event(3)) == [1, 2]
    assert log.verify().ok
    log.close()
    database.dispose()


def test_a_broken_writer_connection_is_replaced(db: Database, db_url: str) -> None:
    log = AuditLog(db)
    log.append(event(1))
    if db_url.startswith("sqlite"):
        log._conn.dbapi_connection.close()  # type: ignore[union-attr]
    else:
        # The server ends the writer's session, as a restart or an idle timeout would.
        pid = log._conn.dbapi_connection.info.backend_pid  # type: ignore[union-attr]
        with psycopg.connect(db_url.replace("postgresql+psycopg://", "postgresql://", 1), autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    assert log.append(event(2)) == [2]
    assert log.verify().events_checked == 2
    log.close()


# ---- the CLI -----------------------------------------------------------------------------------


@pytest.fixture()
def cli_env(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.chdir(tmp_path)  # no stray voxgate.toml
    monkeypatch.delenv("VOXGATE_CONFIG", raising=False)
    monkeypatch.setenv("VOXGATE_DATABASE_URL", db_url)
    monkeypatch.setenv("VOXGATE_DATA_DIR", str(tmp_path / "var"))
    return CliRunner()


def test_cli_verify_passes_then_names_the_bad_seq(db: Database, db_url: str, cli_env: CliRunner) -> None:
    log = AuditLog(db, KeyPair.generate(), checkpoint_every=4)
    log.append(*(event(i) for i in range(10)))
    ok = cli_env.invoke(audit_cli, ["verify"])
    assert ok.exit_code == 0, ok.output
    assert "audit chain OK: 10 event(s), 2 signed checkpoint(s)" in ok.stdout
    as_json = json.loads(cli_env.invoke(audit_cli, ["verify", "--json"]).stdout)
    assert as_json["ok"] is True and as_json["checkpoints_checked"] == 2

    tamper(db_url, """UPDATE audit_events SET outcome = 'denied' WHERE seq = 7""")
    bad = cli_env.invoke(audit_cli, ["verify"])
    assert bad.exit_code == 1
    assert "first bad sequence number: 7 (hash mismatch" in bad.stdout
    bad_json = cli_env.invoke(audit_cli, ["verify", "--json"])
    assert bad_json.exit_code == 1 and json.loads(bad_json.stdout)["first_bad_seq"] == 7


def test_cli_verify_uses_the_audit_keys_in_the_database(db: Database, db_url: str, cli_env: CliRunner) -> None:
    log = AuditLog(db, KeyPair.generate(), checkpoint_every=4)
    log.append(*(event(i) for i in range(5)))
    assert set(audit_public_keys(db)) == {log.signer.key_id}  # type: ignore[union-attr]
    tamper(db_url, "DELETE FROM signing_keys")
    out = cli_env.invoke(audit_cli, ["verify"])
    assert out.exit_code == 1 and "first bad sequence number: 4" in out.stdout
    assert "not a known audit key" in out.stdout


def test_cli_export_writes_jsonl_and_rejects_a_bad_since(db: Database, cli_env: CliRunner, tmp_path: Path) -> None:
    log = AuditLog(db)
    log.append(*(event(i) for i in range(8)))
    target = tmp_path / "audit.jsonl"
    done = cli_env.invoke(audit_cli, ["export", "--since", "2000-01-01", "--out", str(target)])
    assert done.exit_code == 0, done.output
    assert "8 event(s) exported" in done.stderr
    records = [json.loads(line) for line in target.read_text(encoding="utf-8").splitlines()]
    assert [r["seq"] for r in records] == list(range(1, 9))
    stdout = cli_env.invoke(audit_cli, ["export", "--since", "2000-01-01T00:00:00Z", "--until", "2000-01-02"])
    assert stdout.exit_code == 0 and stdout.stdout == ""

    bad = cli_env.invoke(audit_cli, ["export", "--since", "last tuesday"])
    assert bad.exit_code == 2
    assert "--since" in bad.output and "'last tuesday' is not an ISO-8601 date or time" in bad.output
    backwards = cli_env.invoke(audit_cli, ["export", "--since", "2026-02-01", "--until", "2026-01-01"])
    assert backwards.exit_code == 2 and "--until" in backwards.output


def test_cli_says_when_the_database_has_no_audit_tables(
    empty_db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("VOXGATE_CONFIG", raising=False)
    monkeypatch.setenv("VOXGATE_DATABASE_URL", empty_db_url)  # never migrated
    monkeypatch.setenv("VOXGATE_DATA_DIR", str(tmp_path / "var"))
    out = CliRunner().invoke(audit_cli, ["verify"])
    assert out.exit_code == 2 and "no audit tables" in out.output and "voxgate db upgrade" in out.output
    assert "Traceback" not in out.output
