"""The escalation gate: one simulated conversation per declared escalation trigger, each ending in a
handoff whose context packet is checked field by field against what the caller said and what was
verified.

What to test comes from the agent's own declarations: `escalation.triggers` (caller request,
repeated misunderstanding, failed verification, failed back-end call, abusive language) and every
topic with an `escalate` step. A trigger added to an agent gets a case without touching this module.

    suite = await run_escalation_gate(bundle, runtime_factory=make_runtime, fixtures=customers)

`runtime_factory()` builds a fresh runtime under test (environment, host policy); the gate points
its recorder at its own, and reads the queued handoffs from it. To cause a failed action, one
runtime gets that action routed to a closed port. `fixtures` are customers the backend knows
(identifier, secret, customer id), used to verify as a real caller.
"""

from __future__ import annotations

import datetime as dt
import difflib
import inspect
import json
import re
import socket
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from voxgate.bundle.models import (
    CONTEXT_FIELDS,
    AskStep,
    BranchStep,
    BundleSource,
    CallStep,
    ConfirmStep,
    EscalateStep,
    Slot,
    SlotType,
    Topic,
)
from voxgate.runtime.connectors import ConnectorClient
from voxgate.runtime.engine import AgentRuntime
from voxgate.runtime.moderation import abusive_terms
from voxgate.runtime.recorder import MemoryRecorder
from voxgate.runtime.session import Session
from voxgate.testing.results import CaseResult, SuiteResult

SUITE = "escalation"
MISSING = "<missing>"
REDACTED = "<redacted>"
LEAKED = "<SECRET LEAKED>"
MAX_TURNS = 40

TriggerKind = Literal[
    "caller_request", "topic", "misunderstandings", "verification_failed", "action_failed", "abusive_language"
]
RuntimeFactory = Callable[[], AgentRuntime | Awaitable[AgentRuntime]]

# Said when the gate must not be understood: no digits, yes/no, goodbye or topic words.
_UNINTELLIGIBLE = (
    "blorp fandango wibble",
    "zxq vlem tropp quazzle",
    "mmrph glib snorkadoodle",
    "plinth wobbegong frabjous",
    "quixle marrow tundlebop",
    "frim fram sauce oozle",
    "gronk blivet skrimble",
    "yoink flumph zazzle",
)


class FixtureCustomer(BaseModel):
    """A customer the backend knows; the gate says these details as a caller would."""

    model_config = ConfigDict(extra="allow")

    customer_id: str
    account_number: str | None = None
    phone: str | None = None
    pin: str | None = None
    dob: str | None = None
    first_name: str | None = Field(default=None, description="Checked against identity.name when given.")

    def value(self, name: str) -> str | None:
        raw = getattr(self, name, None)
        if raw is None and self.model_extra:
            raw = self.model_extra.get(name)
        return None if raw is None else str(raw)


@dataclass(frozen=True)
class EscalationCase:
    """One planned conversation: which trigger it causes, and the reason and queue it must reach."""

    name: str
    trigger: TriggerKind
    reason: str
    queue: str
    topic: str | None = None  # the topic whose escalate step is reached, or that gives the context
    action: str | None = None  # for action_failed: the action whose back end is unreachable
    description: str = ""


@dataclass
class FieldCheck:
    field: str
    expected: Any
    actual: Any
    ok: bool


@dataclass
class _Transcript:
    """What the simulated caller did, as ground truth for the packet."""

    said: list[str] = field(default_factory=list)  # caller turns, secrets already shown as REDACTED
    secrets: set[str] = field(default_factory=set)
    intents: list[str] = field(default_factory=list)
    slots: dict[str, Any] = field(default_factory=dict)
    verified: bool = False  # the right identifier and secret were given
    trigger_turns: int = 0  # caller turns spent causing the trigger itself


# ---- planning: what the agent declares -------------------------------------------------------


