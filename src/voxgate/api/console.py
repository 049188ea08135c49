"""What the admin console needs beyond the area routers: the console page itself, what the signed-in
user may do (so the page hides what the server would refuse anyway), the user names behind the ids in
records, one environment's settings (its alert rules included), gate runs with who ran them, and KPIs
over time for the charts. Also the page a browser gets for an unknown address (install_not_found_page).

The console is static files (`console/static/admin/`): plain ES modules and CSS written for voxgate,
no third-party code and nothing fetched from outside, so it works air-gapped. Every action it
offers goes through the guarded API routes; hiding a button is a courtesy, the Cedar policies decide.
"""

from __future__ import annotations

import asyncio
import html
import re
from importlib import resources
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel, Field
from sqlalchemy import select
from starlette.exceptions import HTTPException as StarletteHTTPException

from voxgate.api.auth import default_resource, env_from_path, env_from_query, guard
from voxgate.api.state import AppState, get_state
from voxgate.errors import InvalidError, NotFoundError
from voxgate.governance.actions import ACTIONS
from voxgate.governance.policy import PolicyContext, Resource
from voxgate.governance.principals import Principal
from voxgate.observe.analytics import Series, parse_duration, parse_since, series
from voxgate.store.models import BundleRow, GateRunRow, PublishRequestRow, UserRow

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


def _console_html(status_code: int = 200) -> HTMLResponse:
    page = resources.files("voxgate.console").joinpath("static", "admin", "index.html").read_text("utf-8")
    return HTMLResponse(
        page,
        status_code=status_code,
        headers={
            "Content-Security-Policy": CONTENT_SECURITY_POLICY,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "same-origin",
            "Cache-Control": "no-cache",
        },
    )


@router.get("/console/", response_class=HTMLResponse, include_in_schema=False)
def console_page() -> HTMLResponse:
    return _console_html()


@router.get("/console/{rest:path}", response_class=HTMLResponse, include_in_schema=False)
def console_unknown_page(rest: str, request: Request) -> HTMLResponse:
    """A mistyped console address: the console page itself, answered 404 (its router says the page
    was not found and links back); API clients get the usual JSON 404."""
    if not wants_html(request):
        raise NotFoundError("Not Found")
    return _console_html(404)


# ---- unknown addresses ---------------------------------------------------------------------------


def _accept_quality(accept: str, *types: str) -> float:
    """The highest quality `accept` gives any of `types` by name (wildcards do not count)."""
    best = 0.0
    for part in accept.split(","):
        fields = [f.strip() for f in part.split(";")]
        if fields[0].lower() not in types:
            continue
        q = 1.0
        for param in fields[1:]:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        best = max(best, q)
    return best


def wants_html(request: Request) -> bool:
    """Whether a browser asks for this address to show it as a page: it names text/html in its Accept
    header at least as highly as JSON. Nothing under /api/ is a page."""
    path = request.url.path
    if path == "/api" or path.startswith("/api/"):
        return False
    accept = request.headers.get("accept", "")
    page = _accept_quality(accept, "text/html", "application/xhtml+xml")
    return page > 0 and page >= _accept_quality(accept, "application/json")


NOT_FOUND_CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self' data:; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)


