"""Turn-taking decisions that need no audio models: completeness, end-of-speech refinement, pool order."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from voxgate.runtime.nlu.slots import digit_homophones, parse_slot
from voxgate.runtime.session import Expectation
from voxgate.testing.fakes import FakeRecognizer, fake_vad, tone
from voxgate.voice.call import endpointing
from voxgate.voice.engines import VoiceEngines, default_speech_workers
from voxgate.voice.pipeline import judge_completeness, last_loud_ms, starts_like
from voxgate.voice.pool import BACKGROUND, FIRST_AUDIO, SPECULATIVE, URGENT, Batch, SpeechPool, Ticket
from voxgate.voice.types import Transcript


def test_a_group_starts_like_the_earlier_reading_within_one_edit_per_four_digits() -> None:
    assert starts_like("9975", "9975142")
    assert starts_like("997", "9975142")
    assert starts_like("19090", "1909072")
    assert starts_like("1909", "190972")  # the earlier reading lost a digit
    assert starts_like("975", "9975142")  # this one did
    assert not starts_like("2447", "9975142")
    assert not starts_like("960", "1909072")
    assert not starts_like("1234", "9975142")
    assert starts_like("12345677", "12345678")
    assert not starts_like("87654321", "12345678")


def test_digit_homophones_only_inside_digit_runs() -> None:
    assert parse_slot("pin", "6 for 6 8").value == "6468"
    assert parse_slot("account_number", "when when 815 908").value == "11815908"
    assert parse_slot("pin", "my pin is six for six eight").value == "6468"
    assert digit_homophones("for the record") == "for the record"  # no digits nearby: left alone
    assert digit_homophones("I want to go") == "I want to go"


def test_completeness_follows_what_was_asked() -> None:
    account = Expectation("identify", "account_number", 8)
    assert judge_completeness("1 1 8 1 5 9 0 8", account) == "complete"
    assert judge_completeness("1 1 8 1", account) == "incomplete"  # mid-number pause: wait
    assert judge_completeness("one one eight one", account) == "incomplete"
    # one digit short is a digit the recogniser lost, not a pause before the last digit
    assert judge_completeness("1 1 8 1 5 9 8", account) == "unsure"
    assert judge_completeness("1 1 8 1 5 9", account) == "incomplete"  # 3-3-2 grouping
    assert judge_completeness("sorry I don't have it", account) == "complete"
    assert judge_completeness("hmm let me find it", account) == "unsure"
    # words instead of digits are judged as words
    assert judge_completeness("No thanks, that's all.", account) == "complete"
    assert judge_completeness("no thanks that's all", account) == "complete"
    assert judge_completeness("I'd like to talk to a", account) == "incomplete"
    # asked again: the same number read again in groups is waited on, another number is not
    assert judge_completeness("1 1 8 1", account, previous="1181598") == "incomplete"
    assert judge_completeness("1 7 8 1", account, previous="1181598") == "incomplete"  # one misheard
    assert judge_completeness("1 8 1 5", account, previous="1181598") == "incomplete"  # first digit lost
    assert judge_completeness("2 4 4 7", account, previous="1181598") == "unsure"  # the PIN instead
    assert judge_completeness("9 6", account, previous="1909072") == "unsure"
    # a whole sentence said instead of the number, a digit or two misheard in it, is not waited on
    assert judge_completeness("Can I just drop this from 1?", account) == "complete"
    assert judge_completeness("When is my next day then 2", account) == "unsure"
    assert judge_completeness("When is my next payment to?", account) == "complete"
    assert judge_completeness("And I just put this on 1.", account) == "complete"
    # but words before a number read out in groups still wait for the rest
    assert judge_completeness("my account number is 1 1 8 1", account) == "incomplete"
    assert judge_completeness("it's one one eight", account) == "incomplete"
    assert judge_completeness("my account number is one one", account) == "incomplete"  # two digits, 4 words
    pin = Expectation("secret", "pin", 4)
    assert judge_completeness("9 6 0", pin) == "unsure"
    assert judge_completeness("9 6", pin) == "incomplete"
    yes_no = Expectation("confirm", "yes_no")
    assert judge_completeness("Yes, please.", yes_no) == "complete"
    assert judge_completeness("Yes, and", yes_no) == "incomplete"
    # something else said instead of yes or no, an amount or a date: a whole sentence is not waited on
    assert judge_completeness("When is my next payment due?", yes_no) == "complete"
    assert judge_completeness("The app keeps logging me out.", Expectation("slot", "money")) == "complete"
    assert (
        judge_completeness("is there an outage in my area", Expectation("slot", "date"), understood=True) == "complete"
    )
    assert judge_completeness("Hmm, not sure.", yes_no) == "unsure"  # too short to be another request
    # a short yes or no with a full stop whose last word was misheard ("that's all" as "that of")
    assert judge_completeness("No thanks, that of.", Expectation("open", "yes_no")) == "complete"
    assert judge_completeness("No, that's for.", account) == "complete"
    assert judge_completeness("Yes, and.", yes_no) == "incomplete"  # going on
    # without the full stop (the audio ended right after it) the answer is given all the same, but the last
    # word may go on: the normal wait, not the long one
    assert judge_completeness("No thanks, that of", Expectation("open", "yes_no")) == "unsure"
    assert judge_completeness("No thanks that of", account) == "unsure"
    assert judge_completeness("Yes, and", Expectation("open", "yes_no")) == "incomplete"  # going on
    assert judge_completeness("the one from last", Expectation("slot", "date")) == "unsure"
    open_ = Expectation("open")
    assert judge_completeness("Where is my order?", open_) == "complete"
    assert judge_completeness("I want to dispute the", open_) == "incomplete"
    assert judge_completeness("well", open_) == "unsure"
    # no full stop (audio cut right after the last word), but an intent the agent knows
    assert judge_completeness("where is my order", open_) == "unsure"
    assert judge_completeness("where is my order", open_, understood=True) == "complete"
    assert judge_completeness("I want to check my", open_, understood=True) == "incomplete"
    anything_else = Expectation("open", "yes_no")
    assert judge_completeness("No thanks that's all", anything_else) == "complete"
    assert judge_completeness("Yes, I also need to check my", anything_else) == "incomplete"
    assert judge_completeness("I also want to check my bill.", anything_else) == "complete"
    assert judge_completeness("hmm let me think", anything_else) == "unsure"


def test_speech_end_is_the_last_loud_frame() -> None:
    rate = 16000
    rng = np.random.default_rng(1)
    speech = (rng.normal(0, 6000, rate)).astype(np.int16)  # 1 s of loud signal
    quiet = (rng.normal(0, 30, rate * 3 // 10)).astype(np.int16)  # 300 ms of line noise
    utterance = np.concatenate([speech, quiet]).tobytes()
    end_of_audio = 5000.0
    # the VAD said the speech ended 120 ms after it really did; the refinement finds the real end
    refined = last_loud_ms(utterance, end_of_audio, vad_end_ms=end_of_audio - 180)
    assert abs(refined - (end_of_audio - 300)) <= 20
    # never more than 250 ms earlier than the VAD, and never later
    assert last_loud_ms(utterance, end_of_audio, vad_end_ms=end_of_audio - 10) >= end_of_audio - 260
    assert last_loud_ms(utterance, end_of_audio, vad_end_ms=end_of_audio - 400) == end_of_audio - 400


async def test_urgent_work_does_not_wait_behind_long_background_work() -> None:
    pool = SpeechPool(workers=1, urgent_workers=1)
    release = threading.Event()
    try:
        blocker = asyncio.ensure_future(pool.run(BACKGROUND, release.wait, 10))
        queued = asyncio.ensure_future(pool.run(BACKGROUND, lambda: "later"))
        await asyncio.sleep(0.05)
        urgent = await asyncio.wait_for(pool.run(URGENT, lambda: "now"), timeout=5)
        assert urgent == "now" and not queued.done()  # served by the urgent-only worker
        release.set()
        assert await blocker is True and await queued == "later"
    finally:
        release.set()
        pool.close()


async def test_pool_runs_by_priority() -> None:
    pool = SpeechPool(workers=1, urgent_workers=0)
    order: list[str] = []
    gate = threading.Event()
    try:
        first = asyncio.ensure_future(pool.run(BACKGROUND, gate.wait, 10))
        await asyncio.sleep(0.05)
        jobs = [
            asyncio.ensure_future(pool.run(BACKGROUND, order.append, "background")),
            asyncio.ensure_future(pool.run(URGENT, order.append, "urgent")),
            asyncio.ensure_future(pool.run(FIRST_AUDIO, order.append, "first audio")),
        ]
        await asyncio.sleep(0.05)
        gate.set()
        await asyncio.gather(first, *jobs)
        # a reply's first words (short) go before a final decode queued earlier (long)
        assert order == ["first audio", "urgent", "background"]
    finally:
        gate.set()
        pool.close()


async def test_urgent_only_workers_take_first_audio_too() -> None:
    pool = SpeechPool(workers=1, urgent_workers=1)
    release = threading.Event()
    try:
        blocker = asyncio.ensure_future(pool.run(BACKGROUND, release.wait, 10))
        await asyncio.sleep(0.05)  # the general worker is busy for as long as the test needs
        assert await asyncio.wait_for(pool.run(FIRST_AUDIO, lambda: "spoken"), timeout=5) == "spoken"
        release.set()
        await blocker
    finally:
        release.set()
        pool.close()


async def test_a_queued_job_can_be_promoted() -> None:
    """A speculative decode still queued when the VAD confirms the pause jumps ahead."""
    pool = SpeechPool(workers=1, urgent_workers=0)
    order: list[str] = []
    gate = threading.Event()
    try:
        first = asyncio.ensure_future(pool.run(BACKGROUND, gate.wait, 10))
        await asyncio.sleep(0.05)
        ticket = Ticket()
        jobs = [
            asyncio.ensure_future(pool.run(SPECULATIVE, order.append, "other")),
            asyncio.ensure_future(pool.run(SPECULATIVE, order.append, "promoted", ticket=ticket)),
        ]
        await asyncio.sleep(0.05)
        assert pool.promote(ticket, URGENT) is True
        assert pool.promote(ticket, URGENT) is False  # already urgent
        gate.set()
        await asyncio.gather(first, *jobs)
        assert order == ["promoted", "other"]
        assert pool.promote(ticket, URGENT) is False  # ran: nothing to promote
    finally:
        gate.set()
        pool.close()


async def test_closing_the_pool_drops_queued_work_and_ends_every_thread() -> None:
    """Work not started when the worker stops is dropped, not run: a long queue of prompt renders
    kept a native model running past interpreter exit (the process aborted)."""
    pool = SpeechPool(workers=1, urgent_workers=0)
    gate, ran = threading.Event(), []
    running = asyncio.ensure_future(pool.run(BACKGROUND, gate.wait, 10))
    await asyncio.sleep(0.05)
    queued = [asyncio.ensure_future(pool.run(BACKGROUND, ran.append, i)) for i in range(20)]
    await asyncio.sleep(0.05)
    closing = asyncio.get_running_loop().run_in_executor(None, pool.close)
    await asyncio.sleep(0.05)
    gate.set()
    await closing
    assert await running is True  # the job that was running finished
    results = await asyncio.gather(*queued, return_exceptions=True)
    assert ran == [] and all(isinstance(r, asyncio.CancelledError) for r in results)
    assert not any(t.is_alive() for t in pool._threads)


def test_a_job_whose_event_loop_closed_does_not_kill_its_worker() -> None:
    """A call's loop may be gone by the time its decode finishes; the worker must live on."""
    pool = SpeechPool(workers=1, urgent_workers=0)
    gate = threading.Event()
    try:
        old_loop = asyncio.new_event_loop()

        async def submit() -> None:
            waiter = asyncio.ensure_future(pool.run(BACKGROUND, gate.wait, 10))
            await asyncio.sleep(0.05)  # the worker has taken the job
            waiter.cancel()  # the call hangs up; its loop goes away before the job ends
            await asyncio.gather(waiter, return_exceptions=True)

        old_loop.run_until_complete(submit())
        old_loop.close()
        gate.set()  # the job finishes with nobody left to tell

        async def later() -> str:
            return await asyncio.wait_for(pool.run(URGENT, lambda: "still working"), timeout=5)

        assert asyncio.run(later()) == "still working"
    finally:
        gate.set()
        pool.close()