def plan_escalation_cases(bundle: BundleSource) -> list[EscalationCase]:
    """Every escalation path the agent declares, as one case each."""
    agent = bundle.agent
    esc = agent.escalation
    triggers = esc.triggers
    cases: list[EscalationCase] = []

    def queue_for(reason: str, explicit: str | None = None) -> str:
        return explicit or esc.reason_queues.get(reason) or esc.default_queue

    for name, topic in bundle.topics.items():
        for spec in _escalate_steps(topic.steps):
            first = bool(topic.steps) and isinstance(topic.steps[0], EscalateStep)
            kind: TriggerKind = "caller_request" if first and triggers.human_request else "topic"
            label = "mid-conversation" if kind == "caller_request" else "stated as the intent"
            cases.append(
                EscalationCase(
                    name=f"{kind}:{name}",
                    trigger=kind,
                    reason=spec.reason,
                    queue=queue_for(spec.reason, spec.queue),
                    topic=name,
                    description=f"topic '{name}' escalates ({spec.reason}); {label}",
                )
            )
    if triggers.misunderstandings:
        cases.append(
            EscalationCase(
                name="misunderstandings",
                trigger="misunderstandings",
                reason="misunderstandings",
                queue=queue_for("misunderstandings"),
                description=f"{triggers.misunderstandings} turns in a row the agent cannot understand",
            )
        )
    if triggers.verification_failed and agent.authentication.mode == "verify" and _verified_topics(bundle):
        cases.append(
            EscalationCase(
                name="verification_failed",
                trigger="verification_failed",
                reason="verification_failed",
                queue=queue_for("verification_failed"),
                description=f"wrong {agent.authentication.verify_with} {agent.authentication.max_attempts} times",
            )
        )
    if triggers.action_failed:
        target = _action_topic(bundle)
        if target is not None:
            cases.append(
                EscalationCase(
                    name="action_failed",
                    trigger="action_failed",
                    reason="action_failed",
                    queue=queue_for("action_failed"),
                    topic=target[0],
                    action=target[1],
                    description=f"action '{target[1]}' cannot reach its back end",
                )
            )
    if triggers.abusive_language and agent.generative.moderation != "off":
        cases.append(
            EscalationCase(
                name="abusive_language",
                trigger="abusive_language",
                reason="abusive_language",
                queue=queue_for("abusive_language"),
                description=f"abusive words at moderation level {agent.generative.moderation}",
            )
        )
    return cases


def _escalate_steps(steps: Iterable[Any]) -> Iterable[Any]:
    for step in steps:
        if isinstance(step, EscalateStep):
            yield step.escalate
        elif isinstance(step, ConfirmStep):
            yield from _escalate_steps(step.confirm.on_yes)
            yield from _escalate_steps(step.confirm.on_no)
        elif isinstance(step, BranchStep):
            for branch in step.branch.cases.values():
                yield from _escalate_steps(branch)
            yield from _escalate_steps(step.branch.default)
        elif isinstance(step, CallStep):
            yield from _escalate_steps(step.on_not_found)


def _calls(steps: Iterable[Any]) -> Iterable[str]:
    """Action calls on the path the gate drives (confirmations answered yes, first branch taken)."""
    for step in steps:
        if isinstance(step, CallStep):
            yield step.call
        elif isinstance(step, ConfirmStep):
            yield from _calls(step.confirm.on_yes)
        elif isinstance(step, EscalateStep):
            return


def _escalates(topic: Topic) -> bool:
    return any(True for _ in _escalate_steps(topic.steps))


def _verified_topics(bundle: BundleSource) -> list[Topic]:
    return [t for t in bundle.topics.values() if bundle.topic_requires_verification(t) and not _escalates(t)]


def _context_topic(bundle: BundleSource) -> Topic | None:
    """The request the caller makes before the trigger: verified if the agent verifies, most slots."""
    plain = [t for t in bundle.topics.values() if not _escalates(t)]
    if not plain:
        return None
    return max(plain, key=lambda t: (bundle.topic_requires_verification(t), len(t.slots), len(list(_calls(t.steps)))))


