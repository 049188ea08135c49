"""CallPipeline driven frame by frame on a virtual clock, with the fake VAD, recogniser and
synthesiser and a scripted agent: turn-taking, barge-in, no-input, DTMF, handoff, re-asked
digits and line gaps, decided exactly as in a real call, in milliseconds and without models."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from voxgate.bundle.models import VoiceSettings
from voxgate.clock import VirtualClock
from voxgate.runtime.session import Expectation
from voxgate.testing.fakes import Answer, FakeEngines, FakeRecognizer, FakeVoice, ScriptedRuntime, silence
from voxgate.voice.call.conversation import RESTORE_WAIT_S
from voxgate.voice.call.endpointing import DIGITS_PROMPT
from voxgate.voice.pipeline import CallPipeline
from voxgate.voice.pool import SPECULATIVE, URGENT
from voxgate.voice.types import FRAME_BYTES, FRAME_MS

FRAME_S = FRAME_MS / 1000
ACCOUNT = Expectation("identify", "account_number", 8)
ORDER = Answer("Sure. What is your account number?", state="verifying:identify", expect=ACCOUNT)


class Line:
    """The caller's side of the line: what the agent sent, on the virtual clock."""

    def __init__(self, clock: VirtualClock) -> None:
        self.clock = clock
        self.audio_at: list[float] = []
        self.clears: list[float] = []
        self.marks: list[str] = []
        self.events: list[dict[str, Any]] = []
        self.hung_up: str | None = None

    async def send_audio(self, pcm16: bytes) -> None:
        self.audio_at.append(self.clock.now())

    async def send_clear(self) -> None:
        self.clears.append(self.clock.now())

    async def send_mark(self, name: str) -> None:
        self.marks.append(name)

    async def send_event(self, event: dict[str, Any]) -> None:
        self.events.append(event)

    async def hangup(self, reason: str) -> None:
        self.hung_up = reason


@dataclass
class Call:
    clock: VirtualClock
    voice: FakeVoice
    engines: FakeEngines
    runtime: ScriptedRuntime
    line: Line
    pipeline: CallPipeline
    turns: list[dict[str, Any]] = field(default_factory=list)

    @property
    def session(self) -> Any:
        return self.runtime.sessions[0]

    async def feed(self, pcm16: bytes, chunk_frames: int = 1) -> None:
        """Send audio in real time: `chunk_frames` frames at once, then their time passes."""
        chunk = chunk_frames * FRAME_BYTES
        for at in range(0, len(pcm16), chunk):
            piece = pcm16[at : at + chunk]
            for f in range(0, len(piece), FRAME_BYTES):
                await self.pipeline.feed_audio(piece[f : f + FRAME_BYTES])
            await self.clock.advance(chunk_frames * FRAME_S)

    async def quiet(self, ms: float) -> None:
        await self.feed(silence(ms))

    async def say(self, text: str, ms: float | None = None) -> None:
        await self.feed(self.voice.say(text, ms))

    async def until_turn(self, max_ms: float = 5000) -> dict[str, Any]:
        """Keep the line up with silence until the agent has taken the next turn."""
        before = len(self.session.heard)
        for _ in range(int(max_ms / FRAME_MS)):
            if len(self.session.heard) > before:
                return {"text": self.session.heard[-1][0], "at": self.clock.now()}
            await self.quiet(FRAME_MS)
        raise AssertionError("no turn")

    async def until_quiet(self) -> None:
        """Let the agent's reply play out, with the caller silent."""
        while self.pipeline.agent_speaking:
            await self.quiet(FRAME_MS)


async def start_call(
    answers: dict[str, Answer] | None = None, *, voice: VoiceSettings | None = None, **engine_args: Any
) -> Call:
    clock = VirtualClock()
    caller = FakeVoice()
    engines = FakeEngines(clock, FakeRecognizer(caller), **engine_args)
    runtime = ScriptedRuntime(clock, answers or {"order": ORDER}, voice=voice, understood={"where is my order"})
    line = Line(clock)
    turns: list[dict[str, Any]] = []
    pipeline = CallPipeline(runtime, engines, line, channel="test", clock=clock, on_turn=turns.append)  # type: ignore[arg-type]
    call = Call(clock, caller, engines, runtime, line, pipeline, turns)
    await pipeline.start()
    await call.until_quiet()  # the greeting plays
    return call


