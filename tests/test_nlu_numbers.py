"""Spoken-number normalisation: rewriting, offsets back to the original, and digit extraction."""

from __future__ import annotations

import pytest

from voxgate.runtime.nlu.numbers import extract_digit_string, normalize_numbers


@pytest.mark.parametrize(
    ("spoken", "expected"),
    [
        ("four five six seven", "4567"),
        ("double two", "22"),
        ("triple five", "555"),
        ("one oh five", "105"),
        ("oh two oh seven", "0207"),
        ("nought one", "01"),
        ("double oh seven", "007"),
        ("twenty three", "23"),
        ("twenty-three", "23"),
        ("one hundred and five", "105"),
        ("a hundred and five pounds", "105 pounds"),
        ("two thousand and twenty six", "2026"),
        ("nineteen eighty five", "1985"),
        ("twenty twenty six", "2026"),
        ("twelve oh five", "1205"),
        ("4 5 six 7", "4567"),
        ("four, five, six", "456"),
        ("twenty three point five", "23.5"),
        ("five hundred thousand", "500000"),
        ("my number is five five five twenty three forty", "my number is 5552340"),
    ],
)
def test_spoken_numbers_become_digits(spoken: str, expected: str) -> None:
    assert normalize_numbers(spoken).text == expected


@pytest.mark.parametrize(
    "text",
    ["oh I see", "oh no", "the one I ordered", "no one called me", "first I want to check", "wait a second"],
)
def test_words_that_only_look_like_numbers_are_left_alone(text: str) -> None:
    normalized = normalize_numbers(text)
    assert normalized.text == text
    assert normalized.spans == ()


@pytest.mark.parametrize(("text", "expected"), [("oh two things", "oh 2 things"), ("oh, two things", "oh, 2 things")])
def test_oh_before_a_single_number_is_an_interjection(text: str, expected: str) -> None:
    assert normalize_numbers(text).text == expected


def test_spoken_pair_keeps_its_parts_for_money_and_years() -> None:
    (span,) = normalize_numbers("twenty three fifty").spans
    assert (span.kind, span.text, span.parts) == ("pair", "2350", (23, 50))


@pytest.mark.parametrize(
    ("spoken", "expected"),
    [
        ("the third of march", "the 3rd of march"),
        ("march third", "march 3rd"),
        ("on the twenty first", "on the 21st"),
        ("the twelfth", "the 12th"),
    ],
)
def test_date_ordinals(spoken: str, expected: str) -> None:
    assert normalize_numbers(spoken).text == expected


def test_numerals_already_in_the_text_are_untouched() -> None:
    text = "$23.50 on 3/14/1985, ref 1985-03-14"
    normalized = normalize_numbers(text)
    assert normalized.text == text
    assert [s.text for s in normalized.spans] == ["23.50", "3/14/1985", "1985-03-14"]
    assert not any(s.spoken for s in normalized.spans)


def test_spans_point_back_at_the_original_words() -> None:
    original = "hi my account is one two three four and my pin is double five six seven ok"
    normalized = normalize_numbers(original)
    assert normalized.text == "hi my account is 1234 and my pin is 5567 ok"
    account, pin = normalized.spans
    assert original[account.orig_start : account.orig_end] == "one two three four"
    assert original[pin.orig_start : pin.orig_end] == "double five six seven"
    assert normalized.text[account.start : account.end] == "1234"


def test_offset_map_widens_partial_ranges_and_shifts_plain_text() -> None:
    original = "pin is four five six seven thanks"
    normalized = normalize_numbers(original)
    start = normalized.text.index("4567")
    # the whole number maps to all of its words
    assert normalized.to_original(start, start + 4) == (7, 26)
    # half of it still covers all of it, so a redaction cannot leave digits behind
    assert normalized.to_original(start + 1, start + 2) == (7, 26)
    # text after the number keeps its meaning
    t = normalized.text.index("thanks")
    o_start, o_end = normalized.to_original(t, t + 6)
    assert original[o_start:o_end] == "thanks"
    # text before the number is unchanged
    assert normalized.to_original(0, 3) == (0, 3)
    with pytest.raises(ValueError):
        normalized.to_original(0, len(normalized.text) + 1)


@pytest.mark.parametrize(
    ("text", "digits"),
    [
        ("my account is one two three four five six seven eight", "12345678"),
        ("12 34 56 78", "12345678"),
        ("it's 4 5 six 7", "4567"),
        ("double oh seven", "007"),
        ("on the third it's one two three", "123"),  # the date ordinal is not a dictated digit
        ("I don't know it", None),
        ("", None),
    ],
)
def test_extract_digit_string(text: str, digits: str | None) -> None:
    assert extract_digit_string(text) == digits
