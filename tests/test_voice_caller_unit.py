"""Client-side logic of the simulated caller: pacing, playback model, speech bounds, wire formats.

No voxgate server is involved. The last tests run the caller against a tiny scripted fake
agent on a loopback socket, to check what the caller *measures* against known server timing.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from voxgate.testing import caller as c
from voxgate.testing import voices as v
from voxgate.testing.human_callers import (
    TURNS_PER_CALL,
    HumanTurns,
    human_script,
    human_speech,
    prepare_human,
    read_recording,
)
from voxgate.testing.loadgen import (
    BenchParams,
    BenchReport,
    CallerProfile,
    CallRecord,
    DemoServer,
    call_failure,
    digits_as_words,
    percentiles,
    scenario_script,
    summarise,
)

#: how closely the caller's voice-to-voice time agrees with the fake agent's own: three 20 ms frames
#: (caller and agent share one event loop, on a machine the rest of the suite keeps busy)
CLOCK_AGREEMENT_MS = 60


# ---- pacing -----------------------------------------------------------------------------------------


async def test_pacer_keeps_20ms_cadence_without_drift() -> None:
    pacer = c.RealtimePacer()
    frames = 150  # three seconds
    times = [await pacer.wait() for _ in range(frames)]
    origin = times[0]
    # never early: frame n is released no sooner than origin + n * 20 ms
    assert all(t >= origin + i * 0.02 - 1e-6 for i, t in enumerate(times))
    # no drift: the last frame is on schedule, not 150 × (sleep overhead) late
    assert times[-1] - origin == pytest.approx((frames - 1) * 0.02, abs=0.015)
    intervals = np.diff(times)
    assert float(np.mean(intervals)) == pytest.approx(0.02, abs=0.0005)
    assert pacer.rebases == 0


async def test_pacer_rebases_after_a_stall_instead_of_bursting() -> None:
    now = [0.0]

    async def fake_sleep(seconds: float) -> None:
        now[0] += seconds

    pacer = c.RealtimePacer(clock=lambda: now[0], sleep=fake_sleep)
    for _ in range(5):
        await pacer.wait()
    assert now[0] == pytest.approx(0.08)
    now[0] += 1.0  # the event loop stalled for a second
    released = await pacer.wait()
    assert pacer.rebases == 1
    following = [await pacer.wait() for _ in range(3)]
    # after the stall frames come at 20 ms again, not as a burst of the 50 missed frames
    assert np.diff([released, *following]) == pytest.approx([0.02, 0.02, 0.02])


# ---- playback model ------------------------------------------------------------------------------------


def tone(seconds: float, rate: int = 8000, amplitude: int = 8000) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * 440 * t)).astype(np.int16)


def test_playback_clock_plays_back_to_back_from_first_arrival() -> None:
    clock = c.PlaybackClock(rate=8000)
    assert clock.add_audio(10.0, tone(1.0)) == 10.0
    # the server runs ahead of real time: the next chunk is queued behind the first
    assert clock.add_audio(10.1, tone(0.5)) == pytest.approx(11.0)
    assert clock.play_end == pytest.approx(11.5)  # first arrival + total duration
    assert clock.playing(11.4) and not clock.playing(11.5)
    # an underrun: audio that arrives after playback ended starts when it arrives
    assert clock.add_audio(12.0, tone(0.2)) == 12.0
    track = clock.render(10.0, 12.4)
    assert track.size == int(2.4 * 8000)
    assert not track[int(1.6 * 8000) : int(1.9 * 8000)].any()  # silence in the gap
    assert clock.heard_samples() == int(1.7 * 8000)


def test_marks_fall_due_when_the_audio_before_them_has_played() -> None:
    clock = c.PlaybackClock(rate=8000)
    clock.add_audio(0.0, tone(1.0))
    assert clock.add_mark(0.01, "1:0") == pytest.approx(1.0)
    clock.add_audio(0.02, tone(0.5))
    assert clock.add_mark(0.03, "2:last") == pytest.approx(1.5)
    assert clock.due_marks(0.99) == []
    assert clock.due_marks(1.0) == ["1:0"]
    assert clock.due_marks(1.49) == []
    assert clock.due_marks(1.6) == ["2:last"]
    # a mark sent while nothing is queued is due at once
    assert clock.add_mark(2.0, "3:last") == 2.0
    assert clock.due_marks(2.0) == ["3:last"]


def test_clear_drops_unplayed_audio_and_returns_pending_marks() -> None:
    clock = c.PlaybackClock(rate=8000)
    clock.add_audio(0.0, tone(1.0), reply=0)
    clock.add_mark(0.0, "1:0")
    clock.add_audio(0.0, tone(1.0), reply=0)
    clock.add_mark(0.0, "2:last")
    assert clock.due_marks(1.0) == ["1:0"]
    marks, cut = clock.clear(1.25)
    assert marks == ["2:last"]  # Twilio returns pending marks on clear
    assert cut == {0}
    assert clock.play_end == 1.25 and not clock.playing(1.25)
    assert clock.heard_samples(0) == int(1.25 * 8000)
    assert clock.cleared_samples == int(0.75 * 8000)
    assert clock.received_samples[0] == 16000
    # new audio after the clear plays immediately
    assert clock.add_audio(1.3, tone(0.1), reply=1) == 1.3


# ---- caller speech bounds ------------------------------------------------------------------------------


def test_end_of_speech_detection_on_a_synthesised_utterance() -> None:
    speech = np.asarray(v.synthesize_caller("where is my order", "pico-en-GB"))
    own = c.speech_bounds(speech)
    assert own is not None
    pad = np.zeros(8000, dtype=np.int16)  # 500 ms = 25 frames
    padded = np.concatenate([pad, speech, pad])
    first, last = c.speech_bounds(padded)  # type: ignore[misc]
    assert first == own[0] + 25 and last == own[1] + 25
    speech_frames = speech.size / 320
    assert 25 <= first < 25 + 10  # speech starts within 200 ms of the padding
    # the last voiced frame is inside the utterance and near its end (TTS trails ~0.1-0.3 s of quiet)
    assert 25 + speech_frames - 25 <= last < 25 + speech_frames
    # a phone line's noise 30 dB below the speech does not move the end by more than 60 ms
    noisy = v.add_noise(padded, snr_db=30, seed=3)
    assert abs(c.speech_bounds(noisy)[1] - last) <= 3  # type: ignore[index]
    assert c.speech_bounds(np.zeros(16000, dtype=np.int16)) is None


def test_prepared_utterance_knows_where_speech_ends() -> None:
    utt = c.prepare_utterance("no thanks that's all", "pico-en-US", "native")
    assert all(isinstance(f, bytes) and len(f) == 640 for f in utt.frames)
    assert 0 <= utt.first_voiced < utt.last_voiced < len(utt.frames)
    audio = np.frombuffer(b"".join(utt.frames), dtype=np.int16)  # type: ignore[arg-type]
    rms = c.frame_rms(audio, 320)
    assert rms[utt.last_voiced] > rms.max() * 10 ** (c.SPEECH_FLOOR_DB / 20)
    assert (rms[utt.last_voiced + 1 :] < rms.max() * 10 ** (c.SPEECH_FLOOR_DB / 20)).all()


# ---- μ-law and the Twilio wire ---------------------------------------------------------------------------


def test_mulaw_matches_the_g711_reference() -> None:
    everything = np.arange(-32768, 32768, dtype=np.int32).astype(np.int16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        audioop = pytest.importorskip("audioop")
        assert v.mulaw_encode(everything) == audioop.lin2ulaw(everything.tobytes(), 2)
        assert v.mulaw_decode(bytes(range(256))).tobytes() == audioop.ulaw2lin(bytes(range(256)), 2)
    assert v.mulaw_decode(bytes([v.MULAW_SILENCE]))[0] == 0
    # round trip: μ-law error is about 1/16 of the magnitude (3% plus the small-signal step)
    back = v.mulaw_decode(v.mulaw_encode(everything)).astype(np.int32)
    assert (np.abs(back - everything) <= np.abs(everything.astype(np.int32)) // 16 + 140).all()


def test_twilio_messages_round_trip() -> None:
    wire = c.TwilioWire("harbor-support")
    connected, start = (json.loads(m) for m in wire.opening())
    assert connected == {"event": "connected", "protocol": "Call", "version": "1.0.0"}
    assert start["event"] == "start" and start["sequenceNumber"] == "1"
    assert start["streamSid"] == start["start"]["streamSid"] == wire.stream_sid
    assert start["start"]["callSid"].startswith("CA") and start["start"]["accountSid"].startswith("AC")
    assert start["start"]["tracks"] == ["inbound"]
    assert start["start"]["mediaFormat"] == {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}
    assert start["start"]["customParameters"]["agent"] == "harbor-support"

    speech = np.asarray(v.synthesize_caller("four two one seven", "pico-en-GB"))
    utt = c.prepare_audio(speech, "twilio", "pin")
    messages = [json.loads(wire.media(f)) for f in utt.frames]
    assert [m["sequenceNumber"] for m in messages[:3]] == ["2", "3", "4"]
    assert [m["media"]["chunk"] for m in messages[:3]] == ["1", "2", "3"]
    assert [m["media"]["timestamp"] for m in messages[:3]] == ["0", "20", "40"]
    assert all(m["media"]["track"] == "inbound" and m["streamSid"] == wire.stream_sid for m in messages)
    payloads = [base64.b64decode(m["media"]["payload"]) for m in messages]
    assert all(len(p) == 160 for p in payloads)  # 20 ms of 8 kHz μ-law
    decoded = v.mulaw_decode(b"".join(payloads)).astype(np.float64)
    reference = v.resample(speech, 16000, 8000).astype(np.float64)
    n = reference.size
    snr = 10 * np.log10(np.sum(reference**2) / np.sum((decoded[:n] - reference) ** 2))
    assert snr > 30  # only μ-law quantisation between what was meant and what was sent
    assert not decoded[n:].any()  # the last frame is padded with silence

    dtmf = json.loads(wire.dtmf("5"))
    assert dtmf["event"] == "dtmf" and dtmf["dtmf"] == {"track": "inbound_track", "digit": "5"}
    mark = json.loads(wire.mark("3:last"))
    assert mark["event"] == "mark" and mark["mark"] == {"name": "3:last"}
    stop = json.loads(wire.stop())
    assert stop["event"] == "stop" and stop["stop"]["callSid"] == wire.call_sid
    seqs = [int(m["sequenceNumber"]) for m in (dtmf, mark, stop)]
    assert seqs == sorted(seqs) and len(set(seqs)) == 3


def test_twilio_parses_server_messages_and_rejects_surprises() -> None:
    wire = c.TwilioWire("harbor-support")
    audio = tone(0.02)
    payload = base64.b64encode(v.mulaw_encode(audio)).decode()
    event = wire.parse(json.dumps({"event": "media", "streamSid": wire.stream_sid, "media": {"payload": payload}}))
    assert event.kind == "audio" and event.audio is not None and event.audio.size == 160
    assert np.abs(event.audio.astype(int) - audio).max() < 400
    assert wire.parse(json.dumps({"event": "mark", "streamSid": wire.stream_sid, "mark": {"name": "x"}})).name == "x"
    assert wire.parse(json.dumps({"event": "clear", "streamSid": wire.stream_sid})).kind == "clear"
    for bad in (
        "{not json",
        json.dumps([1]),
        json.dumps({"event": "media", "media": {"payload": "@@@"}}),
        json.dumps({"event": "clear", "streamSid": "MZother"}),
        b"\x00\x01",
    ):
        with pytest.raises(c.WireError):
            wire.parse(bad)


def test_native_wire() -> None:
    wire = c.NativeWire()
    assert json.loads(wire.opening()[0]) == {"type": "start", "sample_rate": 16000, "encoding": "pcm16"}
    assert json.loads(wire.dtmf("#")) == {"type": "dtmf", "digit": "#"}
    assert json.loads(wire.mark("1:last")) == {"type": "mark", "name": "1:last"}
    assert json.loads(wire.stop()) == {"type": "stop"}
    assert wire.parse(np.ones(320, dtype=np.int16).tobytes()).audio.size == 320  # type: ignore[union-attr]
    assert wire.parse(json.dumps({"type": "ended", "outcome": "resolved"})).data["outcome"] == "resolved"
    with pytest.raises(c.WireError):
        wire.parse(b"\x00\x01\x02")


def test_voice_url_and_turn_script() -> None:
    assert c.voice_url("http://127.0.0.1:8600", "twilio", "a") == "ws://127.0.0.1:8600/twilio/a"
    assert c.voice_url("ws://127.0.0.1:8600/", "native", "a") == "ws://127.0.0.1:8600/ws/voice/a"
    assert c.voice_url("wss://h/custom/path", "native", "a") == "wss://h/custom/path"
    a, b = (c.Utterance(x, ("",), 0, 0, 20) for x in "ab")
    turns = c.build_turns([a, b], {1: "1234#"})
    assert [(t.utterance.label if t.utterance else t.dtmf) for t in turns] == ["a", "1234#", "b"]
    with pytest.raises(ValueError):
        c.build_turns([a], {5: "1"})
    with pytest.raises(ValueError):
        c.build_turns([a], {0: "12x"})


def test_scenarios_and_failure_classification() -> None:
    assert digits_as_words("11815908") == "one one eight one five nine oh eight"
    assert digits_as_words("2040", zero="zero") == "two zero four zero"
    profile = CallerProfile(0, "11815908", "6468", "22809", "pico-en-GB", "oh")
    assert scenario_script("order_status", profile)[1:3] == [
        "one one eight one five nine oh eight",
        "six four six eight",
    ]
    assert scenario_script("outage", profile)[1] == "two two eight oh nine"
    report = c.CallReport(
        url="u",
        protocol="twilio",
        agent="a",
        voice="v",
        turns=[
            c.TurnReport(index=0, said="x", speech_end_s=1.0, replied=True, reply_received_ms=900),
            c.TurnReport(index=1, said="y", speech_end_s=3.0),
        ],
    )
    assert call_failure(report) == "no reply to turn 1"
    report.turns[1].speech_end_s = None
    report.closed_by = "server"
    assert call_failure(report) == "server hung up before turn 1"
    report.close_reason = "escalated"
    assert call_failure(report) == "server hung up before turn 1 (escalated)"
    report.outcome = "resolved"  # the native protocol's own outcome wins
    assert call_failure(report) == "server hung up before turn 1 (resolved)"
    report.refused = True
    assert call_failure(report) is None
    p = percentiles([100.0, 200.0, 300.0, 400.0])
    assert (p.n, p.p50, p.max) == (4, 250.0, 400.0)


def test_wav_parsing_tolerates_streamed_headers(tmp_path: Path) -> None:
    audio = tone(0.3, rate=16000)
    data = bytearray(v.to_wav_bytes(audio))
    data[40:44] = b"\xff\xff\xff\xff"  # what `espeak-ng --stdout` writes: an unknown data size
    parsed, rate = v.parse_wav(bytes(data))
    assert rate == 16000 and np.array_equal(parsed, audio)
    v.write_wav(tmp_path / "x.wav", audio)
    assert np.array_equal(v.read_wav(tmp_path / "x.wav"), audio)
    assert v.read_wav(tmp_path / "x.wav", rate=8000).size == audio.size // 2


# ---- against a scripted fake agent on loopback ------------------------------------------------------------


class FakeTwilioAgent:
    """Answers like a Twilio-side agent with known timing: tone replies, marks, optional clear.

    End of the caller's turn = 200 ms of quiet after voiced frames; the reply starts
    `reply_delay_s` later with 40 ms of silence then a tone, so the true voice-to-voice time at
    the server is known.
    """

    def __init__(
        self,
        reply_s: float = 0.5,
        reply_delay_s: float = 0.3,
        barge_clear_ms: float | None = None,
        hangup_after: int | None = None,
        garbage_after: int | None = None,
        cut_in_after_ms: float | None = None,
    ):
        self.cut_in_after_ms = cut_in_after_ms  # also reply this far into a caller's speech (cutting in)
        self.hangup_after = hangup_after  # close the call (1000, "resolved") once this reply has played
        self.garbage_after = garbage_after  # send invalid JSON after this many replies
        self.reply_s = reply_s
        self.reply_delay_s = reply_delay_s
        self.barge_clear_ms = barge_clear_ms
        self.events: list[str] = []
        self.mark_sent: dict[str, tuple[float, float]] = {}  # name -> (sent at, audio queued seconds)
        self.mark_back: dict[str, float] = {}
        self.truth_v2v: list[float] = []
        self.clear_sent_at: float | None = None
        self.sid = ""
        self.quiet_rms: list[float] = []  # level of every frame not loud enough to be speech

    async def _send_audio(self, ws: Any, seconds: float, name: str) -> float:
        frames = [np.zeros(160, dtype=np.int16)] * 2 + list(tone(seconds).reshape(-1, 160))
        first_tone_at = 0.0
        for i, frame in enumerate(frames):
            payload = base64.b64encode(v.mulaw_encode(frame)).decode()
            await ws.send(json.dumps({"event": "media", "streamSid": self.sid, "media": {"payload": payload}}))
            if i == 2:
                first_tone_at = time.monotonic()
        self.mark_sent[name] = (time.monotonic(), len(frames) * 0.02)
        await ws.send(json.dumps({"event": "mark", "streamSid": self.sid, "mark": {"name": name}}))
        return first_tone_at

    async def handler(self, ws: Any) -> None:
        voiced_run = quiet_run = 0
        last_voiced_at = 0.0
        speaking_until = 0.0
        replies = 0
        async for raw in ws:
            msg = json.loads(raw)
            event = msg["event"]
            self.events.append(event)
            if event == "start":
                self.sid = msg["streamSid"]
                speaking_until = time.monotonic() + 0.64
                await self._send_audio(ws, 0.6, "1:last")
            elif event == "mark":
                self.mark_back[msg["mark"]["name"]] = time.monotonic()
                if self.hangup_after is not None and replies >= self.hangup_after:
                    await ws.close(1000, "resolved")
                    return
            elif event == "stop":
                break
            elif event == "media":
                pcm = v.mulaw_decode(base64.b64decode(msg["media"]["payload"]))
                level = float(np.sqrt(np.mean(pcm.astype(np.float64) ** 2)))
                loud = level > 300
                if not loud:
                    self.quiet_rms.append(level)
                now = time.monotonic()
                if loud:
                    voiced_run += 1
                    quiet_run = 0
                    last_voiced_at = now
                    if self.cut_in_after_ms is not None and voiced_run * 20 == self.cut_in_after_ms:
                        await self._send_audio(ws, 0.2, "cut-in")
                    if (
                        self.barge_clear_ms is not None
                        and now < speaking_until
                        and self.clear_sent_at is None
                        and voiced_run * 20 >= self.barge_clear_ms
                    ):
                        self.clear_sent_at = now
                        speaking_until = now
                        await ws.send(json.dumps({"event": "clear", "streamSid": self.sid}))
                elif voiced_run:
                    quiet_run += 1
                    if quiet_run >= 10:
                        voiced_run = quiet_run = 0
                        await asyncio.sleep(self.reply_delay_s)
                        replies += 1
                        first = await self._send_audio(ws, self.reply_s, f"{replies + 1}:last")
                        speaking_until = time.monotonic() + self.reply_s + 0.04
                        self.truth_v2v.append((first - last_voiced_at) * 1000)
                        if self.garbage_after is not None and replies >= self.garbage_after:
                            await ws.send("{this is not json")


async def _serve(agent: FakeTwilioAgent) -> tuple[Any, str]:
    from websockets.asyncio.server import serve

    server = await serve(agent.handler, "127.0.0.1", 0, compression=None)
    port = server.sockets[0].getsockname()[1]
    return server, f"ws://127.0.0.1:{port}"


async def _call_fake(agent: FakeTwilioAgent, says: list[str], **kwargs: Any) -> c.CallReport:
    """One call by `run_call` (no transcription) to `agent` served on loopback for the call's length."""
    server, url = await _serve(agent)
    try:
        return await c.run_call(url, says=says, transcribe=False, **kwargs)
    finally:
        server.close()


