"""The release pipeline: deploy to dev → promote to test → request, approve and publish to prod → roll back.

Each step changes one row of `active_bundles` (what an environment serves for an agent) and
appends one row to `releases` (who, when, why, which digest replaced which) in the same
transaction, so the pointer and its history never disagree, and writes an audit event. Rules
that matter are checked here in code as well as by the Cedar policies at the API: DLP against
the target environment at every deploy, promotion and publish; the approver of a publish is
never its author or requester; publishing outside a change window needs an explicit override.

Concurrent steps cannot interleave: a decision or a publish moves its request on with a
compare-and-set (`UPDATE … WHERE status = <the state it must be in>`, one row or a 409), and a
publish writes the request's new state, the release row and the active pointer in one
transaction; every change of the active pointer first takes the write lock (the row lock on
PostgreSQL, the database's on SQLite) before it reads what is active, and a rollback proceeds
only if what is active is still what it was computed from.

Once a step is committed, `on_change` (when the worker set one) hears which agent of which
environment now serves which digest: in a cluster the worker announces it to the others.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import CursorResult, Update, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session as OrmSession

from voxgate.clock import utcnow
from voxgate.compliance.audit import AuditEvent, AuditLog, Outcome
from voxgate.errors import ConflictError, ForbiddenError, InvalidError, NotFoundError, VoxgateError
from voxgate.governance import bundle_store, dlp
from voxgate.governance.environments import GovernanceConfig
from voxgate.governance.principals import Principal
from voxgate.store.db import Database
from voxgate.store.models import ActiveBundleRow, BundleRow, PublishRequestRow, ReleaseRow, UserRow

log = logging.getLogger("voxgate.governance")

#: told (environment, agent, digest or None) after a step changed what is active; never raises into the step
ReleaseListener = Callable[[str, str, str | None], None]

NO_GATES = {"gates": [], "note": "this environment requires no gates"}
_UNCHECKED = object()  # _activate: no expectation about what is active now


class ReleaseError(VoxgateError):
    """A release step that cannot be taken; `rule` names the rule that refused it, where one did.

    Raised as one of its categories (ReleaseNotFoundError, ReleaseConflictError, ReleaseForbiddenError,
    ReleaseInvalidError); the client gets `{"error": message, "rule": rule}` as the detail.
    """

    def __init__(self, message: str, *, rule: str | None = None) -> None:
        detail: dict[str, Any] = {"error": message}
        if rule:
            detail["rule"] = rule
        super().__init__(message, detail=detail)
        self.rule = rule


class ReleaseNotFoundError(ReleaseError, NotFoundError):
    """The environment, bundle or publish request named does not exist."""


class ReleaseConflictError(ReleaseError, ConflictError):
    """The step clashes with the current state: nothing active, gates not passed, a stale request."""


class ReleaseForbiddenError(ReleaseError, ForbiddenError):
    """A governance rule refuses the step (`rule` names it), whatever the caller's roles."""


class ReleaseInvalidError(ReleaseError, InvalidError):
    """The request itself is incomplete (a decision without a comment)."""


@dataclass(frozen=True)
class Release:
    """One step in an environment's release history: what became active for an agent, by whom and why."""

    id: int
    environment: str
    agent: str
    digest: str | None  # None: the agent was withdrawn (nothing active afterwards)
    previous_digest: str | None
    action: str
    actor_id: str
    reason: str
    request_id: str | None
    evidence: dict[str, Any]
    created_at: dt.datetime
    actor_name: str | None = None  # the user name of actor_id, when it is a user

    @classmethod
    def of(cls, row: ReleaseRow, names: dict[str, str] | None = None) -> Release:
        """The release in a database row; `names` maps user ids to usernames for display."""
        return cls(
            row.id,
            row.environment,
            row.agent,
            row.digest,
            row.previous_digest,
            row.action,
            row.actor_id,
            row.reason,
            row.request_id,
            dict(row.evidence or {}),
            row.created_at,
            (names or {}).get(row.actor_id),
        )

    def as_dict(self) -> dict[str, Any]:
        """The release as a JSON-ready dict."""
        return {
            "id": self.id,
            "environment": self.environment,
            "agent": self.agent,
            "digest": self.digest,
            "previous_digest": self.previous_digest,
            "action": self.action,
            "actor": self.actor_id,
            "actor_name": self.actor_name,
            "reason": self.reason,
            "request_id": self.request_id,
            "evidence": self.evidence,
            "at": self.created_at.isoformat(),
        }


