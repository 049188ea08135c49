"""A text conversation between two turns, as any worker can continue it: compact, versioned, no secrets.

`Session.snapshot()` makes one after a completed turn and `Session.restore()` turns it back into a
session on the same bundle version. The bytes are JSON (`to_bytes` / `from_bytes`); what they hold is
what the next turn depends on, and no more:

- where the conversation is: the state, the turn number, the topics in progress with their program
  counters (each frame as the branch it runs and the next step), what each waits for and its re-ask
  count, the slots a topic has filled, the "anything else?" question, misunderstanding and silence counts;
- who the caller is: verified or not, the customer id and first name the back end answered, the account
  number they verified with (to refuse another account); while verification is under way, the account
  number given so far and the failures counted. Never the PIN or date of birth: it is used in the turn
  that checks it and never kept;
- what was said and done: slot values (a sensitive one, such as a PIN asked by a topic, only while a
  topic that declares it is still in progress: its next step may send it to the back end; then it is
  withheld), the answers of connector calls saved for the topic's templates, the intents, action
  summaries (sensitive arguments already replaced) and topics done that a handoff packet shows;
- the transcript, as the session holds it (PINs and sensitive slot values already replaced by
  placeholders), only when the agent's handoff packet includes the transcript; the words that started a
  topic only where that topic answers from the knowledge base (they are its query).

An ended conversation is never stored: its last turn deletes it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping, Sequence
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from voxgate.bundle.models import AnswerStep, BranchStep, CallStep, ConfirmStep, Topic
from voxgate.errors import InvalidError

#: the layout of the bytes; a worker reads only its own (bump it with a reader of the previous one,
#: so that workers of two releases can share conversations during a rolling upgrade)
SNAPSHOT_FORMAT = 1
#: what a sensitive slot's value becomes once no topic in progress declares it
WITHHELD = "<redacted>"
#: the frame a topic starts with: its own steps
TOPIC_STEPS = "steps"


class SnapshotError(InvalidError):
    """A snapshot that cannot be read or does not fit the runtime it is restored on."""


class _Part(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class FrameSnapshot(_Part):
    """One frame of a topic's program counter: which list of steps it runs, and the next step in it.

    `step` is the index (in the frame below) of the step whose branch this frame runs — a confirm's
    `on_yes`/`on_no`, a branch's `case:<value>`/`default`, a call's `on_not_found` — and -1 with
    `branch` "steps" for the topic's own steps."""

    step: int
    branch: str
    next: int


class TopicRunSnapshot(_Part):
    """A topic in progress."""

    topic: str
    frames: tuple[FrameSnapshot, ...]
    waiting: str | None = None
    attempts: int = 0
    filled: tuple[str, ...] = ()
    trigger_text: str | None = None  # only when the topic answers from knowledge: its query


class AuthSnapshot(_Part):
    """Verification under way: the stage, the account (or phone) number given, failures so far."""

    stage: Literal["identify", "secret"]
    identifier: str | None = None
    failures: int = 0
    tries_in_stage: int = 0


class LineSnapshot(_Part):
    """One transcript line as the session holds it."""

    role: str
    text: str
    at: float


class SessionSnapshot(_Part):
    """Everything the next turn of a text conversation depends on (see the module docstring)."""

    format_version: int  # always written: a reader must know the layout it reads
    session_id: str
    agent: str
    agent_version: str
    bundle_digest: str | None
    environment: str
    channel: str
    today: dt.date | None = None
    started_at: float
    turn_no: int
    state: str
    ended: bool = False
    outcome: str | None = None
    stack: tuple[TopicRunSnapshot, ...] = ()
    auth: AuthSnapshot | None = None
    verified: bool = False
    customer_id: str | None = None
    customer_name: str | None = None
    account_number: str | None = None
    slots: dict[str, Any] = {}
    sensitive_slots: tuple[str, ...] = ()
    vars: dict[str, Any] = {}
    intents: tuple[dict[str, Any], ...] = ()
    actions: tuple[dict[str, Any], ...] = ()
    topics_done: tuple[dict[str, str], ...] = ()
    transcript: tuple[LineSnapshot, ...] | None = None
    misunderstandings: int = 0
    heard_speech: bool = False
    silences: int = 0

    def to_bytes(self) -> bytes:
        """The snapshot as compact JSON."""
        return self.model_dump_json(exclude_defaults=True).encode()

    @classmethod
    def from_bytes(cls, data: bytes | str) -> SessionSnapshot:
        """A snapshot from `to_bytes`; SnapshotError names what is wrong (a newer format, a bad field)."""
        try:
            snapshot = cls.model_validate_json(data)
        except ValidationError as exc:
            first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid"}
            where = ".".join(str(p) for p in first["loc"]) or "snapshot"
            raise SnapshotError(f"a stored conversation cannot be read: {where}: {first['msg']}") from None
        if snapshot.format_version != SNAPSHOT_FORMAT:
            raise SnapshotError(
                f"a stored conversation has snapshot format {snapshot.format_version}; "
                f"this worker reads format {SNAPSHOT_FORMAT}"
            )
        return snapshot


