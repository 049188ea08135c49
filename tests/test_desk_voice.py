"""The live-agent desk with real voice calls, a real browser and real speech models.

- A desk agent signs in on /desk in Chromium, goes available; a caller on the native voice socket
  asks for a person; the context packet is on the page before accepting; while it waits the caller
  hears the generated hold audio; the agent accepts and the caller receives the agent's microphone
  (Chromium's fake capture device playing a 660 Hz tone) — checked in the audio that arrived.
- With nobody at the desk, an escalated caller goes straight to the callback fallback, speaks a
  number (or keys it in, `#` ends), and the callback request is stored (the number in its own
  column, covered by privacy); on a queue whose fallback is a message, the caller speaks one after
  the tone and its transcript is stored redacted.
- In a cluster (two workers, one PostgreSQL, one Redis), the same tone check with the desk agent's
  browser on one worker and the caller on the other: the call is offered across workers and its audio
  bridged both ways between them.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.helpers.browser import A11Y_CHECK, LiveServer, launch, screenshot_dir
from tests.helpers.databases import PG_URL, fresh_postgres, query
from tests.helpers.desk_cluster import clustered, fresh_redis
from tests.helpers.metrics import metric_value
from voxgate.api.app import create_app
from voxgate.config import Settings
from voxgate.testing.caller import SimulatedCall, _run, prepare_utterance, run_call

CALLER_VOICE = "flite-slt"
TONE_HZ = 660.0
HOLD_HZ = (330.0, 415.0)  # handoff.bridge.HOLD_NOTES_HZ
RATE = 16000
FRAME = RATE // 50
PASSWORD = "a long enough password"


@pytest.fixture(scope="module")
def voice_desk(
    harbor_bundle: Any, harbor_backend: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    bundle = harbor_bundle.model_copy(deep=True)
    bundle.agent.escalation.queues["general"].timeout_s = 90
    bundle.agent.escalation.queues["general"].offer_timeout_s = 90
    tmp = tmp_path_factory.mktemp("desk-voice")
    settings = Settings(
        database_url=f"sqlite:///{tmp / 'voxgate.db'}", data_dir=tmp, voice_preload=True, voice_capacity=4
    )
    bundles = [bundle, _brief(bundle, "harbor-brief", "callback"), _brief(bundle, "harbor-voicemail", "message")]
    with LiveServer(create_app(settings, bundles)) as live:
        live.db_url = settings.db_url  # type: ignore[attr-defined]
        yield live


def _brief(bundle: Any, name: str, fallback: str) -> Any:
    """A copy of the agent with short spoken lines around the fallback: the caller hears them in real
    time, and the fallback's own steps are what these tests are about."""
    copy = bundle.model_copy(deep=True)
    agent = copy.agent
    agent.name = name
    agent.voice.greeting = "Harbor Telecom."
    agent.escalation.message = "One moment."
    agent.escalation.queues["general"].fallback = fallback
    messages = agent.escalation.handoff
    messages.unavailable = "Nobody is free."
    messages.callback_prompt = "Key in your number."
    messages.callback_confirm = "We will call {number}. Bye."
    messages.message_prompt = "Leave a message after the tone."
    messages.message_thanks = "Got your message. Bye."
    return copy


def _rows(server: LiveServer, sql: str, **params: Any) -> list[Any]:
    return query(server.db_url, sql, **params)  # type: ignore[attr-defined]


def _metric(server: LiveServer, prefix: str) -> float:
    return metric_value(server.app.state.voxgate, prefix)


def _shares(audio: np.ndarray, freq: float) -> np.ndarray:
    """Per 20 ms frame: the share of the frame's energy at `freq` (a single-bin DFT, Goertzel-style)."""
    n = audio.size // FRAME
    frames = audio[: n * FRAME].reshape(n, FRAME).astype(np.float64)
    basis = np.exp(-2j * np.pi * freq * np.arange(FRAME) / RATE)
    power = np.abs(frames @ basis) ** 2
    energy = (frames * frames).sum(axis=1)
    return np.where(energy > 0, 2 * power / (FRAME * np.maximum(energy, 1e-9)), 0.0)


