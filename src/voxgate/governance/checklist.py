"""The 18-item readiness checklist for (agent, environment), computed from configuration, policy
decisions and stored evidence — never ticked by hand.

Each item is pass / fail / warn with the evidence it rests on (a pass or warn always carries
some: policy ids and decisions, run ids, digests, settings). An item whose configuration is
missing fails, never passes by default. Which items block a publish is the environment's
`settings.checklist.required` (default: all).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import select

from voxgate.governance.environments import GovernanceConfig
from voxgate.store.db import Database
from voxgate.store.models import (
    ActiveBundleRow,
    AuditEventRow,
    BundleRow,
    GateRunRow,
    PublishRequestRow,
    ReleaseRow,
    UserRow,
)

Status = Literal["pass", "fail", "warn"]


@dataclass
class Item:
    """One readiness check: its section, outcome, detail and evidence, and whether it blocks a publish."""

    id: str
    section: str
    title: str
    status: Status
    detail: str
    evidence: dict[str, Any] = field(default_factory=dict)
    required: bool = True


@dataclass
class Report:
    """The readiness checklist of one bundle for one environment."""

    agent: str
    environment: str
    digest: str | None
    items: list[Item]

    def blocking(self) -> list[Item]:
        """The required items that fail: a publish waits until there are none."""
        return [i for i in self.items if i.required and i.status == "fail"]

    def to_dict(self) -> dict[str, Any]:
        """The report as a JSON-ready dict, with `ready` and the count of each status."""
        return {
            "agent": self.agent,
            "environment": self.environment,
            "digest": self.digest,
            "ready": not self.blocking(),
            "counts": {s: sum(1 for i in self.items if i.status == s) for s in ("pass", "warn", "fail")},
            "items": [i.__dict__ for i in self.items],
        }

    def to_html(self) -> str:
        """The report as a standalone HTML page, one table row per item."""
        import html

        rows = "".join(
            f"<tr class='{i.status}'><td>{i.section}</td><td>{html.escape(i.title)}</td><td>{i.status}</td>"
            f"<td>{html.escape(i.detail)}</td><td>{'yes' if i.required else 'no'}</td></tr>"
            for i in self.items
        )
        return (
            f"<!doctype html><meta charset='utf-8'><title>Readiness: {html.escape(self.agent)} in "
            f"{html.escape(self.environment)}</title><style>td{{padding:4px 8px;border-bottom:1px solid #ddd}}"
            f".pass td:nth-child(3){{color:#070}}.fail td:nth-child(3){{color:#b00}}.warn td:nth-child(3)"
            f"{{color:#a60}}</style><h1>Readiness: {html.escape(self.agent)} in {html.escape(self.environment)}</h1>"
            f"<p>digest {html.escape(self.digest or 'none')} — {'ready' if not self.blocking() else 'NOT ready'}</p>"
            f"<table><tr><th>section</th><th>item</th><th>status</th><th>evidence</th><th>required</th></tr>"
            f"{rows}</table>"
        )


def _analytics_item(env: Any) -> tuple[Status, str, dict[str, Any]]:
    """Transcripts are stored with PII redacted before storage, and analytics are computed from them."""
    try:
        from voxgate.compliance.redaction import default_redactor
    except ImportError:
        return "fail", "PII redaction is not installed (presidio)", {}
    redactor = default_redactor()
    return (
        "pass",
        f"every turn is stored with PII redacted ({len(redactor.entities)} entity types); "
        "outcomes and KPIs computed from stored sessions (voxgate stats)",
        {"entities": sorted(redactor.entities)},
    )


def _latest_gate(db: Database, digest: str | None, target: str, gate: str) -> GateRunRow | None:
    if digest is None:
        return None
    with db.orm() as orm:
        return orm.scalars(
            select(GateRunRow)
            .where(GateRunRow.digest == digest, GateRunRow.gate == gate, GateRunRow.target_environment == target)
            .order_by(GateRunRow.started_at.desc())
            .limit(1)
        ).first()


def evaluate(
    db: Database,
    config: GovernanceConfig,
    agent: str,
    environment: str,
    *,
    digest: str | None = None,
    policy: Any = None,
) -> Report:
    """The checklist for `agent` entering `environment`; `digest` defaults to the candidate (the
    version active in the environment before it), else what the environment runs now."""
    from voxgate.governance.policy import PolicyContext, PolicyEngine, Resource
    from voxgate.governance.principals import Principal

    env = config.environments[environment]
    names = list(config.environments)
    before = names[names.index(environment) - 1] if names.index(environment) > 0 else environment
    with db.orm() as orm:
        if digest is None:
            for candidate_env in (before, environment):
                row = orm.get(ActiveBundleRow, (candidate_env, agent))
                if row is not None:
                    digest = row.digest
                    break
        bundle = orm.get(BundleRow, digest) if digest else None
        approved = (
            orm.scalars(
                select(PublishRequestRow).where(
                    PublishRequestRow.digest == digest,
                    PublishRequestRow.target_environment == environment,
                    PublishRequestRow.status.in_(("approved", "published")),
                )
            ).first()
            if digest
            else None
        )
        releases_here = orm.scalars(
            select(ReleaseRow).where(ReleaseRow.environment == environment, ReleaseRow.agent == agent)
        ).all()
        audit_events = orm.scalar(select(AuditEventRow.seq).order_by(AuditEventRow.seq.desc()).limit(1)) or 0
        approver = orm.get(UserRow, approved.decided_by) if approved is not None and approved.decided_by else None
    engine = policy or PolicyEngine.load()
    tiers = {e.tier for e in config.environments.values()}
    items: list[Item] = []

    def add(id_: str, section: str, title: str, check: Callable[[], tuple[Status, str, dict[str, Any]]]) -> None:
        try:
            status, detail, evidence = check()
        except Exception as exc:  # an item that cannot be computed is not a pass
            status, detail, evidence = "fail", f"could not be evaluated: {exc}", {}
        items.append(Item(id_, section, title, status, detail, evidence))

    maker = Principal(kind="user", id="checklist-maker", roles={"*": frozenset({"maker"})})
    prod_envs = [e for e in config.environments.values() if e.tier == "production"]

    # ---- access and environment
    add(
        "environments",
        "access",
        "separate dev, test and prod environments exist",
        lambda: (
            ("pass", "tiers: " + ", ".join(sorted(tiers)), {"environments": names})
            if {"development", "test", "production"} <= tiers
            else ("fail", f"missing tiers: {sorted({'development', 'test', 'production'} - tiers)}", {})
        ),
    )

    def no_direct_publish() -> tuple[Status, str, dict[str, Any]]:
        decisions = {}
        for e in prod_envs:
            ctx = PolicyContext(e.name, e.tier)
            decisions[e.name] = {
                "deploy": engine.decide(maker, "bundle.deploy", Resource.environment(e.name, e.tier), ctx).allowed,
                "publish": engine.decide(
                    maker, "bundle.publish", Resource.publish_request("x", "u", "u", e.name), ctx
                ).allowed,
            }
        leaks = [n for n, d in decisions.items() if d["deploy"] or d["publish"]]
        return (
            ("fail", f"a maker can reach {leaks} directly", decisions)
            if leaks or not prod_envs
            else ("pass", "policy denies a maker deploying or publishing to production", decisions)
        )

    add("no_direct_publish", "access", "developers cannot publish directly to production", no_direct_publish)

    def dlp_everywhere() -> tuple[Status, str, dict[str, Any]]:
        open_ = [e.name for e in config.environments.values() if e.dlp.endpoints.default != "deny"]
        if open_:
            return "warn", f"endpoint filter allows by default in {open_}", {"allow_by_default": open_}
        return "pass", "every environment has a DLP policy with a default-deny endpoint filter", {"environments": names}

    add("dlp_policy", "access", "a connector (DLP) policy applies to every environment", dlp_everywhere)

    def approver_required() -> tuple[Status, str, dict[str, Any]]:
        author = Principal(kind="user", id="checklist-author", roles={"*": frozenset({"approver", "admin"})})
        self_ok = engine.decide(
            author,
            "publish.approve",
            Resource.publish_request("x", "checklist-author", "checklist-author", env.name),
            PolicyContext(env.name, env.tier),
        ).allowed
        probe = engine.decide(
            author,
            "publish.approve",
            Resource.publish_request("x", "checklist-author", "checklist-author", env.name),
            PolicyContext(env.name, env.tier),
        )
        evidence = {
            "requires_approval": env.requires_approval,
            "probe": {
                "principal": "an admin and approver who wrote the bundle",
                "action": "publish.approve",
                "allowed": probe.allowed,
                "policies": list(probe.reasons),
            },
        }
        if not env.requires_approval:
            return "fail", f"{environment} does not require approval", evidence
        if self_ok:
            return "fail", "an author can approve their own publish", evidence
        return (
            "pass",
            "publishing requires an approver who is neither author nor requester (Cedar: "
            f"{', '.join(probe.reasons) or 'default deny'})",
            evidence,
        )

    add("approval", "access", "publishing to customer-facing channels requires an approver", approver_required)

    # ---- build and configuration
    source = None
    if bundle is not None:
        from voxgate.governance.bundle_store import load_stored

        source = load_stored(db, bundle.digest).source

    def needs_bundle(
        fn: Callable[[Any], tuple[Status, str, dict[str, Any]]],
    ) -> Callable[[], tuple[Status, str, dict[str, Any]]]:
        return lambda: fn(source) if source is not None else ("fail", "no candidate bundle for this agent", {})

    def channel_auth(s: Any) -> tuple[Status, str, dict[str, Any]]:
        auth = s.agent.authentication
        evidence = {
            "mode": auth.mode,
            "identify_by": getattr(auth, "identify_by", None),
            "verify_with": getattr(auth, "verify_with", None),
        }
        if auth.mode == "verify":
            return "pass", f"callers are verified ({auth.identify_by} + {auth.verify_with})", evidence
        return "warn", "the agent does not verify callers", evidence

    add("channel_auth", "build", "authentication is configured for the channel", needs_bundle(channel_auth))

    def explicit_settings(s: Any) -> tuple[Status, str, dict[str, Any]]:
        text = s.files.get("agent.yaml", "")
        missing = [
            k for k in ("answers", "moderation", "scope") if f"\n{k}:" not in "\n" + text and f"\n  {k}:" not in text
        ]
        gen = s.agent.generative
        evidence = {
            "answers": gen.answers,
            "moderation": gen.moderation,
            "scope": {"purpose": bool(s.agent.scope.purpose), "refuse": len(s.agent.scope.refuse)},
        }
        return (
            ("fail", f"not set explicitly in agent.yaml: {missing}", evidence)
            if missing
            else (
                "pass",
                f"answers: {gen.answers}, moderation: {gen.moderation}, scope with "
                f"{len(s.agent.scope.refuse)} refusal rule(s), all set explicitly",
                evidence,
            )
        )

    add(
        "generative_settings",
        "build",
        "generative settings, grounding and moderation are set explicitly",
        needs_bundle(explicit_settings),
    )

    def references_only(s: Any) -> tuple[Status, str, dict[str, Any]]:
        refs = [
            c.auth.token if hasattr(c.auth, "token") else getattr(c.auth, "value", "")
            for c in s.agent.connectors.values()
            if c.auth is not None
        ]
        bad = [r for r in refs if not str(r).startswith(("env:", "file:", "vault:"))]
        schemes = sorted({str(r).partition(":")[0] for r in refs if not bad})
        return (
            ("fail", "credentials written inline", {"inline": len(bad)})
            if bad
            else (
                "pass",
                f"{len(refs)} credential(s), all references; secret scan ran at build",
                {"references": sorted(str(r) for r in refs), "schemes": schemes},
            )
        )

    add("credentials", "build", "credentials are references only", needs_bundle(references_only))
    add(
        "signed_bundle",
        "build",
        "the agent is a versioned, signed bundle",
        lambda: (
            (
                "pass",
                f"{bundle.agent} {bundle.version} {bundle.digest[:19]} signed by key {bundle.key_id[:12]}",
                {"digest": bundle.digest},
            )
            if bundle is not None
            else ("fail", "no signed bundle", {})
        ),
    )

    # ---- testing and release
    def gate_item(gate: str, what: str) -> Callable[[], tuple[Status, str, dict[str, Any]]]:
        def check() -> tuple[Status, str, dict[str, Any]]:
            run = _latest_gate(db, digest, environment, gate)
            if run is None:
                return "fail", f"the {gate} gate has not run on this digest", {}
            return (
                ("pass" if run.status == "passed" else "fail"),
                f"{what}: {run.status} ({run.results.get('passed')}/{run.results.get('total')}) "
                f"at {run.started_at.isoformat()[:19]}",
                {"run_id": run.id},
            )

        return check

    add(
        "escalation_tested",
        "testing",
        "escalation tested with context preserved",
        gate_item("escalation", "escalation gate"),
    )
    add("latency_validated", "testing", "latency validated under simulated load", gate_item("load", "load gate"))

    def signed_off() -> tuple[Status, str, dict[str, Any]]:
        required = [g.name for g in env.settings.gates if g.required]
        failing = [
            g for g in required if (r := _latest_gate(db, digest, environment, g)) is None or r.status != "passed"
        ]
        if not required:
            return "fail", f"{environment} requires no gates: nothing was validated", {}
        if failing:
            return "fail", f"gates not passed on this digest: {failing}", {}
        if approved is None:
            return "fail", "gates passed but no approver has signed off a publish request", {}
        who = approver.username if approver is not None else approved.decided_by
        return (
            "pass",
            f"gates {required} passed; signed off by {who}",
            {
                "request": approved.id,
                "approved_by": who,
                "approved_at": approved.decided_at.isoformat() if approved.decided_at else None,
            },
        )

    add("validation_signed_off", "testing", "pre-production validation completed and signed off", signed_off)

    def rollback_ready() -> tuple[Status, str, dict[str, Any]]:
        run = _latest_gate(db, digest, environment, "rollback")
        if run is None or run.status != "passed":
            return "fail", "rollback not rehearsed on this digest", {}
        first = bool((run.metrics or {}).get("first_release"))
        return (
            "pass",
            (
                f"rollback rehearsed ({run.id}); `voxgate rollback` "
                + ("withdraws this first release" if first else "restores the previous release")
            ),
            {"run_id": run.id, "previous_digest": (run.metrics or {}).get("previous_digest")},
        )

    add("rollback", "testing", "rollback defined and rehearsed", rollback_ready)

    def audit_on() -> tuple[Status, str, dict[str, Any]]:
        if audit_events == 0:
            return "fail", "the audit chain is empty", {}
        with db.orm() as orm:
            purge = orm.scalars(
                select(AuditEventRow)
                .where(AuditEventRow.action == "retention.purge")
                .order_by(AuditEventRow.seq.desc())
                .limit(1)
            ).first()
        kept = {
            "retention_days": env.settings.retention_days,
            **{k: v for k, v in env.settings.retention.model_dump().items() if v is not None},
        }
        if purge is None:
            return "fail", f"retention is set ({kept}) but the purge has never run", {"events": audit_events}
        return (
            "pass",
            f"audit chain on ({audit_events} events); retention {kept} enforced, last purge "
            f"{purge.at[:19]} (audit seq {purge.seq})",
            {"events": audit_events, "purge_seq": purge.seq},
        )

    add("audit_retention", "testing", "audit logging on and retention meeting policy", audit_on)

    # ---- runtime and operations
    add(
        "analytics",
        "operations",
        "transcripts and analytics active before the first call",
        lambda: _analytics_item(env),
    )

    def alerts_item() -> tuple[Status, str, dict[str, Any]]:
        rules = env.settings.alerts
        metrics = {r.metric for r in rules}
        missing = {"escalation_rate", "completion_rate"} - metrics
        if missing:
            return "fail", f"no alert rule on {sorted(missing)} in {environment}", {"rules": [r.name for r in rules]}
        if not env.settings.webhooks:
            return "fail", "alert rules exist but no webhook receives them", {"rules": [r.name for r in rules]}
        return (
            "pass",
            f"{len(rules)} rules evaluated continuously, delivered to {len(env.settings.webhooks)} webhook(s)",
            {"rules": [r.name for r in rules], "webhooks": len(env.settings.webhooks)},
        )

    add("alerts", "operations", "thresholds on escalation and completion rates with alerts", alerts_item)

    def incidents_item() -> tuple[Status, str, dict[str, Any]]:
        procedure = env.settings.incident_procedure
        if not procedure:
            return "fail", f"no incident_procedure set for {environment}", {}
        evidence = procedure_evidence(procedure)
        if not env.settings.alerts:
            return "fail", "a procedure is named but no alert opens incidents", evidence
        if evidence.get("missing"):
            return "fail", f"the incident procedure {procedure} is not found", evidence
        return (
            "pass",
            f"alerts open incidents (open → acknowledged → mitigated → resolved); procedure: {procedure}"
            + (f" (sha256 {evidence['sha256'][:12]})" if "sha256" in evidence else ""),
            evidence,
        )

    add("incidents", "operations", "an incident procedure defined", incidents_item)

    def usage_item() -> tuple[Status, str, dict[str, Any]]:
        quotas = env.settings.quotas
        limits = {k: v for k, v in quotas.model_dump().items() if v is not None}
        if not limits:
            return "fail", f"no quotas set for {environment}: usage is measured but nothing limits it", {}
        return (
            "pass",
            f"usage measured per environment and agent (voxgate stats, /api/usage, /metrics); limits: {limits}",
            {"quotas": limits},
        )

    add("usage", "operations", "usage and capacity monitored", usage_item)

    def change_process() -> tuple[Status, str, dict[str, Any]]:
        if not env.requires_approval:
            return "fail", "changes reach this environment without approval", {}
        evidence = {
            "requires_approval": True,
            "releases": len(releases_here),
            "change_windows": [w.model_dump(mode="json") for w in env.change_windows],
        }
        if not env.change_windows:
            return (
                "warn",
                f"approvals and audited releases ({len(releases_here)} so far); no change windows set",
                evidence,
            )
        return "pass", "approvals, change windows and audited releases", evidence

    add("change_process", "operations", "a change process for live agents", change_process)

    required = env.settings.checklist.required
    for item in items:
        item.required = required == "all" or item.id in required
    return Report(agent, environment, digest, items)


def procedure_evidence(procedure: str) -> dict[str, Any]:
    """Where the incident procedure is and, for a document on disk, its sha256 (a URL is kept as is).

    A relative path is looked up from the working directory, then from the voxgate checkout."""
    if "://" in procedure:
        return {"procedure": procedure}
    path = Path(procedure)
    candidates = [path] if path.is_absolute() else [Path.cwd() / path, Path(__file__).resolve().parents[3] / path]
    for candidate in candidates:
        if candidate.is_file():
            return {
                "procedure": procedure,
                "path": str(candidate),
                "sha256": hashlib.sha256(candidate.read_bytes()).hexdigest(),
            }
    return {"procedure": procedure, "missing": True}


ITEM_IDS = (
    "environments",
    "no_direct_publish",
    "dlp_policy",
    "approval",
    "channel_auth",
    "generative_settings",
    "credentials",
    "signed_bundle",
    "escalation_tested",
    "latency_validated",
    "validation_signed_off",
    "rollback",
    "audit_retention",
    "analytics",
    "alerts",
    "incidents",
    "usage",
    "change_process",
)