# ---- typed values as JSON -------------------------------------------------------------------------------

# Slot values are dates, amounts of money (Decimal), yes/no and text; connector answers are JSON. A
# date or an amount keeps its type across workers ({"$date": …}, {"$decimal": …}); a mapping whose own
# keys start with "$" is wrapped ({"$map": …}) so it is never mistaken for one of those.


def encode_value(value: Any) -> Any:
    """A slot value or connector answer as JSON that `decode_value` turns back into the same value."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Decimal):
        return {"$decimal": str(value)}
    if isinstance(value, dt.datetime):
        return {"$datetime": value.isoformat()}
    if isinstance(value, dt.date):
        return {"$date": value.isoformat()}
    if isinstance(value, (list, tuple)):
        return [encode_value(v) for v in value]
    if isinstance(value, Mapping):
        out = {str(k): encode_value(v) for k, v in value.items()}
        return {"$map": out} if any(k.startswith("$") for k in out) else out
    raise SnapshotError(f"a value of type {type(value).__name__} cannot be kept between turns")


def decode_value(value: Any) -> Any:
    """The value `encode_value` was given."""
    if isinstance(value, list):
        return [decode_value(v) for v in value]
    if not isinstance(value, dict):
        return value
    if len(value) == 1:
        ((tag, raw),) = value.items()
        if tag == "$decimal":
            return Decimal(raw)
        if tag == "$date":
            return dt.date.fromisoformat(raw)
        if tag == "$datetime":
            return dt.datetime.fromisoformat(raw)
        if tag == "$map":
            return {k: decode_value(v) for k, v in raw.items()}
    return {k: decode_value(v) for k, v in value.items()}


# ---- a topic's program counter --------------------------------------------------------------------------


def branches(step: Any) -> dict[str, list[Any]]:
    """The lists of steps a step may run next, by name (none for a step without branches)."""
    if isinstance(step, ConfirmStep):
        return {"on_yes": step.confirm.on_yes, "on_no": step.confirm.on_no}
    if isinstance(step, BranchStep):
        return {"default": step.branch.default, **{f"case:{k}": v for k, v in step.branch.cases.items()}}
    if isinstance(step, CallStep):
        return {"on_not_found": step.on_not_found}
    return {}


def encode_frames(topic: Topic, frames: Sequence[Sequence[Any]]) -> tuple[FrameSnapshot, ...]:
    """A topic's frames ([steps, next index] each) as paths into its steps.

    A frame above the first runs a branch of the step just before its parent's next step: the
    interpreter advances past a confirm, branch or call before it pushes the branch it chose."""
    out: list[FrameSnapshot] = []
    for depth, (steps, index) in enumerate(frames):
        if depth == 0:
            if steps is not topic.steps:
                raise SnapshotError(f"topic '{topic.name}': its first frame does not run the topic's steps")
            out.append(FrameSnapshot(step=-1, branch=TOPIC_STEPS, next=index))
            continue
        parent_steps, parent_next = frames[depth - 1]
        at = parent_next - 1
        name = _branch_of(parent_steps[at], steps) if 0 <= at < len(parent_steps) else None
        if name is None:
            raise SnapshotError(f"topic '{topic.name}': frame {depth} runs steps that no step before it branches to")
        out.append(FrameSnapshot(step=at, branch=name, next=index))
    return tuple(out)


def decode_frames(topic: Topic, frames: Sequence[FrameSnapshot]) -> list[list[Any]]:
    """The frames `encode_frames` described, as the interpreter holds them."""
    out: list[list[Any]] = []
    for depth, frame in enumerate(frames):
        if depth == 0:
            if frame.branch != TOPIC_STEPS:
                raise SnapshotError(f"topic '{topic.name}': the first frame must run the topic's steps")
            out.append([topic.steps, frame.next])
            continue
        parent_steps = out[-1][0]
        if not 0 <= frame.step < len(parent_steps):
            raise SnapshotError(f"topic '{topic.name}': frame {depth} names step {frame.step}, which does not exist")
        steps = branches(parent_steps[frame.step]).get(frame.branch)
        if steps is None:
            raise SnapshotError(f"topic '{topic.name}': step {frame.step} has no branch '{frame.branch}'")
        out.append([steps, frame.next])
    return out


def answers_from_knowledge(topic: Topic) -> bool:
    """Whether any step of the topic (in any branch) answers from the knowledge base."""
    return any(isinstance(step, AnswerStep) for step in _all_steps(topic.steps))


def _branch_of(step: Any, steps: Sequence[Any]) -> str | None:
    return next((name for name, listed in branches(step).items() if listed is steps), None)


def _all_steps(steps: Sequence[Any]) -> Iterator[Any]:
    for step in steps:
        yield step
        for listed in branches(step).values():
            yield from _all_steps(listed)
