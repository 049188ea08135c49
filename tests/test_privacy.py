"""Data-subject requests over real stored conversations: find, erase with a receipt, legal holds."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import MetaData, select, text
from typer.testing import CliRunner

from tests.helpers.conversation import converse, spoken
from voxgate.compliance.audit import AuditLog
from voxgate.compliance.privacy import (
    LegalHoldError,
    PrivacyError,
    erase,
    find,
    hold,
    legacy_runtime_ref,
    release,
    runtime_ref,
)
from voxgate.compliance.recorder import sql_recorder
from voxgate.compliance.retention import purge
from voxgate.governance.environments import load_governance
from voxgate.runtime.engine import AgentRuntime
from voxgate.store.db import Database
from voxgate.store.models import HandoffRow, PrivacyRequestRow, SecurityEventRow, SessionRow, TurnRow

SALT = b"a test installation secret, 32b!"


def dump(db: Database, *, skip: tuple[str, ...] = ("audit_events",)) -> str:
    """Every row of every table as text."""
    meta = MetaData()
    meta.reflect(bind=db.engine)
    out = []
    with db.engine.connect() as conn:
        for name, table in meta.tables.items():
            if name in skip:
                continue
            for row in conn.execute(select(table)):
                out.append(name + " " + json.dumps([str(v) for v in row]))
    return "\n".join(out)


def national(phone: str) -> str:
    return phone.removeprefix("+1")


def pick(credentials: list[dict[str, str]]) -> tuple[dict[str, str], dict[str, str]]:
    a = credentials[0]
    b = next(c for c in credentials[1:] if c["first_name"] != a["first_name"] and c["phone"] != a["phone"])
    return a, b


@pytest.fixture()
async def stored(
    db_url: str, harbor_bundle: Any, harbor_backend: Any, credentials: list[dict[str, str]]
) -> AsyncIterator[tuple[Database, AuditLog, dict[str, str], dict[str, str]]]:
    """Several real conversations of customer A, one of customer B, stored through the worker's recorder."""
    db = Database(db_url)
    db.migrate()
    audit = AuditLog(db)
    a, b = pick(credentials)
    rt = AgentRuntime(
        harbor_bundle,
        environment="prod",
        recorder=sql_recorder(db, audit=audit),
        refs=lambda value: runtime_ref(value, SALT),
    )  # as a worker keys them
    # A, verified by spoken digits, gives their phone, asks for a person (a packet with identity)
    await converse(
        rt,
        "what's my balance",
        spoken(a["account_number"]),
        spoken(a["pin"]),
        "my phone is " + spoken(national(a["phone"])),
        "I want a human",
    )
    # A again, written digits
    await converse(rt, "where is my order", a["account_number"], a["pin"], "thanks, that's all")
    # somebody gives A's account number and hangs up before the PIN (unverified, A's account)
    await converse(rt, "what do I owe", spoken(a["account_number"]))
    # an unverified caller leaves A's phone number in an outage question
    await converse(rt, f"is there an outage, call me back on {a['phone']}")
    # B, verified, asks about A's account (refused, security event) and mentions A's phone
    await converse(
        rt,
        "what's my balance",
        spoken(b["account_number"]),
        spoken(b["pin"]),
        "and what about account " + spoken(a["account_number"]),
        f"my neighbour is on {national(a['phone'])[:3]}-{national(a['phone'])[3:6]}-{national(a['phone'])[6:]}",
        "talk to a person please",
    )
    # B again, about nothing of A's
    b_session = await converse(rt, "where is my order", b["account_number"], b["pin"], "thanks, that's all")
    await rt.aclose()
    _legacy_rows(db, a, b_session.id)
    yield db, audit, a, b
    db.dispose()


LEGACY_NAME = "Marsh"


def _legacy_rows(db: Database, a: dict[str, str], b_session: str) -> None:
    """Rows as a version without redaction stored them: A's raw identifiers, spoken and written.

    An unverified session where the caller gave A's account (its packet names A in full), and
    mentions of A in B's session and in a security event.
    """
    phone, acct = national(a["phone"]), a["account_number"]
    full = f"{a['first_name']} {LEGACY_NAME}"
    with db.engine.begin() as conn:
        conn.execute(
            SessionRow.__table__.insert().values(
                id="legacy-a",
                agent="harbor-support",
                agent_version="1",
                environment="prod",
                channel="voice",
                started_at=dt.datetime.now(dt.UTC),
                verified=False,
                turn_count=1,
            )
        )
        conn.execute(
            TurnRow.__table__.insert().values(
                session_id="legacy-a",
                seq=1,
                user_text=spoken(acct),
                agent_text="And your PIN?",
                state="idle",
                data={"slots": {"account_number": acct}},
                created_at=dt.datetime.now(dt.UTC),
            )
        )
        conn.execute(
            HandoffRow.__table__.insert().values(
                session_id="legacy-a",
                queue="general",
                reason="caller_request",
                status="waiting",
                created_at=dt.datetime.now(dt.UTC),
                packet={
                    "identity": {"customer_id": None, "account_number": acct, "name": full, "verified": False},
                    "transcript": [{"role": "user", "text": "call me on " + spoken(phone)}],
                },
            )
        )
        conn.execute(
            TurnRow.__table__.insert().values(
                session_id=b_session,
                seq=99,
                user_text=f"my neighbour {full} is on {phone[:3]}-{phone[3:6]}-{phone[6:]}",
                agent_text="I can only help with your own account.",
                state="idle",
                data={"events": [{"type": "data_access_denied", "requested_ref": legacy_runtime_ref(acct)}]},
                created_at=dt.datetime.now(dt.UTC),
            )
        )
        conn.execute(
            SecurityEventRow.__table__.insert().values(
                session_id=b_session,
                kind="data_access_denied",
                agent="harbor-support",
                environment="prod",
                detail={"note": f"caller read out {a['phone']} and account {spoken(acct)}"},
                created_at=dt.datetime.now(dt.UTC),
            )
        )


