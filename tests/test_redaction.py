"""PII redaction: written and spoken types, offsets on the original text, negatives, storage, CLI."""

from __future__ import annotations

import json
from typing import Any

import pytest
import typer
from sqlalchemy import text as sql
from typer.testing import CliRunner

from voxgate.compliance.redaction import (
    IdentifierRule,
    RedactionConfig,
    RedactionError,
    Redactor,
    default_redactor,
)
from voxgate.compliance.spoken_numbers import normalize_spoken


@pytest.fixture(scope="module")
def redactor() -> Redactor:
    return default_redactor()


def types_of(redactor: Redactor, text: str) -> list[tuple[str, str]]:
    return [(s.type, text[s.start:s.end]) for s in redactor.find(text)]


@pytest.mark.parametrize(
    ("text", "entity", "value"),
    [
        ("my card number is 4539 1488 0343 6467 thanks", "CREDIT_CARD", "4539 1488 0343 6467"),
        ("card four five three nine, one four eight eight, oh three four three, six four six seven ok",
         "CREDIT_CARD", "four five three nine, one four eight eight, oh three four three, six four six seven"),
        ("call me on (415) 867-2210 tomorrow", "PHONE_NUMBER", "(415) 867-2210"),
        ("call me on four one five, eight six seven, twenty two ten please", "PHONE_NUMBER",
         "four one five, eight six seven, twenty two ten"),
        ("ring me on oh seven seven double oh nine double oh four four one", "PHONE_NUMBER",
         "oh seven seven double oh nine double oh four four one"),
        ("email is dana.w@fastmail.com ok", "EMAIL_ADDRESS", "dana.w@fastmail.com"),
        ("it's dana dot w forty one at fastmail dot com", "EMAIL_ADDRESS", "dana dot w forty one at fastmail dot com"),
        ("my ssn is 287-65-4301", "US_SSN", "287-65-4301"),
        ("my social is two eight seven six five four three oh one", "US_SSN", "two eight seven six five four three oh one"),
        ("account number 7702 1933 44", "ACCOUNT_NUMBER", "7702 1933 44"),
        ("my account is seven seven oh two one nine three three", "ACCOUNT_NUMBER", "seven seven oh two one nine three three"),
        ("my pin is 4471", "PIN", "4471"),
        ("the pin is four four seven one", "PIN", "four four seven one"),
        ("my name is Rosalind Achebe and I need help", "PERSON", "Rosalind Achebe"),
        ("hi this is emily okonkwo about my bill", "PERSON", "emily okonkwo"),
        ("the zip code is 94110", "POSTCODE", "94110"),
        ("it's about case CASE-000123 from last week", "CASE_ID", "CASE-000123"),
    ],
)
def test_each_type_written_and_spoken_lands_on_the_original(redactor: Redactor, text: str, entity: str,
                                                            value: str) -> None:
    result = redactor.redact(text)
    assert [(s.type, text[s.start:s.end]) for s in result.spans] == [(entity, value)]
    assert result.counts == {entity: 1}
    assert result.text == text.replace(value, f"<{entity}>")


@pytest.mark.parametrize(
    "text",
    [
        "my order number is 48213",
        "order number four eight two one three never arrived",
        "I was charged $49.99 twice",
        "i was charged forty nine ninety nine twice",
        "it was delivered on March 3rd, 2024 at 10:30",
        "can the engineer come on the fifteenth of june at half past four",
        "I ordered two routers and one modem",
        "the tracking number is nine four zero zero one one one eight nine nine",
        "invoice INV-20391 is wrong",
        "I will call back later, may I ask about the bill",
        "Mark it as resolved please",
        "the speed is only fifty megabits",
    ],
)
def test_negatives_are_untouched(redactor: Redactor, text: str) -> None:
    result = redactor.redact(text)
    assert result.text == text and result.spans == [] and result.counts == {}


def test_several_types_in_one_line_keep_original_offsets(redactor: Redactor) -> None:
    text = "hi i'm maria lopez my number is nine one seven five five five oh one four two and email m dot lopez at yahoo dot com"
    found = types_of(redactor, text)
    assert found == [
        ("PERSON", "maria lopez"),
        ("PHONE_NUMBER", "nine one seven five five five oh one four two"),
        ("EMAIL_ADDRESS", "m dot lopez at yahoo dot com"),
    ]
    out = redactor.redact(text).text
    assert out == "hi i'm <PERSON> my number is <PHONE_NUMBER> and email <EMAIL_ADDRESS>"


