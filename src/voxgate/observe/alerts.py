"""Thresholds and alerts as code, and the incidents they open.

The rules are an environment's `settings.alerts` in environments.yaml, plus `DEFAULT_RULES` that
every environment has unless a rule of its own takes the same name (to change a threshold or a
severity). `evaluate` computes each rule's metric over its sliding window per agent from stored
sessions and security events; a rule that fires opens an
incident (or updates the open one for the same rule and agent) and is delivered to the
environment's webhooks with retries. Incidents move open → acknowledged → mitigated → resolved,
each step with who, when and a note on the timeline; every step is an audit event.

In a cluster one worker evaluates at a time: `alert_loop` runs only while its worker holds the
alerts lease (`voxgate.cluster.lease`), and the holder's fencing token goes into what it writes.
The database keeps the promise even if two evaluate at once (a lease that lapsed under a slow
holder): at most one incident per environment, agent and rule is unresolved (a unique index), so
of two evaluators opening one for the same breach one opens it and the other updates it, and only
the one that opened it delivers it to the webhooks.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from voxgate.clock import utcnow
from voxgate.cluster.lease import RENEW_S, Lease, LocalLease, while_held
from voxgate.compliance.audit import AuditEvent, AuditLog
from voxgate.errors import ConflictError, NotFoundError, UnavailableError, VoxgateError
from voxgate.governance.environments import AlertRule, EnvironmentConfig
from voxgate.governance.secrets import SecretError, resolve_secret
from voxgate.observe.analytics import Kpis, kpis_since, parse_duration
from voxgate.retry import WEBHOOK_DELIVERY
from voxgate.store.db import Database
from voxgate.store.incident_models import IncidentRow
from voxgate.store.models import AuditEventRow, SecurityEventRow, SessionRow
from voxgate.tls import client_context

log = logging.getLogger("voxgate.alerts")
WEBHOOK_TIMEOUT_S = 5.0  # one delivery attempt
HTTP_NOT_SUCCESS = 300  # a webhook answer from here on is a refusal (retried)
SECRET_SCHEMES = ("env:", "file:", "vault:")  # a webhook given as a secret reference, not a URL
TRANSITIONS = {
    "acknowledged": {"open"},
    "mitigated": {"open", "acknowledged"},
    "resolved": {"open", "acknowledged", "mitigated"},
}

#: rules on security events: a metric counted from `security_events` of this kind
EVENT_METRICS = {"verification_locked": "verification_locked"}
#: every environment's rules unless its own list has one of the same name: an account locked
#: after repeated failed verifications is someone guessing PINs, never normal traffic
DEFAULT_RULES: tuple[AlertRule, ...] = (
    AlertRule(
        name="verification-locked",
        metric="verification_locked",
        above=0,
        window="15m",
        min_sessions=0,
        severity="critical",
    ),
)


def rules_for(env: EnvironmentConfig) -> list[AlertRule]:
    """The rules evaluated in `env`: its own, then the defaults it does not replace by name."""
    own = {rule.name for rule in env.settings.alerts}
    return [*env.settings.alerts, *(rule for rule in DEFAULT_RULES if rule.name not in own)]


class IncidentError(VoxgateError):
    """An incident change that cannot be made (unknown id or status, a step out of order)."""


class IncidentNotFoundError(IncidentError, NotFoundError):
    """No incident with that id, or no such status to move one to."""


class IncidentConflictError(IncidentError, ConflictError):
    """The incident's current status does not allow that step."""


@dataclass(frozen=True)
class Firing:
    rule: AlertRule
    environment: str
    agent: str
    value: float
    sessions: int
    session_ids: tuple[str, ...]

    @property
    def threshold(self) -> float:
        return self.rule.above if self.rule.above is not None else self.rule.below  # type: ignore[return-value]

    def summary(self) -> str:
        direction = "above" if self.rule.above is not None else "below"
        return (
            f"{self.rule.metric} {self.value:g} is {direction} {self.threshold:g} for {self.agent} in "
            f"{self.environment} over {self.rule.window} ({self.sessions} sessions)"
        )


def _events(db: Database, kind: str, env: str, agent: str, since: dt.datetime) -> list[str | None]:
    """The session ids of security events of `kind` for `agent` since `since` (one per event)."""
    with db.orm() as orm:
        return list(
            orm.scalars(
                select(SecurityEventRow.session_id).where(
                    SecurityEventRow.kind == kind,
                    SecurityEventRow.environment == env,
                    SecurityEventRow.agent == agent,
                    SecurityEventRow.created_at >= since,
                )
            )
        )