class Doubler:
    """A batch that doubles numbers and remembers what each run was given."""

    def __init__(self, size: int) -> None:
        self.runs: list[list[int]] = []
        self.batch = Batch(self.run, size)

    def run(self, items: list[int]) -> list[int]:
        self.runs.append(list(items))
        return [2 * i for i in items]


async def _busy(pool: SpeechPool, gate: threading.Event) -> asyncio.Future[bool]:
    """Occupy the pool's general worker until `gate` is set."""
    blocker = asyncio.ensure_future(pool.run(BACKGROUND, gate.wait, 10))
    await asyncio.sleep(0.05)
    return blocker


async def test_batch_jobs_that_wait_together_run_together_best_first_up_to_the_batch_size() -> None:
    pool = SpeechPool(workers=1, urgent_workers=0)
    gate, doubler = threading.Event(), Doubler(size=2)
    try:
        blocker = await _busy(pool, gate)
        jobs = [
            asyncio.ensure_future(pool.run_batched(SPECULATIVE, doubler.batch, 1)),
            asyncio.ensure_future(pool.run_batched(SPECULATIVE, doubler.batch, 2)),
            asyncio.ensure_future(pool.run_batched(URGENT, doubler.batch, 3)),
        ]
        await asyncio.sleep(0.05)
        gate.set()
        assert await asyncio.gather(blocker, *jobs) == [True, 2, 4, 6]
        # the urgent one first, with the speculative one queued first; then the last alone
        assert doubler.runs == [[3, 1], [2]]
        assert (doubler.batch.runs, doubler.batch.jobs, pool.completed) == (2, 3, 4)
    finally:
        gate.set()
        pool.close()