def test_spoken_normaliser_maps_back_to_the_original() -> None:
    original = "so it's double five, triple two oh four and j smith at gmail dot com"
    spoken = normalize_spoken(original)
    assert "5522204" in spoken.text and "jsmith@gmail.com" not in spoken.text  # one word only before "at"
    assert "smith@gmail.com" in spoken.text
    start = spoken.text.index("5522204")
    s, e = spoken.to_original(start, start + 7)
    assert original[s:e] == "double five, triple two oh four"
    start = spoken.text.index("smith@")
    s, e = spoken.to_original(start, start + len("smith@gmail.com"))
    assert original[s:e] == "smith at gmail dot com"
    # part of a rewritten number widens to all of it: never half a spoken number left behind
    s, e = spoken.to_original(spoken.text.index("5522204") + 2, spoken.text.index("5522204") + 4)
    assert original[s:e] == "double five, triple two oh four"


def test_known_values_and_agent_identifiers() -> None:
    config = RedactionConfig(account_number_length=8, pin_digits=(4, 4),
                             identifiers=(IdentifierRule(entity="MEMBER_ID", min_digits=6, max_digits=6,
                                                         context=("member",)),))
    redactor = Redactor(config)
    # a bare digit string of the agent's own account length is an account number
    assert types_of(redactor, "one one eight one five nine oh eight") == [
        ("ACCOUNT_NUMBER", "one one eight one five nine oh eight")]
    assert types_of(redactor, "my member id is 448120") == [("MEMBER_ID", "448120")]
    # the caller's known name, in any case, wherever it appears
    known = {"PERSON": ["Zebediah"]}
    assert types_of(redactor, "") == []
    assert [(s.type) for s in redactor.find("thanks zebediah, you're verified", known)] == ["PERSON"]


def test_redact_json_keeps_structure_and_counts(redactor: Redactor) -> None:
    from collections import Counter

    counts: Counter[str] = Counter()
    value = {"type": "slot_filled", "slot": "phone", "value": "212-555-0147", "n": [1, "email a.b@example.org"]}
    out = redactor.redact_json(value, keep={"type"}, counts=counts)
    assert out == {"type": "slot_filled", "slot": "phone", "value": "<PHONE_NUMBER>", "n": [1, "email <EMAIL_ADDRESS>"]}
    assert counts == {"PHONE_NUMBER": 1, "EMAIL_ADDRESS": 1}


def test_bad_input_is_a_clear_error(redactor: Redactor) -> None:
    with pytest.raises(RedactionError, match="expected text"):
        redactor.redact(123)  # type: ignore[arg-type]
    with pytest.raises(RedactionError, match="at most"):
        redactor.redact("a" * 20_001)
    with pytest.raises(ValueError, match="min_digits"):
        IdentifierRule(entity="X", min_digits=9, max_digits=4, context=("x",))


def test_cli_redact_json_prints_spans_on_the_original_line() -> None:
    from voxgate.cli_privacy import redact_command

    app = typer.Typer()
    app.command("redact")(redact_command)
    app.command("other")(lambda: None)
    lines = ["my card is 4539 1488 0343 6467", "", "where is order 48213", "call nine one seven five five five oh one four two"]
    result = CliRunner().invoke(app, ["redact", "--json"], input="\n".join(lines) + "\n")
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.splitlines()]
    assert [r["text"] for r in rows] == lines
    assert rows[0]["redacted"] == "my card is <CREDIT_CARD>"
    assert rows[0]["spans"] == [{"type": "CREDIT_CARD", "start": 11, "end": 30}]
    assert rows[1] == {"text": "", "redacted": "", "spans": [], "counts": {}}
    assert rows[2]["spans"] == [] and rows[2]["redacted"] == lines[2]
    span = rows[3]["spans"][0]
    assert span["type"] == "PHONE_NUMBER" and lines[3][span["start"]:span["end"]] == "nine one seven five five five oh one four two"
    plain = CliRunner().invoke(app, ["redact"], input="my ssn is 287-65-4301\n")
    assert plain.exit_code == 0 and plain.output == "my ssn is <US_SSN>\n"


