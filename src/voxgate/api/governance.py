"""Control-plane routes: sign-in, users and roles, tokens and keys, environments and DLP,
bundles, the release pipeline and the audit chain. Thin: parse, authorise, call the domain."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import logging
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, Field

from voxgate.api.auth import (
    SESSION_COOKIE,
    Target,
    audit_name,
    client_address,
    env_from_path,
    guard,
    refused_anonymously,
)
from voxgate.api.state import AppState, get_state
from voxgate.compliance.audit import AuditEvent
from voxgate.errors import ConflictError, ForbiddenError, InvalidError, NotFoundError, UnavailableError
from voxgate.governance import bundle_store, dlp
from voxgate.governance.environments import EnvironmentConfig
from voxgate.governance.policy import Resource
from voxgate.governance.principals import Principal
from voxgate.governance.releases import text_sha256
from voxgate.governance.throttle import Refusal
from voxgate.signing import PublicKey
from voxgate.store.models import BundleRow, PublishRequestRow, SigningKeyRow

router = APIRouter(tags=["governance"])
log = logging.getLogger("voxgate.api")


# ---- sign-in ----------------------------------------------------------------------------------------


class LoginIn(BaseModel):
    username: str = Field(min_length=1, max_length=100)
    password: str = Field(min_length=1, max_length=1000)


#: why a sign-in is refused when failed sign-ins cannot be counted (the cluster's count is unreachable)
SIGN_IN_UNCOUNTED = "sign-in is unavailable right now: failed sign-ins cannot be counted; try again shortly"
SIGN_IN_RETRY_S = 5  # the Retry-After of that refusal


@router.post("/api/auth/login")
async def login(
    body: LoginIn, request: Request, response: Response, state: AppState = Depends(get_state)
) -> dict[str, Any]:
    """Sign in with a username and password: the session cookie. Failed sign-ins are throttled per username
    and per client address (429 with Retry-After, the right password too, while a key waits), across every
    worker in a cluster. When that count cannot be reached the attempt is refused with 503 before the
    password is looked at: a guesser must never get unlimited tries because Redis is away."""
    address = client_address(request)
    try:
        # one step: refused (nothing counted), or counted as a failure before the (slow) password check,
        # so guesses sent all at once count too; a success forgives it below
        step = await state.login_throttle.attempt(body.username, address)
    except UnavailableError as exc:
        log.warning("sign-in refused: failed sign-ins cannot be counted (%s)", exc)
        raise HTTPException(503, SIGN_IN_UNCOUNTED, headers={"Retry-After": str(SIGN_IN_RETRY_S)}) from None
    if isinstance(step, Refusal):  # refused before the password is looked at: the right one too
        await refused_anonymously(request, "throttled")  # counted per minute, not audited one by one
        raise HTTPException(
            429,
            f"too many failed sign-ins: try again in {step.retry_after_s} s",
            headers={"Retry-After": str(step.retry_after_s)},
        )
    failure = step
    user = await asyncio.to_thread(state.identity.authenticate_password, body.username, body.password)
    if user is None:
        username_sha256 = text_sha256(body.username)
        events = [
            AuditEvent(
                actor="anonymous",
                action="auth.login",
                resource="directory",
                outcome="denied",
                data={"username_sha256": username_sha256},
            )
        ]
        events += [
            AuditEvent(
                actor="anonymous",
                action="auth.lockout",
                resource="directory",
                outcome="denied",
                data={"scope": scope, "username_sha256": username_sha256, "client": address, "seconds": failure.lock_s},
            )
            for scope in failure.locked
        ]
        await asyncio.to_thread(state.audit.append, *events)
        raise HTTPException(401, "wrong username or password")
    try:
        await state.login_throttle.forgive(body.username, address)
    except UnavailableError as exc:  # the password was right: signed in all the same, the failures lapse
        log.warning("a sign-in could not be forgiven its failed attempts (%s)", exc)
    cookie = await asyncio.to_thread(state.identity.start_session, user.id)
    response.set_cookie(SESSION_COOKIE, cookie, httponly=True, samesite="strict", secure=False, max_age=12 * 3600)
    await asyncio.to_thread(
        state.audit.append,
        AuditEvent(actor=f"user:{user.id}", action="auth.login", resource=f"user:{user.id}", outcome="ok"),
    )
    return {"user": {"id": user.id, "username": user.username}}


@router.post("/api/auth/logout", status_code=204)
async def logout(request: Request, response: Response, state: AppState = Depends(get_state)) -> None:
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        await asyncio.to_thread(state.identity.end_session, cookie)
    response.delete_cookie(SESSION_COOKIE)


@router.get("/api/me")
async def me(principal: Principal = Depends(guard("token.manage_own", "GET", "/api/me"))) -> dict[str, Any]:
    return {
        "id": principal.id,
        "username": principal.username,
        "roles": {env: sorted(r) for env, r in principal.roles.items()},
        "token_scopes": sorted(principal.scopes) if principal.scopes is not None else None,
    }


class TokenIn(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    scopes: list[str] = Field(default_factory=lambda: ["*"])
    ttl_days: int = Field(default=30, ge=1, le=365)


@router.post("/api/me/tokens", status_code=201)
async def create_token(
    body: TokenIn,
    state: AppState = Depends(get_state),
    principal: Principal = Depends(guard("token.manage_own", "POST", "/api/me/tokens")),
) -> dict[str, Any]:
    if principal.scopes is not None and "*" not in principal.scopes:
        raise ForbiddenError("a scoped token cannot mint tokens")
    token, info = await asyncio.to_thread(
        state.identity.create_token, principal.id, body.name, body.scopes, body.ttl_days
    )
    await asyncio.to_thread(
        state.audit.append,
        AuditEvent(
            actor=principal.audit_actor,
            action="token.create",
            resource=f"user:{principal.id}",
            data={"token_id": info.id, "scopes": ",".join(body.scopes), "ttl_days": body.ttl_days},
        ),
    )
    return {"token": token, "id": info.id, "expires_at": info.expires_at.isoformat()}


@router.get("/api/me/tokens")
async def list_tokens(
    state: AppState = Depends(get_state),
    principal: Principal = Depends(guard("token.manage_own", "GET", "/api/me/tokens")),
) -> list[dict[str, Any]]:
    tokens = await asyncio.to_thread(state.identity.list_tokens, principal.id)
    return [
        {
            "id": t.id,
            "name": t.name,
            "prefix": t.prefix,
            "scopes": list(t.scopes),
            "expires_at": t.expires_at.isoformat(),
            "revoked": t.revoked_at is not None,
        }
        for t in tokens
    ]


@router.delete("/api/me/tokens/{token_id}", status_code=204)
async def revoke_token(
    token_id: str,
    state: AppState = Depends(get_state),
    principal: Principal = Depends(guard("token.manage_own", "DELETE", "/api/me/tokens/{token_id}")),
) -> None:
    """Revoke one of your own tokens. Anyone else's token, or an unknown id, is 404 alike (and audited)."""
    result = await asyncio.to_thread(state.identity.revoke_own_token, principal.id, token_id)
    # an id as long as a real one is kept as given; anything longer is kept by its hash
    shown = {"token_id": token_id} if len(token_id) <= 64 else {"token_id_sha256": text_sha256(token_id)}
    if result in ("revoked", "already_revoked"):
        data = shown if result == "revoked" else {**shown, "result": "already_revoked"}
        await asyncio.to_thread(
            state.audit.append,
            AuditEvent(actor=principal.audit_actor, action="token.revoke", resource=f"user:{principal.id}", data=data),
        )
        return
    await asyncio.to_thread(
        state.audit.append,
        AuditEvent(
            actor=principal.audit_actor,
            action="token.revoke",
            resource=f"user:{principal.id}",
            outcome="denied" if result == "not_yours" else "failed",
            data={**shown, "reason": result},
        ),
    )
    raise NotFoundError("you have no token with that id")