def _bench_report(url: str | None, scenario: str = "order_status") -> BenchReport:
    """An empty bench report for one caller, to summarise calls into."""
    params = BenchParams(
        url=url,
        calls=1,
        duration_s=1,
        protocol="twilio",
        scenario=scenario,
        ramp_s=0,
        seed=7,
        agent="harbor-support",
        voices=[],
        started_server=False,
    )
    return BenchReport(params=params)


async def test_caller_measures_voice_to_voice_and_echoes_marks_on_time(tmp_path: Path) -> None:
    agent = FakeTwilioAgent(reply_s=0.5, reply_delay_s=0.3)
    server, url = await _serve(agent)
    try:
        report = await c.run_call(
            url,
            says=["where is my order", "no thanks"],
            gap_ms=300,
            timeout_s=30,
            transcribe=False,
            record_path=tmp_path / "heard.wav",
        )
    finally:
        server.close()
    assert report.error is None, report.error
    assert report.closed_by == "caller" and agent.events[-1] == "stop"
    assert agent.events[:2] == ["connected", "start"]
    assert [t.replied for t in report.turns] == [True, True]
    assert [t.cut_in for t in report.turns] == [False, False]  # it waited for the caller's end of turn
    for turn, truth in zip(report.turns, agent.truth_v2v):
        assert turn.voice_to_voice_ms is not None
        # the caller's clock agrees with the server's known timing within a few frames
        assert abs(turn.voice_to_voice_ms - truth) < CLOCK_AGREEMENT_MS, (turn.voice_to_voice_ms, truth)
        assert turn.reply_audio_ms == pytest.approx(540, abs=1)
        assert turn.speech_end_s is not None and turn.first_reply_audio_s is not None
    # each mark came back when the audio before it had played (20 ms pacing granularity)
    assert set(agent.mark_back) == {"1:last", "2:last", "3:last"}
    for name, (sent_at, queued_s) in agent.mark_sent.items():
        delay = agent.mark_back[name] - sent_at
        assert queued_s - 0.03 <= delay <= queued_s + 0.06, (name, delay, queued_s)
    assert report.timings.greeting_audio_ms == pytest.approx(640, abs=1)
    assert report.timings.pacer_rebases == 0
    heard = v.read_wav(tmp_path / "heard.wav")
    assert heard.size == pytest.approx(report.timings.duration_s * 16000, rel=0.02)


