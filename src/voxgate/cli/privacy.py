"""`voxgate privacy …` (data-subject find/erase, legal holds), `voxgate retention run`, `voxgate recording
export` and `voxgate redact`.

The privacy and retention commands work on the configured database directly (like `voxgate
audit`): they are for the operator of the installation. Every erasure, hold, release and purge
joins the audit chain, signed by this installation's audit key; subject identifiers never appear
in the output of `erase`, `hold` or `release`, nor in the audit chain (a keyed hash stands in).
`redact` checks redaction quality on lines read from stdin.

Two engineers write this file: `redact_command` is one part, everything else the other;
`voxgate.cli` mounts both.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from voxgate.cli._common import echo_json, fail, open_database

if TYPE_CHECKING:
    from voxgate.compliance.audit import AuditLog

privacy_app = typer.Typer(
    help="Data-subject requests: find and erase a person's records; legal holds.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
)
retention_app = typer.Typer(
    help="Retention: delete what each environment's policy says has expired.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
)

_CUSTOMER = typer.Option("--customer", metavar="ID", help="The customer id the platform verified them as.")
_PHONE = typer.Option("--phone", metavar="NUMBER", help="Their phone number (E.164 like +15551234567, or digits).")
_ACCOUNT = typer.Option("--account", metavar="NUMBER", help="Their account number.")
_JSON = typer.Option("--json", help="Print the result as JSON.")
_BY = typer.Option("--by", metavar="WHO", help="Who asks (a user id or ticket reference), for the audit chain.")


class _Store:
    """The configured database, its governance configuration, audit log and privacy salt."""

    def __init__(self) -> None:
        self.settings, self.db = open_database("legal_holds", "privacy")

    def audit(self) -> AuditLog:
        from voxgate.compliance.audit import AuditLog
        from voxgate.governance.setup import server_key

        return AuditLog(self.db, signer=server_key(self.settings, self.db))

    def salt(self) -> bytes:
        from voxgate.compliance.privacy import load_salt

        return load_salt(Path(self.settings.data_dir) / "keys" / "privacy-salt")

    def close(self) -> None:
        self.db.dispose()


def _emit(payload: Any, as_json: bool, lines: list[str]) -> None:
    if as_json:
        echo_json(payload)
    else:
        for line in lines:
            typer.echo(line)


@privacy_app.command("find")
def find_command(
    customer: Annotated[str | None, _CUSTOMER] = None,
    phone: Annotated[str | None, _PHONE] = None,
    account: Annotated[str | None, _ACCOUNT] = None,
    as_json: Annotated[bool, _JSON] = False,
) -> None:
    """List every stored record of a person: table, row id, column and why it matched (never the value)."""
    from voxgate.compliance.privacy import PrivacyError, find

    store = _Store()
    try:
        records = find(store.db, customer_id=customer, phone=phone, account_number=account, salt=store.salt())
    except PrivacyError as exc:
        fail(str(exc))
    finally:
        store.close()
    _emit(
        [r.model_dump() for r in records],
        as_json,
        [f"{r.table}\t{r.id}\t{r.field}\t{r.match}" for r in records] + [f"{len(records)} record(s)"],
    )


@privacy_app.command("erase")
def erase_command(
    customer: Annotated[str | None, _CUSTOMER] = None,
    phone: Annotated[str | None, _PHONE] = None,
    account: Annotated[str | None, _ACCOUNT] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Confirm: this cannot be undone.")] = False,
    by: Annotated[str, _BY] = "cli",
    as_json: Annotated[bool, _JSON] = False,
) -> None:
    """Delete a person's sessions and everything under them, anonymise every other mention; print the receipt.

    Give every identifier you know: transcripts are redacted before storage, so the platform
    cannot always link a customer id to their account number or phone by itself. Refused
    (exit 1) while a legal hold covers them. The audit chain keeps one event with a keyed hash
    of the subject and the counts.
    """
    from voxgate.compliance.privacy import LegalHoldError, PrivacyError, erase

    if not yes:
        fail("erasure cannot be undone: add --yes to confirm")
    store = _Store()
    try:
        receipt = erase(
            store.db,
            audit=store.audit(),
            salt=store.salt(),
            customer_id=customer,
            phone=phone,
            account_number=account,
            by=by,
        )
    except LegalHoldError as exc:
        fail(str(exc), 1)
    except PrivacyError as exc:
        fail(str(exc))
    finally:
        store.close()
    _emit(
        receipt.model_dump(mode="json"),
        as_json,
        [
            f"erasure {receipt.request_id} done: {sum(receipt.deleted.values())} row(s) deleted, "
            f"{sum(receipt.anonymised.values())} anonymised (subject {receipt.subject_hash[:16]}…)",
            *(f"  deleted     {t}: {n}" for t, n in sorted(receipt.deleted.items())),
            *(f"  anonymised  {t}: {n}" for t, n in sorted(receipt.anonymised.items())),
        ],
    )


@privacy_app.command("hold")
def hold_command(
    reason: Annotated[str, typer.Option("--reason", help="Why (e.g. the legal matter); audited.")],
    customer: Annotated[str | None, _CUSTOMER] = None,
    phone: Annotated[str | None, _PHONE] = None,
    account: Annotated[str | None, _ACCOUNT] = None,
    by: Annotated[str, _BY] = "cli",
    as_json: Annotated[bool, _JSON] = False,
) -> None:
    """Place a legal hold: retention purge and erasure leave the person's records alone until released."""
    from voxgate.compliance.privacy import PrivacyError, hold

    store = _Store()
    try:
        placed = hold(
            store.db,
            audit=store.audit(),
            salt=store.salt(),
            reason=reason,
            by=by,
            customer_id=customer,
            phone=phone,
            account_number=account,
        )
    except PrivacyError as exc:
        fail(str(exc))
    finally:
        store.close()
    _emit(placed.model_dump(mode="json"), as_json, [f"legal hold {placed.id} placed"])


