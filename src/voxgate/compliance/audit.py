"""The tamper-evident audit log: an append-only sha256 hash chain with Ed25519-signed checkpoints.

Chain format (stable: an outside tool re-verifies an export with nothing but sha256)::

    canonical(event) = "\\n".join([str(seq), at, actor, action, resource, environment, outcome, data])
    hash(event)      = sha256_hex(utf8(prev_hash + "\\n" + canonical(event)))

- ``seq`` runs 1, 2, 3, … without gaps; the ``prev_hash`` of event 1 is 64 zeros (GENESIS_HASH).
- ``at`` is UTC as ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (fixed width, so text order is time order),
  stored as the exact text that was hashed; it never runs backwards along the chain.
- ``data`` is ``json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
  allow_nan=False)``, stored as the exact text that was hashed: verifying never re-serialises.
- No field may hold a line break or other control character (JSON escapes them inside ``data``),
  so the joined text splits back into exactly eight fields and two events never share a form.

Checkpoints: at every multiple of ``checkpoint_every`` (and on ``checkpoint()``) the server's
Ed25519 key signs ``f"{seq}:{hash}"``. Recomputing the hashes after an edit makes the chain
consistent again, but it no longer matches what the key signed.

Appends are serialised across threads and processes: a lock per AuditLog, then the database's
write lock (SQLite ``BEGIN IMMEDIATE``) or ``pg_advisory_xact_lock`` on PostgreSQL, taken before
the head is read; the primary key on ``seq`` turns any writer that skipped the lock into an
error instead of a fork. No method here updates or deletes an audit row.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import logging
import re
import threading
from collections.abc import Callable, Generator, Iterable, Mapping
from contextlib import closing
from dataclasses import dataclass, field
from types import MappingProxyType, TracebackType
from typing import Any, Literal, TextIO, TypeVar, get_args

import tenacity
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.pool import PoolProxiedConnection

from voxgate.errors import InvalidError, UnavailableError
from voxgate.signing import KeyPair, PublicKey, SigningError
from voxgate.store.db import Database
from voxgate.store.models import AuditEventRow, SigningKeyRow

log = logging.getLogger("voxgate.compliance.audit")

GENESIS_HASH = "0" * 64
Outcome = Literal["ok", "allowed", "denied", "failed"]
OUTCOMES: frozenset[str] = frozenset(get_args(Outcome))
AT_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
MAX_DATA_BYTES = 8192
# The advisory-lock key every voxgate process uses to take turns appending on one PostgreSQL database.
PG_LOCK_KEY = 0x766F7861756474  # "voxaudt"
_TEXT_LIMITS = {"actor": 100, "action": 60, "resource": 200, "environment": 40}  # the column widths
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_COLUMNS = "seq, at, actor, action, resource, environment, outcome, data, prev_hash, hash"
_FETCH = 20_000
_HEAD_SQL = "SELECT seq, hash, at FROM audit_events ORDER BY seq DESC LIMIT 1"
T = TypeVar("T")
_Statement = tuple[str, list[tuple[Any, ...]]]  # SQL and the parameter rows to run it with
# A write whose kept connection failed before anything was sent gets one more try on a fresh one.
WRITE_ATTEMPTS = 2
WRITER_BACKOFF_BASE = 4  # the batching writer waits backoff_s, 4·backoff_s, 16·backoff_s… between tries


class AuditError(InvalidError):
    """An audit event or request that cannot be accepted; the message names the field."""


class AuditWriteError(UnavailableError):
    """The database refused or lost an append; the transaction was rolled back (unless the
    connection broke during COMMIT itself, when the server alone knows; `verify` still holds)."""


class _NotStarted(UnavailableError):
    """Opening the write transaction on a kept connection failed: nothing was sent that could have
    written a row, and the connection may just have gone stale (server restart, idle timeout)."""


def canonical_data(data: Mapping[str, Any]) -> str:
    """The exact JSON text an event's data is hashed and stored as; AuditError if it has none."""
    if not isinstance(data, Mapping):
        raise AuditError(f"audit event data: must be a mapping of names to values, not {type(data).__name__}")
    for key in data:
        if not isinstance(key, str):
            raise AuditError(f"audit event data key {key!r}: keys must be text")
    try:
        text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError):
        raise AuditError(_unserialisable(data)) from None
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise AuditError("audit event data: holds text that is not valid Unicode (a lone surrogate)") from None
    if size > MAX_DATA_BYTES:
        raise AuditError(
            f"audit event data: {size} bytes of JSON, at most {MAX_DATA_BYTES}; record ids and hashes, not documents"
        )
    return text