def not_found_page(path: str) -> str:
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Page not found — voxgate</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/static/admin/console.css">
</head>
<body>
<header class="topbar"><a class="brand" href="/console/">voxgate</a></header>
<main id="main" class="not-found">
<h1>Page not found</h1>
<p>There is no page at <code>{html.escape(path)}</code> on this voxgate server.</p>
<ul>
<li><a href="/console/">The admin console</a></li>
<li><a href="/phone">The browser phone</a></li>
<li><a href="/desk">The live-agent desk</a></li>
</ul>
</main>
</body>
</html>
"""


def install_not_found_page(app: FastAPI) -> None:
    """Answer a browser that opens an unknown address with a small HTML page that links to the
    console, the phone and the desk (a console address gets the console, whose router says so).
    API clients keep the JSON 404: everything under /api/, and any request that does not ask for HTML."""
    if getattr(app.state, "voxgate_not_found_page", False):
        return
    app.state.voxgate_not_found_page = True

    async def not_found(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 404 and request.scope.get("type") == "http" and wants_html(request):
            path = request.url.path
            if path.startswith("/console/"):
                return _console_html(404)
            return HTMLResponse(
                not_found_page(path),
                status_code=404,
                headers={
                    "Content-Security-Policy": NOT_FOUND_CSP,
                    "X-Content-Type-Options": "nosniff",
                    "Cache-Control": "no-cache",
                },
            )
        return await http_exception_handler(request, exc)

    app.add_exception_handler(StarletteHTTPException, not_found)  # type: ignore[arg-type]


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


def _allowed(
    state: AppState,
    principal: Principal,
    env_name: str | None,
    resource: Resource | None = None,
    actions: list[str] | None = None,
) -> list[str]:
    env = state.governance.environments.get(env_name) if env_name else None
    tier = env.tier if env is not None else ""
    context = PolicyContext(
        environment=env_name or "",
        tier=tier,
        in_change_window=env.window_open(state.clock()) if env is not None else True,
    )
    out = []
    for action in actions or list(ACTIONS):
        target = resource or default_resource(action, principal, env_name, tier)
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
            request_id, bundle.author_id if bundle else "", row.requested_by, row.target_environment
        )


@router.get("/api/me/permissions", response_model=PermissionsOut)
async def my_permissions(
    publish_request: str | None = None,
    state: AppState = Depends(get_state),
    principal: Principal = Depends(guard("token.manage_own", "GET", "/api/me/permissions")),
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
                on_request = RequestPermissions(
                    id=publish_request,
                    actions=_allowed(state, principal, target, resource, ["publish.approve", "bundle.publish"]),
                )
        return PermissionsOut(
            user={
                "id": principal.id,
                "username": principal.username,
                "roles": {env: sorted(r) for env, r in principal.roles.items()},
            },
            worker_environment=state.settings.environment,
            environments=envs,
            global_actions=_allowed(state, principal, None),
            publish_request=on_request,
        )

    return await asyncio.to_thread(decide)


# ---- who is who -----------------------------------------------------------------------------------

# reading any of these shows records that name users by id (bundle authors, publish requests,
# releases, gate runs, audit events, DLP exceptions, incident timelines)
NAMING_READS = [
    "user.read",
    "bundle.read",
    "release.read",
    "audit.read",
    "policy.read",
    "environment.read",
    "incident.read",
    "dlp.exception.grant",
]
USER_ID = re.compile(r"^(?:user:)?([0-9a-f]{8,64})(?:/token:\w+)?$")
MAX_PEOPLE = 500


class PeopleOut(BaseModel):
    names: dict[str, str] = Field(description="user id → user name, for the ids asked about that are users")


def _user_id(ref: str | None) -> str | None:
    """The user id in a user id or an audit actor ("user:ID", "user:ID/token:ID"); None for others."""
    m = USER_ID.match(ref or "")
    return m.group(1) if m else None


def user_names(state: AppState, refs: set[str]) -> dict[str, str]:
    """User names for user ids (or audit actors naming users); ids that are not users are left out."""
    ids = {i for i in (_user_id(r) for r in refs) if i}
    if not ids:
        return {}
    with state.db.orm() as orm:
        return {uid: name for uid, name in orm.execute(select(UserRow.id, UserRow.username).where(UserRow.id.in_(ids)))}


@router.get("/api/people", response_model=PeopleOut)
async def people(
    ids: str = Query("", description="comma-separated user ids (or audit actors such as user:ID)"),
    state: AppState = Depends(get_state),
    principal: Principal = Depends(guard("token.manage_own", "GET", "/api/people")),
) -> PeopleOut:
    """The user names behind user ids that the console shows in records (who uploaded, requested,
    approved, released, ran a gate, acted in the audit log). Answered for users whose roles let them
    read some record that names users; others get no names."""

    def read() -> PeopleOut:
        refs = {r.strip() for r in ids.split(",") if r.strip()}
        if len(refs) > MAX_PEOPLE:
            raise InvalidError(f"at most {MAX_PEOPLE} ids at a time")
        envs = [None, *state.governance.environments]
        if not any(_allowed(state, principal, env, actions=NAMING_READS) for env in envs):
            return PeopleOut(names={})
        return PeopleOut(names=user_names(state, refs))

    return await asyncio.to_thread(read)


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
async def environment_detail(
    env: str,
    state: AppState = Depends(get_state),
    _: Principal = Depends(guard("environment.read", "GET", "/api/environments/{env}", env_from_path)),
) -> EnvironmentOut:
    """One environment's configuration as loaded from environments.yaml, and what is active in it."""
    cfg = state.governance.environments.get(env)
    if cfg is None:
        raise NotFoundError(f"unknown environment '{env}'")
    active = await asyncio.to_thread(state.releases.active_all, env)
    settings = cfg.settings.model_dump(mode="json")
    settings["webhooks"] = [shown_webhook(w) for w in cfg.settings.webhooks]
    order = list(state.governance.environments)
    url = state.settings.environment_urls.get(env)
    return EnvironmentOut(
        name=env,
        tier=cfg.tier,
        description=cfg.description,
        position=order.index(env),
        previous=state.governance.previous_environment(env),
        next=state.governance.next_environment(env),
        requires_approval=cfg.requires_approval,
        change_windows=[w.model_dump(mode="json") for w in cfg.change_windows],
        change_window_open=cfg.window_open(state.clock()),
        secret_scope=cfg.secret_scope.model_dump(mode="json"),
        settings=settings,
        active={a["agent"]: a["digest"] for a in active},
        served_here=env == state.settings.environment,
        worker_url=url,
    )


