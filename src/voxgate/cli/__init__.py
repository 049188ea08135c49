"""The `voxgate` command line: validate agents, chat with them, serve them, run the demo.

Every command group is a module of this package; this is the one place they are mounted on
`app`, in the order `voxgate --help` lists them. Shared helpers live in `_common`.
"""

from __future__ import annotations

import typer

from voxgate.cli import agent, audit, bundle, chat, db, gates, gov, main, privacy, stats, test, voice

app = typer.Typer(
    help="voxgate: governed, self-hosted real-time voice agents.\n\n"
    "Agents are directories of YAML (agent.yaml, topics/, knowledge/, tests/). "
    "Start with `voxgate agent validate DIR`, talk to it with `voxgate chat DIR`, "
    "and run everything with `voxgate demo`.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
)

app.add_typer(agent.agent_app, name="agent")
app.add_typer(db.db_app, name="db")

app.command("call")(voice.call_command)
app.command("transcribe")(voice.transcribe_command)
app.add_typer(voice.bench_app, name="bench")

app.command()(gov.init)
app.command()(gov.login)
app.command()(gov.rollback)
app.add_typer(gov.release_app, name="release")
app.add_typer(gov.user_app, name="user")
app.add_typer(audit.app, name="audit", help="Verify and export the tamper-evident audit log.")
app.add_typer(bundle.app, name="bundle", help="Build, verify, inspect and diff signed agent bundles.")

app.add_typer(gates.gates_app, name="gates")
app.command("checklist")(gates.checklist_command)

app.command("test")(test.test_command)
app.command("stats")(stats.stats_command)
app.add_typer(stats.incidents_app, name="incidents")

app.add_typer(privacy.privacy_app, name="privacy")
app.add_typer(privacy.retention_app, name="retention")
app.add_typer(privacy.recording_app, name="recording")
app.command("redact")(privacy.redact_command)

app.command()(main.version)
app.command()(chat.chat)
app.command()(main.serve)
app.command()(main.demo)

__all__ = ["app"]
