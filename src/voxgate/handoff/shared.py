"""What the desks of a cluster's workers share: desk agents' presence, the callers waiting, the claims
that make an offer and an accept atomic, and the events between workers. `DeskState` is the port the
desk (`desk.Desk`) talks to; `LocalDeskState` is one worker alone (the default: nothing to share, every
event stays in the process), `voxgate.cluster.desk.RedisDeskState` the cluster's (Redis).

Two workers take part in a cross-worker handoff. The *caller's worker* holds the caller's socket and
the handoff itself: it routes, offers, times out, records and audits, as a single worker always has. The
*desk agent's worker* holds the desk agent's socket: it publishes their presence and passes what they
do (accept, a chat line, their audio, wrap-up) to the caller's worker, and what the caller's worker
says back to the socket. Neither trusts the other's memory for who may take whom: a claim, made and
checked atomically in the shared state, does.

Records are flat string maps (a Redis hash is one) so that the shared state need not know the desk's
types; `AgentRecord` and `HandoffRecord` read and write them.

Claims (`claim:{user}`, and `offer_to`/`taken_by` on the handoff's record):

- `offer`: the handoff is offered to nobody and taken by nobody, and the desk agent holds no
  unexpired offer and no handoff → both now say so. One caller is offered to one desk agent at a
  time, and a desk agent is offered one caller at a time, however many workers dispatch at once.
- `accept`: the handoff is offered to this desk agent and their claim names it → it is theirs.
  Two desk agents can never both accept one caller.
- `withdraw`, `release`: undo an offer, free a desk agent from a handoff (each only if it still says so).
- `resume`: a desk agent who reconnects takes back the handoff that was theirs.

Every record expires unless its worker renews it (`ttl_s`): the desk agents and callers of a worker
that died vanish, and a claim its callers held lapses.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

log = logging.getLogger("voxgate.handoff.shared")

Fields = dict[str, str]
#: what a worker's desk renews its records with, and how long they outlive a silent worker
BEAT_S = 2.0
TTL_S = 6.0
#: an offer claim outlives the queue's offer timeout by this much (the caller's worker withdraws it first)
OFFER_MARGIN_S = 5.0


class DeskEvents(Protocol):
    """What a worker's desk takes from the shared state: events from workers (itself included) and audio."""

    async def on_event(self, sender: str, event: dict[str, Any]) -> dict[str, Any] | None:
        """One event from worker `sender`, in the order that worker sent them; for a request, the answer."""
        ...

    async def on_audio(self, target: str, pcm16: bytes) -> None:
        """A frame of audio for `target` (a desk agent's or a handoff's), in the order it was sent."""
        ...


