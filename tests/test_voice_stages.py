"""The call stages on their own, as tables: no tasks, no clock but the numbers passed in."""

from __future__ import annotations

import asyncio

import pytest

from voxgate.bundle.models import StateTimings
from voxgate.clock import VirtualClock
from voxgate.runtime.session import Expectation
from voxgate.testing.fakes import FakeVoice, fake_vad, silence
from voxgate.voice.call.barge_in import BACKCHANNEL_PROMPT, BargeIn, ProbeLatency
from voxgate.voice.call.dtmf import Keypad
from voxgate.voice.call.endpointing import EarlyAsr, Endpointer
from voxgate.voice.call.events import (
    BARGE_OVER,
    END_OF_TURN,
    NOISE_ONLY,
    QUIET_SPELL,
    VOICE_BACK,
    Backchannel,
    Interruption,
    ProbeWanted,
    SpeechEnded,
    SpeechStarted,
)
from voxgate.voice.call.line import LINE_GAP_MS, Line
from voxgate.voice.call.playback import SYNTH_AHEAD_S, Playback
from voxgate.voice.call.segmenter import PREROLL_MS, Segmenter
from voxgate.voice.pool import Ticket
from voxgate.voice.types import BYTES_PER_MS, FRAME_BYTES, Transcript

TIMINGS = StateTimings(endpointing_ms=600, complete_endpointing_ms=350, incomplete_endpointing_ms=1200)
ANYTHING_ELSE = Expectation("open", "yes_no")
OPEN = Expectation("open")
ACCOUNT = Expectation("identify", "account_number", 8)


def _frames(pcm: bytes) -> list[bytes]:
    return [pcm[i : i + FRAME_BYTES] for i in range(0, len(pcm), FRAME_BYTES)]