@pytest.fixture()
async def call() -> Any:
    started = await start_call()
    yield started
    await started.pipeline.close("test over")


# ---- turn-taking -----------------------------------------------------------------------------------


async def test_a_complete_request_ends_the_turn_after_the_complete_wait_using_the_early_recognition(
    call: Call,
) -> None:
    await call.say("Where is my order?")
    await call.until_turn()
    await call.until_quiet()
    turn = call.turns[-1]
    assert call.session.heard == [("Where is my order?", False)]
    assert turn["verdict"] == "complete" and turn["speculative_hit"] is True
    # 350 ms of silence after the last loud frame, on a 20 ms tick
    assert 350 <= turn["endpoint_ms"] < 350 + 2 * FRAME_MS
    assert turn["voice_to_voice_ms"] > turn["endpoint_ms"]
    assert call.line.marks[-1].endswith(":last")


async def test_words_without_a_full_stop_that_name_an_intent_are_complete() -> None:
    call = await start_call()
    try:
        await call.say("where is my order")  # no full stop, but the agent understands it
        await call.until_turn()
        await call.until_quiet()
        assert call.turns[-1]["verdict"] == "complete"
        assert "where is my order" in call.runtime.predictions
    finally:
        await call.pipeline.close("test over")


async def test_unfinished_words_wait_for_the_incomplete_window_and_the_caller_goes_on(call: Call) -> None:
    await call.say("I want to check my")  # trails off: the incomplete window (1200 ms)
    await call.quiet(900)  # longer than the complete and unsure windows
    assert call.session.heard == []
    await call.say("bill please.")
    await call.until_turn()
    heard = call.session.heard[-1][0]
    assert heard == "I want to check my bill please.", heard  # one turn, both parts


async def test_an_early_recognition_is_dropped_when_the_caller_speaks_again(call: Call) -> None:
    await call.say("I want to check my")
    await call.quiet(200)  # the early recognition starts in this pause
    assert any(priority in (SPECULATIVE, URGENT) for priority, _, _ in call.engines.recognitions)
    started = len(call.engines.recognitions)
    await call.say("bill please.")
    await call.until_turn()
    await call.until_quiet()
    turn = call.turns[-1]
    assert len(call.engines.recognitions) > started  # recognised again, with the rest of the words
    assert call.session.heard[-1][0].endswith("bill please.")
    assert turn["verdict"] == "complete"


async def test_a_short_noise_is_no_turn(call: Call) -> None:
    call.engines.recognizer.texts = [""]  # the recogniser hears no words in it
    await call.feed(call.voice.say("cough", ms=200))
    await call.quiet(1000)
    assert call.session.heard == [] and call.pipeline.stats.discarded_noise == 1


# ---- barge-in --------------------------------------------------------------------------------------


async def _while_agent_talks(call: Call) -> None:
    call.runtime.answers["long"] = Answer(
        "Let me read you the whole of our terms and conditions. They are long. Very long indeed."
    )
    await call.say("Read me something long.")
    await call.until_turn()
    while not call.line.audio_at or call.line.audio_at[-1] < call.clock.now() - 0.1:
        await call.quiet(FRAME_MS)  # until the reply is being sent
    assert call.pipeline.agent_speaking


async def test_real_words_over_the_agent_interrupt_it(call: Call) -> None:
    await _while_agent_talks(call)
    clears = len(call.line.clears)
    await call.say("No wait, stop, I need something else.")
    assert len(call.line.clears) == clears + 1
    assert call.pipeline.stats.barge_ins == 1 and call.pipeline.stats.backchannels == 0
    # the probes listened for acknowledgements first
    assert any(quick and prompt is not None for _, prompt, quick in call.engines.recognitions)
    await call.until_turn()
    assert call.session.heard[-1][0] == "No wait, stop, I need something else."


