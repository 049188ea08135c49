"""One live-agent desk for a cluster: workers on one PostgreSQL and one Redis, the desk agent's socket on
one and the caller's on another.

- The claims: one caller is offered to one desk agent at a time and one desk agent is offered one
  caller at a time, however many workers try at once; of the desk agents who try to accept, one wins;
  the in-memory state of a single worker keeps the same rules as Redis.
- A desk agent on worker A takes a chat waiting on worker B: the packet before accepting, lines both
  ways, wrap-up, the handoff's row, audit and both workers' views of the queues.
- Two desk agents on two workers race to accept one offer: exactly one gets the caller.
- A desk agent whose socket drops reconnects on the caller's worker and gets the chat back; signing in
  on a third socket closes the second (4000) and the chat follows them again.
- A desk agent's worker is killed (-9): after its records expire, the caller offered to them goes to a
  desk agent on another worker, and the caller connected with them holds for the reconnect grace,
  then leaves a callback number.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.helpers.databases import PG_URL, fresh_postgres, query
from tests.helpers.desk_cluster import TTL_S, clustered, desk_bundles, fresh_redis, worker_process
from tests.helpers.peer import TIMEOUT_S, Peer, escalated_chat
from tests.helpers.servers import LiveServer, free_port
from voxgate.api.app import create_app
from voxgate.cluster.desk import RedisDeskState
from voxgate.cluster.redis import Cluster, RedisUnavailable
from voxgate.config import Settings
from voxgate.handoff.relay import DeskRelay
from voxgate.handoff.shared import AgentRecord, DeskState, LocalDeskState

pytestmark = pytest.mark.skipif(not PG_URL, reason="a cluster's workers share PostgreSQL")


@pytest.fixture(scope="module")
def desks(harbor_bundle: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, LiveServer]]:
    """Workers A and B on one database and one Redis, their desk shared."""
    tmp = tmp_path_factory.mktemp("desk-cluster")
    redis_url = fresh_redis()
    settings = Settings(database_url=fresh_postgres(), data_dir=tmp, redis_url=redis_url)
    bundles = desk_bundles(harbor_bundle)
    with (
        LiveServer(clustered(create_app(settings, bundles), redis_url)) as a,
        LiveServer(clustered(create_app(settings, bundles), redis_url)) as b,
    ):
        for live in (a, b):
            live.settings = settings  # type: ignore[attr-defined]
        yield a, b


def _state(server: LiveServer) -> Any:
    return server.app.state.voxgate


def _worker(server: LiveServer) -> str:
    return str(_state(server).desk.worker)


def _user(server: LiveServer, name: str, role: str = "desk_agent") -> tuple[str, str]:
    identity = _state(server).identity
    user = identity.create_user(name, "a long enough password", display_name=name.title())
    identity.bind_role(user.id, "*", role, None)
    token, _ = identity.create_token(user.id, "desk", ["*"], 1)
    return user.id, token


def _rows(server: LiveServer, sql: str, **params: Any) -> list[Any]:
    return query(server.settings.db_url, sql, **params)  # type: ignore[attr-defined]


def _ws(base: str, path: str) -> str:
    return base.replace("http://", "ws://") + path


async def _desk(base: str, token: str, *, available: bool = True) -> Peer:
    ws = await connect(
        _ws(base, "/ws/desk"), additional_headers={"Authorization": f"Bearer {token}"}, proxy=None, open_timeout=10
    )
    desk = Peer(ws)
    await desk.expect("hello")
    if available:
        await desk.send(type="status", status="available")
        await desk.expect("status", status="available")
    return desk


async def _escalated_chat(base: str, agent: str) -> Peer:
    return await escalated_chat(_ws(base, f"/ws/chat/{agent}"))


async def _desk_view(base: str, token: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=base, trust_env=False, headers={"Authorization": f"Bearer {token}"}) as http:
        r = await http.get("/api/desk")
        assert r.status_code == 200, r.text
        return dict(r.json())


def _steps(server: LiveServer, hid: int) -> list[str]:
    row = _rows(server, "SELECT events FROM handoffs WHERE id = :i", i=hid)[0]
    events = json.loads(row.events) if isinstance(row.events, str) else row.events
    return [e["event"] for e in events]


async def _wrap_up(desk: Peer, hid: int, chat: Peer | None = None) -> None:
    await desk.send(type="wrap_up", handoff_id=hid, disposition="resolved")
    await desk.expect("wrapped_up", handoff_id=hid)
    if chat is not None:
        await chat.expect("ended")


# ---- the claims, on Redis and in one worker's memory --------------------------------------------------------


@pytest.fixture()
async def clients() -> AsyncIterator[list[Cluster]]:
    """Twelve independent Redis clients (as twelve workers would have) on an empty database."""
    url = fresh_redis()
    made = [Cluster.from_url(url) for _ in range(12)]
    yield made
    for cluster in made:
        await cluster.close()


async def test_an_offer_and_an_accept_hold_with_twelve_workers_at_once(clients: list[Cluster]) -> None:
    states = [RedisDeskState(c, "dev", worker=f"w{i}") for i, c in enumerate(clients)]
    # twelve workers offer one caller to twelve desk agents at once: one offer
    offered = await asyncio.gather(*(s.offer(7, f"agent{i}", 30) for i, s in enumerate(states)))
    assert sum(offered) == 1
    to = f"agent{offered.index(True)}"
    # twelve workers offer twelve callers to one desk agent at once: one offer
    taken = await asyncio.gather(*(s.offer(100 + i, "solo", 30) for i, s in enumerate(states)))
    assert sum(taken) == 1
    # the desk agent offered the caller (six tries) and eleven others try to accept it at once: one wins
    tries = [to] * 6 + [f"agent{i}" for i in range(12) if f"agent{i}" != to]
    accepted = await asyncio.gather(*(states[i % 12].accept(7, user) for i, user in enumerate(tries)))
    assert sum(accepted) == 1 and tries[accepted.index(True)] == to
    # the caller is theirs: nobody else is offered it, and they are offered nobody else
    assert not any(await asyncio.gather(*(s.offer(7, f"agent{i}", 30) for i, s in enumerate(states))))
    assert not await states[0].offer(200, to, 30)


@pytest.fixture(params=["memory", "redis"])
async def state(request: pytest.FixtureRequest) -> AsyncIterator[DeskState]:
    """The desk's shared state: one worker's (in memory) or the cluster's (Redis)."""
    if request.param == "memory":
        yield LocalDeskState(worker="w1")
        return
    cluster = Cluster.from_url(fresh_redis())
    yield RedisDeskState(cluster, "dev", worker="w1", ttl_s=30)
    await cluster.close()