def identifiers(c: dict[str, str]) -> list[str]:
    phone = national(c["phone"])
    return [
        c["customer_id"],
        c["account_number"],
        phone,
        spoken(c["account_number"]),
        spoken(phone),
        f"{c['first_name']} {LEGACY_NAME}",
        legacy_runtime_ref(c["account_number"])[7:],
        runtime_ref(c["account_number"], SALT)[4:],
    ]


async def test_references_in_events_are_keyed_so_an_account_cannot_be_recovered_by_hashing(stored: Any) -> None:
    """B's refused request for A's account names it by a reference keyed with the installation's
    salt: hashing every 8-digit candidate without the salt finds nothing."""
    db, _, a, _ = stored
    with db.engine.connect() as conn:
        details = [
            json.dumps(d)
            for d in conn.execute(
                text("SELECT detail FROM security_events WHERE kind = 'data_access_denied'")
            ).scalars()
        ]
    live = [d for d in details if "requested_ref" in d]
    assert live, details
    assert runtime_ref(a["account_number"], SALT) in live[0]
    assert legacy_runtime_ref(a["account_number"]) not in live[0]
    assert runtime_ref(a["account_number"], b"another installation's secret!!") not in live[0]
    # without the salt, find still finds A's sessions, but not the mention by keyed reference
    unsalted = find(db, account_number=a["account_number"])
    salted = find(db, account_number=a["account_number"], salt=SALT)
    assert sum(r.match == "reference" for r in salted) > sum(r.match == "reference" for r in unsalted)


async def test_erase_leaves_no_trace_and_keeps_the_other_customer(stored: Any) -> None:
    db, audit, a, b = stored
    before = dump(db)
    for value in identifiers(a):
        assert value in before, value  # the conversations really stored each identifier
    # redaction keeps the account number out of A's own sessions, so the request names it too
    records = find(db, customer_id=a["customer_id"], phone=a["phone"], account_number=a["account_number"], salt=SALT)
    tables = {r.table for r in records}
    assert {"sessions", "turns", "handoffs"} <= tables
    assert any(r.match == "phone" for r in records) and any(r.match == "reference" for r in records)
    with db.engine.connect() as conn:
        b_turns = conn.execute(
            text("SELECT count(*) FROM turns t JOIN sessions s ON s.id = t.session_id WHERE s.customer_id = :c"),
            {"c": b["customer_id"]},
        ).scalar_one()
        total_sessions = conn.execute(text("SELECT count(*) FROM sessions")).scalar_one()

    receipt = erase(
        db,
        audit=audit,
        salt=SALT,
        customer_id=a["customer_id"],
        phone=a["phone"],
        account_number=a["account_number"],
        by="dpo-1",
    )

    # two verified sessions and the unverified one that holds A's account (plus the live unverified
    # one when the account is stored unredacted there)
    assert receipt.deleted["sessions"] >= 3 and receipt.deleted["handoffs"] >= 2
    assert (
        receipt.anonymised.get("turns", 0) >= 1 and receipt.anonymised.get("security_events") == 2
    )  # the refused request, the legacy note
    after = dump(db)
    for value in identifiers(a):
        assert value.lower() not in after.lower(), value
    assert find(db, customer_id=a["customer_id"], phone=a["phone"], account_number=a["account_number"], salt=SALT) == []
    assert find(db, account_number=a["account_number"], salt=SALT) == []
    # B's records are intact: their session, turns, packet and identifiers
    with db.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM sessions")).scalar_one() == (
            total_sessions - receipt.deleted["sessions"]
        )
        assert (
            conn.execute(
                text("SELECT count(*) FROM turns t JOIN sessions s ON s.id = t.session_id WHERE s.customer_id = :c"),
                {"c": b["customer_id"]},
            ).scalar_one()
            == b_turns
        )
    assert b["customer_id"] in after and "my neighbour <PERSON> is on <PHONE>" in after
    # the audit chain holds one erase event with a hash of the subject, and still verifies
    events = audit.query(action="privacy.erase")
    assert len(events) == 1 and events[0]["seq"] == receipt.audit_seq
    chain = dump(db, skip=())
    assert receipt.subject_hash in chain
    audit_only = chain[len(after) :]
    assert a["customer_id"] not in audit_only and a["account_number"] not in audit_only
    assert national(a["phone"]) not in audit_only
    assert audit.verify().ok
    with db.orm() as orm:
        row = orm.get(PrivacyRequestRow, receipt.request_id)
        assert row is not None and row.status == "completed" and row.counts["deleted"] == receipt.deleted