async def test_a_backchannel_over_the_agent_does_not_interrupt_it(call: Call) -> None:
    await _while_agent_talks(call)
    clears = len(call.line.clears)
    turns = len(call.session.heard)
    await call.say("Okay.", ms=260)  # longer than barge_in_min_speech_ms, heard as an acknowledgement
    await call.quiet(600)
    assert len(call.line.clears) == clears
    assert call.pipeline.stats.barge_ins == 0 and call.pipeline.stats.backchannels == 1
    assert len(call.session.heard) == turns  # no turn either


async def test_a_noise_over_the_agent_that_goes_on_interrupts_after_the_max_hold(call: Call) -> None:
    await _while_agent_talks(call)
    call.engines.asr_delay_s = 5.0  # the probes never answer in time
    clears = len(call.line.clears)
    await call.say("Okay.", ms=240)
    assert len(call.line.clears) == clears  # min speech reached, but the first probe is still out
    await call.say("Okay.", ms=500)
    assert len(call.line.clears) == clears + 1  # past barge_in_max_hold_ms (600)


# ---- no input, DTMF --------------------------------------------------------------------------------


async def test_silence_gets_a_reprompt_after_the_timeout_and_the_call_ends_after_the_reprompts() -> None:
    call = await start_call(voice=VoiceSettings(silence_timeout_ms=1000, silence_reprompts=1))
    try:
        await call.quiet(900)
        assert call.session.silences == 0
        await call.quiet(200)
        assert call.session.silences == 1  # reprompted
        await call.until_quiet()
        await call.quiet(1100)
        assert call.session.silences == 2 and call.session.ended
        await call.until_quiet()
        await call.quiet(100)
        assert call.line.hung_up == "no_input" and call.pipeline.closed
    finally:
        await call.pipeline.close("test over")


async def test_keyed_digits_end_at_hash_at_the_wanted_length_or_after_the_inter_digit_timeout(call: Call) -> None:
    call.runtime.fallback = ORDER  # the account number is asked for again and again
    await call.say("Where is my order?")
    await call.until_turn()
    await call.until_quiet()
    for digit in "123#":
        await call.pipeline.feed_dtmf(digit)
    await call.clock.advance(FRAME_S)
    assert call.session.heard[-1] == ("123", True)
    await call.until_quiet()
    for digit in "11815908":  # the account number has 8 digits: no '#' needed
        await call.pipeline.feed_dtmf(digit)
    await call.clock.advance(FRAME_S)
    assert call.session.heard[-1] == ("11815908", True)
    await call.until_quiet()
    await call.pipeline.feed_dtmf("4")
    await call.quiet(2400)
    assert call.session.heard[-1] != ("4", True)
    await call.quiet(200)  # dtmf_inter_digit_ms: 2500
    assert call.session.heard[-1] == ("4", True)
    assert call.turns[-1]["dtmf"] is True


async def test_a_key_over_the_agent_cuts_it_off(call: Call) -> None:
    await _while_agent_talks(call)
    clears = len(call.line.clears)
    await call.pipeline.feed_dtmf("1")
    await call.clock.settle()  # the cancelled reply stops
    assert len(call.line.clears) == clears + 1 and not call.pipeline.agent_speaking


# ---- handoff ---------------------------------------------------------------------------------------


class Takeover:
    def __init__(self) -> None:
        self.audio = 0
        self.digits: list[str] = []
        self.left: str | None = None

    async def caller_audio(self, pcm16: bytes) -> None:
        self.audio += len(pcm16)

    async def caller_dtmf(self, digit: str) -> None:
        self.digits.append(digit)

    async def caller_left(self, reason: str) -> None:
        self.left = reason


