"""`voxgate agent …`: check agent directories and export the bundle schema."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from voxgate.cli._common import echo_json, fail

agent_app = typer.Typer(help="Check agent directories and export the bundle schema.", no_args_is_help=True)

AgentDir = Annotated[Path, typer.Argument(help="Agent directory (holds agent.yaml and topics/).")]


@agent_app.command("validate")
def agent_validate(
    path: AgentDir,
    as_json: Annotated[bool, typer.Option("--json", help="Print problems as JSON.")] = False,
) -> None:
    """Check syntax, schema and cross-references; print path:line:col: message per problem (exit 2)."""
    from voxgate.bundle import BundleError, load_bundle

    try:
        bundle = load_bundle(path)
    except BundleError as exc:
        if as_json:
            echo_json({"ok": False, "problems": [p.__dict__ for p in exc.problems]})
        else:
            for problem in exc.problems:
                typer.echo(str(problem))
            typer.echo(f"{len(exc.problems)} problem(s)", err=True)
        raise typer.Exit(2) from None
    summary = {
        "ok": True,
        "agent": bundle.agent.name,
        "topics": sorted(bundle.topics),
        "actions": sorted(bundle.agent.actions),
        "knowledge": [k.path for k in bundle.knowledge],
        "tests": len(bundle.tests),
    }
    if as_json:
        echo_json(summary)
    else:
        typer.echo(
            f"{bundle.agent.name}: OK — {len(bundle.topics)} topics, {len(bundle.agent.actions)} actions, "
            f"{len(bundle.knowledge)} knowledge documents, {len(bundle.tests)} tests"
        )


@agent_app.command("schema")
def agent_schema(
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write to a file instead of stdout.")] = None,
    kind: Annotated[str, typer.Option(help="agent or topic")] = "agent",
) -> None:
    """Export the JSON Schema of agent.yaml (or a topic file) for editor autocompletion."""
    from voxgate.bundle.schema import json_schema

    if kind not in ("agent", "topic"):
        fail("--kind must be 'agent' or 'topic'")
    text = json.dumps(json_schema(kind), indent=2)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n", encoding="utf-8")
        typer.echo(f"wrote {out}")
    else:
        typer.echo(text)