def _unserialisable(data: Mapping[str, Any]) -> str:
    for key, value in data.items():
        try:
            json.dumps(value, sort_keys=True, allow_nan=False)
        except (TypeError, ValueError):
            return (
                f"audit event data[{key!r}]: a {type(value).__name__} value cannot be stored as JSON; "
                "use text, numbers (not NaN/inf), booleans, null, or lists and mappings of them"
            )
    return "audit event data: cannot be stored as JSON"


def chain_hash(
    prev_hash: str,
    seq: int,
    at: str,
    actor: str,
    action: str,
    resource: str,
    environment: str,
    outcome: str,
    data_json: str,
) -> str:
    """sha256 hex of prev_hash, a line break and the event's canonical form (see the module doc)."""
    text = f"{prev_hash}\n{seq}\n{at}\n{actor}\n{action}\n{resource}\n{environment}\n{outcome}\n{data_json}"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def at_text(when: dt.datetime) -> str:
    """A datetime as the chain writes it (UTC, fixed width); a naive datetime is taken as UTC."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.astimezone(dt.UTC).strftime(AT_FORMAT)


def parse_at(text: str) -> dt.datetime:
    return dt.datetime.strptime(text, AT_FORMAT).replace(tzinfo=dt.UTC)


@dataclass(frozen=True)
class AuditEvent:
    """What happened: who (an id, never a name), did what, to which resource, with what outcome.

    Validated when built, so a bad event fails where it is made, not inside a batch write.
    `data` becomes a read-only copy of exactly what is hashed; `data_json` is that text.
    """

    actor: str
    action: str
    resource: str
    outcome: Outcome = "ok"
    environment: str = ""
    data: Mapping[str, Any] = field(default_factory=dict, hash=False)
    data_json: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name, limit in _TEXT_LIMITS.items():
            value = getattr(self, name)
            if not isinstance(value, str):
                raise AuditError(f"audit event {name}: must be text, not {type(value).__name__}")
            if not value and name != "environment":
                raise AuditError(f"audit event {name}: must not be empty")
            if len(value) > limit:
                raise AuditError(f"audit event {name}: {len(value)} characters, at most {limit}")
            if _CONTROL.search(value):
                raise AuditError(f"audit event {name}: line breaks and other control characters are not allowed")
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise AuditError(f"audit event {name}: not valid Unicode text") from None
        if self.outcome not in OUTCOMES:
            raise AuditError(f"audit event outcome {self.outcome!r}: must be one of {', '.join(sorted(OUTCOMES))}")
        text = canonical_data(self.data)
        object.__setattr__(self, "data_json", text)
        object.__setattr__(self, "data", MappingProxyType(json.loads(text)))

    def __reduce__(self) -> tuple[Any, ...]:  # a mappingproxy does not pickle; rebuild from the fields
        return (AuditEvent, (self.actor, self.action, self.resource, self.outcome, self.environment, dict(self.data)))


class VerifyReport(BaseModel):
    """The result of recomputing the chain; on failure, the first sequence number that is wrong."""

    ok: bool
    events_checked: int
    first_bad_seq: int | None = None
    reason: str | None = None
    checkpoints_checked: int = 0
    last_seq: int = 0
    head_hash: str = GENESIS_HASH
    last_checkpoint_seq: int | None = None
    # Events after the last signed checkpoint: dropping them from the end cannot be detected.
    unsigned_tail: int = 0


@dataclass(frozen=True)
class _Checkpoint:
    seq: int
    hash: str
    key_id: str
    signature: str

    def problem(self, keys: Mapping[str, PublicKey]) -> str | None:
        key = keys.get(self.key_id)
        if key is None:
            return f"checkpoint at seq {self.seq} is signed by key {self.key_id}, which is not a known audit key"
        if not key.verify(self.signature, f"{self.seq}:{self.hash}".encode("ascii", "replace")):
            return (
                f"checkpoint at seq {self.seq}: the signature does not verify with key {self.key_id} "
                "(forged or altered)"
            )
        return None


def _check_chain(
    rows: Iterable[tuple[Any, ...]], checkpoints: Iterable[_Checkpoint], keys: Mapping[str, PublicKey]
) -> VerifyReport:
    """Recompute every hash of `rows` (in seq order, columns as _COLUMNS) and match the checkpoints."""
    by_seq = {cp.seq: cp for cp in checkpoints}
    sha = hashlib.sha256
    expected = 1
    prev = GENESIS_HASH
    good_cps = 0
    last_cp = 0

    def bad(seq: int, reason: str) -> VerifyReport:
        return VerifyReport(
            ok=False,
            events_checked=seq - 1,
            first_bad_seq=seq,
            reason=reason,
            checkpoints_checked=good_cps,
            last_seq=expected - 1,
            head_hash=prev,
            last_checkpoint_seq=last_cp or None,
        )

    for seq, at, actor, action, resource, environment, outcome, data, prev_hash, stored in rows:
        if seq != expected:
            if seq > expected:
                gap = f"event {expected} is" if seq == expected + 1 else f"events {expected}..{seq - 1} are"
                return bad(expected, f"{gap} missing (deleted)")
            return bad(seq, f"event {seq} appears twice or out of order")
        if prev_hash != prev:
            return bad(seq, f"prev_hash does not match the hash of event {seq - 1}: rows were reordered or replaced")
        text = f"{prev}\n{seq}\n{at}\n{actor}\n{action}\n{resource}\n{environment}\n{outcome}\n{data}"
        if sha(text.encode("utf-8", "surrogatepass")).hexdigest() != stored:
            return bad(seq, "hash mismatch: the event's content was altered")
        if text.count("\n") != 8:
            return bad(seq, "a field holds a line break, which no appended event can have")
        cp = by_seq.get(seq)
        if cp is not None:
            problem = cp.problem(keys)
            if problem:
                return bad(seq, problem)
            if cp.hash != stored:
                first = last_cp + 1
                return bad(
                    first,
                    f"the signed checkpoint at seq {seq} does not match the chain: events {first}..{seq} "
                    "were rewritten and their hashes recomputed",
                )
            good_cps += 1
            last_cp = seq
        prev = stored
        expected += 1
    last_seq = expected - 1
    beyond = sorted(s for s in by_seq if s > last_seq)
    if beyond:
        cp = by_seq[beyond[0]]
        problem = cp.problem(keys)
        if problem:
            return bad(cp.seq, problem)
        return bad(
            last_seq + 1,
            f"events {last_seq + 1}..{cp.seq} are missing: the chain ends at {last_seq} "
            f"but a signed checkpoint covers seq {cp.seq} (truncated)",
        )
    return VerifyReport(
        ok=True,
        events_checked=last_seq,
        checkpoints_checked=good_cps,
        last_seq=last_seq,
        head_hash=prev,
        last_checkpoint_seq=last_cp or None,
        unsigned_tail=last_seq - last_cp,
    )


def audit_public_keys(db: Database) -> dict[str, PublicKey]:
    """Every audit key in `signing_keys` (revoked ones too: they still vouch for what they signed)."""
    keys: dict[str, PublicKey] = {}
    with db.orm() as session:
        rows = session.execute(select(SigningKeyRow).where(SigningKeyRow.purpose == "audit")).scalars().all()
        for row in rows:
            try:
                key = PublicKey.from_b64(row.public_key)
            except (SigningError, ValueError):
                raise AuditError(f"signing_keys row {row.key_id}: not a base64 Ed25519 public key") from None
            keys[key.key_id] = key  # indexed by the id the key itself yields, not the row's claim
    return keys


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


class AuditLog:
    """Append events to the chain, checkpoint it, verify, export and query it."""

    def __init__(self, db: Database, signer: KeyPair | None = None, checkpoint_every: int = 1000):
        if checkpoint_every < 1:
            raise AuditError("checkpoint_every must be at least 1")
        dialect = db.engine.dialect.name
        if dialect not in ("sqlite", "postgresql"):
            raise AuditError(f"the audit log runs on SQLite or PostgreSQL, not {dialect}")
        self.db = db
        self.signer = signer
        self.checkpoint_every = checkpoint_every
        self._sqlite = dialect == "sqlite"
        ph = "?" if self._sqlite else "%s"
        self._ph = ph
        self._insert_event = f"INSERT INTO audit_events ({_COLUMNS}) VALUES ({', '.join([ph] * 10)})"
        self._insert_checkpoint = (
            f"INSERT INTO audit_checkpoints (seq, hash, at, key_id, signature) VALUES ({ph}, {ph}, {ph}, {ph}, {ph})"
        )
        self._lock = threading.Lock()
        self._conn: PoolProxiedConnection | None = None  # the writer's own connection, outside the pool
        self._key_registered = False

    # ---- writing -----------------------------------------------------------------------------

    def append(self, *events: AuditEvent) -> list[int]:
        """Write `events` in one transaction, in order; returns their sequence numbers."""
        for event in events:
            if not isinstance(event, AuditEvent):
                raise TypeError(f"AuditLog.append takes AuditEvent objects, not {type(event).__name__}")
        if not events:
            return []
        return self._write(lambda head: self._append_rows(head, events), f"append of {len(events)} event(s)")

    def checkpoint(self) -> int | None:
        """Sign the current head now; returns its seq (None without a signer or events)."""
        if self.signer is None:
            return None
        return self._write(self._checkpoint_head, "checkpoint")

    def head(self) -> tuple[int, str]:
        """(seq, hash) of the newest event; (0, GENESIS_HASH) for an empty chain."""
        conn = self.db.engine.raw_connection()
        try:
            cur = conn.cursor()
            cur.execute(_HEAD_SQL)
            row = cur.fetchone()
            cur.close()
        finally:
            conn.close()
        return (int(row[0]), str(row[1])) if row else (0, GENESIS_HASH)

    def close(self) -> None:
        """Close the writer's own connection (the next append opens another)."""
        with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None:
                conn.close()

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def writer(self, **options: Any) -> AsyncAuditWriter:
        """An asyncio batching writer over this log (see AsyncAuditWriter for the options)."""
        return AsyncAuditWriter(self, **options)

    def _write(self, work: Callable[[Any], tuple[T, list[_Statement]]], what: str) -> T:
        """Lock, read the head, let `work` build the inserts from it, write them, commit."""
        try:
            if self.signer is not None and not self._key_registered:
                self._register_key()
            with self._lock:
                for attempt in tenacity.Retrying(
                    stop=tenacity.stop_after_attempt(WRITE_ATTEMPTS),
                    retry=tenacity.retry_if_exception_type(_NotStarted),
                    reraise=True,
                ):
                    with attempt:
                        return self._write_once(work)
                raise AssertionError("unreachable: tenacity re-raises the last failure")
        except AuditError:
            raise
        except Exception as exc:
            raise AuditWriteError(f"audit {what} failed: {_first_line(exc)}") from exc

    def _write_once(self, work: Callable[[Any], tuple[T, list[_Statement]]]) -> T:
        """One try of `_write` (the lock held); _NotStarted only when a kept connection failed to begin."""
        reused = self._conn is not None
        conn = self._connection()
        try:
            if self._sqlite:
                return self._write_sqlite(conn, work)
            return self._write_pg(conn, work)
        except BaseException as exc:
            # A connection in an unknown state is not worth saving: drop it.
            self._conn = None
            try:
                conn.close()
            except Exception:  # it is already broken; the original error is what matters
                pass
            if isinstance(exc, _NotStarted) and not reused:
                # a fresh connection that cannot begin is not stale: the cause is the error
                raise exc.__cause__ from None  # type: ignore[misc]
            raise

    def _connection(self) -> PoolProxiedConnection:
        if self._conn is None:
            conn = self.db.engine.raw_connection()
            # Detached: never handed back to the pool (and so never to another user) in the
            # autocommit mode set below; closing it really closes it.
            conn.detach()
            if not self._sqlite:
                # BEGIN, COMMIT and their batching are ours (see _write_pg).
                conn.dbapi_connection.autocommit = True  # type: ignore[union-attr]
            self._conn = conn
        return self._conn

    @staticmethod
    def _write_sqlite(conn: PoolProxiedConnection, work: Callable[[Any], tuple[T, list[_Statement]]]) -> T:
        try:
            cur = conn.cursor()
            # The write lock is taken before the head is read: two writers never see the same head.
            cur.execute("BEGIN IMMEDIATE")
            cur.execute(_HEAD_SQL)
            head = cur.fetchone()
        except Exception as exc:
            raise _NotStarted(_first_line(exc)) from exc
        try:
            result, statements = work(head)
            for sql, rows in statements:
                cur.executemany(sql, rows)
            conn.commit()
            return result
        finally:
            cur.close()

    @staticmethod
    def _write_pg(conn: PoolProxiedConnection, work: Callable[[Any], tuple[T, list[_Statement]]]) -> T:
        pg = conn.dbapi_connection
        try:
            cur = pg.cursor()  # type: ignore[union-attr]
            # Two round trips, not five. The head is read by a statement of its own that starts
            # after the lock is held: at READ COMMITTED each statement takes a fresh snapshot,
            # so it sees the previous writer's commit (one statement would keep its old snapshot).
            cur.execute(f"BEGIN; SELECT pg_advisory_xact_lock({PG_LOCK_KEY}); {_HEAD_SQL}")
            cur.nextset()
            cur.nextset()
            head = cur.fetchone()
        except Exception as exc:
            raise _NotStarted(_first_line(exc)) from exc
        try:
            result, statements = work(head)
            with pg.pipeline():  # type: ignore[union-attr]
                for sql, rows in statements:
                    cur.executemany(sql, rows)
                cur.execute("COMMIT")
            return result
        finally:
            cur.close()

    def _append_rows(self, head: Any, events: tuple[AuditEvent, ...]) -> tuple[list[int], list[_Statement]]:
        seq, prev, head_at = (int(head[0]), str(head[1]), str(head[2])) if head else (0, GENESIS_HASH, "")
        now = at_text(dt.datetime.now(dt.UTC))
        at = now if now > head_at else head_at  # time never runs backwards along the chain
        every = self.checkpoint_every
        rows = []
        checkpoints = []
        for e in events:
            seq += 1
            digest = chain_hash(prev, seq, at, e.actor, e.action, e.resource, e.environment, e.outcome, e.data_json)
            rows.append((seq, at, e.actor, e.action, e.resource, e.environment, e.outcome, e.data_json, prev, digest))
            prev = digest
            if self.signer is not None and seq % every == 0:
                checkpoints.append(self._signed(seq, digest, at))
        statements: list[_Statement] = [(self._insert_event, rows)]
        if checkpoints:
            statements.append((self._insert_checkpoint, checkpoints))
        return [row[0] for row in rows], statements

    def _checkpoint_head(self, head: Any) -> tuple[int | None, list[_Statement]]:
        if not head:
            return None, []
        seq, digest, at = int(head[0]), str(head[1]), str(head[2])
        # ON CONFLICT: the head may be signed already (a multiple of checkpoint_every, or twice asked).
        return seq, [(self._insert_checkpoint + " ON CONFLICT (seq) DO NOTHING", [self._signed(seq, digest, at)])]

    def _signed(self, seq: int, digest: str, at: str) -> tuple[int, str, str, str, str]:
        assert self.signer is not None
        return (seq, digest, at, self.signer.key_id, self.signer.sign(f"{seq}:{digest}".encode("ascii")))

    def _register_key(self) -> None:
        """Record the signer's public half (purpose "audit") so `voxgate audit verify` can find it."""
        assert self.signer is not None
        public = self.signer.public
        with self.db.orm() as session:
            row = session.get(SigningKeyRow, public.key_id)
            if row is None:
                session.add(SigningKeyRow(key_id=public.key_id, purpose="audit", public_key=public.b64))
                try:
                    session.commit()
                except IntegrityError:  # another process registered it first
                    session.rollback()
            elif row.purpose != "audit":
                raise AuditError(
                    f"signing key {public.key_id} is registered for {row.purpose!r}; audit needs its own key"
                )
        self._key_registered = True

    # ---- reading -----------------------------------------------------------------------------

    def verify(self, public_keys: Mapping[str, PublicKey] | None = None) -> VerifyReport:
        """Recompute the whole chain; `public_keys` defaults to the audit keys in `signing_keys`."""
        if public_keys is None:
            keys = audit_public_keys(self.db)
            if self.signer is not None:
                keys[self.signer.key_id] = self.signer.public
        else:
            keys = dict(public_keys)
        conn = self.db.engine.raw_connection()
        try:
            # Checkpoints first: each is written with its event, so every one read now has its
            # event in the (later) scan, and an append in between cannot look like truncation.
            cur = conn.cursor()
            cur.execute("SELECT seq, hash, key_id, signature FROM audit_checkpoints ORDER BY seq")
            checkpoints = [_Checkpoint(int(r[0]), str(r[1]), str(r[2]), str(r[3])) for r in cur.fetchall()]
            cur.close()
            # closing(): the cursor must be gone before the connection goes back to the pool,
            # also when the check stops early at a bad row.
            with closing(self._scan(conn, f"SELECT {_COLUMNS} FROM audit_events ORDER BY seq", ())) as rows:
                return _check_chain(rows, checkpoints, keys)
        finally:
            conn.close()

    def export(self, out: TextIO, since: dt.datetime | None = None, until: dt.datetime | None = None) -> int:
        """Write events with since <= at < until as JSON lines (with seq, prev_hash, hash); returns the count."""
        where, params = [], []
        if since is not None:
            where.append(f"at >= {self._ph}")
            params.append(at_text(since))
        if until is not None:
            where.append(f"at < {self._ph}")
            params.append(at_text(until))
        sql = f"SELECT {_COLUMNS} FROM audit_events"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY seq"
        count = 0
        conn = self.db.engine.raw_connection()
        try:
            with closing(self._scan(conn, sql, tuple(params))) as rows:
                for seq, at, actor, action, resource, environment, outcome, data, prev_hash, digest in rows:
                    try:
                        data_value = json.loads(data)
                    except ValueError:
                        raise AuditError(f"event {seq}: data is not JSON, the row was altered (run verify)") from None
                    record = {
                        "seq": seq,
                        "at": at,
                        "actor": actor,
                        "action": action,
                        "resource": resource,
                        "environment": environment,
                        "outcome": outcome,
                        "data": data_value,
                        "prev_hash": prev_hash,
                        "hash": digest,
                    }
                    out.write(json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n")
                    count += 1
        finally:
            conn.close()
        return count

    def query(
        self,
        action: str | None = None,
        actor: str | None = None,
        environment: str | None = None,
        since: dt.datetime | None = None,
        limit: int = 100,
        before_seq: int | None = None,
    ) -> list[dict[str, Any]]:
        """Newest first. `action` may end in "*" for a prefix ("bundle.*"); page on with before_seq."""
        if not 1 <= limit <= 1000:
            raise AuditError(f"limit {limit}: must be between 1 and 1000")
        table = AuditEventRow.__table__
        stmt = select(table).order_by(table.c.seq.desc()).limit(limit)
        if action is not None:
            if action.endswith("*"):
                stmt = stmt.where(table.c.action.startswith(action[:-1], autoescape=True))
            else:
                stmt = stmt.where(table.c.action == action)
        if actor is not None:
            stmt = stmt.where(table.c.actor == actor)
        if environment is not None:
            stmt = stmt.where(table.c.environment == environment)
        if since is not None:
            stmt = stmt.where(table.c.at >= at_text(since))
        if before_seq is not None:
            stmt = stmt.where(table.c.seq < before_seq)
        with self.db.engine.connect() as conn:
            rows = conn.execute(stmt).mappings().all()
        return [{**row, "data": json.loads(row["data"])} for row in rows]

    def _scan(
        self, conn: PoolProxiedConnection, sql: str, params: tuple[Any, ...]
    ) -> Generator[tuple[Any, ...], None, None]:
        """Rows of `sql` in batches, without holding the whole table in memory."""
        if self._sqlite:
            cur = conn.cursor()
        else:
            # A server-side cursor: PostgreSQL would otherwise send every row at once.
            cur = conn.dbapi_connection.cursor(name="voxgate_audit_scan")  # type: ignore[union-attr]
        try:
            cur.execute(sql, params)
            while True:
                batch = cur.fetchmany(_FETCH)
                if not batch:
                    return
                yield from batch
        finally:
            cur.close()


class AsyncAuditWriter:
    """Queue events from asyncio code and append them in batches from a worker thread.

    `record()` returns at once (it waits only when `max_pending` events are queued). Every
    `interval_s` the background task appends what is queued, up to `max_batch` per transaction.
    A failed append is retried `retries` times; if it still fails the events stay queued, in
    order, the error is logged and raised by the next `flush()`/`aclose()`, and the next call
    tries again. Nothing is dropped: what could not be written is in `unwritten`.
    """

    def __init__(
        self,
        log: AuditLog,
        *,
        interval_s: float = 0.005,
        max_batch: int = 2000,
        max_pending: int = 100_000,
        retries: int = 3,
        backoff_s: float = 0.02,
    ):
        self.log = log
        self.interval_s = interval_s
        self.max_batch = max_batch
        self.max_pending = max_pending
        self.retries = retries
        self.backoff_s = backoff_s
        self._pending: list[AuditEvent] = []
        self._queued = 0  # events ever queued
        self._written = 0  # events ever committed
        self._error: BaseException | None = None
        self._closed = False
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._progress: asyncio.Condition | None = None

    @property
    def unwritten(self) -> tuple[AuditEvent, ...]:
        """Events queued and not yet committed (after a failed `aclose()`: the ones to keep)."""
        return tuple(self._pending)

    async def record(self, *events: AuditEvent) -> None:
        """Queue `events` for the next batch; they are committed by the time `flush()` returns."""
        for event in events:
            if not isinstance(event, AuditEvent):
                raise TypeError(f"record takes AuditEvent objects, not {type(event).__name__}")
        if self._closed:
            raise AuditWriteError("the audit writer is closed")
        self._start()
        assert self._progress is not None
        if len(self._pending) >= self.max_pending:
            async with self._progress:
                await self._progress.wait_for(lambda: len(self._pending) < self.max_pending or self._error is not None)
        self._pending.extend(events)
        self._queued += len(events)
        assert self._wake is not None
        self._wake.set()

    async def flush(self) -> None:
        """Wait until everything recorded before this call is committed; raise if it cannot be."""
        target = self._queued
        self._start()
        assert self._progress is not None and self._wake is not None
        self._wake.set()
        async with self._progress:
            await self._progress.wait_for(lambda: self._written >= target or self._error is not None)
        self._raise_error()

    async def aclose(self) -> None:
        """Write everything still queued, then stop; raise (keeping `unwritten`) if that fails."""
        if self._closed:
            return
        try:
            await self.flush()
        finally:
            self._closed = True
            if self._task is not None:
                self._task.cancel()
                try:
                    await self._task
                except asyncio.CancelledError:
                    pass
                self._task = None

    async def __aenter__(self) -> AsyncAuditWriter:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def _raise_error(self) -> None:
        if self._error is not None:
            error = self._error
            raise AuditWriteError(f"audit writer: {len(self._pending)} event(s) not written yet ({error})") from error

    def _start(self) -> None:
        if self._wake is None:
            self._wake = asyncio.Event()
            self._progress = asyncio.Condition()
        if self._task is None or self._task.done():
            # A worker that stopped on an error is replaced: the queued events are tried again,
            # and the error is raised only if they fail again.
            self._error = None
            self._task = asyncio.get_running_loop().create_task(self._run(), name="voxgate-audit-writer")

    async def _run(self) -> None:
        assert self._wake is not None and self._progress is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            await asyncio.sleep(self.interval_s)  # let a burst gather into one transaction
            while self._pending:
                batch = self._pending[: self.max_batch]
                try:
                    await self._append_with_retries(batch)
                except Exception as exc:
                    log.error("audit writer: append failed, %d event(s) kept queued: %s", len(self._pending), exc)
                    async with self._progress:
                        self._error = exc
                        self._progress.notify_all()
                    return
                del self._pending[: len(batch)]
                async with self._progress:
                    self._written += len(batch)
                    self._progress.notify_all()

    async def _append_with_retries(self, batch: list[AuditEvent]) -> None:
        retrying = tenacity.AsyncRetrying(
            stop=tenacity.stop_after_attempt(self.retries + 1),
            wait=tenacity.wait_exponential(multiplier=self.backoff_s, exp_base=WRITER_BACKOFF_BASE),
            retry=tenacity.retry_if_exception_type(AuditWriteError),
            reraise=True,
        )
        await retrying(asyncio.to_thread, self.log.append, *batch)