async def test_an_agent_that_answers_before_the_caller_has_finished_is_counted_as_a_cut_in() -> None:
    report = await _call_fake(
        FakeTwilioAgent(cut_in_after_ms=300), ["where is my order", "no thanks"], gap_ms=300, timeout_s=30
    )
    assert report.error is None, report.error
    assert [t.cut_in for t in report.turns] == [True, True] and all(t.replied for t in report.turns)
    records = [CallRecord(caller=0, call=0, scenario="order_status", report=report)]
    bench = _bench_report(report.url)
    summarise(bench, records)
    assert (bench.cut_ins, bench.cut_in_rate) == (2, 1.0)


def test_line_noise_is_at_the_level_asked_for() -> None:
    expected = 32768 * 10 ** (-50 / 20)
    noise = v.line_noise(16000, -50, seed=1)
    assert float(np.sqrt(np.mean(noise.astype(np.float64) ** 2))) == pytest.approx(expected, rel=0.06)
    assert not np.array_equal(noise, v.line_noise(16000, -50, seed=2))
    # a degraded utterance carries the same floor where it is silent
    degraded = v.degrade(np.zeros(16000, dtype=np.int16), v.Degradation(telephone=False, noise_dbfs=-50))
    assert float(np.sqrt(np.mean(degraded.astype(np.float64) ** 2))) == pytest.approx(expected, rel=0.06)