def _metric(
    db: Database, rule: AlertRule, env: str, agent: str, since: dt.datetime, row: Kpis | None
) -> tuple[float | None, int]:
    """The rule's value and the number of sessions it is over; `row`: the agent's KPIs since `since`
    (None for the event metrics, which are counted from security events)."""
    if rule.metric in EVENT_METRICS:
        events = _events(db, EVENT_METRICS[rule.metric], env, agent, since)
        return float(len(events)), len(set(events))
    assert row is not None  # nosec B101: evaluate() reads the KPIs of every rule that is not an event count
    if rule.metric == "voice_p95_ms":
        return row.voice_to_voice_ms.get("p95"), row.sessions
    if rule.metric == "sessions":
        return float(row.sessions), row.sessions
    if rule.metric == "connector_failure_rate":
        with db.orm() as orm:
            outcomes = [
                o
                for (o,) in orm.execute(
                    select(AuditEventRow.outcome).where(
                        AuditEventRow.action == "connector.call",
                        AuditEventRow.environment == env,
                        AuditEventRow.at >= since.strftime("%Y-%m-%dT%H:%M:%S"),
                    )
                )
            ]
        failed = sum(1 for o in outcomes if o == "failed")
        return (failed / len(outcomes) if outcomes else None), row.sessions
    return getattr(row, rule.metric), row.sessions


def evaluate(db: Database, env: EnvironmentConfig, now: dt.datetime | None = None) -> list[Firing]:
    """Every rule of `env` that fires now, per agent."""
    now = now or utcnow()
    firings = []
    with db.orm() as orm:
        agents = sorted(
            {a for (a,) in orm.execute(select(SessionRow.agent).where(SessionRow.environment == env.name).distinct())}
        )
    rules = rules_for(env)
    # the KPI rules' windows of each agent are read together, once per round
    windows = {now - parse_duration(r.window) for r in rules if r.metric not in EVENT_METRICS}
    read: dict[str, dict[dt.datetime, Kpis]] = {}

    def kpis_of(agent: str, since: dt.datetime) -> Kpis:
        if agent not in read:
            read[agent] = kpis_since(db, environment=env.name, agent=agent, sinces=windows)
        return read[agent][since]

    for rule in rules:
        since = now - parse_duration(rule.window)
        for agent in [rule.agent] if rule.agent else agents:
            row = None if rule.metric in EVENT_METRICS else kpis_of(agent, since)
            value, sessions = _metric(db, rule, env.name, agent, since, row)
            if value is None or sessions < rule.min_sessions:
                continue
            fired = (rule.above is not None and value > rule.above) or (rule.below is not None and value < rule.below)
            if fired and rule.metric in EVENT_METRICS:  # the sessions the events came from
                ids = tuple(
                    dict.fromkeys(
                        i for i in _events(db, EVENT_METRICS[rule.metric], env.name, agent, since) if i is not None
                    )
                )[:50]
                firings.append(Firing(rule, env.name, agent, round(float(value), 4), sessions, ids))
            elif fired:
                with db.orm() as orm:
                    ids = tuple(
                        i
                        for (i,) in orm.execute(
                            select(SessionRow.id)
                            .where(
                                SessionRow.environment == env.name,
                                SessionRow.agent == agent,
                                SessionRow.started_at >= since,
                            )
                            .limit(50)
                        )
                    )
                firings.append(Firing(rule, env.name, agent, round(float(value), 4), sessions, ids))
    return firings


def open_or_update(
    db: Database, firing: Firing, audit: AuditLog | None = None, *, lease: int | None = None
) -> tuple[IncidentRow, bool]:
    """The incident for this firing: a new one, or the unresolved one for the same rule and agent.
    `lease`: the fencing token of the evaluator's alerts lease, noted on what it writes."""
    now = utcnow()
    entry: dict[str, Any] = {"at": now.isoformat(), "kind": "alert", "actor": "system", "note": firing.summary()}
    if lease is not None:
        entry["lease"] = lease
    try:
        row, created = _open_or_update(db, firing, now, entry)
    except IntegrityError:  # another evaluator opened it meanwhile (the unique index): update that one
        log.info("incident for %s / %s opened by another evaluator meanwhile", firing.rule.name, firing.agent)
        row, created = _open_or_update(db, firing, now, entry)
    if audit is not None and created:
        data: dict[str, Any] = {"rule": firing.rule.name, "agent": firing.agent, "value": firing.value}
        if lease is not None:
            data["lease"] = lease
        audit.append(
            AuditEvent(
                actor="system",
                action="incident.open",
                resource=f"incident:{row.id}",
                environment=firing.environment,
                data=data,
            )
        )
    return row, created