async def test_an_escalated_call_is_taken_over_and_its_audio_and_keys_go_to_the_takeover() -> None:
    takeover = Takeover()
    taken: list[CallPipeline] = []

    class Hook:
        def take_over(self, pipeline: CallPipeline) -> Takeover:
            taken.append(pipeline)
            return takeover

    call = await start_call({"person": Answer("Let me get you someone.", outcome="escalated")})
    call.pipeline._handoff = Hook()  # the channel passes it at construction
    try:
        await call.say("I want a person.")
        await call.until_turn()
        assert taken == [call.pipeline] and call.pipeline.takeover is takeover
        await call.quiet(400)
        await call.pipeline.feed_dtmf("5")
        assert takeover.audio >= 400 * 32 and takeover.digits == ["5"]
        assert call.line.hung_up is None  # the takeover decides when the call ends
    finally:
        await call.pipeline.close("caller left")
    assert takeover.left == "caller left"


# ---- re-asked digits -------------------------------------------------------------------------------


async def _reasked(call: Call) -> None:
    again = Answer("Sorry, that's not a valid account number. What is it?", state="verifying:identify", expect=ACCOUNT)
    call.runtime.answers = {"order": ORDER, r"^one one eight one five nine eight$": again}
    call.runtime.fallback = Answer("Thanks.", state="verifying:secret", expect=Expectation("secret", "pin", 4))
    await call.say("Where is my order?")
    await call.until_turn()
    await call.until_quiet()
    await call.say("one one eight one five nine eight")  # seven digits: one was lost
    await call.until_turn()
    await call.until_quiet()
    assert call.turns[-1]["verdict"] == "unsure"  # one digit short: answered, not waited on
    assert any(prompt == DIGITS_PROMPT for _, prompt, _ in call.engines.recognitions)


async def test_a_reasked_number_read_again_in_groups_is_waited_on(call: Call) -> None:
    await _reasked(call)
    await call.say("one one eight one")
    await call.quiet(700)  # longer than the unsure window (600), shorter than the incomplete one
    assert call.session.heard[-1][0] != "one one eight one"
    await call.say("five nine zero eight")
    await call.until_turn()
    assert call.session.heard[-1][0] == "one one eight one five nine zero eight"


async def test_an_answer_to_a_reasked_number_that_starts_differently_is_not_waited_on(call: Call) -> None:
    await _reasked(call)
    await call.say("two four four seven")  # the PIN, from a caller who did not hear the re-ask
    await call.until_turn(max_ms=900)
    await call.until_quiet()
    assert call.session.heard[-1][0] == "two four four seven"
    assert call.turns[-1]["verdict"] == "unsure"


async def test_a_number_a_digit_short_is_read_again_and_only_a_reading_that_adds_the_lost_digit_is_taken(
    call: Call,
) -> None:
    # the second reading's alternatives, best first: the first changes a digit that was heard (5 9 -> 5 6)
    call.engines.alternatives = [["1 1 8 1 5 6 0 8", "1 1 8 1 5 9 0 8", "1 1 8 1 5 9 8"]]
    await call.say("Where is my order?")
    await call.until_turn()
    await call.until_quiet()
    assert call.engines.rereads == []  # an open question is never read again
    await call.say("one one eight one five nine eight")  # seven digits: the "oh" was lost
    turn = await call.until_turn()
    assert call.session.heard[-1][0] == "1 1 8 1 5 9 0 8"
    assert call.engines.rereads == [DIGITS_PROMPT] and call.pipeline.stats.digits_restored == 1
    # read again in the pause the turn waits anyway, not after it; with the lost digit in hand the number is
    # whole, so the turn ends after the short pause for a complete answer (350 ms), not the unsure one (600)
    assert turn["at"] > call.engines.reread_at[0]
    await call.until_quiet()
    assert call.turns[-1]["verdict"] == "complete" and call.turns[-1]["endpoint_ms"] < 500


@pytest.mark.parametrize(("alternatives", "verdict"), [(["1 1 8 1 0 5 9 0"], "complete"), ([], "incomplete")])
async def test_two_lost_digits_that_a_second_reading_restores_are_not_waited_on_as_a_pause(
    call: Call, alternatives: list[str], verdict: str
) -> None:
    """Six digits of eight end in a digit, as a caller's pause between groups does (wait 1.2 s for the
    rest); a second reading that holds the two lost "oh"s shows the number was whole."""
    call.engines.alternatives = [alternatives]
    await call.say("Where is my order?")
    await call.until_turn()
    await call.until_quiet()
    await call.say("one one eight one five nine")
    await call.until_turn(max_ms=3000)
    await call.until_quiet()
    turn = call.turns[-1]
    assert turn["verdict"] == verdict
    if alternatives:
        assert call.session.heard[-1][0] == "1 1 8 1 0 5 9 0" and turn["endpoint_ms"] < 500
    else:
        assert call.session.heard[-1][0] == "one one eight one five nine" and turn["endpoint_ms"] >= 1100


