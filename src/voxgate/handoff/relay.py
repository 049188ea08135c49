"""How the desks of a cluster's workers meet: a desk agent whose socket another worker holds, seen by the
caller's worker as a `DeskAgent` whose link is `RemoteLink`; what the desk agent does, relayed by their
worker to the caller's; the records each worker publishes and reads back; and the renewals that make a
worker that died drop out of the desk.

Events (`DeskState.send`, JSON, in order per sending worker):

- to the desk agent's worker: ``to_agent`` (a message for their socket), ``agent`` (what the caller's
  worker changed: the offer or handoff they have, their status), ``close``, ``kick`` (a request: they
  signed in on another worker; their socket here closes);
- to the caller's worker: ``op`` — ``accept``, ``decline``, ``message``, ``hangup``, ``wrap_up``,
  ``left`` (their socket closed), ``withdraw`` (they went away with an offer open), ``profile`` (their
  choices changed), ``rejoin`` (a request: they signed in again, on the worker that sends it);
- to all: ``changed`` (a record changed: read them again, offer, show the queues), ``skills``.

Audio (`DeskState.send_audio`) goes to ``u:{user}`` (the caller's audio, for the desk agent's socket) or
``h:{handoff}:{user}`` (the desk agent's audio, for the caller of that handoff, if it is still theirs).

A desk agent's worker that dies stops renewing their presence: after `DeskState.ttl_s` and two renewals
without it, the caller's worker counts their socket as dropped (the queue's reconnect grace, then the
fallback; an offer goes to the next desk agent). A caller's worker that dies stops renewing its
handoffs: after two renewals without them, the desk agent's page hears that the caller is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import TYPE_CHECKING, Any

from voxgate.errors import UnavailableError
from voxgate.handoff.live import DeskAgent, DeskLink, LiveHandoff, RemoteRef
from voxgate.handoff.shared import AgentRecord, DeskState, HandoffRecord, may_take

if TYPE_CHECKING:
    from voxgate.handoff.desk import Desk

log = logging.getLogger("voxgate.handoff.relay")

#: how long a worker waits for another to close a desk agent's old socket, or to give their handoff back
REQUEST_S = 2.0
#: renewals in a row without a record (the caller's worker's handoff, the desk agent's presence) before
#: its worker counts as gone
MISSING_BEATS = 2


class RemoteLink:
    """A desk agent's socket on another worker (a `DeskLink`): what is sent goes there, in order."""

    def __init__(self, shared: DeskState, worker: str, user_id: str):
        self.shared = shared
        self.worker = worker
        self.user_id = user_id

    def send(self, message: dict[str, Any]) -> None:
        """A message for the desk agent's socket."""
        self.shared.send(self.worker, {"k": "to_agent", "user": self.user_id, "msg": message})

    def send_audio(self, pcm16: bytes) -> None:
        """Caller audio for the desk agent."""
        self.shared.send_audio(self.worker, f"u:{self.user_id}", pcm16)

    async def close(self, code: int, reason: str) -> None:
        """Close the desk agent's socket."""
        self.shared.send(self.worker, {"k": "close", "user": self.user_id, "code": code, "reason": reason})


class HeldLink:
    """A desk agent's link while they sign in: messages wait for their `hello` (audio is dropped)."""

    def __init__(self, link: DeskLink):
        self.link = link
        self._held: list[dict[str, Any]] = []

    def send(self, message: dict[str, Any]) -> None:
        """Kept until `release`."""
        self._held.append(message)

    def send_audio(self, pcm16: bytes) -> None:
        """Nobody is listening yet."""

    async def close(self, code: int, reason: str) -> None:
        """Close the socket."""
        await self.link.close(code, reason)

    def release(self) -> None:
        """Send what was kept, in order."""
        held, self._held = self._held, []
        for message in held:
            self.link.send(message)


def _profile(agent: DeskAgent) -> dict[str, Any]:
    return {
        "user_id": agent.user_id,
        "username": agent.username,
        "display_name": agent.display_name,
        "skills": sorted(agent.skills),
        "queues": sorted(agent.queues),
        "status": agent.status,
        "wanted": agent.wanted,
        "since": agent.since,
    }


