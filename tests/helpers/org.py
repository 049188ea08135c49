"""An organisation for release tests: a database with a maker, an approver, an operator and an
auditor, a prod worker's settings, and uploads through its API."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from tests.helpers.policies import mechanics_policies
from voxgate.config import Settings
from voxgate.governance import bundle_store
from voxgate.governance.environments import load_governance
from voxgate.governance.identity import Identity
from voxgate.signing import KeyPair
from voxgate.store.db import Database

PASSWORD = "correct horse battery staple"


def add_user(identity: Identity, name: str, *bindings: tuple[str, str]) -> str:
    """A new user bound to each (environment, role) of `bindings`; returns an API token of theirs."""
    user = identity.create_user(name, PASSWORD)
    for env, role in bindings:
        identity.bind_role(user.id, env, role, None)
    token, _ = identity.create_token(user.id, "test", ["*"], 1)
    return token


def bearer(token: str) -> dict[str, str]:
    """The headers of a request made with `token`."""
    return {"Authorization": f"Bearer {token}"}


class Org:
    """A database with a maker, an approver, an operator and an auditor, and a prod worker's API."""

    def __init__(self, db_url: str, data_dir: Path):
        """`db_url`: a database at the head revision holding nothing (the `db_url` fixture's)."""
        db = Database(db_url)
        db.migrate()  # a no-op at head, as a worker's start-up is
        identity = Identity(db)
        self.maker = add_user(identity, "mia", ("dev", "maker"), ("test", "maker"), ("prod", "maker"))
        self.approver = add_user(identity, "aaron", ("prod", "approver"))
        self.operator = add_user(identity, "olga", ("prod", "operator"))
        self.auditor = add_user(identity, "audrey", ("*", "auditor"))
        maker = identity.find_user("mia")
        assert maker is not None
        self.maker_id = maker.id
        db.dispose()
        self.db_url = db_url
        self.key = KeyPair.generate()
        self.settings = Settings(
            data_dir=data_dir, database_url=db_url, environment="prod", policy_dir=mechanics_policies(data_dir.parent)
        )
        self.config = load_governance(self.settings.policy_dir)

    def build(self, agent_dir: Path, env: str = "prod") -> bundle_store.BuiltBundle:
        """The agent at `agent_dir` built for `env` and signed with the maker's key."""
        return bundle_store.build_bundle(agent_dir, self.config.get(env), [], self.key, self.maker_id)


def upload_built(client: TestClient, org: Org, built: bundle_store.BuiltBundle, env: str = "dev") -> dict[str, Any]:
    """A built bundle uploaded to `env` by the maker (asserted accepted); the API's answer."""
    body = {
        "archive": base64.b64encode(built.archive).decode(),
        "signature": built.signature,
        "key_id": built.key_id,
        "manifest": built.manifest,
    }
    r = client.post(f"/api/environments/{env}/bundles", json=body, headers=bearer(org.maker))
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]
