"""Voice load benchmark: many concurrent simulated callers against a voxgate server on loopback.

Each of N callers places scripted Harbor demo calls back to back (a new call as soon as one
ends) until the run's duration has passed; calls still in progress then finish, bounded by a
timeout. Callers speak real-time audio over real sockets (`voxgate.testing.caller`), so the
server sees what it would see from N phones. All caller audio is synthesised and encoded
before the first call, and replies are not transcribed, so the client spends as little CPU as
possible on the machine it shares with the server being measured; a reply counts when audible
agent audio arrived.

With `url=None` the benchmark starts `voxgate demo` itself on free loopback ports (models
preloaded, a throwaway data directory), samples that process tree's CPU and memory every half
second, and stops it with SIGINT at the end.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import random
import signal
import socket
import subprocess  # nosec B404: starts the worker under test with a fixed argv, no shell
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import numpy as np
from pydantic import BaseModel, Field, computed_field

from voxgate.runtime.digits import heard_digits
from voxgate.testing.caller import CallReport, ProtocolName, prepare_utterance, run_call
from voxgate.testing.human_callers import (
    HUMAN_VOICE,
    HumanTurns,
    HumanUtterance,
    human_script,
    human_speech,
    prepare_human,
)
from voxgate.testing.voices import noisy_line
from voxgate.tls import client_context

ScenarioName = Literal["order_status", "outage", "mixed"]
CallerSet = Literal["synthetic", "human"]
CALLER_SETS: tuple[str, ...] = ("synthetic", "human")
SCENARIOS: tuple[str, ...] = ("order_status", "outage", "mixed")
DEFAULT_VOICES: tuple[str, ...] = ("pico-en-GB", "pico-en-US")
MAX_CALLERS = 200
MAX_DURATION_S = 3600.0
SAMPLE_EVERY_S = 0.5
_DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


# ---- reports --------------------------------------------------------------------------------------


class Percentiles(BaseModel):
    n: int = 0
    p50: float | None = None
    p95: float | None = None
    max: float | None = None
    mean: float | None = None


class ServerResources(BaseModel):
    """The server process tree during the load phase (psutil; 100 % = one core)."""

    pid: int
    cpu_mean_pct: float | None = None
    cpu_max_pct: float | None = None
    rss_max_mib: float | None = None
    samples: int = 0
    cores: int = Field(default_factory=lambda: os.cpu_count() or 1)


class ClientHealth(BaseModel):
    """Whether the load generator itself kept real time: if not, its latencies are suspect."""

    cpu_mean_pct: float | None = None
    max_send_lag_ms: float = 0.0
    pacer_rebases: int = 0


class CallFailure(BaseModel):
    caller: int
    call: int
    reason: str


class BenchParams(BaseModel):
    url: str | None
    calls: int
    duration_s: float
    protocol: ProtocolName
    scenario: str
    ramp_s: float
    seed: int
    agent: str
    voices: list[str]
    started_server: bool
    line_noise_dbfs: float | None = Field(
        None, description="White noise level on the callers' lines, speech and pauses alike; None: digital silence."
    )
    callers: str = Field(
        "synthetic",
        description="synthetic: the scenario's lines in synthetic voices; human: recorded people (voxgate.testing."
        "human_callers), off-script, instead of the scenario.",
    )


class DigitReadings(BaseModel):
    """The account numbers and PINs callers of one voice read out, and how the server heard them.

    Each is read once per call (the script never repeats a line), so a reading heard exactly is one
    understood on the first try. Measured from the server's transcript of the caller, repairs of a
    short reading included: the native protocol only (a Twilio stream carries no transcripts)."""

    readings: int = Field(0, description="Account numbers and PINs read out that the server transcribed.")
    exact: int = Field(0, description="Heard exactly: the same digits, none missing or extra.")
    short: int = Field(0, description="Heard with fewer digits than were said (a dropped 'oh', a collapsed repeat).")
    calls: int = Field(0, description="Calls in which both an account number and a PIN were transcribed.")
    verified_first_try: int = Field(0, description="Of those, calls in which both were heard exactly.")

    @computed_field  # type: ignore[prop-decorator]  # pydantic's documented use on a property
    @property
    def first_try_rate(self) -> float | None:
        """verified_first_try / calls (None before any call read both out)."""
        return round(self.verified_first_try / self.calls, 4) if self.calls else None


class BenchReport(BaseModel):
    """The outcome of one voice load run."""

    params: BenchParams
    calls_total: int = 0
    calls_completed: int = 0
    calls_refused: int = 0
    calls_failed: int = 0
    turns_measured: int = 0
    cut_ins: int = Field(
        0,
        description="Turns where the agent cut in: its audio began while the caller's utterance still had words "
        "to come (see TurnReport.cut_in).",
    )
    cut_in_rate: float = Field(0.0, description="cut_ins / turns spoken by answered calls.")
    digits: dict[str, DigitReadings] = Field(
        default_factory=dict,
        description="Per caller voice: account numbers and PINs read out and how many the server heard exactly "
        "the first time (native protocol only; empty otherwise).",
    )
    digits_first_try_rate: float | None = Field(
        None, description="Calls whose account number and PIN were both heard exactly, over all voices."
    )
    outcomes: dict[str, int] = Field(
        default_factory=dict,
        description="How answered calls ended: the agent's outcome/close reason when it hung up (e.g. resolved), "
        "else caller_hung_up (the script ran out before the agent closed the call).",
    )
    voice_to_voice_ms: Percentiles = Field(default_factory=Percentiles)
    greeting_ms: Percentiles = Field(default_factory=Percentiles, description="start → first greeting audio")
    failure_reasons: dict[str, int] = Field(default_factory=dict)
    failures: list[CallFailure] = Field(default_factory=list, description="The first 50 failed calls.")
    human: HumanTurns | None = Field(None, description="With human callers: their turns, replies and words heard.")
    server_stats: dict[str, Any] | None = Field(None, description="GET /api/voice/stats at the end, if served.")
    server: ServerResources | None = None
    client: ClientHealth = Field(default_factory=ClientHealth)
    duration_s: float = 0.0
    error: str | None = None


# ---- scenarios --------------------------------------------------------------------------------------


def digits_as_words(digits: str, zero: str = "oh") -> str:
    """'11815908' → 'one one eight one five nine oh eight' (how people read numbers out)."""
    return " ".join(zero if d == "0" else _DIGIT_WORDS[int(d)] for d in digits if d.isdigit())


@dataclass(frozen=True)
class CallerProfile:
    """Who one simulated caller is: a demo customer, a voice, and how they say zero."""

    index: int
    account_number: str
    pin: str
    postcode: str
    voice: str
    zero: str


def scenario_script(name: str, profile: CallerProfile) -> list[str]:
    """The caller's lines for one scripted conversation with the Harbor agent."""

    def words(digits: str) -> str:
        return digits_as_words(digits, profile.zero)

    if name == "order_status":
        return ["where is my order", words(profile.account_number), words(profile.pin), "no thanks that's all"]
    if name == "outage":
        return ["is there an outage in my area", words(profile.postcode), "no thanks"]
    raise ValueError(f"unknown scenario '{name}' (known: {', '.join(SCENARIOS)})")


