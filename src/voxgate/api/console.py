"""What the admin console needs beyond the area routers: the console page itself, what the signed-in
user may do (so the page hides what the server would refuse anyway), one environment's settings
(its alert rules included) and KPIs over time for the charts.

The console is static files (`console/static/admin/`): plain ES modules and CSS written for voxgate,
no third-party code and nothing fetched from outside, so it works air-gapped. Every action it
offers goes through the guarded API routes; hiding a button is a courtesy, the Cedar policies decide.
"""

from __future__ import annotations

import asyncio
from importlib import resources
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from fastapi import APIRouter, Depends, HTTPException
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import BaseModel, Field

from voxgate.api.auth import _default_resource, env_from_path, env_from_query, guard
from voxgate.api.state import AppState, get_state
from voxgate.governance.actions import ACTIONS
from voxgate.governance.policy import PolicyContext, Resource
from voxgate.governance.principals import Principal
from voxgate.observe.analytics import Series, parse_duration, parse_since, series
from voxgate.store.models import BundleRow, PublishRequestRow

router = APIRouter(tags=["console"])

# The console's page: its own scripts, styles and frames only (the phone is embedded from this origin).
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "frame-src 'self'; media-src 'self' blob:; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)


@router.get("/console", include_in_schema=False)
def console_redirect() -> RedirectResponse:
    return RedirectResponse("/console/", status_code=307)


@router.get("/console/", response_class=HTMLResponse, include_in_schema=False)
def console_page() -> HTMLResponse:
    page = resources.files("voxgate.console").joinpath("static", "admin", "index.html").read_text("utf-8")
    return HTMLResponse(page, headers={"Content-Security-Policy": CONTENT_SECURITY_POLICY,
                                       "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin",
                                       "Cache-Control": "no-cache"})


# ---- what the signed-in user may do ------------------------------------------------------------------


class RequestPermissions(BaseModel):
    id: str
    actions: list[str] = Field(description="of publish.approve and bundle.publish, those allowed on this request")


class PermissionsOut(BaseModel):
    user: dict[str, Any]
    worker_environment: str = Field(description="the environment this worker serves (sessions, incidents)")
    environments: dict[str, list[str]] = Field(description="environment → actions allowed there")
    global_actions: list[str] = Field(description="actions on global resources (the audit log, the user directory)")
    publish_request: RequestPermissions | None = None


def _allowed(state: AppState, principal: Principal, env_name: str | None,
             resource: Resource | None = None, actions: list[str] | None = None) -> list[str]:
    env = state.governance.environments.get(env_name) if env_name else None
    tier = env.tier if env is not None else ""
    context = PolicyContext(environment=env_name or "", tier=tier,
                            in_change_window=env.window_open(state.clock()) if env is not None else True)
    out = []
    for action in actions or list(ACTIONS):
        target = resource or _default_resource(action, principal, env_name, tier)
        if state.policy.decide(principal, action, target, context).allowed:
            out.append(action)
    return out


def _request_resource(state: AppState, request_id: str) -> tuple[str, Resource] | None:
    with state.db.orm() as orm:
        row = orm.get(PublishRequestRow, request_id)
        if row is None:
            return None
        bundle = orm.get(BundleRow, row.digest)
        return row.target_environment, Resource.publish_request(
            request_id, bundle.author_id if bundle else "", row.requested_by, row.target_environment)


@router.get("/api/me/permissions", response_model=PermissionsOut)
async def my_permissions(publish_request: str | None = None, state: AppState = Depends(get_state),
                         principal: Principal = Depends(guard("token.manage_own", "GET", "/api/me/permissions"))
                         ) -> PermissionsOut:
    """The actions the policies allow you per environment (decided now, by the same engine as every
    route), and optionally on one publish request (separation of duties depends on who wrote it)."""

    def decide() -> PermissionsOut:
        envs = {name: _allowed(state, principal, name) for name in state.governance.environments}
        on_request = None
        if publish_request:
            found = _request_resource(state, publish_request)
            if found is not None:
                target, resource = found
                on_request = RequestPermissions(id=publish_request, actions=_allowed(
                    state, principal, target, resource, ["publish.approve", "bundle.publish"]))
        return PermissionsOut(
            user={"id": principal.id, "username": principal.username,
                  "roles": {env: sorted(r) for env, r in principal.roles.items()}},
            worker_environment=state.settings.environment, environments=envs,
            global_actions=_allowed(state, principal, None), publish_request=on_request)

    return await asyncio.to_thread(decide)


# ---- one environment -----------------------------------------------------------------------------


def shown_webhook(ref: str) -> str:
    """A webhook as the console may show it: references as written, URLs without credentials or query."""
    if ref.startswith(("env:", "file:", "vault:")):
        return ref
    parts = urlsplit(ref)
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


class EnvironmentOut(BaseModel):
    name: str
    tier: str
    description: str
    position: int = Field(description="0 for the first environment of the promotion order")
    previous: str | None
    next: str | None
    requires_approval: bool
    change_windows: list[dict[str, Any]]
    change_window_open: bool
    secret_scope: dict[str, Any]
    settings: dict[str, Any] = Field(description="retention, gates, checklist, alert rules, webhooks, quotas")
    active: dict[str, str] = Field(description="agent → active digest")
    served_here: bool = Field(description="whether this worker serves the environment (its phone calls it)")
    worker_url: str | None = Field(description="the configured base URL of the environment's worker")


@router.get("/api/environments/{env}", response_model=EnvironmentOut)
async def environment_detail(env: str, state: AppState = Depends(get_state),
                             _: Principal = Depends(guard("environment.read", "GET", "/api/environments/{env}",
                                                          env_from_path))) -> EnvironmentOut:
    """One environment's configuration as loaded from environments.yaml, and what is active in it."""
    cfg = state.governance.environments.get(env)
    if cfg is None:
        raise HTTPException(404, f"unknown environment '{env}'")
    active = await asyncio.to_thread(state.releases.active_all, env)
    settings = cfg.settings.model_dump(mode="json")
    settings["webhooks"] = [shown_webhook(w) for w in cfg.settings.webhooks]
    order = list(state.governance.environments)
    url = state.settings.environment_urls.get(env)
    return EnvironmentOut(
        name=env, tier=cfg.tier, description=cfg.description, position=order.index(env),
        previous=state.governance.previous_environment(env), next=state.governance.next_environment(env),
        requires_approval=cfg.requires_approval,
        change_windows=[w.model_dump(mode="json") for w in cfg.change_windows],
        change_window_open=cfg.window_open(state.clock()), secret_scope=cfg.secret_scope.model_dump(mode="json"),
        settings=settings, active={a["agent"]: a["digest"] for a in active},
        served_here=env == state.settings.environment, worker_url=url)


# ---- KPIs over time ------------------------------------------------------------------------------


@router.get("/api/stats/series", response_model=Series)
def stats_series(env: str | None = None, agent: str | None = None, since: str = "24h", bucket: str | None = None,
                 state: AppState = Depends(get_state),
                 _: Principal = Depends(guard("analytics.read", "GET", "/api/stats/series", env_from_query))
                 ) -> Series:
    """Sessions, outcomes, escalation/resolution/completion rates and voice-to-voice p50/p95 per time
    bucket (every bucket since `since`, empty ones included), plus the totals over the whole window."""
    try:
        start = parse_since(since)
        width = parse_duration(bucket) if bucket else None
        return series(state.db, since=start, bucket=width, environment=env or None, agent=agent or None)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
