"""The live-agent desk's shared state in Redis (the `DeskState` port of `voxgate.handoff.shared`): desk
agents' presence, the callers waiting, the offer and accept claims (Lua, so that they are atomic across
workers) and the events between workers (pub/sub: a channel per worker, one for all).

Keys, under `cluster.key("desk", <environment>, …)`; every one expires unless its worker renews it:

- `agent:{user}`     hash: a desk agent's presence (names, skills, queues, status, since, worker)
- `agents`           zset: desk agents, by when they became available (longest idle first)
- `claim:{user}`     hash: what the desk agent is offered (`offer`, `offer_worker`, `offer_until` ms)
                     and has (`handoff`, `handoff_worker`); renewed by the caller's worker
- `handoff:{id}`     hash: a waiting or connected caller (queue, skills, status, worker, created, the
                     virtual agent, the escalation reason) and its claims `offer_to`, `taken_by`
- `handoffs`         zset: open handoffs, oldest first (the queue order across workers)
- `away:{user}`      string `worker|id`: a handoff holding for the desk agent to reconnect

Channels: `events:{worker}` (JSON: events and requests for that worker, and answers to its requests),
`audio:{worker}` (binary: a one-byte length, the target, then 16 kHz PCM16), and `events` (for all).
No personal data is stored: the context packet, chat lines and audio pass through pub/sub only (use
`rediss://` and a password between hosts); user ids and desk agents' names are the staff's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from voxgate.cluster.redis import Cluster, reaching, unreachable

log = logging.getLogger("voxgate.cluster.desk")

#: frames of audio queued for other workers before the oldest are dropped (a second of one call)
AUDIO_BACKLOG = 400
#: events queued for other workers before this worker counts Redis as unreachable
EVENT_BACKLOG = 10_000
READ_WAIT_S = 1.0
SUBSCRIBE_WAIT_S = 5.0
RECONNECT_S = 0.5

_NOW = "local t = redis.call('TIME') local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"

# KEYS: agent hash, agents zset. ARGV: worker, take (0|1), ttl ms, user, since, field, value, …
_PUT_AGENT = """
local cur = redis.call('HGET', KEYS[1], 'worker')
if ARGV[2] == '0' and cur and cur ~= ARGV[1] then return 0 end
if ARGV[2] == '1' then redis.call('DEL', KEYS[1]) end
redis.call('HSET', KEYS[1], 'worker', ARGV[1], unpack(ARGV, 6))
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[5], ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return 1
"""
# KEYS: agent hash, agents zset. ARGV: worker, user
_DROP_AGENT = """
if redis.call('HGET', KEYS[1], 'worker') == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[2], ARGV[2])
  return 1
end
return 0
"""
# KEYS: handoff hash, claim hash. ARGV: hid, user, worker, ttl ms, offer ms
_OFFER = (
    _NOW
    + """