def caller_profiles(calls: int, seed: int, voices: tuple[str, ...] = DEFAULT_VOICES) -> list[CallerProfile]:
    """One profile per caller: different demo customers (seeded shuffle), voices in rotation."""
    from harbor_backend import demo_credentials

    creds = demo_credentials()
    rng = random.Random(seed)  # nosec B311: seeded, reproducible choice of demo callers, not a secret
    order = list(range(len(creds)))
    rng.shuffle(order)
    out = []
    for i in range(calls):
        c = creds[order[i % len(order)]]
        out.append(
            CallerProfile(
                i, c["account_number"], c["pin"], c["postcode"], voices[i % len(voices)], rng.choice(("oh", "zero"))
            )
        )
    return out


def pick_scenario(scenario: str, seed: int, caller: int, call: int) -> str:
    """The scenario of one call; `mixed` draws order_status or outage per call, reproducibly."""
    if scenario != "mixed":
        return scenario
    return random.Random(f"{seed}:{caller}:{call}").choice(("order_status", "outage"))  # nosec B311: seeded, reproducible choice of scenario, not a secret


# ---- the server under test ----------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on (at the moment of asking)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _http_base(url: str) -> str:
    parts = urlsplit(url if "://" in url else f"http://{url}")
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    return urlunsplit((scheme, parts.netloc, "", "", ""))