# ---- KPIs over time ------------------------------------------------------------------------------


@router.get("/api/stats/series", response_model=Series)
def stats_series(
    env: str | None = None,
    agent: str | None = None,
    since: str = "24h",
    bucket: str | None = None,
    state: AppState = Depends(get_state),
    _: Principal = Depends(guard("analytics.read", "GET", "/api/stats/series", env_from_query)),
) -> Series:
    """Sessions, outcomes, escalation/resolution/completion rates and voice-to-voice p50/p95 per time
    bucket (every bucket since `since`, empty ones included), plus the totals over the whole window."""
    start = parse_since(since)
    width = parse_duration(bucket) if bucket else None
    try:
        return series(state.db, since=start, bucket=width, environment=env or None, agent=agent or None)
    except ValueError as exc:  # a window the calendar cannot hold (e.g. since year 1): datetime's own ValueError
        raise InvalidError(str(exc)) from None


# ---- gate runs -----------------------------------------------------------------------------------


class GateRunOut(BaseModel):
    id: str
    gate: str
    digest: str
    status: str = Field(description="passed, failed or error")
    ran_in: str = Field(description="the environment whose runtime and policies it ran against")
    actor: str = Field(description="who ran it, as the audit log names them (user:ID, user:ID/token:ID)")
    actor_name: str | None = Field(description="the user name of the actor, when it is a user")
    started_at: str
    duration_ms: float


@router.get("/api/environments/{env}/agents/{agent}/gate-runs", response_model=list[GateRunOut])
async def gate_runs_list(
    env: str,
    agent: str,
    digest: str | None = None,
    limit: int = Query(50, ge=1, le=500),
    state: AppState = Depends(get_state),
    _: Principal = Depends(
        guard("release.read", "GET", "/api/environments/{env}/agents/{agent}/gate-runs", env_from_path)
    ),
) -> list[GateRunOut]:
    """Every stored run of a gate on AGENT's versions for entering ENV (optionally one digest's),
    newest first, with who ran each."""
    if env not in state.governance.environments:
        raise NotFoundError(f"unknown environment '{env}'")

    def read() -> list[GateRunOut]:
        stmt = (
            select(GateRunRow)
            .where(GateRunRow.agent == agent, GateRunRow.target_environment == env)
            .order_by(GateRunRow.started_at.desc())
            .limit(limit)
        )
        if digest:
            stmt = stmt.where(GateRunRow.digest == digest)
        with state.db.orm() as orm:
            rows = list(orm.scalars(stmt))
        names = user_names(state, {r.actor_id for r in rows})
        return [
            GateRunOut(
                id=r.id,
                gate=r.gate,
                digest=r.digest,
                status=r.status,
                ran_in=r.ran_in,
                actor=r.actor_id,
                actor_name=names.get(_user_id(r.actor_id) or ""),
                started_at=r.started_at.isoformat(),
                duration_ms=r.duration_ms,
            )
            for r in rows
        ]

    return await asyncio.to_thread(read)
