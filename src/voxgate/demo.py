"""`voxgate demo`: the Harbor Telecom backend and three workers — prod, dev and test — on loopback,
with the embedded store seeded through the real release pipeline on its first start.

On an empty data directory the demo creates its users (an admin, a maker, an approver and an
operator), then releases harbor-support 1.0.0 exactly as a team would: the maker builds and signs
the bundle, uploads it, deploys it to dev and promotes it to test; every gate prod requires runs
on its digest; the maker asks for a publish, the approver (another person) approves and
publishes it. The prod worker answers calls only with that signed, approved bundle. Passwords are
written 0600 to `<data_dir>/demo-users/`, the admin's API token to `<data_dir>/demo-profile.json`
(which the CLI reads when nothing else says which server to talk to), the Harbor backend's API key
to `<data_dir>/secrets/HARBOR_API_KEY` (how the server, the gates and the CLI resolve
`env:HARBOR_API_KEY`). None of them is printed except the passwords of users created now.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from voxgate.api.app import create_app
from voxgate.api.server import server_config
from voxgate.bundle import BundleError, load_bundle
from voxgate.compliance.audit import AuditEvent
from voxgate.compliance.privacy import load_salt
from voxgate.compliance.retention import purge
from voxgate.config import Settings
from voxgate.errors import UnavailableError
from voxgate.governance import bundle_store
from voxgate.governance.secrets import write_secret_file
from voxgate.governance.setup import open_governance
from voxgate.signing import KeyPair
from voxgate.store.db import Database
from voxgate.store.files import private_dir, write_private
from voxgate.tls import api_client_limits

HARBOR_AGENT = Path("examples/harbor-telecom/agents/harbor-support")
AGENT = "harbor-support"
USERS_DIR = "demo-users"
PROFILE_FILE = "demo-profile.json"
BACKEND_KEY = "HARBOR_API_KEY"
#: the demo's people: one per duty, so separation of duties is visible in every record
DEMO_USERS = (("admin", "admin"), ("maya", "maker"), ("omar", "approver"), ("olga", "operator"))
#: the customer and outage fixtures the gates' simulated callers use (the demo backend's own data)
GATE_FIXTURES = {"customer": "harbor_backend:demo_credentials", "outage": "harbor_backend.data:draw_outages"}

log = logging.getLogger("voxgate.demo")


class SeedError(UnavailableError):
    """The first release could not be completed; the message names the step and why."""


def _find_agent() -> Path:
    here = Path.cwd()
    for base in (here, *here.parents, Path(__file__).resolve().parents[2]):
        candidate = base / HARBOR_AGENT
        if (candidate / "agent.yaml").is_file():
            return candidate
    raise SystemExit(f"cannot find {HARBOR_AGENT}; run `voxgate demo` from the voxgate checkout")


def _write_private(path: Path, text: str) -> None:
    write_private(path, text.encode("utf-8"))


@dataclass
class DemoUser:
    username: str
    role: str
    id: str
    password: str | None = None  # only when created by this start (then printed once)


def bootstrap(settings: Settings, url: str) -> list[DemoUser]:
    """Create the demo users that do not exist yet (roles bound in every environment), write their
    passwords 0600, and keep an admin API token in the demo profile for the CLI."""

    db = Database(settings.db_url)
    users: list[DemoUser] = []
    try:
        db.migrate()
        gov = open_governance(settings, db)
        first = not gov.identity.list_users()
        for username, role in DEMO_USERS:
            user = gov.identity.find_user(username)
            password = None
            if user is None:
                password = secrets.token_urlsafe(15)
                if username == "admin" and first:
                    user = gov.identity.bootstrap_admin(username, password)
                    gov.audit.append(AuditEvent(actor="system", action="init.admin", resource=f"user:{user.id}"))
                else:
                    user = gov.identity.create_user(username, password, display_name=f"demo {role}")
                    gov.identity.bind_role(user.id, "*", role, by="system")
                    gov.audit.append(
                        AuditEvent(
                            actor="system",
                            action="user.create",
                            resource=f"user:{user.id}",
                            data={"role": role, "by": "demo"},
                        )
                    )
                _write_private(settings.data_dir / USERS_DIR / f"{username}.password", password + "\n")
            users.append(DemoUser(username, role, user.id, password))
        (settings.data_dir / USERS_DIR).chmod(0o700)
        profile = settings.data_dir / PROFILE_FILE
        saved = _read_json(profile)
        token = saved.get("token") if saved.get("username") == "admin" else None
        if not token or gov.identity.authenticate_token(token) is None:
            token, _ = gov.identity.create_token(users[0].id, "demo profile", ["*"], 365)
        _write_private(profile, json.dumps({"url": url, "token": token, "username": "admin"}) + "\n")
    finally:
        db.dispose()
    return users


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def backend_key(settings: Settings) -> str:
    """The Harbor backend's API key: kept as a secret file the server and the CLI both resolve."""
    path = settings.secrets_path / BACKEND_KEY
    try:
        key = path.read_text("utf-8").strip()
    except OSError:
        key = ""
    if not key:
        key = secrets.token_urlsafe(24)
        write_secret_file(settings.secrets_path, BACKEND_KEY, key)
    return key


