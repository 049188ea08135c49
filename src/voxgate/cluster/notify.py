"""Release notifications: a publish, rollback, deploy or promotion on any worker reaches every worker
of the environment, so a new call anywhere gets the new bundle at once.

The database stays the truth. A worker keeps what it last read about the bundle active per agent
(`ActiveReleases`) for at most `max_age_s` (a short poll), and drops it as soon as a notice says it
changed. Notices are Redis pub/sub messages on one channel per environment:

    releases:<env>    {"agent": ..., "digest": ... or null, "worker": the announcing worker's id}

Pub/sub delivers only to those listening at that moment: a worker that was disconnected (Redis
restarted, a network blip) forgets everything it kept when it subscribes again, and the poll
bounds what a lost message can cost anyway.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from voxgate.cluster.redis import Cluster, reaching, unreachable

__all__ = ["POLL_S", "ActiveReleases", "ReleaseNotice", "ReleaseNotices"]

log = logging.getLogger("voxgate.cluster")

#: how long a worker trusts what it read about an active release without a notice (the short poll)
POLL_S = 5.0
#: how long the listener waits for a message before it looks again (it also answers cancellation)
LISTEN_TIMEOUT_S = 1.0
#: the first and the longest wait before subscribing again after Redis went away
RETRY_FIRST_S = 0.2
RETRY_MAX_S = 5.0


@dataclass(frozen=True)
class ReleaseNotice:
    """What changed: the bundle active for `agent` (None: withdrawn), announced by worker `worker`."""

    agent: str
    digest: str | None
    worker: str | None = None


class ReleaseNotices:
    """The release channel of one environment: announce a change, listen for those of every worker."""

    def __init__(self, cluster: Cluster, environment: str) -> None:
        self.cluster = cluster
        self.environment = environment
        self.received = 0  # notices heard since start (for /health and the tests)
        self.subscribed = asyncio.Event()  # set while the listener is subscribed

    @property
    def channel(self) -> str:
        """The pub/sub channel of this environment."""
        return self.channel_of(self.environment)

    def channel_of(self, environment: str) -> str:
        """The pub/sub channel of `environment`."""
        return self.cluster.key("releases", environment)

    async def announce(self, notice: ReleaseNotice, *, environment: str | None = None) -> int:
        """Tell every worker listening in `environment` (default: this one's); how many heard it.
        RedisUnavailable when Redis cannot be reached."""
        payload = json.dumps({"agent": notice.agent, "digest": notice.digest, "worker": notice.worker})
        with reaching("announcing a release"):
            return int(await self.cluster.client.publish(self.channel_of(environment or self.environment), payload))

    async def listen(self, on_notice: Callable[[ReleaseNotice | None], Awaitable[None]]) -> None:
        """Call `on_notice` with every notice of this environment until cancelled; with None each
        time it subscribes again after losing the connection (notices may have been missed)."""
        delay = RETRY_FIRST_S
        lost = False
        while True:
            pubsub = self.cluster.client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                self.subscribed.set()
                if lost:
                    log.warning("release notices: subscribed again; what was kept about active releases is dropped")
                    await on_notice(None)
                lost, delay = False, RETRY_FIRST_S
                while True:
                    message = await pubsub.get_message(timeout=LISTEN_TIMEOUT_S)
                    if message is None or message.get("type") != "message":
                        continue
                    notice = _parse(message.get("data"))
                    if notice is None:
                        log.warning("release notices: a malformed message on %s was ignored", self.channel)
                        continue
                    self.received += 1
                    await on_notice(notice)
            except unreachable() as exc:
                lost = True
                self.subscribed.clear()
                log.warning(
                    "release notices: Redis went away (%s); subscribing again in %.1f s", type(exc).__name__, delay
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)
            finally:
                self.subscribed.clear()
                try:
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
                except unreachable():
                    pass


def _parse(data: Any) -> ReleaseNotice | None:
    try:
        body = json.loads(data)
        agent, digest, worker = body["agent"], body.get("digest"), body.get("worker")
    except (TypeError, ValueError, KeyError):
        return None
    if not isinstance(agent, str) or not (digest is None or isinstance(digest, str)):
        return None
    return ReleaseNotice(agent, digest, worker if isinstance(worker, str) else None)


class ActiveReleases:
    """The digest active per agent as this worker last read it (`load`): kept at most `max_age_s`,
    dropped at once by `forget` (a notice). A read that began before a `forget` is not kept."""

    def __init__(
        self,
        load: Callable[[str], Awaitable[str | None]],
        *,
        max_age_s: float = POLL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.load = load
        self.max_age_s = max_age_s
        self.clock = clock
        self._kept: dict[str, tuple[str | None, float]] = {}
        self._generation = 0

    async def get(self, agent: str) -> str | None:
        """The digest active for `agent` (None: nothing), from what is kept while it is fresh."""
        kept = self._kept.get(agent)
        now = self.clock()
        if kept is not None and now - kept[1] < self.max_age_s:
            return kept[0]
        generation = self._generation
        digest = await self.load(agent)
        if generation == self._generation:
            self._kept[agent] = (digest, now)
        return digest

    def forget(self, agent: str | None = None) -> None:
        """Drop what is kept about `agent` (None: every agent); the next `get` reads the database."""
        self._generation += 1
        if agent is None:
            self._kept.clear()
        else:
            self._kept.pop(agent, None)