@privacy_app.command("release")
def release_command(
    reason: Annotated[str, typer.Option("--reason", help="Why the hold ends; audited.")],
    customer: Annotated[str | None, _CUSTOMER] = None,
    phone: Annotated[str | None, _PHONE] = None,
    account: Annotated[str | None, _ACCOUNT] = None,
    by: Annotated[str, _BY] = "cli",
    as_json: Annotated[bool, _JSON] = False,
) -> None:
    """Release the legal holds placed on a person (name them as the hold did)."""
    from voxgate.compliance.privacy import PrivacyError, release

    store = _Store()
    try:
        released = release(
            store.db,
            audit=store.audit(),
            salt=store.salt(),
            reason=reason,
            by=by,
            customer_id=customer,
            phone=phone,
            account_number=account,
        )
    except PrivacyError as exc:
        fail(str(exc))
    finally:
        store.close()
    _emit([h.model_dump(mode="json") for h in released], as_json, [f"legal hold {h.id} released" for h in released])


@retention_app.command("run")
def retention_run_command(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Count what has expired; delete nothing.")] = False,
    now: Annotated[
        str | None,
        typer.Option("--now", metavar="TIME", help="Purge as of this ISO time instead of now (no zone: UTC)."),
    ] = None,
    as_json: Annotated[bool, _JSON] = False,
) -> None:
    """Delete expired transcripts, packets, sessions and security events per environment (audited)."""
    from voxgate.compliance.retention import purge
    from voxgate.governance.environments import GovernanceConfigError, load_governance

    as_of = None
    if now is not None:
        try:
            as_of = dt.datetime.fromisoformat(now.strip())
        except ValueError:
            fail(f"--now {now!r} is not an ISO-8601 date or time (e.g. 2026-01-31T12:00:00Z)")
    store = _Store()
    try:
        config = load_governance(store.settings.policy_dir)
        report = purge(
            store.db, config, as_of, audit=None if dry_run else store.audit(), dry_run=dry_run, salt=store.salt()
        )
    except GovernanceConfigError as exc:
        fail(f"environments.yaml:\n{exc}")
    finally:
        store.close()
    lines = [
        f"retention purge{' (dry run: nothing deleted)' if dry_run else ''} as of {report.ran_at:%Y-%m-%d %H:%M}Z:"
        f" {report.total} row(s)"
    ]
    for env, per in report.counts.items():
        shown = ", ".join(f"{c} {n}" for c, n in per.items() if n) or "nothing expired"
        lines.append(f"  {env}: {shown}")
    if report.held_sessions:
        lines.append(f"  {report.held_sessions} session(s) kept under legal hold")
    for env, n in report.unknown_environments.items():
        lines.append(f"  {env}: {n} session(s) of an environment not in environments.yaml, left alone")
    _emit(report.model_dump(mode="json"), as_json, lines)


