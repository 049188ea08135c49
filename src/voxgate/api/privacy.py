"""Privacy operations over the API: data-subject requests, legal holds, the retention purge, and
encrypted call recordings. The same functions back `voxgate privacy …`, `voxgate retention run`
and `voxgate recording export`; every call here is authorised by policy and audited.

Identifiers travel in request bodies, never in URLs (which end up in access logs).

Environments may share one database. A recording is authorised on its session's own environment
(404 when the caller may not read it there); finding, erasing or holding a person's records spans
every environment those records may be in, so it needs `privacy.manage` in every environment; the
retention purge, which spans every environment too, needs `retention.run` in every one.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Response
from pydantic import BaseModel, ConfigDict, Field

from voxgate.api.auth import Target, authorize_everywhere, authorize_record, guard
from voxgate.api.state import AppState, get_state
from voxgate.compliance.audit import AuditEvent
from voxgate.compliance.privacy import (
    LegalHoldError,
    PrivacyError,
    erase,
    find,
    hold,
    holds,
    load_salt,
    release,
    subject_from,
    subject_hash,
)
from voxgate.compliance.recording import RecordingError
from voxgate.compliance.retention import purge
from voxgate.errors import ConflictError, InvalidError, NotFoundError
from voxgate.governance.principals import Principal
from voxgate.store.recording_models import RecordingRow

router = APIRouter(tags=["privacy"])


def worker_env(request: Any) -> Target:
    """Records on this worker belong to the environment it serves."""
    return Target(environment=request.app.state.voxgate.settings.environment)


class SubjectBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    customer_id: str | None = Field(default=None, max_length=200)
    phone: str | None = Field(default=None, max_length=64)
    account_number: str | None = Field(default=None, max_length=64)


class EraseBody(SubjectBody):
    confirm: bool = Field(description="Must be true: erasure cannot be undone.")


class HoldBody(SubjectBody):
    reason: str = Field(min_length=3, max_length=500)


class PurgeBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dry_run: bool = False


def _salt(state: AppState) -> bytes:

    return load_salt(Path(state.settings.data_dir) / "keys" / "privacy-salt")


async def _run(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """`fn` off the event loop; a legal hold that stops it is a conflict, any other privacy refusal invalid."""

    try:
        return await asyncio.to_thread(fn, *args, **kwargs)
    except LegalHoldError as exc:
        raise ConflictError(str(exc)) from None
    except PrivacyError as exc:
        raise InvalidError(str(exc)) from None


@router.post("/api/privacy/find")
async def privacy_find(
    body: SubjectBody,
    state: AppState = Depends(get_state),
    principal: Principal = Depends(guard("privacy.manage", "POST", "/api/privacy/find", worker_env)),
) -> dict[str, Any]:
    """Every record of one person; the search itself is audited by keyed hash, never the identifiers."""

    await authorize_everywhere(state, principal, "privacy.manage")
    records = await _run(
        find,
        state.db,
        customer_id=body.customer_id,
        phone=body.phone,
        account_number=body.account_number,
        salt=_salt(state),
    )
    digest = subject_hash(subject_from(body.customer_id, body.phone, body.account_number), _salt(state))
    await asyncio.to_thread(
        state.audit.append,
        AuditEvent(
            actor=principal.audit_actor,
            action="privacy.find",
            resource="privacy_subject",
            environment=state.settings.environment,
            data={"subject": digest, "records": len(records)},
        ),
    )
    return {"records": [r.model_dump(mode="json") for r in records]}


@router.post("/api/privacy/erase")
async def privacy_erase(
    body: EraseBody,
    state: AppState = Depends(get_state),
    principal: Principal = Depends(guard("privacy.manage", "POST", "/api/privacy/erase", worker_env)),
) -> dict[str, Any]:

    await authorize_everywhere(state, principal, "privacy.manage")
    if not body.confirm:
        raise InvalidError("erasure cannot be undone: send confirm: true")
    receipt = await _run(
        erase,
        state.db,
        audit=state.audit,
        salt=_salt(state),
        customer_id=body.customer_id,
        phone=body.phone,
        account_number=body.account_number,
        by=principal.audit_actor,
    )
    return dict(receipt.model_dump(mode="json"))


@router.get("/api/privacy/holds")
async def privacy_holds(
    active_only: bool = True,
    state: AppState = Depends(get_state),
    _: Principal = Depends(guard("privacy.manage", "GET", "/api/privacy/holds", worker_env)),
) -> list[dict[str, Any]]:

    return [h.model_dump(mode="json") for h in await _run(holds, state.db, active_only=active_only)]


@router.post("/api/privacy/holds", status_code=201)
async def privacy_hold(
    body: HoldBody,
    state: AppState = Depends(get_state),
    principal: Principal = Depends(guard("privacy.manage", "POST", "/api/privacy/holds", worker_env)),
) -> dict[str, Any]:

    await authorize_everywhere(state, principal, "privacy.manage")
    placed = await _run(
        hold,
        state.db,
        audit=state.audit,
        salt=_salt(state),
        reason=body.reason,
        by=principal.audit_actor,
        customer_id=body.customer_id,
        phone=body.phone,
        account_number=body.account_number,
    )
    return dict(placed.model_dump(mode="json"))


@router.post("/api/privacy/holds/release")
async def privacy_release(
    body: HoldBody,
    state: AppState = Depends(get_state),
    principal: Principal = Depends(guard("privacy.manage", "POST", "/api/privacy/holds/release", worker_env)),
) -> list[dict[str, Any]]:

    await authorize_everywhere(state, principal, "privacy.manage")
    released = await _run(
        release,
        state.db,
        audit=state.audit,
        salt=_salt(state),
        reason=body.reason,
        by=principal.audit_actor,
        customer_id=body.customer_id,
        phone=body.phone,
        account_number=body.account_number,
    )
    return [h.model_dump(mode="json") for h in released]


@router.post("/api/retention/run")
async def retention_run(
    body: PurgeBody,
    state: AppState = Depends(get_state),
    principal: Principal = Depends(guard("retention.run", "POST", "/api/retention/run", worker_env)),
) -> dict[str, Any]:
    """Run the retention purge now (the server also runs it every `retention_interval_s`).

    The purge deletes expired records of every environment in the shared database, and its report
    (a dry run too) counts them per environment, so it needs `retention.run` in every one."""

    await authorize_everywhere(state, principal, "retention.run")
    report = await asyncio.to_thread(
        purge, state.db, state.governance, audit=state.audit, dry_run=body.dry_run, salt=_salt(state)
    )
    return {**report.model_dump(mode="json"), "total": report.total}


@router.get("/api/sessions/{session_id}/recording")
async def session_recording(
    session_id: str,
    state: AppState = Depends(get_state),
    principal: Principal = Depends(guard("recording.read", "GET", "/api/sessions/{session_id}/recording", worker_env)),
) -> Response:
    """The call's recording as a WAV file (decrypted for this request only); every export is audited."""

    missing = "no recording of that session (recording is off unless the environment turns it on)"

    def fetch() -> tuple[dict[str, Any], bytes] | None:
        vault = state.recording_vault()
        ids = vault.for_session(session_id)
        if not ids:
            return None
        # authorised on the recording's own environment, not this worker's
        authorize_record(state, principal, "recording.read", _recording_environment(state, ids[-1]), missing)
        return vault.read(ids[-1])

    try:
        found = await asyncio.to_thread(fetch)
    except RecordingError as exc:  # kept, but it cannot be read (key erased, tampered): 410 Gone, no category
        raise HTTPException(410, str(exc)) from None
    if found is None:
        raise NotFoundError(missing)
    meta, wav = found
    await asyncio.to_thread(
        state.audit.append,
        AuditEvent(
            actor=principal.audit_actor,
            action="recording.export",
            resource=f"session:{session_id}",
            environment=meta.get("environment") or state.settings.environment,
            data={"recording": meta["id"], "bytes": len(wav)},
        ),
    )
    return Response(
        wav,
        media_type="audio/wav",
        headers={"Content-Disposition": f'attachment; filename="{session_id}.wav"', "Cache-Control": "no-store"},
    )


def _recording_environment(state: AppState, recording_id: str) -> str | None:
    from sqlalchemy import select

    with state.db.orm() as orm:
        return orm.scalar(select(RecordingRow.environment).where(RecordingRow.id == recording_id))
