"""`voxgate stats`: outcome KPIs per environment and agent, from the server's database."""

from __future__ import annotations

import json
from typing import Optional

import typer


def stats_command(
    env: Optional[str] = typer.Option(None, help="Environment (default: all)."),
    agent: Optional[str] = typer.Option(None, help="Agent (default: all)."),
    since: str = typer.Option("24h", help="24h, 7d, 90m or an ISO time."),
    bucket: Optional[str] = typer.Option(None, help="One row per bucket: 1h, 1d…"),
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
        typer.echo(str(exc), err=True)
        raise typer.Exit(2)
    db = Database(settings.db_url)
    db.migrate()
    rows = kpis(db, environment=env, agent=agent, since=start, bucket=width)
    db.dispose()
    if as_json:
        typer.echo(json.dumps([r.model_dump() for r in rows], indent=2))
        return

    def pct(x: float | None) -> str:
        return "-" if x is None else f"{x:.0%}"

    for r in rows:
        head = f"{r.bucket_start[:16]}  " if r.bucket_start else ""
        v = r.voice_to_voice_ms
        typer.echo(f"{head}sessions {r.sessions}  engaged {pct(r.engagement_rate)}  resolved {pct(r.resolution_rate)}  "
                   f"escalated {pct(r.escalation_rate)}  abandoned {pct(r.abandon_rate)}  "
                   f"completion {pct(r.completion_rate)}  no-match {pct(r.no_match_rate)}  "
                   f"handle p50 {r.handle_time_s.get('p50')} s  voice p50/p95 {v.get('p50')}/{v.get('p95')} ms")
        if r.top_intents:
            typer.echo("  top intents: " + ", ".join(f"{i} ({n})" for i, n in r.top_intents))
        if r.top_escalation_reasons:
            typer.echo("  escalations: " + ", ".join(f"{i} ({n})" for i, n in r.top_escalation_reasons))