class DeskState(Protocol):
    """The desk's shared state and the events between workers (see the module docstring)."""

    clustered: bool  # other workers may share it
    worker: str  # this worker's id
    beat_s: float  # how often the desk renews its records
    ttl_s: float  # how long a record outlives a worker that stopped renewing it

    async def start(self, worker: str, receiver: DeskEvents) -> None:
        """Take events and audio for `worker` (this one) from now on."""
        ...

    async def close(self) -> None:
        """Stop taking events; send what is queued."""
        ...

    async def put_agent(self, user: str, fields: Mapping[str, str], *, take: bool = False) -> bool:
        """Publish a desk agent's presence held by this worker (`take`: they signed in here, replacing
        any other worker's record); False when another worker holds them now."""
        ...

    async def drop_agent(self, user: str) -> None:
        """The desk agent left this worker (a record another worker holds now is kept)."""
        ...

    async def get_agent(self, user: str) -> Fields | None:
        """A desk agent's presence, with their claims as `claim_*` fields (None: not signed in anywhere)."""
        ...

    async def put_handoff(self, hid: int, fields: Mapping[str, str]) -> None:
        """Publish a handoff this worker holds (its claims are left as they are)."""
        ...

    async def drop_handoff(self, hid: int) -> None:
        """The handoff is over."""
        ...

    async def snapshot(self) -> tuple[list[Fields], list[Fields]]:
        """Every desk agent (with `claim_*` fields) and every open handoff of the cluster, oldest first."""
        ...

    async def renew(self, claims: Iterable[str]) -> None:
        """Keep the claims this worker's callers hold on these desk agents alive (its records are kept
        alive by `put_*` again)."""
        ...

    async def offer(self, hid: int, user: str, offer_s: float) -> bool:
        """Claim: offer the handoff to the desk agent (see the module docstring)."""
        ...

    async def withdraw(self, hid: int, user: str) -> bool:
        """Undo an offer of the handoff to the desk agent (False: it was not offered to them)."""
        ...

    async def accept(self, hid: int, user: str) -> bool:
        """Claim: the desk agent takes the handoff offered to them (False: it is not theirs to take)."""
        ...

    async def resume(self, hid: int, user: str) -> bool:
        """Claim: the desk agent takes back the handoff they had (False: someone else has it)."""
        ...

    async def release(self, hid: int, user: str) -> None:
        """The desk agent no longer has the handoff (or its offer)."""
        ...

    async def set_away(self, user: str, hid: int, ttl_s: float) -> None:
        """The desk agent's handoff waits `ttl_s` for them to sign in again (on any worker)."""
        ...

    async def get_away(self, user: str) -> tuple[str, int] | None:
        """(worker, handoff id) waiting for the desk agent to come back, if any."""
        ...

    async def clear_away(self, user: str, hid: int) -> None:
        """The handoff no longer waits for the desk agent."""
        ...

    def send(self, worker: str, event: dict[str, Any]) -> None:
        """An event for `worker`; events arrive in the order this worker sent them."""
        ...

    def broadcast(self, event: dict[str, Any]) -> None:
        """An event for every worker of the desk (this one included)."""
        ...

    async def request(self, worker: str, event: dict[str, Any], timeout_s: float) -> dict[str, Any] | None:
        """An event for `worker` and its answer (None: no answer in time)."""
        ...

    def send_audio(self, worker: str, target: str, pcm16: bytes) -> None:
        """A frame of audio for `target` on `worker` (dropped, never queued without bound, when behind)."""
        ...


def may_take(skills: frozenset[str], queues: frozenset[str], queue: str, needs: Iterable[str]) -> bool:
    """Whether a desk agent with `skills` who chose `queues` (none: any) may take callers of `queue`."""
    return set(needs) <= skills and (not queues or queue in queues)


# ---- records --------------------------------------------------------------------------------------------


def _names(value: str) -> frozenset[str]:
    return frozenset(v for v in value.split(",") if v)


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value else None
    except ValueError:
        return None


@dataclass(frozen=True)
class AgentRecord:
    """A desk agent as the cluster sees them: who, what they may take, and where their socket is."""

    user_id: str
    username: str
    display_name: str
    skills: frozenset[str]
    queues: frozenset[str]
    status: str
    wanted: str
    since: float  # wall clock (seconds): when they last became available (or away)
    worker: str
    offer: int | None = None  # claims
    offer_worker: str | None = None
    handoff: int | None = None
    handoff_worker: str | None = None

    def fields(self) -> Fields:
        """The presence fields (the claims are written by the claims alone)."""
        return {
            "user_id": self.user_id,
            "username": self.username,
            "display_name": self.display_name,
            "skills": ",".join(sorted(self.skills)),
            "queues": ",".join(sorted(self.queues)),
            "status": self.status,
            "wanted": self.wanted,
            "since": repr(self.since),
        }

    @classmethod
    def of(cls, fields: Mapping[str, str]) -> AgentRecord:
        """A record read back."""
        return cls(
            user_id=fields.get("user_id", ""),
            username=fields.get("username", ""),
            display_name=fields.get("display_name", ""),
            skills=_names(fields.get("skills", "")),
            queues=_names(fields.get("queues", "")),
            status=fields.get("status", "away"),
            wanted=fields.get("wanted", "available"),
            since=float(fields.get("since") or 0.0),
            worker=fields.get("worker", ""),
            offer=_int(fields.get("claim_offer")),
            offer_worker=fields.get("claim_offer_worker") or None,
            handoff=_int(fields.get("claim_handoff")),
            handoff_worker=fields.get("claim_handoff_worker") or None,
        )

    def view(self) -> dict[str, Any]:
        """The desk agent as the desk shows them."""
        return {
            "user_id": self.user_id,
            "username": self.username,
            "display_name": self.display_name,
            "status": self.status,
            "skills": sorted(self.skills),
            "queues": sorted(self.queues),
            "worker": self.worker,
        }