class KeyIn(BaseModel):
    public_key: str = Field(description="base64 of the raw 32-byte Ed25519 public key")


@router.post("/api/me/keys", status_code=201)
async def register_key(
    body: KeyIn,
    state: AppState = Depends(get_state),
    principal: Principal = Depends(guard("token.manage_own", "POST", "/api/me/keys")),
) -> dict[str, Any]:
    try:
        key = PublicKey.from_b64(body.public_key)
    except Exception:
        raise InvalidError("public_key must be base64 of a raw 32-byte Ed25519 public key") from None

    def store() -> None:
        with state.db.orm() as orm, orm.begin():
            existing = orm.get(SigningKeyRow, key.key_id)
            if existing is not None and existing.user_id != principal.id:
                raise ConflictError("that key is registered to someone else")
            if existing is None:
                orm.add(SigningKeyRow(key_id=key.key_id, user_id=principal.id, purpose="bundle", public_key=key.b64))

    await asyncio.to_thread(store)
    await asyncio.to_thread(
        state.audit.append, AuditEvent(actor=principal.audit_actor, action="key.register", resource=f"key:{key.key_id}")
    )
    return {"key_id": key.key_id}


# ---- users and roles --------------------------------------------------------------------------------


class UserIn(BaseModel):
    username: str
    password: str
    display_name: str = ""