async def test_the_claims_follow_the_same_rules_in_memory_and_in_redis(state: DeskState) -> None:
    assert await state.offer(1, "ann", 30)
    assert not await state.offer(1, "bob", 30)  # offered to one desk agent at a time
    assert not await state.offer(2, "ann", 30)  # and one caller at a time to a desk agent
    assert not await state.accept(1, "bob")  # only the one offered may accept
    assert not await state.withdraw(1, "bob")
    assert await state.withdraw(1, "ann")
    assert not await state.accept(1, "ann")  # withdrawn: nothing to accept
    assert await state.offer(1, "bob", 30)
    assert await state.accept(1, "bob")
    assert not await state.accept(1, "bob")  # once
    assert not await state.offer(3, "bob", 30)  # with a caller: offered no other
    assert not await state.offer(1, "ann", 30)  # taken: offered to nobody else
    assert not await state.resume(1, "ann")  # nor taken back by someone else
    await state.release(1, "bob")  # bob's socket dropped
    assert await state.offer(3, "bob", 30)  # free again
    await state.withdraw(3, "bob")
    assert await state.resume(1, "bob")  # back within the grace: theirs again
    assert not await state.offer(3, "bob", 30)
    await state.release(1, "bob")
    assert await state.offer(3, "bob", 0.001)
    await asyncio.sleep(0.05)
    assert await state.offer(4, "bob", 30)  # an offer nobody withdrew lapses