@dataclass(frozen=True)
class HandoffRecord:
    """A caller handed to the desk, as the cluster sees them (never the context packet)."""

    id: int
    queue: str
    skills: frozenset[str]
    worker: str
    status: str
    created: float  # wall clock (seconds)
    channel: str
    agent: str  # the virtual agent the caller talked to
    reason: str
    timeout_s: int
    offer_timeout_s: int
    declined: frozenset[str] = frozenset()
    offer_to: str = ""  # claims
    taken_by: str = ""

    def fields(self) -> Fields:
        """The descriptive fields (the claims are written by the claims alone)."""
        return {
            "id": str(self.id),
            "queue": self.queue,
            "skills": ",".join(sorted(self.skills)),
            "worker": self.worker,
            "status": self.status,
            "created": repr(self.created),
            "channel": self.channel,
            "agent": self.agent,
            "reason": self.reason,
            "timeout_s": str(self.timeout_s),
            "offer_timeout_s": str(self.offer_timeout_s),
            "declined": ",".join(sorted(self.declined)),
        }

    @classmethod
    def of(cls, fields: Mapping[str, str]) -> HandoffRecord | None:
        """A record read back (None: only claims are left of it)."""
        hid = _int(fields.get("id"))
        if hid is None or not fields.get("worker"):
            return None
        return cls(
            id=hid,
            queue=fields.get("queue", ""),
            skills=_names(fields.get("skills", "")),
            worker=fields["worker"],
            status=fields.get("status", "waiting"),
            created=float(fields.get("created") or 0.0),
            channel=fields.get("channel", ""),
            agent=fields.get("agent", ""),
            reason=fields.get("reason", ""),
            timeout_s=_int(fields.get("timeout_s")) or 0,
            offer_timeout_s=_int(fields.get("offer_timeout_s")) or 0,
            declined=_names(fields.get("declined", "")),
            offer_to=fields.get("offer_to", ""),
            taken_by=fields.get("taken_by", ""),
        )

    def view(self) -> dict[str, Any]:
        """What the desk's views show of a handoff held by another worker."""
        return {
            "id": self.id,
            "queue": self.queue,
            "channel": self.channel,
            "agent": self.agent,
            "reason": self.reason or None,
            "status": self.status,
            "waited_s": round(max(0.0, time.time() - self.created), 1),
            "timeout_s": self.timeout_s,
            "offer_timeout_s": self.offer_timeout_s,
            "worker": self.worker,
        }


# ---- one worker alone -------------------------------------------------------------------------------------


@dataclass
class _Claim:
    offer: int | None = None
    offer_until: float = 0.0
    handoff: int | None = None


