"""Numbers given in pieces on a call: the pieces are gathered, a number put together from them is read
back for a yes or no, and a secret is gathered but never read back."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from harbor_backend.data import draw_outages

from tests.helpers.conversation import spoken
from voxgate.runtime.digits import MAX_PIECES, DigitGatherer, DigitStep, read_back
from voxgate.runtime.engine import AgentRuntime
from voxgate.runtime.recorder import MemoryRecorder
from voxgate.runtime.session import Expectation, Session
from voxgate.voice.call.endpointing import judge_completeness


@pytest.mark.parametrize(
    ("length", "readings", "steps"),
    [
        # a group, then the rest: put together, to be confirmed
        (8, ["one one eight one", "five nine two eight"], [("piece", "1181"), ("confirm", "11815928")]),
        # three groups
        (
            8,
            ["one one", "eight one five", "nine two eight"],
            [("piece", "11"), ("piece", "11815"), ("confirm", "11815928")],
        ),
        # one digit short is a lost digit, not a pause: not gathered
        (8, ["one one eight one five nine two"], [("other", "")]),
        # a lone digit is not a piece
        (8, ["one"], [("other", "")]),
        # no digits at all
        (8, ["I don't have it to hand"], [("other", "")]),
        # a piece, then too many digits: not this number any more
        (8, ["one one eight one", "five nine two eight four"], [("piece", "1181"), ("other", "")]),
        # a piece, then words: the pieces are forgotten, and a later group starts again
        (8, ["one one eight one", "hang on", "five nine"], [("piece", "1181"), ("other", ""), ("piece", "59")]),
        # a postcode: 5 digits, so 3 at most make a piece
        (5, ["two one", "one four six"], [("piece", "21"), ("confirm", "21146")]),
        (5, ["two one one four"], [("other", "")]),
    ],
)
def test_pieces_are_gathered_into_one_number(length: int, readings: list[str], steps: list[tuple[str, str]]) -> None:
    gatherer = DigitGatherer("q", length)
    got = [gatherer.take(text) for text in readings]
    assert got == [DigitStep(kind, digits) for kind, digits in steps]  # type: ignore[arg-type]


def test_a_secret_is_whole_when_complete_and_never_awaits_a_read_back() -> None:
    gatherer = DigitGatherer("q", 4, secret=True)
    assert gatherer.take("three nine") == DigitStep("piece", "39")
    assert gatherer.take("zero seven") == DigitStep("whole", "3907")
    assert gatherer.pending is None and gatherer.so_far == ""


def test_a_number_does_not_come_in_more_pieces_than_the_limit() -> None:
    gatherer = DigitGatherer("q", 20)
    for _ in range(MAX_PIECES):
        assert gatherer.take("one two").kind == "piece"
    assert gatherer.pieces == MAX_PIECES
    # one more piece than allowed: the pieces are dropped, and this group starts the number again
    assert gatherer.take("three four") == DigitStep("piece", "34")
    assert gatherer.pieces == 1


def test_read_back_groups_digits_for_a_voice_to_say_one_by_one() -> None:
    assert read_back("11815928") == "1 1 8 1, 5 9 2 8"
    assert read_back("21146") == "2 1 1 4, 6"
    assert read_back("39") == "3 9"


@pytest.fixture()
async def runtime(harbor_bundle: Any, harbor_backend: Any) -> AsyncIterator[AgentRuntime]:
    rt = AgentRuntime(harbor_bundle, recorder=MemoryRecorder())
    yield rt
    await rt.aclose()


async def _call(runtime: AgentRuntime, *turns: str, channel: str = "twilio") -> tuple[Session, list[Any]]:
    session = runtime.new_session(channel=channel)
    await session.start()
    return session, [await session.handle(t) for t in turns]


async def test_an_account_number_in_two_pieces_is_read_back_and_used_after_a_yes(
    runtime: AgentRuntime, credentials: list[dict[str, str]]
) -> None:
    cred = credentials[2]
    account, pin = cred["account_number"], cred["pin"]
    session, replies = await _call(runtime, "where is my order", spoken(account[:4]))
    assert replies[-1].text == f"I have {read_back(account[:4])} so far. Go on."
    assert replies[-1].state == "verifying:identify"
    assert session.expecting() == Expectation("identify", "account_number", 4)  # the rest, for the endpointing
    assembled = await session.handle(spoken(account[4:]))
    assert assembled.text == f"That's {read_back(account)}. Is that right?"
    assert session.expecting() == Expectation("identify", "yes_no")
    assert not [a for a in session.actions if a["name"] == "verify_customer"]  # nothing used before the yes
    yes = await session.handle("yes that's right")
    assert yes.state == "verifying:secret" and "PIN" in yes.text
    assert session.expecting() == Expectation("secret", "pin", 4)
    done = await session.handle(spoken(pin))
    assert session.verified and session.customer_id == cred["customer_id"], done.text
    events = [e.type for r in (*replies, assembled, yes) for e in r.events]
    assert events.count("digits_partial") == 1 and "digits_assembled" in events and "digits_confirmed" in events


async def test_no_to_the_read_back_asks_for_the_whole_number_again(
    runtime: AgentRuntime, credentials: list[dict[str, str]]
) -> None:
    account = credentials[4]["account_number"]
    wrong = account[:4] + "0000" if account[4:] != "0000" else account[:4] + "1111"
    session, replies = await _call(runtime, "where is my order", spoken(wrong[:4]), spoken(wrong[4:]), "no")
    assert replies[-1].text.startswith(runtime.bundle.agent.messages.try_again)
    assert replies[-1].text.endswith(runtime.bundle.agent.authentication.identify_prompt)
    assert session.expecting() == Expectation("identify", "account_number", 8)
    again = await session.handle(spoken(account))  # said whole: used at once, no read-back
    assert again.state == "verifying:secret"


async def test_the_whole_number_said_instead_of_a_yes_is_used(
    runtime: AgentRuntime, credentials: list[dict[str, str]]
) -> None:
    account = credentials[5]["account_number"]
    session, replies = await _call(runtime, "where is my order", spoken(account[:3]), spoken(account[3:]))
    assert "Is that right?" in replies[-1].text
    whole = await session.handle(spoken(account))
    assert whole.state == "verifying:secret"


async def test_a_pin_in_pieces_is_never_read_back_and_no_piece_is_kept_in_the_transcript(
    runtime: AgentRuntime, credentials: list[dict[str, str]]
) -> None:
    cred = credentials[6]
    pin = cred["pin"]
    session, replies = await _call(
        runtime, "where is my order", spoken(cred["account_number"]), spoken(pin[:2]), spoken(pin[2:])
    )
    piece = replies[2]
    assert piece.text == runtime.bundle.agent.messages.digits_go_on
    assert not any(ch.isdigit() for ch in piece.text)
    assert session.verified, replies[-1].text  # complete: checked at once, not confirmed
    user_lines = [line.text for line in session.transcript if line.role == "user"]
    assert user_lines[-2:] == ["<PIN>", "<PIN>"]
    assert not any(spoken(pin[:2]) in line or spoken(pin[2:]) in line for line in user_lines)


async def test_a_postcode_in_pieces_is_confirmed_and_then_checked(runtime: AgentRuntime) -> None:
    postcode = draw_outages()[0].postcode
    session, replies = await _call(
        runtime, "is there an outage near me", spoken(postcode[:2]), spoken(postcode[2:]), "yes", channel="voice"
    )
    assert replies[1].text == f"I have {read_back(postcode[:2])} so far. Go on."
    assert replies[2].text == f"That's {read_back(postcode)}. Is that right?"
    outage = [a for a in session.actions if a["name"] == "check_outage"]
    assert outage and outage[0]["arguments"] == {"postcode": postcode}, session.actions
    assert "known" in replies[3].text


async def test_typed_numbers_are_not_gathered_from_pieces(runtime: AgentRuntime) -> None:
    session, replies = await _call(runtime, "where is my order", "one two three", channel="http")
    assert "I heard 3 digits, but I need 8" in replies[-1].text
    assert session.expecting() == Expectation("identify", "account_number", 8)


async def test_after_a_piece_the_rest_alone_is_a_whole_answer_to_the_endpointing(
    runtime: AgentRuntime, credentials: list[dict[str, str]]
) -> None:
    account = credentials[7]["account_number"]
    rest = spoken(account[4:])
    asked, _ = await _call(runtime, "where is my order")
    assert judge_completeness(rest, asked.expecting()) == "incomplete"  # half the number: the turn waits for more
    gathering, _ = await _call(runtime, "where is my order", spoken(account[:4]))
    assert judge_completeness(rest, gathering.expecting()) == "complete"  # the rest of it: the short wait
    await gathering.handle(rest)
    assert judge_completeness("yes", gathering.expecting()) == "complete"


async def test_pieces_are_forgotten_when_the_conversation_moves_to_another_question(runtime: AgentRuntime) -> None:
    session, replies = await _call(runtime, "is there an outage near me", "two one", channel="voice")
    assert session.digits is not None and session.digits.so_far == "21"
    moved = await session.handle("I want to talk to a real person")  # taken before the postcode is looked at
    assert any(e.type == "topic_started" for e in moved.events), moved.text
    assert session.digits is None