def _action_topic(bundle: BundleSource) -> tuple[str, str] | None:
    """A topic whose driven path calls an action other than verification: (topic, action)."""
    verify = bundle.agent.authentication.verify_action
    best: tuple[tuple[bool, int], str, str] | None = None
    for topic in bundle.topics.values():
        if _escalates(topic):
            continue
        calls = [c for c in _calls(topic.steps) if c != verify and c in bundle.agent.actions]
        if calls:
            rank = (bundle.topic_requires_verification(topic), len(topic.slots))
            if best is None or rank > best[0]:
                best = (rank, topic.name, calls[0])
    return None if best is None else (best[1], best[2])


# ---- the gate ---------------------------------------------------------------------------------


async def run_escalation_gate(
    bundle: BundleSource,
    *,
    runtime_factory: RuntimeFactory,
    fixtures: Sequence[FixtureCustomer | Mapping[str, Any]],
    required_fields: Sequence[str] = CONTEXT_FIELDS,
) -> SuiteResult:
    """Run one conversation per declared escalation trigger and check each queued context packet."""
    customers = [f if isinstance(f, FixtureCustomer) else FixtureCustomer.model_validate(dict(f)) for f in fixtures]
    if bundle.agent.authentication.mode == "verify" and not customers:
        raise ValueError(f"agent '{bundle.agent.name}' verifies callers: the escalation gate needs fixture customers")
    unknown = sorted(set(required_fields) - set(CONTEXT_FIELDS))
    if unknown:
        raise ValueError(f"unknown packet fields {unknown}; known: {list(CONTEXT_FIELDS)}")
    started = time.perf_counter()
    suite = SuiteResult(SUITE)
    recorder = MemoryRecorder()
    runtime = await _build(runtime_factory, bundle, recorder)
    try:
        for i, case in enumerate(plan_escalation_cases(bundle)):
            customer = customers[i % len(customers)] if customers else None
            if case.trigger == "action_failed":
                broken_recorder = MemoryRecorder()
                broken = await _build(runtime_factory, bundle, broken_recorder)
                try:
                    await _make_unreachable(broken, case.action or "")
                    suite.cases.append(await _run_case(case, broken, broken_recorder, customer, required_fields))
                finally:
                    await broken.aclose()
            else:
                suite.cases.append(await _run_case(case, runtime, recorder, customer, required_fields))
    finally:
        await runtime.aclose()
    suite.metrics = {
        "agent": bundle.agent.name,
        "cases": suite.total,
        "triggers": sorted({c.category for c in suite.cases}),
        "required_fields": list(required_fields),
        "run_ms": round((time.perf_counter() - started) * 1000, 1),
    }
    return suite


async def _build(factory: RuntimeFactory, bundle: BundleSource, recorder: MemoryRecorder) -> AgentRuntime:
    """The runtime under test, reporting to the gate's recorder (the queue the desk would read)."""
    made = factory()
    runtime: AgentRuntime = await made if inspect.isawaitable(made) else made
    if runtime.bundle.agent.name != bundle.agent.name:
        raise ValueError(f"runtime_factory serves '{runtime.bundle.agent.name}', not '{bundle.agent.name}'")
    runtime.recorder = recorder
    return runtime


async def _make_unreachable(runtime: AgentRuntime, action_name: str) -> None:
    """Route one action through a clone of its connector aimed at a closed port: a real failed call,
    while verification and every other action still reach the back end. The host policy and the
    secret resolver are kept."""
    agent = runtime.bundle.agent
    action = agent.actions[action_name]
    connector = agent.connectors[action.connector].model_copy(deep=True)
    connector.base_url = f"http://{connector.hosts[0]}:{_closed_port()}"
    clone = f"{action.connector}_unreachable"
    old = runtime.connectors
    runtime.connectors = ConnectorClient(
        {**agent.connectors, clone: connector},
        {**agent.actions, action_name: action.model_copy(update={"connector": clone})},
        host_policy=old.host_policy,
        secrets=old.secrets,
    )
    await old.aclose()


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---- one conversation --------------------------------------------------------------------------


