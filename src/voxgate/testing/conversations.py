"""Run a bundle's conversation tests (tests/*.yaml) against a real runtime, by text or by voice.

Each test is a scripted conversation: caller turns (words or DTMF) and what must hold after each
turn and at the end. Fixture placeholders such as ``{customer.3.account_number|spoken}`` are
filled from a mapping the caller supplies (for a demo company, its deterministic customers), so
this module never knows any company's data.

In voice mode a caller turn is synthesised in a caller voice unlike the agent's, optionally
degraded to a phone line with noise, recognised by voxgate's own Whisper recogniser (primed the
way the live pipeline primes it) and the transcript fed to the session: the audio path of a call
without sockets or real-time pacing, so a suite runs in seconds.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import importlib
import re
import time
from collections.abc import Callable, Collection, Mapping
from typing import Any, Protocol

from voxgate.bundle.loader import FIXTURE_RE
from voxgate.bundle.models import ActionExpect, BundleSource, ConversationTest, ScriptedTurn
from voxgate.errors import InvalidError
from voxgate.governance.secrets import resolve_secret
from voxgate.runtime.engine import AgentRuntime
from voxgate.runtime.events import TurnResult, plain
from voxgate.runtime.recorder import MemoryRecorder
from voxgate.runtime.session import Session
from voxgate.testing.results import CaseResult, SuiteResult
from voxgate.testing.voices import VOICES, Degradation, available_voices, degrade, synthesize_caller
from voxgate.voice.pipeline import DIGIT_TYPES, DIGITS_PROMPT
from voxgate.voice.speech_text import word_error_rate

RuntimeFactory = Callable[[BundleSource, str], AgentRuntime]
DEFAULT_ASR_MODEL = "tiny.en"
_DIGIT_WORDS = "zero one two three four five six seven eight nine".split()


class ConversationTestError(InvalidError):
    """The tests cannot run as written (a fixture that does not exist, an unknown caller voice)."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


class Recognizer(Protocol):
    name: str

    def transcribe(self, audio: Any, prompt: str | None = None, quick: bool = False) -> Any: ...


# ---- fixtures -----------------------------------------------------------------------------------


def fill_placeholders(text: str, fixtures: Mapping[str, Any]) -> str:
    """Replace every {name.path|filter} with the fixture value; KeyError names the first unknown one."""

    def sub(match: re.Match[str]) -> str:
        path, flt = match.group(1), match.group(2)
        value: Any = fixtures
        for part in path.split("."):
            if isinstance(value, Mapping) and part in value:
                value = value[part]
            elif isinstance(value, (list, tuple)) and part.isdigit() and int(part) < len(value):
                value = value[int(part)]
            else:
                raise KeyError(path)
        return _filtered(str(value), flt)

    return FIXTURE_RE.sub(sub, text)


def _filtered(value: str, flt: str | None) -> str:
    if flt == "spoken":  # digits as a caller says them, one word each
        return " ".join(_DIGIT_WORDS[int(c)] if c.isdigit() else c for c in value if not c.isspace())
    if flt == "spaced":
        return " ".join(c for c in value if not c.isspace())
    return value


def load_fixtures(specs: Mapping[str, str]) -> dict[str, Any]:
    """Fixtures from providers named `module:attribute` (a value, or a callable returning one),
    per namespace, e.g. ``{"customer": "harbor_backend:demo_credentials"}``."""
    out: dict[str, Any] = {}
    for name, spec in specs.items():
        module, _, attr = spec.partition(":")
        if not module or not attr:
            raise ConversationTestError([f"fixture provider '{spec}' for '{name}': expected module:attribute"])
        try:
            provider = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise ConversationTestError([f"fixture provider '{spec}' for '{name}': {exc}"]) from None
        value = provider() if callable(provider) else provider
        out[name] = plain(
            [dataclasses.asdict(v) if dataclasses.is_dataclass(v) and not isinstance(v, type) else v for v in value]
            if isinstance(value, (list, tuple))
            else value
        )
    return out


