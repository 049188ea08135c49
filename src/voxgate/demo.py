"""`voxgate demo`: the Harbor Telecom backend plus a voxgate server on loopback, seeded."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from voxgate.config import Settings

HARBOR_AGENT = Path("examples/harbor-telecom/agents/harbor-support")


def _find_agent() -> Path:
    here = Path.cwd()
    for base in (here, *here.parents, Path(__file__).resolve().parents[2]):
        candidate = base / HARBOR_AGENT
        if (candidate / "agent.yaml").is_file():
            return candidate
    raise SystemExit(f"cannot find {HARBOR_AGENT}; run `voxgate demo` from the voxgate checkout")


ADMIN_TOKEN_FILE = "demo-admin.token"


def bootstrap(settings: Settings) -> tuple[str, str] | None:
    """First run on a data directory: create the admin and an admin API token, saved 0600 in the
    data directory. Returns (password, token) when created, None when the directory has users."""
    from voxgate.compliance.audit import AuditEvent
    from voxgate.governance.setup import open_governance
    from voxgate.store.db import Database

    db = Database(settings.db_url)
    try:
        db.migrate()
        gov = open_governance(settings, db)
        if gov.identity.list_users():
            return None
        password = secrets.token_urlsafe(15)
        admin = gov.identity.bootstrap_admin("admin", password)
        token, _ = gov.identity.create_token(admin.id, "demo", ["*"], 30)
        gov.audit.append(AuditEvent(actor="system", action="init.admin", resource=f"user:{admin.id}"))
    finally:
        db.dispose()
    for name, value in (("demo-admin.password", password), (ADMIN_TOKEN_FILE, token)):
        path = settings.data_dir / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(value + "\n")
    return password, token


def run_demo(settings: Settings, *, backend_port: int = 8700) -> int:
    import uvicorn

    try:
        from harbor_backend import BackgroundProcess, demo_credentials
    except ImportError:
        print("the Harbor demo backend is not installed: pip install -e examples/harbor-telecom/backend")
        return 2

    from voxgate.api.app import create_app
    from voxgate.spec import BundleError, load_bundle

    agent_dir = settings.agents[0] if settings.agents else _find_agent()
    try:
        bundle = load_bundle(agent_dir)
    except BundleError as exc:
        print(exc)
        return 2

    os.environ.setdefault("HARBOR_API_KEY", secrets.token_urlsafe(24))
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    created = bootstrap(settings)
    # its own process, as a real CRM would be: not sharing the voice worker's interpreter
    backend = BackgroundProcess(settings.data_dir / "harbor.db", os.environ["HARBOR_API_KEY"], port=backend_port)
    backend.start()
    os.environ["HARBOR_API_URL"] = backend.url
    try:
        creds = demo_credentials()[:3]
        base = f"http://{settings.host}:{settings.port}"
        print("voxgate demo")
        ws = base.replace("http://", "ws://")
        print(f"  admin console:       {base}/console/")
        print(f"  browser phone:       {base}/phone")
        print(f"  live-agent desk:     {base}/desk")
        print(f"  text chat:           {base}/")
        print(f"  API docs:            {base}/docs")
        print(f"  voice (Twilio):      {ws}/twilio/{bundle.agent.name}")
        print(f"  voice (native):      {ws}/ws/voice/{bundle.agent.name}")
        print(f"  Harbor backend:      {backend.url}")
        print(f"  database:            {settings.db_url}")
        if created is not None:
            print(f"  console admin:       admin / {created[0]}  (also in {settings.data_dir}/demo-admin.password;")
            print(f"                       API token in {settings.data_dir}/{ADMIN_TOKEN_FILE})")
        print("  try these callers (account number / PIN):")
        for c in creds:
            print(f"    {c['first_name']:<10} {c['account_number']} / {c['pin']}   postcode {c['postcode']}")
        print(f"  try: voxgate call {ws} --voice flite-slt --say \"where is my order\"")
        print("  Ctrl-C stops everything. Loading speech models…", flush=True)
        if "VOXGATE_VOICE_PRELOAD" not in os.environ:
            settings.voice_preload = True  # the first caller should not wait for model loading
        app = create_app(settings, [bundle])
        uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning")
    finally:
        backend.stop()
        print("demo stopped")
    return 0