def _record_of(worker: str, profile: dict[str, Any]) -> AgentRecord:
    return AgentRecord(
        user_id=str(profile.get("user_id", "")),
        username=str(profile.get("username", "")),
        display_name=str(profile.get("display_name", "")),
        skills=frozenset(str(s) for s in profile.get("skills") or ()),
        queues=frozenset(str(q) for q in profile.get("queues") or ()),
        status=str(profile.get("status", "away")),
        wanted=str(profile.get("wanted", "available")),
        since=float(profile.get("since") or 0.0),
        worker=worker,
    )


def _ref(worker: str | None, hid: int | None) -> RemoteRef | None:
    return (worker, hid) if worker and hid is not None else None


class DeskRelay:
    """The cluster side of one worker's desk (see the module docstring); idle when the desk is alone."""

    def __init__(self, desk: Desk):
        self.desk = desk
        self.proxies: dict[str, DeskAgent] = {}  # desk agents on other workers, as this worker's callers see them
        self._agents: list[AgentRecord] = []  # every desk agent of the cluster, as last read
        self._handoffs: list[HandoffRecord] = []  # every open handoff of the cluster, as last read
        self._dirty_agents: set[str] = set()
        self._dirty_handoffs: dict[int, LiveHandoff] = {}
        self._take: set[str] = set()
        self._changed = False
        self._flusher: asyncio.Task[None] | None = None
        self._refresher: asyncio.Task[None] | None = None
        self._refresh_again = False
        self._views = ""
        self._absent: dict[str, int] = {}  # desk agents of callers here missing from the last renewals

    @property
    def shared(self) -> DeskState:
        """The desk's shared state."""
        return self.desk.shared

    @property
    def clustered(self) -> bool:
        """Whether there is a cluster to relay to."""
        return self.desk.shared.clustered

    # ---- what the other workers hold, as last read ------------------------------------------------------

    def other_agents(self) -> list[AgentRecord]:
        """Desk agents whose socket another worker holds."""
        me = self.shared.worker
        return [r for r in self._agents if r.worker != me and r.user_id not in self.desk.agents]

    def other_handoffs(self) -> list[HandoffRecord]:
        """Callers another worker holds."""
        me = self.shared.worker
        return [r for r in self._handoffs if r.worker != me]

    async def refresh(self) -> None:
        """Read every desk agent and handoff of the cluster."""
        agents, handoffs = await self.shared.snapshot()
        self._agents = [AgentRecord.of(a) for a in agents if a.get("user_id")]
        self._handoffs = [r for r in (HandoffRecord.of(h) for h in handoffs) if r is not None]

    def older_elsewhere(self, h: LiveHandoff, agent: DeskAgent) -> bool:
        """Whether a caller who came before `h` waits on another worker for a desk agent like `agent`
        (that worker offers it them: the queue's order holds across workers)."""
        me = self.shared.worker
        for r in self._handoffs:
            if r.worker == me or r.created >= h.created_at or r.status != "waiting" or r.offer_to or r.taken_by:
                continue
            if agent.user_id not in r.declined and may_take(agent.skills, agent.queues, r.queue, r.skills):
                return True
        return False

    # ---- what this worker publishes ------------------------------------------------------------------

    def tell(self, agent: DeskAgent, *changes: str) -> None:
        """`agent` changed: their presence is published again (held here), or their worker is told what
        this worker changed (`changes`: offer, handoff, status, wanted)."""
        if not self.clustered:
            return
        if agent.worker is None:
            self._dirty_agents.add(agent.user_id)
            self._changed = True
            self._flush_soon()
            return
        event: dict[str, Any] = {"k": "agent", "user": agent.user_id}
        for change in changes:
            if change == "offer":
                event["offer"] = agent.offer.id if agent.offer is not None else None
            elif change == "handoff":
                event["handoff"] = agent.handoff.id if agent.handoff is not None else None
            elif change == "status":
                event["status"], event["since"] = agent.status, agent.since
            elif change == "wanted":
                event["wanted"] = agent.wanted
        self.shared.send(agent.worker, event)

    def share(self, h: LiveHandoff) -> None:
        """`h` changed (or ended): its record is published again (or dropped)."""
        if not self.clustered:
            return
        self._dirty_handoffs[h.id] = h
        self._changed = True
        self._flush_soon()

    async def flushed(self, *, take: str | None = None) -> None:
        """Wait until what changed is published (`take`: that desk agent signed in here)."""
        if take is not None:
            self._take.add(take)
            self._dirty_agents.add(take)
            self._changed = True
        self._flush_soon()
        while self._flusher is not None and not self._flusher.done():
            with contextlib.suppress(Exception):
                await asyncio.shield(self._flusher)

    def _flush_soon(self) -> None:
        if self._flusher is None or self._flusher.done():
            self._flusher = self.desk._spawn(self._flush())

    async def _flush(self) -> None:
        """Publish changed records, one write after another (a record is never written out of order)."""
        try:
            while self._dirty_agents or self._dirty_handoffs:
                users, self._dirty_agents = self._dirty_agents, set()
                handoffs, self._dirty_handoffs = self._dirty_handoffs, {}
                for user in users:
                    agent = self.desk.agents.get(user)
                    if agent is None:
                        await self.shared.drop_agent(user)
                        continue
                    take = user in self._take
                    self._take.discard(user)
                    if not await self.shared.put_agent(user, self.desk.agent_record(agent).fields(), take=take):
                        self._taken_elsewhere(agent)
                for hid, h in handoffs.items():
                    if self.desk.handoffs.get(hid) is h:
                        await self.shared.put_handoff(hid, self.desk.handoff_record(h).fields())
                    else:
                        await self.shared.drop_handoff(hid)
        except UnavailableError as exc:
            log.warning("publishing the desk failed: %s (published again on the next renewal)", exc)
            return
        if self._changed:
            self._changed = False
            self.shared.broadcast({"k": "changed"})

    def _taken_elsewhere(self, agent: DeskAgent) -> None:
        """Another worker holds this desk agent now: their socket here closes."""
        log.info("desk agent user:%s signed in on another worker; closing their socket here", agent.user_id)
        self.desk._spawn(agent.link.close(4000, "signed in to the desk elsewhere"))

    async def leave_cluster(self) -> None:
        """The worker stops: its desk agents and callers leave the shared desk."""
        try:
            for user in list(self.desk.agents):
                await self.shared.drop_agent(user)
            for hid in list(self.desk.handoffs):
                await self.shared.drop_handoff(hid)
            self.shared.broadcast({"k": "changed"})
        except UnavailableError as exc:
            log.warning("leaving the shared desk failed: %s (its records expire)", exc)

    # ---- renewals ------------------------------------------------------------------------------------

    async def beat_forever(self) -> None:
        """Renew this worker's records, read the others', and act on workers that are gone."""
        while not self.desk.closed:
            try:
                await self.beat()
            except UnavailableError as exc:
                log.warning("renewing the desk failed: %s", exc)
            except Exception:
                log.exception("renewing the desk failed")
            await asyncio.sleep(self.shared.beat_s)

    async def beat(self) -> None:
        """One renewal (see `beat_forever`)."""
        desk = self.desk
        self._dirty_agents.update(desk.agents)
        self._dirty_handoffs.update(desk.handoffs)
        await self.flushed()
        claims = {a.user_id for h in desk.handoffs.values() for a in (h.offered_to, h.agent) if a is not None}
        await self.shared.renew(claims)
        await self.refresh()
        await self._check()
        desk._dispatch()
        self.show_queues()

    async def _check(self) -> None:
        """Desk agents of callers here whose worker is gone count as dropped; callers of desk agents here
        whose worker is gone are gone."""
        desk, me = self.desk, self.shared.worker
        present = {r.user_id for r in self._agents}
        absent: dict[str, int] = {}
        for h in list(desk.handoffs.values()):
            for agent in (h.offered_to, h.agent):
                if agent is None or agent.worker is None or agent.user_id in present:
                    continue
                # one renewal of theirs that came late (a busy worker) is not a worker that is gone
                misses = absent[agent.user_id] = self._absent.get(agent.user_id, 0) + 1
                if misses >= MISSING_BEATS:
                    log.info("desk agent user:%s is gone with their worker; handoff %s", agent.user_id, h.id)
                    absent.pop(agent.user_id, None)
                    await desk.leave(agent)
        self._absent = absent
        held = {(r.worker, r.id) for r in self._handoffs}
        for agent in list(desk.agents.values()):
            refs = [r for r in (agent.remote_offer, agent.remote) if r is not None and r[0] != me]
            if not refs or all(r in held for r in refs):
                agent.remote_missing = 0
                continue
            agent.remote_missing += 1
            if agent.remote_missing < MISSING_BEATS:
                continue
            agent.remote_missing = 0
            if agent.remote_offer is not None and agent.remote_offer not in held:
                hid = agent.remote_offer[1]
                agent.remote_offer = None
                agent.link.send({"type": "offer_withdrawn", "handoff_id": hid, "reason": "worker_lost"})
            if agent.remote is not None and agent.remote not in held:
                hid = agent.remote[1]
                agent.remote = None
                log.info("the worker holding handoff %s is gone; desk agent user:%s is free", hid, agent.user_id)
                desk._back_from_call(agent)
                agent.link.send(
                    {"type": "call_ended", "handoff_id": hid, "by": "error", "error": "the caller's worker stopped"}
                )
                agent.link.send({"type": "status", "status": agent.status, "queues": sorted(agent.queues)})
            self.tell(agent)

    def show_queues(self) -> None:
        """The queues, to this worker's desk agents, when they changed since last shown."""
        if not self.desk.agents:
            return
        views = json.dumps(self.desk.queue_views(), sort_keys=True, default=str)
        if views != self._views:
            self._views = views
            self.desk._broadcast_queues()

    def _refresh_soon(self) -> None:
        self._refresh_again = True
        if self._refresher is None or self._refresher.done():
            self._refresher = self.desk._spawn(self._refreshes())

    async def _refreshes(self) -> None:
        while self._refresh_again and not self.desk.closed:
            self._refresh_again = False
            try:
                await self.refresh()
            except UnavailableError as exc:
                log.warning("reading the desk failed: %s", exc)
                return
            self.desk._dispatch()
            self.show_queues()

    # ---- desk agents of other workers, as this worker's callers see them ---------------------------------

    def proxy(self, record: AgentRecord) -> DeskAgent | None:
        """The desk agent of `record` (another worker's), to offer a caller to (None: they are this worker's
        caller's, on a worker they left)."""
        agent = self.proxies.get(record.user_id)
        if agent is not None and agent.worker == record.worker:
            if agent.offer is None and agent.handoff is None:
                self._update(agent, record, status=True)
            return agent
        if agent is not None and (agent.offer is not None or agent.handoff is not None):
            return None
        return self._new_proxy(record)

    def _new_proxy(self, record: AgentRecord) -> DeskAgent:
        agent = DeskAgent(
            user_id=record.user_id,
            username=record.username,
            display_name=record.display_name,
            link=RemoteLink(self.shared, record.worker, record.user_id),
            skills=record.skills,
            queues=record.queues,
            status=record.status,
            since=record.since,
            wanted=record.wanted,
            worker=record.worker,
        )
        self.proxies[record.user_id] = agent
        return agent

    @staticmethod
    def _update(agent: DeskAgent, record: AgentRecord, *, status: bool) -> None:
        agent.username, agent.display_name = record.username, record.display_name
        agent.skills, agent.queues, agent.wanted = record.skills, record.queues, record.wanted
        if status:
            agent.status, agent.since = record.status, record.since

    def forget(self, agent: DeskAgent) -> None:
        """A desk agent of another worker with nothing here any more."""
        if agent.worker is not None and agent.offer is None and agent.handoff is None:
            if self.proxies.get(agent.user_id) is agent:
                del self.proxies[agent.user_id]

    # ---- this worker's desk agents and other workers' callers ------------------------------------------

    def forward(self, agent: DeskAgent, op: str, ref: RemoteRef, **data: Any) -> None:
        """What the desk agent did, for the worker holding the caller `ref`."""
        self.shared.send(ref[0], {"k": "op", "op": op, "hid": ref[1], "agent": _profile(agent), **data})

    async def forward_accept(self, agent: DeskAgent, hid: int) -> None:
        """The desk agent accepts another worker's caller (the claims say whose, if the offer is not
        known here yet)."""
        ref = agent.remote_offer if agent.remote_offer is not None and agent.remote_offer[1] == hid else None
        if ref is None:
            try:
                found = await self.shared.get_agent(agent.user_id) or {}
            except UnavailableError:
                found = {}
            offered = AgentRecord.of(found) if found else None
            if offered is not None and offered.offer == hid:
                ref = _ref(offered.offer_worker, hid)
        if ref is None:
            self.desk._accept_failed(agent, hid)
            return
        self.forward(agent, "accept", ref)

    def forward_decline(self, agent: DeskAgent, hid: int) -> None:
        """The desk agent declines another worker's caller."""
        if agent.remote_offer is not None and agent.remote_offer[1] == hid:
            self.forward(agent, "decline", agent.remote_offer)

    def audio_to_caller(self, agent: DeskAgent, pcm16: bytes) -> None:
        """The desk agent's audio, for their caller on another worker."""
        if agent.remote is not None:
            worker, hid = agent.remote
            self.shared.send_audio(worker, f"h:{hid}:{agent.user_id}", pcm16)

    def profile_changed(self, agent: DeskAgent, *, withdraw: bool) -> None:
        """The desk agent changed their choices: the worker of their caller hears it (an offer they
        went away from is withdrawn)."""
        if not self.clustered or agent.worker is not None:
            return
        if withdraw and agent.remote_offer is not None:
            self.forward(agent, "withdraw", agent.remote_offer, reason="agent_away")
        if agent.remote is not None:
            self.forward(agent, "profile", agent.remote)

    def left(self, agent: DeskAgent, *, grace: bool) -> None:
        """The desk agent's socket here is gone: the workers of their callers hear it."""
        for ref in (agent.remote_offer, agent.remote):
            if ref is not None:
                self.forward(agent, "left", ref, grace=grace)
        agent.remote_offer = agent.remote = None

    def skills_changed(self, user_id: str, skills: list[str]) -> None:
        """Skills set on this worker for a desk agent another worker holds (if any does)."""
        if self.clustered:
            self.shared.broadcast({"k": "skills", "user": user_id, "skills": skills})

    async def take_from_elsewhere(self, user_id: str) -> None:
        """The desk agent signs in here: their socket on another worker closes first."""
        try:
            found = await self.shared.get_agent(user_id)
            worker = (found or {}).get("worker")
            if worker and worker != self.shared.worker:
                await self.shared.request(worker, {"k": "kick", "user": user_id}, REQUEST_S)
        except UnavailableError as exc:
            log.warning("could not reach the desk agent's other socket: %s", exc)

    async def rejoin_elsewhere(self, agent: DeskAgent) -> bool:
        """The desk agent signed in here: what other workers' callers had of them comes back (or, for an
        offer to their old socket, goes to the next desk agent). True when a conversation resumed."""
        me = self.shared.worker
        found = await self.shared.get_agent(agent.user_id)
        record = AgentRecord.of(found) if found else None
        refs = set()
        if record is not None:
            refs |= {
                r for r in (_ref(record.handoff_worker, record.handoff), _ref(record.offer_worker, record.offer)) if r
            }
        away = await self.shared.get_away(agent.user_id)
        if away is not None:
            refs.add(away)
        resumed = False
        for worker, hid in sorted(refs):
            if worker == me:
                continue  # (this worker's callers are reclaimed by the desk itself)
            event = {"k": "op", "op": "rejoin", "hid": hid, "agent": _profile(agent)}
            answer = await self.shared.request(worker, event, REQUEST_S)
            resumed = bool(answer and answer.get("resumed")) or resumed
        return resumed

    # ---- events and audio from other workers (`handoff.shared.DeskEvents`) -------------------------------

    async def on_event(self, sender: str, event: dict[str, Any]) -> dict[str, Any] | None:
        """An event from worker `sender` (see the module docstring); a request's answer."""
        kind = event.get("k")
        if kind == "changed":
            self._refresh_soon()
        elif kind == "to_agent":
            self._to_agent(sender, str(event.get("user", "")), event.get("msg") or {})
        elif kind == "agent":
            self._agent_changed(sender, event)
        elif kind == "close":
            agent = self.desk.agents.get(str(event.get("user", "")))
            if agent is not None:
                self.desk._spawn(agent.link.close(int(event.get("code", 4000)), str(event.get("reason", ""))))
        elif kind == "kick":
            agent = self.desk.agents.get(str(event.get("user", "")))
            if agent is not None:
                await self.desk.leave(agent)
                self.desk._spawn(agent.link.close(4000, "signed in to the desk elsewhere"))
            return {"ok": True}
        elif kind == "skills":
            user = str(event.get("user", ""))
            if user in self.desk.agents:
                self.desk.set_skills(user, [str(s) for s in event.get("skills") or ()])
        elif kind == "op":
            return await self._op(sender, event)
        return None

    def _to_agent(self, sender: str, user: str, message: dict[str, Any]) -> None:
        agent = self.desk.agents.get(user)
        offered = message.get("type") == "offer"
        hid = int((message.get("handoff") or {}).get("id", 0)) if offered else 0
        if agent is None:
            if offered:  # gone from here meanwhile: the caller goes to the next desk agent
                self.shared.send(
                    sender, {"k": "op", "op": "left", "hid": hid, "agent": {"user_id": user}, "grace": True}
                )
            return
        if offered and (agent.status != "available" or agent.handoff is not None or agent.remote is not None):
            reason = "agent_away" if agent.status == "away" else "agent_busy"
            self.forward(agent, "withdraw", (sender, hid), reason=reason)
            return
        agent.link.send(message)

    def _agent_changed(self, sender: str, event: dict[str, Any]) -> None:
        """What the caller's worker changed about one of this worker's desk agents."""
        agent = self.desk.agents.get(str(event.get("user", "")))
        if agent is None:
            return
        for key, attr in (("offer", "remote_offer"), ("handoff", "remote")):
            if key not in event:
                continue
            value, current = event[key], getattr(agent, attr)
            if value is not None:
                setattr(agent, attr, (sender, int(value)))
                agent.remote_missing = 0
            elif current is not None and current[0] == sender:
                setattr(agent, attr, None)
        if "status" in event:
            agent.status, agent.since = str(event["status"]), float(event.get("since") or agent.since)
        if "wanted" in event:
            agent.wanted = str(event["wanted"])
        self.tell(agent)

    async def _op(self, sender: str, event: dict[str, Any]) -> dict[str, Any] | None:
        """What a desk agent on worker `sender` did about a caller of this worker."""
        desk = self.desk
        op, profile = str(event.get("op", "")), event.get("agent") or {}
        user, hid = str(profile.get("user_id", "")), int(event.get("hid") or 0)
        h = desk.handoffs.get(hid)
        if op == "rejoin":
            if h is None:
                return {"resumed": False}
            record = _record_of(sender, profile)
            agent = self.proxies.get(user)
            if agent is None or agent.worker != sender:
                agent = self._new_proxy(record)
            return {"resumed": await desk._reclaim(h, agent)}
        agent = self.proxies.get(user)
        if agent is None or agent.worker != sender:
            if op == "accept":  # (not offered to them by this worker, or not any more)
                desk._accept_failed(DeskAgent(user, user, user, RemoteLink(self.shared, sender, user)), hid)
            return None
        if profile.get("username"):
            self._update(agent, _record_of(sender, profile), status=agent.offer is None and agent.handoff is None)
        if op == "accept":
            await desk.accept(agent, hid)
        elif op == "decline":
            desk.decline(agent, hid)
        elif op == "message":
            await desk.agent_message(agent, str(event.get("text", "")))
        elif op == "hangup":
            await desk.hangup(agent)
        elif op == "wrap_up":
            await desk.wrap_up(agent, hid, str(event.get("disposition", "")), str(event.get("note", "")))
        elif op == "left":
            await desk.leave(agent, grace=bool(event.get("grace", True)))
        elif op == "withdraw" and h is not None and h.offered_to is agent:
            desk._withdraw(h, str(event.get("reason", "agent_away")))
            desk._dispatch()
            desk._broadcast_queues()
        elif op == "profile":
            desk._dispatch()
        self.forget(agent)
        return None

    async def on_audio(self, target: str, pcm16: bytes) -> None:
        """A frame for a desk agent here (``u:{user}``) or for a caller here (``h:{handoff}:{user}``)."""
        kind, _, rest = target.partition(":")
        if kind == "u":
            agent = self.desk.agents.get(rest)
            if agent is not None and agent.remote is not None:
                agent.link.send_audio(pcm16)
            return
        hid, _, user = rest.partition(":")
        h = self.desk.handoffs.get(int(hid)) if hid.lstrip("-").isdigit() else None
        if h is None or h.status != "accepted" or h.channel != "voice" or h.agent is None or h.agent.user_id != user:
            return
        try:
            await h.leg.agent_audio(pcm16)
        except Exception as exc:
            await self.desk.bridge_failed(h, f"{type(exc).__name__}: {exc}")