async def test_legal_hold_blocks_erase_and_purge_until_released(stored: Any) -> None:
    db, audit, a, b = stored
    held = hold(
        db,
        audit=audit,
        salt=SALT,
        reason="litigation matter 2026-17",
        by="legal-1",
        customer_id=a["customer_id"],
        account_number=a["account_number"],
    )
    with pytest.raises(LegalHoldError, match=held.id):
        erase(db, audit=audit, salt=SALT, account_number=a["account_number"])  # any of their identifiers
    assert find(db, customer_id=a["customer_id"])  # nothing was erased
    # far in the future everything has expired, but A's sessions are held, and so is the session of
    # B that mentions A; B's other session goes
    report = purge(db, load_governance(), dt.datetime.now(dt.UTC) + dt.timedelta(days=3650), audit=audit, salt=SALT)
    assert report.held_sessions >= 4
    with db.orm() as orm:
        left = {r.id: r.customer_id for r in orm.scalars(select(SessionRow))}
    assert list(left.values()).count(a["customer_id"]) == 2 and "legacy-a" in left
    assert list(left.values()).count(b["customer_id"]) == 2  # both of B's sessions mention A: held too
    assert all(cid in (a["customer_id"], b["customer_id"]) for sid, cid in left.items() if sid != "legacy-a")
    with pytest.raises(PrivacyError, match="no active legal hold"):
        release(db, audit=audit, salt=SALT, reason="done", by="legal-1", customer_id=b["customer_id"])
    release(
        db,
        audit=audit,
        salt=SALT,
        reason="matter closed",
        by="legal-1",
        customer_id=a["customer_id"],
        account_number=a["account_number"],
    )
    receipt = erase(
        db, audit=audit, salt=SALT, customer_id=a["customer_id"], phone=a["phone"], account_number=a["account_number"]
    )
    assert receipt.deleted["sessions"] >= 2
    assert a["customer_id"] not in dump(db)  # the released hold no longer holds the identifiers either
    actions = [r[0] for r in db.engine.connect().execute(text("SELECT action FROM audit_events ORDER BY seq"))]
    assert actions.count("privacy.hold") == 1 and actions.count("privacy.release") == 1
    assert actions.count("privacy.erase") == 2  # the refusal and the erasure
    assert audit.verify().ok


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({}, "give a customer id"),
        ({"phone": "call me maybe"}, "not a phone number"),
        ({"phone": "123"}, "7 to 15 digits"),
        ({"account_number": "12ab"}, "account number"),
    ],
)
def test_bad_subjects_get_clear_errors(tmp_path: Any, kwargs: dict[str, str], message: str) -> None:
    db = Database(f"sqlite:///{tmp_path / 'v.db'}")
    db.migrate()
    with pytest.raises(PrivacyError, match=message):
        find(db, **kwargs)
    db.dispose()


async def test_cli_find_hold_erase(stored: Any, db_url: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from voxgate.cli import app

    db, audit, a, b = stored
    monkeypatch.setenv("VOXGATE_DATABASE_URL", db_url)
    monkeypatch.setenv("VOXGATE_DATA_DIR", str(tmp_path / "var"))
    runner = CliRunner()
    found = runner.invoke(app, ["privacy", "find", "--customer", a["customer_id"], "--json"])
    assert found.exit_code == 0, found.output
    assert {r["table"] for r in json.loads(found.output)} >= {"sessions", "turns"}
    assert runner.invoke(app, ["privacy", "erase", "--customer", a["customer_id"]]).exit_code == 2  # no --yes
    placed = runner.invoke(app, ["privacy", "hold", "--customer", a["customer_id"], "--reason", "audit request"])
    assert placed.exit_code == 0, placed.output
    refused = runner.invoke(app, ["privacy", "erase", "--customer", a["customer_id"], "--yes"])
    assert refused.exit_code == 1 and "legal hold" in refused.output
    assert (
        runner.invoke(
            app, ["privacy", "release", "--customer", a["customer_id"], "--reason", "matter closed"]
        ).exit_code
        == 0
    )
    erased = runner.invoke(
        app,
        [
            "privacy",
            "erase",
            "--customer",
            a["customer_id"],
            "--phone",
            a["phone"],
            "--account",
            a["account_number"],
            "--yes",
            "--json",
        ],
    )
    assert erased.exit_code == 0, erased.output
    receipt = json.loads(erased.output)
    assert receipt["deleted"]["sessions"] >= 3 and a["customer_id"] not in erased.output
    again = runner.invoke(app, ["privacy", "find", "--customer", a["customer_id"], "--json"])
    assert json.loads(again.output) == []
    bad = runner.invoke(app, ["privacy", "find", "--phone", "nope"])
    assert bad.exit_code == 2 and "not a phone number" in bad.output
