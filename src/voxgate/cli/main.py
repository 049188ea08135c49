"""`voxgate version`, `serve` and `demo`: the worker and the demo."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from voxgate import __version__
from voxgate.cli._common import fail, load_agent, settings


def version() -> None:
    """Print the voxgate version."""
    typer.echo(__version__)


def serve(
    agent_dir: Annotated[
        list[Path] | None,
        typer.Option(
            "--agent-dir",
            "--agent",
            "-a",
            help="Development mode: serve this agent directory as it is, unreleased (repeatable; "
            "development-tier environments only).",
        ),
    ] = None,
    host: Annotated[str | None, typer.Option(help="Bind address (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8600).")] = None,
    env: Annotated[str | None, typer.Option(help="Environment this worker serves (default dev).")] = None,
) -> None:
    """Run a voxgate worker (HTTP and WebSocket) for one environment.

    It answers calls only with the bundles released to its environment: each new conversation
    takes the digest active there now (signed, verified when first loaded), so a publish or a
    rollback takes effect without a restart while calls in progress finish on their version.
    --agent-dir DIR serves a directory directly instead — a development mode, refused for a
    non-development environment and labelled as such in /health, the console and every stored
    session (no bundle digest).

    SIGTERM drains the worker: new conversations are refused at once (GET /health/ready answers
    503) while calls in progress go on, for up to VOXGATE_DRAIN_GRACE_S seconds (default 600); then
    it exits 0. A second SIGTERM, or Ctrl-C, stops it at once.
    """
    # the web stack loads when a worker starts, not for every `voxgate` command
    from voxgate.api.app import create_app
    from voxgate.api.server import WorkerServer, server_config

    loaded = settings(secrets=True, host=host, port=port, environment=env, agents=agent_dir or None)
    bundles = [load_agent(p) for p in loaded.agents]
    try:
        application = create_app(loaded, bundles)
    except ValueError as exc:
        fail(str(exc))
    mode = (
        f"development mode: {', '.join(str(p) for p in loaded.agents)} as they are, unreleased"
        if bundles
        else "the bundles released to it"
    )
    typer.echo(
        f"voxgate worker for '{loaded.environment}' on http://{loaded.host}:{loaded.port} serving {mode}", err=True
    )
    WorkerServer(server_config(application, loaded), drain_grace_s=loaded.drain_grace_s).run()


def demo(
    port: Annotated[int, typer.Option(help="The prod worker's port (console, phone, desk).")] = 8600,
    dev_port: Annotated[int | None, typer.Option(help="The dev worker's port (default PORT+1).")] = None,
    test_port: Annotated[int | None, typer.Option(help="The test worker's port (default PORT+2).")] = None,
    backend_port: Annotated[int, typer.Option(help="Harbor demo backend port.")] = 8700,
) -> None:
    """Run the Harbor Telecom demo on loopback: its backend and a prod, a dev and a test worker on the
    embedded store. The first start releases harbor-support to prod through the whole pipeline
    (build, sign, deploy, promote, gates, approval, publish). Ctrl-C stops everything."""
    from voxgate.demo import run_demo

    code = run_demo(
        settings(secrets=True, port=port), backend_port=backend_port, dev_port=dev_port, test_port=test_port
    )
    raise typer.Exit(code)