def _resolve(test: ConversationTest, fixtures: Mapping[str, Any]) -> tuple[ConversationTest, list[str]]:
    """A copy of the test with every placeholder filled, or the places that could not be."""
    problems: list[str] = []

    def walk(value: Any, line: str) -> Any:
        if isinstance(value, str):
            try:
                return fill_placeholders(value, fixtures)
            except KeyError as exc:
                head = str(exc.args[0]).split(".")[0]
                hint = "" if head in fixtures else f" (no fixtures named '{head}' were given)"
                problems.append(f"{line}: test '{test.name}': unknown fixture '{{{exc.args[0]}}}'{hint}")
                return value
        if isinstance(value, dict):
            return {k: walk(v, line) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v, line) for v in value]
        return value

    turns = []
    for turn in test.turns:
        line = f"{test.source.rsplit(':', 1)[0]}:{turn.line}" if test.source else test.name
        data = walk(turn.model_dump(exclude_unset=True), line)
        filled = ScriptedTurn.model_validate(data)
        filled._line = turn.line
        turns.append(filled)
    expect = walk(test.expect.model_dump(exclude_unset=True), test.source or test.name)
    resolved = test.model_copy(update={"turns": turns, "expect": type(test.expect).model_validate(expect)})
    resolved._source = test.source
    return resolved, problems


# ---- voice ----------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=2)
def shared_recognizer(model: str = DEFAULT_ASR_MODEL) -> Recognizer:
    """One Whisper recogniser per model for the whole process: loading it is the slow part."""
    from voxgate.voice.asr import WhisperRecognizer

    return WhisperRecognizer(model=model)


def caller_voice_for(agent_voice: str, available: list[str]) -> str:
    """A caller voice that differs from the agent's (so the recogniser is not flattered), with the
    same accent when one is installed (the agent's callers mostly share its region)."""
    region = agent_voice.rsplit("-", 1)[-1].lower()
    others = [name for name in available if name != agent_voice]
    same = [name for name in others if region in name.lower().split("-")]
    if same or others:
        return (same or others)[0]
    raise ConversationTestError([f"no caller voice other than the agent's ('{agent_voice}') is installed"])


class _Ear:
    """Speaks a caller turn and hears it back as voxgate's call pipeline would."""

    def __init__(self, recognizer: Recognizer, default_voice: str):
        self.recognizer = recognizer
        self.default_voice = default_voice
        self.turns = 0
        self.compute_ms = 0.0
        self.word_errors = 0.0

    async def hear(self, text: str, session: Session, turn: ScriptedTurn, test: ConversationTest) -> str:
        audio = synthesize_caller(text, test.caller_voice or self.default_voice)
        telephone = test.telephone if turn.telephone is None else turn.telephone
        snr = turn.snr_db if turn.snr_db is not None else test.snr_db
        if telephone or snr is not None:
            audio = degrade(audio, Degradation(telephone=telephone, snr_db=snr, seed=turn.line))
        # prime recognition for digits when the agent just asked for some, as the live pipeline does
        prompt = DIGITS_PROMPT if session.expecting().value_type in DIGIT_TYPES else None
        transcript = await asyncio.to_thread(self.recognizer.transcribe, audio, prompt)
        self.turns += 1
        self.compute_ms += float(getattr(transcript, "compute_ms", 0.0))
        self.word_errors += word_error_rate(text, transcript.text)
        return str(transcript.text)


# ---- checks ---------------------------------------------------------------------------------------


def _norm(text: str) -> str:
    return " ".join(str(text).lower().split())


def _same(expected: Any, actual: Any) -> bool:
    """Compare as the caller would read them: numbers by value, everything else as text."""
    try:
        return float(expected) == float(actual)
    except (TypeError, ValueError):
        return _norm(str(plain(expected))) == _norm(str(plain(actual)))