async def test_a_noisy_line_carries_noise_between_words_and_is_still_timed_right() -> None:
    agent = FakeTwilioAgent(reply_s=0.5, reply_delay_s=0.3)
    server, url = await _serve(agent)
    try:
        report = await c.run_call(
            url, says=["where is my order"], gap_ms=300, timeout_s=30, transcribe=False, line_noise_dbfs=-50
        )
    finally:
        server.close()
    assert report.error is None, report.error
    assert report.turns[0].replied and agent.truth_v2v
    assert abs(report.turns[0].voice_to_voice_ms - agent.truth_v2v[0]) < CLOCK_AGREEMENT_MS  # type: ignore[operator]
    # μ-law at 8 kHz: the noise floor arrives at about its level, never as digital silence
    quiet = np.array(agent.quiet_rms)
    assert quiet.size > 50
    assert float(np.median(quiet)) == pytest.approx(32768 * 10 ** (-50 / 20), rel=0.25)
    assert (quiet > 0).all()


async def test_barge_in_probe_times_the_clear() -> None:
    agent = FakeTwilioAgent(reply_s=4.0, reply_delay_s=0.1, barge_clear_ms=200)
    server, url = await _serve(agent)
    try:
        result = await c.barge_in_probe(
            url, "wait wait I need a person", says=["where is my order"], after_ms=500, gap_ms=300, timeout_s=40
        )
    finally:
        server.close()
    assert result.call.error is None, result.call.error
    assert result.agent_playing_at_onset
    assert result.onset_to_clear_ms is not None
    # the fake clears on receiving its 10th voiced frame (200 ms of voice), which the caller sent
    # 180 ms after the onset frame: a frame of pacing jitter either way is not a wrong measurement
    assert 160 <= result.onset_to_clear_ms <= 320, result.onset_to_clear_ms
    assert result.call.turns[0].interrupted
    assert not any(t.cut_in for t in result.call.turns)  # the caller spoke over the agent, not the reverse
    # the cleared reply counts only what was heard before the clear
    assert result.call.turns[0].reply_audio_ms < 2000
    assert result.call.timings.clears == 1
    # the mark pending at the clear was returned at once
    assert agent.clear_sent_at is not None
    assert agent.mark_back["2:last"] - agent.clear_sent_at < 0.05


