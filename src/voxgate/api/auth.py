"""Who is calling and whether they may: the API's single authorisation choke point.

A request carries an API token (`Authorization: Bearer vxg_…`) or a console sign-in cookie;
without either it is an anonymous caller. The cookie counts on a state-changing request (POST,
PUT, DELETE) only when it also carries `X-Voxgate-CSRF: 1`, which a page on another origin
cannot add. Every route names the action it performs (see `governance/actions.py`) through
`guard(...)`; the Cedar policies decide, deny by default, and every denial of a signed-in user is
written to the audit chain. An anonymous request's refusals are counted per minute instead (see
`api/denials.py`), and rate-limited per client address.

A route whose request carries a body is authorised before the body is read (`api/limits.py`
calls `check_request` with the route's guard, since FastAPI reads a body before it resolves
dependencies); the principal found there is kept in the request's scope for the guard.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import HTTPException, Request
from starlette.requests import HTTPConnection

from voxgate.api.denials import Reason
from voxgate.compliance.audit import AuditEvent
from voxgate.errors import InvalidError, NotFoundError
from voxgate.governance.actions import ACTIONS
from voxgate.governance.policy import PolicyContext, Resource
from voxgate.governance.principals import Principal

SESSION_COOKIE = "voxgate_session"
# A console sign-in cookie counts on a state-changing request only with this header: a page on
# another origin cannot add a custom header without a CORS preflight, which voxgate never grants.
CSRF_HEADER = "X-Voxgate-CSRF"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
DENIED_HEADER = "X-Voxgate-Denied"  # set on refusals by policy, as opposed to a domain rule's 403

#: route path template → action; filled by `guard` so tests can walk every route.
ROUTE_ACTIONS: dict[tuple[str, str], str] = {}
#: (method, path template) → (action, target): what `guard` asks, for authorising before the body is read
ROUTE_GUARDS: dict[tuple[str, str], tuple[str, Callable[..., Target] | None]] = {}
#: the request-scope key under which the principal of an already authenticated request is kept
PRINCIPAL_SCOPE_KEY = "voxgate.principal"


@dataclass(frozen=True)
class Target:
    """What a request is about: its environment (if any) and the Cedar resource."""

    environment: str | None = None
    resource: Resource | None = None


def client_address(connection: HTTPConnection) -> str:
    """The address the request came from (behind a proxy: the proxy's)."""
    return connection.client.host if connection.client is not None and connection.client.host else "unknown"


def route_template(connection: HTTPConnection) -> str:
    """The path template of the route the request matched (its raw path if none did)."""
    path = getattr(connection.scope.get("route"), "path", None)
    return path if isinstance(path, str) else connection.scope.get("path", "/")


async def refused_anonymously(connection: HTTPConnection, reason: Reason, action: str | None = None) -> None:
    """Count one refusal of an anonymous request (see `api/denials.py`: in a cluster, across its
    workers); raise 429 instead when its client address is over the limit."""
    denials = getattr(connection.app.state.voxgate, "denials", None)
    if denials is None:
        return
    retry = await denials.count(route_template(connection), client_address(connection), reason)
    if retry is not None:
        headers = {"Retry-After": str(retry), **({DENIED_HEADER: action} if action else {})}
        raise HTTPException(429, "too many refused requests from this address: try again later", headers=headers)


async def current_principal(request: Request) -> Principal:
    """Who sent `request`: the API token's or signed-in user's principal, else an anonymous caller."""
    cached = request.scope.get(PRINCIPAL_SCOPE_KEY)
    if isinstance(cached, Principal):
        return cached
    state = request.app.state.voxgate
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        token = header[7:].strip()
        principal: Principal | None = await asyncio.to_thread(state.identity.authenticate_token, token)
        if principal is None:
            await refused_anonymously(request, "invalid_token")
            raise HTTPException(401, "invalid, expired or revoked API token", headers={"WWW-Authenticate": "Bearer"})
        return principal
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        if getattr(request, "method", "GET") not in SAFE_METHODS and request.headers.get(CSRF_HEADER) != "1":
            # not honoured: the request is an anonymous caller's (who may still start a chat)
            request.state.voxgate_csrf_missing = True
            return Principal.caller()
        principal = await asyncio.to_thread(state.identity.session_principal, cookie)
        if principal is not None:
            return principal
    return Principal.caller()


def _decide(state: Any, principal: Principal, action: str, target: Target) -> tuple[bool, Resource]:
    env_name = target.environment
    env = state.governance.environments.get(env_name) if env_name else None
    tier = env.tier if env is not None else ""
    in_window = env.window_open(state.clock()) if env is not None else True
    resource = target.resource or default_resource(action, principal, env_name, tier)
    decision = state.policy.decide(
        principal,
        action,
        resource,
        # the engine applies the API token's scopes itself
        PolicyContext(environment=env_name or "", tier=tier, in_change_window=in_window),
    )
    return bool(decision.allowed), resource


def audit_name(value: str, limit: int) -> str:
    """A name from a request (a path or query parameter) as an audit field may hold it: as it is
    when it is printable and at most `limit` characters, else by its sha256 (cut to fit)."""
    if len(value) <= limit and value.isprintable():
        return value
    digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()
    return ("sha256:" + digest)[:limit]


def _denied_event(state: Any, principal: Principal, action: str, target: Target, resource: Resource) -> AuditEvent:
    # the environment and resource may be named by the request itself: never a reason to fail the refusal
    return AuditEvent(
        actor=principal.audit_actor,
        action="auth.denied",
        resource=f"{resource.type}:{audit_name(resource.id, 190)}",
        environment=audit_name(target.environment or "", 40),
        outcome="denied",
        data={"attempted": action, "policy": state.policy.policy_digest[:16]},
    )


async def authorize(
    state: Any, principal: Principal, action: str, target: Target, connection: HTTPConnection | None = None
) -> None:
    """Raise 401/403 unless the policies allow `principal` to do `action` on `target`; audit denials.

    A signed-in user's denial is one audit event. An anonymous caller's, on a request or socket
    (`connection`), is counted per minute and client address instead, and answered 429 once that
    address is over its limit.
    """
    env_name = target.environment
    allowed, resource = _decide(state, principal, action, target)
    if allowed:
        return
    if principal.kind == "caller" and connection is not None:
        await refused_anonymously(connection, "denied", action)
    else:
        await asyncio.to_thread(state.audit.append, _denied_event(state, principal, action, target, resource))
    if principal.kind == "caller" and action != "call.start":
        raise HTTPException(
            401, "sign in or send an API token", headers={"WWW-Authenticate": "Bearer", DENIED_HEADER: action}
        )
    raise HTTPException(
        403, f"not allowed: {action}" + (f" in '{env_name}'" if env_name else ""), headers={DENIED_HEADER: action}
    )


# ---- records: authorised on their own environment ---------------------------------------------------
#
# Every environment may share one database, so a worker can see rows written by the workers of
# other environments. A route that returns stored records (sessions, turns, handoffs, recordings,
# callbacks) asks the policies about each record's own environment, not the worker's.


def permits(state: Any, principal: Principal, action: str, environment: str) -> bool:
    """Whether the policies allow `action` on `environment` (nothing is audited: for filtering)."""
    return _decide(state, principal, action, Target(environment=environment))[0]


def readable_environments(state: Any, principal: Principal, action: str, candidates: Any = ()) -> list[str]:
    """The environments (configured ones and `candidates`, e.g. those found in the data) in which
    `principal` may do `action`: a list of records is filtered to these."""
    names = dict.fromkeys([*state.governance.environments, *(c for c in candidates if c)])
    return [name for name in names if permits(state, principal, action, name)]


def authorize_record(
    state: Any, principal: Principal, action: str, environment: str | None, missing: str = "not found"
) -> None:
    """Raise 404 (`missing`, as for a record that does not exist, so its existence is not confirmed)
    unless `action` is allowed on the record's own environment; the refusal is audited. Blocking:
    call it where the record was read (a worker thread)."""
    target = Target(environment=environment or "")
    allowed, resource = _decide(state, principal, action, target)
    if allowed:
        return
    state.audit.append(_denied_event(state, principal, action, target, resource))
    raise NotFoundError(missing)


async def authorize_everywhere(state: Any, principal: Principal, action: str) -> None:
    """Raise 403 unless `action` is allowed in every configured environment: for operations that
    span all of them (a data subject's records, wherever they were written)."""
    for name in state.governance.environments:
        await authorize(state, principal, action, Target(environment=name))


def default_resource(action: str, principal: Principal, env_name: str | None, tier: str) -> Resource:
    """The Cedar resource a request is about when its route names none: from the action's resource type."""
    kind = ACTIONS[action].resource
    if kind == "User":
        return Resource.user(principal.id)  # self-service routes act on the caller's own account
    if kind == "Environment" and env_name:
        return Resource.environment(env_name, tier)
    if kind == "AuditLog":
        return Resource.audit_log()
    if kind == "Directory":
        return Resource.directory()
    if kind == "Bundle":
        return Resource.bundle("*", "", "")  # reading bundles does not depend on whose they are
    if kind == "PublishRequest":
        return Resource.publish_request("*", "", "", env_name or "")
    if kind == "Agent":
        return Resource.agent("*")
    return Resource.environment(env_name or "", tier)


def guard(action: str, method: str, path: str, target: Callable[..., Target] | None = None) -> Callable[..., Any]:
    """A FastAPI dependency that authorises `action` for the route `method path`.

    `target(request)` says which environment/resource the request is about (from path or query
    parameters); it is called before the body is read, so it must not need the body.
    """
    if action not in ACTIONS:
        raise InvalidError(f"unknown action '{action}'")
    ROUTE_ACTIONS[(method, path)] = action
    ROUTE_GUARDS[(method, path)] = (action, target)

    async def dependency(request: Request) -> Principal:
        return await check_request(request, action, target)

    return dependency


async def check_request(request: Request, action: str, target: Callable[..., Target] | None) -> Principal:
    """Who sent `request` and that they may do `action` (on `target(request)`): the principal, or
    HTTPException 401/403/429. What a route's guard does; `api/limits.py` calls it before the body."""
    principal = await current_principal(request)
    where = target(request) if target is not None else Target()
    try:
        await authorize(request.app.state.voxgate, principal, action, where, request)
    except HTTPException as exc:
        if exc.status_code != 429 and getattr(request.state, "voxgate_csrf_missing", False):
            raise HTTPException(
                403,
                f"a console sign-in changes nothing without the '{CSRF_HEADER}: 1' header (cross-site request defence)",
            ) from None
        raise
    return principal


def env_from_path(request: Request) -> Target:
    return Target(environment=request.path_params.get("env"))


def env_from_query(request: Request) -> Target:
    return Target(environment=request.query_params.get("env") or request.query_params.get("environment"))