def _show_action(action: Mapping[str, Any]) -> str:
    args = ", ".join(f"{k}={v!r}" for k, v in (action.get("arguments") or {}).items())
    return f"{action['name']}({args}) -> {action['status']}"


def _action_failures(expected: list[ActionExpect], called: list[dict[str, Any]], not_called: list[str]) -> list[str]:
    out: list[str] = []
    shown = "; ".join(_show_action(a) for a in called) or "none"
    for want in expected:
        matches = [a for a in called if a["name"] == want.name]
        ok = any(
            (want.status is None or a["status"] == want.status)
            and all(k in (a.get("arguments") or {}) and _same(v, a["arguments"][k]) for k, v in want.arguments.items())
            for a in matches
        )
        if not ok:
            detail = f" with {want.arguments}" if want.arguments else ""
            status = f" and status {want.status}" if want.status else ""
            out.append(f"expected action {want.name}{detail}{status}; called: {shown}")
    for name in not_called:
        if any(a["name"] == name for a in called):
            out.append(f"action {name} must not be called; called: {shown}")
    return out


def check_turn(turn: ScriptedTurn, result: TurnResult, session: Session) -> list[str]:
    """Every expectation of one turn that did not hold, as readable sentences."""
    exp, fails = turn.expect, []
    reply = _norm(result.text)
    checks = exp.checks()
    if "intent" in checks and result.intent != exp.intent:
        fails.append(f"expected intent {exp.intent or 'none'}, got {result.intent or 'none'}")
    if exp.reply_contains and not any(_norm(s) in reply for s in exp.reply_contains):
        fails.append(f"reply should contain {_any_of(exp.reply_contains)}; it was: {result.text!r}")
    for bad in exp.reply_not_contains or []:
        if _norm(bad) in reply:
            fails.append(f"reply must not contain {bad!r}; it was: {result.text!r}")
    if exp.state is not None and result.state != exp.state:
        fails.append(f"expected state {exp.state}, got {result.state}")
    for name, want in exp.slots.items():
        if name not in result.slots:
            fails.append(f"expected slot {name}={want!r}, but it is not filled")
        elif not _same(want, result.slots[name]):
            fails.append(f"expected slot {name}={want!r}, got {result.slots[name]!r}")
    fails += _action_failures(exp.actions, result.actions, exp.actions_not_called)
    emitted = [e.type for e in result.events]
    for ev in exp.events:
        if ev not in emitted:
            fails.append(f"expected event {ev}; events were: {', '.join(emitted) or 'none'}")
    if exp.citation is not None and not any(c.startswith(exp.citation) for c in result.citations):
        fails.append(f"expected a citation of {exp.citation}; citations: {', '.join(result.citations) or 'none'}")
    if exp.verified is not None and session.verified != exp.verified:
        fails.append(f"expected the caller {'verified' if exp.verified else 'not verified'}")
    if exp.ended is not None and result.ended != exp.ended:
        fails.append(f"expected the conversation {'ended' if exp.ended else 'still going'}")
    if exp.outcome is not None and result.outcome != exp.outcome:
        fails.append(f"expected outcome {exp.outcome}, got {result.outcome or 'none'}")
    return fails


def check_conversation(test: ConversationTest, session: Session) -> list[str]:
    """The end-of-conversation expectations that did not hold."""
    exp, fails = test.expect, []
    if exp.outcome is not None and session.outcome != exp.outcome:
        fails.append(f"expected outcome {exp.outcome}, got {session.outcome or 'none'}")
    if exp.escalation is not None:
        packet = session.escalation
        if packet is None:
            fails.append("expected an escalation, but there was none")
        else:
            esc = exp.escalation
            if esc.queue is not None and packet.get("queue") != esc.queue:
                fails.append(f"expected escalation to queue {esc.queue}, got {packet.get('queue')}")
            if esc.reason is not None and packet.get("reason") != esc.reason:
                fails.append(f"expected escalation reason {esc.reason}, got {packet.get('reason')}")
            summary = _norm(packet.get("summary") or "")
            if esc.summary_contains and not any(_norm(s) in summary for s in esc.summary_contains):
                fails.append(
                    f"escalation summary should contain {_any_of(esc.summary_contains)}; "
                    f"it was: {packet.get('summary')!r}"
                )
    fails += _action_failures(exp.actions, session.actions, exp.actions_not_called)
    if exp.verified is not None and session.verified != exp.verified:
        fails.append(f"expected the caller {'verified' if exp.verified else 'not verified'} at the end")
    return fails