# --- storage: the recorder and the escalation packet ----------------------------------------------


def _dump(db: Any) -> str:
    parts = []
    with db.engine.connect() as conn:
        for table in ("turns", "handoffs", "sessions", "security_events"):
            parts.extend(json.dumps([str(v) for v in row]) for row in conn.execute(sql(f"SELECT * FROM {table}")))
    return "\n".join(parts)


def spoken(digits: str) -> str:
    return " ".join("zero one two three four five six seven eight nine".split()[int(d)] for d in digits)


async def test_recorder_stores_redacted_turns_and_packets(db_url: str, harbor_bundle: Any, harbor_backend: Any,
                                                          credentials: Any) -> None:
    from voxgate.runtime.engine import AgentRuntime
    from voxgate.store.db import Database
    from voxgate.store.recorder import SqlRecorder

    db = Database(db_url)
    db.migrate()
    cred = credentials[3]
    runtime = AgentRuntime(harbor_bundle, recorder=SqlRecorder(db), environment="dev")
    session = runtime.new_session()
    await session.start()
    card = "four five three nine one four eight eight oh three four three six four six seven"
    said = [
        "how much do I owe", spoken(cred["account_number"]), spoken(cred["pin"]),
        f"my card is {card} and my email is dana dot w at fastmail dot com",
        "call me on 415-867-2210",
        "I want to talk to a person",
    ]
    for line in said:
        await session.handle(line)
    await session.close()
    await runtime.aclose()
    dump = _dump(db)
    for raw in (card, "4539148803436467", "dana dot w at fastmail dot com", "415-867-2210", spoken(cred["pin"]),
                spoken(cred["account_number"]), cred["account_number"]):
        assert raw not in dump, raw
    with db.engine.connect() as conn:
        rows = conn.execute(sql("SELECT user_text, data FROM turns WHERE session_id = :s ORDER BY seq"),
                            {"s": session.id}).all()
        packet = conn.execute(sql("SELECT packet FROM handoffs WHERE session_id = :s"), {"s": session.id}).scalar_one()
    by_text = {r[0]: (json.loads(r[1]) if isinstance(r[1], str) else r[1]) for r in rows}
    # counts cover the whole turn: the caller's words, the reply and the turn data (slots, events)
    counts = by_text["my card is <CREDIT_CARD> and my email is <EMAIL_ADDRESS>"]["redactions"]
    assert counts["CREDIT_CARD"] == 1 and counts["EMAIL_ADDRESS"] == 1
    assert by_text["call me on <PHONE_NUMBER>"]["redactions"]["PHONE_NUMBER"] == 1
    assert by_text["<ACCOUNT_NUMBER>"]["redactions"]["ACCOUNT_NUMBER"] >= 1
    assert by_text["how much do I owe"]["redactions"] == {}
    packet = json.loads(packet) if isinstance(packet, str) else packet
    assert packet["identity"]["customer_id"] == cred["customer_id"]
    assert packet["identity"]["account_number"] == "<ACCOUNT_NUMBER>"
    users = [t["text"] for t in packet["transcript"] if t["role"] == "user"]
    assert "my card is <CREDIT_CARD> and my email is <EMAIL_ADDRESS>" in users
    assert packet["redactions"]["ACCOUNT_NUMBER"] >= 1
    # the live packet the desk receives carries the redacted transcript too
    live = [t["text"] for t in session.escalation["transcript"] if t["role"] == "user"]  # type: ignore[index]
    assert "call me on <PHONE_NUMBER>" in live and all(card not in t for t in live)
    db.dispose()


def test_voxgate_logs_are_redacted(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from voxgate.compliance.log_redaction import install_log_redaction

    install_log_redaction()
    with caplog.at_level(logging.INFO):
        logging.getLogger("voxgate.api").info("caller %s gave card %s", "jane.doe@example.org", "4111 1111 1111 1111")
        logging.getLogger("thirdparty").info("untouched 4111 1111 1111 1111")
    voxgate_line = next(r.getMessage() for r in caplog.records if r.name == "voxgate.api")
    assert "4111" not in voxgate_line and "jane.doe" not in voxgate_line and "<CREDIT_CARD>" in voxgate_line
    assert "4111 1111 1111 1111" in next(r.getMessage() for r in caplog.records if r.name == "thirdparty")
