"""`voxgate stats`: outcome KPIs per environment and agent, from the server's database."""

from __future__ import annotations

import typer

from voxgate.cli._common import echo_json, fail
from voxgate.cli.client import call


def stats_command(
    env: str | None = typer.Option(None, help="Environment (default: all)."),
    agent: str | None = typer.Option(None, help="Agent (default: all)."),
    since: str = typer.Option("24h", help="24h, 7d, 90m or an ISO time."),
    bucket: str | None = typer.Option(None, help="One row per bucket: 1h, 1d…"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Sessions, engagement, resolution / escalation / abandon / completion rates, handle time,
    voice-to-voice latency, no-match rate, top intents and escalation reasons."""
    from voxgate.config import ConfigError, load_settings
    from voxgate.observe.analytics import kpis, parse_duration, parse_since
    from voxgate.store.db import Database

    try:
        settings = load_settings()
        start = parse_since(since)
        width = parse_duration(bucket) if bucket else None
    except (ConfigError, ValueError) as exc:
        fail(str(exc))
    db = Database(settings.db_url)
    db.migrate()
    rows = kpis(db, environment=env, agent=agent, since=start, bucket=width)
    db.dispose()
    if as_json:
        echo_json([r.model_dump() for r in rows])
        return

    def pct(x: float | None) -> str:
        return "-" if x is None else f"{x:.0%}"

    def num(x: float | None, unit: str) -> str:  # "-" when nothing was measured, never "None"
        return "-" if x is None else f"{x:.3g} {unit}"

    for r in rows:
        head = f"{r.bucket_start[:16]}  " if r.bucket_start else ""
        v = r.voice_to_voice_ms
        typer.echo(
            f"{head}sessions {r.sessions}  engaged {pct(r.engagement_rate)}  resolved {pct(r.resolution_rate)}  "
            f"escalated {pct(r.escalation_rate)}  abandoned {pct(r.abandon_rate)}  "
            f"completion {pct(r.completion_rate)}  no-match {pct(r.no_match_rate)}  "
            f"handle p50 {num(r.handle_time_s.get('p50'), 's')}  "
            f"voice p50 {num(v.get('p50'), 'ms')}  p95 {num(v.get('p95'), 'ms')}"
        )
        if r.top_intents:
            typer.echo("  top intents: " + ", ".join(f"{i} ({n})" for i, n in r.top_intents))
        if r.top_escalation_reasons:
            typer.echo("  escalations: " + ", ".join(f"{i} ({n})" for i, n in r.top_escalation_reasons))


incidents_app = typer.Typer(help="Incidents opened by alerts (through the API).", no_args_is_help=True)


@incidents_app.command("list")
def incidents_list(
    status: str | None = typer.Option(None, help="open, acknowledged, mitigated or resolved."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Incidents of the server's environment, newest first."""
    rows = call("GET", "/api/incidents" + (f"?status={status}" if status else ""))
    if as_json:
        echo_json(rows)
        return
    for r in rows:
        typer.echo(f"{r['id']}  {r['status']:<12} {r['severity']:<8} {r['opened_at'][:19]}  {r['summary']}")


def _step(status: str) -> None:
    def command(incident_id: str, note: str = typer.Option("", help="What was done, for the timeline.")) -> None:
        row = call("POST", f"/api/incidents/{incident_id}/{status}", {"note": note})
        typer.echo(f"{row['id']} is {row['status']}")

    command.__doc__ = f"Mark an incident {status}, with a note on its timeline."
    incidents_app.command({"acknowledged": "ack", "mitigated": "mitigate", "resolved": "resolve"}[status])(command)


for _status in ("acknowledged", "mitigated", "resolved"):
    _step(_status)