async def _seven_digits_for_the_account(call: Call) -> None:
    """The caller asks about an order, then reads the account number with its "oh" lost; both turns play out."""
    await call.say("Where is my order?")
    await call.until_turn()
    await call.until_quiet()
    await call.say("one one eight one five nine eight")
    await call.until_turn()
    await call.until_quiet()


async def test_a_second_reading_still_busy_when_the_turn_ends_is_not_waited_for(call: Call) -> None:
    call.engines.alternatives = [["1 1 8 1 5 9 0 8"]]
    call.engines.readings_delay_s = 2.0  # the speech threads are busy: it would come far too late
    await _seven_digits_for_the_account(call)
    assert call.session.heard[-1][0] == "one one eight one five nine eight"  # asked again instead
    assert call.pipeline.stats.digits_unrestored == 1 and call.pipeline.stats.digits_restored == 0
    # the turn waited its pause (600 ms) and at most the repair's grace on top
    assert call.turns[-1]["asr_final_ms"] is not None
    assert call.turns[-1]["intent_ms"] - call.turns[-1]["asr_final_ms"] <= 1000 * RESTORE_WAIT_S + 2 * FRAME_MS


async def test_a_second_reading_that_does_not_repair_the_number_leaves_the_first(call: Call) -> None:
    call.engines.alternatives = [["1 1 8 1 5 6 0 8", "1 1 8 1 5 9 8"]]  # a changed digit, or still short
    again = Answer("Sorry, that's not a valid account number. What is it?", state="verifying:identify", expect=ACCOUNT)
    call.runtime.answers = {"order": ORDER, r"^one one eight one five nine eight$": again}
    await _seven_digits_for_the_account(call)
    assert call.session.heard[-1][0] == "one one eight one five nine eight"
    assert call.pipeline.stats.digits_restored == 0 and len(call.engines.rereads) == 1
    assert call.session.expecting() == ACCOUNT  # asked again for the account number
    await call.say("one one eight")  # five digits short: a new answer to ask again for, not a lost "oh"
    await call.until_turn(max_ms=3000)
    assert call.session.heard[-1][0] == "one one eight" and len(call.engines.rereads) == 1


# ---- line gaps -------------------------------------------------------------------------------------


async def test_media_that_stops_after_the_words_is_taken_as_silence_and_the_turn_ends(call: Call) -> None:
    await call.say("Where is my order?")
    stopped = call.clock.now()
    ok = await call.clock.run_until(lambda: bool(call.session.heard), timeout=3.0)  # no frames at all
    assert ok and call.session.heard[-1][0] == "Where is my order?"
    assert call.pipeline.stats.silence_filled_ms > 0
    assert call.clock.now() - stopped < 1.0  # the gap costs its detection time, not a wait forever


async def test_steady_chunked_media_is_never_padded(call: Call) -> None:
    await call.feed(call.voice.say("Where is my order?"), chunk_frames=5)
    for _ in range(30):
        await call.feed(silence(100), chunk_frames=5)
        if call.session.heard:
            break
    assert call.session.heard and call.pipeline.stats.silence_filled_ms == 0


async def test_media_held_up_in_a_pause_is_not_taken_for_silence(call: Call) -> None:
    await call.say("I want to check")
    await call.quiet(220)
    await call.clock.advance(0.150)  # nothing arrives: the rest of the pause is on its way
    await call.say("my bill please.")
    await call.until_turn()
    assert call.session.heard == [("I want to check my bill please.", False)]
    assert call.pipeline.stats.silence_filled_ms == 0
