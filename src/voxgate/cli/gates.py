"""`voxgate gates run|status` and `voxgate checklist`: pre-production evidence and readiness, on the server's database."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import typer

from voxgate.cli._common import echo_json, fail, settings
from voxgate.cli.client import saved_token

gates_app = typer.Typer(help="Run pre-production gates against a digest and show their evidence.", no_args_is_help=True)


def _open() -> Any:
    from voxgate.governance.setup import open_governance
    from voxgate.store.db import Database

    loaded = settings(label="", secrets=True)  # secrets: the connector credentials the server resolves
    if loaded.database_url is None and not (loaded.data_dir / "voxgate.db").is_file():
        fail(
            f"no voxgate database in {loaded.data_dir.resolve()}: run this where the server keeps its "
            "data (the checkout, for `voxgate demo`), or set VOXGATE_DATA_DIR or VOXGATE_DATABASE_URL"
        )
    db = Database(loaded.db_url)
    db.migrate()
    return loaded, db, open_governance(loaded, db)


def _fixtures(specs: list[str] | None) -> dict[str, Any]:
    """Named fixture sets for the gates' simulated callers: NAME=module:attr (e.g. customer=harbor_backend:demo_credentials)."""
    from voxgate.testing.conversations import ConversationTestError, load_fixtures

    named = {}
    for spec in specs or []:
        name, sep, provider = spec.partition("=")
        if not sep:
            fail(f"--fixtures {spec}: expected NAME=module:attr")
        named[name] = provider
    try:
        return load_fixtures(named)
    except ConversationTestError as exc:
        fail("\n".join(exc.problems))


def _actor(gov: Any) -> Any:
    """Whom the runs are recorded for: the user whose API token this CLI uses (VOXGATE_TOKEN, the
    login, the demo profile) when it is valid in this database; otherwise the CLI itself."""
    from voxgate.governance.principals import Principal

    token = saved_token()
    principal = gov.identity.authenticate_token(token) if token else None
    if principal is not None and principal.kind == "user":
        return principal
    return Principal(kind="user", id="cli", username="cli")


@gates_app.command("run")
def run(
    agent: str = typer.Option(...),
    target: str = typer.Option("prod", "--for", help="The environment the digest is to enter."),
    gate: list[str] | None = typer.Option(None, help="Only these gates (default: all the target requires)."),
    fixtures: list[str] | None = typer.Option(
        None, help="NAME=module:attr fixture sets, e.g. customer=harbor_backend:demo_credentials (repeatable)."
    ),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Run the gates TARGET requires against the candidate active in the environment before it; store the evidence.

    Works on the server's database (the same data directory or VOXGATE_DATABASE_URL) and resolves
    connector credentials as the server does. Prints one line per gate, with the first reason a
    gate did not pass; exit 1 unless all passed.
    """
    from voxgate.api.gate_worker import LocalWorkers
    from voxgate.governance import gates
    from voxgate.testing.gates import RUNNERS

    settings, db, gov = _open()
    actor = _actor(gov)
    customers = _fixtures(fixtures)
    try:
        outcomes = asyncio.run(
            gates.run_required(
                db,
                gov.config,
                gov.releases,
                gov.audit,
                agent=agent,
                target=target,
                actor=actor,
                fixtures=customers,
                only=gate or None,
                runners=RUNNERS,
                policy_dir=settings.policy_dir,
                start_worker=LocalWorkers(db.url, settings.policy_dir, settings.speech_cache_path),
                on_start=lambda name: typer.echo(f"gate {name} …", err=True),
                on_done=lambda outcome: typer.echo("  " + gates.describe(outcome), err=True),
            )
        )
    except gates.GateSetupError as exc:
        fail(str(exc))
    passed = sum(o.status == "passed" for o in outcomes)
    if as_json:
        echo_json([o.__dict__ for o in outcomes])
    else:
        typer.echo(f"{passed}/{len(outcomes)} gates passed", err=True)
    raise typer.Exit(0 if passed == len(outcomes) else 1)


@gates_app.command("status")
def status(
    agent: str = typer.Option(...), target: str = typer.Option("prod", "--for"), digest: str | None = typer.Option(None)
) -> None:
    """The latest run of every gate TARGET requires, on the candidate digest."""
    from voxgate.governance import gates

    _, db, gov = _open()
    env = gov.config.environments[target]
    digest = digest or gov.releases.active(gates.environment_before(gov.config, target).name, agent)
    if digest is None:
        fail("no candidate digest")
    for st in gates.gate_status(db, digest, env):
        run = st.run
        typer.echo(
            f"{st.spec.name:<13} {'required' if st.spec.required else 'optional':<9} "
            f"{run.status if run else 'never ran':<10} {run.started_at.isoformat()[:19] if run else ''}"
        )


def checklist_command(
    agent: str = typer.Argument(...),
    env: str = typer.Option("prod"),
    digest: str | None = typer.Option(None),
    as_json: bool = typer.Option(False, "--json"),
    html: Path | None = typer.Option(None, help="Write an HTML report."),
) -> None:
    """The 18-item readiness checklist for AGENT entering ENV, computed from stored evidence."""
    from voxgate.governance import checklist

    _, db, gov = _open()
    if env not in gov.config.environments:
        fail(f"unknown environment '{env}'")
    report = checklist.evaluate(db, gov.config, agent, env, digest=digest, policy=gov.policy)
    if html is not None:
        html.write_text(report.to_html(), "utf-8")
    if as_json:
        echo_json(report.to_dict())
    else:
        typer.echo(f"readiness of {agent} for {env} (digest {report.digest or 'none'})")
        for item in report.items:
            typer.echo(f"  {item.status:<4} {'*' if item.required else ' '} {item.title:<62} {item.detail}")
        typer.echo("ready" if not report.blocking() else f"NOT ready: {len(report.blocking())} required item(s) fail")
    raise typer.Exit(0 if not report.blocking() else 1)