def _loud(audio: np.ndarray) -> np.ndarray:
    n = audio.size // FRAME
    frames = audio[: n * FRAME].reshape(n, FRAME).astype(np.float64)
    return np.sqrt((frames * frames).mean(axis=1)) >= 200


def _classify(audio: np.ndarray) -> tuple[int, int, int]:
    """(hold-chime frames, 660 Hz tone frames, loud frames) in int16 audio at 16 kHz."""
    loud = _loud(audio)
    hold = loud & (sum(_shares(audio, f) for f in HOLD_HZ) >= 0.8)
    tone = loud & (_shares(audio, TONE_HZ) >= 0.8)
    return int(hold.sum()), int(tone.sum()), int(loud.sum())


class ListeningCall(SimulatedCall):
    """A simulated caller that also keeps every frame of agent audio with its arrival time."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.arrivals: list[tuple[float, np.ndarray]] = []

    def _on_message(self, message: str | bytes) -> None:
        if isinstance(message, bytes):
            self.arrivals.append((time.monotonic(), np.frombuffer(message, dtype="<i2").copy()))
        super()._on_message(message)

    def audio(self, since: float = 0.0, until: float = float("inf")) -> np.ndarray:
        parts = [a for t, a in self.arrivals if since <= t < until]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int16)


def _tone_wav(path: Path) -> Path:
    t = np.arange(RATE * 4) / RATE
    samples = (0.5 * 32767 * np.sin(2 * np.pi * TONE_HZ * t)).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(samples.tobytes())
    return path


async def _until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


async def _until_page(page: Any, expression: str, timeout: float, what: str) -> None:
    """Poll a page expression from here.

    Playwright's ``wait_for_function`` re-evaluates a string with ``eval`` inside the page on each
    poll after the first, which the console's CSP (``script-src 'self'``) forbids; ``evaluate``
    runs through the DevTools protocol, which the CSP does not govern.
    """
    deadline = time.monotonic() + timeout
    while not await page.evaluate(expression):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


async def test_nobody_at_the_desk_the_caller_leaves_a_callback_number(voice_desk: LiveServer) -> None:
    state = voice_desk.app.state.voxgate
    assert not state.desk.agents
    before = _metric(voice_desk, 'voxgate_handoff_failures_total{reason="no_agents_available"}')
    report = await run_call(
        f"ws://127.0.0.1:{voice_desk.port}",
        protocol="native",
        voice=CALLER_VOICE,
        says=["I want to talk to a real person", "four one five, five five five, zero one nine eight"],
        transcribe=True,
        hangup_after=False,
        timeout_s=90,
    )
    assert report.error is None, report.model_dump()
    assert report.closed_by == "server" and report.outcome == "escalated"
    prompt, confirm = report.turns
    # what the caller heard (recognised at the caller), and what the server says it spoke
    assert "no one is available" in (prompt.reply_text or "").lower(), prompt
    assert "say or key in your phone number" in (prompt.server_reply_text or ""), prompt
    assert "call you back" in (confirm.reply_text or "").lower(), confirm

    session = report.session_id
    handoff = _rows(voice_desk, "SELECT * FROM handoffs WHERE session_id = :s", s=session)[0]
    assert handoff.status == "fallback_callback" and handoff.failure_reason == "no_agents_available"
    stored = _rows(voice_desk, "SELECT * FROM callback_requests WHERE session_id = :s", s=session)
    assert [(r.kind, r.callback_number, r.channel, r.reason) for r in stored] == [
        ("callback", "+14155550198", "voice", "no_agents_available")
    ]
    # the number lives in its own column only: not in the stored turns or the packet
    turns = _rows(voice_desk, "SELECT user_text, agent_text, data FROM turns WHERE session_id = :s", s=session)
    assert not any("0198" in f"{t.user_text} {t.agent_text} {t.data}" for t in turns)
    from voxgate.compliance import privacy

    assert {r.table for r in privacy.find(state.db, phone="+1 415 555 0198")} >= {"callback_requests", "sessions"}
    failed = _rows(voice_desk, "SELECT data FROM audit_events WHERE action = 'handoff.failed'")
    assert any(
        json.loads(r.data)["session"] == session and json.loads(r.data)["reason"] == "no_agents_available"
        for r in failed
    )
    assert _metric(voice_desk, 'voxgate_handoff_failures_total{reason="no_agents_available"}') == before + 1


def _stored_turns(server: LiveServer, session: str) -> str:
    turns = _rows(server, "SELECT user_text, agent_text, data FROM turns WHERE session_id = :s", s=session)
    assert turns  # the conversation before the escalation was stored
    return " ".join(f"{t.user_text} {t.agent_text} {t.data}" for t in turns)


def _holds_digits(text: str, digits: str) -> bool:
    """Whether `digits` stand in `text` as a number of their own, keyed or read back one by one ("0 1 7 6"),
    not as a part of a longer number such as a stored timestamp's 1796627867.1017623."""
    spaced = r"[\s,]*".join(digits)
    return re.search(rf"(?<![\d.])(?:{digits}|{spaced})(?![\d])", text) is not None


