"""`voxgate init`, `login`, `release …` and `rollback`: the control plane from the command line.

`init` works on the local database (it creates the first admin). Everything else talks to a
running server's API with an API token (`VOXGATE_URL` and `VOXGATE_TOKEN`, else what `voxgate
login` saved, else the profile `voxgate demo` wrote; see `voxgate.cli.client`), so the CLI
passes the same authorisation and audit as the console.
"""

from __future__ import annotations

import base64
import getpass
import json
import os
import secrets
import sys
from pathlib import Path
from typing import Any

import typer

from voxgate.cli._common import echo_json, fail, settings
from voxgate.cli.client import call, check_url, save_credentials, sign_in

release_app = typer.Typer(
    help="Upload, deploy, promote, publish and inspect releases (through the API).", no_args_is_help=True
)
user_app = typer.Typer(help="Users and role bindings (through the API).", no_args_is_help=True)

DEFAULT_KEY = Path("~/.config/voxgate/signing-key.pem").expanduser()


def _show(data: Any, as_json: bool) -> None:
    if as_json or not isinstance(data, dict):
        echo_json(data)
        return
    for key, value in data.items():
        typer.echo(f"{key}: {value}")


# ---- local bootstrap --------------------------------------------------------------------------------


def init(
    admin: str = typer.Option("admin", help="Username of the first administrator."),
    password_file: Path | None = typer.Option(None, help="Read the admin password from this file."),
) -> None:
    """Create the database, the default environments' state and the first admin (once)."""
    from voxgate.governance.setup import open_governance
    from voxgate.store.db import Database

    loaded = settings(label="")
    db = Database(loaded.db_url)
    db.migrate()
    gov = open_governance(loaded, db)
    generated = password_file is None and not os.environ.get("VOXGATE_ADMIN_PASSWORD")
    if password_file is not None:
        password = password_file.read_text("utf-8").strip()
    else:
        password = os.environ.get("VOXGATE_ADMIN_PASSWORD") or secrets.token_urlsafe(18)
    try:
        user = gov.identity.bootstrap_admin(admin, password)
    except ValueError as exc:
        fail(str(exc))
    from voxgate.compliance.audit import AuditEvent

    gov.audit.append(AuditEvent(actor="system", action="init.admin", resource=f"user:{user.id}"))
    typer.echo(f"environments: {', '.join(gov.config.environments)}")
    typer.echo(f"admin '{admin}' created" + (f" with password: {password}" if generated else ""))
    db.dispose()


def login(
    url: str = typer.Option(..., help="The voxgate server, e.g. http://127.0.0.1:8600"),
    username: str = typer.Option(..., prompt=True),
    password_stdin: bool = typer.Option(
        False, "--password-stdin", help="Read the password from the first line of stdin (e.g. < FILE)."
    ),
    ttl_days: int = typer.Option(30, min=1, max=365, help="How long the saved API token lives."),
) -> None:
    """Sign in, mint an API token and save it (0600) for later commands.

    The password comes from stdin with --password-stdin, else from VOXGATE_PASSWORD, else a
    prompt. The token is saved with the URL and username to VOXGATE_CREDENTIALS (default
    ~/.config/voxgate/credentials.json).
    """
    base = check_url(url)
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            fail("--password-stdin: stdin held no password (give it on the first line)", 1)
    else:
        try:
            password = os.environ.get("VOXGATE_PASSWORD") or getpass.getpass("password: ")
        except EOFError:
            password = ""  # nosec B105: no password typed (end of input); refused just below
        if not password:
            fail("no password given: use --password-stdin, VOXGATE_PASSWORD or type it at the prompt", 1)
    token = sign_in(base, username, password, ttl_days=ttl_days)
    path = save_credentials(base, token, username)
    typer.echo(f"signed in to {base} as {username}; API token saved to {path}")


# ---- releases ---------------------------------------------------------------------------------------


@release_app.command("register-key")
def register_key(key: Path = typer.Option(DEFAULT_KEY, help="Your Ed25519 signing key (created if missing).")) -> None:
    """Register the public half of your bundle-signing key with the server."""
    from voxgate.signing import KeyPair

    pair = KeyPair.load_or_create(key)
    _show(call("POST", "/api/me/keys", {"public_key": pair.public.b64}), False)