async def test_unreachable_server_is_reported_not_raised() -> None:
    report = await c.run_call("ws://127.0.0.1:9", says=["hello"], timeout_s=5, transcribe=False)
    assert report.error and "cannot connect" in report.error
    assert not report.ok


async def test_server_hangup_is_recorded_and_the_caller_does_not_send_stop() -> None:
    agent = FakeTwilioAgent(hangup_after=1)
    report = await _call_fake(agent, ["no thanks that's all", "this line is never said"], gap_ms=200, timeout_s=20)
    assert report.error is None
    assert report.closed_by == "server" and report.close_code == 1000 and report.close_reason == "resolved"
    assert "stop" not in agent.events
    assert report.turns[0].replied and report.turns[0].reply_audio_ms > 0
    assert report.turns[1].speech_end_s is None and not report.ok
    # the Twilio protocol carries no outcome: the close reason says why the agent hung up
    assert call_failure(report) == "server hung up before turn 1 (resolved)"


async def test_bad_json_from_the_server_is_an_error_in_the_report() -> None:
    agent = FakeTwilioAgent(garbage_after=1)
    report = await _call_fake(agent, ["hello there", "never said"], gap_ms=200, timeout_s=20)
    assert report.error is not None and report.error.startswith("protocol error: invalid JSON")
    assert report.closed_by == "caller" and agent.events[-1] == "stop"