class BindingIn(BaseModel):
    environment: str = Field(description="an environment name, or * for every environment")
    role: str


@router.get("/api/users")
async def list_users(
    state: AppState = Depends(get_state), _: Principal = Depends(guard("user.read", "GET", "/api/users"))
) -> list[dict[str, Any]]:
    def read() -> list[dict[str, Any]]:
        users = state.identity.list_users()
        return [
            {
                "id": u.id,
                "username": u.username,
                "display_name": u.display_name,
                "active": u.is_active,
                "roles": {env: sorted(r) for env, r in state.identity.roles_of(u.id).items()},
            }
            for u in users
        ]

    return await asyncio.to_thread(read)


@router.post("/api/users", status_code=201)
async def create_user(
    body: UserIn,
    state: AppState = Depends(get_state),
    principal: Principal = Depends(guard("user.manage", "POST", "/api/users")),
) -> dict[str, Any]:
    user = await asyncio.to_thread(state.identity.create_user, body.username, body.password, body.display_name)
    await asyncio.to_thread(
        state.audit.append, AuditEvent(actor=principal.audit_actor, action="user.create", resource=f"user:{user.id}")
    )
    return {"id": user.id, "username": user.username}


@router.post("/api/users/{user_id}/roles", status_code=201)
async def bind_role(
    user_id: str,
    body: BindingIn,
    state: AppState = Depends(get_state),
    principal: Principal = Depends(guard("user.manage", "POST", "/api/users/{user_id}/roles")),
) -> dict[str, Any]:
    if body.environment != "*" and body.environment not in state.governance.environments:
        raise InvalidError(f"unknown environment '{body.environment}'")
    await asyncio.to_thread(state.identity.bind_role, user_id, body.environment, body.role, principal.id)
    await asyncio.to_thread(
        state.audit.append,
        AuditEvent(
            actor=principal.audit_actor,
            action="role.bind",
            resource=f"user:{user_id}",
            environment=body.environment if body.environment != "*" else "",
            data={"role": body.role, "scope": body.environment},
        ),
    )
    return {"user_id": user_id, "environment": body.environment, "role": body.role}


@router.delete("/api/users/{user_id}/roles", status_code=204)
async def unbind_role(
    user_id: str,
    body: BindingIn,
    state: AppState = Depends(get_state),
    principal: Principal = Depends(guard("user.manage", "DELETE", "/api/users/{user_id}/roles")),
) -> None:
    await asyncio.to_thread(state.identity.unbind_role, user_id, body.environment, body.role)
    await asyncio.to_thread(
        state.audit.append,
        AuditEvent(
            actor=principal.audit_actor,
            action="role.unbind",
            resource=f"user:{audit_name(user_id, 190)}",
            data={"role": body.role, "scope": body.environment},
        ),
    )


# ---- environments and DLP --------------------------------------------------------------------------


@router.get("/api/environments")
async def list_environments(
    state: AppState = Depends(get_state), _: Principal = Depends(guard("environment.read", "GET", "/api/environments"))
) -> list[dict[str, Any]]:
    active = await asyncio.to_thread(state.releases.active_all)
    now = state.clock()
    return [
        {
            "name": name,
            "tier": env.tier,
            "change_window_open": env.window_open(now),
            "active": {a["agent"]: a["digest"] for a in active if a["environment"] == name},
        }
        for name, env in state.governance.environments.items()
    ]


