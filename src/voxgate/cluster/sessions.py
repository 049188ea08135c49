"""HTTP conversations between turns, in Redis: any worker can take the next turn (the snapshot store of
`voxgate.runtime.registry.SharedSessions`).

Two keys per conversation, both under the cluster prefix and one hash tag (so they stay together in a
Redis Cluster):

- ``<prefix>:chat:{<session id>}`` — a hash: ``v`` the version (1 when created, one more at each save),
  ``d`` the snapshot (JSON, `voxgate.runtime.snapshot`: no PIN, see there for exactly what it holds),
  sealed by the worker (`SnapshotSeal`: AES-GCM under a key from the installation's privacy salt, bound
  to the session id), so that what Redis holds — a verified caller's customer id, first name and
  account number among it — reads as nothing without the salt every worker shares.
  It expires ``session_idle_timeout_s`` + `REAP_GRACE_S` after the last save: the worker that took the
  last turn closes an idle conversation (with its real outcome) before it lapses.
- ``<prefix>:chat:{<session id>}:turn`` — the turn lease: the token of the worker taking a turn now,
  expiring after `TURN_LEASE_S`, so that a worker that dies mid-turn blocks the conversation no longer.

Every change is one Lua script: a turn takes the lease only when no other turn holds it, and saves only
on the version it started from while the lease is still its own; otherwise `TurnConflict` (409: the
client sends the turn again). Redis that does not answer raises `RedisUnavailable` (503).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from voxgate.cluster.redis import Cluster, reaching
from voxgate.errors import ConflictError, NotFoundError, UnavailableError

if TYPE_CHECKING:
    from redis.commands.core import AsyncScript

#: how long a snapshot outlives the idle timeout: more than a reap pass (30 s), so that the worker that
#: took the last turn finds it and closes the conversation itself
REAP_GRACE_S = 60.0
#: how long one turn may hold a conversation (connector calls included) before another worker may take it
TURN_LEASE_S = 60.0
TURN_CONFLICT = "turn_conflict"
_SESSION_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")

_CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'v', 1, 'd', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""

# -> {0} no such conversation | {-1, v} another turn holds it | {1, v} | {1, v, snapshot}
_CHECKOUT = """
local v = redis.call('HGET', KEYS[1], 'v')
if not v then return {0} end
local holder = redis.call('GET', KEYS[2])
if holder and holder ~= ARGV[1] then return {-1, v} end
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[3])
if v == ARGV[2] then return {1, v} end
return {1, v, redis.call('HGET', KEYS[1], 'd')}
"""

# -> {0} gone | {-1, v} saved by another turn first | {-2, v} another turn holds it | {1, new version}
_SAVE = """
local v = redis.call('HGET', KEYS[1], 'v')
if not v then return {0} end
if v ~= ARGV[2] then return {-1, v} end
local holder = redis.call('GET', KEYS[2])
if holder and holder ~= ARGV[1] then return {-2, v} end
local nv = tonumber(v) + 1
redis.call('HSET', KEYS[1], 'v', nv, 'd', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('DEL', KEYS[2])
return {1, nv}
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
"""

_DELETE = """
local holder = redis.call('GET', KEYS[2])
if holder and holder ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1], KEYS[2])
return 1
"""

_DELETE_IDLE = """
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
if redis.call('HGET', KEYS[1], 'v') ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
return 1
"""


#: what a sealed snapshot starts with (the format, so that a later one can be told apart)
SEALED_V1 = b"vxs1"
_NONCE_BYTES = 12


class SnapshotUnreadable(UnavailableError):
    """A stored snapshot this worker cannot open: sealed under another privacy salt (workers of one cluster
    must share `keys/privacy-salt`), changed in Redis, or moved to another conversation's key (503)."""


class SnapshotSeal:
    """Seals and opens conversation snapshots: AES-256-GCM under a key derived from the installation's
    privacy salt, a random nonce per seal, the session id as associated data (a snapshot copied to another
    conversation's key does not open)."""

    def __init__(self, salt: bytes) -> None:
        if not salt:
            raise ValueError("a snapshot seal needs the installation's privacy salt")
        key = hmac.new(salt, b"voxgate:chat-snapshot:v1", hashlib.sha256).digest()
        self._aead = AESGCM(key)

    def seal(self, session_id: str, data: bytes) -> bytes:
        """`data`, sealed for `session_id`."""
        nonce = os.urandom(_NONCE_BYTES)
        return SEALED_V1 + nonce + self._aead.encrypt(nonce, data, session_id.encode())

    def open(self, session_id: str, sealed: bytes) -> bytes:
        """What `seal` sealed for `session_id`; SnapshotUnreadable otherwise."""
        head, nonce = sealed[: len(SEALED_V1)], sealed[len(SEALED_V1) : len(SEALED_V1) + _NONCE_BYTES]
        if head != SEALED_V1 or len(nonce) != _NONCE_BYTES:
            raise SnapshotUnreadable("this conversation's stored state is not sealed as this worker seals it")
        try:
            return self._aead.decrypt(nonce, sealed[len(SEALED_V1) + _NONCE_BYTES :], session_id.encode())
        except InvalidTag:
            raise SnapshotUnreadable(
                "this worker cannot open this conversation's stored state: every worker of a cluster needs "
                "the same privacy salt (keys/privacy-salt)"
            ) from None