class _Caller:
    """Answers what the session asks for, as the fixture customer, and notes what it said."""

    def __init__(self, session: Session, bundle: BundleSource, customer: FixtureCustomer | None):
        self.session = session
        self.bundle = bundle
        self.customer = customer
        self.log = _Transcript()
        self.wrong_secret = False
        self.turns = 0

    async def say(
        self, text: str, *, shown: str | None = None, secret: str | None = None, intent: str | None = None
    ) -> None:
        if self.session.ended:
            return
        self.turns += 1
        if self.turns > MAX_TURNS:
            raise _Stuck(f"no handoff after {MAX_TURNS} caller turns")
        if secret is not None:
            self.log.secrets.add(secret)
        if intent is not None:
            self.log.intents.append(intent)
        self.log.said.append(shown if shown is not None else text)
        await self.session.handle(text)

    async def state_intent(self, topic: Topic) -> None:
        await self.say(topic.triggers[0], intent=topic.name)

    async def answer_until(self, stop: Callable[[], bool]) -> None:
        """Answer prompts (identity, secret, slots, confirmations) until `stop()` or the call ends."""
        while not self.session.ended and not stop():
            kind = self.session.expecting().kind
            if kind in ("open", "ended"):
                return
            await self.answer()

    async def answer(self) -> None:
        exp = self.session.expecting()
        auth = self.bundle.agent.authentication
        if exp.kind == "identify":
            value = self._need(auth.identify_by)
            self.log.slots[auth.identify_by] = value
            await self.say(value)
        elif exp.kind == "secret":
            value = self._need(auth.verify_with)
            if self.wrong_secret:
                value = _wrong(value, auth.verify_with)
                self.log.trigger_turns += 1
            else:
                self.log.verified = True
            await self.say(value, shown=REDACTED, secret=value)
        elif exp.kind == "confirm":
            await self.say("yes")
        elif exp.kind == "slot":
            name = self.session.state.split(":", 1)[1]
            slot = self.session.stack[-1].topic.slots[name]
            text, expected = self._slot_value(name, slot)
            sensitive = slot.sensitive or slot.type == SlotType.pin
            self.log.slots[name] = REDACTED if sensitive else expected
            await self.say(text, shown=REDACTED if sensitive else None, secret=text if sensitive else None)

    def _need(self, name: str) -> str:
        value = self.customer.value(name) if self.customer else None
        if not value:
            raise _Stuck(f"the fixture customer has no '{name}' to answer with")
        return value

    def _slot_value(self, name: str, slot: Slot) -> tuple[str, Any]:
        """What to say for a slot, and the value the packet must then hold."""
        known = self.customer.value(name) if self.customer else None
        kind = slot.type
        if kind in (SlotType.digits, SlotType.postcode, SlotType.account_number, SlotType.pin):
            n = slot.length or slot.min_length or (5 if kind == SlotType.postcode else 4 if kind == SlotType.pin else 6)
            if known and known.isdigit() and (slot.length is None or len(known) == slot.length):
                return known, known
            digits = ("2468013579" * 4)[:n]
            return digits, digits
        if kind == SlotType.phone:
            value = known or "+15550100123"
            return value, value
        if kind == SlotType.date:
            day = dt.date.fromisoformat(known) if known else dt.date(2024, 1, 15)
            return day.isoformat(), day.isoformat()
        if kind == SlotType.yes_no:
            return "yes", True
        if kind == SlotType.money:
            return "23 dollars 50", 23.5
        if kind == SlotType.enum:
            assert slot.values  # nosec B101: type narrowing (test tooling)
            key = next(iter(slot.values))
            return key.replace("_", " "), key
        text = "it is for something I never asked for"
        return text, text


class _Stuck(Exception):
    """The simulated conversation could not go on as planned."""


def _wrong(secret: str, kind: str) -> str:
    if kind == "dob":
        return (dt.date.fromisoformat(secret) + dt.timedelta(days=1)).isoformat()
    return "".join(str((int(c) + 1) % 10) if c.isdigit() else c for c in secret)


def _abusive_sentence(level: str) -> str:
    text = resources.files("voxgate.runtime").joinpath("data/abuse_lexicon.txt").read_text("utf-8")
    for line in text.splitlines():
        term = line.strip().rpartition(" ")[0].strip()
        if term and not line.startswith("#"):
            sentence = f"this is useless, {term}"
            if abusive_terms(sentence, level):
                return sentence
    raise _Stuck(f"no term in the moderation lexicon is abusive at level {level!r}")


