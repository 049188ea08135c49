"""`voxgate audit`: check the tamper-evident audit chain and export it as JSON lines."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from voxgate.cli._common import fail, open_database

if TYPE_CHECKING:
    from voxgate.compliance.audit import AuditLog

app = typer.Typer(
    help="The tamper-evident audit log: recompute the hash chain, check its signed checkpoints, export events.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
)

_WHEN_HELP = "ISO-8601 date or time, e.g. 2026-01-31 or 2026-01-31T12:00:00Z (no zone: UTC)."


def _when(value: str | None) -> dt.datetime | None:
    if value is None:
        return None
    try:
        when = dt.datetime.fromisoformat(value.strip())
    except ValueError:
        raise typer.BadParameter(
            f"{value!r} is not an ISO-8601 date or time (e.g. 2026-01-31 or 2026-01-31T12:00:00Z)"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def _open_log() -> AuditLog:
    """The configured database's audit log, or a clear exit if it cannot be used."""
    from voxgate.compliance.audit import AuditLog

    _, db = open_database("audit_events", "audit")
    return AuditLog(db)


@app.command()
def verify(
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Check the chain: exit 0 if intact, 1 naming the first bad sequence number.

    Recomputes every event's hash from the stored fields and checks every signed checkpoint
    against the audit public keys in the database (signing_keys, purpose "audit").
    """
    from voxgate.compliance.audit import AuditError, audit_public_keys

    log = _open_log()
    try:
        report = log.verify(audit_public_keys(log.db))
    except AuditError as exc:
        fail(str(exc))
    finally:
        log.db.dispose()
    if as_json:
        typer.echo(report.model_dump_json(indent=2))
    elif report.ok:
        line = f"audit chain OK: {report.events_checked} event(s), {report.checkpoints_checked} signed checkpoint(s)"
        if report.unsigned_tail:
            line += f"; the last {report.unsigned_tail} event(s) are after the last signed checkpoint"
        typer.echo(line)
    else:
        typer.echo(f"audit chain BROKEN after {report.events_checked} good event(s)")
        typer.echo(f"first bad sequence number: {report.first_bad_seq} ({report.reason})")
    if not report.ok:
        raise typer.Exit(1)


@app.command()
def export(
    since: Annotated[str, typer.Option("--since", metavar="TIME", help=f"Events at or after this time. {_WHEN_HELP}")],
    until: Annotated[
        str | None, typer.Option("--until", metavar="TIME", help=f"Events before this time. {_WHEN_HELP}")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", metavar="FILE", help="Write to this file instead of stdout.")
    ] = None,
) -> None:
    """Write events as JSON lines that an outside tool can re-verify.

    One object per event: seq, at, actor, action, resource, environment, outcome, data,
    prev_hash, hash. hash = sha256(prev_hash + "\\n" + the eight fields joined by "\\n", with
    data as JSON with sorted keys and no spaces).
    """
    from voxgate.compliance.audit import AuditError

    try:
        start = _when(since)
    except typer.BadParameter as exc:
        raise typer.BadParameter(str(exc), param_hint="'--since'") from None
    try:
        end = _when(until)
    except typer.BadParameter as exc:
        raise typer.BadParameter(str(exc), param_hint="'--until'") from None
    if start is not None and end is not None and end <= start:
        raise typer.BadParameter(f"{until} is not after --since {since}", param_hint="'--until'")
    log = _open_log()
    try:
        if out is None:
            count = log.export(sys.stdout, since=start, until=end)
        else:
            try:
                fh = out.open("w", encoding="utf-8")
            except OSError as exc:
                fail(f"--out {out}: cannot write ({exc.strerror})")
            with fh:
                count = log.export(fh, since=start, until=end)
    except AuditError as exc:
        fail(str(exc))
    finally:
        log.db.dispose()
    typer.echo(f"{count} event(s) exported" + (f" to {out}" if out else ""), err=True)