@router.get("/api/environments/{env}/dlp")
async def get_dlp(
    env: str,
    include_inactive: bool = False,
    state: AppState = Depends(get_state),
    _: Principal = Depends(guard("policy.read", "GET", "/api/environments/{env}/dlp", env_from_path)),
) -> dict[str, Any]:
    cfg = _env(state, env)
    exceptions = await asyncio.to_thread(dlp.list_exceptions, state.db, env, include_inactive=include_inactive)
    return {
        "environment": env,
        "policy": cfg.dlp.model_dump(mode="json"),
        "exceptions": [e.model_dump(mode="json") if hasattr(e, "model_dump") else e for e in exceptions],
    }


class ExceptionIn(BaseModel):
    connector: str
    rule: str
    reason: str = Field(min_length=5, max_length=2000)
    expires_at: dt.datetime
    agent: str | None = None
    host: str | None = None


@router.post("/api/environments/{env}/dlp/exceptions", status_code=201)
async def grant_exception(
    env: str,
    body: ExceptionIn,
    state: AppState = Depends(get_state),
    principal: Principal = Depends(
        guard("dlp.exception.grant", "POST", "/api/environments/{env}/dlp/exceptions", env_from_path)
    ),
) -> dict[str, Any]:
    _env(state, env)
    granted = await asyncio.to_thread(
        dlp.grant_exception,
        state.db,
        environment=env,
        connector=body.connector,
        rule=body.rule,
        reason=body.reason,
        approver_id=principal.id,
        created_by=principal.id,
        expires_at=body.expires_at,
        agent=body.agent,
        host=body.host,
        now=state.clock(),
    )
    exception_id = getattr(granted, "id", None)
    await asyncio.to_thread(
        state.audit.append,
        AuditEvent(
            actor=principal.audit_actor,
            action="dlp.exception.grant",
            resource=f"env:{env}",
            environment=env,
            data={
                "exception_id": exception_id,
                "connector": body.connector,
                "rule": body.rule,
                "expires_at": body.expires_at.isoformat(),
            },
        ),
    )
    return {"id": exception_id}


@router.delete("/api/environments/{env}/dlp/exceptions/{exception_id}")
async def revoke_exception(
    env: str,
    exception_id: str,
    state: AppState = Depends(get_state),
    principal: Principal = Depends(
        guard("dlp.exception.grant", "DELETE", "/api/environments/{env}/dlp/exceptions/{exception_id}", env_from_path)
    ),
) -> dict[str, Any]:
    """Revoke an exception from now on (the record stays)."""
    _env(state, env)
    found = [
        e
        for e in await asyncio.to_thread(dlp.list_exceptions, state.db, env, include_inactive=True)
        if e.id == exception_id
    ]
    if not found:
        raise NotFoundError(f"no DLP exception '{exception_id}' in '{env}'")
    revoked = await asyncio.to_thread(dlp.revoke_exception, state.db, exception_id, now=state.clock())
    await asyncio.to_thread(
        state.audit.append,
        AuditEvent(
            actor=principal.audit_actor,
            action="dlp.exception.revoke",
            resource=f"env:{env}",
            environment=env,
            data={"exception_id": exception_id},
        ),
    )
    return revoked.model_dump(mode="json")


# ---- bundles ---------------------------------------------------------------------------------------


def _environment_param(request: Request) -> Target:
    """Reads that may be asked as a reader of one environment (`?environment=`): the roles bound there count."""
    return Target(environment=request.query_params.get("environment") or None)


class BundleIn(BaseModel):
    archive: str = Field(description="base64 of the .vxb archive from `voxgate bundle build`")
    signature: str
    key_id: str
    manifest: dict[str, Any] | None = Field(None, description="the builder's signed manifest (from the .sig file)")