@dataclass
class DemoServer:
    """`voxgate demo` in a subprocess on free loopback ports, with a throwaway data directory."""

    startup_timeout_s: float = 240.0
    extra_env: dict[str, str] = field(default_factory=dict)
    port: int = 0
    backend_port: int = 0
    process: subprocess.Popen[bytes] | None = None
    _tmp: tempfile.TemporaryDirectory[str] | None = None
    log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="voxgate-bench-")
        data = Path(self._tmp.name)
        self.port, self.backend_port = free_port(), free_port()
        dev_port, test_port = free_port(), free_port()
        env = {
            **os.environ,
            "VOXGATE_DATA_DIR": str(data / "data"),
            "VOXGATE_VOICE_PRELOAD": "true",
            "VOXGATE_LOG_LEVEL": "warning",
            **self.extra_env,
        }
        self.log_path = data / "server.log"
        log = self.log_path.open("wb")
        self.process = subprocess.Popen(  # nosec B603: fixed argv (this interpreter, voxgate demo, int ports), no shell
            [
                sys.executable,
                "-m",
                "voxgate.cli",
                "demo",
                "--port",
                str(self.port),
                "--dev-port",
                str(dev_port),
                "--test-port",
                str(test_port),
                "--backend-port",
                str(self.backend_port),
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        await self._wait_healthy()

    async def _wait_healthy(self) -> None:
        import httpx

        deadline = time.monotonic() + self.startup_timeout_s
        async with httpx.AsyncClient(trust_env=False, timeout=2.0, verify=client_context()) as client:
            while time.monotonic() < deadline:
                assert self.process is not None  # nosec B101: type narrowing (test tooling)
                if self.process.poll() is not None:
                    raise RuntimeError(f"voxgate demo exited with {self.process.returncode}:\n{self.log_tail()}")
                try:  # up, the first release done (the prod worker serves the agent), and the demo
                    # says it is ready: the released agent loaded and its prompts rendered, work that
                    # would otherwise run under the first callers and show in their p95
                    health = await client.get(self.url + "/health")
                    if health.status_code == 200 and health.json().get("served") and self.said_ready():
                        return
                except (httpx.HTTPError, ValueError):
                    pass
                await asyncio.sleep(0.25)
        raise RuntimeError(
            f"voxgate demo did not serve the agent within {self.startup_timeout_s:g} s:\n{self.log_tail()}"
        )

    def admin_token(self) -> str | None:
        """The admin API token the demo wrote into its data directory (its CLI profile)."""
        if self._tmp is None:
            return None
        path = Path(self._tmp.name) / "data" / "demo-profile.json"
        try:
            token = json.loads(path.read_text("utf-8")).get("token")
        except (OSError, ValueError):
            return None
        return token if isinstance(token, str) else None

    def said_ready(self) -> bool:
        """Whether the demo has printed its `ready:` line."""
        if self.log_path is None or not self.log_path.exists():
            return False
        return any(line.startswith("ready: ") for line in self.log_path.read_text(errors="replace").splitlines())

    def log_tail(self, chars: int = 3000) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-chars:]

    async def stop(self) -> None:
        """SIGINT (the demo's Ctrl-C path stops the backend too), then escalate if it hangs."""
        proc = self.process
        if proc is not None and proc.poll() is None:
            import psutil

            try:
                children = psutil.Process(proc.pid).children(recursive=True)
            except psutil.Error:
                children = []
            proc.send_signal(signal.SIGINT)
            for sig_wait, escalate in ((20.0, proc.terminate), (5.0, proc.kill)):
                try:
                    await asyncio.to_thread(proc.wait, sig_wait)
                    break
                except subprocess.TimeoutExpired:
                    escalate()
            for child in children:  # only processes this server started
                try:
                    child.kill()
                except psutil.Error:
                    pass
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


@dataclass
class _Sample:
    at: float
    cpu_pct: float
    rss_bytes: int


class ProcessTreeSampler:
    """CPU % and RSS of a process and its descendants, sampled every `every_s` seconds."""

    def __init__(self, pid: int, every_s: float = SAMPLE_EVERY_S) -> None:
        import psutil

        self.pid = pid
        self.every_s = every_s
        self.samples: list[_Sample] = []
        self._procs: dict[int, psutil.Process] = {}
        self._task: asyncio.Task[None] | None = None

    def _sample(self) -> _Sample | None:
        import psutil

        try:
            root = psutil.Process(self.pid)
            tree = [root, *root.children(recursive=True)]
        except psutil.Error:
            return None
        cpu, rss = 0.0, 0
        for proc in tree:
            known = self._procs.setdefault(proc.pid, proc)
            try:
                # cpu_percent(None) measures since the previous call on the same object, so the
                # Process objects are kept; a new process's first reading is 0 by design
                cpu += known.cpu_percent(None)
                rss += known.memory_info().rss
            except psutil.Error:
                self._procs.pop(proc.pid, None)
        return _Sample(time.monotonic(), cpu, rss)

    async def _run(self) -> None:
        while True:
            sample = await asyncio.to_thread(self._sample)
            if sample is not None:
                self.samples.append(sample)
            await asyncio.sleep(self.every_s)

    def start(self) -> None:
        self._sample()  # prime cpu_percent
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def summary(self, since: float, until: float) -> ServerResources:
        window = [s for s in self.samples if since <= s.at <= until]
        out = ServerResources(pid=self.pid, samples=len(window))
        if window:
            cpu = [s.cpu_pct for s in window]
            out.cpu_mean_pct = round(float(np.mean(cpu)), 1)
            out.cpu_max_pct = round(float(np.max(cpu)), 1)
        if self.samples:
            out.rss_max_mib = round(max(s.rss_bytes for s in self.samples) / 2**20, 1)
        return out


def _auth(token: str | None) -> dict[str, str]:
    """The operator token for the server's voice stats: given, else VOXGATE_TOKEN."""
    token = token or os.environ.get("VOXGATE_TOKEN")
    return {"Authorization": f"Bearer {token}"} if token else {}


async def reset_voice_stats(http_base: str, token: str | None = None) -> bool:
    """Start the server's rolling stage figures afresh, so they cover this run only (if supported)."""
    import httpx

    try:
        async with httpx.AsyncClient(
            trust_env=False, timeout=5.0, headers=_auth(token), verify=client_context()
        ) as client:
            response = await client.delete(http_base + "/api/voice/stats")
    except httpx.HTTPError:
        return False
    return response.status_code in (200, 204)


async def fetch_voice_stats(http_base: str, token: str | None = None) -> dict[str, Any] | None:
    """The server's own per-stage figures, or None where the endpoint is not there (404) or refused."""
    import httpx

    try:
        async with httpx.AsyncClient(
            trust_env=False, timeout=5.0, headers=_auth(token), verify=client_context()
        ) as client:
            response = await client.get(http_base + "/api/voice/stats")
    except httpx.HTTPError:
        return None
    if response.status_code != 200:
        return None
    try:
        data = response.json()
    except ValueError:
        return None
    return data if isinstance(data, dict) else {"value": data}


# ---- judging calls -----------------------------------------------------------------------------------


def call_failure(report: CallReport) -> str | None:
    """Why a call counts as failed (None: it completed). Refused calls are not failures."""
    if report.refused:
        return None
    if report.error:
        return report.error
    for turn in report.turns:
        if turn.speech_end_s is None:
            if report.closed_by == "server":
                why = report.outcome or report.close_reason  # the Twilio protocol has only the close reason
                outcome = f" ({why})" if why else ""
                return f"server hung up before turn {turn.index}{outcome}"
            return f"turn {turn.index} was never said"
        if not turn.replied or turn.reply_received_ms <= 0:
            return f"no reply to turn {turn.index}"
    return None


def _reason_key(reason: str) -> str:
    # group reasons that differ only in numbers/ids, so the histogram stays readable
    return "".join("#" if ch.isdigit() else ch for ch in reason)[:120]


def percentiles(values: list[float]) -> Percentiles:
    if not values:
        return Percentiles()
    arr = np.asarray(values, dtype=np.float64)
    return Percentiles(
        n=int(arr.size),
        p50=round(float(np.percentile(arr, 50)), 1),
        p95=round(float(np.percentile(arr, 95)), 1),
        max=round(float(arr.max()), 1),
        mean=round(float(arr.mean()), 1),
    )


# ---- the benchmark ------------------------------------------------------------------------------------


@dataclass
class CallRecord:
    """One simulated call of a bench run: which caller, its how-many-th call, the scenario, and its report."""

    caller: int
    call: int
    scenario: str
    report: CallReport
    profile: CallerProfile | None = None  # who called (voice, the digits read out); None: not a scripted caller


async def run_voice_bench(
    url: str | None,
    calls: int,
    duration_s: float,
    protocol: ProtocolName = "twilio",
    scenario: str = "order_status",
    ramp_s: float = 2.0,
    seed: int = 7,
    *,
    agent: str = "harbor-support",
    voices: tuple[str, ...] = DEFAULT_VOICES,
    gap_ms: int = 600,
    call_timeout_s: float = 90.0,
    redial_pause_s: float = 1.0,
    server_env: dict[str, str] | None = None,
    startup_timeout_s: float = 240.0,
    line_noise_dbfs: float | None = None,
    callers: str = "synthetic",
) -> BenchReport:
    """Run `calls` concurrent callers for `duration_s` seconds and summarise what they measured.

    `callers="human"`: each call says a few recordings of people (`human_callers`) instead of the
    scenario's synthetic lines.

    `url=None` starts `voxgate demo` on loopback and measures its CPU and memory; otherwise
    `url` (http or ws, loopback only) must already serve the Harbor agent. Callers start
    `ramp_s / calls` apart; each redials as soon as its call ends (after `redial_pause_s` when
    it was refused or failed, as a person would). Calls still running at the end get
    `call_timeout_s` to finish.
    """
    if not 1 <= calls <= MAX_CALLERS:
        raise ValueError(f"calls must be 1..{MAX_CALLERS}")
    if not 0 < duration_s <= MAX_DURATION_S:
        raise ValueError(f"duration_s must be in (0, {MAX_DURATION_S:g}]")
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario '{scenario}' (known: {', '.join(SCENARIOS)})")
    if callers not in CALLER_SETS:
        raise ValueError(f"unknown caller set '{callers}' (known: {', '.join(CALLER_SETS)})")
    if url is not None:
        host = urlsplit(url if "://" in url else f"http://{url}").hostname or ""
        if not _is_loopback(host):
            raise ValueError(f"the voice benchmark only targets loopback servers, not {host!r}")

    report = BenchReport(
        params=BenchParams(
            url=url,
            calls=calls,
            duration_s=duration_s,
            protocol=protocol,
            scenario=scenario,
            ramp_s=ramp_s,
            seed=seed,
            agent=agent,
            voices=list(voices),
            started_server=url is None,
            line_noise_dbfs=line_noise_dbfs,
            callers=callers,
        )
    )
    humans = human_speech() if callers == "human" else None
    degradation = noisy_line(line_noise_dbfs)  # what run_call gives each line, so the cache is hit
    profiles = caller_profiles(calls, seed, voices)
    kinds = ("order_status", "outage") if scenario == "mixed" else (scenario,)
    lines = {(text, p.voice) for p in profiles for kind in kinds for text in scenario_script(kind, p)}

    def presynthesise() -> None:
        if humans is not None:
            for said in humans:
                prepare_human(said.path, said.id, protocol, degradation)
            return
        for text, voice in sorted(lines):
            prepare_utterance(text, voice, protocol, degradation)

    # every line is synthesised and wire-encoded now, so no caller spends CPU on it mid-call
    await asyncio.to_thread(presynthesise)

    server: DemoServer | None = None
    sampler: ProcessTreeSampler | None = None
    try:
        if url is None:
            server = DemoServer(startup_timeout_s=startup_timeout_s, extra_env=dict(server_env or {}))
            try:
                await server.start()
            except RuntimeError as exc:
                report.error = str(exc)
                return report
            url = server.url
            assert server.process is not None  # nosec B101: type narrowing (test tooling)
            sampler = ProcessTreeSampler(server.process.pid)
            sampler.start()
        http_base = _http_base(url)
        token = server.admin_token() if server is not None else None
        await reset_voice_stats(http_base, token)
        ws_base = http_base.replace("http://", "ws://", 1).replace("https://", "wss://", 1)
        records = await _drive(
            ws_base,
            profiles,
            calls,
            duration_s,
            protocol,
            scenario,
            ramp_s,
            seed,
            agent,
            gap_ms,
            call_timeout_s,
            redial_pause_s,
            report,
            sampler,
            line_noise_dbfs,
            humans,
        )
        summarise(report, records)
        if humans is not None:
            report.human = HumanTurns()
            by_label = {said.id: said for said in humans}
            for rec in records:
                if not rec.report.refused:
                    report.human.add(rec.report, by_label)
        report.server_stats = await fetch_voice_stats(http_base, token)
    finally:
        if sampler is not None:
            await sampler.stop()
        if server is not None:
            await server.stop()
    return report


async def _drive(
    ws_base: str,
    profiles: list[CallerProfile],
    calls: int,
    duration_s: float,
    protocol: ProtocolName,
    scenario: str,
    ramp_s: float,
    seed: int,
    agent: str,
    gap_ms: int,
    call_timeout_s: float,
    redial_pause_s: float,
    report: BenchReport,
    sampler: ProcessTreeSampler | None,
    line_noise_dbfs: float | None = None,
    humans: list[HumanUtterance] | None = None,
) -> list[CallRecord]:
    records: list[CallRecord] = []
    loop = asyncio.get_running_loop()
    started = loop.time()
    deadline = started + duration_s
    mono_start = time.monotonic()
    import psutil

    me = psutil.Process()
    me.cpu_percent(None)  # the client's own CPU is measured over the load phase

    async def caller(profile: CallerProfile) -> None:
        await asyncio.sleep(profile.index * ramp_s / calls)
        n = 0
        while loop.time() < deadline:
            if humans is not None:
                degradation = noisy_line(line_noise_dbfs)
                picks = human_script(humans, seed, profile.index, n)
                kind, says, voice, who = "human", None, HUMAN_VOICE, None
                prepared = [prepare_human(u.path, u.id, protocol, degradation) for u in picks]
            else:
                kind = pick_scenario(scenario, seed, profile.index, n)
                says, voice, who, prepared = scenario_script(kind, profile), profile.voice, profile, None
            result = await run_call(
                ws_base,
                says=says,
                protocol=protocol,
                agent=agent,
                voice=voice,
                gap_ms=gap_ms,
                timeout_s=call_timeout_s,
                transcribe=False,
                line_noise_dbfs=line_noise_dbfs,
                prepared=prepared,
            )
            records.append(CallRecord(profile.index, n, kind, result, who))
            n += 1
            if result.refused or call_failure(result) is not None:
                await asyncio.sleep(redial_pause_s)

    tasks = [asyncio.create_task(caller(p)) for p in profiles]
    # a call in progress at the deadline finishes on its own timeout; the margin covers hang-up
    done, pending = await asyncio.wait(tasks, timeout=duration_s + ramp_s + call_timeout_s + 15.0)
    for task in pending:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for task in done:
        exc = task.exception()
        if exc is not None:
            report.failures.append(CallFailure(caller=-1, call=-1, reason=f"caller crashed: {exc!r}"))
    report.duration_s = round(loop.time() - started, 2)
    report.client.cpu_mean_pct = round(float(me.cpu_percent(None)), 1)
    if sampler is not None:
        report.server = sampler.summary(mono_start, time.monotonic())
    return records


def summarise(report: BenchReport, records: list[CallRecord]) -> None:
    """Fill `report`'s counts, percentiles, cut-ins and failure reasons from the calls made."""
    v2v: list[float] = []
    greeting: list[float] = []
    reasons: Counter[str] = Counter()
    outcomes: Counter[str] = Counter()
    spoken = 0
    for rec in records:
        r = rec.report
        report.calls_total += 1
        report.client.max_send_lag_ms = max(report.client.max_send_lag_ms, r.timings.max_send_lag_ms)
        report.client.pacer_rebases += r.timings.pacer_rebases
        if r.refused:
            report.calls_refused += 1
            continue
        if r.timings.greeting_first_audio_ms is not None:
            greeting.append(r.timings.greeting_first_audio_ms)
        v2v.extend(t.voice_to_voice_ms for t in r.turns if t.voice_to_voice_ms is not None)
        spoken += sum(1 for t in r.turns if t.speech_start_s is not None and t.dtmf is None)
        report.cut_ins += sum(1 for t in r.turns if t.cut_in)
        if rec.profile is not None:
            _count_digits(report.digits, rec.profile, r)
        if r.closed_by == "server":
            outcomes[r.outcome or r.close_reason or "server_closed"] += 1
        elif r.closed_by == "caller":
            outcomes["caller_hung_up"] += 1
        reason = call_failure(r)
        if reason is None:
            report.calls_completed += 1
            continue
        report.calls_failed += 1
        reasons[_reason_key(reason)] += 1
        if len(report.failures) < 50:
            report.failures.append(CallFailure(caller=rec.caller, call=rec.call, reason=reason))
    report.turns_measured = len(v2v)
    report.cut_in_rate = round(report.cut_ins / spoken, 4) if spoken else 0.0
    report.voice_to_voice_ms = percentiles(v2v)
    report.greeting_ms = percentiles(greeting)
    report.failure_reasons = dict(reasons.most_common())
    report.outcomes = dict(outcomes.most_common())
    calls = sum(d.calls for d in report.digits.values())
    verified = sum(d.verified_first_try for d in report.digits.values())
    report.digits_first_try_rate = round(verified / calls, 4) if calls else None


def _count_digits(by_voice: dict[str, DigitReadings], profile: CallerProfile, call: CallReport) -> None:
    """Add one call's account-number and PIN readings to its voice's counts (those the server transcribed)."""
    said = {
        digits_as_words(profile.account_number, profile.zero): profile.account_number,
        digits_as_words(profile.pin, profile.zero): profile.pin,
    }
    heard: dict[str, bool] = {}
    for turn in call.turns:
        digits = said.get(turn.said or "")
        if digits is None or turn.server_heard is None:
            continue
        # a voice appears only once something it read out was transcribed: no transcripts, no figures
        counts = by_voice.setdefault(profile.voice, DigitReadings())
        got = heard_digits(turn.server_heard)
        counts.readings += 1
        counts.exact += got == digits
        counts.short += len(got) < len(digits)
        heard[digits] = got == digits
    if len(heard) == 2:
        counts = by_voice[profile.voice]
        counts.calls += 1
        counts.verified_first_try += all(heard.values())
