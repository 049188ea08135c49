"""Who is asking: a signed-in user (by password session or API token) or an anonymous caller."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True)
class Principal:
    """The subject of an authorisation question.

    `roles` maps an environment name (or "*" for every environment) to the roles bound there.
    `scopes` is None for a console session (the user's full roles apply) or the scopes of the
    API token used, which can only narrow what the roles allow (e.g. {"release.*"}).
    """

    kind: Literal["user", "caller"]
    id: str
    username: str = ""
    roles: Mapping[str, frozenset[str]] = field(default_factory=dict)
    scopes: frozenset[str] | None = None
    token_id: str | None = None

    @classmethod
    def caller(cls, session_hint: str = "anonymous") -> Principal:
        """A caller on a voice or chat channel: no roles, known by a session hint."""
        return cls(kind="caller", id=session_hint)

    def roles_in(self, environment: str | None) -> frozenset[str]:
        """The roles that apply to a request about `environment` (plus roles bound everywhere)."""
        everywhere = self.roles.get("*", frozenset())
        if environment is None:
            return everywhere
        return everywhere | self.roles.get(environment, frozenset())

    def all_roles(self) -> frozenset[str]:
        """Every role bound to the principal, in any environment."""
        out: frozenset[str] = frozenset()
        for roles in self.roles.values():
            out |= roles
        return out

    @property
    def audit_actor(self) -> str:
        """How the audit chain names this principal: ids, never names or contact details."""
        if self.kind == "caller":
            return "caller"
        return f"user:{self.id}" + (f"/token:{self.token_id}" if self.token_id else "")