def test_cli_dtmf_option_and_bench_summary() -> None:
    from voxgate.cli.voice import _parse_dtmf

    assert _parse_dtmf(["1:11815908", "2:6468#"]) == {1: "11815908", 2: "6468#"}
    good = c.CallReport(
        url="u",
        protocol="twilio",
        agent="a",
        voice="v",
        closed_by="server",
        close_reason="resolved",
        turns=[c.TurnReport(index=0, speech_end_s=1.0, replied=True, reply_received_ms=500, voice_to_voice_ms=800.0)],
    )
    busy = c.CallReport(url="u", protocol="twilio", agent="a", voice="v", refused=True)
    broken = c.CallReport(
        url="u", protocol="twilio", agent="a", voice="v", error="server closed the call with code 1011"
    )
    report = _bench_report(None, "outage")
    summarise(report, [CallRecord(0, i, "outage", r) for i, r in enumerate([good, busy, broken, good])])
    assert (report.calls_total, report.calls_completed, report.calls_refused, report.calls_failed) == (4, 2, 1, 1)
    assert report.voice_to_voice_ms.n == 2 and report.voice_to_voice_ms.p50 == 800.0
    assert report.outcomes == {"resolved": 2}
    assert report.failure_reasons == {"server closed the call with code ####": 1}
    from voxgate.cli.voice import _print_bench

    lines: list[str] = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("voxgate.cli.voice.typer.echo", lambda text="": lines.append(str(text)))
        _print_bench(report)
        refused = [line for line in lines if "busy message" in line]
        summarise(full := _bench_report(None, "outage"), [CallRecord(0, 0, "outage", good)])
        lines.clear()
        _print_bench(full)
    assert len(refused) == 1 and f"VOXGATE_VOICE_CAPACITY of at least {report.params.calls}" in refused[0]
    assert not any("busy message" in line for line in lines), lines  # none refused: no hint