async def test_a_batch_job_runs_alone_when_nothing_of_its_batch_waits() -> None:
    pool = SpeechPool(workers=1, urgent_workers=0)
    doubler, other = Doubler(size=4), Doubler(size=4)
    try:
        assert await pool.run_batched(URGENT, doubler.batch, 5) == 10
        gate = threading.Event()
        blocker = await _busy(pool, gate)
        # waiting together, but in two different batches: never run by the other's function
        jobs = [
            asyncio.ensure_future(pool.run_batched(URGENT, doubler.batch, 1)),
            asyncio.ensure_future(pool.run_batched(URGENT, other.batch, 2)),
        ]
        await asyncio.sleep(0.05)
        gate.set()
        assert await asyncio.gather(blocker, *jobs) == [True, 2, 4]
        assert doubler.runs == [[5], [1]] and other.runs == [[2]]
    finally:
        pool.close()


async def test_an_urgent_only_worker_batches_no_speculative_work() -> None:
    """The worker kept for callers who are waiting must not spend its time on guesses."""
    pool = SpeechPool(workers=1, urgent_workers=1)
    gate, doubler = threading.Event(), Doubler(size=4)
    try:
        blocker = await _busy(pool, gate)
        guess = asyncio.ensure_future(pool.run_batched(SPECULATIVE, doubler.batch, 1))
        await asyncio.sleep(0.05)
        assert await asyncio.wait_for(pool.run_batched(URGENT, doubler.batch, 2), timeout=5) == 4
        assert doubler.runs == [[2]] and not guess.done()
        gate.set()
        assert await guess == 2 and await blocker is True
        assert doubler.runs == [[2], [1]]
    finally:
        gate.set()
        pool.close()