@router.post("/api/environments/{env}/bundles", status_code=201)
async def upload_bundle(
    env: str,
    body: BundleIn,
    state: AppState = Depends(get_state),
    principal: Principal = Depends(guard("bundle.upload", "POST", "/api/environments/{env}/bundles", env_from_path)),
) -> dict[str, Any]:
    cfg = _env(state, env)
    if len(body.archive) > (bundle_store.MAX_ARCHIVE_BYTES + 2) // 3 * 4:
        raise bundle_store.BundleRejectedTooLarge(
            [f"the archive is larger than {bundle_store.MAX_ARCHIVE_BYTES} bytes"]
        )
    try:
        archive = base64.b64decode(body.archive, validate=True)
    except ValueError:
        raise InvalidError("archive must be base64") from None

    def accept() -> dict[str, Any]:
        with state.db.orm() as orm:
            key_row = orm.get(SigningKeyRow, body.key_id)
        if key_row is None or key_row.user_id != principal.id or key_row.revoked_at is not None:
            raise ForbiddenError("the bundle must be signed with a key registered to you (POST /api/me/keys)")
        # a refused bundle (BundleRejected, BundleFormatError) answers 422, or 413 past a size limit
        return bundle_store.accept_upload(
            state.db,
            archive,
            body.signature,
            PublicKey.from_b64(key_row.public_key),
            author_id=principal.id,
            environment=cfg,
            exceptions=dlp.active_exceptions(state.db, env, now=state.clock()),
            now=state.clock(),
            manifest=body.manifest,
        )

    stored = await asyncio.to_thread(accept)
    await asyncio.to_thread(
        state.audit.append,
        AuditEvent(
            actor=principal.audit_actor,
            action="bundle.upload",
            resource=f"bundle:{stored['digest']}",
            environment=env,
            data={"agent": stored["agent"], "key_id": body.key_id},
        ),
    )
    return stored


@router.get("/api/bundles")
async def list_bundles(
    agent: str | None = None,
    environment: str | None = None,
    state: AppState = Depends(get_state),
    _: Principal = Depends(guard("bundle.read", "GET", "/api/bundles", _environment_param)),
) -> list[dict[str, Any]]:
    """Stored bundles, newest first. `environment`: ask as a reader there (the roles bound in it count,
    e.g. an approver of prod reviewing what is to be published); every bundle is listed either way."""

    def read() -> list[dict[str, Any]]:
        return [
            {
                "digest": r["digest"],
                "agent": r["agent"],
                "version": r["version"],
                "author": r["author_id"],
                "built_for": r["built_for"],
                "created_at": r["created_at"].isoformat(),
            }
            for r in bundle_store.list_stored(state.db, agent or None)
        ]

    return await asyncio.to_thread(read)


@router.get("/api/bundles/{digest}/diff/{other}", response_class=PlainTextResponse)
async def diff_bundles(
    digest: str,
    other: str,
    environment: str | None = None,
    state: AppState = Depends(get_state),
    _: Principal = Depends(guard("bundle.read", "GET", "/api/bundles/{digest}/diff/{other}", _environment_param)),
) -> str:
    """A unified diff between two stored bundles (`environment` as for GET /api/bundles).

    Both are read back verified (digest, signatures, manifest): a row that fails is never shown."""

    def diff() -> str:
        try:
            left, right = bundle_store.load_stored(state.db, digest), bundle_store.load_stored(state.db, other)
        except bundle_store.BundleNotFoundError:
            raise NotFoundError("no such bundle") from None
        except bundle_store.BundleIntegrityError as exc:
            shown = f"bundle {exc.digest} failed verification; it is not shown"
            raise ConflictError(shown, detail={"error": shown}) from None
        return bundle_store.diff_bundles(left.archive, right.archive)

    return await asyncio.to_thread(diff)


# ---- the release pipeline --------------------------------------------------------------------------


class DeployIn(BaseModel):
    digest: str
    reason: str = ""


class ReasonIn(BaseModel):
    reason: str = ""
    override_window: bool = False


class DecisionIn(BaseModel):
    comment: str = Field(min_length=1, max_length=4000)


