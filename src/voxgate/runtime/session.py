"""The conversation state machine: caller text in, replies and structured events out."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from voxgate.bundle.models import (
    AnswerStep,
    AskStep,
    BranchStep,
    CallStep,
    ConfirmStep,
    EndStep,
    EscalateStep,
    SayStep,
    Slot,
    SlotType,
    Topic,
)
from voxgate.clock import utcnow
from voxgate.runtime.connectors import ActionResult, CallContext
from voxgate.runtime.digits import DigitGatherer, read_back
from voxgate.runtime.events import TurnResult, plain
from voxgate.runtime.lockout import LockoutPolicy, Verdict
from voxgate.runtime.moderation import abusive_terms
from voxgate.runtime.nlu.intents import IntentPrediction
from voxgate.runtime.nlu.numbers import extract_digit_string, normalize_numbers
from voxgate.runtime.nlu.slots import DIGIT_SLOT_TYPES, SlotParse, parse_slot
from voxgate.runtime.packet import build_packet
from voxgate.runtime.recorder import deliver
from voxgate.runtime.records import (
    VOICE_CHANNELS,
    ActionCalled,
    CallerVerified,
    HandedOff,
    SecurityEvent,
    SessionEnded,
    SessionFacts,
    SessionRecord,
    SessionStarted,
    TurnTaken,
    VoiceTurnTimed,
)
from voxgate.runtime.snapshot import (
    SNAPSHOT_FORMAT,
    WITHHELD,
    AuthSnapshot,
    LineSnapshot,
    SessionSnapshot,
    SnapshotError,
    TopicRunSnapshot,
    answers_from_knowledge,
    decode_frames,
    decode_value,
    encode_frames,
    encode_value,
)
from voxgate.runtime.templates import render, resolve
from voxgate.runtime.writer import OrderedWriter, WriteFailure
from voxgate.tracing import ConversationTrace, wall_ns

if TYPE_CHECKING:
    from voxgate.runtime.engine import AgentRuntime

log = logging.getLogger("voxgate.runtime")

# How sure the classifier must be before a caller's words may interrupt what is in progress.
DIGRESSION_CONFIDENCE = 0.6
HUMAN_REQUEST_CONFIDENCE = 0.55
# On a call, the miss of a number after which the caller is told they can key it in instead
KEYPAD_AFTER_MISSES = 2

# An answer of nothing but digits, where digits were asked for, has no intent to look for: the
# classifier is not asked (it costs tens of ms on a busy worker, and a PIN is not a request).
_DIGITS_ONLY = re.compile(
    r"(?:[\d\s.,;:!?#*-]|\b(?:zero|oh|o|one|two|three|four|five|six|seven|eight|nine|double|triple)\b)+",
    re.IGNORECASE,
)

_GOODBYE_RE = re.compile(
    r"\b(bye|goodbye|good bye|that'?s (all|it|everything)|nothing else|no that'?s (all|it)|i'?m (all )?(good|done|fine)|thanks?,? (that'?s|i'?m) (all|it|done))\b",
    re.IGNORECASE,
)


@dataclass
class TopicRun:
    """A topic in progress: its program counter as a stack of (steps, index) frames."""

    topic: Topic
    trigger_text: str
    frames: list[list[Any]] = field(default_factory=list)
    waiting: str | None = None  # "slot:<name>" or "confirm"
    attempts: int = 0
    filled: set[str] = field(default_factory=set)

    def current(self) -> Any | None:
        """The step to run next, popping finished frames; None when the topic is done."""
        while self.frames:
            steps, idx = self.frames[-1]
            if idx < len(steps):
                return steps[idx]
            self.frames.pop()
        return None

    def advance(self) -> None:
        """Move past the current step."""
        self.frames[-1][1] += 1


@dataclass(frozen=True)
class Expectation:
    """kind: open | slot | confirm | identify | secret | ended; value_type: a slot type."""

    kind: str
    value_type: str | None = None
    length: int | None = None


@dataclass
class AuthState:
    """Where the caller is in authentication: the stage, the identifier given, and failures so far."""

    stage: str = "identify"  # identify -> secret
    identifier: str | None = None
    failures: int = 0
    tries_in_stage: int = 0


@dataclass
class TranscriptLine:
    """One line of the transcript: who said it, what, and when."""

    role: str
    text: str
    at: float


def _slot_length(slot: Slot) -> int | None:
    """The digits a slot's number has, where that is fixed (a postcode has five, a PIN four by default)."""
    length = slot.length or (5 if slot.type == SlotType.postcode else None)
    if slot.type == SlotType.pin:
        length = length or 4
    return length


