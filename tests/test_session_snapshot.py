"""Session snapshots: a text conversation snapshotted after every turn, its bytes restored into a fresh session
on a fresh runtime for the next one, says and records exactly what an uninterrupted conversation does (every
Harbor conversation test, and a few more paths); and what a snapshot holds is minimal: never a PIN, a
sensitive slot only while a topic that declares it is in progress, the transcript only when a handoff packet
shows it."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import re
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.conversation import spoken
from tests.helpers.paths import HARBOR_AGENT
from voxgate.bundle import load_bundle
from voxgate.bundle.models import BundleSource
from voxgate.runtime.engine import AgentRuntime
from voxgate.runtime.events import TurnResult
from voxgate.runtime.recorder import MemoryRecorder
from voxgate.runtime.records import TurnTaken
from voxgate.runtime.session import Session
from voxgate.runtime.snapshot import (
    SNAPSHOT_FORMAT,
    WITHHELD,
    SessionSnapshot,
    SnapshotError,
    decode_value,
    encode_value,
)
from voxgate.testing.conversations import check_turn, fill_placeholders, load_fixtures

Turn = tuple[str, str]  # ("say" | "dtmf", what the caller says or keys)
HARBOR_TESTS = [t.name for t in load_bundle(HARBOR_AGENT).tests]
CASE_ID = re.compile(r"CASE-\d+")  # the backend numbers each case it opens: two runs open two cases

# Paths the Harbor suite does not take, each a list of turns; `{customer.N.field}` as in the suite.
EXTRA: dict[str, list[Turn]] = {
    "a re-asked account number, a digression inside a free-text slot, then a case": [
        ("say", "you charged me twice"),
        ("say", "one two three"),  # too short: asked again
        ("say", "{customer.4.account_number|spoken}"),
        ("say", "{customer.4.pin|spoken}"),
        ("say", "a lot"),  # not an amount: asked again
        ("say", "thirty one dollars and five cents"),
        ("say", "what time do your stores open on saturday"),  # another topic while the reason is asked
        ("say", "the roaming charge was never used"),
        ("say", "yes"),
        ("say", "no thanks, that's all"),
    ],
    "a wrong PIN, then the right one, then another topic": [
        ("say", "how much do I owe"),
        ("dtmf", "{customer.1.account_number}"),
        ("dtmf", "0000"),
        ("dtmf", "{customer.1.account_number}"),
        ("dtmf", "{customer.1.pin}"),
        ("say", "yes"),
        ("say", "is there an outage in {outage.2.postcode}"),
        ("say", "bye"),
    ],
    "misunderstood three times: escalated with the whole transcript": [
        ("say", "purple elephants dance"),
        ("say", "the moon is made of cheese"),
        ("say", "blorp zing wabble"),
    ],
    "the caller leaves in the middle of a topic": [
        ("say", "I want to dispute a charge"),
        ("say", "{customer.6.account_number|spoken}"),
    ],
}


@pytest.fixture(scope="module")
def fixtures(credentials: list[dict[str, str]]) -> dict[str, Any]:
    """The Harbor suite's fixtures: the backend's customers and outages."""
    return {"customer": credentials, **load_fixtures({"outage": "harbor_backend.data:draw_outages"})}


def harbor_turns(bundle: BundleSource, name: str, fixtures: dict[str, Any]) -> tuple[list[Turn], list[Any]]:
    """A Harbor conversation test as turns (placeholders filled) and its scripted turns (for their checks)."""
    test = next(t for t in bundle.tests if t.name == name)
    turns: list[Turn] = []
    for turn in test.turns:
        kind, text = ("dtmf", turn.dtmf) if turn.dtmf is not None else ("say", turn.say or "")
        turns.append((kind, fill_placeholders(text, fixtures)))
    return turns, list(test.turns)


def installation_refs(value: str) -> str:
    """Pseudonymous references keyed alike on every worker (a worker uses the installation's privacy salt)."""
    return "ref:" + hmac.new(b"one installation", value.encode(), hashlib.sha256).hexdigest()[:20]


def view(result: TurnResult) -> dict[str, Any]:
    """What a turn said and did, without what differs between any two runs (times, durations, case ids)."""
    turn = result.as_dict()
    turn.pop("timings_ms", None)
    for event in turn["events"]:
        event.pop("at", None)
        event.pop("duration_ms", None)
    for action in turn["actions"]:
        action.pop("duration_ms", None)
    if turn.get("packet"):
        turn["packet"] = {k: v for k, v in turn["packet"].items() if k != "created_at"}
    return json.loads(CASE_ID.sub("CASE-n", json.dumps(turn, default=str)))


def stored(recorder: MemoryRecorder) -> list[Any]:
    """The records as a database would keep them: their kinds, and each turn's words and state."""
    out: list[Any] = []
    for record in recorder.records:
        if isinstance(record, TurnTaken):
            out.append(("turn", record.seq, record.user_text, record.agent_text, record.intent, record.state))
        else:
            out.append(type(record).__name__)
    return json.loads(CASE_ID.sub("CASE-n", json.dumps(out, default=str)))


async def play(bundle: BundleSource, turns: Sequence[Turn], *, restore_between: bool) -> dict[str, Any]:
    """Play `turns`; with `restore_between`, every turn runs on a session restored from the previous turn's
    snapshot bytes on a runtime of its own (as if each turn went to another worker). The recorder is shared:
    it stands for the database every worker writes to."""
    recorder = MemoryRecorder()
    runtime = AgentRuntime(bundle, recorder=recorder, refs=installation_refs)
    session = runtime.new_session(channel="http", session_id="s1")  # the same id both ways
    results = [view(await session.start())]
    sizes: list[int] = []
    try:
        for kind, text in turns:
            if session.ended:
                break
            if restore_between:
                data = session.snapshot().to_bytes()
                sizes.append(len(data))
                await runtime.aclose()
                runtime = AgentRuntime(bundle, recorder=recorder, refs=installation_refs)
                session = Session.restore(SessionSnapshot.from_bytes(data), runtime)
            results.append(view(await session.handle(text, dtmf=kind == "dtmf")))
        outcome = session.outcome if session.ended else await session.close("caller_left")
        await session.drain()
    finally:
        await runtime.aclose()
    packet = {k: v for k, v in (session.escalation or {}).items() if k != "created_at"}
    return {"turns": results, "outcome": outcome, "escalation": packet, "stored": stored(recorder), "sizes": sizes}


async def assert_same_both_ways(bundle: BundleSource, turns: Sequence[Turn]) -> dict[str, Any]:
    straight = await play(bundle, turns, restore_between=False)
    restored = await play(bundle, turns, restore_between=True)
    for n, (a, b) in enumerate(zip(straight["turns"], restored["turns"], strict=True)):
        assert b == a, f"turn {n} differs after a restore"
    assert restored["outcome"] == straight["outcome"]
    assert restored["escalation"] == straight["escalation"]
    assert restored["stored"] == straight["stored"]
    return restored


@pytest.mark.parametrize("name", HARBOR_TESTS)
async def test_a_harbor_conversation_restored_before_every_turn_says_the_same(
    name: str, harbor_bundle: BundleSource, harbor_backend: Any, fixtures: dict[str, Any]
) -> None:
    turns, scripted = harbor_turns(harbor_bundle, name, fixtures)
    restored = await assert_same_both_ways(harbor_bundle, turns)
    assert len(restored["turns"]) == len(turns) + 1  # the greeting, then every turn
    assert max(restored["sizes"], default=0) < 16 * 1024  # compact: a few KiB at most
    # and the restored run meets the suite's own expectations of each turn
    runtime = AgentRuntime(harbor_bundle, recorder=MemoryRecorder())
    session = runtime.new_session(channel="http")
    try:
        await session.start()
        for (kind, text), turn in zip(turns, scripted, strict=True):
            session = Session.restore(SessionSnapshot.from_bytes(session.snapshot().to_bytes()), runtime)
            filled = turn.model_copy(update={"expect": turn.expect.model_validate(_filled(turn.expect, fixtures))})
            assert check_turn(filled, await session.handle(text, dtmf=kind == "dtmf"), session) == []
    finally:
        await runtime.aclose()


@pytest.mark.parametrize("name", sorted(EXTRA))
async def test_other_paths_restored_before_every_turn_say_the_same(
    name: str, harbor_bundle: BundleSource, harbor_backend: Any, fixtures: dict[str, Any]
) -> None:
    turns = [(kind, fill_placeholders(text, fixtures)) for kind, text in EXTRA[name]]
    restored = await assert_same_both_ways(harbor_bundle, turns)
    assert len(restored["turns"]) == len(turns) + 1


def _filled(expect: Any, fixtures: dict[str, Any]) -> Any:
    def walk(value: Any) -> Any:
        if isinstance(value, str):
            return fill_placeholders(value, fixtures)
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        return value

    return walk(expect.model_dump(exclude_unset=True))


# ---- what a snapshot holds ----------------------------------------------------------------------------


async def test_no_snapshot_holds_the_pin_and_the_account_given_only_while_verifying(
    runtime: AgentRuntime, credentials: list[dict[str, str]]
) -> None:
    cred = credentials[3]
    session = runtime.new_session(channel="http")
    await session.start()
    snapshots = []
    for text in ("where is my order", spoken(cred["account_number"]), spoken(cred["pin"]), "thanks"):
        await session.handle(text)
        snapshots.append(session.snapshot())
    pin_words = spoken(cred["pin"])
    for snap in snapshots:
        raw = snap.to_bytes().decode()
        assert not re.search(rf"\b{cred['pin']}\b", raw) and pin_words not in raw
    assert snapshots[1].auth is not None and snapshots[1].auth.stage == "secret"
    assert snapshots[1].auth.identifier == cred["account_number"]  # the secret is checked against it next
    assert snapshots[2].auth is None and snapshots[2].verified
    assert snapshots[2].customer_id == cred["customer_id"] and snapshots[2].account_number == cred["account_number"]
    assert "<PIN>" in [line.text for line in snapshots[2].transcript or ()]


async def test_a_sensitive_slot_is_kept_while_its_topic_runs_then_withheld(
    agent_copy: Path, harbor_backend: Any, credentials: list[dict[str, str]]
) -> None:
    topic = agent_copy / "topics" / "billing_dispute.yaml"
    text = topic.read_text()
    assert "  reason:\n    type: free_text\n" in text
    topic.write_text(
        text.replace("  reason:\n    type: free_text\n", "  reason:\n    type: free_text\n    sensitive: true\n")
    )
    runtime = AgentRuntime(load_bundle(agent_copy), recorder=MemoryRecorder())
    cred = credentials[5]
    session = runtime.new_session(channel="http")
    try:
        await session.start()
        for line in ("I was overcharged", spoken(cred["account_number"]), spoken(cred["pin"]), "ten dollars"):
            await session.handle(line)
        await session.handle("the modem rental is doubled")
        confirming = session.snapshot()
        assert confirming.state == "confirming"
        assert confirming.slots["reason"] == "the modem rental is doubled"  # the case is opened with it next
        result = await session.handle("yes")
        assert result.state == "anything_else" and "opened case" in result.text
        done = session.snapshot()
        assert done.slots["reason"] == WITHHELD and "reason" in done.sensitive_slots
        assert "modem" not in json.dumps(done.slots)
        assert decode_value(done.slots["amount"]) == Decimal("10.00")
    finally:
        await runtime.aclose()


async def test_the_transcript_is_kept_only_when_a_handoff_packet_shows_it(agent_copy: Path) -> None:
    agent = agent_copy / "agent.yaml"
    text = agent.read_text()
    fields = "context_fields: [identity, verified, intents, slots, actions, summary, transcript, reason]"
    assert fields in text
    agent.write_text(text.replace(fields, fields.replace(" transcript,", "")))
    runtime = AgentRuntime(load_bundle(agent_copy), recorder=MemoryRecorder())
    try:
        session = runtime.new_session(channel="http")
        await session.start()
        await session.handle("what are your opening hours")
        assert session.snapshot().transcript is None
        assert "opening hours" not in session.snapshot().to_bytes().decode()
    finally:
        await runtime.aclose()


def test_typed_values_survive_the_bytes() -> None:
    values = {
        "amount": Decimal("42.99"),
        "day": dt.date(2030, 1, 7),
        "at": dt.datetime(2030, 1, 7, 12, 30, tzinfo=dt.UTC),
        "answer": {"$date": "not a tag: a key of the back end's", "items": [1, 2.5, None, True, "x"]},
        "nested": [{"amount": Decimal("1.10")}],
    }
    assert decode_value(json.loads(json.dumps(encode_value(values)))) == values
    with pytest.raises(SnapshotError, match="type object"):
        encode_value(object())


async def test_a_snapshot_is_restored_only_on_its_own_bundle_and_format(runtime: AgentRuntime) -> None:
    session = runtime.new_session(channel="http")
    await session.start()
    snap = session.snapshot()
    assert snap.format_version == SNAPSHOT_FORMAT
    newer = json.loads(snap.to_bytes())
    newer["format_version"] = SNAPSHOT_FORMAT + 1
    with pytest.raises(SnapshotError, match=f"format {SNAPSHOT_FORMAT + 1}"):
        SessionSnapshot.from_bytes(json.dumps(newer))
    with pytest.raises(SnapshotError, match="turn_no"):
        SessionSnapshot.from_bytes(snap.to_bytes().replace(b'"turn_no":0', b'"turn_no":"zero"'))
    published = snap.model_copy(update={"bundle_digest": "sha256:" + "0" * 64})
    with pytest.raises(SnapshotError, match="started on harbor-support sha256:0000"):
        Session.restore(published, runtime)
