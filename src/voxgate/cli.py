"""The `voxgate` command line: validate agents, chat with them, serve them, run the demo."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from voxgate import __version__

app = typer.Typer(
    help="voxgate: governed, self-hosted real-time voice agents.\n\n"
    "Agents are directories of YAML (agent.yaml, topics/, knowledge/, tests/). "
    "Start with `voxgate agent validate DIR`, talk to it with `voxgate chat DIR`, "
    "and run everything with `voxgate demo`.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
)
agent_app = typer.Typer(help="Check agent directories and export the bundle schema.", no_args_is_help=True)
db_app = typer.Typer(help="Database maintenance.", no_args_is_help=True)
app.add_typer(agent_app, name="agent")
app.add_typer(db_app, name="db")


def _register_voice_commands() -> None:
    from voxgate.cli_voice import bench_app, call_command, transcribe_command

    app.command("call")(call_command)
    app.command("transcribe")(transcribe_command)
    app.add_typer(bench_app, name="bench")


_register_voice_commands()


def _register_governance_commands() -> None:
    from voxgate import cli_gates, cli_gov

    cli_gov.register(app)
    cli_gates.register(app)
    from voxgate.cli_stats import incidents_app, stats_command
    from voxgate.cli_test import test_command

    app.command("test")(test_command)
    app.command("stats")(stats_command)
    app.add_typer(incidents_app, name="incidents")
    from voxgate import cli_privacy

    cli_privacy.register(app)


_register_governance_commands()

AgentDir = Annotated[Path, typer.Argument(help="Agent directory (holds agent.yaml and topics/).")]


def _fail(message: str, code: int = 2) -> None:
    typer.echo(message, err=True)
    raise typer.Exit(code)


def _settings(**overrides: Any) -> Any:
    from voxgate.config import ConfigError, load_settings

    from voxgate.governance.secrets import use_secrets_dir

    try:
        settings = load_settings(**overrides)
    except ConfigError as exc:
        _fail(f"configuration error:\n{exc}")
    use_secrets_dir(settings.secrets_path)  # env:NAME references also read <secrets_dir>/NAME
    return settings


def _load(path: Path) -> Any:
    from voxgate.spec import BundleError, load_bundle

    try:
        return load_bundle(path)
    except BundleError as exc:
        for problem in exc.problems:
            typer.echo(str(problem), err=True)
        typer.echo(f"{len(exc.problems)} problem(s) in {path}", err=True)
        raise typer.Exit(2)


@app.command()
def version() -> None:
    """Print the voxgate version."""
    typer.echo(__version__)


@agent_app.command("validate")
def agent_validate(
    path: AgentDir,
    as_json: Annotated[bool, typer.Option("--json", help="Print problems as JSON.")] = False,
) -> None:
    """Check syntax, schema and cross-references; print path:line:col: message per problem (exit 2)."""
    from voxgate.spec import BundleError, load_bundle

    try:
        bundle = load_bundle(path)
    except BundleError as exc:
        if as_json:
            typer.echo(json.dumps({"ok": False, "problems": [p.__dict__ for p in exc.problems]}, indent=2))
        else:
            for problem in exc.problems:
                typer.echo(str(problem))
            typer.echo(f"{len(exc.problems)} problem(s)", err=True)
        raise typer.Exit(2)
    summary = {
        "ok": True,
        "agent": bundle.agent.name,
        "topics": sorted(bundle.topics),
        "actions": sorted(bundle.agent.actions),
        "knowledge": [k.path for k in bundle.knowledge],
        "tests": len(bundle.tests),
    }
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
    else:
        typer.echo(
            f"{bundle.agent.name}: OK — {len(bundle.topics)} topics, {len(bundle.agent.actions)} actions, "
            f"{len(bundle.knowledge)} knowledge documents, {len(bundle.tests)} tests"
        )


@agent_app.command("schema")
def agent_schema(
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Write to a file instead of stdout.")] = None,
    kind: Annotated[str, typer.Option(help="agent or topic")] = "agent",
) -> None:
    """Export the JSON Schema of agent.yaml (or a topic file) for editor autocompletion."""
    from voxgate.spec.schema import json_schema

    if kind not in ("agent", "topic"):
        _fail("--kind must be 'agent' or 'topic'")
    text = json.dumps(json_schema(kind), indent=2)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n", encoding="utf-8")
        typer.echo(f"wrote {out}")
    else:
        typer.echo(text)


@app.command()
def chat(
    path: Annotated[Optional[Path], typer.Argument(
        help="Agent directory to run here (holds agent.yaml and topics/); or give --url instead.")] = None,
    say: Annotated[
        Optional[list[str]], typer.Option("--say", "-s", help="A caller turn; repeat for a scripted conversation.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole conversation as JSON.")] = False,
    url: Annotated[Optional[str], typer.Option(
        "--url", help="Talk to an agent on a running worker instead, e.g. http://127.0.0.1:8601.")] = None,
    agent: Annotated[Optional[str], typer.Option(
        "--agent", help="With --url: the agent's name (default: the one agent the worker serves).")] = None,
    demo_backend: Annotated[
        bool, typer.Option("--demo-backend", help="Start the Harbor demo backend in-process for this chat.")
    ] = False,
    store: Annotated[bool, typer.Option(help="Record the session in the database (a local chat).")] = True,
    env: Annotated[str, typer.Option(help="Environment name recorded with the session (a local chat).")] = "dev",
) -> None:
    """Talk to an agent by text: an interactive prompt, or a scripted run with --say (… --json).

    Give an agent directory to run the agent in this process, or --url (and --agent) to talk
    to one on a running worker over its conversation API. A scripted run prints one line per
    turn (agent: …, caller: …) and the outcome; --json prints the whole conversation.
    """
    if path is None and url is None:
        _fail("say which agent to talk to: an agent directory (voxgate chat DIR) or one on a running worker "
              "(voxgate chat --url URL --agent NAME)")
    if path is not None and url is not None:
        _fail("give an agent directory or --url, not both: DIR runs the agent here, --url talks to a worker")
    if url is not None:
        if demo_backend:
            _fail("--demo-backend starts a backend for a local chat; a worker at --url uses its own")
        from voxgate.cli_chat import run_remote_chat

        try:
            result = run_remote_chat(url, agent, says=say, interactive=not say)
        except KeyboardInterrupt:
            raise typer.Exit(130)
    else:
        if agent is not None:
            _fail("--agent names an agent on a worker at --url; a local chat runs the directory you give")
        bundle = _load(path)
        settings = _settings()
        from voxgate.channels.text import run_chat

        try:
            result = asyncio.run(
                run_chat(bundle, settings, says=say, interactive=not say, as_json=as_json,
                         demo_backend=demo_backend, store=store, environment=env)
            )
        except KeyboardInterrupt:
            raise typer.Exit(130)
    if result is None:
        return
    if as_json:
        typer.echo(json.dumps(result, indent=2, default=str))
    else:
        from voxgate.channels.text import conversation_lines

        for line in conversation_lines(result, say or []):
            typer.echo(line)


@app.command()
def serve(
    agent_dir: Annotated[Optional[list[Path]], typer.Option(
        "--agent-dir", "--agent", "-a",
        help="Development mode: serve this agent directory as it is, unreleased (repeatable; "
        "development-tier environments only).")] = None,
    host: Annotated[Optional[str], typer.Option(help="Bind address (default 127.0.0.1).")] = None,
    port: Annotated[Optional[int], typer.Option(help="Port (default 8600).")] = None,
    env: Annotated[Optional[str], typer.Option(help="Environment this worker serves (default dev).")] = None,
) -> None:
    """Run a voxgate worker (HTTP and WebSocket) for one environment.

    It answers calls only with the bundles released to its environment: each new conversation
    takes the digest active there now (signed, verified when first loaded), so a publish or a
    rollback takes effect without a restart while calls in progress finish on their version.
    --agent-dir DIR serves a directory directly instead — a development mode, refused for a
    non-development environment and labelled as such in /health, the console and every stored
    session (no bundle digest).
    """
    import uvicorn

    from voxgate.api.app import create_app
    from voxgate.api.server import server_config

    settings = _settings(host=host, port=port, environment=env, agents=agent_dir or None)
    bundles = [_load(p) for p in settings.agents]
    try:
        application = create_app(settings, bundles)
    except ValueError as exc:
        _fail(str(exc))
    mode = (f"development mode: {', '.join(str(p) for p in settings.agents)} as they are, unreleased"
            if bundles else "the bundles released to it")
    typer.echo(f"voxgate worker for '{settings.environment}' on http://{settings.host}:{settings.port} "
               f"serving {mode}", err=True)
    uvicorn.Server(server_config(application, settings)).run()


@app.command()
def demo(
    port: Annotated[int, typer.Option(help="The prod worker's port (console, phone, desk).")] = 8600,
    dev_port: Annotated[Optional[int], typer.Option(help="The dev worker's port (default PORT+1).")] = None,
    test_port: Annotated[Optional[int], typer.Option(help="The test worker's port (default PORT+2).")] = None,
    backend_port: Annotated[int, typer.Option(help="Harbor demo backend port.")] = 8700,
) -> None:
    """Run the Harbor Telecom demo on loopback: its backend and a prod, a dev and a test worker on the
    embedded store. The first start releases harbor-support to prod through the whole pipeline
    (build, sign, deploy, promote, gates, approval, publish). Ctrl-C stops everything."""
    from voxgate.demo import run_demo

    settings = _settings(port=port)
    code = run_demo(settings, backend_port=backend_port, dev_port=dev_port, test_port=test_port)
    raise typer.Exit(code)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create or migrate the database to the newest schema."""
    from voxgate.store.db import Database

    settings = _settings()
    db = Database(settings.db_url)
    db.migrate()
    typer.echo(f"database at newest revision: {_safe_url(settings.db_url)}")


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
