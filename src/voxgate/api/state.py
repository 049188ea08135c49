"""What the API routers share: settings, database, runtimes per agent, live sessions, the
governance services (identity, policy engine, environments, audit chain, release pipeline) and,
when `settings.redis_url` is set, what the worker shares with the rest of its cluster.

Cluster mode is chosen here, in one place: with a Redis URL the worker announces itself in the
worker directory, counts its calls against the environment's limits across the cluster, counts
failed sign-ins, new conversations and anonymous refusals with the other workers, and hears (and
announces) release changes; without one, each of these is the single-process version."""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import logging
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import HTTPException, Request
from starlette.websockets import WebSocket

from voxgate import __version__
from voxgate.api.auth import Target, authorize, current_principal
from voxgate.api.denials import AnonymousDenials
from voxgate.api.health import Check, ReadinessChecks, default_readiness_checks
from voxgate.api.voice_access import handshake_refusal
from voxgate.channels.admission import Admission
from voxgate.channels.services import BundleUnavailable, CallServices
from voxgate.channels.throttle import SessionThrottles
from voxgate.clock import utcnow
from voxgate.cluster.admission import ClusterCalls, Limits
from voxgate.cluster.counters import RedisFixedWindowCounts, RedisLoginCounts, RedisWindowThrottle
from voxgate.cluster.directory import CpuLoad, LocalDirectory, RedisDirectory, WorkerDirectory, WorkerInfo
from voxgate.cluster.lease import RedisLease
from voxgate.cluster.notify import ActiveReleases, ReleaseNotice, ReleaseNotices
from voxgate.cluster.redis import Cluster, RedisUnavailable
from voxgate.compliance.account_protection import StoreVerificationGuard
from voxgate.compliance.audit import AuditEvent, AuditLog
from voxgate.compliance.privacy import RuntimeRefs, load_salt
from voxgate.compliance.recorder import RedactingRecorder
from voxgate.compliance.recording import RecordingVault, load_master_key
from voxgate.config import Settings
from voxgate.errors import ForbiddenError
from voxgate.governance import bundle_store, dlp
from voxgate.governance.environments import EnvironmentConfig, GovernanceConfig
from voxgate.governance.identity import Identity
from voxgate.governance.policy import PolicyEngine, Resource
from voxgate.governance.releases import ReleaseService
from voxgate.governance.secrets import resolve_secret
from voxgate.governance.throttle import InMemoryLoginThrottle, LoginAttempts, SharedLoginThrottle
from voxgate.handoff.desk import Desk
from voxgate.observe.metrics import WorkerMetrics
from voxgate.observe.usage import calls_today
from voxgate.observe.voice_stats import VoiceStats
from voxgate.runtime.engine import AgentRuntime
from voxgate.runtime.lockout import VerificationGuard, keyed_subject
from voxgate.runtime.registry import LocalSessions, SharedSessions
from voxgate.runtime.session import Session
from voxgate.signing import PublicKey
from voxgate.store.db import Database
from voxgate.store.liveness import LocalHolds, RepairReport, SqlWorkerRegistry, WorkerLiveness
from voxgate.store.models import SigningKeyRow
from voxgate.voice.call.ports import CallRecorder
from voxgate.voice.engines import VoiceEngines, load_engines
from voxgate.voice.pool import BACKGROUND
from voxgate.voice.prompt_audio import PromptAudioStore
from voxgate.voice.prompts import static_prompts
from voxgate.voice.recording import CallRecording

__all__ = ["AppState", "BundleUnavailable", "call_services", "get_state"]

log = logging.getLogger("voxgate.api")
MAX_MANAGED_RUNTIMES = 6  # bundle versions kept loaded: the active ones plus those calls still use
#: in a cluster, a worker's directory entry and its call slots outlive its last heartbeat this many beats
CLUSTER_TTL_BEATS = 3
#: why a call is refused when the cluster's count of calls cannot be reached (admission fails closed)
COUNT_UNAVAILABLE = "unavailable"
DEFAULT_VOICE_CAPACITY = 20
WARM_DETECTORS = 8  # speech detectors made ahead for the first calls (at most the capacity)


