"""The context packet a human receives on escalation: who, what, what was done, and why."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from voxgate.runtime.events import plain
from voxgate.runtime.templates import say_money

if TYPE_CHECKING:
    from voxgate.runtime.session import Session

REASON_TEXT = {
    "caller_request": "the caller asked for a person",
    "misunderstandings": "the agent did not understand the caller several times in a row",
    "verification_failed": "the caller could not be verified",
    "verification_locked": "the account is locked after too many failed verifications",
    "action_failed": "a back-end system call failed",
    "abusive_language": "the caller used abusive language",
}


def summarize(session: Session, reason: str) -> str:
    """A short, factual summary built from the session's own records (no model can invent it)."""
    parts: list[str] = []
    if session.verified:
        who = session.customer_name or "the caller"
        parts.append(f"Caller verified as {who} (customer {session.customer_id}).")
    elif session.slots.get("account_number"):
        parts.append("Caller gave an account number but was not verified.")
    else:
        parts.append("Caller not verified.")
    intents = list(dict.fromkeys(i["intent"] for i in session.intents))
    if intents:
        parts.append("Asked about: " + ", ".join(i.replace("_", " ") for i in intents) + ".")
    shown = {k: v for k, v in session.slots.items() if k not in session.sensitive_slots and k != "account_number"}
    if shown:
        parts.append("Details given: " + "; ".join(f"{k.replace('_', ' ')} {_said(v)}" for k, v in shown.items()) + ".")
    for act in session.actions:
        parts.append(f"Action {act['name']}: {act['status']}.")
    for done in session.topics_done:
        parts.append(f"Topic {done['topic'].replace('_', ' ')} ended {done['outcome']}.")
    parts.append(f"Escalated because {REASON_TEXT.get(reason, reason.replace('_', ' '))}.")
    return " ".join(parts)


def _said(value: Any) -> str:
    if isinstance(value, Decimal):
        return say_money(value)
    return str(plain(value))


def build_packet(session: Session, *, reason: str, queue: str) -> dict[str, Any]:
    """The escalation packet of a session, holding only the agent's configured context fields."""
    fields = set(session.agent.escalation.context_fields)
    packet: dict[str, Any] = {
        "session_id": session.id,
        "agent": session.agent.name,
        "agent_version": session.agent.version,
        "bundle_digest": session.runtime.digest,
        "environment": session.runtime.environment,
        "channel": session.channel,
        "queue": queue,
        "created_at": dt.datetime.now(dt.UTC).isoformat(),
    }
    if "reason" in fields:
        packet["reason"] = reason
    if "identity" in fields:
        packet["identity"] = {
            "customer_id": session.customer_id if session.verified else None,
            "name": session.customer_name if session.verified else None,
            "account_number": session.slots.get("account_number"),
            "verified": session.verified,
            "method": (
                f"{session.agent.authentication.identify_by}+{session.agent.authentication.verify_with}"
                if session.verified
                else None
            ),
        }
    if "verified" in fields:
        packet["verified"] = session.verified
    if "intents" in fields:
        packet["intents"] = list(session.intents)
    if "slots" in fields:
        packet["slots"] = {
            k: ("<redacted>" if k in session.sensitive_slots else plain(v)) for k, v in session.slots.items()
        }
    if "actions" in fields:
        packet["actions"] = list(session.actions)
    if "summary" in fields:
        packet["summary"] = summarize(session, reason)
    if "transcript" in fields:
        shown = packet.get("identity", {}).get("account_number") if "identity" in fields else None
        packet["transcript"] = redacted_transcript(session, shown=[shown] if shown else [])
    return packet


def redacted_transcript(session: Session, shown: list[str] | None = None) -> list[dict[str, str]]:
    """The conversation so far with personal data replaced by typed placeholders (``<CREDIT_CARD>`` …).

    The transcript carries no card, phone, e-mail, SSN or other customer's numbers, however they
    were spoken. ``shown`` are values the packet gives the human anyway (the account number in
    ``identity``): hiding them in the transcript would protect nothing. The stored copy of the
    packet is redacted whole by the recorder.
    """
    from voxgate.compliance.redaction import known_values, redactor_for_agent  # loads Presidio on first use

    redactor = redactor_for_agent(session.agent, session.bundle.topics.values())
    known = known_values(session)
    return [
        {"role": t.role, "text": redactor.redact(t.text, known, allow=shown or ()).text} for t in session.transcript
    ]
