"""The FastAPI application: wires settings, database, agent runtimes and routers together."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
from collections.abc import AsyncIterator, Sequence
from importlib import resources
from typing import Any

from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.websockets import WebSocket

from voxgate import __version__, tracing
from voxgate.api import cluster as cluster_api
from voxgate.api import console, conversations, governance, privacy, records
from voxgate.api import desk as desk_api
from voxgate.api import health as probes
from voxgate.api.limits import RequestBodyLimits
from voxgate.api.state import AppState, BundleUnavailable
from voxgate.bundle.models import BundleSource
from voxgate.channels import native, twilio
from voxgate.channels.calls import Admission
from voxgate.cluster.desk import RedisDeskState
from voxgate.cluster.lease import RedisLease
from voxgate.compliance.log_redaction import install_log_redaction
from voxgate.compliance.retention import retention_loop
from voxgate.config import Settings
from voxgate.errors import (
    ConflictError,
    ForbiddenError,
    InvalidError,
    NotFoundError,
    TooLargeError,
    UnavailableError,
    VoxgateError,
)
from voxgate.governance import dlp
from voxgate.governance.environments import load_governance
from voxgate.governance.secrets import resolve_secret, use_secrets_dir
from voxgate.governance.setup import setup_governance
from voxgate.handoff.desk import Desk
from voxgate.observe.alerts import alert_loop, rules_for
from voxgate.observe.metrics import WorkerMetrics
from voxgate.runtime.engine import AgentRuntime
from voxgate.runtime.nlu.embeddings import default_embedder
from voxgate.store.db import Database


def _api_routers() -> tuple[APIRouter, ...]:
    return (
        conversations.router,
        records.router,
        privacy.router,
        governance.router,
        console.router,  # the admin console at /console/ and the routes only it needs
        native.router,
        twilio.router,
        desk_api.router,  # the live-agent desk: /ws/desk, /api/desk/…, /api/callbacks
        cluster_api.router,  # the workers: GET /api/cluster
        probes.router,  # probes: GET /health/live and /health/ready (public, like /health)
    )


@functools.cache
def api_routes() -> tuple[BaseRoute, ...]:
    """The routers' routes, included once per process and shared by every app made in it.

    FastAPI builds an included router's endpoints (each route's dependencies and response models)
    for the app that includes it, on that app's first request: most of a new app's start. Nothing in
    them depends on the app (handlers reach their app's state through the request, and no app
    overrides dependencies), so they are built once and every app serves the same ones."""
    holder = APIRouter()
    for router in _api_routers():
        if router.on_startup or router.on_shutdown:
            raise RuntimeError("a router with start-up or shut-down hooks must be included in each app")
        holder.include_router(router)
    return tuple(holder.routes)


def _not_development(environment: str) -> str:
    return (
        f"'{environment}' is not a development environment: it serves only the bundles released to it "
        "(start without --agent-dir)"
    )


ECHO_MAX_CHARS = 200  # of one string echoed back in a 422
ECHO_MAX_ITEMS = 20  # of one list or object echoed back
FIRST_PURGE_AFTER_S = 60.0  # a worker's first retention purge, after its start (or its interval, if shorter)
_SECRET_FIELD = re.compile(r"pass|secret|token|key|pin", re.I)


def _printable(value: Any) -> Any:
    """`value` (a validation error's echo of the input) as it may be sent back: what UTF-8 cannot
    carry escaped, long strings and collections cut short, and secret-looking fields (passwords,
    tokens, keys, PINs) never echoed."""
    if isinstance(value, str):
        text = value.encode("utf-8", "backslashreplace").decode("utf-8")
        return text if len(text) <= ECHO_MAX_CHARS else f"{text[:ECHO_MAX_CHARS]}… ({len(text)} characters)"
    if isinstance(value, dict):
        items = list(value.items())[:ECHO_MAX_ITEMS]
        return {
            _printable(k): "(not shown)" if isinstance(k, str) and _SECRET_FIELD.search(k) else _printable(v)
            for k, v in items
        }
    if isinstance(value, (list, tuple)):
        return [_printable(v) for v in list(value)[:ECHO_MAX_ITEMS]]
    return value


async def _invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 with each problem, like FastAPI's own handler, but always encodable: a lone surrogate
    (JSON's "\\ud800") in a field is said plainly, and never echoed raw (which cannot be sent)."""
    errors = jsonable_encoder(exc.errors())
    for error in errors:
        if isinstance(error, dict) and any(
            isinstance(p, str) and _SECRET_FIELD.search(p) for p in error.get("loc", ())
        ):
            error["input"] = "(not shown)"  # the value of a password, token or PIN field itself
        if isinstance(error, dict) and error.get("type") == "string_unicode":
            error["msg"] = (
                "Input should be valid Unicode text: it contains a lone surrogate (an unpaired \\ud800-\\udfff escape)"
            )
    return JSONResponse(status_code=422, content={"detail": _printable(errors)})


#: the one place an error's category becomes an HTTP status; the first category it is an instance of
#: wins (TooLargeError is an InvalidError, so it comes first)
HTTP_STATUS: tuple[tuple[type[VoxgateError], int], ...] = (
    (NotFoundError, 404),
    (ConflictError, 409),
    (ForbiddenError, 403),
    (TooLargeError, 413),
    (InvalidError, 422),
    (UnavailableError, 503),
)


def http_status(exc: VoxgateError) -> int | None:
    """The HTTP status of `exc`'s category (None for an error of no category: an internal error)."""
    return next((status for category, status in HTTP_STATUS if isinstance(exc, category)), None)


def error_detail(exc: VoxgateError) -> Any:
    """What a client gets as `detail` for `exc`: its structured detail where it has one, else its message."""
    return exc.detail if exc.detail is not None else str(exc)


async def _voxgate_error(connection: Request | WebSocket, exc: VoxgateError) -> Response:
    """An error raised by the domain, answered as its category says: `{"detail": ...}` with its status,
    through the app's own HTTPException handler (so a browser still gets the page for a 404).
    A socket, or an error of no category, is left to fail as any other exception."""
    status = http_status(exc)
    if status is None or not isinstance(connection, Request):
        raise exc
    as_http = HTTPException(status, error_detail(exc))
    handler = connection.app.exception_handlers.get(StarletteHTTPException, http_exception_handler)
    return await handler(connection, as_http)  # type: ignore[no-any-return]


def install_error_mapping(app: FastAPI) -> None:
    """Answer every VoxgateError a route raises as its category says (`HTTP_STATUS`), in one place."""
    app.add_exception_handler(VoxgateError, _voxgate_error)  # type: ignore[arg-type]


def create_app(settings: Settings, bundles: Sequence[BundleSource]) -> FastAPI:
    """The voxgate worker for `settings`: development mode when `bundles` are given, else what is released."""
    install_log_redaction()  # personal data never reaches the logs
    if bundles:  # refused before anything starts, not in the middle of start-up
        env_cfg = load_governance(settings.policy_dir).environments.get(settings.environment)
        if env_cfg is not None and env_cfg.tier != "development":
            raise InvalidError(_not_development(settings.environment))
    use_secrets_dir(settings.secrets_path)  # env:NAME references also read <secrets_dir>/NAME

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        tracing.configure(settings.otel_exporter, settings.otel_endpoint)  # off (no-op spans) by default
        # intent examples' vectors: read from the folder when kept there before, else computed and kept
        default_embedder().keep_in(settings.embedding_cache_path)
        db = Database(settings.db_url)
        await asyncio.to_thread(db.migrate)
        state = AppState(
            settings=settings,
            db=db,
            admission=Admission(
                capacity=settings.voice_capacity,
                start_timeout_s=settings.voice_start_timeout_s,
                max_pending=settings.voice_pending_max,
                max_pending_per_client=settings.voice_pending_per_address,
            ),
        )
        await asyncio.to_thread(setup_governance, state)
        salt = await asyncio.to_thread(state.refs.load)  # the privacy salt (read, or made on first start)
        if state.cluster is not None:  # HTTP conversations any worker can continue, sealed under the salt
            state.sessions = conversations.shared_sessions(state, state.cluster, state.runtime_for_digest)
        # sign-ins, new conversations and anonymous refusals: counted in this process, or with the cluster
        # keyed by the privacy salt
        state.count_throttles(salt)
        quota = state.governance.environments[settings.environment].settings.quotas.max_concurrent_calls
        if quota is not None and quota < state.admission.capacity:
            state.admission.capacity = quota  # the environment's hard limit on concurrent calls
        state.metrics = WorkerMetrics(state)
        state.desk = Desk(
            db,
            state.audit,
            environment=settings.environment,
            metrics=state.metrics,
            runtimes=lambda: list(state.runtimes.values()),
            # in a cluster, one desk for every worker: presence, queues and offers in Redis
            shared=RedisDeskState(state.cluster, settings.environment) if state.cluster is not None else None,
        )
        if bundles and state.governance.environments[settings.environment].tier != "development":
            raise InvalidError(_not_development(settings.environment))
        state.managed = not bundles
        await state.start_liveness()  # register, repair what a crashed or stopped worker left open, heartbeat
        for bundle in bundles:
            state.runtimes[bundle.agent.name] = await asyncio.to_thread(
                AgentRuntime,
                bundle,
                environment=settings.environment,
                recorder=state.recorder,
                guard=state.verification_guard,
                refs=state.refs,
                host_policy=dlp.host_policy_for(
                    db,
                    state.governance.environments[settings.environment],
                    agent=bundle.agent.name,
                    connectors=bundle.agent.connectors,
                    now=state.clock,
                ),
                secrets=resolve_secret,
            )
        app.state.voxgate = state
        if state.managed:
            # load what this environment serves now, so the first caller does not wait for it
            # (and speech warm-up below knows the agents' voices and fixed prompts)
            for active in await asyncio.to_thread(state.releases.active_all, settings.environment):
                try:
                    await state.runtime_for(active["agent"])
                except BundleUnavailable:
                    pass  # refused and audited; calls to it get 503
        # in a cluster (settings.redis_url): the worker directory, release notices (state.start_cluster)
        await state.start_cluster()
        worker_id = state.liveness.worker_id if state.liveness is not None else None
        if state.cluster is not None and worker_id is not None:
            await state.desk.start(worker_id)  # one desk for the cluster: events, renewals
        if settings.voice_preload:
            await state.voice_engines()
            if state.warming is not None:
                await state.warming
        reaper = asyncio.create_task(state.sessions.reap_forever())
        env_cfg = state.governance.environments[settings.environment]
        alerting = (
            asyncio.create_task(
                alert_loop(
                    db,
                    env_cfg,
                    state.audit,
                    settings.alert_interval_s,
                    # in a cluster one worker at a time evaluates the environment's rules
                    lease=RedisLease(state.cluster, f"alerts:{settings.environment}") if state.cluster else None,
                    # a worker that has just started has served nothing yet: its first round is one interval away
                    first_after_s=settings.alert_interval_s,
                )
            )
            if rules_for(env_cfg)
            else None
        )
        purging = asyncio.create_task(
            retention_loop(
                db,
                state.governance,
                state.audit,
                settings.retention_interval_s,
                salt=await asyncio.to_thread(state.refs.load),
                # one purge for the cluster: it covers every environment of the shared database
                lease=RedisLease(state.cluster, "retention") if state.cluster else None,
                # not while the worker is starting (its models loading, its first calls coming in)
                first_after_s=min(settings.retention_interval_s, FIRST_PURGE_AFTER_S),
            )
        )
        counting = asyncio.create_task(state.denials.flush_forever(state.audit))  # anonymous refusals, per minute
        try:
            yield
        finally:
            reaper.cancel()
            if alerting is not None:
                alerting.cancel()
            purging.cancel()
            counting.cancel()
            await state.denials.flush(state.audit, final=True)  # the minute under way too
            await state.sessions.close_all("server_shutdown")
            await state.desk.close()
            await state.stop_cluster()  # off the worker directory, call slots given back
            await state.stop_liveness()
            for rt in state.runtimes.values():
                await rt.aclose()
            if state.warming is not None and not state.warming.done():
                state.warming.cancel()
            await state.stop_background()
            if state.engines is not None:
                state.engines.close()
            await asyncio.to_thread(tracing.flush)
            await state.close_cluster()
            db.dispose()

    app = FastAPI(title="voxgate", version=__version__, lifespan=lifespan)
    app.add_exception_handler(RequestValidationError, _invalid_request)  # type: ignore[arg-type]
    install_error_mapping(app)
    # body size per route, and authorisation before a body is read (FastAPI reads it before the guard)
    app.add_middleware(RequestBodyLimits, default_limit=settings.max_body_bytes)
    app.router.routes.extend(api_routes())

    def served_now(state: AppState) -> list[dict[str, object]]:
        if state.managed:  # what new conversations get now: the releases active in this environment
            return [
                {
                    "agent": a["agent"],
                    "version": state.releases.bundle(a["digest"]).version,
                    "bundle_digest": a["digest"],
                }
                for a in state.releases.active_all(settings.environment)
            ]
        return [
            {"agent": name, "version": rt.agent.version, "bundle_digest": None}
            for name, rt in sorted(state.runtimes.items())
        ]

    @app.get("/health", tags=["meta"])
    async def health() -> dict[str, object]:
        state: AppState = app.state.voxgate
        served = await asyncio.to_thread(served_now, state)
        body: dict[str, object] = {
            "status": "ok",
            "version": __version__,
            "environment": settings.environment,
            # this process in the `workers` table (heartbeats, and the sessions it holds)
            "worker": state.liveness.worker_id if state.liveness is not None else None,
            # "released": the bundles active in this environment (signed, verified at load);
            # "development": agent directories served as they are, never released
            "mode": "released" if state.managed else "development",
            "agents": [s["agent"] for s in served],
            "served": served,
            "live_sessions": len(state.sessions),
            "active_calls": state.admission.active,
            "call_capacity": state.admission.capacity,
            "calls_refused": state.admission.refused,
        }
        if state.cluster is not None:  # the Redis it shares live state through (no password) and the workers up
            body["cluster"] = {"redis": state.cluster.url, "workers": await cluster_api.workers_up(state)}
        return body

    static = resources.files("voxgate.console").joinpath("static")
    app.mount("/static", StaticFiles(directory=str(static)), name="static")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index() -> HTMLResponse:  # no inline script or style: the console's strict policy, never framed
        return HTMLResponse(
            static.joinpath("chat.html").read_text("utf-8"),
            headers={"Content-Security-Policy": console.CONTENT_SECURITY_POLICY, "X-Content-Type-Options": "nosniff"},
        )

    # no inline script: the phone is served under the console's strict policy, and may be framed
    # only by this worker's console and those of the other environments' workers
    ancestors = " ".join(["'self'", *sorted(set(settings.environment_urls.values()))])
    phone_csp = console.CONTENT_SECURITY_POLICY.replace("frame-ancestors 'none'", f"frame-ancestors {ancestors}")

    @app.get("/phone", response_class=HTMLResponse, include_in_schema=False)
    def phone() -> HTMLResponse:
        return HTMLResponse(
            static.joinpath("phone.html").read_text("utf-8"),
            headers={"Content-Security-Policy": phone_csp, "X-Content-Type-Options": "nosniff"},
        )

    @app.get("/desk", response_class=HTMLResponse, include_in_schema=False)
    def desk_page() -> HTMLResponse:  # no inline script or style: the console's strict policy, never framed
        return HTMLResponse(
            static.joinpath("desk.html").read_text("utf-8"),
            headers={"Content-Security-Policy": console.CONTENT_SECURITY_POLICY, "X-Content-Type-Options": "nosniff"},
        )

    console.install_not_found_page(app)  # browsers get a page for a mistyped address; API clients JSON
    return app