def test_the_bench_counts_account_numbers_and_pins_heard_exactly_on_the_first_try_per_voice() -> None:
    """From the server's transcript of each digit line (native protocol): exact, short, and whole calls
    whose account number and PIN were both heard exactly; a call without transcripts is not counted."""

    def profile(voice: str, zero: str = "oh") -> CallerProfile:
        return CallerProfile(0, account_number="11815908", pin="0468", postcode="90210", voice=voice, zero=zero)

    def call(p: CallerProfile, account_heard: str | None, pin_heard: str | None) -> c.CallReport:
        lines = scenario_script("order_status", p)
        heard = [None, account_heard, pin_heard, None]
        return c.CallReport(
            url="u",
            protocol="native",
            agent="a",
            voice=p.voice,
            closed_by="server",
            close_reason="resolved",
            turns=[
                c.TurnReport(index=i, said=line, server_heard=h, replied=True, speech_end_s=1.0)
                for i, (line, h) in enumerate(zip(lines, heard))
            ],
        )

    kal, slt = profile("flite-kal"), profile("flite-slt", zero="zero")
    records = [
        # both exact, however the recogniser wrote them ("eleven" for "one one" is read as 11)
        CallRecord(0, 0, "order_status", call(kal, "eleven eight one five nine oh eight", "oh four six eight"), kal),
        CallRecord(0, 1, "order_status", call(kal, "1 1 8 1 5 9 0 0 8", "0 4 6 8"), kal),  # a digit too many
        CallRecord(1, 0, "order_status", call(slt, "1181598", "0468"), slt),  # an "oh" dropped: short
        CallRecord(1, 1, "order_status", call(slt, None, None), slt),  # twilio-like: no transcript
        CallRecord(1, 2, "order_status", call(slt, "11815908", "0478"), slt),  # the PIN misheard
    ]
    report = _bench_report(None)
    summarise(report, records)
    assert report.digits["flite-kal"].model_dump() == {
        "readings": 4,
        "exact": 3,
        "short": 0,
        "calls": 2,
        "verified_first_try": 1,
        "first_try_rate": 0.5,
    }
    assert report.digits["flite-slt"].model_dump() == {
        "readings": 4,
        "exact": 2,
        "short": 1,
        "calls": 2,
        "verified_first_try": 0,
        "first_try_rate": 0.0,
    }
    assert report.digits["flite-kal"].first_try_rate == 0.5
    assert report.model_dump(mode="json")["digits"]["flite-slt"]["first_try_rate"] == 0.0  # in the bench's JSON
    assert report.digits_first_try_rate == 0.25
    # a run with no transcripts (a Twilio stream) measures nothing rather than a rate of zero, and says so
    silent = _bench_report(None)
    summarise(silent, [CallRecord(0, 0, "order_status", call(kal, None, None), kal)])
    assert silent.digits_first_try_rate is None and silent.digits == {}
    from voxgate.cli.voice import _print_bench

    lines: list[str] = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("voxgate.cli.voice.typer.echo", lambda text="": lines.append(str(text)))
        _print_bench(silent)
        _print_bench(report)
    assert any("account numbers and PINs: not measured" in line for line in lines), lines
    assert any("flite-kal 1/2 (50%), flite-slt 0/2 (0%); all 25%" in line for line in lines), lines