def _open_or_update(db: Database, firing: Firing, now: dt.datetime, entry: dict[str, Any]) -> tuple[IncidentRow, bool]:
    """One try of `open_or_update`: IntegrityError when another evaluator opened the same incident
    between this one's look and its insert."""
    unresolved = (
        IncidentRow.environment == firing.environment,
        IncidentRow.agent == firing.agent,
        IncidentRow.rule == firing.rule.name,
        IncidentRow.status != "resolved",
    )
    with db.orm() as orm, orm.begin():
        # a write first: the open incident (if any) is this transaction's from here on (a row lock
        # in PostgreSQL, SQLite's write lock), so two evaluators take their turns on it
        result = orm.execute(update(IncidentRow).where(*unresolved).values(updated_at=now))
        touched: int = result.rowcount  # type: ignore[attr-defined]
        row = orm.scalars(select(IncidentRow).where(*unresolved)).first() if touched else None
        if row is None:
            row = IncidentRow(
                id=secrets.token_hex(8),
                environment=firing.environment,
                agent=firing.agent,
                rule=firing.rule.name,
                severity=firing.rule.severity,
                status="open",
                summary=firing.summary(),
                value=firing.value,
                threshold=firing.threshold,
                fired_count=1,
                opened_at=now,
                updated_at=now,
                timeline=[entry],
                sessions=list(firing.session_ids),
            )
            orm.add(row)
            orm.flush()
            return row, True
        row.fired_count += 1
        if firing.value != row.value:  # the timeline records changes, not every evaluation
            row.value = firing.value
            row.timeline = [*row.timeline, entry]
        row.sessions = list(dict.fromkeys([*row.sessions, *firing.session_ids]))[-200:]
        return row, False


def transition(
    db: Database, incident_id: str, status: str, actor: str, note: str = "", audit: AuditLog | None = None
) -> IncidentRow:
    """Move an incident to `status` with a note on its timeline; IncidentNotFoundError or IncidentConflictError."""
    if status not in TRANSITIONS:
        raise IncidentNotFoundError(f"unknown status '{status}' (acknowledged, mitigated, resolved)")
    now = utcnow()
    with db.orm() as orm, orm.begin():
        row = orm.get(IncidentRow, incident_id)
        if row is None:
            raise IncidentNotFoundError(f"no incident '{incident_id}'")
        if row.status not in TRANSITIONS[status]:
            raise IncidentConflictError(f"incident {incident_id} is {row.status}: it cannot become {status}")
        row.status = status
        row.updated_at = now
        if status == "resolved":
            row.resolved_at = now
        row.timeline = [*row.timeline, {"at": now.isoformat(), "kind": status, "actor": actor, "note": note}]
    if audit is not None:
        audit.append(
            AuditEvent(
                actor=actor,
                action=f"incident.{status}",
                resource=f"incident:{incident_id}",
                environment=row.environment,
                data={"rule": row.rule},
            )
        )
    return row


def incident_dict(row: IncidentRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "environment": row.environment,
        "agent": row.agent,
        "rule": row.rule,
        "severity": row.severity,
        "status": row.status,
        "summary": row.summary,
        "value": row.value,
        "threshold": row.threshold,
        "fired_count": row.fired_count,
        "opened_at": row.opened_at.isoformat(),
        "updated_at": row.updated_at.isoformat(),
        "resolved_at": row.resolved_at.isoformat() if row.resolved_at else None,
        "timeline": row.timeline,
        "sessions": row.sessions,
    }


def list_incidents(
    db: Database, *, environment: str | None = None, status: str | None = None, limit: int = 100
) -> list[dict[str, Any]]:
    stmt = select(IncidentRow).order_by(IncidentRow.opened_at.desc()).limit(limit)
    if environment:
        stmt = stmt.where(IncidentRow.environment == environment)
    if status:
        stmt = stmt.where(IncidentRow.status == status)
    with db.orm() as orm:
        return [incident_dict(r) for r in orm.scalars(stmt)]