def _request_target(request: Request) -> Target:
    state: AppState = request.app.state.voxgate
    request_id = request.path_params.get("request_id", "")
    with state.db.orm() as orm:
        row = orm.get(PublishRequestRow, request_id)
        if row is None:
            return Target(
                resource=Resource("PublishRequest", request_id, {"author": "", "requester": "", "target": ""})
            )
        bundle = orm.get(BundleRow, row.digest)
        return Target(
            environment=row.target_environment,
            resource=Resource(
                "PublishRequest",
                request_id,
                {
                    "author": bundle.author_id if bundle else "",
                    "requester": row.requested_by,
                    "target": row.target_environment,
                },
            ),
        )


@router.post("/api/environments/{env}/agents/{agent}/deploy")
async def deploy(
    env: str,
    agent: str,
    body: DeployIn,
    state: AppState = Depends(get_state),
    principal: Principal = Depends(
        guard("bundle.deploy", "POST", "/api/environments/{env}/agents/{agent}/deploy", env_from_path)
    ),
) -> dict[str, Any]:
    release = await asyncio.to_thread(state.releases.deploy, env, agent, body.digest, principal, body.reason)
    return release.as_dict()


@router.post("/api/environments/{env}/agents/{agent}/promote")
async def promote(
    env: str,
    agent: str,
    body: ReasonIn,
    state: AppState = Depends(get_state),
    principal: Principal = Depends(
        guard("bundle.promote", "POST", "/api/environments/{env}/agents/{agent}/promote", env_from_path)
    ),
) -> dict[str, Any]:
    release = await asyncio.to_thread(state.releases.promote, agent, env, principal, body.reason)
    return release.as_dict()


@router.post("/api/environments/{env}/agents/{agent}/publish-requests", status_code=201)
async def request_publish(
    env: str,
    agent: str,
    body: ReasonIn,
    state: AppState = Depends(get_state),
    principal: Principal = Depends(
        guard("publish.request", "POST", "/api/environments/{env}/agents/{agent}/publish-requests", env_from_path)
    ),
) -> dict[str, Any]:
    return await asyncio.to_thread(state.releases.request_publish, agent, env, principal, body.reason)


@router.get("/api/publish-requests")
async def list_requests(
    status: str | None = None,
    environment: str | None = None,
    state: AppState = Depends(get_state),
    _: Principal = Depends(guard("release.read", "GET", "/api/publish-requests", _environment_param)),
) -> list[dict[str, Any]]:
    """Publish requests, newest first; `environment`: only those into it (and the roles bound there count)."""
    found = await asyncio.to_thread(state.releases.requests, status)
    return [r for r in found if not environment or r["target_environment"] == environment]


@router.post("/api/publish-requests/{request_id}/approve")
async def approve(
    request_id: str,
    body: DecisionIn,
    state: AppState = Depends(get_state),
    principal: Principal = Depends(
        guard("publish.approve", "POST", "/api/publish-requests/{request_id}/approve", _request_target)
    ),
) -> dict[str, Any]:
    return await asyncio.to_thread(state.releases.decide, request_id, principal, True, body.comment)


@router.post("/api/publish-requests/{request_id}/reject")
async def reject(
    request_id: str,
    body: DecisionIn,
    state: AppState = Depends(get_state),
    principal: Principal = Depends(
        guard("publish.approve", "POST", "/api/publish-requests/{request_id}/reject", _request_target)
    ),
) -> dict[str, Any]:
    return await asyncio.to_thread(state.releases.decide, request_id, principal, False, body.comment)


@router.post("/api/publish-requests/{request_id}/publish")
async def publish(
    request_id: str,
    body: ReasonIn,
    request: Request,
    state: AppState = Depends(get_state),
    principal: Principal = Depends(
        guard("bundle.publish", "POST", "/api/publish-requests/{request_id}/publish", _request_target)
    ),
) -> dict[str, Any]:
    if body.override_window:
        from voxgate.api.auth import authorize

        await authorize(
            state, principal, "release.override_window", Target(environment=_request_target(request).environment)
        )
    release = await asyncio.to_thread(
        state.releases.publish, request_id, principal, override_window=body.override_window, reason=body.reason
    )
    return release.as_dict()