def _any_of(options: list[str]) -> str:
    return repr(options[0]) if len(options) == 1 else "any of " + ", ".join(repr(o) for o in options)


# ---- running --------------------------------------------------------------------------------------


def _default_runtime(bundle: BundleSource, env: str) -> AgentRuntime:
    return AgentRuntime(bundle, environment=env, recorder=MemoryRecorder(), secrets=resolve_secret)


async def run_conversation_tests(
    bundle: BundleSource,
    *,
    runtime_factory: RuntimeFactory | None = None,
    voice: bool = False,
    fixtures: Mapping[str, Any] | None = None,
    env: str = "dev",
    names: Collection[str] | None = None,
    recognizer: Recognizer | None = None,
    caller_voice: str | None = None,
    on_result: Callable[[CaseResult], None] | None = None,
) -> SuiteResult:
    """Run the bundle's conversation tests and report each as a case.

    `runtime_factory(bundle, env)` makes the runtime the tests talk to (default: an in-memory
    recorder and no host policy); the runner closes it. `voice`: speak every `say` turn (turns
    with `voice: true` are spoken in text mode too). `names`: run only these tests. `recognizer`:
    a loaded ASR to reuse (default: Whisper tiny.en, loaded once per process). `caller_voice`: the
    voice of spoken turns unless a test names one (default: the first installed voice unlike the
    agent's). `on_result` is
    called after each test (progress). Raises ConversationTestError before running anything if a
    placeholder has no fixture or no caller voice can be used.
    """
    fixtures = fixtures or {}
    selected = [t for t in bundle.tests if names is None or t.name in names]
    if names is not None:
        missing = sorted(set(names) - {t.name for t in selected})
        if missing:
            raise ConversationTestError([f"no test named '{n}' in {bundle.root}/tests" for n in missing])
    problems: list[str] = []
    tests: list[ConversationTest] = []
    for test in selected:
        resolved, errs = _resolve(test, fixtures)
        problems += errs
        tests.append(resolved)
    ear = _make_ear(bundle, tests, voice, recognizer, caller_voice, problems)
    if problems:
        raise ConversationTestError(problems)

    suite = SuiteResult(suite=f"conversations:{bundle.agent.name}")
    started = time.perf_counter()
    runtime = (runtime_factory or _default_runtime)(bundle, env)
    try:
        for test in tests:
            case = await _run_one(runtime, test, voice, ear)
            suite.cases.append(case)
            if on_result is not None:
                on_result(case)
    finally:
        await runtime.aclose()
    suite.metrics = {
        "agent": bundle.agent.name,
        "agent_version": bundle.agent.version,
        "environment": env,
        "mode": "voice" if voice else "text",
        "tests": len(tests),
        "turns": sum(len(t.turns) for t in tests),
        "duration_ms": round((time.perf_counter() - started) * 1000, 1),
    }
    if ear is not None:
        suite.metrics.update(
            {
                "asr_model": getattr(ear.recognizer, "name", type(ear.recognizer).__name__),
                "caller_voice": ear.default_voice,
                "spoken_turns": ear.turns,
                "asr_compute_ms_mean": round(ear.compute_ms / ear.turns, 1) if ear.turns else None,
                "asr_wer_mean": round(ear.word_errors / ear.turns, 4) if ear.turns else None,
            }
        )
    return suite