async def _drive(case: EscalationCase, caller: _Caller, bundle: BundleSource) -> None:
    session = caller.session
    triggers = bundle.agent.escalation.triggers
    context = _context_topic(bundle)

    async def context_request(*, complete: bool) -> None:
        if context is None:
            return
        await caller.state_intent(context)
        if complete:
            await caller.answer_until(lambda: False)
        else:  # stop at the last question: slots given, nothing committed yet
            await caller.answer_until(lambda: session.expecting().kind == "confirm" or _last_slot_pending(session))

    if case.trigger == "caller_request":
        await context_request(complete=False)
        await caller.state_intent(bundle.topics[case.topic or ""])
    elif case.trigger == "topic":
        await caller.state_intent(bundle.topics[case.topic or ""])
        await caller.answer_until(lambda: False)
    elif case.trigger == "abusive_language":
        await context_request(complete=False)
        await caller.say(_abusive_sentence(bundle.agent.generative.moderation))
    elif case.trigger == "misunderstandings":
        await context_request(complete=True)
        for text in _UNINTELLIGIBLE[: triggers.misunderstandings + 2]:
            if not session.ended:
                caller.log.trigger_turns += 1
            await caller.say(text)
    elif case.trigger == "verification_failed":
        caller.wrong_secret = True
        topic = max(_verified_topics(bundle), key=lambda t: len(t.slots))
        await caller.state_intent(topic)
        await caller.answer_until(lambda: False)
    elif case.trigger == "action_failed":
        await caller.state_intent(bundle.topics[case.topic or ""])
        await caller.answer_until(lambda: False)


def _last_slot_pending(session: Session) -> bool:
    if not session.stack or not session.state.startswith("collecting:"):
        return False
    run = session.stack[-1]
    name = session.state.split(":", 1)[1]
    asked = [s.ask for s in run.topic.steps if isinstance(s, AskStep)]
    return bool(asked) and name == asked[-1] and len(run.filled) > 0


async def _run_case(
    case: EscalationCase,
    runtime: AgentRuntime,
    recorder: MemoryRecorder,
    customer: FixtureCustomer | None,
    required_fields: Sequence[str],
) -> CaseResult:
    started = time.perf_counter()
    session = runtime.new_session(channel="test")
    await session.start()
    caller = _Caller(session, runtime.bundle, customer)
    problems: list[str] = []
    try:
        await _drive(case, caller, runtime.bundle)
    except _Stuck as exc:
        problems.append(f"conversation stuck: {exc}")
    await session.close("gate")
    handoffs = [h for h in recorder.handoffs if h[0] == session.id]
    calls = [(name, status) for sid, name, status in recorder.action_calls if sid == session.id]
    checks = _check_packet(case, caller, runtime.bundle, handoffs, calls, session, required_fields)
    failed = [c for c in checks if not c.ok]
    failures = problems[:]
    if failed:
        failures.insert(
            0,
            f"context packet differs from the conversation in {len(failed)} field(s): "
            + ", ".join(c.field for c in failed)
            + "\n"
            + format_side_by_side(failed),
        )
    expected = {c.field: c.expected for c in checks}
    actual = {c.field: c.actual for c in checks}
    packet = handoffs[-1][3] if handoffs else None
    return CaseResult(
        name=case.name,
        passed=not failures,
        category=case.trigger,
        failures=failures,
        details={
            "description": case.description,
            "customer_id": customer.customer_id if customer else None,
            "expected": expected,
            "actual": actual,
            "diff": unified_packet_diff(expected, actual) if failed else "",
            "caller_turns": caller.log.said,
            "packet": _scrub(packet, caller.log.secrets),
            "outcome": session.outcome,
        },
        duration_ms=round((time.perf_counter() - started) * 1000, 1),
    )


# ---- the checks ---------------------------------------------------------------------------------