class WebhookRefusedError(UnavailableError):
    """A webhook answered a delivery with a status that is not a success (retried like a network error)."""


async def deliver(
    urls: list[str],
    payload: dict[str, Any],
    *,
    attempts: int = WEBHOOK_DELIVERY.attempts,
    backoff_s: float = WEBHOOK_DELIVERY.wait_s,
    transport: httpx.AsyncBaseTransport | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> list[dict[str, Any]]:
    """POST the alert to every webhook, retrying failures; returns one delivery record per webhook."""
    policy = WEBHOOK_DELIVERY.with_attempts(attempts, backoff_s)
    records: list[dict[str, Any]] = []
    async with httpx.AsyncClient(
        timeout=WEBHOOK_TIMEOUT_S, trust_env=False, transport=transport, verify=client_context()
    ) as client:
        for ref in urls:
            try:
                url = resolve_secret(ref) if ref.startswith(SECRET_SCHEMES) else ref
            except SecretError as exc:
                records.append({"webhook": ref, "ok": False, "attempts": 0, "error": str(exc)})
                continue
            shown = ref if ref.startswith(SECRET_SCHEMES) else url.split("?", 1)[0]
            tried = 0
            try:
                async for attempt in policy.async_retrying((httpx.HTTPError, WebhookRefusedError), sleep=sleep):
                    with attempt:
                        tried = attempt.retry_state.attempt_number
                        response = await client.post(url, json=payload)
                        if response.status_code >= HTTP_NOT_SUCCESS:
                            raise WebhookRefusedError(f"HTTP {response.status_code}")
            except (httpx.HTTPError, WebhookRefusedError) as exc:
                error = str(exc) if isinstance(exc, WebhookRefusedError) else type(exc).__name__
                log.warning("alert webhook %s failed after %d attempts: %s", shown, tried, error)
                records.append({"webhook": shown, "ok": False, "attempts": tried, "error": error})
            else:
                records.append({"webhook": shown, "ok": True, "attempts": tried})
    return records


async def run_once(
    db: Database,
    env: EnvironmentConfig,
    audit: AuditLog | None = None,
    now: dt.datetime | None = None,
    *,
    lease: int | None = None,
) -> list[dict[str, Any]]:
    """Evaluate, open or update incidents, deliver new firings (each by the evaluator that opened its
    incident); returns what happened per firing. `lease`: the evaluator's fencing token."""
    results = []
    for firing in await asyncio.to_thread(evaluate, db, env, now):
        row, created = await asyncio.to_thread(functools.partial(open_or_update, db, firing, audit, lease=lease))
        deliveries: list[dict[str, Any]] = []
        if created and env.settings.webhooks:
            payload = {"type": "voxgate.alert", "incident": incident_dict(row), "rule": firing.rule.model_dump()}
            deliveries = await deliver(env.settings.webhooks, payload)

            def note(row: IncidentRow = row, deliveries: list[dict[str, Any]] = deliveries) -> None:
                with db.orm() as orm, orm.begin():
                    stored = orm.get(IncidentRow, row.id)
                    if stored is not None:
                        stored.timeline = [
                            *stored.timeline,
                            {"at": utcnow().isoformat(), "kind": "delivery", "actor": "system", "note": deliveries},
                        ]

            await asyncio.to_thread(note)
        results.append(
            {
                "incident": row.id,
                "created": created,
                "rule": firing.rule.name,
                "agent": firing.agent,
                "value": firing.value,
                "deliveries": deliveries,
            }
        )
    return results


async def alert_loop(
    db: Database,
    env: EnvironmentConfig,
    audit: AuditLog | None,
    every_s: float = 30.0,
    *,
    lease: Lease | None = None,
    renew_s: float = RENEW_S,
    first_after_s: float = 0.0,
) -> None:
    """The server's continuous evaluation of its environment's rules, `first_after_s` seconds from now
    and then every `every_s`, while this worker holds `lease` (one process alone: always), renewed
    every `renew_s`."""
    await asyncio.sleep(first_after_s)

    async def evaluating(token: int) -> None:
        while True:
            try:
                await run_once(db, env, audit, lease=token)
            except asyncio.CancelledError:
                raise
            except Exception:  # the next round tries again; the failure is in the log
                log.exception("alert evaluation failed")
            await asyncio.sleep(every_s)

    await while_held(lease or LocalLease(f"alerts:{env.name}"), evaluating, renew_s=renew_s)