async def test_a_cancelled_batch_job_is_left_out_and_a_failed_batch_fails_each_of_its_jobs() -> None:
    pool = SpeechPool(workers=1, urgent_workers=0)
    gate, doubler = threading.Event(), Doubler(size=4)
    try:
        blocker = await _busy(pool, gate)
        dropped = asyncio.ensure_future(pool.run_batched(URGENT, doubler.batch, 1))
        kept = asyncio.ensure_future(pool.run_batched(URGENT, doubler.batch, 2))
        await asyncio.sleep(0.05)
        dropped.cancel()
        gate.set()
        assert await kept == 4 and await blocker is True
        assert doubler.runs == [[2]]

        def broken(items: list[int]) -> list[int]:
            if len(items) > 1:
                return items[:1]  # a result lost: every job of the run is told, none waits forever
            raise ValueError("model failed")

        failing = Batch(broken, 4)
        gate.clear()
        blocker = await _busy(pool, gate)
        jobs = [asyncio.ensure_future(pool.run_batched(URGENT, failing, i)) for i in range(2)]
        await asyncio.sleep(0.05)
        gate.set()
        results = await asyncio.gather(*jobs, return_exceptions=True)
        assert all(isinstance(r, RuntimeError) and "returned 1 results" in str(r) for r in results), results
        with pytest.raises(ValueError, match="model failed"):
            await pool.run_batched(URGENT, failing, 7)
        assert await pool.run(URGENT, lambda: "the worker lives") == "the worker lives"
        await blocker
    finally:
        gate.set()
        pool.close()


class BatchReader(FakeRecognizer):
    """A fake recogniser that can read several utterances at once, and counts how it was asked."""

    def __init__(self) -> None:
        super().__init__(texts=[f"utterance {i}" for i in range(10)])
        self.sizes: list[int] = []

    def transcribe_many(self, requests: list[tuple[np.ndarray, str | None, bool]]) -> list[Transcript]:
        self.sizes.append(len(requests))
        return [self.transcribe(audio, prompt, quick) for audio, prompt, quick in requests]