@dataclass
class AppState:
    """One worker's services, shared by its routers; as `CallServices` (channels/services.py), what its
    voice channels need. The governance services are set by the app's lifespan before it serves."""

    settings: Settings
    db: Database
    runtimes: dict[str, AgentRuntime] = field(default_factory=dict)
    sessions: LocalSessions = field(default_factory=LocalSessions)
    admission: Admission = field(default_factory=lambda: Admission(capacity=DEFAULT_VOICE_CAPACITY))
    engines: VoiceEngines | None = None  # loaded on the first call (or at start-up if preloaded)
    voice_stats: VoiceStats = field(default_factory=VoiceStats)
    warming: asyncio.Task[None] | None = None
    prompt_audio: PromptAudioStore = field(init=False)  # fixed prompts rendered before, on disk
    _engines_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # governance (set up by the app's lifespan: governance.setup.setup_governance, then create_app)
    identity: Identity = field(init=False)
    policy: PolicyEngine = field(init=False)
    governance: GovernanceConfig = field(init=False)
    audit: AuditLog = field(init=False)
    releases: ReleaseService = field(init=False)
    recorder: RedactingRecorder = field(init=False)
    metrics: WorkerMetrics = field(init=False)
    desk: Desk = field(init=False)  # the live-agent desk of this worker
    # anonymous refusals counted per minute, failed sign-ins per username and address (count_throttles)
    denials: AnonymousDenials = field(init=False)
    login_throttle: LoginAttempts = field(init=False)
    liveness: WorkerLiveness | None = None  # registration, heartbeat, crash repair (start_liveness)
    clock: Callable[[], dt.datetime] = utcnow
    managed: bool = False  # serve the bundles active in this environment (else: agent directories, dev only)
    _managed: OrderedDict[str, AgentRuntime] = field(default_factory=OrderedDict)
    _managed_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _vault: RecordingVault | None = None  # made on the first recorded call
    _background: set[asyncio.Task[None]] = field(default_factory=set)
    # failed caller verifications per account across sessions
    verification_guard: VerificationGuard | None = None
    refs: RuntimeRefs = field(init=False)  # keyed references in events
    throttles: SessionThrottles = field(init=False)  # new chat sessions per address, calls per calling number
    # what GET /health/ready asks (database, speech models, draining); other modules add theirs
    readiness_checks: ReadinessChecks = field(init=False)
    # ---- the cluster (settings.redis_url); None or the single-process versions without one -------------
    cluster: Cluster | None = None  # the Redis connection every shared component uses
    directory: WorkerDirectory = field(init=False)  # which workers are up (GET /api/cluster)
    cluster_calls: ClusterCalls | None = None  # the environment's call limits, counted across workers
    release_notices: ReleaseNotices | None = None  # release changes heard from, and told to, other workers
    active_releases: ActiveReleases | None = None  # what is active per agent, kept between notices
    cpu: CpuLoad = field(default_factory=CpuLoad)  # this process's CPU use, for the directory
    started_at: dt.datetime = field(default_factory=utcnow)
    _cluster_tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _loop: asyncio.AbstractEventLoop | None = None
    _redis_lost: bool = False  # the heartbeat's last try failed (only a change is logged)

    def __post_init__(self) -> None:
        salt = Path(self.settings.data_dir) / "keys" / "privacy-salt"
        self.refs = RuntimeRefs(salt)
        self.prompt_audio = PromptAudioStore(self.settings.speech_cache_path)
        if self.verification_guard is None:  # the privacy salt is read on first use, in a thread
            self.verification_guard = StoreVerificationGuard(self.db, salt_path=salt, clock=lambda: self.clock())
        self.readiness_checks = default_readiness_checks(self)
        if self.settings.redis_url and self.cluster is None:  # the connection opens on first use
            self.cluster = Cluster.from_url(self.settings.redis_url)
        self.directory = LocalDirectory(self.worker_info)
        if self.cluster is not None:
            ttl_s = CLUSTER_TTL_BEATS * self.settings.worker_heartbeat_s
            self.directory = RedisDirectory(self.cluster, ttl_s=ttl_s, clock=lambda: self.clock())
            self.cluster_calls = ClusterCalls(self.cluster, self.settings.environment, slot_ttl_s=ttl_s)
            self.readiness_checks.add("redis", self._redis_check)

    def count_throttles(self, salt: bytes) -> None:
        """Set up the worker's throttles: failed sign-ins, new chat sessions per client address, calls per
        calling number, and the limit on anonymous refusals per client address.

        On its own a worker counts each in this process. In a cluster each is counted in Redis with
        the other workers, so a client that spreads its attempts over the workers meets one limit; the
        names, addresses and numbers are keyed hashes made with the installation's privacy `salt` (every
        worker has the same one, or their counts would not meet). When Redis cannot be reached, a
        sign-in is refused with 503 and a new conversation is refused too (see the routes): neither is
        let through uncounted. A refusal of an anonymous request is refused all the same and counted by
        this worker alone (`AnonymousDenials.count`)."""
        s, env = self.settings, self.settings.environment
        cluster = self.cluster
        pseudonym = functools.partial(keyed_subject, salt)
        self.denials = AnonymousDenials(
            environment=env,
            clock=lambda: self.clock(),
            per_client_per_minute=s.anonymous_denials_per_minute,
            shared=RedisFixedWindowCounts(cluster, f"denied:{env}", pseudonym=pseudonym) if cluster else None,
        )
        rules: dict[str, Any] = {
            "free_failures": s.login_free_failures,
            "base_delay_s": s.login_backoff_s,
            "lock_after": s.login_lockout_after,
            "lock_s": s.login_lockout_s,
        }
        if cluster is None:
            self.login_throttle = InMemoryLoginThrottle(clock=lambda: self.clock(), **rules)
            self.throttles = SessionThrottles.of(s)
            return
        # one user directory for every environment of the database: sign-ins are counted cluster-wide
        counts = RedisLoginCounts(cluster, pseudonym=pseudonym, **rules)
        self.login_throttle = SharedLoginThrottle(counts, clock=lambda: self.clock())
        self.throttles = SessionThrottles(
            per_address=RedisWindowThrottle(cluster, f"chats:{env}", s.chat_sessions_per_minute, pseudonym=pseudonym),
            per_number=RedisWindowThrottle(cluster, f"calls:{env}", s.calls_per_number_per_minute, pseudonym=pseudonym),
        )

    @property
    def environment(self) -> EnvironmentConfig:
        """The environment this worker serves."""
        return self.governance.environments[self.settings.environment]

    @property
    def draining(self) -> bool:
        """Whether this worker is shutting down: it refuses new conversations, its calls in progress go on."""
        return self.admission.draining

    async def start_liveness(self) -> None:
        """Register this worker, repair what workers that are gone (or this one's previous run) left
        open, then heartbeat and repair in the background. Before any conversation starts."""
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
            # in a cluster one worker at a time repairs what the others left (its own it always repairs)
            lease=RedisLease(self.cluster, f"reaper:{s.environment}", ttl_s=CLUSTER_TTL_BEATS * s.worker_heartbeat_s)
            if self.cluster is not None
            else None,
            # HTTP chats whose state the cluster keeps go on on another worker when theirs is gone
            portable_channels=self.sessions.portable if isinstance(self.sessions, SharedSessions) else (),
        )
        await self.liveness.start()
        self.recorder.worker_id = self.liveness.worker_id  # every session row names its worker

    async def stop_liveness(self) -> None:
        """Stop the heartbeat (the worker's row is marked stopped)."""
        if self.liveness is not None:
            await self.liveness.stop()

    # ---- the cluster ----------------------------------------------------------------------------------------

    @property
    def advertise_url(self) -> str:
        """How the other workers reach this one."""
        s = self.settings
        return s.advertise_url or f"http://{s.host}:{s.port}"

    def worker_info(self) -> WorkerInfo | None:
        """This worker as the directory lists it (None before it has registered)."""
        worker_id = self.liveness.worker_id if self.liveness is not None else None
        if worker_id is None:
            return None
        return WorkerInfo(
            id=worker_id,
            environment=self.settings.environment,
            url=self.advertise_url,
            capacity=self.admission.capacity,
            active_calls=self.admission.active,
            pending_sockets=self.admission.pending,
            live_sessions=len(self.sessions),
            load=self.cpu.read(),
            draining=self.draining,
            version=__version__,
            started_at=self.started_at.isoformat(),
            seen_at=self.clock().isoformat(),
        )

    async def start_cluster(self) -> None:
        """In cluster mode, after `start_liveness`: announce this worker (then with every heartbeat, and
        at once when it drains), listen for release changes and announce this worker's own."""
        if self.cluster is None:
            return
        self._loop = asyncio.get_running_loop()
        log.info("cluster mode: sharing live state through %s", self.cluster.url)
        self.release_notices = ReleaseNotices(self.cluster, self.settings.environment)
        if self.managed:
            self.active_releases = ActiveReleases(self._read_active)
        self.releases.on_change = self._release_step  # told in the thread that committed the step
        self.admission.on_drain.append(self._announce_soon)
        await self._heartbeat()
        self._cluster_tasks = [
            asyncio.create_task(self._heartbeat_forever(), name="voxgate-cluster-heartbeat"),
            asyncio.create_task(self.release_notices.listen(self._release_notice), name="voxgate-release-notices"),
        ]

    async def stop_cluster(self) -> None:
        """Stop announcing and listening, take this worker off the directory and give back the call
        slots it still holds (the Redis connection stays open until `close_cluster`)."""
        for task in self._cluster_tasks:
            task.cancel()
        await asyncio.gather(*self._cluster_tasks, return_exceptions=True)
        self._cluster_tasks = []
        if self.cluster is None:
            return
        info = self.worker_info()
        try:
            if info is not None:
                await self.directory.leave(info.id)
            if self.cluster_calls is not None:
                await self.cluster_calls.release_all()
        except RedisUnavailable as exc:  # its entry and slots expire on their own
            log.warning("leaving the cluster: %s", exc)

    async def close_cluster(self) -> None:
        """Close the Redis connection (the last thing a worker in cluster mode does)."""
        if self.cluster is not None:
            await self.cluster.close()

    async def _redis_check(self) -> Check:
        ok = self.cluster is not None and await self.cluster.ping()
        return Check(ok, "ok" if ok else "unreachable")

    async def _heartbeat(self) -> None:
        """Announce this worker and renew its call slots; Redis away is logged when it starts and ends."""
        info = self.worker_info()
        try:
            if info is not None:
                await self.directory.announce(info)
            if self.cluster_calls is not None:
                await self.cluster_calls.renew()
        except RedisUnavailable as exc:
            if not self._redis_lost:
                log.warning("cluster heartbeat: %s; new calls are refused until Redis answers again", exc)
            self._redis_lost = True
            return
        if self._redis_lost:
            log.warning("cluster heartbeat: Redis answers again")
        self._redis_lost = False

    async def _heartbeat_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.worker_heartbeat_s)
            await self._heartbeat()

    def _announce_soon(self) -> None:
        """The drain started (maybe in a signal handler): announce it now, not at the next heartbeat."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._spawn, self._heartbeat)

    def _spawn(self, work: Callable[[], Any]) -> None:
        task = asyncio.create_task(work())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _release_step(self, environment: str, agent: str, digest: str | None) -> None:
        """A release step committed on this worker (any thread): forget what is kept, tell the others."""
        if self._loop is None or self._loop.is_closed():
            return
        self._loop.call_soon_threadsafe(self._after_release_step, environment, agent, digest)

    def _after_release_step(self, environment: str, agent: str, digest: str | None) -> None:
        if environment == self.settings.environment and self.active_releases is not None:
            self.active_releases.forget(agent)
        self._spawn(lambda: self._announce_release(environment, agent, digest))

    async def _announce_release(self, environment: str, agent: str, digest: str | None) -> None:
        if self.release_notices is None:
            return
        worker = self.liveness.worker_id if self.liveness is not None else None
        try:
            await self.release_notices.announce(ReleaseNotice(agent, digest, worker), environment=environment)
        except RedisUnavailable as exc:  # the other workers see it within their poll
            log.warning("the release of %s in %s could not be announced: %s", agent, environment, exc)

    async def _release_notice(self, notice: ReleaseNotice | None) -> None:
        """A release changed somewhere in this environment (None: notices may have been missed)."""
        if self.active_releases is None:
            return
        self.active_releases.forget(notice.agent if notice is not None else None)
        if notice is not None:  # load the new bundle now, so the first caller does not wait for it
            self._spawn(lambda: self._warm_release(notice.agent))

    async def _warm_release(self, agent: str) -> None:
        try:
            await self.runtime_for(agent)
        except Exception:  # refused and audited (BundleUnavailable), or logged: a new call tries again
            log.warning("could not load the new release of %s ahead of its first call", agent, exc_info=True)

    async def _read_active(self, agent: str) -> str | None:
        return await asyncio.to_thread(self.releases.active, self.settings.environment, agent)

    def _held_sessions(self) -> set[str]:
        """Conversations this worker holds (none of them is closed by a repair pass)."""
        return set(self.sessions.ids()) | self.recorder.open  # voice calls are not in the registry

    def _held_handoffs(self) -> set[int]:
        return {h.row_id for h in self.desk.handoffs.values() if h.row_id is not None}

    async def _repaired(self, report: RepairReport) -> None:
        """A repair pass changed something: one audit event (more if the ids need them), and the
        failed handoffs counted by reason like the desk's own failures."""
        worker = self.liveness.worker_id if self.liveness is not None else None
        events = [
            AuditEvent(
                actor="system",
                action="worker.repair",
                resource=f"worker:{worker}",
                environment=self.settings.environment,
                outcome="ok",
                data=data,
            )
            for data in report.audit_data()
        ]
        try:
            await asyncio.to_thread(self.audit.append, *events)
        except Exception:  # the rows are repaired (each says why); an operator must see this
            log.exception("auditing a repair pass failed: %s", report.counts())
        for reason, ids in report.handoffs.items():
            self.metrics.handoff_failures.labels(reason=reason).inc(len(ids))

    # ---- what the voice channels need (channels.services.CallServices) ---------------------------------

    async def handshake_refusal(self, websocket: WebSocket, channel: str) -> str | None:
        """Why this environment's channel settings refuse a voice socket's handshake (None: they do not)."""
        return await handshake_refusal(websocket, self.environment, channel)

    async def may_call(self, websocket: WebSocket, agent: str) -> bool:
        """Whether the policies let this (normally anonymous) caller talk to `agent` here."""
        target = Target(environment=self.settings.environment, resource=Resource.agent(agent))
        try:
            principal = await current_principal(websocket)  # type: ignore[arg-type]
            await authorize(self, principal, "call.start", target, websocket)
        except (HTTPException, ForbiddenError):
            return False
        return True

    async def admit_call(self) -> str | None:
        """Count a new call against the environment's limits: None when it may start, else the limit
        that refuses it. In a cluster both limits are counted in Redis across every worker, and a
        Redis that cannot be reached refuses the call (`unavailable`: without the shared count the
        limits cannot be kept). On its own, the worker's capacity (at most `max_concurrent_calls`)
        bounds concurrent calls and the day's calls are counted in the database."""
        quotas = self.environment.settings.quotas
        if self.cluster_calls is not None:
            limits = Limits(quotas.max_concurrent_calls, quotas.max_calls_per_day)
            try:
                return await self.cluster_calls.admit(uuid.uuid4().hex, limits)
            except RedisUnavailable as exc:
                log.warning("call refused: the cluster's count of calls cannot be reached (%s)", exc)
                return COUNT_UNAVAILABLE
        limit = quotas.max_calls_per_day
        if limit is None:
            return None
        today = await asyncio.to_thread(calls_today, self.db, self.settings.environment)
        return None if today < limit else "max_calls_per_day"

    async def release_call(self, *, started: bool = True) -> None:
        """A counted call is over. The slots this worker holds are alike: a call that ends gives back
        the oldest; one refused right after `admit_call` (`started` False) the one it just took."""
        calls = self.cluster_calls
        if calls is None or not calls.held:
            return
        held = list(calls.held)
        await calls.release(held[0] if started else held[-1], started=started)

    def call_recording(self) -> CallRecording | None:
        """A recorder for a new call when this environment records calls (off by default), else None."""
        if not self.environment.settings.recording.enabled:
            return None
        return CallRecording(self.settings.environment)

    def recording_vault(self) -> RecordingVault:
        """The encrypted recording store (blocking: reads keys; call it from a thread)."""
        if self._vault is None:
            cfg = self.environment.settings.recording
            keys = Path(self.settings.data_dir)
            self._vault = RecordingVault(
                self.db, load_master_key(cfg.master_key, keys), load_salt(keys / "keys" / "privacy-salt")
            )
        return self._vault

    async def save_recording(self, recording: CallRecorder | None, session: Session) -> str | None:
        """Encrypt and store a finished call's recording; a failure is logged loudly, never raised."""
        if recording is None or not recording.duration_ms:
            return None
        duration_ms = recording.duration_ms

        def store() -> str:
            return str(
                self.recording_vault().store(
                    session_id=session.id,
                    environment=self.settings.environment,
                    customer_id=session.customer_id if session.verified else None,
                    wav=recording.wav(),
                    duration_ms=duration_ms,
                )
            )

        try:
            return await asyncio.to_thread(store)
        except Exception:  # the call is over either way; an operator must see this
            log.exception("recording of call %s could not be stored", session.id)
            return None

    def record_voice_turn(self, summary: dict[str, Any]) -> None:
        """One finished voice turn's stage timings: rolling stats and the Prometheus histograms."""
        self.voice_stats.record_turn(summary)
        self.metrics.observe_turn(summary)

    def audit_keys(self) -> dict[str, PublicKey]:
        """The public keys audit checkpoints are signed with, by key id."""
        with self.db.orm() as orm:
            rows = orm.query(SigningKeyRow).filter(SigningKeyRow.purpose == "audit").all()
            return {r.key_id: PublicKey.from_b64(r.public_key) for r in rows}

    async def runtime_for(self, agent: str) -> AgentRuntime | None:
        """The runtime a NEW conversation with `agent` gets: in managed mode the bundle active in
        this environment right now (calls already running keep the one they started with).
        BundleUnavailable when that bundle fails its integrity check (refused and audited)."""
        if not self.managed:
            return self.runtimes.get(agent)
        if self.active_releases is not None:  # in a cluster: kept between release notices, briefly
            digest = await self.active_releases.get(agent)
        else:
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
                runtime = await self._load_or_refuse(agent, digest)
                self._managed[digest] = runtime
                self.runtimes[agent] = runtime
                if self.engines is not None:  # a release after start-up: render its fixed prompts now
                    task = asyncio.create_task(self._warm_prompts(runtime))
                    self._background.add(task)
                    task.add_done_callback(self._background.discard)
                while len(self._managed) > MAX_MANAGED_RUNTIMES:
                    self._managed.popitem(last=False)  # live sessions hold their own reference
        return runtime

    async def runtime_for_digest(self, agent: str, digest: str | None) -> AgentRuntime | None:
        """The runtime of a conversation that started on `digest` (on this worker or another): a publish
        between its turns does not change it. None when this worker cannot serve that version."""
        if not self.managed:
            runtime = self.runtimes.get(agent)
            return runtime if runtime is not None and runtime.digest == digest else None
        if digest is None:
            return None
        runtime = self._managed.get(digest)
        if runtime is not None:
            self._managed.move_to_end(digest)
        else:
            async with self._managed_lock:
                runtime = self._managed.get(digest)
                if runtime is None:
                    runtime = await self._load_or_refuse(agent, digest)
                    self._managed[digest] = runtime
                    while len(self._managed) > MAX_MANAGED_RUNTIMES:
                        self._managed.popitem(last=False)
        return runtime if runtime.agent.name == agent else None

    async def _load_or_refuse(self, agent: str, digest: str) -> AgentRuntime:
        try:
            return await asyncio.to_thread(self._load_managed, digest)
        except bundle_store.BundleLoadError as exc:
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
            raise BundleUnavailable(f"the bundle active for '{agent}' failed verification; not serving it") from None

    async def withdrawn(self, agent: str) -> bool:
        """Whether `agent` was released to this environment and is withdrawn now (nothing active)."""
        if not self.managed:
            return False
        history = await asyncio.to_thread(self.releases.history, self.settings.environment, agent, 1)
        return bool(history) and history[0].digest is None

    def _load_managed(self, digest: str) -> AgentRuntime:
        stored = bundle_store.load_stored(self.db, digest)  # verifies digest and signature
        log.info("serving %s %s in %s", stored.agent, digest[:19], self.settings.environment)
        return AgentRuntime(
            stored.source,
            environment=self.settings.environment,
            digest=digest,
            recorder=self.recorder,
            guard=self.verification_guard,
            refs=self.refs,
            host_policy=dlp.host_policy_for(
                self.db, self.environment, agent=stored.agent, connectors=stored.source.agent.connectors, now=self.clock
            ),
            secrets=resolve_secret,
        )

    async def voice_engines(self) -> VoiceEngines:
        """Speech models load once per worker, on the first call (or at start-up if preloaded)."""
        if self.engines is None:
            async with self._engines_lock:
                if self.engines is None:
                    voices = tuple(dict.fromkeys(rt.agent.voice.voice for rt in self.runtimes.values())) or ("default",)
                    engines = await asyncio.to_thread(
                        load_engines,
                        asr_model=self.settings.asr_model,
                        voices=voices,
                        workers=self.settings.speech_workers,
                        piper=self.settings.piper,
                    )
                    self.engines = engines
                    # fixed prompts render in the background at low priority; calls need not wait
                    self.warming = asyncio.create_task(self._warm(engines))
                    return engines
        return self.engines

    async def _warm(self, engines: VoiceEngines) -> None:
        """Render each agent's fixed prompts (and the busy message) before the first caller hears them."""
        for rt in self.runtimes.values():
            synth = engines.synthesizer(rt.agent.voice.voice)
            await engines.pool.run(BACKGROUND, engines.warm, synth, static_prompts(rt), self.prompt_audio)
        await self.admission.busy_audio(engines)
        await asyncio.to_thread(engines.stock_vads, min(self.admission.capacity, WARM_DETECTORS))

    async def background_done(self) -> None:
        """Wait for the background work started so far (a new release's prompts being rendered)."""
        if self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)

    async def stop_background(self) -> None:
        """Cancel background work (prompt rendering) before the speech engines close."""
        for task in list(self._background):
            task.cancel()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    async def _warm_prompts(self, runtime: AgentRuntime) -> None:
        engines = self.engines
        if engines is None:
            return
        try:
            synth = engines.synthesizer(runtime.agent.voice.voice)
            await engines.pool.run(BACKGROUND, engines.warm, synth, static_prompts(runtime), self.prompt_audio)
        except Exception:  # callers still get every prompt, synthesised when first said
            log.warning("could not pre-render the prompts of %s", runtime.agent.name, exc_info=True)


def call_services(state: AppState) -> CallServices:
    """The worker's services as its voice channels see them (mypy checks that AppState satisfies the port)."""
    return state


def get_state(request: Request) -> AppState:
    """The worker's AppState (a FastAPI dependency)."""
    state: AppState = request.app.state.voxgate
    return state