local to = redis.call('HGET', KEYS[1], 'offer_to')
local taken = redis.call('HGET', KEYS[1], 'taken_by')
if (to and to ~= '') or (taken and taken ~= '') then return 0 end
local offer = redis.call('HGET', KEYS[2], 'offer')
local offer_until = tonumber(redis.call('HGET', KEYS[2], 'offer_until') or '0') or 0
if offer and offer ~= '' and offer_until > now then return 0 end
local has = redis.call('HGET', KEYS[2], 'handoff')
if has and has ~= '' then return 0 end
redis.call('HSET', KEYS[1], 'offer_to', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('HSET', KEYS[2], 'offer', ARGV[1], 'offer_worker', ARGV[3], 'offer_until', now + tonumber(ARGV[5]))
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return 1
"""
)
# KEYS: handoff hash, claim hash. ARGV: hid, user
_WITHDRAW = """
local done = 0
if redis.call('HGET', KEYS[1], 'offer_to') == ARGV[2] then
  redis.call('HSET', KEYS[1], 'offer_to', '')
  done = 1
end
if redis.call('HGET', KEYS[2], 'offer') == ARGV[1] then
  redis.call('HSET', KEYS[2], 'offer', '', 'offer_worker', '', 'offer_until', '0')
end
return done
"""
# KEYS: handoff hash, claim hash. ARGV: hid, user, worker, ttl ms
_ACCEPT = """
if redis.call('HGET', KEYS[1], 'offer_to') ~= ARGV[2] then return 0 end
local taken = redis.call('HGET', KEYS[1], 'taken_by')
if taken and taken ~= '' then return 0 end
if redis.call('HGET', KEYS[2], 'offer') ~= ARGV[1] then return 0 end
local has = redis.call('HGET', KEYS[2], 'handoff')
if has and has ~= '' then return 0 end
redis.call('HSET', KEYS[1], 'offer_to', '', 'taken_by', ARGV[2])
redis.call('HSET', KEYS[2], 'offer', '', 'offer_worker', '', 'offer_until', '0', 'handoff', ARGV[1], 'handoff_worker', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return 1
"""
# KEYS: handoff hash, claim hash. ARGV: hid, user, worker, ttl ms
_RESUME = """
local taken = redis.call('HGET', KEYS[1], 'taken_by')
if taken and taken ~= '' and taken ~= ARGV[2] then return 0 end
local has = redis.call('HGET', KEYS[2], 'handoff')
if has and has ~= '' and has ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'taken_by', ARGV[2])
redis.call('HSET', KEYS[2], 'handoff', ARGV[1], 'handoff_worker', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return 1
"""
# KEYS: handoff hash, claim hash. ARGV: hid, user
_RELEASE = """
if redis.call('HGET', KEYS[1], 'taken_by') == ARGV[2] then redis.call('HSET', KEYS[1], 'taken_by', '') end
if redis.call('HGET', KEYS[1], 'offer_to') == ARGV[2] then redis.call('HSET', KEYS[1], 'offer_to', '') end
if redis.call('HGET', KEYS[2], 'handoff') == ARGV[1] then redis.call('HSET', KEYS[2], 'handoff', '', 'handoff_worker', '') end
if redis.call('HGET', KEYS[2], 'offer') == ARGV[1] then
  redis.call('HSET', KEYS[2], 'offer', '', 'offer_worker', '', 'offer_until', '0')
end
return 1
"""
# KEYS: away key. ARGV: value
_CLEAR_AWAY = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
# KEYS: agents zset, handoffs zset. ARGV: agent key prefix, claim key prefix, handoff key prefix
_SNAPSHOT = """
local function claims(user)
  local out = {}
  local c = redis.call('HGETALL', ARGV[2] .. user)
  for i = 1, #c, 2 do
    out[#out + 1] = 'claim_' .. c[i]
    out[#out + 1] = c[i + 1]
  end
  return out
end
local agents, handoffs = {}, {}
for _, user in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local a = redis.call('HGETALL', ARGV[1] .. user)
  if #a == 0 then
    redis.call('ZREM', KEYS[1], user)
  else
    for _, v in ipairs(claims(user)) do a[#a + 1] = v end
    agents[#agents + 1] = a
  end
end
for _, hid in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  local h = redis.call('HGETALL', ARGV[3] .. hid)
  if #h == 0 then redis.call('ZREM', KEYS[2], hid) else handoffs[#handoffs + 1] = h end
end
return {agents, handoffs}
"""


class DeskReceiver(Protocol):
    """Who takes this worker's desk events (`voxgate.handoff.shared.DeskEvents`)."""

    async def on_event(self, sender: str, event: dict[str, Any]) -> dict[str, Any] | None:
        """An event from `sender`; for a request, the answer."""
        ...

    async def on_audio(self, target: str, pcm16: bytes) -> None:
        """A frame of audio for `target`."""
        ...


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _fields(flat: list[Any]) -> dict[str, str]:
    return {_text(flat[i]): _text(flat[i + 1]) for i in range(0, len(flat) - 1, 2)}


class RedisDeskState:
    """The desk's shared state for one worker of a cluster (see the module docstring)."""

    clustered = True

    def __init__(
        self, cluster: Cluster, environment: str, *, beat_s: float = 2.0, ttl_s: float = 6.0, worker: str = ""
    ) -> None:
        self.cluster = cluster
        self.environment = environment
        self.beat_s = beat_s
        self.ttl_s = ttl_s
        self.worker = worker or secrets.token_hex(8)
        self._ttl_ms = max(1, int(ttl_s * 1000))
        client = cluster.client
        self._put_agent = client.register_script(_PUT_AGENT)
        self._drop_agent = client.register_script(_DROP_AGENT)
        self._offer = client.register_script(_OFFER)
        self._withdraw = client.register_script(_WITHDRAW)
        self._accept = client.register_script(_ACCEPT)
        self._resume = client.register_script(_RESUME)
        self._release = client.register_script(_RELEASE)
        self._clear_away = client.register_script(_CLEAR_AWAY)
        self._snapshot = client.register_script(_SNAPSHOT)
        self._receiver: DeskReceiver | None = None
        self._events_out: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue(maxsize=EVENT_BACKLOG)
        self._audio_out: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue(maxsize=AUDIO_BACKLOG)
        self._events_in: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
        self._audio_in: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue(maxsize=AUDIO_BACKLOG)
        self._waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._subscribed = asyncio.Event()
        self._publishing = 0  # batches being published now
        self.dropped_audio = 0

    # ---- keys -----------------------------------------------------------------------------------------

    def _key(self, *parts: str) -> str:
        return self.cluster.key("desk", self.environment, *parts)

    def _agent(self, user: str) -> str:
        return self._key("agent", user)

    def _claim(self, user: str) -> str:
        return self._key("claim", user)

    def _handoff(self, hid: int) -> str:
        return self._key("handoff", str(hid))

    def _channel(self, kind: str, worker: str = "") -> str:
        return self._key(kind, worker) if worker else self._key(kind)

    # ---- lifecycle ------------------------------------------------------------------------------------

    async def start(self, worker: str, receiver: DeskReceiver) -> None:
        """Subscribe to this worker's channels and start sending; returns once subscribed, or after
        SUBSCRIBE_WAIT_S with Redis away (the subscription is made when it is back)."""
        self.worker, self._receiver = worker, receiver
        loop = asyncio.get_running_loop()
        for work in (self._read(), self._send_events(), self._send_audio(), self._take_events(), self._take_audio()):
            self._tasks.append(loop.create_task(work))
        try:
            await asyncio.wait_for(self._subscribed.wait(), timeout=SUBSCRIBE_WAIT_S)
        except TimeoutError:
            log.error("the desk could not subscribe to its channels on %s yet; it keeps trying", self.cluster.url)

    async def close(self) -> None:
        """Send what is queued (briefly), then stop."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2):
                while not self._events_out.empty() or self._publishing:
                    await asyncio.sleep(0.01)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        for future in self._waiting.values():
            future.cancel()

    # ---- presence and handoffs --------------------------------------------------------------------------

    async def put_agent(self, user: str, fields: Mapping[str, str], *, take: bool = False) -> bool:
        """Publish a desk agent's presence held by this worker (see `DeskState.put_agent`)."""
        flat = [v for item in fields.items() for v in item]
        since_ms = int(float(fields.get("since") or 0) * 1000)
        done = await self._call(
            self._put_agent,
            [self._agent(user), self._key("agents")],
            [self.worker, "1" if take else "0", self._ttl_ms, user, since_ms, *flat],
        )
        return bool(done)

    async def drop_agent(self, user: str) -> None:
        """The desk agent left this worker."""
        await self._call(self._drop_agent, [self._agent(user), self._key("agents")], [self.worker, user])

    async def get_agent(self, user: str) -> dict[str, str] | None:
        """A desk agent's presence and claims."""
        with reaching("the desk's shared state"):
            async with self.cluster.client.pipeline(transaction=False) as pipe:
                pipe.hgetall(self._agent(user))
                pipe.hgetall(self._claim(user))
                presence, claims = await pipe.execute()
        if not presence and not claims:
            return None
        out = {_text(k): _text(v) for k, v in presence.items()}
        out.update({f"claim_{_text(k)}": _text(v) for k, v in claims.items()})
        return out

    async def put_handoff(self, hid: int, fields: Mapping[str, str]) -> None:
        """Publish a handoff this worker holds (claims untouched)."""
        key = self._handoff(hid)
        created_ms = int(float(fields.get("created") or 0) * 1000)
        with reaching("the desk's shared state"):
            async with self.cluster.client.pipeline(transaction=True) as pipe:
                pipe.hset(key, mapping={k: v for k, v in fields.items()})
                pipe.pexpire(key, self._ttl_ms)
                pipe.zadd(self._key("handoffs"), {str(hid): created_ms})
                pipe.pexpire(self._key("handoffs"), self._ttl_ms)
                await pipe.execute()

    async def drop_handoff(self, hid: int) -> None:
        """The handoff is over."""
        with reaching("the desk's shared state"):
            async with self.cluster.client.pipeline(transaction=True) as pipe:
                pipe.delete(self._handoff(hid))
                pipe.zrem(self._key("handoffs"), str(hid))
                await pipe.execute()

    async def snapshot(self) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
        """Every desk agent (with claims) and open handoff of the cluster; records that expired are pruned."""
        agents, handoffs = await self._call(
            self._snapshot,
            [self._key("agents"), self._key("handoffs")],
            [self._key("agent", ""), self._key("claim", ""), self._key("handoff", "")],
        )
        return [_fields(a) for a in agents], [_fields(h) for h in handoffs]

    async def renew(self, claims: Iterable[str]) -> None:
        """Keep the claims this worker's callers hold on these desk agents alive."""
        keys = [self._claim(u) for u in claims]
        if not keys:
            return
        with reaching("the desk's shared state"):
            async with self.cluster.client.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.pexpire(key, self._ttl_ms)
                await pipe.execute()

    # ---- claims -------------------------------------------------------------------------------------------

    async def offer(self, hid: int, user: str, offer_s: float) -> bool:
        """The offer claim."""
        keys = [self._handoff(hid), self._claim(user)]
        return bool(await self._call(self._offer, keys, [hid, user, self.worker, self._ttl_ms, int(offer_s * 1000)]))

    async def withdraw(self, hid: int, user: str) -> bool:
        """Undo an offer."""
        return bool(await self._call(self._withdraw, [self._handoff(hid), self._claim(user)], [hid, user]))

    async def accept(self, hid: int, user: str) -> bool:
        """The accept claim."""
        keys = [self._handoff(hid), self._claim(user)]
        return bool(await self._call(self._accept, keys, [hid, user, self.worker, self._ttl_ms]))

    async def resume(self, hid: int, user: str) -> bool:
        """The desk agent takes their handoff back."""
        keys = [self._handoff(hid), self._claim(user)]
        return bool(await self._call(self._resume, keys, [hid, user, self.worker, self._ttl_ms]))

    async def release(self, hid: int, user: str) -> None:
        """Free the desk agent from the handoff and its offer."""
        await self._call(self._release, [self._handoff(hid), self._claim(user)], [hid, user])

    async def set_away(self, user: str, hid: int, ttl_s: float) -> None:
        """The handoff holds for the desk agent."""
        with reaching("the desk's shared state"):
            await self.cluster.client.set(self._key("away", user), f"{self.worker}|{hid}", px=max(1, int(ttl_s * 1000)))

    async def get_away(self, user: str) -> tuple[str, int] | None:
        """(worker, handoff id) holding for the desk agent."""
        with reaching("the desk's shared state"):
            value = await self.cluster.client.get(self._key("away", user))
        if not value:
            return None
        worker, _, hid = _text(value).partition("|")
        return (worker, int(hid)) if hid.lstrip("-").isdigit() else None

    async def clear_away(self, user: str, hid: int) -> None:
        """The handoff no longer holds for the desk agent (only this worker's mark is removed)."""
        await self._call(self._clear_away, [self._key("away", user)], [f"{self.worker}|{hid}"])

    async def _call(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        with reaching("the desk's shared state"):
            return await script(keys=keys, args=args)

    # ---- events ---------------------------------------------------------------------------------------------

    def send(self, worker: str, event: dict[str, Any]) -> None:
        """An event for `worker`, after those this worker sent before it."""
        self._queue_event(self._channel("events", worker), event)

    def broadcast(self, event: dict[str, Any]) -> None:
        """An event for every worker of the desk."""
        self._queue_event(self._channel("events"), event)

    async def request(self, worker: str, event: dict[str, Any], timeout_s: float) -> dict[str, Any] | None:
        """An event for `worker`, and its answer (None: none in time)."""
        rid = secrets.token_hex(8)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[rid] = future
        self._queue_event(self._channel("events", worker), {**event, "rid": rid})
        try:
            return await asyncio.wait_for(future, timeout_s)
        except TimeoutError:
            return None
        finally:
            self._waiting.pop(rid, None)

    def send_audio(self, worker: str, target: str, pcm16: bytes) -> None:
        """A frame for `target` on `worker` (the oldest queued frame is dropped when Redis falls behind)."""
        name = target.encode()
        item = (self._channel("audio", worker), bytes([len(name)]) + name + pcm16)
        if self._audio_out.full():
            self._audio_out.get_nowait()
            self.dropped_audio += 1
        self._audio_out.put_nowait(item)

    def _queue_event(self, channel: str, event: dict[str, Any]) -> None:
        payload = json.dumps({**event, "from": self.worker}, default=str, separators=(",", ":")).encode()
        try:
            self._events_out.put_nowait((channel, payload))
        except asyncio.QueueFull:
            log.error("desk events for other workers are backed up (Redis unreachable?); dropping one")

    async def _send_events(self) -> None:
        await self._publish_forever(self._events_out)

    async def _send_audio(self) -> None:
        await self._publish_forever(self._audio_out)

    async def _publish_forever(self, outbox: asyncio.Queue[tuple[str, bytes]]) -> None:
        """Publish in order, what is queued meanwhile in one round trip."""
        while True:
            batch = [await outbox.get()]
            while not outbox.empty() and len(batch) < 256:
                batch.append(outbox.get_nowait())
            self._publishing += 1
            try:
                await self._publish(batch)
            finally:
                self._publishing -= 1

    async def _publish(self, batch: list[tuple[str, bytes]]) -> None:
        while True:
            try:
                async with self.cluster.client.pipeline(transaction=False) as pipe:
                    for channel, payload in batch:
                        pipe.publish(channel, payload)
                    await pipe.execute()
                return
            except unreachable() as exc:
                log.warning("publishing desk events failed (%s); retrying", exc)
                await asyncio.sleep(RECONNECT_S)

    async def _read(self) -> None:
        """Read this worker's channels; answers go straight to whoever waits for them."""
        events, audio, everyone = (
            self._channel("events", self.worker),
            self._channel("audio", self.worker),
            self._channel("events"),
        )
        while True:
            pubsub = self.cluster.client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(events, audio, everyone)
                self._subscribed.set()
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=READ_WAIT_S)
                    if message is None or message.get("type") != "message":
                        continue
                    channel, data = _text(message["channel"]), message["data"]
                    if channel == audio:
                        self._take_frame(data)
                    else:
                        self._take_event(data)
            except asyncio.CancelledError:
                raise
            except unreachable() as exc:
                log.warning("the desk's Redis subscription dropped (%s); subscribing again", exc)
                await asyncio.sleep(RECONNECT_S)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    def _take_frame(self, data: bytes) -> None:
        n = data[0] if data else 0
        target, pcm = data[1 : 1 + n].decode(errors="replace"), data[1 + n :]
        if self._audio_in.full():
            self._audio_in.get_nowait()
            self.dropped_audio += 1
        self._audio_in.put_nowait((target, pcm))

    def _take_event(self, data: bytes) -> None:
        try:
            event = json.loads(data)
        except ValueError:
            log.warning("a desk event that is not JSON was ignored")
            return
        if not isinstance(event, dict):
            return
        sender = str(event.pop("from", ""))
        if event.get("k") == "answer":
            future = self._waiting.get(str(event.get("rid")))
            if future is not None and not future.done():
                future.set_result(event.get("answer") or {})
            return
        self._events_in.put_nowait((sender, event))

    async def _take_events(self) -> None:
        """Hand events to the desk one at a time, in order; answer requests."""
        while True:
            sender, event = await self._events_in.get()
            if self._receiver is None:
                continue
            try:
                answer = await self._receiver.on_event(sender, event)
            except Exception:
                log.exception("a desk event (%s) from worker %s failed", event.get("k"), sender)
                answer = None
            rid = event.get("rid")
            if rid is not None and sender:
                self.send(sender, {"k": "answer", "rid": rid, "answer": answer or {}})

    async def _take_audio(self) -> None:
        while True:
            target, pcm = await self._audio_in.get()
            if self._receiver is None:
                continue
            try:
                await self._receiver.on_audio(target, pcm)
            except Exception:
                log.exception("a frame of desk audio for %s failed", target)