def _check_packet(
    case: EscalationCase,
    caller: _Caller,
    bundle: BundleSource,
    handoffs: list[tuple[str, str, str, dict[str, Any]]],
    calls: list[tuple[str, str]],
    session: Session,
    required: Sequence[str],
) -> list[FieldCheck]:
    log = caller.log
    secrets = log.secrets
    auth = bundle.agent.authentication
    checks = [
        FieldCheck("handoffs", 1, len(handoffs), len(handoffs) == 1),
        FieldCheck("outcome", "escalated", session.outcome, session.outcome == "escalated"),
    ]
    if not handoffs:
        return checks
    _, queued_to, queued_reason, packet = handoffs[-1]

    def get(path: str) -> Any:
        node: Any = packet
        for part in path.split("."):
            if not isinstance(node, dict) or part not in node:
                return MISSING
            node = node[part]
        return _scrub(node, secrets)

    def add(name: str, expected: Any, actual: Any, ok: bool | None = None) -> None:
        checks.append(FieldCheck(name, expected, actual, expected == actual if ok is None else ok))

    if case.trigger in _COUNTED:
        limit = _COUNTED[case.trigger](bundle)
        add("trigger_turns", limit, log.trigger_turns)
    add("queue", case.queue, get("queue"), case.queue == packet.get("queue") == queued_to)
    if "reason" in required:
        add("reason", case.reason, get("reason"), case.reason == packet.get("reason") == queued_reason)

    verified = log.verified
    customer = caller.customer
    if "identity" in required:
        add("identity.verified", verified, get("identity.verified"))
        add(
            "identity.customer_id", customer.customer_id if verified and customer else None, get("identity.customer_id")
        )
        said_id = log.slots.get(auth.identify_by) if auth.identify_by == "account_number" else None
        actual_acct = get("identity.account_number")
        add("identity.account_number", said_id, actual_acct, _account_matches(said_id, actual_acct))
        if verified and customer is not None and customer.first_name:
            add("identity.name", customer.first_name, get("identity.name"))
        if verified:
            add("identity.method", f"{auth.identify_by}+{auth.verify_with}", get("identity.method"))
    if "verified" in required:
        add("verified", verified, get("verified"))
    if "intents" in required:
        raw = packet.get("intents")
        names = (
            list(dict.fromkeys(i.get("intent") for i in raw if isinstance(i, dict)))
            if isinstance(raw, list)
            else MISSING
        )
        stated = list(dict.fromkeys(log.intents))
        add("intents", stated, names, isinstance(names, list) and all(n in names for n in stated))
    if "slots" in required:
        for name, value in log.slots.items():
            actual = get(f"slots.{name}")
            add(f"slots.{name}", value, actual, _slot_matches(value, actual))
    if "actions" in required:
        listed = packet.get("actions")
        actual_calls = (
            [f"{a.get('name')}:{a.get('status')}" for a in listed if isinstance(a, dict)]
            if isinstance(listed, list)
            else MISSING
        )
        made = [f"{n}:{s}" for n, s in calls]
        add("actions", made, actual_calls)
        if verified and auth.verify_action:
            add(
                "actions.verification",
                f"{auth.verify_action}:ok",
                _first(actual_calls, auth.verify_action),
                _first(actual_calls, auth.verify_action) == f"{auth.verify_action}:ok",
            )
        if case.trigger == "action_failed":
            failed = [c for c in actual_calls if not c.endswith(":ok")] if isinstance(actual_calls, list) else []
            add("actions.failed", "an action that did not return ok", failed or MISSING, bool(failed))
    if "summary" in required:
        mentions = ([customer.customer_id] if verified and customer else []) + [
            i.replace("_", " ") for i in dict.fromkeys(log.intents)
        ]
        mentions += [n for n, _ in dict.fromkeys(calls)]
        summary = get("summary")
        text = summary.lower() if isinstance(summary, str) else ""
        add(
            "summary",
            {"mentions": mentions},
            summary,
            isinstance(summary, str) and all(m.lower() in text for m in mentions),
        )
    if "transcript" in required:
        raw_lines = packet.get("transcript")
        lines = (
            [str(t.get("text", "")) for t in raw_lines if isinstance(t, dict) and t.get("role") == "user"]
            if isinstance(raw_lines, list)
            else None
        )
        shown = [_shown_line(line, said, secrets) for line, said in zip(lines or [], log.said)] + [
            _scrub(line, secrets) for line in (lines or [])[len(log.said) :]
        ]
        add("transcript.caller", log.said, shown if lines is not None else MISSING)
    leaks = _secret_paths(packet, secrets)
    add("secrets", [], leaks)
    return checks