async def test_nobody_at_the_desk_the_caller_keys_in_a_callback_number(voice_desk: LiveServer) -> None:
    assert not voice_desk.app.state.voxgate.desk.agents
    report = await run_call(
        f"ws://127.0.0.1:{voice_desk.port}",
        protocol="native",
        agent="harbor-brief",
        voice=CALLER_VOICE,
        says=["I want to talk to a real person"],
        dtmf={1: "4155550176#"},
        transcribe=False,
        hangup_after=False,
        timeout_s=60,
    )
    assert report.error is None, report.model_dump()
    assert report.closed_by == "server" and report.outcome == "escalated"
    prompt, confirm = report.turns
    assert confirm.dtmf == "4155550176#"
    assert "Nobody is free. Key in your number." in (prompt.server_reply_text or ""), prompt
    # read back in groups, from the keyed digits
    assert "We will call 4 1 5, 5 5 5, 0 1 7 6. Bye." in (confirm.server_reply_text or ""), confirm

    session = report.session_id
    handoff = _rows(voice_desk, "SELECT * FROM handoffs WHERE session_id = :s", s=session)[0]
    assert handoff.status == "fallback_callback" and handoff.failure_reason == "no_agents_available"
    stored = _rows(
        voice_desk,
        "SELECT kind, callback_number, channel, message FROM callback_requests WHERE session_id = :s",
        s=session,
    )
    assert [tuple(r) for r in stored] == [("callback", "+14155550176", "voice", None)]
    turns = _stored_turns(voice_desk, session)
    assert not _holds_digits(turns, "0176") and not _holds_digits(turns, "4155550176")


async def test_nobody_at_the_desk_the_caller_leaves_a_spoken_message_stored_redacted(voice_desk: LiveServer) -> None:
    assert not voice_desk.app.state.voxgate.desk.agents
    report = await run_call(
        f"ws://127.0.0.1:{voice_desk.port}",
        protocol="native",
        agent="harbor-voicemail",
        voice=CALLER_VOICE,
        says=[
            "I want to talk to a real person",
            "my internet bill is wrong, call me on four one five, five five five, zero one three two",
        ],
        transcribe=False,
        hangup_after=False,
        timeout_s=90,
        reply_timeout_s=25,
    )
    assert report.error is None, report.model_dump()
    assert report.closed_by == "server" and report.outcome == "escalated"
    prompt, thanks = report.turns
    assert "Leave a message after the tone." in (prompt.server_reply_text or ""), prompt
    assert "Got your message." in (thanks.server_reply_text or ""), thanks

    session = report.session_id
    handoff = _rows(voice_desk, "SELECT * FROM handoffs WHERE session_id = :s", s=session)[0]
    assert handoff.status == "fallback_message" and handoff.failure_reason == "no_agents_available"
    stored = _rows(voice_desk, "SELECT * FROM callback_requests WHERE session_id = :s", s=session)
    assert [(r.kind, r.channel, r.callback_number) for r in stored] == [("message", "voice", None)]
    message = stored[0].message
    print(f"\nstored message: {message!r}")
    assert "bill" in message.lower()  # the message was heard
    digits = "".join(c for c in message if c.isdigit())
    assert "0132" not in digits and "555" not in digits, message  # the number is not there in clear
    assert "<PHONE_NUMBER>" in message or "<NUMBER>" in message, message
    counts = json.loads(stored[0].redactions) if isinstance(stored[0].redactions, str) else stored[0].redactions
    assert sum(counts.values()) >= 1, counts
    turns = _stored_turns(voice_desk, session)
    assert not _holds_digits(turns, "0132")