@router.post("/api/environments/{env}/agents/{agent}/rollback")
async def rollback(
    env: str,
    agent: str,
    body: ReasonIn,
    state: AppState = Depends(get_state),
    principal: Principal = Depends(
        guard("release.rollback", "POST", "/api/environments/{env}/agents/{agent}/rollback", env_from_path)
    ),
) -> dict[str, Any]:
    if body.override_window:
        from voxgate.api.auth import authorize

        await authorize(state, principal, "release.override_window", Target(environment=env))
    release = await asyncio.to_thread(
        state.releases.rollback, env, agent, principal, reason=body.reason, override_window=body.override_window
    )
    return release.as_dict()


@router.get("/api/environments/{env}/releases")
async def history(
    env: str,
    agent: str | None = None,
    state: AppState = Depends(get_state),
    _: Principal = Depends(guard("release.read", "GET", "/api/environments/{env}/releases", env_from_path)),
) -> list[dict[str, Any]]:
    _env(state, env)
    return [r.as_dict() for r in await asyncio.to_thread(state.releases.history, env, agent)]


# ---- audit -----------------------------------------------------------------------------------------


@router.get("/api/audit/events")
async def audit_events(
    action: str | None = None,
    environment: str | None = None,
    limit: int = 100,
    state: AppState = Depends(get_state),
    _: Principal = Depends(guard("audit.read", "GET", "/api/audit/events")),
) -> list[dict[str, Any]]:
    return await asyncio.to_thread(
        state.audit.query,
        action=action,
        environment=environment,
        limit=max(1, min(limit, 1000)),
    )


@router.get("/api/audit/verify")
async def audit_verify(
    state: AppState = Depends(get_state), _: Principal = Depends(guard("audit.read", "GET", "/api/audit/verify"))
) -> dict[str, Any]:
    report = await asyncio.to_thread(state.audit.verify, state.audit_keys())
    return report.model_dump(mode="json")


def _env(state: AppState, name: str) -> EnvironmentConfig:
    """The environment `name` (404 for one not configured)."""
    env = state.governance.environments.get(name)
    if env is None:
        raise NotFoundError(f"unknown environment '{name}'")
    return env


# ---- gates and readiness ---------------------------------------------------------------------------


@router.get("/api/environments/{env}/agents/{agent}/gates")
async def gate_runs(
    env: str,
    agent: str,
    digest: str | None = None,
    state: AppState = Depends(get_state),
    _: Principal = Depends(guard("release.read", "GET", "/api/environments/{env}/agents/{agent}/gates", env_from_path)),
) -> dict[str, Any]:
    """The latest run of every gate ENV requires, on `digest` (default: the candidate in the environment before)."""
    from voxgate.governance import gates

    target = _env(state, env)
    if digest is None:
        digest = await asyncio.to_thread(
            state.releases.active, gates.environment_before(state.governance, env).name, agent
        )
    if digest is None:
        raise NotFoundError(f"no candidate digest for '{agent}' entering '{env}'")
    statuses = await asyncio.to_thread(gates.gate_status, state.db, digest, target)
    return {
        "agent": agent,
        "environment": env,
        "digest": digest,
        "gates": [
            {
                "gate": st.spec.name,
                "required": st.spec.required,
                "status": st.run.status if st.run else "never_ran",
                "run_id": st.run.id if st.run else None,
                "started_at": st.run.started_at.isoformat() if st.run else None,
                "duration_ms": st.run.duration_ms if st.run else None,
                "results": st.run.results if st.run else None,
            }
            for st in statuses
        ],
    }


@router.get("/api/environments/{env}/agents/{agent}/checklist")
async def readiness(
    env: str,
    agent: str,
    digest: str | None = None,
    state: AppState = Depends(get_state),
    _: Principal = Depends(
        guard("release.read", "GET", "/api/environments/{env}/agents/{agent}/checklist", env_from_path)
    ),
) -> dict[str, Any]:
    """The 18-item readiness checklist for AGENT entering ENV, computed now from stored evidence."""
    from voxgate.governance import checklist

    _env(state, env)
    report = await asyncio.to_thread(
        checklist.evaluate, state.db, state.governance, agent, env, digest=digest, policy=state.policy
    )
    return report.to_dict()