@release_app.command("upload")
def upload(
    archive: Path = typer.Argument(..., help="A .vxb file from `voxgate bundle build`."),
    env: str = typer.Option(..., help="The environment it was built for."),
    signature: Path | None = typer.Option(None, help="Signature file (default: ARCHIVE.sig)."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Store a signed bundle on the server (it re-checks the signature, secrets and DLP)."""
    sig_path = signature or archive.with_name(archive.name + ".sig")
    try:
        sig = json.loads(sig_path.read_text("utf-8"))
    except (OSError, ValueError) as exc:
        fail(f"{sig_path}: cannot read the signature ({exc})")
    body = {
        "archive": base64.b64encode(archive.read_bytes()).decode("ascii"),
        "signature": sig["signature"],
        "key_id": sig["key_id"],
        "manifest": sig.get("manifest"),
    }
    _show(call("POST", f"/api/environments/{env}/bundles", body), as_json)


@release_app.command("deploy")
def deploy(
    env: str = typer.Option(...),
    agent: str = typer.Option(...),
    digest: str | None = typer.Option(None, help="The uploaded bundle's digest (sha256:…)."),
    bundle: Path | None = typer.Option(
        None, "--bundle", help="Or the .vxb you uploaded: its digest is read from its signature file."
    ),
    reason: str = typer.Option(""),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Make a stored bundle active in a development environment."""
    if (digest is None) == (bundle is None):
        fail("say which bundle: --digest sha256:… or --bundle FILE.vxb (the archive you uploaded)")
    if bundle is not None:
        digest = _bundle_digest(bundle)
    _show(call("POST", f"/api/environments/{env}/agents/{agent}/deploy", {"digest": digest, "reason": reason}), as_json)


def _bundle_digest(archive: Path) -> str:
    """The digest of a built bundle, from the signature file `voxgate bundle build` wrote next to it."""
    sig_path = archive.with_name(archive.name + ".sig")
    try:
        sig = json.loads(sig_path.read_text("utf-8"))
    except OSError as exc:
        fail(
            f"{sig_path}: cannot read the signature file ({exc.strerror}); build the bundle with "
            "`voxgate bundle build`, or give --digest"
        )
    except ValueError as exc:
        fail(f"{sig_path}: not JSON ({exc})")
    digest = sig.get("digest") if isinstance(sig, dict) else None
    if not isinstance(digest, str) or not digest.startswith("sha256:"):
        fail(f"{sig_path}: not a voxgate signature file (no digest)")
    return digest


def _request_for(request_id: str | None, env: str | None, agent: str | None, status: str) -> str:
    """REQUEST_ID as given, or the one publish request for AGENT into ENV in `status`."""
    if request_id is not None:
        if env is not None or agent is not None:
            fail("give a REQUEST_ID or --env and --agent, not both")
        return request_id
    if env is None or agent is None:
        fail("say which publish request: REQUEST_ID, or --env ENV --agent NAME")
    found = [
        r
        for r in call("GET", f"/api/publish-requests?status={status}")
        if r.get("agent") == agent and r.get("target_environment") == env
    ]
    if not found:
        fail(
            f"no {status} publish request for '{agent}' into '{env}'"
            + (
                ": ask for one first (voxgate release request)"
                if status == "pending"
                else ": it must be approved first (voxgate release approve)"
                if status == "approved"
                else ""
            ),
            1,
        )
    if len(found) > 1:
        fail(
            f"{len(found)} {status} publish requests for '{agent}' into '{env}': give the REQUEST_ID "
            f"({', '.join(r['id'] for r in found)})",
            1,
        )
    return str(found[0]["id"])


@release_app.command("promote")
def promote(
    env: str = typer.Option(..., help="The target environment, e.g. test."),
    agent: str = typer.Option(...),
    reason: str = typer.Option(""),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Promote what the previous environment runs into ENV."""
    _show(call("POST", f"/api/environments/{env}/agents/{agent}/promote", {"reason": reason}), as_json)


@release_app.command("request")
def request_publish(
    env: str = typer.Option(...),
    agent: str = typer.Option(...),
    reason: str = typer.Option(""),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Ask for the bundle active in the previous environment to be published to ENV."""
    _show(call("POST", f"/api/environments/{env}/agents/{agent}/publish-requests", {"reason": reason}), as_json)


_REQUEST_ID = typer.Argument(None, help="The publish request (or give --env and --agent).")
_REQUEST_ENV = typer.Option(None, "--env", help="With --agent: the request for AGENT into this environment.")
_REQUEST_AGENT = typer.Option(None, "--agent", help="With --env: the agent the request is for.")


@release_app.command("approve")
def approve(
    request_id: str | None = _REQUEST_ID,
    comment: str = typer.Option(...),
    env: str | None = _REQUEST_ENV,
    agent: str | None = _REQUEST_AGENT,
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Approve a publish request (never your own): REQUEST_ID, or the pending one for --agent into --env."""
    rid = _request_for(request_id, env, agent, "pending")
    _show(call("POST", f"/api/publish-requests/{rid}/approve", {"comment": comment}), as_json)


@release_app.command("reject")
def reject(
    request_id: str | None = _REQUEST_ID,
    comment: str = typer.Option(...),
    env: str | None = _REQUEST_ENV,
    agent: str | None = _REQUEST_AGENT,
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Reject a publish request: REQUEST_ID, or the pending one for --agent into --env."""
    rid = _request_for(request_id, env, agent, "pending")
    _show(call("POST", f"/api/publish-requests/{rid}/reject", {"comment": comment}), as_json)


@release_app.command("publish")
def publish(
    request_id: str | None = _REQUEST_ID,
    reason: str = typer.Option(""),
    override_window: bool = typer.Option(False),
    env: str | None = _REQUEST_ENV,
    agent: str | None = _REQUEST_AGENT,
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Carry out an approved publish request: REQUEST_ID, or the approved one for --agent into --env."""
    rid = _request_for(request_id, env, agent, "approved")
    _show(
        call("POST", f"/api/publish-requests/{rid}/publish", {"reason": reason, "override_window": override_window}),
        as_json,
    )


@release_app.command("history")
def history(
    env: str = typer.Option(...), agent: str | None = typer.Option(None), as_json: bool = typer.Option(False, "--json")
) -> None:
    """Who released what, when and why, newest first."""
    path = f"/api/environments/{env}/releases" + (f"?agent={agent}" if agent else "")
    rows = call("GET", path)
    if as_json:
        _show(rows, True)
        return
    for r in rows:
        digest = (r.get("digest") or "(withdrawn)")[:19]  # no digest: nothing active afterwards
        typer.echo(
            f"{r['at'][:19]}  {r['action']:<8} {r['agent']:<20} {digest:<19}  by {r.get('actor_name') or r['actor']}  "
            f"{r.get('reason') or ''}"
        )


@release_app.command("requests")
def requests(status: str | None = typer.Option(None), as_json: bool = typer.Option(True, "--json")) -> None:
    """Publish requests (pending, approved, rejected, published)."""
    _show(call("GET", "/api/publish-requests" + (f"?status={status}" if status else "")), as_json)


def rollback(
    env: str = typer.Option(...),
    agent: str = typer.Option(...),
    reason: str = typer.Option(""),
    override_window: bool = typer.Option(False),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Make the previously released bundle active again in ENV, in one atomic step."""
    _show(
        call(
            "POST",
            f"/api/environments/{env}/agents/{agent}/rollback",
            {"reason": reason, "override_window": override_window},
        ),
        as_json,
    )


@user_app.command("create")
def user_create(username: str, display_name: str = typer.Option("")) -> None:
    """Create a user (the password is read from VOXGATE_NEW_PASSWORD or prompted)."""
    password = os.environ.get("VOXGATE_NEW_PASSWORD") or getpass.getpass("password for the new user: ")
    _show(call("POST", "/api/users", {"username": username, "password": password, "display_name": display_name}), False)


@user_app.command("bind")
def user_bind(user_id: str, role: str = typer.Option(...), env: str = typer.Option("*")) -> None:
    """Bind a role to a user in one environment (or * for all)."""
    _show(call("POST", f"/api/users/{user_id}/roles", {"environment": env, "role": role}), False)


@user_app.command("list")
def user_list() -> None:
    """Users and their role bindings."""
    _show(call("GET", "/api/users"), True)
