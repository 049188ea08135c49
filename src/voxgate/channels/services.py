"""The port between the voice channels and the application that runs them: `CallServices` says what
a channel needs (admission, the environment's call limits, throttles, the runtime an agent is served with, speech engines, recording,
statistics, the live-agent desk, the handshake and policy checks), and the application hands one in.

`voxgate.api.state.AppState` satisfies it structurally; the channels never import `voxgate.api`."""

from __future__ import annotations

from typing import Any, Protocol

from starlette.websockets import WebSocket

from voxgate.channels.admission import Admission
from voxgate.channels.throttle import SessionThrottles
from voxgate.errors import UnavailableError
from voxgate.observe.voice_stats import VoiceStats
from voxgate.runtime.engine import AgentRuntime
from voxgate.runtime.session import Session
from voxgate.voice.call.ports import CallRecorder
from voxgate.voice.engines import VoiceEngines
from voxgate.voice.pipeline import HandoffHook


class BundleUnavailable(UnavailableError):
    """The active bundle cannot be served (it failed its integrity check): callers get 503 (a socket 1011)."""


class CallServices(Protocol):
    """What a voice channel needs from the application serving it."""

    @property
    def admission(self) -> Admission:
        """The worker's lines and sockets not started yet."""
        ...

    @property
    def throttles(self) -> SessionThrottles:
        """New conversations per client address and per calling number (across the cluster when there is
        one: a count that cannot be reached raises UnavailableError)."""
        ...

    @property
    def voice_stats(self) -> VoiceStats:
        """The worker's rolling call and turn statistics."""
        ...

    @property
    def desk(self) -> HandoffHook | None:
        """Who takes over an escalated call (the live-agent desk), if anyone."""
        ...

    async def handshake_refusal(self, websocket: WebSocket, channel: str) -> str | None:
        """Why the environment refuses this socket's handshake on `channel` (native, twilio); None: it does not."""
        ...

    async def may_call(self, websocket: WebSocket, agent: str) -> bool:
        """Whether the policies let this caller talk to `agent` here."""
        ...

    async def runtime_for(self, agent: str) -> AgentRuntime | None:
        """The runtime a new call with `agent` gets (None: not served); BundleUnavailable if unusable."""
        ...

    async def withdrawn(self, agent: str) -> bool:
        """Whether `agent` was released here and is withdrawn now."""
        ...

    async def voice_engines(self) -> VoiceEngines:
        """The worker's speech models (loaded on first use)."""
        ...

    async def admit_call(self) -> str | None:
        """Count a new call against the environment's limits (`max_concurrent_calls`,
        `max_calls_per_day`; across the cluster when there is one): None when it may start, else
        why not (the limit's name, or `unavailable` when the count cannot be reached)."""
        ...

    async def release_call(self, *, started: bool = True) -> None:
        """A call counted by `admit_call` is over (`started` False: this worker refused it after
        all, right after `admit_call`, and the day does not count it). Never raises."""
        ...

    def call_recording(self) -> CallRecorder | None:
        """A recorder for a new call where the environment records calls, else None."""
        ...

    def record_voice_turn(self, summary: dict[str, Any]) -> None:
        """One finished voice turn's timings, for statistics and metrics."""
        ...

    async def save_recording(self, recording: CallRecorder | None, session: Session) -> str | None:
        """Store a finished call's recording (never raises)."""
        ...


def call_services(websocket: WebSocket) -> CallServices:
    """The CallServices of the application serving `websocket` (a FastAPI dependency of the voice routes).

    The application installs them as ``app.state.voxgate``; a test may override this dependency."""
    services: CallServices = websocket.app.state.voxgate
    return services
