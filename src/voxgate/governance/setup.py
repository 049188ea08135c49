"""Wire the governance services for one process: environments, policies, identity, audit, releases.

Used by the API server's start-up and by CLI commands that work on the database directly
(`voxgate init`, `voxgate audit verify`). The policy directory is `VOXGATE_POLICY_DIR` (or
the `policy_dir` setting); without one the packaged defaults apply.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from voxgate.compliance.audit import AuditEvent, AuditLog
from voxgate.config import Settings
from voxgate.governance.environments import GovernanceConfig, load_governance
from voxgate.governance.identity import Identity
from voxgate.governance.policy import PolicyEngine
from voxgate.governance.releases import ReleaseService
from voxgate.signing import KeyPair
from voxgate.store.db import Database
from voxgate.store.models import SigningKeyRow

log = logging.getLogger("voxgate.governance")


@dataclass
class Governance:
    """The governance services of one installation: configuration, policy, identity, audit and releases."""

    config: GovernanceConfig
    policy: PolicyEngine
    identity: Identity
    audit: AuditLog
    releases: ReleaseService
    server_key: KeyPair


def server_key(settings: Settings, db: Database) -> KeyPair:
    """The worker's Ed25519 key for audit checkpoints (created 0600 on first start, public half registered)."""
    pair = KeyPair.load_or_create(Path(settings.data_dir) / "keys" / "audit-signing-key.pem")
    with db.orm() as orm, orm.begin():
        if orm.get(SigningKeyRow, pair.key_id) is None:
            orm.add(SigningKeyRow(key_id=pair.key_id, user_id=None, purpose="audit", public_key=pair.public.b64))
    return pair


def open_governance(settings: Settings, db: Database) -> Governance:
    """Load the governance configuration and policies and open the services on `db`."""
    policy_dir = settings.policy_dir
    config = load_governance(policy_dir)
    if settings.environment not in config.environments:
        known = ", ".join(config.environments)
        raise ValueError(f"environment '{settings.environment}' is not defined in environments.yaml (known: {known})")
    policy = PolicyEngine.load(policy_dir)
    key = server_key(settings, db)
    audit = AuditLog(db, signer=key)
    return Governance(
        config=config,
        policy=policy,
        identity=Identity(db),
        audit=audit,
        releases=ReleaseService(db, config, audit),
        server_key=key,
    )


def setup_governance(state: Any) -> None:
    """Attach the governance services to the API's AppState (blocking: run in a thread)."""
    from voxgate.compliance.recorder import sql_recorder

    gov = open_governance(state.settings, state.db)
    state.governance = gov.config
    state.policy = gov.policy
    state.identity = gov.identity
    state.audit = gov.audit
    state.releases = gov.releases
    state.recorder = sql_recorder(state.db, audit=gov.audit)
    gov.audit.append(
        AuditEvent(
            actor="system",
            action="server.start",
            resource=f"env:{state.settings.environment}",
            environment=state.settings.environment,
            data={"policy": gov.policy.policy_digest[:16]},
        )
    )
