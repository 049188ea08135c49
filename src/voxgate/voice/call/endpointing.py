"""Endpointing: when a pause ends the caller's turn.

Recognition starts early, in the pause (`EarlyAsr`); if the words look complete (a full account
number, a yes, a clear request) the turn ends after `complete_endpointing_ms` of silence, if they
look unfinished (half an account number, a trailing "and…") after `incomplete_endpointing_ms`,
otherwise after `endpointing_ms`. If the caller speaks again the early recognition is dropped.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from voxgate.bundle.models import StateTimings
from voxgate.runtime.digits import heard_digits
from voxgate.runtime.nlu.slots import DIGIT_SLOT_TYPES, parse_slot
from voxgate.runtime.session import Expectation
from voxgate.voice.call.events import END_OF_TURN, NOISE_ONLY, EndpointEvent
from voxgate.voice.pool import Ticket
from voxgate.voice.types import Transcript

# Whisper hears what it expects to hear: priming it with digit formats stops "one one" coming
# out as "when when".
DIGIT_TYPES = DIGIT_SLOT_TYPES
DIGITS_PROMPT = "My number is 4 1 5 9 2 2 0 8."
EARLY_ASR_URGENT_AFTER_MS = 60  # silence past the VAD's offset after which recognition starts, urgently
NOISE_PAUSE_MS = 250  # a pause this long with no words heard drops the sound, unless the state says otherwise
PHONE_DIGITS = 10
SHORT_ANSWER_WORDS = 5  # a yes or no this short is a whole answer, whatever was asked
_TRAILING_INCOMPLETE = re.compile(
    r"\b(and|but|or|so|because|the|a|an|my|is|to|for|of|with|um+|uh+|er+|like|then)\W*$", re.IGNORECASE
)
#: the last words of an answer that goes on ("yes, and …"); an article or preposition after a short
#: yes or no with a full stop is more often a misheard word ("No thanks, that of." for "that's all")
_CONTINUING = re.compile(r"\b(and|but|or|so|because|um+|uh+|er+|like|then)\W*$", re.IGNORECASE)
_ENDS_IN_DIGIT = re.compile(r"(\d|zero|oh|one|two|three|four|five|six|seven|eight|nine)\W*$", re.IGNORECASE)
SENTENCE_END = ".?!"
#: a reading whose mean token log-probability is below this is one the recogniser doubts (Whisper's own
#: threshold for decoding again): on noisy lines its readings of a caller's words were -0.1 to -0.65,
#: its garbled ones ("melting step of", "rest end", "essence") -0.9 to -1.3
DOUBTFUL_LOGPROB = -1.0
#: a digit or two after this many other words is a sentence, not the start of a number read out: the
#: digit prompt makes the recogniser hear "then 2" or "from 1?" in a noisy "when is my payment due?"
SENTENCE_WORDS = 5
NUMBER_GROUP_DIGITS = 3  # a caller reading a number pauses after a group of at least this many
_DIGIT_WORD = re.compile(r"^(?:\d+|zero|oh|o|one|two|three|four|five|six|seven|eight|nine|double|triple)\W*$", re.I)
#: zeros a second reading may add to the first, where the first came back short: a dropped "oh" or two
MAX_RESTORED_DIGITS = 2


@dataclass
class EarlyAsr:
    """Recognition of the utterance so far, started during a pause before the turn is over."""

    audio_len: int  # bytes of utterance audio it covers
    ticket: Ticket
    task: asyncio.Task[Transcript] | None = None
    understood: bool = False  # the words map confidently onto one of the agent's intents
    # a second reading of a number that came back a digit or two short, run in the pause the turn
    # waits anyway (`restore_digits` picks from it when the turn ends)
    readings: asyncio.Task[list[str]] | None = None

    def restores(self, text: str, expect: Expectation) -> bool:
        """Whether the second reading has come back and repairs `text`, a number a digit or two short."""
        task, expected = self.readings, expected_digits(expect)
        if task is None or expected is None or not task.done() or task.cancelled() or task.exception() is not None:
            return False
        return restore_digits(text, task.result(), expected) is not None

    def finished(self) -> Transcript | None:
        """The transcript, once recognition finished without error."""
        task = self.task
        if task is None or not task.done() or task.cancelled() or task.exception() is not None:
            return None
        return task.result()

    def cancel(self) -> None:
        """Stop the recognition (the caller went on)."""
        if self.task is not None:
            self.task.cancel()
        if self.readings is not None:
            self.readings.cancel()


def wants_intent(text: str) -> bool:
    """Whether early words without a full stop or digits should be checked against the intents.

    Whisper leaves out the full stop when the audio ends right after the last word: words the
    agent understands are a finished request all the same.
    """
    return bool(text) and text[-1:] not in SENTENCE_END and not any(ch.isdigit() for ch in text)


class Endpointer:
    """Decides, tick by tick while an utterance is pending, whether the turn is over."""

    def __init__(self) -> None:
        self.verdict = ""  # what judge_completeness last said of the pending utterance
        # the digits the caller last gave and the question they answered, while it is asked again
        self.reading: tuple[Expectation, str] | None = None

    def decide(
        self,
        silence_ms: float,
        early: EarlyAsr | None,
        timing: StateTimings,
        default_ms: int,
        expecting: Callable[[], Expectation],
    ) -> EndpointEvent | None:
        """END_OF_TURN, NOISE_ONLY, or None to wait, after `silence_ms` of pause (`expecting`: what
        the agent asked, looked up only once there are words to judge)."""
        window = timing.endpointing_ms or default_ms
        self.verdict = "unjudged"
        transcript = early.finished() if early is not None else None
        if early is not None and transcript is not None:
            text = transcript.text
            if not text.strip():
                if silence_ms >= (timing.complete_endpointing_ms or NOISE_PAUSE_MS):
                    return NOISE_ONLY
                return None
            expect = expecting()
            previous = self.reading[1] if self.reading is not None and self.reading[0] == expect else None
            confident = transcript.avg_logprob is None or transcript.avg_logprob >= DOUBTFUL_LOGPROB
            verdict = judge_completeness(
                text, expect, understood=early.understood, previous=previous, confident=confident
            )
            if verdict != "complete" and early.restores(text, expect):
                # a second reading already holds the digits this one lost: the number is whole, and
                # waiting for more of it (a pause between groups) would only keep the caller waiting
                verdict = "complete"
            self.verdict = verdict
            if verdict == "complete":
                window = timing.complete_endpointing_ms or window
            elif verdict == "incomplete":
                window = timing.incomplete_endpointing_ms or window
        return END_OF_TURN if silence_ms >= window else None

    def note_reading(self, asked: Expectation, now_expecting: Expectation, text: str) -> None:
        """Remember the digits given for a question the agent is about to ask again."""
        self.reading = None
        if asked.value_type in DIGIT_TYPES and now_expecting == asked:
            digits = heard_digits(text)
            if digits:
                self.reading = (asked, digits)


def judge_completeness(
    text: str, expect: Expectation, *, understood: bool = False, previous: str | None = None, confident: bool = True
) -> str:
    """'complete', 'incomplete' or 'unsure' for the words so far, given what the agent asked.

    `understood`: the words map confidently onto one of the agent's intents, which makes a
    request complete even when the recogniser left out the final full stop.
    `previous`: the digits the caller gave when the agent last asked this same question (it is
    asking again). A caller who reads the number again starts it the same way; a first group
    that does not is some other answer, not the start of that number, so it is not waited on.
    `confident`: whether the recogniser trusted its reading (see DOUBTFUL_LOGPROB). "incomplete"
    doubles the wait on the strength of the last words, so a reading the recogniser doubts ("melting
    step of" for a noisy "no thanks, that's all") earns only "unsure".
    """
    verdict = _judge_words(text, expect, understood=understood, previous=previous)
    return "unsure" if verdict == "incomplete" and not confident else verdict


def _judge_words(text: str, expect: Expectation, *, understood: bool, previous: str | None) -> str:
    stripped = text.strip()
    if not stripped:
        return "unsure"
    if expect.value_type in DIGIT_TYPES:
        digits = heard_digits(stripped)
        needed = expect.length or (PHONE_DIGITS if expect.value_type == "phone" else None)
        if needed is not None and len(digits) >= needed:
            return "complete"
        words = [w for w in stripped.split() if not _DIGIT_WORD.match(w)]
        if digits and len(digits) < NUMBER_GROUP_DIGITS and len(words) >= SENTENCE_WORDS:
            digits = ""  # a sentence with a number in passing (or a misheard word): judged as words
        if digits:
            # A caller reading digits pauses between groups: wait for more while the words
            # so far end in a digit ("one one eight … [pause] five nine"). One digit short
            # is not such a pause (nobody stops before the last digit) but a digit the
            # recogniser lost, and waiting longer would not bring it back.
            ends_in_digit = bool(_ENDS_IN_DIGIT.search(stripped))
            if not ends_in_digit or (needed is not None and needed - len(digits) == 1):
                return "unsure"
            if previous and not starts_like(digits, previous):
                return "unsure"
            return "incomplete"
        # no digits at all: the caller said something else ("I don't have it"); judge the words
    if (
        stripped[-1:] in SENTENCE_END
        and len(stripped.split()) <= SHORT_ANSWER_WORDS
        and not _CONTINUING.search(stripped)
        and parse_slot("yes_no", stripped).ok
    ):
        return "complete"  # a short yes or no the recogniser closed with a full stop
    if (
        len(stripped.split()) <= SHORT_ANSWER_WORDS
        and _TRAILING_INCOMPLETE.search(stripped)
        and not _CONTINUING.search(stripped)
        and parse_slot("yes_no", stripped).ok
    ):
        # the same without the full stop (the audio ended right after the last word): "No thanks that of"
        # for a noisy "no thanks, that's all". The question is answered; the trailing article or
        # preposition may be misheard, or may go on ("yes, for the …"): the normal wait, not the long one
        return "unsure"
    if _TRAILING_INCOMPLETE.search(stripped) and not stripped.endswith("?"):
        return "incomplete"  # (a question mark says the recogniser heard a whole question: "… payment to?")
    if expect.value_type in ("yes_no", "money", "date"):
        if parse_slot(expect.value_type, stripped).ok:
            return "complete"
        if expect.kind != "open":
            # a whole sentence instead of the answer ("When is my next payment due?") is the caller's
            # turn, not a pause before the answer: the short wait, as for any request
            whole = stripped[-1:] in SENTENCE_END or understood
            return "complete" if whole and len(stripped.split()) >= SENTENCE_WORDS else "unsure"
    elif len(stripped.split()) <= SHORT_ANSWER_WORDS and parse_slot("yes_no", stripped).ok:
        return "complete"  # "no thanks, that's all" to any question is a whole answer
    if stripped[-1:] in SENTENCE_END or understood:
        return "complete"
    return "unsure"


def starts_like(digits: str, reading: str) -> bool:
    """Whether `digits` could be the first group of `reading`, the same number read earlier.

    Either reading may have lost or misheard a digit, so the group is compared with the start
    of the earlier reading one digit shorter, as long, and one longer, allowing one edit per
    four digits (at least one).
    """
    n = len(digits)
    allowed = max(1, n // 4)
    return any(_edit_distance(digits, reading[:k]) <= allowed for k in range(max(1, n - 1), n + 2))


def _edit_distance(a: str, b: str) -> int:
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
    return row[-1]


def context_prompt(expect: Expectation) -> str | None:
    """Text that primes recognition for what the agent just asked for."""
    return DIGITS_PROMPT if expect.value_type in DIGIT_TYPES else None


def expected_digits(expect: Expectation) -> int | None:
    """How many digits the caller's answer must have, when it is a digit slot of known length."""
    if expect.value_type not in DIGIT_TYPES:
        return None
    return expect.length or (PHONE_DIGITS if expect.value_type == "phone" else None)


def short_by(text: str, expect: Expectation) -> int:
    """How many digits a reading lacks for what was asked, where that is a lost "oh" or two (1 or 2;
    0 for anything else: not a number, a whole one, or too little to be one read out)."""
    expected = expected_digits(expect)
    missing = expected - len(heard_digits(text)) if expected is not None and heard_digits(text) else 0
    return missing if 0 < missing <= MAX_RESTORED_DIGITS else 0


def restore_digits(first: str, readings: list[str], expected: int) -> str | None:
    """The first of `readings` (best first) that repairs a reading of a digit string that came back
    short: it has exactly `expected` digits, keeps every digit of `first` in order, and adds only
    zeros, at most MAX_RESTORED_DIGITS (the "oh" Whisper drops on a noisy line, taking it for a
    hesitation). A reading that changes a digit that was heard, or adds another digit, is never
    taken: measured on digit strings read out on noisy lines, other additions were wrong as often as
    right, and a wrong number costs the caller a verification failure where a short one costs a
    question (bench/asr.py --digits)."""
    heard = heard_digits(first)
    if not heard or not 0 < expected - len(heard) <= MAX_RESTORED_DIGITS:
        return None
    for reading in readings:
        digits = heard_digits(reading)
        added = Counter(digits) - Counter(heard)
        if len(digits) == expected and set(added) == {"0"} and _is_subsequence(heard, digits):
            return reading
    return None


def _is_subsequence(short: str, long: str) -> bool:
    rest = iter(long)
    return all(ch in rest for ch in short)