async def test_a_worker_s_calls_share_decodes_when_their_recognitions_wait_together() -> None:
    reader = BatchReader()
    pool = SpeechPool(workers=1, urgent_workers=0)
    engines = VoiceEngines(pool, reader, {}, "default", fake_vad, batch_size=3)
    gate = threading.Event()
    try:
        audio = tone(300.0, 200, 0.3)
        assert (await engines.recognize(audio, URGENT)).text == "utterance 0"
        blocker = await _busy(pool, gate)
        waiting = [
            asyncio.ensure_future(engines.recognize(audio, URGENT, prompt=f"p{i}", quick=i == 3)) for i in range(4)
        ]
        await asyncio.sleep(0.05)
        gate.set()
        heard = await asyncio.gather(*waiting)
        await blocker
        assert reader.sizes == [1, 3, 1]
        # each call gets its own words, with its own prompt
        assert [(t.text, c[0], c[1]) for t, c in zip(heard, reader.calls[1:], strict=True)] == [
            ("utterance 1", "p0", False),
            ("utterance 2", "p1", False),
            ("utterance 3", "p2", False),
            ("utterance 4", "p3", True),
        ]
        assert engines.batching() == {"asr_decodes": 3, "asr_recognitions": 5, "asr_mean_batch": 1.67}
        # a recogniser that reads one at a time is asked one at a time
        single = FakeRecognizer(texts=["a", "b"])
        plain = VoiceEngines(pool, single, {}, "default", fake_vad)
        assert [
            t.text for t in await asyncio.gather(plain.recognize(audio, URGENT), plain.recognize(audio, URGENT))
        ] == [
            "a",
            "b",
        ]
    finally:
        gate.set()
        pool.close()


@pytest.mark.parametrize(
    ("first", "readings", "expected", "taken"),
    [
        # the lost "oh" comes back: every heard digit kept, in order, only zeros added
        ("1 1 8 1 5 9 8", ["1 1 8 1 5 9 0 8"], 8, "1 1 8 1 5 9 0 8"),
        ("one one eight one five nine eight", ["one one eight one five nine oh eight"], 8, 1),
        ("7 6 6", ["0 7 6 6"], 4, "0 7 6 6"),
        ("9 0 8 1 3 3", ["9 0 8 1 0 0 3 3"], 8, "9 0 8 1 0 0 3 3"),  # two lost
        ("4 1 5 5 5 5 1 7 6", ["4 1 5 5 5 5 0 1 7 6"], None, "4 1 5 5 5 5 0 1 7 6"),  # a phone number: 10
        # the best reading that fits wins; one that changes a heard digit or adds another never does
        ("1 1 8 1 5 9 8", ["1 1 8 1 5 6 0 8", "1 1 8 1 5 9 9 8", "1 1 8 1 5 9 0 8"], 8, "1 1 8 1 5 9 0 8"),
        ("1 1 8 1 5 9 8", ["1 1 8 1 5 6 0 8", "2 1 8 1 5 9 0 8"], 8, None),
        ("7 6 6", ["7 6 6 6", "7 7 6 6"], 4, None),  # a collapsed repeat is not guessed at
        # too short to be a lost digit or two, nothing heard, or nothing missing: left alone
        ("1 1 8 1 5", ["1 1 8 1 5 9 0 8"], 8, None),
        ("hello", ["1 1 8 1 5 9 0 8"], 8, None),
        ("1 1 8 1 5 9 0 8", ["1 1 8 1 5 9 0 8"], 8, None),
        ("1 1 8 1 5 9 8", [], 8, None),
        ("1 1 8 1 5 9 8", ["1 1 8 1 5 9 0 8 8"], 8, None),  # a reading too long is no repair
    ],
)
def test_a_short_digit_string_is_repaired_only_by_a_reading_that_adds_the_lost_digits(
    first: str, readings: list[str], expected: int | None, taken: str | int | None
) -> None:
    length = expected or endpointing.PHONE_DIGITS
    got = endpointing.restore_digits(first, readings, length)
    assert got == (readings[0] if taken == 1 else taken)


@pytest.mark.parametrize(
    ("expect", "digits"),
    [
        (Expectation("identify", "account_number", 8), 8),
        (Expectation("secret", "pin", 4), 4),
        (Expectation("slot", "phone"), endpointing.PHONE_DIGITS),
        (Expectation("slot", "digits"), None),  # no known length: nothing to repair towards
        (Expectation("open"), None),
        (Expectation("slot", "date"), None),
    ],
)
def test_the_digits_a_turn_must_have_come_from_what_was_asked(expect: Expectation, digits: int | None) -> None:
    assert endpointing.expected_digits(expect) == digits


@pytest.mark.parametrize(("cores", "workers"), [(1, 1), (2, 1), (4, 3), (16, 15)])
def test_speech_threads_default_to_one_per_core_with_the_urgent_thread_counted(cores: int, workers: int) -> None:
    assert default_speech_workers(cores) == workers