async def test_desk_agent_accepts_a_voice_call_in_the_browser_and_the_caller_hears_them(
    voice_desk: LiveServer, tmp_path: Path
) -> None:
    from playwright.async_api import async_playwright, expect

    state = voice_desk.app.state.voxgate
    user = state.identity.create_user("dana", PASSWORD, display_name="Dana")
    state.identity.bind_role(user.id, "*", "desk_agent", None)
    shots = screenshot_dir()
    tone = _tone_wav(tmp_path / "tone.wav")

    async with async_playwright() as p:
        browser = await launch(p, [f"--use-file-for-fake-audio-capture={tone}"])
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 800})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            await page.goto(f"{voice_desk.url}/desk")
            await page.get_by_label("Username").wait_for()  # the page asks who is signed in first
            assert await page.evaluate(A11Y_CHECK) == []  # the sign-in form
            await page.get_by_label("Username").fill("dana")
            await page.get_by_label("Password").fill(PASSWORD)
            await page.get_by_role("button", name="Sign in").click()
            await page.get_by_label("Availability", exact=True).select_option("available")
            await expect(page.locator("#agent-status")).to_contain_text("Available")

            call = ListeningCall(
                f"ws://127.0.0.1:{voice_desk.port}",
                protocol="native",
                agent="harbor-support",
                voice=CALLER_VOICE,
                gap_ms=600,
            )
            ask = prepare_utterance("I want to talk to a real person", CALLER_VOICE, "native")
            hello = prepare_utterance("hello, can you hear me", CALLER_VOICE, "native")
            connected = asyncio.Event()

            async def script(c: SimulatedCall) -> None:
                assert await c.wait_reply(-1, 30)
                c.begin_turn(0)
                await c.say(ask)
                await connected.wait()
                c.begin_turn(1)
                await c.say(hello)  # to the person now
                await c.server_closed.wait()  # on the line until the person hangs up

            caller = asyncio.create_task(_run(call, script, timeout_s=150, hangup_after=False))

            # the context packet is on the page before the person accepts
            offer = page.locator("#offer")
            await expect(offer).to_be_visible(timeout=60_000)
            await expect(page.locator("#p-verified")).to_have_text("Not verified")
            await expect(page.locator("#p-intents")).to_contain_text("talk to human")
            await expect(page.locator("#p-summary")).to_contain_text("Escalated because the caller asked for a person")
            await expect(page.locator("#packet-transcript")).to_contain_text("real person")
            await expect(page.locator("#p-channel")).to_have_text("voice call")
            assert await page.evaluate(A11Y_CHECK) == []  # the desk with an offer
            assert await page.locator("[aria-live=assertive]").count() == 1  # offers are announced
            await expect(page.locator("#announcer")).to_contain_text("Incoming voice call")

            # meanwhile the caller hears hold audio (and nothing of the desk yet)
            await _until(lambda: _classify(call.audio())[0] >= 25, 30, "hold audio at the caller")
            await page.screenshot(path=str(shots / "desk-incoming-handoff.png"), full_page=True)
            accepted_at = time.monotonic()
            await page.get_by_role("button", name="Accept").press("Enter")  # keyboard, not a click
            await expect(page.locator("#call-status")).to_contain_text("Connected", timeout=20_000)
            await expect(page.locator("#offer-state")).to_have_text("In conversation:")
            connected.set()
            await _until(
                lambda: _classify(call.audio(since=accepted_at))[1] >= 75, 30, "the desk's audio at the caller"
            )
            # and the caller's voice reaches the desk's speaker
            await _until_page(page, "window.deskStats.callerAudible >= 25", 30, "the caller's voice at the desk")
            await page.screenshot(path=str(shots / "desk-connected-call.png"), full_page=True)

            await page.get_by_role("button", name="End conversation").click()
            await page.get_by_label("Disposition").select_option("resolved")
            await page.get_by_label("Note (personal data is redacted before it is stored)").fill("Tone check only")
            await page.get_by_role("button", name="Finish wrap-up").click()
            await expect(page.locator("#idle-text")).to_contain_text("Wrap-up saved")
            assert errors == []
            await asyncio.wait_for(caller, 30)
        finally:
            await browser.close()

    report = call.report
    assert report.error is None, report.model_dump()
    assert report.closed_by == "server" and report.outcome == "escalated"

    before = call.audio(until=accepted_at)
    hold, tone_before, _ = _classify(before)
    assert hold >= 25 and tone_before <= 2, (hold, tone_before)
    clear_at = next(t for t in call.clears if t >= accepted_at)  # the hold audio queued at the caller is dropped
    after = call.audio(since=clear_at)
    hold_after, tone_after, loud_after = _classify(after)
    assert hold_after == 0 and tone_after >= 75 and tone_after >= 0.8 * loud_after, (hold_after, tone_after, loud_after)
    first_tone = next(t for t, a in call.arrivals if t >= clear_at and _classify(a)[1])
    print(f"\naccept (key press) -> first desk audio frame at the caller: {(first_tone - accepted_at) * 1000:.0f} ms")

    row = _rows(voice_desk, "SELECT * FROM handoffs WHERE session_id = :s", s=report.session_id)[0]
    assert row.status == "wrapped_up" and row.accepted_by == user.id and row.disposition == "resolved"
    steps = [e["event"] for e in (json.loads(row.events) if isinstance(row.events, str) else row.events)]
    assert steps[:3] == ["waiting", "offered", "accepted"] and steps[-1] == "wrapped_up", steps
    session = _rows(voice_desk, "SELECT outcome FROM sessions WHERE id = :s", s=report.session_id)[0]
    assert session.outcome == "escalated"


