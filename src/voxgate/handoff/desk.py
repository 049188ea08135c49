"""The live-agent desk: who is signed in and available, the callers waiting for a
person, routing by queue and skill, offers, accept, wrap-up with a disposition, queue timeouts and
the fallback. Every handoff that does not reach a person (or loses one) fails with a typed reason
that is written on the handoff row, appended to the audit chain and counted in Prometheus.

A handoff's life, as recorded on its `handoffs` row (`status`, and every step in `events`):

    waiting ─▶ offered ─▶ accepted ─▶ wrapped_up
       │          │  (declined / rang out: back to waiting, next agent)
       │          │          │ ▲ (the desk agent's socket dropped: `agent_lost`, then `resumed` when the
       │          │          ▼ │  same desk agent reconnects within the queue's `reconnect_grace_s`)
       └──────────┴─────────────▶ fallback_callback | fallback_message   (no person: a number or a message)
                  └─▶ failed                                (the caller hung up, or the fallback got nothing)

A handoff left open by a worker that stopped or crashed fails with `worker_lost`; one that no desk
holds (an HTTP chat's: nobody can join it) fails with `session_closed` after the idle timeout. Both
are set by a worker's repair pass (store/liveness.py), not here.

Routing: a caller is offered to one desk agent at a time — the one available longest among those
who have every skill the queue asks for (and who chose the queue, if they chose any). An offer
that is not answered within the queue's `offer_timeout_s` moves on and sets that agent away. When
nobody who may take the queue is signed in (and not away) at the moment of escalation, the fallback
runs at once (`no_agents_available`); otherwise the caller holds until an agent accepts or the
queue's `timeout_s` passes (`queue_timeout`).

In a cluster (`shared` is `voxgate.cluster.desk.RedisDeskState`) the desk is one for all workers: a
caller waiting on one worker is offered to a desk agent signed in on another. The caller's worker keeps
the handoff and everything above; the desk agent's worker relays their socket (see `handoff/shared.py`
for who holds what, and `relay.py` for how the two meet). Presence, offers and accepts are claimed in
the shared state, so that two workers never offer one desk agent two callers, nor two desk agents take
one caller.

Everything here runs on the event loop; database and audit writes go to threads, in order per
handoff. Nothing a desk agent's socket does can block or break a call: messages to agents go
through a bounded queue per socket (`DeskLink`). A socket that drops mid-conversation puts the
caller back on hold (voice: hold audio; chat: a "please hold" line) for the queue's
`reconnect_grace_s`: if the same desk agent signs in to the desk again within it, the conversation
is theirs again (the page gets the packet and the conversation so far, and a call's audio is
bridged again); otherwise the caller goes to the fallback (`agent_disconnected`). A desk agent who
drops during wrap-up gets the wrap-up back the same way (after the grace it is closed without a
disposition). A socket closed for bad input sends the caller to the fallback at once.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from sqlalchemy import select

from voxgate.bundle.models import Queue
from voxgate.clock import utcnow
from voxgate.compliance.audit import AuditEvent, AuditLog, Outcome
from voxgate.compliance.redaction import known_values, redactor_for_agent
from voxgate.errors import UnavailableError
from voxgate.handoff.bridge import VoiceLeg
from voxgate.handoff.live import (
    DISPOSITIONS,
    FAILURE_REASONS,
    CallerLeg,
    DeskAgent,
    DeskLink,
    FailureReason,
    FallbackKind,
    LiveHandoff,
)
from voxgate.handoff.relay import DeskRelay, HeldLink
from voxgate.handoff.shared import OFFER_MARGIN_S, AgentRecord, DeskState, HandoffRecord, LocalDeskState, may_take
from voxgate.observe.metrics import WorkerMetrics
from voxgate.runtime.engine import AgentRuntime
from voxgate.runtime.session import Session
from voxgate.store.db import Database
from voxgate.store.desk_models import CallbackRequestRow
from voxgate.store.models import HandoffRow
from voxgate.voice.pipeline import CallPipeline, CallTakeover

__all__ = [
    "DISPOSITIONS",
    "FAILURE_REASONS",
    "OUTCOMES",
    "CallerLeg",
    "Desk",
    "DeskAgent",
    "DeskLink",
    "FailureReason",
    "LiveHandoff",
]

log = logging.getLogger("voxgate.handoff")

OUTCOMES = ("wrapped_up", "fallback_callback", "fallback_message", "failed")
MAX_PENDING_CALLER_MESSAGES = 20
MAX_CHAT_LINES = 200  # the chat with the person, kept (in memory only) for a desk agent who reconnects
_DIGIT_RUN = re.compile(r"(?<![\w<])\d(?:[ .\-]?\d){5,}(?![\w>])")  # six or more digits, however grouped


class Desk:
    """The live-agent desk, of one worker or — with a shared `DeskState` — of a cluster (see the
    module docstring)."""

    def __init__(
        self,
        db: Database,
        audit: AuditLog | None = None,
        *,
        environment: str,
        metrics: WorkerMetrics | None = None,
        runtimes: Callable[[], Iterable[AgentRuntime]] = lambda: (),
        shared: DeskState | None = None,
    ):
        self.db = db
        self.audit = audit
        self.environment = environment
        self.metrics = metrics
        self.runtimes = runtimes
        self.shared: DeskState = shared if shared is not None else LocalDeskState()
        self.agents: dict[str, DeskAgent] = {}  # desk agents whose socket this worker holds
        self.handoffs: dict[int, LiveHandoff] = {}  # callers this worker holds
        self.closed = False
        self._ids = itertools.count(1)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._claims: set[asyncio.Task[Any]] = set()  # claims under way (a dispatch waits for them)
        self._dispatcher: asyncio.Task[None] | None = None
        self._dispatch_again = False
        self.relay = DeskRelay(self)
        if metrics is not None:
            for reason in FAILURE_REASONS:  # every reason is exported from the start, at 0
                metrics.handoff_failures.labels(reason=reason)

    @property
    def clustered(self) -> bool:
        """Whether other workers share this desk."""
        return self.shared.clustered

    @property
    def worker(self) -> str:
        """This worker's id in the shared desk."""
        return self.shared.worker

    async def start(self, worker: str) -> None:
        """Join the shared desk as `worker` (its events, then its renewals in the background). A desk of
        one worker needs no start."""
        await self.shared.start(worker, self.relay)
        if self.clustered:
            self._spawn(self.relay.beat_forever())

    # ---- the voice pipeline's hook ---------------------------------------------------------------

    def take_over(self, pipeline: CallPipeline) -> CallTakeover | None:
        """Take over an escalated voice call (`voice.pipeline.HandoffHook`)."""
        if self.closed or pipeline.session.escalation is None:
            return None
        leg = VoiceLeg(self, pipeline)
        leg.begin()
        return leg

    # ---- callers -----------------------------------------------------------------------------------

    async def escalated(self, session: Session, leg: CallerLeg) -> LiveHandoff:
        """A conversation escalated: queue its caller for a person, or run the fallback right away."""
        packet = dict(session.escalation or {})
        esc = session.agent.escalation
        queue = str(packet.get("queue") or esc.default_queue)
        config = esc.queues.get(queue) or Queue()
        await session.drain()  # the handoff row the recorder writes
        row_id = await asyncio.to_thread(self._row_id, session.id)
        if row_id is not None:
            hid = row_id
        else:  # (negative: no row; in a cluster, unlikely to be another worker's too)
            hid = -(secrets.randbelow(2**31) + 1) if self.clustered else -next(self._ids)
        h = LiveHandoff(
            id=hid,
            row_id=row_id,
            session=session,
            queue=queue,
            config=config,
            messages=esc.handoff,
            leg=leg,
            packet=packet,
        )
        self.handoffs[h.id] = h
        await self._record(h, "waiting", {"channel": h.channel})
        if leg.gone:
            await self.caller_left(h)
        elif not await self._staffed(queue, config):
            await self._fail(h, FailureReason.no_agents_available)
            self._start_fallback(h, FailureReason.no_agents_available)
        else:
            leg.hold(h)
            h.tasks["queue"] = self._spawn(self._queue_timeout(h))
            h.queued = True
            self._dispatch()
        self._broadcast_queues()
        return h

    def caller_audio(self, h: LiveHandoff, pcm16: bytes) -> None:
        """Caller audio for the desk agent connected to the call (none yet: dropped)."""
        if h.status == "accepted" and h.agent is not None:
            h.agent.link.send_audio(pcm16)

    def caller_text(self, h: LiveHandoff, text: str) -> None:
        """A chat line for the desk agent (kept, up to a limit, until one is connected)."""
        if h.status == "accepted" and h.agent is not None:
            h.agent.link.send({"type": "caller_message", "handoff_id": h.id, "text": text})
            keep_line(h, "caller", text)
        elif h.status in ("waiting", "offered", "reconnecting") and len(h.pending_caller) < MAX_PENDING_CALLER_MESSAGES:
            h.pending_caller.append(text)

    async def caller_left(self, h: LiveHandoff) -> None:
        """The caller hung up (or closed the chat)."""
        if h.status in ("waiting", "offered"):
            if h.status == "offered":
                self._withdraw(h, FailureReason.caller_hung_up.value)
            await self._fail(h, FailureReason.caller_hung_up)
            await self._finish(h, "failed")
        elif h.status == "accepted" and h.agent is not None:
            h.status = "ended"
            h.agent.status = "wrap_up"
            self.relay.tell(h.agent, "status")
            h.agent.link.send({"type": "call_ended", "handoff_id": h.id, "by": "caller"})
            await self._record(h, "call_ended", {"by": "caller"}, ended_at=utcnow())
        elif h.status == "reconnecting":
            # the desk agent is away: they get the wrap-up if they come back within the grace
            h.status = "ended"
            await self._record(h, "call_ended", {"by": "caller"}, ended_at=utcnow())
        elif h.status == "fallback" and not h.storing:  # (a store in progress completes the handoff)
            task = h.tasks.get("fallback")
            if task is not None and task is not asyncio.current_task():
                task.cancel()
            if not h.stored:
                await self._fail(h, FailureReason.caller_hung_up)
                await self._finish(h, "failed")
        self._broadcast_queues()

    async def bridge_failed(self, h: LiveHandoff, detail: str) -> None:
        """Carrying the conversation failed: the person loses the caller, the caller gets the fallback."""
        log.warning("handoff %s: bridge error: %s", h.id, detail)
        if h.status != "accepted":
            return  # the conversation is already over, or already in the fallback
        agent = h.agent
        if agent is not None:
            agent.handoff = None
            self._back_from_call(agent)
            self.relay.tell(agent, "handoff", "status")
            agent.link.send({"type": "call_ended", "handoff_id": h.id, "by": "error", "error": detail[:200]})
            await self._release(h, agent)
        h.agent = None
        await self._fail(h, FailureReason.bridge_error)
        self._start_fallback(h, FailureReason.bridge_error)

    async def fallback_stored(
        self, h: LiveHandoff, kind: FallbackKind, *, number: str | None = None, message: str | None = None
    ) -> None:
        """The fallback has what it came for: store the callback request (the message redacted)."""
        h.storing = True
        stored_message, counts = message, dict[str, int]()
        if message:
            stored_message, counts = await asyncio.to_thread(self._redact, h.session, message)
        row = CallbackRequestRow(
            id=secrets.token_hex(8),
            session_id=h.session.id,
            handoff_id=h.row_id,
            agent=h.session.agent.name,
            environment=self.environment,
            queue=h.queue,
            channel=h.channel,
            kind=kind,
            reason=h.failure or "",
            callback_number=number,
            message=stored_message,
            redactions=counts,
            created_at=utcnow(),
        )

        def insert() -> None:
            with self.db.orm() as orm, orm.begin():
                orm.add(row)

        await asyncio.to_thread(insert)
        h.stored = True
        await self._audit("caller", "handoff.fallback", h, "ok", {"kind": kind, "callback": row.id})
        await self._finish(h, f"fallback_{kind}")

    async def fallback_failed(self, h: LiveHandoff) -> None:
        """The fallback got no usable number or message: the handoff failed."""
        await self._fail(h, FailureReason.fallback_incomplete)
        await self._finish(h, "failed")

    # ---- desk agents -----------------------------------------------------------------------------------

    async def join(self, agent: DeskAgent) -> None:
        """A desk agent signed in (replacing their socket elsewhere); a conversation of theirs resumes."""
        old = self.agents.get(agent.user_id)
        if old is not None:
            await self.leave(old)
            self._spawn(old.link.close(4000, "signed in to the desk elsewhere"))
        elif self.clustered:
            await self.relay.take_from_elsewhere(agent.user_id)  # their socket on another worker closes
        if self.clustered:
            await self._join_cluster(agent)
            return
        self.agents[agent.user_id] = agent
        mine = next((h for h in self.handoffs.values() if h.away is not None and h.away.user_id == agent.user_id), None)
        agent.link.send(self._hello(agent, resuming=mine is not None))
        if mine is not None:
            await self._resume(mine, agent)
        self._broadcast_queues()

    async def _join_cluster(self, agent: DeskAgent) -> None:
        """`join` in a cluster: what was theirs, here or on another worker, comes back to this socket;
        what is said to them meanwhile waits for their `hello`."""
        held = HeldLink(agent.link)
        agent.link = held
        self.agents[agent.user_id] = agent
        resuming = False
        try:
            await self.relay.flushed(take=agent.user_id)  # their presence, held here from now on
            for h in list(self.handoffs.values()):
                resuming = await self._reclaim(h, agent) or resuming
            resuming = await self.relay.rejoin_elsewhere(agent) or resuming
        except UnavailableError as exc:
            log.warning("desk agent user:%s signed in without the shared desk: %s", agent.user_id, exc)
        finally:
            agent.link = held.link
            held.link.send(self._hello(agent, resuming=resuming))
            held.release()
        self._broadcast_queues()

    def _hello(self, agent: DeskAgent, *, resuming: bool) -> dict[str, Any]:
        return {
            "type": "hello",
            "user": {"id": agent.user_id, "username": agent.username, "display_name": agent.display_name},
            "status": agent.status,
            "skills": sorted(agent.skills),
            "dispositions": list(DISPOSITIONS),
            "queues": self.queue_views(),
            "resuming": resuming,
        }

    async def _reclaim(self, h: LiveHandoff, agent: DeskAgent) -> bool:
        """`agent` signed in again (on this worker or another): an offer made to their old socket is
        withdrawn; a conversation or wrap-up of theirs comes back to them. True when it did."""
        user = agent.user_id
        if h.offered_to is not None and h.offered_to.user_id == user and h.offered_to is not agent:
            self._withdraw(h, FailureReason.agent_disconnected.value)
            self._dispatch()
            return False
        if h.agent is not None and h.agent.user_id == user and h.agent is not agent:
            await self.leave(h.agent)  # their old socket: as if it dropped, then they are back
        if h.away is not None and h.away.user_id == user:
            return await self._resume(h, agent)
        return False

    async def leave(self, agent: DeskAgent, *, grace: bool = True) -> None:
        """The desk agent's socket is gone (closed, dropped, bad input, or replaced). A conversation
        (or wrap-up) of theirs waits the queue's `reconnect_grace_s` for them to come back, unless
        `grace` is off (the socket was closed for bad input)."""
        if self.agents.get(agent.user_id) is agent:
            del self.agents[agent.user_id]
            if self.clustered:
                self.relay.tell(agent)
                await self.relay.flushed()  # gone from the shared presence before anyone hears of it
        if agent.worker is None:
            self.relay.left(agent, grace=grace)  # a caller of another worker offered to them, or theirs
        if agent.offer is not None:
            offered = agent.offer
            self._withdraw(offered, FailureReason.agent_disconnected.value)
            if not await self._staffed(offered.queue, offered.config):
                await self._fail(offered, FailureReason.agent_disconnected)
                self._start_fallback(offered, FailureReason.agent_disconnected)
        h = agent.handoff
        agent.handoff = None
        if h is not None and h.agent is agent:
            h.agent = None
            wait = grace and not self.closed and h.config.reconnect_grace_s > 0
            if h.status == "accepted" and wait:
                await self._lose(h, agent)
            elif h.status == "accepted":
                await self._fail(h, FailureReason.agent_disconnected)
                self._start_fallback(h, FailureReason.agent_disconnected)
            elif h.status == "ended" and wait:
                await self._hold_for(h, agent)  # left during wrap-up: theirs again if they come back
                await self._record(
                    h,
                    "agent_lost",
                    {"from": f"user:{agent.user_id}", "during": "wrap_up", "grace_s": h.config.reconnect_grace_s},
                )
            elif h.status == "ended":
                await self._finish(h, "wrapped_up")  # left during wrap-up: no disposition
            await self._release(h, agent)
        self.relay.forget(agent)
        self._dispatch()
        self._broadcast_queues()

    # ---- a desk agent's socket dropped mid-conversation: hold, resume or fall back --------------------

    async def _hold_for(self, h: LiveHandoff, agent: DeskAgent) -> None:
        h.away, h.away_since = agent, time.monotonic()
        h.tasks["grace"] = self._spawn(self._grace(h, agent))
        if self.clustered:  # they may come back on any worker
            await self._shared(
                "marking a handoff as held", self.shared.set_away(agent.user_id, h.id, h.config.reconnect_grace_s)
            )

    async def _lose(self, h: LiveHandoff, agent: DeskAgent) -> None:
        """A connected conversation lost its desk agent: the caller holds while they may come back."""
        connect = h.tasks.pop("connect", None)
        if connect is not None and connect is not asyncio.current_task():
            connect.cancel()
        h.status = "reconnecting"
        await self._hold_for(h, agent)
        log.info(
            "handoff %s: desk agent user:%s dropped; holding %s s for them",
            h.id,
            agent.user_id,
            h.config.reconnect_grace_s,
        )
        await self._record(
            h,
            "agent_lost",
            {"from": f"user:{agent.user_id}", "during": "conversation", "grace_s": h.config.reconnect_grace_s},
        )
        if h.status == "reconnecting":  # (not resumed meanwhile)
            try:
                await h.leg.agent_lost(h)
            except Exception:
                log.exception("handoff %s: putting the caller back on hold failed", h.id)

    async def _grace(self, h: LiveHandoff, agent: DeskAgent) -> None:
        await asyncio.sleep(h.config.reconnect_grace_s)
        if h.away is not agent:
            return
        h.away = None
        if self.clustered:
            await self._shared("clearing a held handoff", self.shared.clear_away(agent.user_id, h.id))
        if h.status == "reconnecting":
            await self._fail(h, FailureReason.agent_disconnected)
            self._start_fallback(h, FailureReason.agent_disconnected)
        elif h.status == "ended":
            await self._finish(h, "wrapped_up")  # never came back to wrap up: no disposition
        self._broadcast_queues()

    async def _resume(self, h: LiveHandoff, agent: DeskAgent) -> bool:
        """The desk agent whose socket dropped is back: the conversation (or wrap-up) is theirs again."""
        if not await self._shared("resuming a handoff", self.shared.resume(h.id, agent.user_id)):
            log.warning("handoff %s: desk agent user:%s cannot take it back (claimed elsewhere)", h.id, agent.user_id)
            return False
        if h.away is None or h.away.user_id != agent.user_id:  # (the grace ran out meanwhile)
            await self._release(h, agent)
            return False
        old, away_s = h.away, round(time.monotonic() - h.away_since, 1)
        grace = h.tasks.pop("grace", None)
        if grace is not None and grace is not asyncio.current_task():
            grace.cancel()
        h.away, h.agent = None, agent
        agent.handoff, agent.offer, agent.since = h, None, time.time()
        if old is not None:
            agent.wanted = old.wanted  # after this conversation, what they had chosen before it
        in_conversation = h.status == "reconnecting"
        agent.status = "busy" if in_conversation else "wrap_up"
        if in_conversation:
            h.status = "accepted"
        if self.clustered:
            await self._shared("clearing a held handoff", self.shared.clear_away(agent.user_id, h.id))
        self.relay.tell(agent, "handoff", "status", "wanted")
        agent.link.send(
            {
                "type": "resumed",
                "handoff": h.view(),
                "state": "connecting" if in_conversation else "wrap_up",
                "lines": list(h.chat_lines),
                "status": agent.status,
            }
        )
        if in_conversation:
            h.tasks["connect"] = self._spawn(self._connect(h, agent))  # the caller: hold cleared, bridged again
        log.info("handoff %s: desk agent user:%s is back after %s s", h.id, agent.user_id, away_s)
        await self._record(h, "resumed", {"by": f"user:{agent.user_id}", "away_s": away_s})
        await self._audit(
            f"user:{agent.user_id}",
            "handoff.resumed",
            h,
            "ok",
            {"away_s": away_s, "state": "conversation" if in_conversation else "wrap_up"},
        )
        return True

    def set_status(self, agent: DeskAgent, status: str, queues: list[str] | None = None) -> None:
        """A desk agent chose available or away (and which queues they take)."""
        if queues is not None:
            agent.queues = frozenset(queues)
        agent.wanted = status
        if agent.handoff is None and agent.remote is None and agent.status != status:
            agent.status = status
            agent.since = time.time()
        if status == "away" and agent.offer is not None:
            self._withdraw(agent.offer, "agent_away")
        self.relay.profile_changed(agent, withdraw=status == "away")
        agent.link.send({"type": "status", "status": agent.status, "queues": sorted(agent.queues)})
        self.relay.tell(agent)
        self._dispatch()
        self._broadcast_queues()

    def set_skills(self, user_id: str, skills: Iterable[str]) -> None:
        """A signed-in desk agent's skills changed: route by the new ones (on whichever worker holds them)."""
        agent = self.agents.get(user_id)
        if agent is None:
            self.relay.skills_changed(user_id, sorted(skills))
            return
        agent.skills = frozenset(skills)
        agent.link.send({"type": "skills", "skills": sorted(agent.skills)})
        self.relay.tell(agent)
        self._dispatch()
        self._broadcast_queues()

    async def accept(self, agent: DeskAgent, handoff_id: int) -> None:
        """A desk agent takes the caller offered to them: connect the caller, then record it."""
        h = self.handoffs.get(handoff_id)
        if h is None and agent.worker is None and self.clustered:
            await self.relay.forward_accept(agent, handoff_id)  # another worker's caller
            return
        if h is None or h.offered_to is not agent or h.status != "offered":
            self._accept_failed(agent, handoff_id)
            return
        claimed = await self._shared("accepting a handoff", self.shared.accept(h.id, agent.user_id))
        if not claimed or h.offered_to is not agent or h.status != "offered":
            if claimed:  # (withdrawn while the claim was made)
                await self._release(h, agent)
            elif h.offered_to is agent:  # the shared state disagrees: this offer is void
                self._withdraw(h, "not_yours")
                self._dispatch()
            self._accept_failed(agent, handoff_id)
            return
        self._cancel_tasks(h)
        waited = time.monotonic() - h.created
        h.status, h.agent, h.offered_to = "accepted", agent, None
        agent.offer, agent.handoff, agent.status, agent.since = None, h, "busy", time.time()
        if self.metrics is not None:
            self.metrics.handoff_wait.labels(queue=h.queue).observe(waited)
        self.relay.tell(agent, "offer", "handoff", "status")
        agent.link.send({"type": "accepted", "handoff_id": h.id, "channel": h.channel})
        h.tasks["connect"] = self._spawn(self._connect(h, agent))  # the caller first: the records can wait
        self._broadcast_queues()
        await self._record(
            h,
            "accepted",
            {"by": f"user:{agent.user_id}", "waited_s": round(waited, 1)},
            status="accepted",
            accepted_by=agent.user_id,
            accepted_at=utcnow(),
        )
        await self._audit(f"user:{agent.user_id}", "handoff.accepted", h, "ok", {"waited_s": round(waited, 1)})

    @staticmethod
    def _accept_failed(agent: DeskAgent, handoff_id: int) -> None:
        agent.link.send(
            {"type": "accept_failed", "handoff_id": handoff_id, "reason": "this caller is no longer offered to you"}
        )

    async def _connect(self, h: LiveHandoff, agent: DeskAgent) -> None:
        try:
            await h.leg.connect(h, agent)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("handoff %s: connecting the caller failed", h.id)
            await self.bridge_failed(h, f"{type(exc).__name__}: {exc}")
            return
        if h.agent is agent and h.status == "accepted":
            agent.link.send({"type": "connected", "handoff_id": h.id, "channel": h.channel})
            for text in h.pending_caller:
                agent.link.send({"type": "caller_message", "handoff_id": h.id, "text": text})
                keep_line(h, "caller", text)
            h.pending_caller.clear()

    def decline(self, agent: DeskAgent, handoff_id: int) -> None:
        """A desk agent declines an offer: the caller is offered to the next one."""
        h = self.handoffs.get(handoff_id)
        if h is None and agent.worker is None:
            self.relay.forward_decline(agent, handoff_id)  # another worker's caller, if it is
            return
        if h is None or h.offered_to is not agent:
            return
        h.declined.add(agent.user_id)
        self._withdraw(h, "declined")
        self._dispatch()
        self._broadcast_queues()

    async def agent_audio(self, agent: DeskAgent, pcm16: bytes) -> None:
        """The desk agent's audio for the voice call they are connected to."""
        h = agent.handoff
        if h is None and agent.remote is not None:
            self.relay.audio_to_caller(agent, pcm16)  # the caller is on another worker
            return
        if h is None or h.status != "accepted" or h.channel != "voice":
            return  # audio a moment before or after the call: nobody to hear it
        try:
            await h.leg.agent_audio(pcm16)
        except Exception as exc:
            await self.bridge_failed(h, f"{type(exc).__name__}: {exc}")

    async def agent_message(self, agent: DeskAgent, text: str) -> None:
        """The desk agent's line for the chat they are connected to."""
        h = agent.handoff
        if h is None and agent.remote is not None:
            self.relay.forward(agent, "message", agent.remote, text=text)
            return
        if h is None or h.status != "accepted" or h.channel != "chat":
            agent.link.send({"type": "error", "error": "no chat in progress"})
            return
        try:
            await h.leg.agent_text(text, agent)
        except Exception as exc:
            await self.bridge_failed(h, f"{type(exc).__name__}: {exc}")
            return
        keep_line(h, "person", text)

    async def hangup(self, agent: DeskAgent) -> None:
        """The desk agent ends the conversation; wrap-up follows."""
        h = agent.handoff
        if h is None and agent.remote is not None:
            self.relay.forward(agent, "hangup", agent.remote)
            return
        if h is None or h.status != "accepted":
            return
        h.status = "ended"
        agent.status = "wrap_up"
        self.relay.tell(agent, "status")
        agent.link.send({"type": "call_ended", "handoff_id": h.id, "by": "agent"})
        await self._record(h, "call_ended", {"by": "agent"}, ended_at=utcnow())
        try:
            await h.leg.agent_hung_up()
        except Exception:
            log.exception("handoff %s: ending the caller's side failed", h.id)

    async def wrap_up(self, agent: DeskAgent, handoff_id: int, disposition: str, note: str = "") -> None:
        """The desk agent closes a conversation of theirs with a disposition (and a redacted note)."""
        h = agent.handoff
        if h is None and agent.remote is not None and agent.remote[1] == handoff_id:
            self.relay.forward(agent, "wrap_up", agent.remote, disposition=disposition, note=note)
            return
        if h is None or h.id != handoff_id:
            agent.link.send({"type": "error", "error": f"handoff {handoff_id} is not yours to wrap up"})
            return
        if h.status == "accepted":
            await self.hangup(agent)
        stored_note = None
        if note.strip():
            stored_note, _ = await asyncio.to_thread(self._redact, h.session, note.strip())
        agent.handoff = None
        self._back_from_call(agent)
        self.relay.tell(agent, "handoff", "status")
        await self._release(h, agent)
        await self._audit(f"user:{agent.user_id}", "handoff.wrapped_up", h, "ok", {"disposition": disposition})
        await self._finish(h, "wrapped_up", disposition=disposition, disposition_note=stored_note)
        agent.link.send({"type": "wrapped_up", "handoff_id": h.id, "status": agent.status})
        self._dispatch()
        self._broadcast_queues()

    # ---- views ------------------------------------------------------------------------------------------

    def queue_configs(self) -> dict[str, tuple[Queue, list[str]]]:
        """Every queue the served agents declare: its settings (the first agent's) and the agents."""
        out: dict[str, tuple[Queue, list[str]]] = {}
        for runtime in self.runtimes():
            for name, queue in runtime.agent.escalation.queues.items():
                config, agents = out.setdefault(name, (queue, []))
                if runtime.agent.name not in agents:
                    agents.append(runtime.agent.name)
        return out

    def queue_views(self) -> list[dict[str, Any]]:
        """Each queue: its settings, who waits, and the desk agents who may take it (in a cluster:
        across workers, as last read)."""
        configs = self.queue_configs()
        for h in self.handoffs.values():
            configs.setdefault(h.queue, (h.config, [h.session.agent.name]))
        others = self.relay.other_handoffs()
        for r in others:
            if r.queue not in configs:
                configs[r.queue] = (Queue(skills=sorted(r.skills)), [r.agent])
        desk = [(a.skills, a.queues, a.status) for a in self.agents.values()]
        desk += [(r.skills, r.queues, r.status) for r in self.relay.other_agents()]
        views = []
        for name, (config, agents) in sorted(configs.items()):
            eligible = [status for skills, queues, status in desk if may_take(skills, queues, name, config.skills)]
            waiting = sum(1 for h in self.handoffs.values() if h.queue == name and h.status in ("waiting", "offered"))
            in_fallback = sum(1 for h in self.handoffs.values() if h.queue == name and h.status == "fallback")
            views.append(
                {
                    "name": name,
                    "description": config.description,
                    "skills": sorted(config.skills),
                    "timeout_s": config.timeout_s,
                    "fallback": config.fallback,
                    "agents": agents,
                    "waiting": waiting
                    + sum(1 for r in others if r.queue == name and r.status in ("waiting", "offered")),
                    "in_fallback": in_fallback + sum(1 for r in others if r.queue == name and r.status == "fallback"),
                    "desk_available": sum(1 for status in eligible if status == "available"),
                    "desk_signed_in": len(eligible),
                }
            )
        return views

    def snapshot(self) -> dict[str, Any]:
        """The desk now: queues, desk agents and live handoffs (without their packets); in a cluster,
        every worker's, as last read (`fresh_snapshot` reads first)."""
        return {
            "queues": self.queue_views(),
            "agents": [{**a.view(), "worker": self.worker} for a in self.agents.values()]
            + [r.view() for r in self.relay.other_agents()],
            "handoffs": [
                {**{k: v for k, v in h.view().items() if k != "packet"}, "worker": self.worker}
                for h in self.handoffs.values()
            ]
            + [r.view() for r in self.relay.other_handoffs()],
        }

    async def fresh_snapshot(self) -> dict[str, Any]:
        """`snapshot`, after reading what the other workers hold."""
        if self.clustered:
            await self._shared("reading the desk", self.relay.refresh())
        return self.snapshot()

    # ---- routing ----------------------------------------------------------------------------------------

    @staticmethod
    def _eligible(agent: DeskAgent, queue: str, config: Queue) -> bool:
        return may_take(agent.skills, agent.queues, queue, config.skills)

    async def _staffed(self, queue: str, config: Queue) -> bool:
        """Whether anyone who may take the queue is signed in and not away (on any worker; in a cluster
        whose shared state cannot be reached, nobody: no offer could be made)."""
        if self.clustered:
            try:
                await self.relay.refresh()
            except UnavailableError as exc:
                log.warning("the desk's shared state is unreachable (%s): the queue %s is unstaffed", exc, queue)
                return False
        if any(a.status != "away" and self._eligible(a, queue, config) for a in self.agents.values()):
            return True
        return self.clustered and any(
            r.status != "away" and may_take(r.skills, r.queues, queue, config.skills) for r in self.relay.other_agents()
        )

    def _dispatch(self) -> None:
        """Offer the callers waiting here to available desk agents: soon, one pass at a time."""
        if self.closed:
            return
        self._dispatch_again = True
        if self._dispatcher is None or self._dispatcher.done():
            self._dispatcher = self._spawn(self._dispatch_passes())

    async def _dispatch_passes(self) -> None:
        while self._dispatch_again and not self.closed:
            self._dispatch_again = False
            if self._claims:
                await asyncio.gather(*list(self._claims), return_exceptions=True)  # withdrawals land first
            try:
                await self._dispatch_pass()
            except UnavailableError as exc:
                log.warning("dispatching callers failed: %s (trying again on the next renewal)", exc)

    async def _dispatch_pass(self) -> None:
        passed: set[str] = set()  # desk agents offered a caller in this pass, or whose claim failed
        for h in sorted(self.handoffs.values(), key=lambda h: h.created):
            while h.status == "waiting" and h.queued and not self.closed:
                best = self._best(h, passed)
                if best is None:
                    break
                passed.add(best.user_id)
                offer_s = h.config.offer_timeout_s + OFFER_MARGIN_S
                if not await self.shared.offer(h.id, best.user_id, offer_s):
                    continue  # offered a caller by another worker meanwhile
                if h.status != "waiting" or not self._free(best):
                    await self.shared.withdraw(h.id, best.user_id)  # (changed while the claim was made)
                    continue
                self._offer(h, best)

    def _free(self, agent: DeskAgent) -> bool:
        """Not offered a caller, not with one (as far as this worker knows)."""
        if agent.offer is not None or agent.handoff is not None:
            return False
        if agent.worker is None:
            return self.agents.get(agent.user_id) is agent and agent.remote is None and agent.remote_offer is None
        return True

    def _best(self, h: LiveHandoff, passed: set[str]) -> DeskAgent | None:
        """The desk agent to offer `h` to: available longest among those who may take it, unless an older
        caller of another worker waits for them (that worker offers it)."""
        best: DeskAgent | None = None
        for agent in self.agents.values():
            if agent.status != "available" or not self._free(agent) or agent.user_id in passed:
                continue
            if agent.user_id in h.declined or not self._eligible(agent, h.queue, h.config):
                continue
            if best is None or agent.since < best.since:
                best = agent
        for r in self.relay.other_agents():
            if r.status != "available" or r.offer is not None or r.handoff is not None or r.user_id in passed:
                continue
            if r.user_id in self.agents or r.user_id in h.declined:
                continue
            if not may_take(r.skills, r.queues, h.queue, h.config.skills):
                continue
            if best is None or r.since < best.since:
                proxy = self.relay.proxy(r)
                if proxy is not None and self._free(proxy):
                    best = proxy
        if best is not None and self.relay.older_elsewhere(h, best):
            passed.add(best.user_id)
            return self._best(h, passed)
        return best

    def _offer(self, h: LiveHandoff, agent: DeskAgent) -> None:
        h.status, h.offered_to, agent.offer = "offered", agent, h
        self.relay.tell(agent, "offer")
        agent.link.send({"type": "offer", "handoff": h.view()})
        h.tasks["ring"] = self._spawn(self._ring_out(h, agent))
        self._record(h, "offered", {"to": f"user:{agent.user_id}"}, status="offered")

    def _withdraw(self, h: LiveHandoff, reason: str) -> None:
        agent = h.offered_to
        if agent is None:
            return
        ring = h.tasks.pop("ring", None)
        if ring is not None and ring is not asyncio.current_task():
            ring.cancel()
        agent.offer = None
        h.offered_to = None
        if h.status == "offered":
            h.status = "waiting"
        self._claim(self.shared.withdraw(h.id, agent.user_id))
        self.relay.tell(agent, "offer")
        agent.link.send({"type": "offer_withdrawn", "handoff_id": h.id, "reason": reason})
        self._record(h, "offer_withdrawn", {"from": f"user:{agent.user_id}", "reason": reason}, status="waiting")
        self.relay.forget(agent)

    async def _ring_out(self, h: LiveHandoff, agent: DeskAgent) -> None:
        await asyncio.sleep(h.config.offer_timeout_s)
        if h.offered_to is agent and h.status == "offered":
            self._withdraw(h, "not_answered")
            agent.status, agent.wanted, agent.since = "away", "away", time.time()
            self.relay.tell(agent, "status", "wanted")
            agent.link.send(
                {"type": "status", "status": "away", "reason": "missed_offer", "queues": sorted(agent.queues)}
            )
            self._dispatch()
            self._broadcast_queues()

    async def _queue_timeout(self, h: LiveHandoff) -> None:
        await asyncio.sleep(max(0.0, h.config.timeout_s - (time.monotonic() - h.created)))
        if h.status in ("waiting", "offered"):
            if h.status == "offered":
                self._withdraw(h, FailureReason.queue_timeout.value)
            await self._fail(h, FailureReason.queue_timeout)
            self._start_fallback(h, FailureReason.queue_timeout)
            self._broadcast_queues()

    def _start_fallback(self, h: LiveHandoff, reason: FailureReason) -> None:
        self._cancel_tasks(h)
        h.status = "fallback"
        self.relay.share(h)
        h.tasks["fallback"] = self._spawn(self._fallback(h, reason.value))

    async def _fallback(self, h: LiveHandoff, reason: str) -> None:
        await self._record(h, "fallback", {"kind": h.config.fallback, "reason": reason})
        try:
            await h.leg.fallback(h, reason)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("handoff %s: the fallback failed", h.id)
            if not h.stored and h.status != "done":
                await self._fail(h, FailureReason.bridge_error)
                await self._finish(h, "failed")

    def _back_from_call(self, agent: DeskAgent) -> None:
        agent.status = agent.wanted if agent.wanted in ("available", "away") else "available"
        agent.since = time.time()

    # ---- bookkeeping ------------------------------------------------------------------------------------

    async def _release(self, h: LiveHandoff, agent: DeskAgent) -> None:
        """The desk agent no longer has `h`: their claim on it goes."""
        await self._shared("releasing a desk agent", self.shared.release(h.id, agent.user_id))

    def _claim(self, work: Awaitable[Any]) -> None:
        """A claim change that need not be awaited here (the next dispatch waits for it)."""
        task = self._spawn(self._shared("changing a claim", work))
        self._claims.add(task)
        task.add_done_callback(self._claims.discard)

    async def _shared(self, what: str, work: Awaitable[Any]) -> Any:
        """Await a change to the shared state; if it cannot be reached, say so and go on (False)."""
        try:
            return await work
        except UnavailableError as exc:
            log.warning("%s failed: %s", what, exc)
            return False

    async def _fail(self, h: LiveHandoff, reason: FailureReason) -> None:
        first = h.failure is None
        if first:
            h.failure = reason.value
        log.info("handoff %s (%s, queue %s): %s", h.id, h.channel, h.queue, reason.value)
        if self.metrics is not None:
            self.metrics.handoff_failures.labels(reason=reason.value).inc()
        await self._record(
            h, "failure", {"reason": reason.value}, **({"failure_reason": reason.value} if first else {})
        )
        await self._audit("system", "handoff.failed", h, "failed", {"reason": reason.value})

    async def _finish(self, h: LiveHandoff, outcome: str, **values: Any) -> None:
        if h.status == "done":
            return
        h.status = "done"
        self._cancel_tasks(h)
        self.handoffs.pop(h.id, None)
        if self.metrics is not None:
            self.metrics.handoff_outcomes.labels(queue=h.queue, outcome=outcome).inc()
        if self.clustered:
            self.relay.share(h)  # (gone from the shared records, in order with its other writes)
        else:
            await self.shared.drop_handoff(h.id)
        await self._record(h, outcome, {}, status=outcome, ended_at=utcnow(), **values)
        self._broadcast_queues()

    def _cancel_tasks(self, h: LiveHandoff) -> None:
        current = asyncio.current_task()
        for name, task in list(h.tasks.items()):
            if name == "fallback":
                continue  # ends by itself, or when the caller leaves (caller_left)
            if task is not current:
                task.cancel()
            h.tasks.pop(name, None)

    def _broadcast_queues(self) -> None:
        if not self.agents:
            return
        message = {"type": "queues", "queues": self.queue_views()}
        for agent in self.agents.values():
            agent.link.send(message)

    def _spawn(self, work: Awaitable[Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("desk task failed", exc_info=task.exception())

    async def close(self) -> None:
        """The worker is stopping: let pending row writes finish, cancel the desk's tasks, leave the
        shared desk (this worker's desk agents and callers are no longer offered or waiting)."""
        if self.closed:
            return
        self.closed = True
        writes = [h.last_write for h in self.handoffs.values() if h.last_write is not None]
        if writes:
            await asyncio.wait(writes, timeout=5)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.clustered:
            await self.relay.leave_cluster()
        await self.shared.close()

    # ---- records shared with other workers ------------------------------------------------------------

    def agent_record(self, agent: DeskAgent) -> AgentRecord:
        """A desk agent of this worker as the other workers see them."""
        return AgentRecord(
            user_id=agent.user_id,
            username=agent.username,
            display_name=agent.display_name,
            skills=agent.skills,
            queues=agent.queues,
            status=agent.status,
            wanted=agent.wanted,
            since=agent.since,
            worker=self.worker,
        )

    def handoff_record(self, h: LiveHandoff) -> HandoffRecord:
        """A caller of this worker as the other workers see them (never the packet)."""
        return HandoffRecord(
            id=h.id,
            queue=h.queue,
            skills=frozenset(h.config.skills),
            worker=self.worker,
            status=h.status,
            created=h.created_at,
            channel=h.channel,
            agent=h.session.agent.name,
            reason=str(h.packet.get("reason") or ""),
            timeout_s=h.config.timeout_s,
            offer_timeout_s=h.config.offer_timeout_s,
            declined=frozenset(h.declined),
        )

    # ---- storage ----------------------------------------------------------------------------------------

    def _row_id(self, session_id: str) -> int | None:
        with self.db.orm() as orm:
            return orm.scalar(
                select(HandoffRow.id).where(HandoffRow.session_id == session_id).order_by(HandoffRow.id.desc()).limit(1)
            )

    def _record(
        self,
        h: LiveHandoff,
        event: str,
        data: dict[str, Any] | None = None,
        *,
        status: str | None = None,
        **values: Any,
    ) -> asyncio.Future[None]:
        """One step of the handoff on its row: `events` grows, `status` and the columns change (and, in a
        cluster, the handoff's shared record).

        Writes of one handoff are chained, so they land in the order they were asked for whether
        or not the caller awaits them."""
        row_id, at = h.row_id, utcnow()
        previous = h.last_write
        self.relay.share(h)

        def work() -> None:
            with self.db.orm() as orm, orm.begin():
                row = orm.get(HandoffRow, row_id)
                if row is None:
                    return  # erased meanwhile
                for key, value in values.items():
                    if key == "ended_at" and row.ended_at is not None:
                        continue
                    setattr(row, key, value)
                if status is not None:
                    row.status = status
                row.events = [*(row.events or []), {"event": event, "at": at.isoformat(), **(data or {})}]

        async def chained() -> None:
            if previous is not None:
                await asyncio.gather(previous, return_exceptions=True)
            if row_id is None:
                return
            try:
                await asyncio.to_thread(work)
            except Exception:
                log.exception("recording handoff %s (%s) failed", h.id, event)

        task = self._spawn(chained())
        h.last_write = task
        return task

    async def _audit(self, actor: str, action: str, h: LiveHandoff, outcome: Outcome, data: dict[str, Any]) -> None:
        if self.audit is None:
            return
        event = AuditEvent(
            actor=actor,
            action=action,
            resource=f"handoff:{h.id}",
            environment=self.environment,
            outcome=outcome,
            data={
                "session": h.session.id,
                "agent": h.session.agent.name,
                "queue": h.queue,
                "channel": h.channel,
                **data,
            },
        )
        try:
            await asyncio.to_thread(self.audit.append, event)
        except Exception:
            log.exception("auditing %s of handoff %s failed", action, h.id)

    @staticmethod
    def _redact(session: Session, text: str) -> tuple[str, dict[str, int]]:
        """Free text for storage (a left message, a wrap-up note): the agent's redactor, then any run
        of digits it could not type (a number the recogniser garbled, say) masked as ``<NUMBER>``."""
        redactor = redactor_for_agent(session.agent, session.bundle.topics.values())
        result = redactor.redact(text, known_values(session))
        counts = dict(result.counts)
        masked, n = _DIGIT_RUN.subn("<NUMBER>", result.text)
        if n:
            counts["NUMBER"] = counts.get("NUMBER", 0) + n
        return masked, dict(sorted(counts.items()))


def keep_line(h: LiveHandoff, who: str, text: str) -> None:
    """Keep a line of the chat with the person, for a desk agent who reconnects (the last MAX_CHAT_LINES)."""
    if len(h.chat_lines) >= MAX_CHAT_LINES:
        del h.chat_lines[0]
    h.chat_lines.append({"from": who, "text": text})