_COUNTED: dict[str, Callable[[BundleSource], int]] = {
    "misunderstandings": lambda b: b.agent.escalation.triggers.misunderstandings,
    "verification_failed": lambda b: b.agent.authentication.max_attempts,
}


def _first(calls: Any, name: str) -> Any:
    if not isinstance(calls, list):
        return MISSING
    return next((c for c in calls if c.startswith(f"{name}:")), MISSING)


def _account_matches(expected: str | None, actual: Any) -> bool:
    """Equal, or masked the way a packet may mask it: same length, hidden characters, the rest equal."""
    if expected is None or actual is None or not isinstance(actual, str):
        return bool(expected == actual)
    if actual == expected:
        return True
    if len(actual) != len(expected) or not any(c.isdigit() for c in actual):
        return False
    return all(a == e or a in "*•Xx#" for a, e in zip(actual, expected))


def _slot_matches(expected: Any, actual: Any) -> bool:
    if expected == REDACTED:
        return bool(actual == REDACTED)
    if isinstance(expected, float) and isinstance(actual, (int, float)) and not isinstance(actual, bool):
        return abs(expected - float(actual)) < 0.005
    return bool(expected == actual)


def _shown_line(line: str, said: str, secrets: set[str]) -> str:
    """A caller line as shown in the diff: a properly redacted secret turn reads as REDACTED."""
    if said == REDACTED and line and not _leaks(line, secrets):
        return REDACTED
    return str(_scrub(line, secrets))


def _token(secret: str) -> re.Pattern[str]:
    return re.compile(r"(?<![0-9A-Za-z])" + re.escape(secret) + r"(?![0-9A-Za-z])")


def _leaks(text: str, secrets: set[str]) -> bool:
    return any(_token(s).search(text) for s in secrets if s)


def _scrub(value: Any, secrets: set[str]) -> Any:
    """A copy safe to store as evidence: any secret the caller said is replaced by LEAKED."""
    if isinstance(value, str):
        for s in secrets:
            if s:
                value = _token(s).sub(LEAKED, value)
        return value
    if isinstance(value, dict):
        return {k: _scrub(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub(v, secrets) for v in value]
    return value


_NOT_CALLER_DATA = {"session_id", "bundle_digest", "created_at", "duration_ms", "agent_version", "confidence", "turn"}


def _secret_paths(node: Any, secrets: set[str], path: str = "") -> list[str]:
    """Where in the packet a secret the caller said appears (the paths only, never the value)."""
    found: list[str] = []
    if isinstance(node, dict):
        for k, v in node.items():
            if k not in _NOT_CALLER_DATA:
                found += _secret_paths(v, secrets, f"{path}.{k}" if path else str(k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            found += _secret_paths(v, secrets, f"{path}[{i}]")
    elif node is not None and _leaks(str(node), secrets):
        found.append(path)
    return found


# ---- showing a difference -------------------------------------------------------------------


def _cell(value: Any, width: int = 60) -> str:
    text = value if value == MISSING else json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= width else text[: width - 1] + "…"


def format_side_by_side(checks: Sequence[FieldCheck]) -> str:
    """A small table: one row per field, what the conversation established beside what the desk got."""
    rows = [("field", "expected", "packet on the queue")] + [
        (c.field, _cell(c.expected), _cell(c.actual)) for c in checks
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = [" | ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def unified_packet_diff(expected: Mapping[str, Any], actual: Mapping[str, Any]) -> str:
    """A unified diff of the expected and actual packet fields as JSON documents."""
    a = json.dumps(expected, indent=2, sort_keys=True, ensure_ascii=False, default=str).splitlines()
    b = json.dumps(actual, indent=2, sort_keys=True, ensure_ascii=False, default=str).splitlines()
    return "\n".join(difflib.unified_diff(a, b, "expected", "packet on the queue", lineterm=""))