async def test_records_of_a_silent_worker_expire(clients: list[Cluster]) -> None:
    state = RedisDeskState(clients[0], "dev", worker="gone", ttl_s=0.3)
    other = RedisDeskState(clients[1], "dev", worker="other", ttl_s=30)
    assert await state.put_agent("ann", {"user_id": "ann", "status": "available", "since": "1.0"}, take=True)
    await state.put_handoff(5, {"id": "5", "worker": "gone", "queue": "general", "created": "2.0"})
    assert await state.offer(5, "ann", 30)
    assert not await other.put_agent("ann", {"user_id": "ann", "status": "away"})  # held by "gone"
    agents, handoffs = await other.snapshot()
    assert [a["user_id"] for a in agents] == ["ann"] and agents[0]["claim_offer"] == "5"
    assert [h["id"] for h in handoffs] == ["5"] and handoffs[0]["offer_to"] == "ann"
    await asyncio.sleep(0.5)  # "gone" renews nothing
    assert await other.snapshot() == ([], [])
    assert await other.get_agent("ann") is None  # presence and claims lapsed
    assert await other.offer(6, "ann", 30)


async def test_the_claims_fail_closed_while_redis_is_away() -> None:
    cluster = Cluster.from_url(f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    state = RedisDeskState(cluster, "dev", worker="w1")
    try:
        for claim in (state.offer(1, "ann", 30), state.accept(1, "ann"), state.resume(1, "ann")):
            with pytest.raises(RedisUnavailable):
                await claim
        with pytest.raises(RedisUnavailable):
            await state.snapshot()
    finally:
        await cluster.close()


async def test_a_desk_agent_missing_from_one_renewal_is_not_counted_as_dropped() -> None:
    """A renewal of the desk agent's worker that came late (a busy worker) lets their record lapse for a
    moment: the caller's worker waits for a second renewal without it before it counts them as gone."""
    left: list[str] = []

    class Desk:  # the caller's worker's desk, as the relay reads it
        shared = LocalDeskState()
        agents: dict[str, Any] = {}

        def __init__(self) -> None:
            self.handoffs = {7: SimpleNamespace(id=7, offered_to=None, agent=dana)}

        async def leave(self, agent: Any) -> None:
            left.append(agent.user_id)

    dana = SimpleNamespace(user_id="dana", worker="worker-a")
    relay = DeskRelay(Desk())  # type: ignore[arg-type]
    record = AgentRecord("dana", "dana", "Dana", frozenset(), frozenset({"general"}), "busy", "", 1.0, "worker-a")
    relay._agents = []  # one renewal without them
    await relay._check()
    assert left == []
    relay._agents = [record]  # back: the count starts again
    await relay._check()
    relay._agents = []
    await relay._check()
    assert left == []
    await relay._check()  # a second renewal in a row without them: their worker is gone
    assert left == ["dana"]


# ---- across workers, over real sockets --------------------------------------------------------------------


async def test_a_desk_agent_on_one_worker_takes_a_chat_waiting_on_another(desks: tuple[LiveServer, LiveServer]) -> None:
    a, b = desks
    user_id, token = _user(a, "dana")
    desk = await _desk(a.url, token)
    chat = await _escalated_chat(b.url, "harbor-support")  # the caller is on B
    await chat.expect("handoff", status="waiting")
    offer = (await desk.expect("offer"))["handoff"]  # offered on A, with the packet, before accepting
    packet = offer["packet"]
    assert offer["channel"] == "chat" and offer["queue"] == "general" and packet["reason"] == "caller_request"
    assert any("real person" in line["text"] for line in packet["transcript"] if line["role"] == "user")

    # both workers show the caller waiting and the desk agent: one desk
    for server in (a, b):
        view = await _desk_view(server.url, token)
        general = next(q for q in view["queues"] if q["name"] == "general")
        assert general["waiting"] == 1 and general["desk_signed_in"] >= 1, (server.url, general)
        assert any(x["id"] == offer["id"] and x["worker"] == _worker(b) for x in view["handoffs"])
        assert any(x["user_id"] == user_id and x["worker"] == _worker(a) for x in view["agents"])

    await desk.send(type="accept", handoff_id=offer["id"])
    await desk.expect("accepted", handoff_id=offer["id"])
    await desk.expect("connected", handoff_id=offer["id"])
    joined = await chat.expect("handoff", status="connected")
    assert joined["name"] == "Dana"
    await desk.send(type="message", text="Hi, this is Dana on the desk.")
    said = await chat.expect("agent_message")
    assert said["from"] == "person" and said["text"] == "Hi, this is Dana on the desk."
    await chat.send(type="text", text="my router keeps dropping the connection")
    await desk.expect("caller_message", text="my router keeps dropping the connection")

    await desk.send(type="hangup")
    await desk.expect("call_ended", by="agent")
    await chat.expect("handoff", status="ended")
    await desk.send(type="wrap_up", handoff_id=offer["id"], disposition="resolved", note="call me on 415 555 0198")
    done = await desk.expect("wrapped_up", handoff_id=offer["id"])
    assert done["status"] == "available"
    await chat.expect("ended")
    await desk.ws.close()
    await chat.ws.close()

    row = _rows(b, "SELECT * FROM handoffs WHERE id = :i", i=offer["id"])[0]
    assert row.status == "wrapped_up" and row.accepted_by == user_id and row.disposition == "resolved"
    assert "415 555 0198" not in row.disposition_note
    assert _steps(b, offer["id"]) == ["waiting", "offered", "accepted", "call_ended", "wrapped_up"]
    accepted = _rows(b, "SELECT actor, data FROM audit_events WHERE action = 'handoff.accepted'")
    assert [r.actor for r in accepted if json.loads(r.data)["session"] == packet["session_id"]] == [f"user:{user_id}"]


async def test_two_desk_agents_on_two_workers_race_to_accept_one_offer(desks: tuple[LiveServer, LiveServer]) -> None:
    a, b = desks
    first_id, first_token = _user(a, "erin")
    _, second_token = _user(b, "frank")
    first = await _desk(a.url, first_token)  # available first: longest idle
    second = await _desk(b.url, second_token)
    chat = await _escalated_chat(b.url, "harbor-support")
    offer = (await first.expect("offer"))["handoff"]
    # both press accept at once (the second from a page that saw the queue): the one offered gets the caller
    await asyncio.gather(
        first.send(type="accept", handoff_id=offer["id"]), second.send(type="accept", handoff_id=offer["id"])
    )
    await first.expect("accepted", handoff_id=offer["id"])
    refused = await second.expect("accept_failed", handoff_id=offer["id"])
    assert "no longer offered" in refused["reason"]
    await first.expect("connected")
    await chat.expect("handoff", status="connected")
    await _wrap_up(first, offer["id"], chat)
    assert not [m for m in second.seen if m["type"] in ("offer", "accepted")]
    for peer in (first, second, chat):
        await peer.ws.close()
    row = _rows(b, "SELECT accepted_by FROM handoffs WHERE id = :i", i=offer["id"])[0]
    assert row.accepted_by == first_id
    assert _steps(b, offer["id"]).count("accepted") == 1


async def test_a_desk_agent_reconnects_on_the_callers_worker_and_gets_the_chat_back(
    desks: tuple[LiveServer, LiveServer],
) -> None:
    a, b = desks
    user_id, token = _user(a, "gita")
    desk = await _desk(a.url, token)
    chat = await _escalated_chat(b.url, "harbor-support")
    offer = (await desk.expect("offer"))["handoff"]
    await desk.send(type="accept", handoff_id=offer["id"])
    await desk.expect("connected")
    await chat.expect("handoff", status="connected")
    await desk.send(type="message", text="Let me look at your account.")
    await chat.expect("agent_message", text="Let me look at your account.")

    await desk.ws.close()  # the page reloads; behind a non-sticky balancer it lands on B
    held = await chat.expect("handoff")
    assert held["status"] == "reconnecting"
    await chat.send(type="text", text="hello? are you still there?")
    desk = Peer(
        await connect(
            _ws(b.url, "/ws/desk"), additional_headers={"Authorization": f"Bearer {token}"}, proxy=None, open_timeout=10
        )
    )
    hello = await desk.expect("hello")
    assert hello["resuming"] is True
    resumed = await desk.expect("resumed")
    assert resumed["handoff"]["id"] == offer["id"] and resumed["state"] == "connecting"
    assert resumed["lines"] == [{"from": "person", "text": "Let me look at your account."}]
    await desk.expect("connected", handoff_id=offer["id"])
    await desk.expect("caller_message", text="hello? are you still there?")
    await chat.expect("handoff", status="connected")

    # signed in again on A (another tab): the socket on B closes, the chat follows to A
    again = Peer(
        await connect(
            _ws(a.url, "/ws/desk"), additional_headers={"Authorization": f"Bearer {token}"}, proxy=None, open_timeout=10
        )
    )
    assert (await again.expect("hello"))["resuming"] is True
    with pytest.raises(ConnectionClosed):
        await desk.expect("never")
    assert desk.ws.close_code == 4000
    await again.expect("resumed")
    await again.expect("connected", handoff_id=offer["id"])
    await again.send(type="message", text="Back on my first screen.")
    await chat.expect("agent_message", text="Back on my first screen.")
    await chat.send(type="text", text="great")
    await again.expect("caller_message", text="great")
    await _wrap_up(again, offer["id"], chat)
    await again.ws.close()
    await chat.ws.close()

    steps = _steps(b, offer["id"])
    assert steps[:3] == ["waiting", "offered", "accepted"] and steps[-1] == "wrapped_up", steps
    assert steps.count("resumed") == 2 and "failure" not in steps, steps
    row = _rows(b, "SELECT accepted_by, failure_reason FROM handoffs WHERE id = :i", i=offer["id"])[0]
    assert row.accepted_by == user_id and row.failure_reason is None


async def test_skills_set_on_one_worker_reach_the_desk_agent_on_another(desks: tuple[LiveServer, LiveServer]) -> None:
    a, b = desks
    user_id, token = _user(a, "hana")
    _, operator = _user(b, "olga", "operator")
    desk = await _desk(a.url, token, available=False)
    async with httpx.AsyncClient(base_url=b.url, trust_env=False) as http:
        r = await http.put(
            f"/api/desk/agents/{user_id}", json={"skills": ["tier2"]}, headers={"Authorization": f"Bearer {operator}"}
        )
        assert r.status_code == 200
    assert (await desk.expect("skills"))["skills"] == ["tier2"]
    await desk.ws.close()


async def test_a_desk_agents_worker_dies_and_its_callers_go_on(
    desks: tuple[LiveServer, LiveServer], tmp_path: Path
) -> None:
    a, b = desks
    settings = a.settings  # type: ignore[attr-defined]
    _, xena_token = _user(a, "xena")
    _, walt_token = _user(a, "walt")
    _, yuri_token = _user(a, "yuri")
    with worker_process(
        database_url=settings.db_url,
        redis_url=settings.redis_url,
        data_dir=settings.data_dir,
        log=tmp_path / "worker.log",
    ) as doomed:
        xena = await _desk(a.url, xena_token, available=False)  # on A, away for now
        # walt, on the doomed worker, is connected with a chat whose queue holds 1 s for a reconnect
        walt = await _desk(doomed.url, walt_token)
        held_chat = await _escalated_chat(b.url, "harbor-brief-grace")
        held = (await walt.expect("offer"))["handoff"]
        await walt.send(type="accept", handoff_id=held["id"])
        await walt.expect("connected")
        await held_chat.expect("handoff", status="connected")
        # yuri, on the doomed worker too, is offered the next caller (available longer than xena)
        yuri = await _desk(doomed.url, yuri_token)
        await xena.send(type="status", status="available")
        await xena.expect("status", status="available")
        waiting_chat = await _escalated_chat(b.url, "harbor-support")
        offered = (await yuri.expect("offer"))["handoff"]

        doomed.kill9()

    # the offer to yuri is gone with his worker: xena on A gets the caller
    again = (await xena.expect("offer", timeout=TIMEOUT_S + 4 * TTL_S))["handoff"]
    assert again["id"] == offered["id"]
    await xena.send(type="accept", handoff_id=again["id"])
    await xena.expect("connected")
    await waiting_chat.expect("handoff", status="connected")
    await _wrap_up(xena, again["id"], waiting_chat)

    # walt's caller holds for the reconnect grace, then leaves a number to be called back
    assert (await held_chat.expect("handoff"))["status"] == "reconnecting"
    await held_chat.expect("handoff", status="fallback", kind="callback")
    prompt = await held_chat.expect("agent_message")
    assert "phone number" in prompt["text"]
    await held_chat.send(type="text", text="415 555 0147")
    assert "+14155550147" in (await held_chat.expect("agent_message"))["text"]
    await held_chat.expect("ended")
    for peer in (xena, walt, yuri, held_chat, waiting_chat):
        await peer.ws.close()

    steps = _steps(b, offered["id"])
    assert steps[:4] == ["waiting", "offered", "offer_withdrawn", "offered"], steps
    assert steps[-1] == "wrapped_up" and "failure" not in steps, steps
    row = _rows(b, "SELECT status, failure_reason FROM handoffs WHERE id = :i", i=held["id"])[0]
    assert (row.status, row.failure_reason) == ("fallback_callback", "agent_disconnected")
    assert _steps(b, held["id"])[:4] == ["waiting", "offered", "accepted", "agent_lost"]


async def test_the_callers_worker_dies_and_its_desk_agents_are_free_again(
    desks: tuple[LiveServer, LiveServer], tmp_path: Path
) -> None:
    a, b = desks
    settings = a.settings  # type: ignore[attr-defined]
    _, zoe_token = _user(a, "zoe")
    _, quinn_token = _user(b, "quinn")
    with worker_process(
        database_url=settings.db_url,
        redis_url=settings.redis_url,
        data_dir=settings.data_dir,
        log=tmp_path / "worker.log",
        agents=True,
    ) as doomed:
        zoe = await _desk(a.url, zoe_token)
        talking = await _escalated_chat(doomed.url, "harbor-support")  # the callers are on the doomed worker
        connected = (await zoe.expect("offer"))["handoff"]
        await zoe.send(type="accept", handoff_id=connected["id"])
        await zoe.expect("connected")
        await talking.expect("handoff", status="connected")
        quinn = await _desk(b.url, quinn_token)
        waiting = await _escalated_chat(doomed.url, "harbor-support")
        offered = (await quinn.expect("offer"))["handoff"]

        doomed.kill9()

    # the desk agents hear that their callers are gone, and are free for the next
    ended = await zoe.expect("call_ended", handoff_id=connected["id"], timeout=TIMEOUT_S + 4 * TTL_S)
    assert ended["by"] == "error"
    assert (await zoe.expect("status"))["status"] == "available"
    withdrawn = await quinn.expect("offer_withdrawn", handoff_id=offered["id"], timeout=TIMEOUT_S + 4 * TTL_S)
    assert withdrawn["reason"] == "worker_lost"
    chat = await _escalated_chat(b.url, "harbor-support")
    nxt = (await quinn.expect("offer"))["handoff"]  # available longest (zoe since her call ended)
    await quinn.send(type="accept", handoff_id=nxt["id"])
    await quinn.expect("connected")
    await chat.expect("handoff", status="connected")
    await _wrap_up(quinn, nxt["id"], chat)
    for peer in (zoe, quinn, chat):
        await peer.ws.close()
    for peer in (talking, waiting):
        with pytest.raises(ConnectionClosed):
            await peer.expect("never")
