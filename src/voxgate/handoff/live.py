"""What the desk and a caller's side of a handoff share: the live handoff, the desk agent, the two
connections (the desk agent's link, the caller's leg), what a leg asks of the desk, and why a handoff
fails. `desk.py` routes and records; `bridge.py` (voice) and `chat.py` (chat) are the callers' legs."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Literal, Protocol, get_args

from voxgate.bundle.models import HandoffMessages, Queue
from voxgate.errors import InvalidError
from voxgate.retry import RetryPolicy
from voxgate.runtime.session import Session

FallbackKind = Literal["callback", "message"]
#: how a desk agent closes a conversation at wrap-up
Disposition = Literal["resolved", "follow_up", "transferred", "unresolved", "wrong_queue"]
DISPOSITIONS: tuple[str, ...] = get_args(Disposition)
#: the fallback asks for a callback number, and once more when it gets none it can use
CALLBACK_NUMBER_ASKS = RetryPolicy(attempts=2, wait_s=0.0)


class NotANumber(InvalidError):
    """The caller's answer to the fallback's question is not a phone number (or there was none)."""


class FailureReason(str, Enum):
    """Why a handoff did not reach a person, or lost one."""

    no_agents_available = "no_agents_available"  # nobody who may take the queue was signed in and not away
    queue_timeout = "queue_timeout"  # nobody accepted within the queue's timeout
    caller_hung_up = "caller_hung_up"  # the caller left before a person (or the fallback) had them
    agent_disconnected = "agent_disconnected"  # the desk agent's socket went away (or sent bad input)
    bridge_error = "bridge_error"  # carrying the conversation between caller and desk failed
    fallback_incomplete = "fallback_incomplete"  # the fallback got no usable number or message
    # set by a worker's repair pass (store/liveness.py), never by a live desk:
    worker_lost = "worker_lost"  # the worker that held the caller stopped or crashed
    session_closed = "session_closed"  # nobody could take it before its conversation closed (an HTTP chat)


FAILURE_REASONS = tuple(r.value for r in FailureReason)


class DeskLink(Protocol):
    """A desk agent's connection. `send` and `send_audio` never block (a slow socket loses audio
    frames, never the call); `close` ends the connection with a reason."""

    def send(self, message: dict[str, Any]) -> None:
        """A message to the desk agent (never blocks)."""
        ...

    def send_audio(self, pcm16: bytes) -> None:
        """Caller audio to the desk agent (dropped when the socket is slow)."""
        ...

    async def close(self, code: int, reason: str) -> None:
        """End the connection with a close code and reason."""
        ...


class CallerLeg(Protocol):
    """The caller's side of a handoff: a voice call (`bridge.VoiceLeg`) or a chat (`chat.ChatLeg`)."""

    channel: str  # voice | chat

    @property
    def gone(self) -> bool:
        """The caller has left."""
        ...

    def hold(self, handoff: LiveHandoff) -> None:
        """The caller waits for a person."""
        ...

    async def connect(self, handoff: LiveHandoff, agent: DeskAgent) -> None:
        """A person took the caller."""
        ...

    async def agent_audio(self, pcm16: bytes) -> None:
        """The person's audio, for a voice call."""
        ...

    async def agent_text(self, text: str, agent: DeskAgent) -> None:
        """The person's line, for a chat."""
        ...

    async def agent_hung_up(self) -> None:
        """The person ended the conversation."""
        ...

    async def agent_lost(self, handoff: LiveHandoff) -> None:
        """The person's socket dropped: hold again until they are back (or the grace is over)."""
        ...

    async def fallback(self, handoff: LiveHandoff, reason: str) -> None:
        """Nobody can take the caller: take a callback number or a message."""
        ...


#: a handoff another worker holds: (that worker's id, the handoff id)
RemoteRef = tuple[str, int]