def _make_ear(
    bundle: BundleSource,
    tests: list[ConversationTest],
    voice: bool,
    recognizer: Recognizer | None,
    caller_voice: str | None,
    problems: list[str],
) -> _Ear | None:
    spoken = [t for t in tests if any(_spoken(turn, voice) for turn in t.turns)]
    if not spoken:
        return None
    available = available_voices()

    def usable(name: str, where: str) -> None:
        if name not in available:
            what = "is not installed" if name in VOICES else "is unknown"
            problems.append(f"{where}caller voice '{name}' {what} (available: {', '.join(available) or 'none'})")

    if caller_voice:
        usable(caller_voice, "")
    for test in spoken:
        if test.caller_voice:
            usable(test.caller_voice, f"{test.source}: test '{test.name}': ")
    try:
        default = caller_voice or caller_voice_for(bundle.agent.voice.voice, available)
    except ConversationTestError as exc:
        problems += exc.problems
        return None
    return _Ear(recognizer or shared_recognizer(), default)


def _spoken(turn: ScriptedTurn, voice: bool) -> bool:
    return turn.say is not None and (turn.voice if turn.voice is not None else voice)


async def _run_one(runtime: AgentRuntime, test: ConversationTest, voice: bool, ear: _Ear | None) -> CaseResult:
    started = time.perf_counter()
    session = runtime.new_session(channel="test")
    failures: list[str] = []
    log: list[dict[str, Any]] = []
    path = test.source.rsplit(":", 1)[0]
    try:
        await session.start()
        for i, turn in enumerate(test.turns, start=1):
            label = f"turn {i} ({path}:{turn.line})"
            if session.ended:
                failures.append(f"{label}: the conversation had already ended ({session.outcome}) after turn {i - 1}")
                break
            entry: dict[str, Any] = {"turn": i, "line": turn.line}
            if turn.dtmf is not None:
                result = await session.handle(turn.dtmf, dtmf=True)
                entry["dtmf"] = True
            elif _spoken(turn, voice):
                assert ear is not None and turn.say is not None  # nosec B101: type narrowing (test tooling)
                heard = await ear.hear(turn.say, session, turn, test)
                # speech that yields no words is handled as the call pipeline handles it
                result = await session.handle(heard) if heard.strip() else await session.unheard()
                entry["spoken"] = True
            else:
                result = await session.handle(turn.say or "")
            entry.update(_turn_record(result, session))
            if entry.get("spoken") and result.user is None:
                entry["caller"] = "(no words recognised)"
            log.append(entry)
            if entry.get("spoken"):
                label += f" heard {entry['caller']!r}"
            failures += [f"{label}: {f}" for f in check_turn(turn, result, session)]
        if not session.ended:
            await session.close("test_end")
        failures += [f"end of conversation ({test.source}): {f}" for f in check_conversation(test, session)]
    except Exception as exc:  # a crash is a failed test, reported with what had happened so far
        failures.append(f"error: {type(exc).__name__}: {exc}")
        if not session.ended:
            await session.close("test_error")
    details: dict[str, Any] = {
        "source": test.source,
        "mode": "voice" if voice else "text",
        "outcome": session.outcome,
        "turns": log,
    }
    if session.escalation is not None:
        details["escalation"] = {k: session.escalation.get(k) for k in ("queue", "reason", "summary")}
    return CaseResult(
        name=test.name,
        passed=not failures,
        category=test.category,
        failures=failures,
        details=details,
        duration_ms=round((time.perf_counter() - started) * 1000, 1),
    )


def _turn_record(result: TurnResult, session: Session) -> dict[str, Any]:
    """What the evidence keeps of a turn: the caller's words as the session logged them (PINs and
    other customers' account numbers already replaced), never the raw digits."""
    heard = next((line.text for line in reversed(session.transcript) if line.role == "user"), "")
    return {
        "caller": heard,
        "agent": result.text,
        "intent": result.intent,
        "state": result.state,
        "actions": [{"name": a["name"], "status": a["status"]} for a in result.actions],
    }
