"""Retention purge: delete what each environment's policy says has expired, per data class, audited.

Data classes and their tables (days from ``environments.yaml``: ``settings.retention.<class>``,
falling back to ``settings.retention_days``):

- ``transcripts``: ``turns`` and ``voice_turns``;
- ``context_packets``: ``handoffs``;
- ``recordings``: ``recordings`` (encrypted call audio); a caller key no recording uses any more is
  deleted with the last of them;
- ``sessions``: ``sessions`` and every other row recorded under an expired session;
- ``security_events``: by their own ``created_at`` and ``environment``.

Session-bound data expires by the session's ``started_at`` in the session's environment; a
class kept longer than ``sessions`` still goes with its session. ``analytics`` is accepted in
the configuration for the aggregates to come. The audit chain is never purged here. Sessions
(and rows) under an active legal hold are skipped. A run that deletes writes one audit event
(``retention.purge``) with the counts; a dry run counts the same rows and deletes nothing.
Sessions of environments the configuration does not know are left alone and reported.

The server's `retention_loop` purges on one worker of a cluster at a time: it runs only while its
worker holds the retention lease (`voxgate.cluster.lease`; one process alone always does), and the
holder's fencing token is in the audit event of each purge it makes.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import logging
from typing import Any, Literal, get_args

from pydantic import BaseModel
from sqlalchemy import Connection, MetaData, Table, and_, delete, func, select

from voxgate.cluster.lease import RENEW_S, Lease, LocalLease, while_held
from voxgate.compliance.audit import AuditEvent, AuditLog
from voxgate.compliance.privacy import SKIPPED_TABLES, held
from voxgate.compliance.recording import drop_unused_keys
from voxgate.governance.environments import EnvironmentConfig, GovernanceConfig
from voxgate.store.db import Database
from voxgate.store.schema import reflect

log = logging.getLogger("voxgate.compliance.retention")

DataClass = Literal["transcripts", "context_packets", "recordings", "sessions", "security_events", "analytics"]
DATA_CLASSES: tuple[DataClass, ...] = get_args(DataClass)
# session-bound classes, purged in this order (dependents before their sessions)
SESSION_CLASSES: dict[str, tuple[str, ...]] = {
    "transcripts": ("turns", "voice_turns"),
    "context_packets": ("handoffs",),
    "recordings": ("recordings",),
}


class PurgeReport(BaseModel):
    """Rows deleted (or, on a dry run, that would be) per environment and data class, and per table."""

    ran_at: dt.datetime
    dry_run: bool
    counts: dict[str, dict[str, int]]
    tables: dict[str, int]
    cutoffs: dict[str, dict[str, dt.datetime]]
    held_sessions: int
    unknown_environments: dict[str, int]
    audit_seq: int | None = None

    @property
    def total(self) -> int:
        return sum(self.tables.values())


def retention_days(env: EnvironmentConfig, data_class: DataClass) -> int:
    """Days `data_class` is kept in `env`: its own setting, else the environment's retention_days."""
    if data_class not in DATA_CLASSES:
        raise ValueError(f"unknown data class '{data_class}' (known: {', '.join(DATA_CLASSES)})")
    own = getattr(env.settings.retention, data_class)
    return int(own if own is not None else env.settings.retention_days)


