"""One user per role, for tests that try every route or message as every role."""

from __future__ import annotations

from voxgate.governance.actions import ROLES
from voxgate.governance.identity import Identity

ROLE_PASSWORD = "a long enough password"


def role_users(identity: Identity) -> dict[str, str]:
    """One user per role, bound to it in every environment: {role: user id}."""
    users = {}
    for role in ROLES:
        user = identity.create_user(role.replace("_", "-"), ROLE_PASSWORD)
        identity.bind_role(user.id, "*", role, None)
        users[role] = user.id
    return users
