"""A worker's admission control for voice calls: lines (concurrent calls), sockets not started yet,
a worker that is draining (shutting down: no new conversations), and the fixed messages a caller
hears when no line is free or the agent is not served here."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from voxgate.errors import UnavailableError
from voxgate.voice.engines import VoiceEngines

log = logging.getLogger("voxgate.channels")

BUSY_MESSAGE = "All our lines are busy right now. Please call back in a few minutes. Goodbye."
#: what a caller hears when the agent they called was withdrawn from this environment (a rollback of its
#: first release): the line answers, says so, and hangs up
UNAVAILABLE_MESSAGE = "Sorry, this service is not available right now. Please call back later. Goodbye."
#: how long a voice socket may wait for its `start` before it counts against its address's limit
#: on sockets not started yet (the worker's limit counts it at once)
PENDING_GRACE_S = 1.0
DEFAULT_START_TIMEOUT_S = 5.0
DEFAULT_MAX_PENDING = 50
DEFAULT_MAX_PENDING_PER_CLIENT = 10
#: why a new conversation is refused by a worker that is shutting down (logs, close reasons, error bodies)
DRAINING = "draining"
DRAINING_MESSAGE = "this worker is shutting down and takes no new conversations; start again to reach another worker"


class WorkerDraining(UnavailableError):
    """A new conversation asked of a worker that is draining (503; a load balancer sends the retry elsewhere)."""

    def __init__(self) -> None:
        super().__init__(DRAINING_MESSAGE, detail={"reason": DRAINING, "message": DRAINING_MESSAGE})


@dataclass
class Admission:
    """A worker's capacity for concurrent calls; beyond it callers hear a short busy message.

    A call takes a line at its valid `start`, not when its socket opens. Sockets not started yet
    are bounded apart (`max_pending` per worker, `max_pending_per_client` per client address) and
    must start within `start_timeout_s`, so idle sockets can neither hold lines nor pile up.

    A draining worker (`drain`) takes no new call: each caller who starts one hears the busy message
    (counted in `refused` and in `refused_draining`), while the calls holding lines go on."""

    capacity: int
    start_timeout_s: float = DEFAULT_START_TIMEOUT_S
    max_pending: int = DEFAULT_MAX_PENDING
    max_pending_per_client: int = DEFAULT_MAX_PENDING_PER_CLIENT
    active: int = 0
    admitted: int = 0
    refused: int = 0
    pending: int = 0
    pending_refused: int = 0
    draining: bool = False
    refused_draining: int = 0
    start_timeouts: int = 0
    _pending_by_client: dict[str, list[float]] = field(default_factory=dict)  # when each began waiting
    started_at: float = field(default_factory=time.time)
    _audio: dict[str, bytes] = field(default_factory=dict)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    #: told once, when the drain starts (the cluster's worker directory announces it at once)
    on_drain: list[Callable[[], None]] = field(default_factory=list)

    def drain(self) -> None:
        """From now on refuse every new call (the worker is shutting down); calls in progress go on."""
        first = not self.draining
        self.draining = True
        if first:
            for hook in self.on_drain:
                try:
                    hook()
                except Exception:  # the drain goes on whatever a listener does
                    log.exception("a drain listener failed")

    @property
    def refusal_reason(self) -> str:
        """Why a new call is refused now: `draining` while the worker drains, else `busy` (no line free)."""
        return DRAINING if self.draining else "busy"

    def try_admit(self) -> bool:
        """Take a line if one is free and the worker is not draining (False: the caller is refused and counted)."""
        if self.draining:
            self.refused += 1
            self.refused_draining += 1
            log.warning("call refused: %s (%d call(s) still in progress)", DRAINING, self.active)
            return False
        if self.active >= self.capacity:
            self.refused += 1
            return False
        self.active += 1
        self.admitted += 1
        return True

    def release(self) -> None:
        """A call that held a line is over."""
        self.active = max(0, self.active - 1)

    def hold(self, client: str, now: float) -> str | None:
        """Count one more socket not started yet from `client`, or say why it is refused.

        Every such socket counts against the worker's limit at once. Against its address's limit
        count only those that have waited PENDING_GRACE_S without starting: a real caller starts
        within a round trip, so a burst of callers from one gateway is never refused for it."""
        if self.pending >= self.max_pending:
            self.pending_refused += 1
            return "too many voice sockets waiting to start; try again later"
        waiting = self._pending_by_client.setdefault(client, [])
        if sum(1 for since in waiting if now - since >= PENDING_GRACE_S) >= self.max_pending_per_client:
            if not waiting:
                self._pending_by_client.pop(client, None)
            self.pending_refused += 1
            return "too many voice sockets waiting to start from this address"
        self.pending += 1
        waiting.append(now)
        return None

    def unhold(self, client: str, since: float) -> None:
        """The socket from `client` held at `since` started or closed."""
        self.pending = max(0, self.pending - 1)
        waiting = self._pending_by_client.get(client)
        if waiting and since in waiting:
            waiting.remove(since)
            if not waiting:
                del self._pending_by_client[client]

    async def busy_audio(self, engines: VoiceEngines, text: str = BUSY_MESSAGE) -> bytes:
        """16 kHz PCM of the busy (or another fixed) message, synthesised once and reused (it must cost nothing)."""
        async with self._lock:
            if text not in self._audio:
                synth = engines.synthesizer("default")
                audio = await asyncio.to_thread(engines.render, synth, text)
                self._audio[text] = await asyncio.to_thread(engines.to_pipeline_rate, audio, synth.sample_rate)
            return self._audio[text]