@dataclass(eq=False)
class DeskAgent:
    """A desk agent signed in (one socket per user): on this worker, or — in a cluster, while a caller of
    this worker is offered to them or connected with them — on another, whose socket `link` reaches."""

    user_id: str
    username: str
    display_name: str
    link: DeskLink
    skills: frozenset[str] = frozenset()
    queues: frozenset[str] = frozenset()  # queues they chose to take; empty: every queue their skills allow
    status: str = "away"  # available | away | busy | wrap_up
    since: float = field(default_factory=time.time)  # wall clock: workers compare who waited longest
    wanted: str = "available"  # the status to return to after wrap-up
    offer: LiveHandoff | None = None
    handoff: LiveHandoff | None = None  # accepted: in conversation or in wrap-up
    worker: str | None = None  # the worker holding their socket when it is another one (None: this one)
    # on the desk agent's own worker, what another worker's caller is to them: offered, or theirs
    remote_offer: RemoteRef | None = None
    remote: RemoteRef | None = None
    remote_missing: int = 0  # renewals in a row that did not find the caller's worker holding `remote`

    def view(self) -> dict[str, Any]:
        """The desk agent as the desk shows them."""
        return {
            "user_id": self.user_id,
            "username": self.username,
            "display_name": self.display_name,
            "status": self.status,
            "skills": sorted(self.skills),
            "queues": sorted(self.queues),
        }


@dataclass(eq=False)
class LiveHandoff:
    """A caller handed to the desk: the queue, the context packet, where the handoff stands."""

    id: int  # the handoffs row id (negative when the row could not be read)
    row_id: int | None
    session: Session
    queue: str
    config: Queue
    messages: HandoffMessages
    leg: CallerLeg
    packet: dict[str, Any]
    created: float = field(default_factory=time.monotonic)
    created_at: float = field(default_factory=time.time)  # wall clock: the queue order across workers
    # waiting | offered | accepted | reconnecting (accepted, the desk agent's socket dropped: holding
    # for them) | ended (conversation over, wrap-up pending) | fallback | done
    status: str = "waiting"
    queued: bool = False  # the caller holds in the queue: offered to desk agents from now on
    offered_to: DeskAgent | None = None
    declined: set[str] = field(default_factory=set)
    agent: DeskAgent | None = None
    failure: str | None = None
    storing: bool = False  # the fallback has what it came for and is storing it
    stored: bool = False  # the fallback stored a callback request or a message
    tasks: dict[str, asyncio.Task[Any]] = field(default_factory=dict)
    last_write: asyncio.Task[None] | None = None  # row writes run one after the other, in call order
    pending_caller: list[str] = field(default_factory=list)  # chat lines written while waiting
    # the desk agent whose socket dropped while the handoff was theirs (reconnecting, or in wrap-up);
    # None while they (or nobody) are connected
    away: DeskAgent | None = None
    away_since: float = 0.0
    chat_lines: list[dict[str, str]] = field(default_factory=list)  # {"from": "caller" | "person", "text"}

    @property
    def channel(self) -> str:
        """The caller's channel: voice or chat."""
        return self.leg.channel

    def view(self) -> dict[str, Any]:
        """What a desk agent sees: the context packet (the one built for a person) and the queue."""
        return {
            "id": self.id,
            "queue": self.queue,
            "channel": self.channel,
            "agent": self.session.agent.name,
            "reason": self.packet.get("reason"),
            "status": self.status,
            "waited_s": round(time.monotonic() - self.created, 1),
            "timeout_s": self.config.timeout_s,
            "offer_timeout_s": self.config.offer_timeout_s,
            "packet": self.packet,
        }


class HandoffDesk(Protocol):
    """What a caller's leg asks of the desk (`desk.Desk`)."""

    async def escalated(self, session: Session, leg: CallerLeg) -> LiveHandoff:
        """Queue the escalated conversation's caller for a person (or start the fallback)."""
        ...

    def caller_audio(self, h: LiveHandoff, pcm16: bytes) -> None:
        """Caller audio for the desk agent, if one is connected."""
        ...

    def caller_text(self, h: LiveHandoff, text: str) -> None:
        """A chat line for the desk agent (kept until one is connected)."""
        ...

    async def caller_left(self, h: LiveHandoff) -> None:
        """The caller hung up (or closed the chat)."""
        ...

    async def fallback_stored(
        self, h: LiveHandoff, kind: FallbackKind, *, number: str | None = None, message: str | None = None
    ) -> None:
        """The fallback took a callback number or a message: store it."""
        ...

    async def fallback_failed(self, h: LiveHandoff) -> None:
        """The fallback got no usable number or message."""
        ...