class Session:
    """One conversation with one caller on one bundle version. Not shared between tasks."""

    def __init__(
        self,
        runtime: AgentRuntime,
        *,
        session_id: str | None = None,
        channel: str = "text",
        today: dt.date | None = None,
        defer_records: bool = False,
    ):
        self.runtime = runtime
        self.bundle = runtime.bundle
        self.agent = runtime.bundle.agent
        self.id = session_id or uuid.uuid4().hex
        self.channel = channel
        self.today = today
        self.started_at = time.time()
        self.ended = False
        self.outcome: str | None = None
        self.state = "new"
        self.stack: list[TopicRun] = []
        self.auth: AuthState | None = None
        self.verified = False
        self.customer_id: str | None = None
        self.customer_name: str | None = None
        self.account_number: str | None = None
        self.slots: dict[str, Any] = {}
        self.sensitive_slots: set[str] = set()
        # the number being given in pieces over several turns, if any (never in a snapshot: a caller whose
        # worker changed gives it again)
        self.digits: DigitGatherer | None = None
        self.vars: dict[str, Any] = {}
        self.intents: list[dict[str, Any]] = []
        self.actions: list[dict[str, Any]] = []
        self.topics_done: list[dict[str, str]] = []
        self.transcript: list[TranscriptLine] = []
        self.misunderstandings = 0
        self.escalation: dict[str, Any] | None = None
        self.turn_no = 0
        self.heard_speech = False  # speech the recogniser could not turn into words still engages
        self.silences = 0
        # Every record goes through one ordered writer. Voice calls let it write behind the
        # conversation rather than make the caller wait for the database; close() drains it.
        self.defer_records = defer_records
        self._writer = OrderedWriter(self.id)
        self.trace = ConversationTrace(
            session_id=self.id,
            agent=self.agent.name,
            version=self.agent.version,
            environment=getattr(runtime, "environment", None),
            channel=channel,
        )

    # ---- public API ---------------------------------------------------------------------

    async def start(self) -> TurnResult:
        """Open the conversation: record the start and say the greeting."""
        out = TurnResult(user=None)
        await self.record(SessionStarted(self.facts(), at=utcnow()))
        out.emit("session_started", session_id=self.id, agent=self.agent.name, channel=self.channel)
        out.say(self.agent.voice.greeting)
        self.state = "idle"
        return await self._finish_turn(out)

    async def handle(
        self, text: str, *, dtmf: bool = False, on_reply: Callable[[str], None] | None = None
    ) -> TurnResult:
        """Process one caller turn (recognised speech, typed text or DTMF digits).

        `on_reply` hears each reply as soon as it is said, while the turn may still wait on a
        connector; what it hears is final (the result's `replies`, in the same order).
        """
        started = time.perf_counter()
        text = (text or "").strip()
        out = TurnResult(user=text, listener=on_reply)
        if self.ended:
            out.say(self.agent.messages.conversation_ended)
            out.state, out.ended, out.outcome = "ended", True, self.outcome
            return out
        self.turn_no += 1
        self.silences = 0
        self._log("user", text)

        if not dtmf and self.agent.escalation.triggers.abusive_language:
            terms = abusive_terms(text, self.agent.generative.moderation)
            if terms:
                out.emit("abuse", count=len(terms))
                out.say(self.agent.messages.abuse)
                await self._escalate("abusive_language", None, None, out)
                return await self._finish_turn(out, started)

        pred = None
        digits_only = self.expecting().value_type in DIGIT_SLOT_TYPES and _DIGITS_ONLY.fullmatch(text) is not None
        if not dtmf and text and not digits_only:
            t0 = time.perf_counter()
            pred = await self.runtime.predict(text)
            out.timings_ms["nlu"] = (time.perf_counter() - t0) * 1000
            out.intent = None if pred.out_of_scope else pred.intent
            out.confidence = pred.confidence
            out.emit("intent", intent=out.intent, confidence=round(pred.confidence, 3), out_of_scope=pred.out_of_scope)
            if out.intent:
                self.intents.append(
                    {"intent": out.intent, "confidence": round(pred.confidence, 3), "turn": self.turn_no}
                )

        if self.verified and await self._guard_other_account(text, out):
            return await self._finish_turn(out, started)

        if (
            pred is not None
            and not pred.out_of_scope
            and pred.intent is not None
            and pred.intent == self.runtime.human_topic
            and pred.confidence >= HUMAN_REQUEST_CONFIDENCE
            and self.agent.escalation.triggers.human_request
            and not self._topic_active(pred.intent)
        ):
            await self._start_topic(self.bundle.topics[pred.intent], text, out)
            return await self._finish_turn(out, started)

        if self.auth is not None:
            await self._handle_auth(text, pred, out, dtmf=dtmf)
        elif self.stack and self.stack[-1].waiting:
            await self._handle_waiting(self.stack[-1], text, pred, out, dtmf=dtmf)
        else:
            await self._handle_open(text, pred, out)
        return await self._finish_turn(out, started)

    async def record(self, record: SessionRecord) -> None:
        """Hand a record to the recorder, in order: written now, or behind the conversation when deferred.

        A write that keeps failing is reported by the writer (and raised here when not deferred).
        """
        written = self._submit(record)
        if not self.defer_records:
            await asyncio.shield(written)

    def record_voice_turn(self, timing: Mapping[str, Any]) -> None:
        """Record the timings of the voice turn just taken, behind the conversation."""
        self._submit(VoiceTurnTimed.of(self.facts(), self.turn_no, timing))

    async def record_action(self, result: ActionResult) -> None:
        """Record a connector call (the audit chain sees every one)."""
        action = self.agent.actions.get(result.action)
        await self.record(
            ActionCalled(
                self.facts(),
                action=result.action,
                status=result.status,
                http_status=result.http_status,
                error=result.error,
                customer_scoped=bool(action and action.customer_scoped),
            )
        )

    async def drain(self) -> None:
        """Wait until every record of this session so far is written (or reported as failed)."""
        await self._writer.drain()

    @property
    def unrecorded(self) -> list[WriteFailure]:
        """Records of this session that could not be written, after every attempt."""
        return list(self._writer.failures)

    def facts(self) -> SessionFacts:
        """Who and what this session is about, now: the facts every record carries."""
        accounts = {str(v) for v in (self.account_number, self.slots.get("account_number")) if v}
        phone = self.slots.get("phone")
        return SessionFacts(
            session_id=self.id,
            agent=self.agent,
            topics=tuple(self.bundle.topics.values()),
            bundle_digest=self.runtime.digest,
            environment=self.runtime.environment,
            channel=self.channel,
            customer_id=self.customer_id,
            customer_name=self.customer_name,
            account_numbers=tuple(sorted(accounts)),
            phone=str(phone) if phone else None,
        )

    # ---- between turns, on another worker (runtime/snapshot.py) ---------------------------------

    def snapshot(self) -> SessionSnapshot:
        """What the next turn depends on, to continue this conversation on any worker (after a turn)."""
        declared = {name for run in self.stack for name in run.topic.slots}
        slots = {
            name: encode_value(value if name not in self.sensitive_slots or name in declared else WITHHELD)
            for name, value in self.slots.items()
        }
        keep_transcript = "transcript" in self.agent.escalation.context_fields
        return SessionSnapshot(
            format_version=SNAPSHOT_FORMAT,
            session_id=self.id,
            agent=self.agent.name,
            agent_version=self.agent.version,
            bundle_digest=self.runtime.digest,
            environment=self.runtime.environment,
            channel=self.channel,
            today=self.today,
            started_at=self.started_at,
            turn_no=self.turn_no,
            state=self.state,
            ended=self.ended,
            outcome=self.outcome,
            stack=tuple(
                TopicRunSnapshot(
                    topic=run.topic.name,
                    frames=encode_frames(run.topic, run.frames),
                    waiting=run.waiting,
                    attempts=run.attempts,
                    filled=tuple(sorted(run.filled)),
                    trigger_text=run.trigger_text if answers_from_knowledge(run.topic) else None,
                )
                for run in self.stack
            ),
            auth=(
                AuthSnapshot(
                    stage="secret" if self.auth.stage == "secret" else "identify",
                    identifier=self.auth.identifier,
                    failures=self.auth.failures,
                    tries_in_stage=self.auth.tries_in_stage,
                )
                if self.auth is not None
                else None
            ),
            verified=self.verified,
            customer_id=self.customer_id,
            customer_name=self.customer_name,
            account_number=self.account_number,
            slots=slots,
            sensitive_slots=tuple(sorted(self.sensitive_slots)),
            vars=encode_value(self.vars),
            intents=tuple(encode_value(i) for i in self.intents),
            actions=tuple(encode_value(a) for a in self.actions),
            topics_done=tuple(dict(t) for t in self.topics_done),
            transcript=(
                tuple(LineSnapshot(role=t.role, text=t.text, at=t.at) for t in self.transcript)
                if keep_transcript
                else None
            ),
            misunderstandings=self.misunderstandings,
            heard_speech=self.heard_speech,
            silences=self.silences,
        )

    @classmethod
    def restore(cls, snapshot: SessionSnapshot, runtime: AgentRuntime, *, defer_records: bool = False) -> Session:
        """The conversation `snapshot` holds, continued on `runtime`: the same agent, bundle version and
        environment it started on (SnapshotError otherwise). Its records go to `runtime`'s recorder."""
        if (snapshot.agent, snapshot.bundle_digest, snapshot.environment) != (
            runtime.agent.name,
            runtime.digest,
            runtime.environment,
        ):
            raise SnapshotError(
                f"conversation {snapshot.session_id} started on {snapshot.agent} "
                f"{snapshot.bundle_digest or snapshot.agent_version} in {snapshot.environment}; "
                f"this runtime serves {runtime.agent.name} {runtime.digest or runtime.agent.version} "
                f"in {runtime.environment}"
            )
        session = cls(
            runtime,
            session_id=snapshot.session_id,
            channel=snapshot.channel,
            today=snapshot.today,
            defer_records=defer_records,
        )
        topics = runtime.bundle.topics
        missing = sorted({run.topic for run in snapshot.stack} - set(topics))
        if missing:
            raise SnapshotError(f"conversation {snapshot.session_id}: no topic named {', '.join(missing)}")
        session.started_at = snapshot.started_at
        session.turn_no = snapshot.turn_no
        session.state = snapshot.state
        session.ended = snapshot.ended
        session.outcome = snapshot.outcome
        session.stack = [
            TopicRun(
                topic=topics[run.topic],
                trigger_text=run.trigger_text or "",
                frames=decode_frames(topics[run.topic], run.frames),
                waiting=run.waiting,
                attempts=run.attempts,
                filled=set(run.filled),
            )
            for run in snapshot.stack
        ]
        if snapshot.auth is not None:
            session.auth = AuthState(
                stage=snapshot.auth.stage,
                identifier=snapshot.auth.identifier,
                failures=snapshot.auth.failures,
                tries_in_stage=snapshot.auth.tries_in_stage,
            )
        session.verified = snapshot.verified
        session.customer_id = snapshot.customer_id
        session.customer_name = snapshot.customer_name
        session.account_number = snapshot.account_number
        session.slots = {name: decode_value(value) for name, value in snapshot.slots.items()}
        session.sensitive_slots = set(snapshot.sensitive_slots)
        session.vars = decode_value(snapshot.vars)
        session.intents = [decode_value(i) for i in snapshot.intents]
        session.actions = [decode_value(a) for a in snapshot.actions]
        session.topics_done = [dict(t) for t in snapshot.topics_done]
        session.transcript = [TranscriptLine(t.role, t.text, t.at) for t in snapshot.transcript or ()]
        session.misunderstandings = snapshot.misunderstandings
        session.heard_speech = snapshot.heard_speech
        session.silences = snapshot.silences
        return session

    def suspend(self) -> None:
        """This worker lets go of the conversation while it goes on (another worker continues it):
        its span here ends; nothing is recorded (the conversation has not ended)."""
        self.trace.end(outcome=None)

    def _submit(self, record: SessionRecord) -> asyncio.Future[None]:
        recorder = self.runtime.recorder
        return self._writer.submit(lambda: deliver(recorder, record), type(record).__name__)

    def expecting(self) -> Expectation:
        """What the session waits for next: lets a voice channel judge if the words are complete."""
        if self.ended:
            return Expectation("ended")
        cfg = self.agent.authentication
        if self.auth is not None:
            if self.auth.stage == "identify":
                if cfg.identify_by == "phone":
                    return Expectation("identify", "phone")
                return self._number_expected(Expectation("identify", "account_number", cfg.account_number_length))
            if cfg.verify_with == "pin":
                return self._number_expected(Expectation("secret", "pin", cfg.pin_length))
            return Expectation("secret", "date")
        run = self.stack[-1] if self.stack else None
        if run is not None and run.waiting:
            if run.waiting == "confirm":
                return Expectation("confirm", "yes_no")
            slot = run.topic.slots[run.waiting.removeprefix("slot:")]
            return self._number_expected(Expectation("slot", slot.type.value, _slot_length(slot)))
        if self.state == "anything_else":
            return Expectation("open", "yes_no")  # "anything else?": a yes/no, or a new request
        return Expectation("open")

    def _number_expected(self, asked: Expectation) -> Expectation:
        """What is expected while a number is given in pieces: the digits still to come, or a yes or no
        to the number read back."""
        gatherer = self.digits
        if gatherer is None or gatherer.question != self._question() or asked.length is None:
            return asked
        if gatherer.pending is not None:
            return Expectation(asked.kind, "yes_no")
        if gatherer.so_far:
            return Expectation(asked.kind, asked.value_type, gatherer.remaining)
        return asked

    def _question(self) -> str:
        """Which question the session is asking now (a number's pieces belong to one question)."""
        if self.auth is not None:
            return f"auth:{self.auth.stage}"
        run = self.stack[-1] if self.stack else None
        return f"{run.topic.name}:{run.waiting}" if run is not None and run.waiting else ""

    @property
    def engaged(self) -> bool:
        """Whether the caller took part: said or keyed anything (outcome `unengaged` otherwise)."""
        return self.turn_no > 0 or self.heard_speech

    async def unheard(self) -> TurnResult:
        """The caller spoke but no words could be recognised: ask again, as a misunderstanding."""
        out = TurnResult(user=None)
        if self.ended:
            out.state, out.ended, out.outcome = "ended", True, self.outcome
            return out
        self.misunderstandings += 1
        self.heard_speech = True
        out.emit("no_match", count=self.misunderstandings, unheard=True)
        limit = self.agent.escalation.triggers.misunderstandings
        if limit and self.misunderstandings >= limit:
            await self._escalate("misunderstandings", None, None, out)
            return await self._finish_turn(out)
        out.say(self.agent.messages.fallback)
        pending = self._pending_question()
        if pending:
            out.say(pending)
        return await self._finish_turn(out)

    async def no_input(self) -> TurnResult:
        """The caller said nothing for the silence timeout: reprompt, or end after too many."""
        out = TurnResult(user=None)
        if self.ended:
            out.state, out.ended, out.outcome = "ended", True, self.outcome
            return out
        self.silences += 1
        out.emit("no_input", count=self.silences)
        voice = self.agent.voice
        if self.silences > voice.silence_reprompts:
            out.say(voice.no_input_goodbye)
            await self._end_session("abandoned" if self.engaged else "unengaged", out)
            return await self._finish_turn(out)
        out.say(voice.no_input_message)
        pending = self._pending_question()
        out.say(pending or self.agent.messages.anything)
        return await self._finish_turn(out)

    def _pending_question(self) -> str:
        cfg = self.agent.authentication
        if self.auth is not None:
            return cfg.identify_prompt if self.auth.stage == "identify" else cfg.secret_prompt
        if self.stack and self.stack[-1].waiting:
            return self._pending_prompt(self.stack[-1])
        if self.state == "anything_else":
            return self.agent.messages.anything_else
        return ""

    async def close(self, reason: str = "hangup") -> str:
        """The caller left (or the chat ended); decide the outcome if it is not decided yet."""
        if not self.ended:
            busy = bool(self.stack) or self.auth is not None
            resolved = any(t["outcome"] == "resolved" for t in self.topics_done)
            if not self.engaged:
                self.outcome = "unengaged"  # the caller never said (or keyed) anything
            else:
                self.outcome = "resolved" if resolved and not busy else "abandoned"
            self.ended = True
            self.state = "ended"
            await self.record(self._ended(reason))
        self.trace.end(outcome=self.outcome, escalation_reason=(self.escalation or {}).get("reason"))
        await self.drain()
        return self.outcome or "abandoned"

    # ---- turn handling ------------------------------------------------------------------

    async def _handle_open(self, text: str, pred: IntentPrediction | None, out: TurnResult) -> None:
        # the topic the caller asked for, when the classifier named one in scope
        asked = pred.intent if pred is not None and not pred.out_of_scope and pred.intent is not None else None
        if self.state == "anything_else" and not asked:
            yn = parse_slot("yes_no", text)
            if _GOODBYE_RE.search(text) or (yn.ok and yn.value is False):
                await self._end_session("resolved", out, goodbye=True)
                return
            if yn.ok and yn.value is True:
                out.say(self.agent.messages.what_else)
                self.state = "idle"
                return
        elif not asked and _GOODBYE_RE.search(text):
            await self._end_session("resolved" if self.topics_done else "abandoned", out, goodbye=True)
            return
        if asked:
            await self._start_topic(self.bundle.topics[asked], text, out)
            return
        await self._no_match(text, out, refused=pred is not None and pred.reason == "negative")

    async def _no_match(self, text: str, out: TurnResult, *, refused: bool = False) -> None:
        """No topic matched: answer from knowledge if it can, else refuse (or escalate after N).

        `refused`: the words match the agent's own refuse examples, which the author declared
        out of scope, so no knowledge passage may answer them instead (a store page must not
        turn "I want to buy a new phone" into a sales answer)."""
        gen = self.agent.generative
        if gen.answers != "off" and self.runtime.knowledge is not None and text and not refused:
            hit = await self.runtime.answer(text, gen.min_score)
            if hit is not None:
                self.misunderstandings = 0
                out.say(hit.passage.text)
                out.citations.append(hit.passage.citation)
                out.emit("knowledge_answer", citation=hit.passage.citation, score=round(hit.score, 3))
                out.say(self.agent.messages.anything_else)
                self.state = "anything_else"
                return
        self.misunderstandings += 1
        out.emit("no_match", count=self.misunderstandings)
        limit = self.agent.escalation.triggers.misunderstandings
        if limit and self.misunderstandings >= limit:
            await self._escalate("misunderstandings", None, None, out)
            return
        out.emit("refused", reason="out_of_scope")
        out.say(render(self.agent.scope.refusal_message, {"capabilities": self.runtime.capabilities}))

    async def _start_topic(self, topic: Topic, text: str, out: TurnResult) -> None:
        self.misunderstandings = 0
        if self.stack and self.stack[-1].waiting:
            out.emit("digression", from_topic=self.stack[-1].topic.name, to_topic=topic.name)
        run = TopicRun(topic=topic, trigger_text=text, frames=[[topic.steps, 0]])
        self.stack.append(run)
        out.emit("topic_started", topic=topic.name)
        for name, slot in topic.slots.items():
            if slot.fills_from_trigger:
                parsed = self._parse(slot, text)
                if parsed.ok:
                    self._fill(name, slot, parsed.value, out)
        if self.bundle.topic_requires_verification(topic) and not self.verified:
            self.auth = AuthState()
            out.emit("verification_started", topic=topic.name)
            auth = self.agent.authentication
            out.say(f"{auth.intro} {auth.identify_prompt}")
            self.state = "verifying"
            return
        await self._run(out)

    async def _handle_waiting(
        self, run: TopicRun, text: str, pred: IntentPrediction | None, out: TurnResult, *, dtmf: bool
    ) -> None:
        # the topic the caller digresses to, if they clearly asked for another one
        other = (
            pred.intent
            if pred is not None
            and not pred.out_of_scope
            and pred.intent is not None
            and pred.intent != run.topic.name
            and pred.confidence >= DIGRESSION_CONFIDENCE
            and run.topic.allow_digression
            and not self._topic_active(pred.intent)
            else None
        )
        if run.waiting == "confirm":
            yn = parse_slot("yes_no", text)
            step = run.current()
            assert isinstance(step, ConfirmStep)
            if yn.ok:
                run.waiting = None
                run.attempts = 0
                run.advance()
                run.frames.append([step.confirm.on_yes if yn.value else step.confirm.on_no, 0])
                await self._run(out)
                return
            if other:
                await self._start_topic(self.bundle.topics[other], text, out)
                return
            run.attempts += 1
            if run.attempts >= step.confirm.max_attempts:
                await self._misunderstood(out)
                return
            out.say(f"{self.agent.messages.yes_or_no} {render(step.confirm.prompt, self._values())}")
            return

        name = run.waiting.split(":", 1)[1] if run.waiting else ""
        slot = run.topic.slots[name]
        if slot.type == SlotType.free_text and other:
            await self._start_topic(self.bundle.topics[other], text, out)
            return
        parsed = self._parse(slot, text)
        length = _slot_length(slot) if slot.type.value in DIGIT_SLOT_TYPES else None
        if length is not None:
            secret = bool(slot.sensitive or slot.type == SlotType.pin)
            if secret:
                self._redact_last_user_line(f"<{name.upper()}>")
            read = self._number_turn(text, parsed, length, secret=secret, out=out)
            if read is None:
                return
            parsed = read
        if parsed.ok:
            run.waiting = None
            run.attempts = 0
            self._fill(name, slot, parsed.value, out)
            await self._run(out)
            return
        if other:
            await self._start_topic(self.bundle.topics[other], text, out)
            return
        run.attempts += 1
        out.emit("slot_failed", slot=name, error=parsed.error, attempt=run.attempts)
        if run.attempts >= slot.max_attempts:
            await self._misunderstood(out)
            return
        keypad = self._keypad_hint(run.attempts, dtmf=dtmf) if slot.type.value in DIGIT_SLOT_TYPES else ""
        out.say(self._reprompt(slot, parsed, keypad))

    async def _handle_auth(self, text: str, pred: IntentPrediction | None, out: TurnResult, *, dtmf: bool) -> None:
        assert self.auth is not None
        cfg = self.agent.authentication
        state = self.auth
        if state.stage == "identify":
            if cfg.identify_by == "phone":
                parsed = parse_slot("phone", text)
            else:
                read = self._number_turn(
                    text,
                    parse_slot("account_number", text, length=cfg.account_number_length),
                    cfg.account_number_length,
                    secret=False,
                    out=out,
                )
                if read is None:
                    return
                parsed = read
            if not parsed.ok:
                state.tries_in_stage += 1
                if state.tries_in_stage >= cfg.max_attempts:
                    await self._verification_failed(out)
                    return
                out.say(
                    _sentences(
                        self._missed(parsed),
                        self._heard_hint(parsed),
                        self._keypad_hint(state.tries_in_stage, dtmf=dtmf),
                        cfg.identify_prompt,
                    )
                )
                return
            state.identifier = str(parsed.value)
            self.slots[cfg.identify_by] = state.identifier  # a person offered the caller sees what they gave
            out.emit("slot_filled", slot=cfg.identify_by)
            if await self._refused_for_lock(state.identifier, out):
                return
            state.stage = "secret"
            state.tries_in_stage = 0
            out.say(f"{cfg.identified_message} {cfg.secret_prompt}".strip())
            return

        self._redact_last_user_line(f"<{cfg.verify_with.upper()}>")
        if cfg.verify_with == "pin":
            read = self._number_turn(
                text, parse_slot("pin", text, length=cfg.pin_length), cfg.pin_length, secret=True, out=out
            )
            if read is None:
                return
            parsed = read
        else:
            parsed = parse_slot("date", text, today=self.today)
        if not parsed.ok:
            state.tries_in_stage += 1
            if state.tries_in_stage >= cfg.max_attempts:
                await self._verification_failed(out)
                return
            keypad = self._keypad_hint(state.tries_in_stage, dtmf=dtmf) if cfg.verify_with == "pin" else ""
            out.say(_sentences(self._missed(parsed), keypad, cfg.secret_prompt))
            return
        if await self._refused_for_lock(state.identifier, out):  # locked since it was given: the
            return  # right secret is refused too, and the back end is not asked
        secret_value = parsed.value.isoformat() if isinstance(parsed.value, dt.date) else str(parsed.value)
        ctx_slots: dict[str, Any] = {cfg.identify_by: state.identifier, cfg.verify_with: secret_value}
        assert cfg.verify_action is not None
        result = await self._call_action(cfg.verify_action, ctx_slots, out, log_args=False)
        if result.status != "ok":
            await self._action_failed(result, out)
            return
        data = result.data if isinstance(result.data, dict) else {}
        if data.get("verified") is True and data.get("customer_id"):
            self.verified = True
            self.customer_id = str(data["customer_id"])
            self.customer_name = data.get("first_name") or data.get("name")
            self.account_number = state.identifier if cfg.identify_by == "account_number" else None
            self.auth = None
            out.emit("verification_succeeded", customer_ref=self._ref(self.customer_id))
            suffix = f" {self.customer_name}" if self.customer_name else ""
            out.say(render(cfg.success_message, {"name_suffix": suffix}))
            await self.record(CallerVerified(self.facts()))
            await self._run(out)
            return
        state.failures += 1
        out.emit("verification_failed", attempt=state.failures)
        verdict = await self._count_failure(state.identifier)
        detail: dict[str, Any] = {"attempt": state.failures}
        if verdict is not None:  # the pseudonymous account, so attempts on it can be seen across sessions
            detail.update(subject=verdict.subject, failures=verdict.failures)
        await self.record(SecurityEvent(self.facts(), "verification_failed", detail))
        if verdict is not None and verdict.locked:
            if verdict.newly_locked:
                await self.record(
                    SecurityEvent(
                        self.facts(),
                        "verification_locked",
                        {
                            "subject": verdict.subject,
                            "failures": verdict.failures,
                            "locked_until": _iso(verdict.locked_until),
                            "lock_minutes": cfg.lockout.lock_minutes,
                        },
                    )
                )
            await self._verification_locked(out)
            return
        if state.failures >= cfg.max_attempts:
            await self._verification_failed(out)
            return
        state.stage = "identify"
        state.identifier = None
        state.tries_in_stage = 0
        out.say(_sentences(cfg.failure_message, self.agent.messages.try_again, cfg.identify_prompt))

    async def _refused_for_lock(self, identifier: str | None, out: TurnResult) -> bool:
        """Whether the account the caller named is locked for verification (then they are told so,
        and offered a person). A guard that cannot answer refuses too: it fails closed."""
        guard, cfg = self.runtime.guard, self.agent.authentication
        if guard is None or not cfg.lockout.enabled or identifier is None:
            return False
        try:
            verdict = await guard.check(
                environment=self.runtime.environment, kind=cfg.identify_by, identifier=identifier
            )
        except Exception:
            log.exception("verification lock-out check failed in session %s; refusing verification", self.id)
            await self._verification_unavailable(out)
            return True
        if not verdict.locked:
            return False
        await self.record(
            SecurityEvent(
                self.facts(),
                "verification_refused",
                {"reason": "locked", "subject": verdict.subject, "locked_until": _iso(verdict.locked_until)},
            )
        )
        await self._verification_locked(out)
        return True

    async def _count_failure(self, identifier: str | None) -> Verdict | None:
        """Count a failed verification against the account across sessions (None: not counted)."""
        guard, cfg = self.runtime.guard, self.agent.authentication
        if guard is None or not cfg.lockout.enabled or identifier is None:
            return None
        try:
            return await guard.failed(
                environment=self.runtime.environment,
                agent=self.agent.name,
                channel=self.channel,
                session_id=self.id,
                kind=cfg.identify_by,
                identifier=identifier,
                policy=LockoutPolicy.of(cfg.lockout),
            )
        except Exception:  # the session's own limit still applies; the next check fails closed
            log.exception("counting a failed verification failed in session %s", self.id)
            return None

    async def _verification_locked(self, out: TurnResult) -> None:
        out.emit("verification_locked")
        self.auth = None
        out.say(self.agent.messages.verification_locked)
        if self.agent.escalation.triggers.verification_locked:
            await self._escalate("verification_locked", None, None, out)
        else:
            self.stack.clear()
            self.state = "anything_else"
            out.say(self.agent.messages.anything_else)

    async def _verification_unavailable(self, out: TurnResult) -> None:
        self.auth = None
        out.say(self.agent.messages.action_failed)
        if self.agent.escalation.triggers.action_failed:
            await self._escalate("action_failed", None, None, out)
        else:
            self.stack.clear()
            self.state = "anything_else"
            out.say(self.agent.messages.anything_else)

    async def _guard_other_account(self, text: str, out: TurnResult) -> bool:
        """A verified caller naming a different account is refused, and the attempt recorded."""
        cfg = self.agent.authentication
        if cfg.identify_by != "account_number" or not self.account_number:
            return False
        groups = {re.sub(r"\D", "", span.text) for span in normalize_numbers(text).spans}
        groups.add(extract_digit_string(text) or "")
        others = sorted(g for g in groups if len(g) == cfg.account_number_length and g != self.account_number)
        if not others:
            return False
        digits = others[0]
        out.emit("data_access_denied", reason="other_account_requested", requested_ref=self._ref(digits))
        out.emit("refused", reason="other_customer_data")
        await self.record(
            SecurityEvent(
                self.facts(),
                "data_access_denied",
                {
                    "reason": "other_account_requested",
                    "requested_ref": self._ref(digits),
                    "customer_ref": self._ref(self.customer_id),
                },
            )
        )
        self._redact_last_user_line("<ACCOUNT_NUMBER>")
        out.say(self.agent.messages.wrong_customer)
        if self.stack and self.stack[-1].waiting:
            out.say(self._pending_prompt(self.stack[-1]))
        elif self.state == "anything_else":
            out.say(self.agent.messages.anything_else)
        return True

    # ---- the step interpreter -----------------------------------------------------------

    async def _run(self, out: TurnResult) -> None:
        while self.stack and not self.ended:
            run = self.stack[-1]
            step = run.current()
            if step is None:
                await self._finish_topic("resolved", out)
                continue
            if isinstance(step, AskStep):
                slot = run.topic.slots[step.ask]
                if step.ask in run.filled:
                    run.advance()
                    continue
                run.waiting = f"slot:{step.ask}"
                run.attempts = 0
                self.state = f"collecting:{step.ask}"
                out.say(render(slot.prompt, self._values()))
                return
            if isinstance(step, ConfirmStep):
                run.waiting = "confirm"
                run.attempts = 0
                self.state = "confirming"
                out.say(render(step.confirm.prompt, self._values()))
                return
            run.advance()
            if isinstance(step, SayStep):
                out.say(render(step.say, self._values()))
            elif isinstance(step, CallStep):
                result = await self._call_action(step.call, self._slot_values(), out, args=step.args)
                if result.status == "ok":
                    if step.save_as:
                        self.vars[step.save_as] = result.data
                elif result.status == "not_found" and step.on_not_found:
                    if step.save_as:
                        self.vars[step.save_as] = None
                    run.frames.append([step.on_not_found, 0])
                else:
                    await self._action_failed(result, out)
                    return
            elif isinstance(step, BranchStep):
                value = resolve(self._values(), step.branch.on)
                key = str(value).lower() if isinstance(value, bool) else str(value)
                branch = step.branch.cases.get(key, step.branch.default)
                run.frames.append([branch, 0])
            elif isinstance(step, EscalateStep):
                await self._escalate(step.escalate.reason, step.escalate.queue, step.escalate.message, out)
                return
            elif isinstance(step, EndStep):
                await self._finish_topic(step.end, out)
            elif isinstance(step, AnswerStep):
                await self._answer_in_topic(run, out)

    async def _answer_in_topic(self, run: TopicRun, out: TurnResult) -> None:
        # Inside an explicit topic the caller's question is known to be on it, so accept a
        # weaker match than for free questions; below it say so rather than guess.
        floor = self.agent.generative.min_score * 0.75
        hit = await self.runtime.answer(run.trigger_text, floor) if self.runtime.knowledge else None
        if hit is None:
            out.say(self.agent.messages.no_information)
            return
        out.say(hit.passage.text)
        out.citations.append(hit.passage.citation)
        out.emit("knowledge_answer", citation=hit.passage.citation, score=round(hit.score, 3))

    async def _finish_topic(self, outcome: str, out: TurnResult) -> None:
        """Close the current topic. A suspended topic resumes when `_run` continues."""
        run = self.stack.pop()
        self.topics_done.append({"topic": run.topic.name, "outcome": outcome})
        out.emit("topic_ended", topic=run.topic.name, outcome=outcome)
        if self.stack:
            resumed = self.stack[-1]
            resumed.waiting = None  # the interpreter asks its question again
            out.say(self.agent.messages.digression_return)
            return
        out.say(self.agent.messages.anything_else)
        self.state = "anything_else"

    def _pending_prompt(self, run: TopicRun) -> str:
        step = run.current()
        if isinstance(step, ConfirmStep):
            return render(step.confirm.prompt, self._values())
        if isinstance(step, AskStep):
            return render(run.topic.slots[step.ask].prompt, self._values())
        return ""

    # ---- actions, slots, escalation -----------------------------------------------------

    async def _call_action(
        self,
        name: str,
        slots: dict[str, Any],
        out: TurnResult,
        *,
        args: dict[str, Any] | None = None,
        log_args: bool = True,
    ) -> ActionResult:
        ctx = CallContext(
            verified_customer_id=self.customer_id if self.verified else None, slots=slots, args=args or {}
        )
        result = await self.runtime.call(name, ctx, session=self)
        summary = result.summary()
        if not log_args:
            summary["arguments"] = {k: "<redacted>" for k in summary["arguments"]}
        else:
            summary["arguments"] = {
                k: ("<redacted>" if k in self.sensitive_slots else plain(v)) for k, v in summary["arguments"].items()
            }
        self.actions.append(summary)
        out.actions.append(summary)
        out.emit("action", **summary)
        out.timings_ms[f"action:{name}"] = result.duration_ms
        if result.status == "denied":
            await self.record(
                SecurityEvent(self.facts(), "data_access_denied", {"action": name, "reason": result.error})
            )
        return result

    async def _action_failed(self, result: ActionResult, out: TurnResult) -> None:
        self.auth = None
        if result.status == "denied":
            out.emit("data_access_denied", action=result.action, reason=result.error)
        out.say(self.agent.messages.action_failed)
        if self.agent.escalation.triggers.action_failed:
            await self._escalate("action_failed", None, None, out)
        elif self.stack:
            await self._finish_topic("abandoned", out)
            await self._run(out)

    async def _misunderstood(self, out: TurnResult) -> None:
        limit = self.agent.escalation.triggers.misunderstandings
        if limit:
            await self._escalate("misunderstandings", None, None, out)
        else:
            await self._finish_topic("abandoned", out)
            await self._run(out)

    async def _verification_failed(self, out: TurnResult) -> None:
        out.emit("verification_failed", final=True)
        self.auth = None
        if self.agent.escalation.triggers.verification_failed:
            await self._escalate("verification_failed", None, None, out)
        else:
            out.say(self.agent.messages.not_verified)
            self.stack.clear()
            self.state = "anything_else"
            out.say(self.agent.messages.anything_else)

    def _parse(self, slot: Slot, text: str) -> SlotParse:
        kind = slot.type.value
        return parse_slot(
            kind,
            text,
            length=slot.length,
            min_length=slot.min_length,
            max_length=slot.max_length,
            values=slot.values,
            today=self.today,
        )

    def _fill(self, name: str, slot: Slot, value: Any, out: TurnResult) -> None:
        self.slots[name] = value
        if self.stack:
            self.stack[-1].filled.add(name)
        if slot.sensitive or slot.type == SlotType.pin:
            self.sensitive_slots.add(name)
            self._redact_last_user_line(f"<{name.upper()}>")
        out.emit("slot_filled", slot=name, value=None if name in self.sensitive_slots else plain(value))

    def _number_turn(
        self, text: str, parsed: SlotParse, length: int, *, secret: bool, out: TurnResult
    ) -> SlotParse | None:
        """A reading of a number of known length, which may come in pieces over several turns.

        Returns the parse to go on with (the number, or why it is not one), or None when this turn
        was a piece of it or the number put together was read back for a yes or no: the agent has
        said what comes next.
        """
        if self.channel not in VOICE_CHANNELS:
            return parsed  # typed numbers come whole: there is no pause between groups to end the turn
        question = self._question()
        gatherer = self.digits if self.digits is not None and self.digits.question == question else None
        if gatherer is not None and gatherer.pending is not None:
            number = gatherer.pending
            gatherer.reset()
            if parsed.ok:
                return parsed  # the whole number said again instead of a yes or no
            answer = parse_slot("yes_no", text)
            if answer.ok and answer.value:
                out.emit("digits_confirmed", digits=len(number))
                return SlotParse.success(number, heard=len(number), assembled=True)
            return SlotParse.failure("not_confirmed" if answer.ok else "no_digits", heard=0)
        if parsed.ok or parsed.error != "wrong_length":
            self.digits = None
            return parsed
        if gatherer is None:
            gatherer = self.digits = DigitGatherer(question, length, secret=secret)
        step = gatherer.take(text)
        if step.kind == "piece":
            out.emit("digits_partial", heard=len(step.digits), expected=length)
            messages = self.agent.messages
            out.say(
                messages.digits_go_on if secret else render(messages.digits_so_far, {"digits": read_back(step.digits)})
            )
            return None
        if step.kind == "confirm":
            out.emit("digits_assembled", digits=len(step.digits))
            out.say(render(self.agent.messages.digits_confirm, {"digits": read_back(step.digits)}))
            return None
        if step.kind == "whole":
            return SlotParse.success(step.digits, heard=len(step.digits), assembled=True)
        return parsed

    def _missed(self, parsed: SlotParse) -> str:
        """What the agent says first when an answer was missed: "let's try again" after a number read
        back was said to be wrong, "sorry, I didn't get that" otherwise."""
        return self.agent.messages.try_again if parsed.error == "not_confirmed" else self.agent.messages.not_understood

    def _reprompt(self, slot: Slot, parsed: SlotParse, keypad: str = "") -> str:
        text = slot.reprompt or _sentences(self._missed(parsed), slot.prompt)
        return render(_sentences(self._heard_hint(parsed), keypad, text), self._values())

    def _keypad_hint(self, misses: int, *, dtmf: bool) -> str:
        """On a call, after the second miss of a number said aloud: the caller may key it in instead."""
        if self.channel in VOICE_CHANNELS and not dtmf and misses == KEYPAD_AFTER_MISSES:
            return self.agent.messages.keypad
        return ""

    def _heard_hint(self, parsed: SlotParse) -> str:
        """Tell the caller how many digits were heard when the count was wrong (never the digits)."""
        detail = parsed.detail or {}
        heard, expected = detail.get("heard"), detail.get("expected")
        if parsed.error == "wrong_length" and heard and expected:
            return render(self.agent.messages.heard_digits, {"heard": heard, "expected": expected})
        return ""

    async def _escalate(self, reason: str, queue: str | None, message: str | None, out: TurnResult) -> None:
        esc = self.agent.escalation
        target = queue or esc.reason_queues.get(reason) or esc.default_queue
        packet = build_packet(self, reason=reason, queue=target)
        self.escalation = packet
        out.packet = packet
        out.emit("escalated", reason=reason, queue=target)
        out.say(message or esc.message)
        await self.record(HandedOff(self.facts(), queue=target, reason=reason, packet=packet))
        self.stack.clear()
        self.auth = None
        await self._end_session("escalated", out)

    async def _end_session(self, outcome: str, out: TurnResult, *, goodbye: bool = False) -> None:
        if goodbye:
            out.say(self.agent.messages.goodbye)
        self.ended = True
        self.outcome = outcome
        self.state = "ended"
        out.emit("session_ended", outcome=outcome)
        await self.record(self._ended("completed"))

    # ---- helpers --------------------------------------------------------------------------

    def _topic_active(self, name: str) -> bool:
        return any(r.topic.name == name for r in self.stack)

    def _slot_values(self) -> dict[str, Any]:
        return dict(self.slots)

    def _values(self) -> dict[str, Any]:
        caller = {"name": self.customer_name, "verified": self.verified}
        return {**self.vars, "slots": self.slots, "caller": caller}

    def _log(self, role: str, text: str) -> None:
        self.transcript.append(TranscriptLine(role, text, time.time()))

    def _ref(self, value: str | None) -> str | None:
        """A stable pseudonymous reference to an identifier (keyed), for events that must not hold it raw."""
        return None if value is None else self.runtime.refs(value)

    def _redact_last_user_line(self, placeholder: str) -> None:
        for line in reversed(self.transcript):
            if line.role == "user":
                line.text = placeholder
                return

    async def _finish_turn(self, out: TurnResult, started: float | None = None) -> TurnResult:
        if self.digits is not None and self.digits.question != self._question():
            self.digits = None  # the question moved on: its pieces would not be this one's if asked again
        out.slots = {k: ("<redacted>" if k in self.sensitive_slots else plain(v)) for k, v in self.slots.items()}
        if self.auth is not None:
            self.state = f"verifying:{self.auth.stage}"
        out.state = self.state
        out.ended = self.ended
        out.outcome = self.outcome
        if started is not None:
            out.timings_ms["turn"] = (time.perf_counter() - started) * 1000
        self._log("agent", out.text)
        if self.trace.recording and started is not None:
            end = time.time_ns()
            self.trace.turn(
                self.turn_no,
                start_ns=wall_ns(started),
                end_ns=end,
                attributes={
                    "intent": out.intent,
                    "confidence": out.confidence,
                    "state": out.state,
                    "escalated": self.escalation is not None and self.ended,
                },
            )
        if self.ended:  # the conversation span ends with its last turn
            self.trace.end(outcome=self.outcome, escalation_reason=(self.escalation or {}).get("reason"))
        await self.record(self._turn_taken(out))
        return out

    def _turn_taken(self, out: TurnResult) -> TurnTaken:
        """The record of a turn: the caller's words as the transcript keeps them, the reply, the turn's data."""
        data = out.as_dict()
        for spoken in ("user", "agent", "packet"):  # the words are stored on their own; the packet with the handoff
            data.pop(spoken, None)
        return TurnTaken(
            self.facts(),
            seq=self.turn_no,
            at=utcnow(),
            user_text=self._last_user_text() if out.user is not None else None,
            agent_text=out.text,
            intent=out.intent,
            confidence=out.confidence,
            state=out.state,
            data=data,
        )

    def _ended(self, reason: str) -> SessionEnded:
        return SessionEnded(self.facts(), outcome=self.outcome, reason=reason, turns=self.turn_no, at=utcnow())

    def _last_user_text(self) -> str | None:
        for line in reversed(self.transcript):
            if line.role == "user":
                return line.text
        return None


def _sentences(*parts: str) -> str:
    """Sentences said in one breath: the non-empty parts, one space apart."""
    return " ".join(part for part in parts if part)


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat(timespec="seconds") if value is not None else None