# ---- a cluster: the desk agent's browser on one worker, the caller on another -----------------------------


@pytest.fixture(scope="module")
def voice_desks(
    harbor_bundle: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[LiveServer, LiveServer]]:
    """Two workers on one PostgreSQL and one Redis, one desk: A serves the desk page, B takes calls."""
    if not PG_URL:
        pytest.skip("a cluster's workers share PostgreSQL")
    bundle = harbor_bundle.model_copy(deep=True)
    bundle.agent.escalation.queues["general"].timeout_s = 90
    bundle.agent.escalation.queues["general"].offer_timeout_s = 90
    tmp = tmp_path_factory.mktemp("desk-voice-cluster")
    redis_url = fresh_redis()
    desk_side = Settings(database_url=fresh_postgres(), data_dir=tmp, redis_url=redis_url)
    call_side = desk_side.model_copy(update={"voice_preload": True, "voice_capacity": 4})
    with (
        LiveServer(clustered(create_app(desk_side, [bundle]), redis_url)) as a,
        LiveServer(clustered(create_app(call_side, [bundle]), redis_url)) as b,
    ):
        b.db_url = call_side.db_url  # type: ignore[attr-defined]
        yield a, b


@pytest.mark.slow
async def test_a_desk_agent_on_one_worker_and_a_caller_on_another_hear_each_other(
    voice_desks: tuple[LiveServer, LiveServer], tmp_path: Path
) -> None:
    from playwright.async_api import async_playwright, expect

    a, b = voice_desks
    state = a.app.state.voxgate
    user = state.identity.create_user("maya", PASSWORD, display_name="Maya")
    state.identity.bind_role(user.id, "*", "desk_agent", None)
    tone = _tone_wav(tmp_path / "tone.wav")

    async with async_playwright() as p:
        browser = await launch(p, [f"--use-file-for-fake-audio-capture={tone}"])
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 800})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            await page.goto(f"{a.url}/desk")  # the desk agent's socket is on A
            await page.get_by_label("Username").fill("maya")
            await page.get_by_label("Password").fill(PASSWORD)
            await page.get_by_role("button", name="Sign in").click()
            await page.get_by_label("Availability", exact=True).select_option("available")
            await expect(page.locator("#agent-status")).to_contain_text("Available")

            call = ListeningCall(  # the caller's socket is on B
                f"ws://127.0.0.1:{b.port}", protocol="native", agent="harbor-support", voice=CALLER_VOICE, gap_ms=600
            )
            ask = prepare_utterance("I want to talk to a real person", CALLER_VOICE, "native")
            hello = prepare_utterance("hello, can you hear me", CALLER_VOICE, "native")
            connected = asyncio.Event()

            async def script(c: SimulatedCall) -> None:
                assert await c.wait_reply(-1, 30)
                c.begin_turn(0)
                await c.say(ask)
                await connected.wait()
                c.begin_turn(1)
                await c.say(hello)  # to the person on the other worker now
                await c.server_closed.wait()

            caller = asyncio.create_task(_run(call, script, timeout_s=150, hangup_after=False))
            await expect(page.locator("#offer")).to_be_visible(timeout=60_000)  # offered across workers
            await expect(page.locator("#p-channel")).to_have_text("voice call")
            await expect(page.locator("#packet-transcript")).to_contain_text("real person")
            await _until(lambda: _classify(call.audio())[0] >= 25, 30, "hold audio at the caller")
            accepted_at = time.monotonic()
            await page.get_by_role("button", name="Accept").press("Enter")
            await expect(page.locator("#call-status")).to_contain_text("Connected", timeout=20_000)
            connected.set()
            # the desk's microphone (660 Hz) reaches the caller on B, and the caller's voice the desk on A
            await _until(
                lambda: _classify(call.audio(since=accepted_at))[1] >= 75, 30, "the desk's audio at the caller"
            )
            await _until_page(page, "window.deskStats.callerAudible >= 25", 30, "the caller's voice at the desk")

            await page.get_by_role("button", name="End conversation").click()
            await page.get_by_label("Disposition").select_option("resolved")
            await page.get_by_role("button", name="Finish wrap-up").click()
            await expect(page.locator("#idle-text")).to_contain_text("Wrap-up saved")
            assert errors == []
            await asyncio.wait_for(caller, 30)
        finally:
            await browser.close()

    report = call.report
    assert report.error is None, report.model_dump()
    assert report.closed_by == "server" and report.outcome == "escalated"
    clear_at = next(t for t in call.clears if t >= accepted_at)
    hold_after, tone_after, loud_after = _classify(call.audio(since=clear_at))
    assert hold_after == 0 and tone_after >= 75 and tone_after >= 0.8 * loud_after, (hold_after, tone_after, loud_after)
    first_tone = next(t for t, x in call.arrivals if t >= clear_at and _classify(x)[1])
    print(
        f"\nacross workers: accept -> first desk audio frame at the caller: {(first_tone - accepted_at) * 1000:.0f} ms"
    )
    row = _rows(b, "SELECT * FROM handoffs WHERE session_id = :s", s=report.session_id)[0]
    assert row.status == "wrapped_up" and row.accepted_by == user.id and row.disposition == "resolved"
