"""Typed slot parsing of speech-recognition answers, including the failure codes the engine branches on."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from voxgate.runtime.nlu.embeddings import Embedder, default_embedder
from voxgate.runtime.nlu.slots import parse_slot

WEDNESDAY = dt.date(2026, 11, 4)


@pytest.fixture(scope="session")
def nlu_embedder() -> Embedder:
    return default_embedder()


# --- digit-like slots ----------------------------------------------------------------


def test_account_number_with_the_right_length() -> None:
    parsed = parse_slot("account_number", "my account is one two three four five six seven eight", length=8)
    assert parsed.ok and parsed.value == "12345678"


def test_account_number_one_digit_short_says_how_many_were_heard() -> None:
    parsed = parse_slot("account_number", "one two three four five six seven", length=8)
    assert not parsed.ok
    assert parsed.error == "wrong_length"
    assert parsed.detail["heard"] == 7 and parsed.detail["expected"] == 8
    assert "1234567" not in str(parsed.detail)  # failure details are logged: no digits in them


def test_digits_written_in_groups_by_the_recogniser() -> None:
    assert parse_slot("digits", "12 34 56 78", length=8).value == "12345678"


@pytest.mark.parametrize(
    ("text", "number"),
    [
        # the caller says it twice to be sure
        ("one one eight one five nine oh eight, that's one one eight one five nine oh eight", "11815908"),
        # the recogniser wrote it twice, or began looping on it
        ("7 9 0 4 1 7 7 8. 7 9 0 4 1 7 7 8.", "79041778"),
        ("7 5 1 7 0 2 2 6 7 5 1 7 0 2 2 6 7 7 0 2", "75170226"),
        ("3 1 2 2 3 3 0 7 3 1 2 2", "31223307"),
        # a correction: the second reading wins
        ("one one eight one five nine oh eight, sorry, one one eight one five nine oh seven", "11815907"),
    ],
)
def test_a_number_said_more_than_once_is_taken_once(text: str, number: str) -> None:
    parsed = parse_slot("account_number", text, length=8)
    assert parsed.ok and parsed.value == number
    assert parsed.detail["repeated"] is True


@pytest.mark.parametrize(
    "text",
    [
        "7 9 0 0 4 1 7 7 8",  # one digit too many: a mishearing, not a repeat
        "1 1 8 1 5 9 0 8 2 2 7",  # three more digits that do not repeat the first eight
        "1 1 8 1 5 9 0 8 1 1 8 1 5 9 0 7",  # two different readings and no correction word
        "1 1 8 1 5 9 0 8 1 1",  # two repeated digits are too few to call a repeat
    ],
)
def test_extra_digits_that_are_not_a_repeat_are_not_guessed_at(text: str) -> None:
    parsed = parse_slot("account_number", text, length=8)
    assert (parsed.ok, parsed.error) == (False, "wrong_length")
    assert parsed.detail["heard"] > 8


def test_no_digits() -> None:
    parsed = parse_slot("account_number", "I don't have it with me")
    assert (parsed.ok, parsed.error) == (False, "no_digits")


@pytest.mark.parametrize(("text", "pin"), [("four five six seven", "4567"), ("double one two three", "1123")])
def test_pin_defaults_to_four_digits(text: str, pin: str) -> None:
    assert parse_slot("pin", text).value == pin
    assert parse_slot("pin", "one two three").error == "wrong_length"


def test_digit_bounds() -> None:
    assert parse_slot("digits", "one two three", min_length=4).error == "wrong_length"
    assert parse_slot("digits", "one two three four five six", max_length=5).error == "wrong_length"
    assert parse_slot("digits", "one two three four", min_length=4, max_length=5).value == "1234"


def test_postcode_is_five_digits_with_a_leading_zero_kept() -> None:
    assert parse_slot("postcode", "it's oh two one three nine").value == "02139"
    assert parse_slot("postcode", "two one three nine").error == "wrong_length"


@pytest.mark.parametrize(
    ("text", "kwargs", "e164"),
    [
        ("five five five one two three four five six seven", {}, "+15551234567"),
        ("one five five five one two three four five six seven", {}, "+15551234567"),
        ("plus four four seven seven double oh nine one one two two three", {}, "+447700911223"),
        ("oh seven seven double oh nine one one two two three", {"default_country_code": "44"}, "+447700911223"),
    ],
)
def test_phone_numbers_normalise_to_e164(text: str, kwargs: dict[str, str], e164: str) -> None:
    assert parse_slot("phone", text, **kwargs).value == e164  # type: ignore[arg-type]


def test_phone_number_too_short() -> None:
    assert parse_slot("phone", "five five five one two").error == "wrong_length"


# --- dates -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("tomorrow", dt.date(2026, 11, 5)),
        ("today please", dt.date(2026, 11, 4)),
        ("the day after tomorrow", dt.date(2026, 11, 6)),
        ("next friday", dt.date(2026, 11, 6)),
        ("next wednesday", dt.date(2026, 11, 11)),
        ("on the 3rd", dt.date(2026, 12, 3)),  # the 3rd of this month has passed
        ("on the twentieth", dt.date(2026, 11, 20)),
        ("march third", dt.date(2027, 3, 3)),
        ("the third of march nineteen eighty five", dt.date(1985, 3, 3)),
        ("fourteenth of february two thousand and one", dt.date(2001, 2, 14)),
        ("march 14th, 1985", dt.date(1985, 3, 14)),
        ("3/14/1985", dt.date(1985, 3, 14)),
        ("14/3/1985", dt.date(1985, 3, 14)),
        ("1985-03-14", dt.date(1985, 3, 14)),
        ("in three days", dt.date(2026, 11, 7)),
    ],
)
def test_dates(text: str, expected: dt.date) -> None:
    parsed = parse_slot("date", text, today=WEDNESDAY)
    assert parsed.ok, parsed
    assert parsed.value == expected


def test_impossible_and_missing_dates() -> None:
    assert parse_slot("date", "february thirtieth", today=WEDNESDAY).error == "invalid_date"
    assert parse_slot("date", "whenever suits you", today=WEDNESDAY).error == "no_date"


# --- yes / no ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["yeah", "yep", "sure", "that's right", "correct", "go ahead", "please do", "yes please", "no problem, go ahead"],
)
def test_yes(text: str) -> None:
    assert parse_slot("yes_no", text).value is True


@pytest.mark.parametrize(
    "text", ["nope", "nah", "no thanks", "don't", "cancel", "no, that's not right", "yes... no, don't do that"]
)
def test_no_and_negation_wins(text: str) -> None:
    parsed = parse_slot("yes_no", text)
    assert parsed.ok and parsed.value is False


@pytest.mark.parametrize("text", ["I'm not sure", "maybe", "what was the amount again", ""])
def test_unclear_yes_no(text: str) -> None:
    parsed = parse_slot("yes_no", text)
    assert (parsed.ok, parsed.error) == (False, "unclear")


# --- money -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "amount"),
    [
        ("twenty three fifty", "23.50"),
        ("$23.50", "23.50"),
        ("23.5", "23.50"),
        ("twenty three dollars and fifty cents", "23.50"),
        ("twenty three dollars fifty", "23.50"),
        ("forty two dollars", "42.00"),
        ("forty two", "42.00"),
        ("a hundred and five pounds", "105.00"),
        ("twelve ninety nine", "12.99"),
        ("fifty cents", "0.50"),
        ("$1,200.50", "1200.50"),
        ("it was two hundred and fifty dollars on the third", "250.00"),
        ("they charged me for two lines, forty two dollars", "42.00"),
    ],
)
def test_money(text: str, amount: str) -> None:
    parsed = parse_slot("money", text)
    assert parsed.ok, parsed
    assert parsed.value == Decimal(amount)
    assert isinstance(parsed.value, Decimal)


def test_money_currency_is_reported() -> None:
    assert parse_slot("money", "a hundred and five pounds").detail["currency"] == "GBP"
    assert parse_slot("money", "$4").detail["currency"] == "USD"


def test_money_failures() -> None:
    assert parse_slot("money", "I can't remember").error == "no_amount"
    assert parse_slot("money", "either five dollars or ten dollars").error == "ambiguous"


# --- enum and free text ----------------------------------------------------------------

PLANS = {
    "broadband": ["internet", "fibre", "wifi"],
    "mobile": ["cell phone", "sim only"],
    "tv": ["television", "cable"],
}


def test_enum_matches_synonyms_lexically() -> None:
    assert parse_slot("enum", "it's the fibre one", values=PLANS).value == "broadband"
    assert parse_slot("enum", "Sim only.", values=PLANS).value == "mobile"


def test_enum_without_embedder_does_not_guess() -> None:
    assert parse_slot("enum", "the thing I watch films on", values=PLANS).error == "no_match"


def test_enum_falls_back_to_embeddings(nlu_embedder: Embedder) -> None:
    parsed = parse_slot("enum", "my smartphone contract", values=PLANS, embedder=nlu_embedder)
    assert parsed.ok and parsed.value == "mobile"
    assert parsed.detail["method"] == "embedding"


def test_enum_embedding_threshold_rejects_unrelated_answers(nlu_embedder: Embedder) -> None:
    parsed = parse_slot("enum", "what's the weather like in Paris", values=PLANS, embedder=nlu_embedder)
    assert parsed.error == "no_match"


def test_enum_two_options_named_is_ambiguous() -> None:
    assert parse_slot("enum", "internet or television", values=PLANS).error == "ambiguous"


def test_enum_needs_values() -> None:
    with pytest.raises(ValueError):
        parse_slot("enum", "anything")


def test_free_text() -> None:
    assert parse_slot("free_text", "  they charged me   twice \n").value == "they charged me twice"
    assert parse_slot("free_text", "   ").error == "empty"


def test_unknown_slot_type() -> None:
    with pytest.raises(ValueError, match="unknown slot type"):
        parse_slot("colour", "red")