@dataclass
class LocalDeskState:
    """The desk's shared state when the worker is alone: the same records and claims, in memory, and
    events that never leave the process. The default."""

    worker: str = "local"
    beat_s: float = BEAT_S
    ttl_s: float = TTL_S
    clustered: bool = False
    _agents: dict[str, Fields] = field(default_factory=dict)
    _handoffs: dict[int, Fields] = field(default_factory=dict)
    _claims: dict[str, _Claim] = field(default_factory=dict)
    _away: dict[str, tuple[int, float]] = field(default_factory=dict)
    _receiver: DeskEvents | None = None
    _tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    async def start(self, worker: str, receiver: DeskEvents) -> None:
        """Take events for this (the only) worker."""
        self.worker, self._receiver = worker, receiver

    async def close(self) -> None:
        """Let events under way finish."""
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def put_agent(self, user: str, fields: Mapping[str, str], *, take: bool = False) -> bool:
        """Presence, in memory."""
        self._agents[user] = {**fields, "worker": self.worker}
        return True

    async def drop_agent(self, user: str) -> None:
        """The desk agent left."""
        self._agents.pop(user, None)

    async def get_agent(self, user: str) -> Fields | None:
        """Presence with claims."""
        found = self._agents.get(user)
        return None if found is None else {**found, **self._claim_fields(user)}

    async def put_handoff(self, hid: int, fields: Mapping[str, str]) -> None:
        """A handoff, in memory (its claims kept)."""
        current = self._handoffs.setdefault(hid, {})
        current.update(fields)

    async def drop_handoff(self, hid: int) -> None:
        """The handoff is over."""
        self._handoffs.pop(hid, None)

    async def snapshot(self) -> tuple[list[Fields], list[Fields]]:
        """Every desk agent and handoff, as `snapshot` in the cluster."""
        agents = [{**a, **self._claim_fields(u)} for u, a in self._agents.items()]
        handoffs = sorted(
            (dict(h) for h in self._handoffs.values() if "worker" in h), key=lambda h: float(h.get("created", 0))
        )
        return agents, handoffs

    async def renew(self, claims: Iterable[str]) -> None:
        """Nothing expires in one process."""

    def _claim_fields(self, user: str) -> Fields:
        c = self._claims.get(user) or _Claim()
        return {
            "claim_offer": "" if c.offer is None else str(c.offer),
            "claim_offer_worker": self.worker if c.offer is not None else "",
            "claim_handoff": "" if c.handoff is None else str(c.handoff),
            "claim_handoff_worker": self.worker if c.handoff is not None else "",
        }

    async def offer(self, hid: int, user: str, offer_s: float) -> bool:
        """The offer claim (see the module docstring)."""
        h = self._handoffs.setdefault(hid, {})
        c = self._claims.setdefault(user, _Claim())
        if h.get("offer_to") or h.get("taken_by"):
            return False
        if (c.offer is not None and c.offer_until > time.monotonic()) or c.handoff is not None:
            return False
        h["offer_to"], c.offer, c.offer_until = user, hid, time.monotonic() + offer_s
        return True

    async def withdraw(self, hid: int, user: str) -> bool:
        """Undo the offer."""
        h, c = self._handoffs.get(hid, {}), self._claims.get(user)
        done = h.get("offer_to") == user
        if done:
            h["offer_to"] = ""
        if c is not None and c.offer == hid:
            c.offer = None
        return done

    async def accept(self, hid: int, user: str) -> bool:
        """The accept claim."""
        h, c = self._handoffs.get(hid, {}), self._claims.get(user)
        if c is None or h.get("offer_to") != user or h.get("taken_by") or c.offer != hid or c.handoff is not None:
            return False
        h["offer_to"], h["taken_by"] = "", user
        c.offer, c.handoff = None, hid
        return True

    async def resume(self, hid: int, user: str) -> bool:
        """The desk agent takes their handoff back."""
        h = self._handoffs.setdefault(hid, {})
        c = self._claims.setdefault(user, _Claim())
        if h.get("taken_by") not in (None, "", user) or c.handoff not in (None, hid):
            return False
        h["taken_by"], c.handoff = user, hid
        return True

    async def release(self, hid: int, user: str) -> None:
        """Free the desk agent from the handoff (and its offer)."""
        h, c = self._handoffs.get(hid, {}), self._claims.get(user)
        if h.get("taken_by") == user:
            h["taken_by"] = ""
        if h.get("offer_to") == user:
            h["offer_to"] = ""
        if c is not None:
            if c.handoff == hid:
                c.handoff = None
            if c.offer == hid:
                c.offer = None

    async def set_away(self, user: str, hid: int, ttl_s: float) -> None:
        """Remember the handoff waiting for the desk agent."""
        self._away[user] = (hid, time.monotonic() + ttl_s)

    async def get_away(self, user: str) -> tuple[str, int] | None:
        """The handoff waiting for the desk agent."""
        found = self._away.get(user)
        if found is None or found[1] <= time.monotonic():
            return None
        return self.worker, found[0]

    async def clear_away(self, user: str, hid: int) -> None:
        """Forget it."""
        if self._away.get(user, (None, 0.0))[0] == hid:
            del self._away[user]

    def send(self, worker: str, event: dict[str, Any]) -> None:
        """Events go to this worker only (there is no other)."""
        if worker == self.worker:
            self._deliver(event)

    def broadcast(self, event: dict[str, Any]) -> None:
        """To this worker."""
        self._deliver(event)

    async def request(self, worker: str, event: dict[str, Any], timeout_s: float) -> dict[str, Any] | None:
        """Asked of this worker, answered at once."""
        if worker != self.worker or self._receiver is None:
            return None
        return await self._receiver.on_event(self.worker, event)

    def send_audio(self, worker: str, target: str, pcm16: bytes) -> None:
        """Audio stays in the process."""
        if worker == self.worker and self._receiver is not None:
            self._spawn(self._receiver.on_audio(target, pcm16))

    def _deliver(self, event: dict[str, Any]) -> None:
        if self._receiver is not None:
            self._spawn(self._receiver.on_event(self.worker, event))

    def _spawn(self, work: Any) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