class TurnConflict(ConflictError):
    """Another turn of the conversation runs, or was saved first: this one was not saved; send it again."""

    def __init__(self, message: str) -> None:
        super().__init__(message, detail={"reason": TURN_CONFLICT, "message": message, "retry": True})


class ConversationGone(NotFoundError):
    """The conversation ended or expired while a turn of it was being taken."""


class RedisSnapshotStore:
    """The snapshot store on the cluster's Redis (satisfies `voxgate.runtime.registry.SnapshotStore`)."""

    def __init__(
        self,
        cluster: Cluster,
        *,
        idle_timeout_s: float,
        lease_s: float = TURN_LEASE_S,
        seal: SnapshotSeal | None = None,
    ) -> None:
        self.cluster = cluster
        self.seal = seal  # (a worker always seals; None: stored as given)
        self.ttl_ms = int((idle_timeout_s + REAP_GRACE_S) * 1000)
        self.lease_ms = int(lease_s * 1000)
        client = cluster.client
        self._create = client.register_script(_CREATE)
        self._checkout = client.register_script(_CHECKOUT)
        self._save = client.register_script(_SAVE)
        self._release = client.register_script(_RELEASE)
        self._delete = client.register_script(_DELETE)
        self._delete_idle = client.register_script(_DELETE_IDLE)

    def keys(self, session_id: str) -> tuple[str, str]:
        """The conversation's snapshot key and turn-lease key."""
        snapshot = self.cluster.key("chat", "{" + session_id + "}")
        return snapshot, snapshot + ":turn"

    async def create(self, session_id: str, data: bytes) -> int:
        """Store a new conversation (ConflictError if the id is taken); its version, 1."""
        _check_id(session_id)
        snapshot, _ = self.keys(session_id)
        if not await self._run(self._create, [snapshot], [self._sealed(session_id, data), self.ttl_ms]):
            raise ConflictError(f"a conversation {session_id} is stored already")
        return 1

    async def load(self, session_id: str) -> tuple[bytes, int] | None:
        """The snapshot and its version, or None."""
        if not _SESSION_ID.fullmatch(session_id):
            return None
        snapshot, _ = self.keys(session_id)
        with reaching("the conversation store"):
            data, version = await self.cluster.client.hmget(snapshot, ["d", "v"])
        if data is None or version is None:
            return None
        return self._opened(session_id, data if isinstance(data, bytes) else data.encode()), int(version)

    async def checkout(self, session_id: str, token: str, known_version: int | None) -> tuple[int, bytes | None] | None:
        """Take the turn lease; the version and (unless `known_version` is current) the snapshot."""
        if not _SESSION_ID.fullmatch(session_id):
            return None
        known = "" if known_version is None else str(known_version)
        answer = await self._run(self._checkout, list(self.keys(session_id)), [token, known, self.lease_ms])
        status = int(answer[0])
        if status == 0:
            return None
        if status < 0:
            raise TurnConflict(
                "another turn of this conversation is being taken (sent twice, or two at once); "
                "send this turn again once that one is answered"
            )
        return int(answer[1]), (self._opened(session_id, bytes(answer[2])) if len(answer) > 2 else None)

    async def save(self, session_id: str, data: bytes, expected_version: int, token: str) -> int:
        """Store the conversation after a turn taken on `expected_version`; the new version."""
        answer = await self._run(
            self._save,
            list(self.keys(session_id)),
            [token, str(expected_version), self._sealed(session_id, data), self.ttl_ms],
        )
        status = int(answer[0])
        if status == 0:
            raise ConversationGone("the conversation ended or expired while this turn was taken")
        if status < 0:
            raise TurnConflict(
                "this turn was not saved: another turn of this conversation was taken meanwhile; send it again"
            )
        return int(answer[1])

    async def release(self, session_id: str, token: str) -> None:
        """Give the turn lease back without saving."""
        await self._run(self._release, [self.keys(session_id)[1]], [token])

    async def delete(self, session_id: str, token: str) -> None:
        """Forget a conversation that ended in the turn holding the lease."""
        if not await self._run(self._delete, list(self.keys(session_id)), [token]):
            raise TurnConflict("another turn of this conversation is being taken; it was not ended here")

    async def delete_idle(self, session_id: str, version: int) -> bool:
        """Forget the conversation if `version` is its latest and no turn holds it; whether it did."""
        return bool(await self._run(self._delete_idle, list(self.keys(session_id)), [str(version)]))

    def _sealed(self, session_id: str, data: bytes) -> bytes:
        return data if self.seal is None else self.seal.seal(session_id, data)

    def _opened(self, session_id: str, data: bytes) -> bytes:
        return data if self.seal is None else self.seal.open(session_id, data)

    async def _run(self, script: AsyncScript, keys: list[str], args: list[Any]) -> Any:
        with reaching("the conversation store"):
            return await script(keys=keys, args=args)


def _check_id(session_id: str) -> None:
    if not _SESSION_ID.fullmatch(session_id):
        raise ValueError(f"not a session id: {session_id[:80]!r}")