# ---- the line --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("gap_ms", "in_speech", "frames"),
    [
        (100, True, 0),  # jitter: not a gap
        (LINE_GAP_MS - 20, True, 0),
        (LINE_GAP_MS, True, LINE_GAP_MS // 20),  # a gap in speech: filled up to now
        (LINE_GAP_MS + 60, True, (LINE_GAP_MS + 60) // 20),
        (LINE_GAP_MS + 60, False, 0),  # no utterance open: idle time runs on the clock
    ],
)
def test_the_line_fills_a_gap_only_in_speech_and_only_once_it_outlasts_jitter(
    gap_ms: int, in_speech: bool, frames: int
) -> None:
    line = Line(now=0.0)
    line.media(20, now=0.0)
    line.last_tick = gap_ms / 1000 - 0.02  # the tick before this one ran on time
    assert line.gap_frames(gap_ms / 1000, utterance_open=in_speech, barge_open=False) == frames


def test_a_stalled_loop_is_not_a_gap_and_chunked_senders_get_twice_their_chunk() -> None:
    line = Line(now=0.0)
    line.media(20, now=0.0)
    line.last_tick = 0.0  # the loop stalled 500 ms: frames are waiting to be read
    assert line.gap_frames(0.5, utterance_open=True, barge_open=False) == 0
    chunked = Line(now=0.0)
    for _ in range(10):  # 200 ms at once
        chunked.media(20, now=1.0)
    assert chunked.cadence_ms == 200
    chunked.last_tick = 1.0 + 0.38
    assert chunked.gap_frames(1.0 + 0.39, utterance_open=True, barge_open=False) == 0  # < 2 × 200 ms
    assert chunked.gap_frames(1.0 + 0.41, utterance_open=True, barge_open=False) == 20


def test_the_line_tells_when_a_point_of_the_audio_arrived() -> None:
    line = Line(now=0.0)
    for i in range(1, 4):
        line.took(20.0 * i, now=10.0 + i)
    assert [line.time_at(ms, now=99.0) for ms in (0, 20, 21, 60, 61)] == [11.0, 11.0, 12.0, 13.0, 13.0]
    assert Line(now=0.0).time_at(5, now=99.0) == 99.0


# ---- the segmenter ---------------------------------------------------------------------------------


def test_the_segmenter_keeps_preroll_reports_onset_pause_and_offset() -> None:
    voice = FakeVoice()
    seg = Segmenter(fake_vad())
    events = []
    for frame in _frames(silence(400) + voice.say("hello there you", ms=800) + silence(400)):
        events.extend(seg.on_frame(frame))
    kinds = [type(e).__name__ for e in events if e is not VOICE_BACK]
    assert kinds == ["SpeechStarted", "SpeechEnded"]
    started = next(e for e in events if isinstance(e, SpeechStarted))
    ended = next(e for e in events if isinstance(e, SpeechEnded))
    assert 380 <= started.onset_ms <= 420
    # preroll: the utterance reaches back before the onset the VAD confirmed two windows later
    assert started.onset_ms - PREROLL_MS <= seg.speech_start_ms < started.onset_ms - 200
    assert ended.end_ms == pytest.approx(1200, abs=20)  # the last loud frame, before the VAD's end
    assert ended.end_ms <= ended.vad_ms
    assert seg.pending and not seg.in_speech
    assert len(seg.take()) >= (1200 - seg.speech_start_ms) * BYTES_PER_MS
    assert not seg.pending and seg.utterance == bytearray()


def test_the_pause_is_heard_before_the_vad_confirms_it() -> None:
    """A VAD that lags the last word by 200 ms (as Silero's smoothing does): the frame energy
    tells of the pause after 80 ms, while the VAD still says speech."""
    seg = Segmenter(fake_vad([0.02] * 12 + [0.95] * 32 + [0.02] * 20))
    events = []
    for frame in _frames(silence(400) + FakeVoice().say("hello there you", ms=800) + silence(400)):
        events.extend((seg.audio_ms, e) for e in seg.on_frame(frame) if e is not VOICE_BACK)
    first_quiet = next(ms for ms, e in events if e is QUIET_SPELL)
    ended = next(ms for ms, e in events if isinstance(e, SpeechEnded))
    assert first_quiet == pytest.approx(1200 + 100, abs=20) and first_quiet < ended


def test_a_pause_too_short_for_an_early_guess_gives_no_quiet_spell() -> None:
    seg = Segmenter(fake_vad())
    events = []
    for frame in _frames(FakeVoice().say("hi", ms=100) + silence(60)):
        events.extend(seg.on_frame(frame))
    assert QUIET_SPELL not in events


# ---- endpointing -----------------------------------------------------------------------------------


def _early(text: str | None, understood: bool = False, logprob: float | None = None) -> EarlyAsr:
    early = EarlyAsr(0, Ticket(), understood=understood)
    if text is not None:
        future: asyncio.Future[Transcript] = asyncio.get_event_loop().create_future()
        future.set_result(Transcript(text, 0, 0, "fake", avg_logprob=logprob))
        early.task = future  # type: ignore[assignment]
    return early


@pytest.mark.parametrize(
    ("silence_ms", "text", "expect", "decision", "verdict"),
    [
        (340, "Where is my order?", OPEN, None, "complete"),
        (350, "Where is my order?", OPEN, END_OF_TURN, "complete"),
        (590, "well", OPEN, None, "unsure"),
        (600, "well", OPEN, END_OF_TURN, "unsure"),
        (1100, "I want to check my", OPEN, None, "incomplete"),
        (1200, "I want to check my", OPEN, END_OF_TURN, "incomplete"),
        (1100, "one one eight one", ACCOUNT, None, "incomplete"),
        (350, "1 1 8 1 5 9 0 8", ACCOUNT, END_OF_TURN, "complete"),
        (200, "", OPEN, None, "unjudged"),  # no words yet: wait for more pause
        (350, "", OPEN, NOISE_ONLY, "unjudged"),  # no words in a long pause: a noise
        (590, None, OPEN, None, "unjudged"),  # the early recognition still runs
        (600, None, OPEN, END_OF_TURN, "unjudged"),
    ],
)
async def test_endpointing_picks_the_window_from_the_words(
    silence_ms: int, text: str | None, expect: Expectation, decision: object, verdict: str
) -> None:
    endpointer = Endpointer()
    assert endpointer.decide(silence_ms, _early(text), TIMINGS, 600, lambda: expect) is decision
    assert endpointer.verdict == verdict


@pytest.mark.parametrize(
    ("text", "logprob", "expect", "verdict"),
    [
        ("melting step of", -1.3, ANYTHING_ELSE, "unsure"),  # a noisy "no thanks, that's all", garbled
        ("melting step of", -0.5, ANYTHING_ELSE, "incomplete"),  # the same words, heard with confidence
        ("I want to check my", -1.2, OPEN, "unsure"),
        ("I want to check my", None, OPEN, "incomplete"),  # a recogniser that gives no confidence is trusted
        ("one one eight one", -1.1, ACCOUNT, "unsure"),
        ("Where is my order?", -1.4, OPEN, "complete"),  # doubt shortens a wait, never lengthens one
    ],
)
async def test_a_reading_the_recogniser_doubts_does_not_earn_the_long_wait(
    text: str, logprob: float | None, expect: Expectation, verdict: str
) -> None:
    endpointer = Endpointer()
    decision = endpointer.decide(700, _early(text, logprob=logprob), TIMINGS, 600, lambda: expect)
    assert endpointer.verdict == verdict
    assert (decision is END_OF_TURN) == (verdict != "incomplete")  # 700 ms: past every window but the long one


async def test_endpointing_waits_on_a_reasked_number_only_when_it_starts_like_the_last_reading() -> None:
    endpointer = Endpointer()
    endpointer.note_reading(ACCOUNT, ACCOUNT, "one one eight one five nine eight")
    assert endpointer.reading == (ACCOUNT, "1181598")
    assert endpointer.decide(700, _early("one one eight one"), TIMINGS, 600, lambda: ACCOUNT) is None
    assert endpointer.decide(700, _early("two four four seven"), TIMINGS, 600, lambda: ACCOUNT) is END_OF_TURN
    endpointer.note_reading(ACCOUNT, Expectation("secret", "pin", 4), "one one eight one five nine zero eight")
    assert endpointer.reading is None  # answered: the question is not asked again


# ---- barge-in --------------------------------------------------------------------------------------


def _probe(text: str | None) -> asyncio.Future[Transcript]:
    future: asyncio.Future[Transcript] = asyncio.get_event_loop().create_future()
    if text is not None:
        future.set_result(Transcript(text, 0, 0, "fake"))
    return future


async def test_barge_in_asks_for_probes_then_interrupts_on_words() -> None:
    barge = BargeIn(min_speech_ms=240, max_hold_ms=600, backchannels=["okay"])
    barge.begin(1000)
    assert barge.judge(1100, in_speech=True, pending=False, agent_speaking=True) is None
    assert barge.judge(1110, in_speech=True, pending=False, agent_speaking=True) == ProbeWanted(BACKCHANNEL_PROMPT)
    probe = _probe(None)
    barge.probe_launched(probe)
    # min speech reached, but the first probe is still out: its grace period
    assert barge.judge(1250, in_speech=True, pending=False, agent_speaking=True) is None
    probe.set_result(Transcript("No wait", 0, 0, "fake"))
    assert barge.judge(1260, in_speech=True, pending=False, agent_speaking=True) == Interruption(260, "No wait")
    assert barge.active is None


@pytest.mark.parametrize(
    ("heard", "at_ms", "in_speech", "pending", "event"),
    [
        ("Okay.", 500, True, False, None),  # vetoed: an acknowledgement
        ("Okay.", 600, True, False, Interruption(600, "Okay.")),  # but not past the max hold
        ("Okay.", 300, False, True, Backchannel("Okay.")),  # it ended while the agent talked
        ("", 300, True, False, Interruption(300, "")),  # the probe heard nothing word-like
        ("Mm-", 300, True, False, None),  # a cut-off syllable is an acknowledgement
    ],
)
async def test_barge_in_table(heard: str, at_ms: int, in_speech: bool, pending: bool, event: object) -> None:
    barge = BargeIn(min_speech_ms=240, max_hold_ms=600, backchannels=["okay"])
    barge.begin(0)
    barge.probe_launched(_probe(heard))
    barge.probe_launched(_probe(None))  # the second probe is out: no more are asked for
    assert barge.judge(at_ms, in_speech=in_speech, pending=pending, agent_speaking=True) == event


async def _slow_first_probe(latency: ProbeLatency, heard_at_ms: int) -> object:
    """What the barge-in decides at `heard_at_ms` of speech while its first probe is still out."""
    barge = BargeIn(min_speech_ms=240, max_hold_ms=600, backchannels=["okay"], latency=latency)
    barge.begin(0)
    assert barge.judge(110, in_speech=True, pending=False, agent_speaking=True) == ProbeWanted(BACKCHANNEL_PROMPT)
    barge.probe_launched(_probe(None))
    if heard_at_ms >= 320:  # the second probe is asked for at 320 ms, and is still out too
        assert barge.judge(320, in_speech=True, pending=False, agent_speaking=True) == ProbeWanted(None)
        barge.probe_launched(_probe(None))
    return barge.judge(heard_at_ms, in_speech=True, pending=False, agent_speaking=True)


async def test_a_first_probe_is_waited_for_as_long_as_probes_lately_took() -> None:
    # nothing known yet: the fixed grace (240 + 100 ms of speech), then an interruption
    assert await _slow_first_probe(ProbeLatency(), 330) is None
    assert await _slow_first_probe(ProbeLatency(), 340) == Interruption(340, "")
    # a busy machine answers probes in ~250 ms: an "okay" probed at 110 ms is waited for until ~110 + 250 + 2 × deviation
    busy = ProbeLatency()
    for took in (240, 260, 250, 250):
        busy.observe(took)
    bound = busy.bound_ms()
    assert bound is not None and 250 < bound < 400  # the mean, and a margin from how much the answers varied
    assert await _slow_first_probe(busy, 340) is None
    assert await _slow_first_probe(busy, int(110 + bound) + 1) == Interruption(int(110 + bound) + 1, "")
    # however slow, never past the max hold
    slow = ProbeLatency()
    slow.observe(2000)
    assert await _slow_first_probe(slow, 599) is None
    assert await _slow_first_probe(slow, 600) == Interruption(600, "")


def test_probes_given_up_unanswered_teach_a_longer_wait() -> None:
    latency = ProbeLatency()
    latency.outlasted(230)  # nothing answered yet: the probe outlasted the decision
    first = latency.bound_ms()
    assert first is not None and first >= 230
    latency.outlasted(50)  # shorter than what is known already: says nothing new
    assert latency.bound_ms() == first
    for _ in range(5):
        latency.outlasted(400)
    later = latency.bound_ms()
    assert later is not None and later > first


def test_probe_latency_follows_the_recent_answers() -> None:
    latency = ProbeLatency()
    assert latency.bound_ms() is None
    latency.observe(100)
    assert latency.bound_ms() == 200  # the first answer, and half of it again twice as margin
    for _ in range(30):
        latency.observe(80)
    settled = latency.bound_ms()
    assert settled is not None and 80 <= settled < 90  # steady answers: the margin shrinks to almost nothing


async def test_barge_in_is_over_when_the_agent_stops_first() -> None:
    barge = BargeIn(min_speech_ms=240, max_hold_ms=600, backchannels=[])
    barge.begin(0)
    probe = _probe(None)
    barge.probe_launched(probe)
    assert barge.judge(100, in_speech=True, pending=False, agent_speaking=False) is BARGE_OVER
    assert probe.cancelled() and barge.active is None


# ---- the keypad, playback --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("keys", "wanted", "complete_after"),
    [("12#", None, 3), ("1234", 4, 4), ("123", 4, None), ("#", None, 1)],
)
def test_the_keypad_completes_at_hash_or_the_wanted_length(
    keys: str, wanted: int | None, complete_after: int | None
) -> None:
    keypad = Keypad()
    done = [keypad.press(key, now=1.0, wanted=wanted) for key in keys]
    assert (done.index(True) + 1 if True in done else None) == complete_after