recording_app = typer.Typer(
    help="Encrypted call recordings (off unless an environment turns recording on).",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
)


@recording_app.command("export")
def recording_export(
    session: Annotated[str, typer.Argument(metavar="SESSION_ID", help="The call's session id.")],
    out: Annotated[Path, typer.Option("--out", help="Where to write the WAV (stereo: caller left, agent right).")],
    by: Annotated[str, _BY] = "cli",
) -> None:
    """Decrypt one call's recording into a WAV file; the export joins the audit chain."""
    from voxgate.compliance.audit import AuditEvent
    from voxgate.compliance.recording import RecordingError, RecordingVault, load_master_key
    from voxgate.governance.environments import GovernanceConfigError, load_governance
    from voxgate.store.files import write_private

    store = _Store()
    try:
        config = load_governance(store.settings.policy_dir)
        with store.db.engine.connect() as conn:
            from sqlalchemy import text

            env = conn.execute(
                text("SELECT environment FROM recordings WHERE session_id = :s"), {"s": session}
            ).scalar()
        if env is None:
            fail(f"no recording of session {session}", 1)
        settings = config.environments[env].settings.recording if env in config.environments else None
        vault = RecordingVault(
            store.db, load_master_key(settings.master_key if settings else None, store.settings.data_dir), store.salt()
        )
        meta, wav = vault.read(vault.for_session(session)[-1])
        write_private(out, wav)  # decrypted call audio: readable by its owner only
        store.audit().append(
            AuditEvent(
                actor=by,
                action="recording.export",
                resource=f"session:{session}",
                environment=env,
                data={"recording": meta["id"], "bytes": len(wav)},
            )
        )
    except (RecordingError, GovernanceConfigError) as exc:
        fail(str(exc), 1)
    finally:
        store.close()
    typer.echo(f"wrote {out} ({meta['duration_ms'] / 1000:.1f} s, {len(wav)} bytes)")


# ---- `voxgate redact` (written by the redaction part) -----------------------------------------------


def redact_command(
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object per line: text, redacted, spans, counts.")
    ] = False,
    agent: Annotated[
        Path | None,
        typer.Option("--agent", help="Agent directory: use its account-number and PIN lengths and identifier slots."),
    ] = None,
) -> None:
    """Redact personal data in each line read from stdin and print the result, line by line.

    Without --json each output line is the redacted text. With --json each is
    {"text": ORIGINAL, "redacted": TEXT, "spans": [{"type", "start", "end"}], "counts": {TYPE: N}},
    where start/end are character offsets in the ORIGINAL line. Blank lines give empty results.
    """
    from voxgate.compliance.redaction import RedactionError, default_redactor, redactor_for_agent

    if agent is not None:
        from voxgate.bundle import BundleError, load_bundle

        try:
            bundle = load_bundle(agent)
        except BundleError as exc:
            typer.echo(f"cannot load agent {agent}: {exc}", err=True)
            raise typer.Exit(2) from None
        redactor = redactor_for_agent(bundle.agent, bundle.topics.values())
    else:
        redactor = default_redactor()
    for number, raw in enumerate(sys.stdin, start=1):
        line = raw.rstrip("\r\n")
        try:
            result = redactor.redact(line)
        except RedactionError as exc:
            typer.echo(f"line {number}: {exc}", err=True)
            raise typer.Exit(2) from None
        if as_json:
            typer.echo(
                json.dumps(
                    {
                        "text": line,
                        "redacted": result.text,
                        "spans": [s.model_dump() for s in result.spans],
                        "counts": result.counts,
                    },
                    ensure_ascii=False,
                )
            )
        else:
            typer.echo(result.text)