def command_name() -> str:
    """How to run `voxgate` from this shell: the bare name if PATH finds this one, else its path."""
    me = Path(sys.argv[0]).resolve() if sys.argv and sys.argv[0] else None
    found = shutil.which("voxgate")
    if me is not None and me.name == "voxgate" and (found is None or Path(found).resolve() != me):
        with contextlib.suppress(ValueError):
            return str(Path(sys.argv[0]).absolute().relative_to(Path.cwd()))
        return str(me)
    return "voxgate" if found else f"{sys.executable} -m voxgate.cli"


# ---- the first release, through the API --------------------------------------------------------


class _Pipeline:
    """The release steps, each as the person whose duty it is, over the workers' real API."""

    def __init__(self, url: str, tokens: dict[str, str]):
        self.client = httpx.AsyncClient(base_url=url, timeout=120.0, trust_env=False, limits=api_client_limits())
        self.tokens = tokens

    async def call(self, who: str, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        response = await self.client.request(
            method, path, json=body, headers={"Authorization": f"Bearer {self.tokens[who]}"}
        )
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail")
            except ValueError:
                detail = response.text
            if isinstance(detail, dict):
                detail = detail.get("error", detail)
            raise SeedError(f"{method} {path} as {who}: {response.status_code} {detail}")
        return response.json() if response.content else None

    async def aclose(self) -> None:
        await self.client.aclose()


async def seed_first_release(
    settings: Settings, url: str, users: list[DemoUser], agent_dir: Path, say: Any = print
) -> str:
    """Release `agent_dir` to prod through every step of the pipeline; returns the digest."""

    by_role = {u.role: u for u in users}
    maker, approver = by_role["maker"], by_role["approver"]
    db = Database(settings.db_url)
    tokens: dict[str, str] = {}
    try:
        gov = open_governance(settings, db)
        for user in users:  # short-lived: only for these steps
            tokens[user.username], _ = gov.identity.create_token(user.id, "demo first release", ["*"], 1)
        pipeline = _Pipeline(url, tokens)
        try:
            key = KeyPair.load_or_create(settings.data_dir / USERS_DIR / f"{maker.username}-signing-key.pem")
            await pipeline.call(maker.username, "POST", "/api/me/keys", {"public_key": key.public.b64})
            try:
                built = await asyncio.to_thread(
                    bundle_store.build_bundle, agent_dir, gov.config.environments["prod"], [], key, maker.id
                )
            except bundle_store.BundleBuildError as exc:
                raise SeedError("building the bundle: " + "; ".join(exc.problems)) from None
            digest = built.digest
            await pipeline.call(
                maker.username,
                "POST",
                "/api/environments/dev/bundles",
                {
                    "archive": base64.b64encode(built.archive).decode("ascii"),
                    "signature": built.signature,
                    "key_id": built.key_id,
                    "manifest": built.manifest,
                },
            )
            say(f"  {maker.username} (maker) built, signed and uploaded {AGENT} {built.version} {digest[:19]}…")
            await pipeline.call(
                maker.username,
                "POST",
                f"/api/environments/dev/agents/{AGENT}/deploy",
                {"digest": digest, "reason": "first release of the demo agent"},
            )
            await pipeline.call(
                maker.username,
                "POST",
                f"/api/environments/test/agents/{AGENT}/promote",
                {"reason": "ready for the gates"},
            )
            say(f"  {maker.username} deployed it to dev and promoted it to test")
            await run_gates_as(settings, tokens[maker.username], say)
            # the store's first retention purge, as its operator would run it: the readiness checklist asks
            # that retention has run before a publish, and the workers' own first purge comes a minute after
            # they start (the gates may well have passed before)
            salt_path = Path(settings.data_dir) / "keys" / "privacy-salt"
            await asyncio.to_thread(lambda: purge(db, gov.config, audit=gov.audit, salt=load_salt(salt_path)))
            request = await pipeline.call(
                maker.username,
                "POST",
                f"/api/environments/prod/agents/{AGENT}/publish-requests",
                {"reason": "first release of the Harbor demo agent"},
            )
            await pipeline.call(
                approver.username,
                "POST",
                f"/api/publish-requests/{request['id']}/approve",
                {"comment": "gates passed on this digest; checklist reviewed"},
            )
            await pipeline.call(
                approver.username,
                "POST",
                f"/api/publish-requests/{request['id']}/publish",
                {"reason": "first release of the Harbor demo agent"},
            )
            say(f"  {maker.username} asked for a publish; {approver.username} (approver) approved and published it")
            return digest
        finally:
            await pipeline.aclose()
            for user in users:  # the seeding tokens are not left behind
                for info in gov.identity.list_tokens(user.id):
                    if info.name == "demo first release":
                        gov.identity.revoke_token(user.id, info.id)
    finally:
        db.dispose()


async def run_gates_as(settings: Settings, token: str, say: Any) -> None:
    """`voxgate gates run` for prod, as the user `token` belongs to, in a child process: the load
    gate's worker loads its own speech models, which are gone with the process when it is done."""
    env = {
        **os.environ,
        "VOXGATE_TOKEN": token,
        "VOXGATE_DATA_DIR": str(settings.data_dir),
        "VOXGATE_SECRETS_DIR": str(settings.secrets_path),
    }
    env.pop("VOXGATE_URL", None)
    if settings.database_url:
        env["VOXGATE_DATABASE_URL"] = settings.database_url
    if settings.policy_dir is not None:
        env["VOXGATE_POLICY_DIR"] = str(settings.policy_dir)
    args = [sys.executable, "-m", "voxgate.cli", "gates", "run", "--agent", AGENT, "--for", "prod"]
    for name, provider in GATE_FIXTURES.items():
        args += ["--fixtures", f"{name}={provider}"]
    child = await asyncio.create_subprocess_exec(
        *args,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    assert child.stderr is not None
    lines = []
    async for raw in child.stderr:
        line = raw.decode("utf-8", "replace").rstrip()
        lines.append(line)
        if line.startswith("  "):  # one line per gate when it is done
            say("  gate " + line.strip())
    if await child.wait() != 0:
        raise SeedError("the gates did not all pass: " + (lines[-1] if lines else f"exit {child.returncode}"))


# ---- the workers ---------------------------------------------------------------------------------


def _server_class() -> Any:
    class Worker(uvicorn.Server):
        """A uvicorn server that leaves signal handling to the demo (several run in one loop)."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    return Worker


@dataclass
class Ports:
    prod: int
    dev: int
    test: int

    def url(self, host: str, env: str) -> str:
        return f"http://{host}:{getattr(self, env)}"


async def _run_workers(
    settings: Settings, ports: Ports, users: list[DemoUser], agent_dir: Path, print_ready: Any
) -> int:
    worker_class = _server_class()
    urls = {env: ports.url(settings.host, env) for env in ("prod", "dev", "test")}
    servers = {}
    for env in ("prod", "dev", "test"):
        env_settings = settings.model_copy(
            update={
                "environment": env,
                "port": getattr(ports, env),
                "agents": [],
                "environment_urls": urls,
                "voice_preload": settings.voice_preload if env == "prod" else False,
            }
        )
        config = server_config(create_app(env_settings, []), env_settings, log_level="warning", lifespan="on")
        servers[env] = worker_class(config)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    tasks = {env: asyncio.create_task(server.serve(), name=f"worker-{env}") for env, server in servers.items()}

    async def started() -> bool:
        while not all(s.started for s in servers.values()):
            if any(t.done() for t in tasks.values()) or stop.is_set():
                return False
            await asyncio.sleep(0.05)
        return True

    code = 0
    try:
        if not await started():
            dead = [env for env, t in tasks.items() if t.done()]
            print(
                f"the {', '.join(dead) or 'demo'} worker did not start (is port "
                f"{', '.join(str(getattr(ports, e)) for e in dead)} in use?)",
                flush=True,
            )
            return 1
        prod_state = servers["prod"].config.app.state.voxgate
        # never released to prod (a first start, or one whose first release stopped part way): release it
        if not await asyncio.to_thread(prod_state.releases.history, "prod", AGENT, 1):
            print(f"First start: releasing {AGENT} through the pipeline (about a minute)…", flush=True)
            t0 = time.monotonic()
            try:
                digest = await seed_first_release(
                    settings, urls["prod"], users, agent_dir, say=lambda line: print(line, flush=True)
                )
                print(f"  released in {time.monotonic() - t0:.0f} s", flush=True)
            except SeedError as exc:
                print(f"The first release stopped: {exc}", flush=True)
                print("The workers keep running; see the console's Releases and Gates pages.", flush=True)
        digest = await asyncio.to_thread(prod_state.releases.active, "prod", AGENT)
        if digest is not None:
            # loaded, its voice loaded and its fixed prompts rendered before the first call (on a first
            # start the release came after the worker started: that work would otherwise run under
            # the first callers, about 0.4 s on their p95)
            await prod_state.runtime_for(AGENT)
            await prod_state.background_done()
        print_ready(digest)
        await stop.wait()
    finally:
        for server in servers.values():
            server.should_exit = True
        results = await asyncio.gather(*tasks.values(), return_exceptions=True)
        for env, result in zip(tasks, results):
            if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
                print(f"the {env} worker failed: {result}", flush=True)
                code = 1
    return code


def run_demo(
    settings: Settings, *, backend_port: int = 8700, dev_port: int | None = None, test_port: int | None = None
) -> int:
    try:
        from harbor_backend import BackgroundProcess, demo_credentials
    except ImportError:
        print("the Harbor demo backend is not installed: pip install -e examples/harbor-telecom/backend")
        return 2

    agent_dir = settings.agents[0] if settings.agents else _find_agent()
    try:
        bundle = load_bundle(agent_dir)
    except BundleError as exc:
        print(exc)
        return 2
    if bundle.agent.name != AGENT:
        print(f"the demo releases {AGENT}; {agent_dir} is '{bundle.agent.name}'")
        return 2

    ports = Ports(settings.port, dev_port or settings.port + 1, test_port or settings.port + 2)
    # everything the demo and its backend process create under the data directory is theirs alone
    os.umask(0o077)
    private_dir(settings.data_dir)
    prod_url = ports.url(settings.host, "prod")
    users = bootstrap(settings, prod_url)
    key = backend_key(settings)
    # its own process, as a real CRM would be: not sharing the voice worker's interpreter
    backend = BackgroundProcess(settings.data_dir / "harbor.db", key, port=backend_port)
    backend.start()
    os.environ["HARBOR_API_URL"] = backend.url
    _log_sessions()
    cmd = command_name()
    try:
        creds = demo_credentials()[:3]
        base, ws = prod_url, prod_url.replace("http://", "ws://")
        print("voxgate demo")
        print(f"  prod worker:         {base}   (released bundles only)")
        print(f"  dev worker:          {ports.url(settings.host, 'dev')}")
        print(f"  test worker:         {ports.url(settings.host, 'test')}")
        print(f"  admin console:       {base}/console/")
        print(f"  browser phone:       {base}/phone")
        print(f"  live-agent desk:     {base}/desk")
        print(f"  text chat:           {base}/")
        print(f"  voice (Twilio):      {ws}/twilio/{AGENT}")
        print(f"  Harbor backend:      {backend.url}")
        print(f"  database:            {settings.db_url}")
        created = [u for u in users if u.password]
        if created:
            print(
                f"  demo users (passwords also in {settings.data_dir / USERS_DIR}/NAME.password, readable only by you):"
            )
            for u in created:
                print(f"    {u.username:<6} {u.role:<9} {u.password}")
        else:
            print(
                f"  demo users: {', '.join(f'{u.username} ({u.role})' for u in users)}; "
                f"passwords in {settings.data_dir / USERS_DIR}/"
            )
        print("  try these callers (account number / PIN):")
        for c in creds:
            print(f"    {c['first_name']:<10} {c['account_number']} / {c['pin']}   postcode {c['postcode']}")
        print(f'  try: {cmd} call {ws} --voice flite-slt --say "where is my order"')
        print(f"       {cmd} release history --env prod --agent {AGENT}")
        print("  Ctrl-C stops everything. Loading speech models…", flush=True)

        def ready(digest: str | None) -> None:
            if digest is None:
                print("ready: nothing is released to prod yet; the dev and test workers are up", flush=True)
                return
            print(
                f"ready: {AGENT} {digest[:19]}… answers calls on prod at {base}/phone "
                "(one line per call or chat below)",
                flush=True,
            )

        if "VOXGATE_VOICE_PRELOAD" not in os.environ:
            settings.voice_preload = True  # the first caller should not wait for model loading
        return asyncio.run(_run_workers(settings, ports, users, agent_dir, ready))
    finally:
        backend.stop()
        print("demo stopped", flush=True)


def _log_sessions() -> None:
    """One line per call or chat on the terminal (start, then outcome): ids and outcomes only."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    sessions = logging.getLogger("voxgate.sessions")
    sessions.addHandler(handler)
    sessions.setLevel(logging.INFO)
    sessions.propagate = False