def purge(
    db: Database,
    config: GovernanceConfig,
    now: dt.datetime | None = None,
    *,
    audit: AuditLog | None = None,
    dry_run: bool = False,
    salt: bytes | None = None,
    lease: int | None = None,
) -> PurgeReport:
    """Delete every expired row of every environment in `config` (as of `now`), except held ones.
    `salt` (the installation's privacy salt) lets a hold also keep rows that name its subject by
    the keyed reference workers write into events; without it only unkeyed mentions are kept.
    `lease`: the fencing token of the retention lease the purging worker holds (audited)."""
    now = _utc(now or dt.datetime.now(dt.UTC))
    held_sessions, held_rows = held(db, salt)
    counts: dict[str, dict[str, int]] = {}
    tables: dict[str, int] = {}
    cutoffs: dict[str, dict[str, dt.datetime]] = {}
    with db.engine.begin() as conn:
        meta = reflect(conn)
        sessions = meta.tables["sessions"]
        known = list(config.environments)
        unknown = {
            env: n
            for env, n in conn.execute(
                select(sessions.c.environment, func.count())
                .where(sessions.c.environment.notin_(known))
                .group_by(sessions.c.environment)
            )
        }
        for name, env in config.environments.items():
            cut: dict[str, dt.datetime] = {c: now - dt.timedelta(days=retention_days(env, c)) for c in DATA_CLASSES}
            cutoffs[name] = cut
            per_class = counts.setdefault(name, {})
            for data_class, names in SESSION_CLASSES.items():
                # a dependent goes when its own class expires or when its session does
                expiry = max(cut[data_class], cut["sessions"])
                for table in (meta.tables[n] for n in names if n in meta.tables):
                    if "session_id" not in table.c:
                        continue
                    n = _apply(
                        conn, table, table.c.session_id.in_(_expired(sessions, name, expiry, held_sessions)), dry_run
                    )
                    per_class[data_class] = per_class.get(data_class, 0) + n
                    tables[table.name] = tables.get(table.name, 0) + n
            expired = _expired(sessions, name, cut["sessions"], held_sessions)
            for table in _other_session_tables(meta):
                n = _apply(conn, table, table.c.session_id.in_(expired), dry_run)
                tables[table.name] = tables.get(table.name, 0) + n
            n = _apply(conn, sessions, sessions.c.id.in_(expired), dry_run)
            per_class["sessions"] = n
            tables["sessions"] = tables.get("sessions", 0) + n
            events = meta.tables.get("security_events")
            if events is not None:
                held_ids = [int(i) for t, i in held_rows if t == "security_events"]
                where = and_(
                    events.c.environment == name,
                    events.c.created_at < cut["security_events"],
                    events.c.id.notin_(held_ids),
                    events.c.session_id.is_(None) | events.c.session_id.notin_(sorted(held_sessions)),
                )
                n = _apply(conn, events, where, dry_run)
                per_class["security_events"] = n
                tables["security_events"] = tables.get("security_events", 0) + n
        if not dry_run and "recording_keys" in meta.tables:
            n = drop_unused_keys(conn)  # keys of callers whose last recording expired
            if n:
                tables["recording_keys"] = n
        if dry_run:
            conn.rollback()
    report = PurgeReport(
        ran_at=now,
        dry_run=dry_run,
        counts=counts,
        tables=tables,
        cutoffs=cutoffs,
        held_sessions=len(held_sessions),
        unknown_environments=unknown,
    )
    if not dry_run:
        report.audit_seq = _audit(db, audit, report, lease)
    log.info(
        "retention purge%s: %d rows (%s)",
        " (dry run)" if dry_run else "",
        report.total,
        ", ".join(f"{t}={n}" for t, n in sorted(tables.items()) if n) or "nothing expired",
    )
    return report


def _utc(when: dt.datetime) -> dt.datetime:
    if when.tzinfo is None:
        return when.replace(tzinfo=dt.UTC)
    return when.astimezone(dt.UTC)


def _expired(sessions: Table, env: str, before: dt.datetime, held_sessions: set[str]) -> Any:
    query = select(sessions.c.id).where(sessions.c.environment == env, sessions.c.started_at < before)
    if held_sessions:
        query = query.where(sessions.c.id.notin_(sorted(held_sessions)))
    return query


def _other_session_tables(meta: MetaData) -> list[Table]:
    """Tables that record something under a session and belong to no other class: go with the session."""
    classed = {n for names in SESSION_CLASSES.values() for n in names} | {"sessions", "security_events"}
    return [
        t
        for name, t in sorted(meta.tables.items())
        if name not in classed and name not in SKIPPED_TABLES and "session_id" in t.c
    ]


def _apply(conn: Connection, table: Table, where: Any, dry_run: bool) -> int:
    if dry_run:
        return int(conn.execute(select(func.count()).select_from(table).where(where)).scalar_one())
    return int(conn.execute(delete(table).where(where)).rowcount or 0)


def _audit(db: Database, audit: AuditLog | None, report: PurgeReport, lease: int | None = None) -> int:
    log_ = audit if audit is not None else AuditLog(db)
    counts = {env: {c: n for c, n in per.items() if n} for env, per in report.counts.items()}
    data: dict[str, Any] = {
        "counts": counts,
        "tables": report.tables,
        "held_sessions": report.held_sessions,
        "as_of": report.ran_at.isoformat(),
    }
    if lease is not None:
        data["lease"] = lease
    event = AuditEvent(actor="system", action="retention.purge", resource="retention:run", data=data)
    return log_.append(event)[0]


async def retention_loop(
    db: Database,
    config: GovernanceConfig,
    audit: AuditLog,
    every_s: float,
    salt: bytes | None = None,
    *,
    lease: Lease | None = None,
    renew_s: float = RENEW_S,
    first_after_s: float = 0.0,
) -> None:
    """Purge `first_after_s` seconds from now and then every `every_s` seconds until cancelled, while
    this worker holds `lease` (one process alone: always; renewed every `renew_s`); a failed run is
    logged, not fatal. A worker that takes the lease over later purges at once."""
    if every_s <= 0:
        raise ValueError(f"every_s must be positive, not {every_s}")
    await asyncio.sleep(first_after_s)

    async def purging(token: int) -> None:
        while True:
            try:
                await asyncio.to_thread(functools.partial(purge, db, config, None, audit=audit, salt=salt, lease=token))
            except Exception:  # the server keeps running; the next run tries again
                log.exception("retention purge failed")
            await asyncio.sleep(every_s)

    await while_held(lease or LocalLease("retention"), purging, renew_s=renew_s)