def test_the_keypad_times_out_and_keeps_digits_while_a_turn_runs() -> None:
    keypad = Keypad()
    keypad.press("4", now=10.0, wanted=None)
    assert not keypad.timed_out(12.4, 2500) and keypad.timed_out(12.5, 2500)
    assert keypad.take(busy=True) is None and keypad.digits == "4"
    entered = keypad.take(busy=False)
    assert entered is not None and entered.digits == "4" and keypad.digits == ""
    assert keypad.take(busy=False) is None


def test_playback_estimates_what_is_still_playing_and_paces_synthesis() -> None:
    playback = Playback()
    playback.sent(3000 * BYTES_PER_MS, now=100.0)  # 3 s of audio
    assert playback.playing(102.9) and not playback.playing(103.0)
    assert playback.ahead_wait(0, 100.0) == 0.0  # the first chunk never waits
    assert playback.ahead_wait(1, 100.0) == pytest.approx(3.0 - SYNTH_AHEAD_S)
    assert playback.ahead_wait(1, 101.5) == 0.0
    playback.next_mark()
    assert playback.mark_name(0, last=False) == "1:0" and playback.mark_name(0, last=True) == "1:last"
    assert not playback.heard("1:0", now=101.0) and playback.playing(101.0)
    assert playback.heard("1:last", now=101.0) and not playback.playing(101.0)


# ---- the virtual clock -----------------------------------------------------------------------------


async def test_the_virtual_clock_wakes_sleepers_in_order_and_only_when_advanced() -> None:
    clock = VirtualClock()
    woke: list[tuple[str, float]] = []

    async def sleeper(name: str, seconds: float) -> None:
        await clock.sleep(seconds)
        woke.append((name, clock.now()))

    start = clock.now()
    tasks = [asyncio.create_task(sleeper("b", 0.2)), asyncio.create_task(sleeper("a", 0.1))]
    await clock.advance(0.05)
    assert woke == []
    await clock.advance(0.2)
    assert woke == [("a", start + 0.1), ("b", start + 0.2)] and clock.now() == start + 0.25
    assert await clock.run_until(lambda: False, timeout=1.0) is False and clock.now() == start + 1.25
    await asyncio.gather(*tasks)
