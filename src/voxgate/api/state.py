"""What the API routers share: settings, database, runtimes per agent, live sessions, and the
governance services (identity, policy engine, environments, audit chain, release pipeline)."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import HTTPException, Request

from voxgate.channels.calls import Admission
from voxgate.channels.throttle import SessionThrottles
from voxgate.clock import utcnow
from voxgate.compliance.account_protection import StoreVerificationGuard
from voxgate.compliance.privacy import RuntimeRefs
from voxgate.config import Settings
from voxgate.observe.voice_stats import VoiceStats
from voxgate.runtime.engine import AgentRuntime
from voxgate.runtime.registry import LocalSessions
from voxgate.store.db import Database

log = logging.getLogger("voxgate.api")
MAX_MANAGED_RUNTIMES = 6  # bundle versions kept loaded: the active ones plus those calls still use


class BundleUnavailable(Exception):
    """The active bundle cannot be served (it failed its integrity check): callers get 503."""


@dataclass
class AppState:
    settings: Settings
    db: Database
    runtimes: dict[str, AgentRuntime] = field(default_factory=dict)
    sessions: LocalSessions = field(default_factory=LocalSessions)
    admission: Admission = field(default_factory=lambda: Admission(capacity=20))
    engines: Any = None
    voice_stats: VoiceStats = field(default_factory=VoiceStats)
    warming: asyncio.Task[None] | None = None
    _engines_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # governance (set up by the app's lifespan)
    identity: Any = None
    policy: Any = None
    governance: Any = None
    audit: Any = None
    releases: Any = None
    recorder: Any = None
    metrics: Any = None  # observe.metrics.WorkerMetrics
    desk: Any = None  # handoff.desk.Desk: the live-agent desk of this worker
    liveness: Any = None  # store.liveness.WorkerLiveness: registration, heartbeat, crash repair
    denials: Any = None  # api.denials.AnonymousDenials: anonymous refusals, counted per minute
    login_throttle: Any = None  # governance.throttle.LoginThrottle: failed sign-ins per username and address
    clock: Callable[[], dt.datetime] = utcnow
    managed: bool = False  # serve the bundles active in this environment (else: agent directories, dev only)
    _managed: OrderedDict[str, AgentRuntime] = field(default_factory=OrderedDict)
    _managed_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _vault: Any = None  # compliance.recording.RecordingVault, made on the first recorded call
    _background: set[asyncio.Task[None]] = field(default_factory=set)
    # failed caller verifications per account across sessions (runtime.lockout.VerificationGuard)
    verification_guard: Any = None
    refs: Any = field(init=False)  # compliance.privacy.RuntimeRefs: keyed references in events
    throttles: SessionThrottles = field(init=False)  # new chat sessions per address, calls per calling number

    def __post_init__(self) -> None:
        self.refs = RuntimeRefs(Path(self.settings.data_dir) / "keys" / "privacy-salt")
        if self.verification_guard is None:  # the privacy salt is read on first use, in a thread
            self.verification_guard = StoreVerificationGuard(
                self.db, salt_path=Path(self.settings.data_dir) / "keys" / "privacy-salt", clock=lambda: self.clock()
            )
        self.throttles = SessionThrottles.of(self.settings)

    async def start_liveness(self) -> None:
        """Register this worker, repair what workers that are gone (or this one's previous run) left
        open, then heartbeat and repair in the background. Before any conversation starts."""
        from voxgate.store.liveness import LocalHolds, SqlWorkerRegistry, WorkerLiveness

        s = self.settings
        await asyncio.to_thread(self.refs.load)  # the privacy salt, read before any conversation needs it
        self.sessions.idle_s = s.session_idle_timeout_s
        self.liveness = WorkerLiveness(
            SqlWorkerRegistry(self.db, clock=lambda: self.clock()),
            self.db,
            s.environment,
            heartbeat_s=s.worker_heartbeat_s,
            liveness_timeout_s=s.worker_liveness_timeout_s,
            idle_timeout_s=s.session_idle_timeout_s,
            clock=lambda: self.clock(),
            on_repair=self._repaired,
            holds=LocalHolds(sessions=self._held_sessions, handoffs=self._held_handoffs),
        )
        await self.liveness.start()
        if self.recorder is not None:
            self.recorder.worker_id = self.liveness.worker_id  # every session row names its worker

    async def stop_liveness(self) -> None:
        if self.liveness is not None:
            await self.liveness.stop()

    def _held_sessions(self) -> set[str]:
        """Conversations this worker holds (none of them is closed by a repair pass)."""
        held = set(self.sessions.ids())
        if self.recorder is not None:
            held |= getattr(self.recorder, "open", set())  # voice calls are not in the registry
        return held

    def _held_handoffs(self) -> set[int]:
        if self.desk is None:
            return set()
        return {h.row_id for h in self.desk.handoffs.values() if h.row_id is not None}

    async def _repaired(self, report: Any) -> None:
        """A repair pass changed something: one audit event (more if the ids need them), and the
        failed handoffs counted by reason like the desk's own failures."""
        from voxgate.compliance.audit import AuditEvent

        env = self.settings.environment
        events = [
            AuditEvent(
                actor="system",
                action="worker.repair",
                resource=f"worker:{self.liveness.worker_id}",
                environment=env,
                outcome="ok",
                data=data,
            )
            for data in report.audit_data()
        ]
        try:
            await asyncio.to_thread(self.audit.append, *events)
        except Exception:  # the rows are repaired (each says why); an operator must see this
            log.exception("auditing a repair pass failed: %s", report.counts())
        if self.metrics is not None:
            for reason, ids in report.handoffs.items():
                self.metrics.handoff_failures.labels(reason=reason).inc(len(ids))

    async def within_daily_quota(self) -> bool:
        """Whether the environment's `max_calls_per_day` (if any) leaves room for one more call."""
        limit = self.governance.environments[self.settings.environment].settings.quotas.max_calls_per_day
        if limit is None:
            return True
        from voxgate.observe.usage import calls_today

        return await asyncio.to_thread(calls_today, self.db, self.settings.environment) < limit

    def call_recording(self) -> Any:
        """A recorder for a new call when this environment records calls (off by default), else None."""
        if not self.governance.environments[self.settings.environment].settings.recording.enabled:
            return None
        from voxgate.compliance.recording import CallRecording

        return CallRecording(self.settings.environment)

    def recording_vault(self) -> Any:
        """The encrypted recording store (blocking: reads keys; call it from a thread)."""
        if self._vault is None:
            from voxgate.compliance.privacy import load_salt
            from voxgate.compliance.recording import RecordingVault, load_master_key

            cfg = self.governance.environments[self.settings.environment].settings.recording
            keys = Path(self.settings.data_dir)
            self._vault = RecordingVault(
                self.db, load_master_key(cfg.master_key, keys), load_salt(keys / "keys" / "privacy-salt")
            )
        return self._vault

    async def save_recording(self, recording: Any, session: Any) -> str | None:
        """Encrypt and store a finished call's recording; a failure is logged loudly, never raised."""
        if recording is None or not recording.duration_ms:
            return None
        try:

            def store() -> str:
                return str(
                    self.recording_vault().store(
                        session_id=session.id,
                        environment=self.settings.environment,
                        customer_id=session.customer_id if session.verified else None,
                        wav=recording.wav(),
                        duration_ms=recording.duration_ms,
                    )
                )

            return await asyncio.to_thread(store)
        except Exception:  # the call is over either way; an operator must see this
            log.exception("recording of call %s could not be stored", session.id)
            return None

    def record_voice_turn(self, summary: dict[str, Any]) -> None:
        """One finished voice turn's stage timings: rolling stats and the Prometheus histograms."""
        self.voice_stats.record_turn(summary)
        if self.metrics is not None:
            self.metrics.observe_turn(summary)

    def audit_keys(self) -> dict[str, Any]:
        from voxgate.governance.signing import PublicKey
        from voxgate.store.models import SigningKeyRow

        with self.db.orm() as orm:
            rows = orm.query(SigningKeyRow).filter(SigningKeyRow.purpose == "audit").all()
            return {r.key_id: PublicKey.from_b64(r.public_key) for r in rows}

    async def runtime_for(self, agent: str) -> AgentRuntime | None:
        """The runtime a NEW conversation with `agent` gets: in managed mode the bundle active in
        this environment right now (calls already running keep the one they started with)."""
        if not self.managed:
            return self.runtimes.get(agent)
        digest = await asyncio.to_thread(self.releases.active, self.settings.environment, agent)
        if digest is None:
            self.runtimes.pop(agent, None)  # withdrawn (or never released): not served here
            return None
        runtime = self._managed.get(digest)
        if runtime is not None:
            self._managed.move_to_end(digest)
            return runtime
        async with self._managed_lock:
            runtime = self._managed.get(digest)
            if runtime is None:
                try:
                    runtime = await asyncio.to_thread(self._load_managed, digest)
                except Exception as exc:
                    from voxgate.compliance.audit import AuditEvent
                    from voxgate.governance.bundle_store import BundleLoadError

                    if not isinstance(exc, BundleLoadError):
                        raise
                    log.error("refusing to serve %s %s: %s", agent, digest[:19], exc)
                    await asyncio.to_thread(
                        self.audit.append,
                        AuditEvent(
                            actor="system",
                            action="bundle.integrity_failed",
                            resource=f"bundle:{digest}",
                            environment=self.settings.environment,
                            outcome="denied",
                            data={"agent": agent},
                        ),
                    )
                    raise BundleUnavailable(
                        f"the bundle active for '{agent}' failed verification; not serving it"
                    ) from None
                self._managed[digest] = runtime
                self.runtimes[agent] = runtime
                if self.engines is not None:  # a release after start-up: render its fixed prompts now
                    task = asyncio.create_task(self._warm_prompts(runtime))
                    self._background.add(task)
                    task.add_done_callback(self._background.discard)
                while len(self._managed) > MAX_MANAGED_RUNTIMES:
                    self._managed.popitem(last=False)  # live sessions hold their own reference
        return runtime

    async def withdrawn(self, agent: str) -> bool:
        """Whether `agent` was released to this environment and is withdrawn now (nothing active)."""
        if not self.managed:
            return False
        history = await asyncio.to_thread(self.releases.history, self.settings.environment, agent, 1)
        return bool(history) and history[0].digest is None

    def _load_managed(self, digest: str) -> AgentRuntime:
        from voxgate.governance import bundle_store, dlp

        stored = bundle_store.load_stored(self.db, digest)  # verifies digest and signature
        env = self.governance.environments[self.settings.environment]
        log.info("serving %s %s in %s", stored.agent, digest[:19], self.settings.environment)
        return AgentRuntime(
            stored.source,
            environment=self.settings.environment,
            digest=digest,
            recorder=self.recorder,
            guard=self.verification_guard,
            refs=self.refs,
            host_policy=dlp.host_policy_for(
                self.db, env, agent=stored.agent, connectors=stored.source.agent.connectors, now=self.clock
            ),
        )

    async def voice_engines(self) -> Any:
        """Speech models load once per worker, on the first call (or at start-up if preloaded)."""
        if self.engines is None:
            async with self._engines_lock:
                if self.engines is None:
                    from voxgate.voice.engines import load_engines

                    voices = tuple(dict.fromkeys(rt.agent.voice.voice for rt in self.runtimes.values())) or ("default",)
                    engines = await asyncio.to_thread(
                        load_engines,
                        asr_model=self.settings.asr_model,
                        voices=voices,
                        workers=self.settings.speech_workers,
                    )
                    self.engines = engines
                    # fixed prompts render in the background at low priority; calls need not wait
                    self.warming = asyncio.create_task(self._warm(engines))
        return self.engines

    async def _warm(self, engines: Any) -> None:
        """Render each agent's fixed prompts (and the busy message) before the first caller hears them."""
        from voxgate.voice.pool import BACKGROUND
        from voxgate.voice.prompts import static_prompts

        for rt in self.runtimes.values():
            synth = engines.synthesizer(rt.agent.voice.voice)
            await engines.pool.run(BACKGROUND, engines.warm, synth, static_prompts(rt))
        await self.admission.busy_audio(engines)
        for _ in range(min(self.admission.capacity, 8)):  # detectors for the first calls
            engines.release_vad(await asyncio.to_thread(engines.vad_factory))

    async def stop_background(self) -> None:
        """Cancel background work (prompt rendering) before the speech engines close."""
        for task in list(self._background):
            task.cancel()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    async def _warm_prompts(self, runtime: AgentRuntime) -> None:
        from voxgate.voice.pool import BACKGROUND
        from voxgate.voice.prompts import static_prompts

        try:
            synth = self.engines.synthesizer(runtime.agent.voice.voice)
            await self.engines.pool.run(BACKGROUND, self.engines.warm, synth, static_prompts(runtime))
        except Exception:  # callers still get every prompt, synthesised when first said
            log.warning("could not pre-render the prompts of %s", runtime.agent.name, exc_info=True)

    def runtime(self, agent: str) -> AgentRuntime:
        rt = self.runtimes.get(agent)
        if rt is None:
            raise HTTPException(404, f"no agent named '{agent}' is served here")
        return rt


def get_state(request: Request) -> AppState:
    return request.app.state.voxgate  # type: ignore[no-any-return]