def request_dict(row: PublishRequestRow, names: dict[str, str] | None = None) -> dict[str, Any]:
    """A publish request as a JSON-ready dict; `names` maps user ids to usernames for display."""
    names = names or {}
    return {
        "id": row.id,
        "agent": row.agent,
        "digest": row.digest,
        "source_environment": row.source_environment,
        "target_environment": row.target_environment,
        "requested_by": row.requested_by,
        "requested_by_name": names.get(row.requested_by),
        "reason": row.reason,
        "status": row.status,
        "decided_by": row.decided_by,
        "decided_by_name": names.get(row.decided_by) if row.decided_by else None,
        "decision_comment": row.decision_comment,
        "decided_at": row.decided_at.isoformat() if row.decided_at else None,
        "published_at": row.published_at.isoformat() if row.published_at else None,
        "created_at": row.created_at.isoformat(),
    }


def _user_names(orm: Any, ids: set[str]) -> dict[str, str]:
    """User names for user ids (ids that are not users, such as "system", are left out)."""
    ids = {i for i in ids if i}
    if not ids:
        return {}
    return {uid: name for uid, name in orm.execute(select(UserRow.id, UserRow.username).where(UserRow.id.in_(ids)))}


class ReleaseService:
    """Moves bundles through the environments: deploy, promote, request, decide and publish, each audited."""

    def __init__(
        self, db: Database, config: GovernanceConfig, audit: AuditLog, clock: Callable[[], dt.datetime] = utcnow
    ):
        self.db = db
        self.config = config
        self.audit = audit
        self.clock = clock
        self.on_change: ReleaseListener | None = None  # the worker's cluster wiring, when it has one

    # ---- reading -------------------------------------------------------------------------------

    def active(self, environment: str, agent: str) -> str | None:
        """The digest active for `agent` in `environment`, or None."""
        with self.db.orm() as orm:
            row = orm.get(ActiveBundleRow, (environment, agent))
            return row.digest if row else None

    def active_all(self, environment: str | None = None) -> list[dict[str, Any]]:
        """Every active bundle (of one environment, if given), by environment and agent."""
        stmt = select(ActiveBundleRow).order_by(ActiveBundleRow.environment, ActiveBundleRow.agent)
        if environment:
            stmt = stmt.where(ActiveBundleRow.environment == environment)
        with self.db.orm() as orm:
            return [
                {
                    "environment": r.environment,
                    "agent": r.agent,
                    "digest": r.digest,
                    "release_id": r.release_id,
                    "updated_at": r.updated_at.isoformat(),
                }
                for r in orm.scalars(stmt)
            ]

    def history(self, environment: str | None = None, agent: str | None = None, limit: int = 100) -> list[Release]:
        """The latest releases, newest first, optionally of one environment and agent."""
        stmt = select(ReleaseRow).order_by(ReleaseRow.id.desc()).limit(limit)
        if environment:
            stmt = stmt.where(ReleaseRow.environment == environment)
        if agent:
            stmt = stmt.where(ReleaseRow.agent == agent)
        with self.db.orm() as orm:
            rows = list(orm.scalars(stmt))
            names = _user_names(orm, {r.actor_id for r in rows})
            return [Release.of(r, names) for r in rows]

    def requests(self, status: str | None = None) -> list[dict[str, Any]]:
        """Publish requests, newest first, optionally only those with `status`."""
        stmt = select(PublishRequestRow).order_by(PublishRequestRow.created_at.desc())
        if status:
            stmt = stmt.where(PublishRequestRow.status == status)
        with self.db.orm() as orm:
            rows = list(orm.scalars(stmt))
            names = _user_names(orm, {r.requested_by for r in rows} | {r.decided_by or "" for r in rows})
            return [request_dict(r, names) for r in rows]

    def request(self, request_id: str) -> PublishRequestRow:
        """The publish request with this id; ReleaseNotFoundError if there is none."""
        with self.db.orm() as orm:
            row = orm.get(PublishRequestRow, request_id)
        if row is None:
            raise ReleaseNotFoundError(f"no publish request '{request_id}'")
        return row

    def bundle(self, digest: str) -> BundleRow:
        """The stored bundle with this digest; ReleaseNotFoundError if there is none."""
        with self.db.orm() as orm:
            row = orm.get(BundleRow, digest)
        if row is None:
            raise ReleaseNotFoundError(f"no bundle '{digest}'")
        return row

    # ---- steps ---------------------------------------------------------------------------------

    def deploy(self, environment: str, agent: str, digest: str, actor: Principal, reason: str = "") -> Release:
        """Activate a stored bundle in a development environment (other tiers take promotion or publication)."""
        env = self._environment(environment)
        if env.tier != "development":
            raise ReleaseForbiddenError(
                f"'{environment}' is a {env.tier} environment: bundles reach it by promotion or "
                "publication, not by deploy",
                rule="release.deploy_development_only",
            )
        bundle = self._bundle_for(agent, digest)
        evidence = self._dlp_evidence(bundle, environment)
        return self._activate(environment, agent, digest, "deploy", actor, reason, evidence=evidence)

    def promote(self, agent: str, target: str, actor: Principal, reason: str = "") -> Release:
        """Activate in `target` what is active in the environment before it; not for production."""
        env = self._environment(target)
        if env.tier == "production":
            raise ReleaseForbiddenError(
                f"'{target}' is a production environment: request a publish, which needs an approver",
                rule="release.publish_needs_approval",
            )
        source = self._previous(target)
        digest = self.active(source, agent)
        if digest is None:
            raise ReleaseConflictError(
                f"nothing to promote: '{agent}' is not active in '{source}' — "
                f"{self._how_to_reach(source, agent)} first",
            )
        bundle = self._bundle_for(agent, digest)
        evidence = {
            **self._dlp_evidence(bundle, target),
            **self._gate_evidence(digest, target),
            "promoted_from": source,
        }
        return self._activate(target, agent, digest, "promote", actor, reason, evidence=evidence)

    def request_publish(self, agent: str, target: str, actor: Principal, reason: str = "") -> dict[str, Any]:
        """Ask to publish to a production environment what is active before it; returns the pending request."""
        env = self._environment(target)
        if env.tier != "production":
            raise ReleaseConflictError(f"'{target}' is not a production environment: use promote")
        source = self._previous(target)
        digest = self.active(source, agent)
        if digest is None:
            raise ReleaseConflictError(
                f"nothing to publish: '{agent}' is not active in '{source}' — "
                f"{self._how_to_reach(source, agent)} first",
            )
        bundle = self._bundle_for(agent, digest)
        self._dlp_evidence(bundle, target)  # refuse early: it would fail at publish anyway
        row = PublishRequestRow(
            id=secrets.token_hex(8),
            agent=agent,
            digest=digest,
            source_environment=source,
            target_environment=target,
            requested_by=actor.id,
            reason=reason,
            status="pending",
            created_at=self.clock(),
        )
        with self.db.orm() as orm, orm.begin():
            orm.add(row)
        self._audit(
            actor,
            "publish.request",
            f"agent:{agent}",
            target,
            {"request_id": row.id, "digest": digest, "author": bundle.author_id},
        )
        return request_dict(row)

    def decide(self, request_id: str, actor: Principal, approve: bool, comment: str) -> dict[str, Any]:
        """Approve or reject a pending publish request, with a comment; its author or requester may not approve."""
        if not comment.strip():
            raise ReleaseInvalidError("a decision needs a comment")
        row = self.request(request_id)
        if row.status != "pending":
            raise ReleaseConflictError(f"publish request {request_id} is already {row.status}")
        bundle = self._bundle_row(row.digest)
        author = bundle.author_id if bundle else None
        # separation of duties, enforced here as well as in the Cedar policies
        if actor.id in (author, row.requested_by):
            self._audit(
                actor,
                "publish.approve",
                f"request:{request_id}",
                row.target_environment,
                {"digest": row.digest, "rule": "sod.approver_is_author"},
                outcome="denied",
            )
            raise ReleaseForbiddenError(
                "the author or requester of a bundle cannot approve its publication", rule="sod.approver_is_author"
            )
        with self.db.orm() as orm, orm.begin():
            # compare-and-set: only a request still pending is decided, once
            claimed = _rowcount(
                orm,
                update(PublishRequestRow)
                .where(PublishRequestRow.id == request_id, PublishRequestRow.status == "pending")
                .values(
                    status="approved" if approve else "rejected",
                    decided_by=actor.id,
                    decision_comment=comment,
                    decided_at=self.clock(),
                )
                .execution_options(synchronize_session=False),
            )
            if claimed != 1:
                now = orm.scalar(select(PublishRequestRow.status).where(PublishRequestRow.id == request_id))
                raise ReleaseConflictError(
                    f"publish request {request_id} is already {now}: another decision was taken first"
                )
            decided = orm.get(PublishRequestRow, request_id, populate_existing=True)
            assert decided is not None  # nosec B101: type narrowing; the row was claimed just above
            out = request_dict(decided)
        self._audit(
            actor,
            "publish.approve" if approve else "publish.reject",
            f"request:{request_id}",
            row.target_environment,
            {"digest": row.digest, "comment_sha256": text_sha256(comment)},
        )
        return out

    def publish(self, request_id: str, actor: Principal, *, override_window: bool = False, reason: str = "") -> Release:
        """Activate an approved request's bundle in production, inside a change window unless overridden."""
        row = self.request(request_id)
        if row.status != "approved":
            raise _not_approved(request_id, row.status)
        window = self._window_check(row.target_environment, actor, override_window, "bundle.publish")
        bundle = self._bundle_for(row.agent, row.digest)
        evidence = {
            **self._dlp_evidence(bundle, row.target_environment),
            **self._gate_evidence(row.digest, row.target_environment),
            **window,
            "approved_by": row.decided_by,
        }
        blocking = self._blocking_checklist(row.agent, row.target_environment, row.digest)
        if blocking:
            raise ReleaseConflictError(
                "required readiness items fail: " + "; ".join(blocking), rule="checklist.failing"
            )

        def claim(orm: OrmSession) -> None:
            # compare-and-set, in the transaction that writes the release: one approval, one publish
            claimed = _rowcount(
                orm,
                update(PublishRequestRow)
                .where(PublishRequestRow.id == request_id, PublishRequestRow.status == "approved")
                .values(status="published", published_at=self.clock())
                .execution_options(synchronize_session=False),
            )
            if claimed != 1:
                now = orm.scalar(select(PublishRequestRow.status).where(PublishRequestRow.id == request_id))
                raise _not_approved(request_id, now)

        return self._activate(
            row.target_environment,
            row.agent,
            row.digest,
            "publish",
            actor,
            reason or row.reason,
            evidence=evidence,
            request_id=request_id,
            claim=claim,
        )

    def rollback_target(self, environment: str, agent: str) -> str | None:
        """What a rollback of `agent` in `environment` would make active: the digest that was
        active before the current one, or None when the current one is its first release there
        (a rollback then withdraws the agent: new callers hear it is unavailable)."""
        current = self.active(environment, agent)
        if current is None:
            raise ReleaseConflictError(f"nothing to roll back: '{agent}' is not active in '{environment}'")
        for release in self.history(environment, agent, limit=1000):
            if release.digest == current and release.previous_digest and release.previous_digest != current:
                return release.previous_digest
        return None

    def rollback(
        self, environment: str, agent: str, actor: Principal, *, reason: str = "", override_window: bool = False
    ) -> Release:
        """Make the digest that was active before the current one active again, in one step (or
        withdraw the agent when the current digest is its first release in `environment`)."""
        self._environment(environment)
        current = self.active(environment, agent)
        previous = self.rollback_target(environment, agent)
        window = self._window_check(environment, actor, override_window, "release.rollback")
        if previous is not None:
            self._bundle_for(agent, previous)
        # only if what is active is still what the target was computed from (two rollbacks, or a
        # rollback and a promotion at once, must not both act on the same "current")
        return self._activate(
            environment, agent, previous, "rollback", actor, reason, evidence=window, expect_current=current
        )

    def rehearse(self, environment: str, agent: str, digest: str | None, actor: Principal) -> Release:
        """Activate `digest` (None: withdraw the agent) in a non-production environment as part
        of a rollback rehearsal."""
        env = self._environment(environment)
        if env.tier == "production":
            raise ReleaseForbiddenError(
                "rollback rehearsals run outside production", rule="release.rehearsal_not_in_production"
            )
        if digest is not None:
            self._bundle_for(agent, digest)
        return self._activate(environment, agent, digest, "rehearsal", actor, "rollback rehearsal")

    # ---- internals -----------------------------------------------------------------------------

    def _gate_evidence(self, digest: str, target: str) -> dict[str, Any]:
        """The gates `target` requires, each passed on exactly this digest; else refuse."""
        from voxgate.governance import gates

        env = self._environment(target)
        if not env.settings.gates:
            return dict(NO_GATES)
        missing = gates.missing_gates(self.db, digest, env)
        if missing:
            agent = self._agent_of(digest)
            raise ReleaseConflictError(
                f"gates required for '{target}' have not passed on {digest}: "
                + "; ".join(missing)
                + f" — run them first (voxgate gates run --agent {agent} --for {target})",
                rule="gates.not_passed",
            )
        return {
            "gates": [
                {
                    "gate": st.spec.name,
                    "run_id": st.run.id if st.run else None,
                    "status": st.run.status if st.run else None,
                }
                for st in gates.gate_status(self.db, digest, env)
            ]
        }

    def _blocking_checklist(self, agent: str, target: str, digest: str) -> list[str]:
        from voxgate.governance import checklist

        report = checklist.evaluate(self.db, self.config, agent, target, digest=digest)
        return [f"{item.id}: {item.detail}" for item in report.blocking()]

    def _how_to_reach(self, environment: str, agent: str) -> str:
        """The step that makes `agent` active in `environment`, for refusals."""
        if self._environment(environment).tier == "development":
            return f"deploy it there (voxgate release deploy --env {environment} --agent {agent} --bundle FILE)"
        return f"promote it there (voxgate release promote --env {environment} --agent {agent})"

    def _bundle_row(self, digest: str) -> BundleRow | None:
        with self.db.orm() as orm:
            return orm.get(BundleRow, digest)

    def _agent_of(self, digest: str) -> str:
        with self.db.orm() as orm:
            row = orm.get(BundleRow, digest)
        return row.agent if row is not None else "AGENT"

    def _environment(self, name: str) -> Any:
        env = self.config.environments.get(name)
        if env is None:
            known = ", ".join(self.config.environments)
            raise ReleaseNotFoundError(f"unknown environment '{name}' (known: {known})")
        return env

    def _previous(self, name: str) -> str:
        order = list(self.config.environments)
        index = order.index(name)
        if index == 0:
            raise ReleaseConflictError(f"'{name}' is the first environment: deploy to it instead")
        return order[index - 1]

    def _bundle_for(self, agent: str, digest: str) -> Any:
        try:
            stored = bundle_store.load_stored(self.db, digest)
        except bundle_store.BundleLoadError as exc:
            raise ReleaseConflictError(str(exc), rule="bundle.integrity") from None
        if stored.agent != agent:
            raise ReleaseConflictError(f"bundle {digest} is agent '{stored.agent}', not '{agent}'")
        return stored

    def _dlp_evidence(self, bundle: Any, environment: str) -> dict[str, Any]:
        env = self._environment(environment)
        exceptions = dlp.active_exceptions(self.db, environment, now=self.clock())
        report = dlp.check_bundle(bundle.source, env, exceptions, now=self.clock())
        if report.violations:
            first = report.violations[0]
            raise ReleaseConflictError("; ".join(f"{v.rule}: {v.message}" for v in report.violations), rule=first.rule)
        return {
            "dlp": {
                "environment": environment,
                "violations": 0,
                "warnings": [w if isinstance(w, str) else str(w) for w in report.warnings],
            }
        }

    def _window_check(self, environment: str, actor: Principal, override: bool, action: str) -> dict[str, Any]:
        env = self._environment(environment)
        now = self.clock()
        if env.window_open(now):
            return {}
        if not override:
            raise ReleaseConflictError(
                f"'{environment}' is outside its change window; an admin may override", rule="release.change_window"
            )
        self._audit(actor, "release.override_window", f"env:{environment}", environment, {"for": action})
        return {"change_window_override": True}

    def _activate(
        self,
        environment: str,
        agent: str,
        digest: str | None,
        action: str,
        actor: Principal,
        reason: str,
        *,
        evidence: dict[str, Any] | None = None,
        request_id: str | None = None,
        claim: Callable[[OrmSession], None] | None = None,
        expect_current: Any = _UNCHECKED,
    ) -> Release:
        """Point (environment, agent) at `digest`, or at nothing when it is None, and record it.

        One transaction: `claim(orm)` first (a compare-and-set that raises ReleaseError to abandon
        the step), then the active pointer, read under a write lock, and the release row. With
        `expect_current`, the step is refused (409) unless that digest (None: nothing) is active."""
        try:
            with self.db.orm() as orm, orm.begin():
                if orm.get_bind().dialect.name == "sqlite":
                    # SELECT ... FOR UPDATE does not exist on SQLite: a write (that changes nothing)
                    # takes the database's write lock before anything is read, so two steps cannot
                    # both read the same active digest
                    orm.execute(
                        update(ActiveBundleRow)
                        .where(ActiveBundleRow.environment == environment, ActiveBundleRow.agent == agent)
                        .values(agent=ActiveBundleRow.agent)
                        .execution_options(synchronize_session=False)
                    )
                if claim is not None:
                    claim(orm)
                release, previous = self._point(
                    orm, environment, agent, digest, action, actor, reason, evidence, request_id, expect_current
                )
        except IntegrityError:
            # two first activations of one agent in one environment at the same moment
            raise ReleaseConflictError(
                f"'{agent}' in '{environment}' was changed by another step at the same moment; "
                "look at its history and try again",
            ) from None
        self._audit(
            actor,
            f"release.{action}",
            f"agent:{agent}",
            environment,
            {
                "digest": digest,
                "previous_digest": previous,
                "release_id": release.id,
                "request_id": request_id,
                "withdrawn": True if digest is None else None,
            },
        )
        self._changed(environment, agent, digest)
        return release

    def _changed(self, environment: str, agent: str, digest: str | None) -> None:
        """Tell `on_change` that the step is committed; a failure there is logged, never the step's."""
        if self.on_change is None:
            return
        try:
            self.on_change(environment, agent, digest)
        except Exception:  # the release is done; the other workers still see it within their poll
            log.exception("telling the workers about the new release of %s in %s failed", agent, environment)

    def _point(
        self,
        orm: OrmSession,
        environment: str,
        agent: str,
        digest: str | None,
        action: str,
        actor: Principal,
        reason: str,
        evidence: dict[str, Any] | None,
        request_id: str | None,
        expect_current: Any,
    ) -> tuple[Release, str | None]:
        active = orm.get(ActiveBundleRow, (environment, agent), with_for_update=True, populate_existing=True)
        previous = active.digest if active else None
        if expect_current is not _UNCHECKED and previous != expect_current:
            if previous is None:
                step = "roll back" if action == "rollback" else action
                raise ReleaseConflictError(
                    f"nothing to {step}: '{agent}' is no longer active in '{environment}' "
                    "(another step changed it meanwhile)",
                )
            raise ReleaseConflictError(
                f"'{agent}' in '{environment}' changed meanwhile (now {previous}): look at its history and try again",
            )
        row = ReleaseRow(
            environment=environment,
            agent=agent,
            digest=digest,
            previous_digest=previous,
            action=action,
            actor_id=actor.id,
            reason=reason,
            request_id=request_id,
            evidence=evidence or {},
            created_at=self.clock(),
        )
        orm.add(row)
        orm.flush()
        if digest is None:
            if active is not None:
                orm.delete(active)
        elif active is None:
            orm.add(
                ActiveBundleRow(
                    environment=environment, agent=agent, digest=digest, release_id=row.id, updated_at=self.clock()
                )
            )
        else:
            active.digest = digest
            active.release_id = row.id
            active.updated_at = self.clock()
        return Release.of(row), previous

    def _audit(
        self,
        actor: Principal,
        action: str,
        resource: str,
        environment: str,
        data: dict[str, Any],
        outcome: Outcome = "ok",
    ) -> None:
        self.audit.append(
            AuditEvent(
                actor=actor.audit_actor,
                action=action,
                resource=resource,
                environment=environment,
                outcome=outcome,
                data={k: v for k, v in data.items() if v is not None},
            )
        )


def _rowcount(orm: OrmSession, statement: Update) -> int:
    """How many rows an UPDATE changed (a compare-and-set: 1 if it won)."""
    result: CursorResult[Any] = orm.execute(statement)  # type: ignore[assignment]
    return result.rowcount


def _not_approved(request_id: str, status: str | None) -> ReleaseConflictError:
    """The refusal of a publish whose request is not (or no longer) approved."""
    step = {
        "pending": "it needs an approver's approval first",
        "rejected": "it was rejected; ask for a new publish",
        "published": "it is already published",
    }.get(status or "", "only an approved request is published")
    return ReleaseConflictError(f"publish request {request_id} is {status}, not approved: {step}")


def text_sha256(text: str) -> str:
    """What the audit chain keeps of free text (comments, names typed at sign-in): its hash."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