def test_the_bench_waits_for_the_demo_to_say_it_is_ready(tmp_path: Path) -> None:
    # served is not enough: the end of a first start (the released agent loaded, its prompts
    # rendered) would run under the first callers and show in their p95
    log = tmp_path / "server.log"
    server = DemoServer(log_path=log)
    assert not server.said_ready()  # no log yet
    log.write_text("First start: releasing harbor-support through the pipeline…\n  released in 62 s\n")
    assert not server.said_ready()
    log.write_text(log.read_text() + "ready: harbor-support sha256:73… answers calls on prod at http://x/phone\n")
    assert server.said_ready()


# ---- human callers ------------------------------------------------------------------------------


def test_the_human_set_is_recorded_people_with_their_words() -> None:
    people = human_speech()
    assert len(people) >= 12 and len({p.id for p in people}) == len(people)
    assert {"digits", "long sentence", "phrase", "restart", "command"} <= {p.kind for p in people}
    for said in people:
        audio = read_recording(said.path)
        seconds = audio.size / v.SAMPLE_RATE
        assert 0.8 < seconds < 15, (said.id, seconds)  # a turn's length, read at the right rate
        assert float(np.sqrt(np.mean(audio.astype(np.float64) ** 2))) > 100, said.id  # speech, not silence
        assert said.text and said.text == said.text.lower()


def test_a_missing_human_set_says_which_package_holds_it(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="apt install pocketsphinx-testdata"):
        human_speech(tmp_path / "absent")


def test_each_human_call_draws_distinct_recordings_reproducibly() -> None:
    people = human_speech()
    first = human_script(people, seed=7, caller=0, call=0)
    assert first == human_script(people, seed=7, caller=0, call=0)
    assert len(first) == TURNS_PER_CALL and len({p.id for p in first}) == TURNS_PER_CALL
    draws = {tuple(p.id for p in human_script(people, 7, caller, call)) for caller in range(4) for call in range(3)}
    assert len(draws) >= 10  # callers and their calls do not all say the same


def test_human_turns_count_replies_cut_ins_and_the_words_the_server_heard() -> None:
    people = {p.id: p for p in human_speech()}
    digits, command = people["tidigits-2934z"], people["goforward"]
    report = c.CallReport(url="ws://x", protocol="native", agent="harbor-support", voice="human")
    report.turns = [
        c.TurnReport(index=0, said=digits.id, speech_start_s=1.0, replied=True, server_heard="2 9 3 4 0"),
        c.TurnReport(
            index=1, said=command.id, speech_start_s=3.0, replied=True, cut_in=True, server_heard="go forward"
        ),
        c.TurnReport(index=2, said=command.id, speech_start_s=None),  # never spoken: the agent hung up
        c.TurnReport(index=3, said="where is my order", speech_start_s=5.0, replied=True),  # not a human turn
    ]
    turns = HumanTurns()
    turns.add(report, people)
    assert (turns.turns, turns.replied, turns.cut_ins, turns.transcribed) == (2, 2, 1, 2)
    # digits heard as numerals are the words said; "ten meters" was not heard: two deletions of nine words
    assert (turns.word_errors, turns.words, turns.wer) == (2, 9, round(2 / 9, 4))
    assert turns.by_kind == {"digits": 1, "command": 1}


async def test_a_human_recording_goes_over_the_line_as_any_caller_s_speech() -> None:
    said = next(p for p in human_speech() if p.kind == "restart")  # a pause inside it
    utterance = prepare_human(said.path, said.id, "twilio", None)
    assert utterance is prepare_human(said.path, said.id, "twilio", None)  # encoded once per run
    agent = FakeTwilioAgent(reply_s=0.3, reply_delay_s=0.3)
    server, url = await _serve(agent)
    try:
        report = await c.run_call(url, prepared=[utterance], gap_ms=300, timeout_s=40, transcribe=False)
    finally:
        server.close()
    assert report.error is None, report.error
    turn = report.turns[0]
    assert turn.said == said.id and turn.replied and not turn.cut_in
    assert turn.speech_start_s is not None and turn.speech_end_s is not None
    # the whole sentence went out: its speech spans most of the recording
    spoken = turn.speech_end_s - turn.speech_start_s
    assert spoken > 0.7 * read_recording(said.path).size / v.SAMPLE_RATE
