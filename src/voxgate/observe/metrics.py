"""Prometheus metrics for one worker: turn latency histograms by stage, calls, sessions by outcome, gates.

Latencies are observed as voice turns complete (the pipeline's per-turn timing summary);
gauges and totals that the database or the worker already know (active calls, capacity,
sessions by outcome, gate runs by result) are read at scrape time, so nothing has to be
counted twice. Each app gets its own registry (several apps can live in one test process).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from voxgate.store.incident_models import IncidentRow
from voxgate.store.models import GateRunRow, SessionRow

#: turn stages measured by the voice pipeline (ms from the end of the caller's speech)
STAGES = ("endpoint_ms", "asr_final_ms", "intent_ms", "first_tts_ms", "voice_to_voice_ms")
BUCKETS_S = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.2, 1.5, 2.0, 3.0, 5.0)


class _WorkerCollector(Collector):
    def __init__(self, state: Any):
        self.state = state

    def collect(self) -> Iterator[Metric]:
        state = self.state
        env = state.settings.environment
        active = GaugeMetricFamily(
            "voxgate_active_calls", "Voice calls in progress on this worker.", labels=["environment"]
        )
        active.add_metric([env], state.admission.active)
        yield active
        capacity = GaugeMetricFamily(
            "voxgate_call_capacity", "Concurrent calls this worker accepts.", labels=["environment"]
        )
        capacity.add_metric([env], state.admission.capacity)
        yield capacity
        refused = CounterMetricFamily(
            "voxgate_calls_refused", "Calls refused because the worker was full.", labels=["environment"]
        )
        refused.add_metric([env], state.admission.refused)
        yield refused
        live = GaugeMetricFamily("voxgate_live_sessions", "Conversations held in memory.", labels=["environment"])
        live.add_metric([env], len(state.sessions))
        yield live
        with state.db.orm() as orm:
            outcomes = orm.execute(
                select(SessionRow.environment, SessionRow.agent, SessionRow.outcome, func.count()).group_by(
                    SessionRow.environment, SessionRow.agent, SessionRow.outcome
                )
            ).all()
            gate_rows = orm.execute(
                select(GateRunRow.agent, GateRunRow.gate, GateRunRow.status, func.count()).group_by(
                    GateRunRow.agent, GateRunRow.gate, GateRunRow.status
                )
            ).all()
            incident_rows = orm.execute(
                select(IncidentRow.environment, IncidentRow.rule, IncidentRow.status, func.count()).group_by(
                    IncidentRow.environment, IncidentRow.rule, IncidentRow.status
                )
            ).all()
        sessions = CounterMetricFamily(
            "voxgate_sessions",
            "Stored sessions by outcome (open ones: outcome=open).",
            labels=["environment", "agent", "outcome"],
        )
        for environment, agent, outcome, n in outcomes:
            sessions.add_metric([environment, agent, outcome or "open"], n)
        yield sessions
        gates = CounterMetricFamily(
            "voxgate_gate_runs", "Pre-production gate runs by result.", labels=["agent", "gate", "status"]
        )
        for agent, gate, status, n in gate_rows:
            gates.add_metric([agent, gate, status], n)
        yield gates
        firing = GaugeMetricFamily(
            "voxgate_alerts_firing",
            "Alert rules with an incident not yet resolved (open, acknowledged or mitigated).",
            labels=["environment", "rule"],
        )
        incidents = GaugeMetricFamily("voxgate_incidents", "Incidents by status.", labels=["environment", "status"])
        unresolved: dict[tuple[str, str], int] = {}
        by_status: dict[tuple[str, str], int] = {}
        for environment, rule, status, n in incident_rows:
            by_status[(environment, status)] = by_status.get((environment, status), 0) + n
            if status != "resolved":
                unresolved[(environment, rule)] = unresolved.get((environment, rule), 0) + n
        for (environment, rule), n in sorted(unresolved.items()):
            firing.add_metric([environment, rule], 1 if n else 0)
        for (environment, status), n in sorted(by_status.items()):
            incidents.add_metric([environment, status], n)
        yield firing
        yield incidents


class WorkerMetrics:
    """The registry behind `GET /metrics`, plus the histograms the voice pipeline feeds."""

    def __init__(self, state: Any):
        self.registry = CollectorRegistry()
        self.turn_latency = Histogram(
            "voxgate_turn_latency_seconds",
            "Voice turn latency by stage, from the end of the caller's speech.",
            ["stage"],
            buckets=BUCKETS_S,
            registry=self.registry,
        )
        self.registry.register(_WorkerCollector(state))
        # the live-agent desk (handoff/desk.py)
        self.handoff_failures = Counter(
            "voxgate_handoff_failures",
            "Handoffs to a person that failed or could not start, by typed reason.",
            ["reason"],
            registry=self.registry,
        )
        self.handoff_outcomes = Counter(
            "voxgate_handoff_outcomes",
            "Handoffs by how they ended: wrapped_up (a person took the caller), "
            "fallback_callback, fallback_message or failed.",
            ["queue", "outcome"],
            registry=self.registry,
        )
        self.handoff_wait = Histogram(
            "voxgate_handoff_wait_seconds",
            "From escalation to a desk agent accepting.",
            ["queue"],
            buckets=(1, 2, 5, 10, 20, 30, 60, 120, 300),
            registry=self.registry,
        )

    def observe_turn(self, summary: dict[str, Any]) -> None:
        for stage in STAGES:
            value = summary.get(stage)
            if value is not None:
                self.turn_latency.labels(stage=stage.removesuffix("_ms")).observe(float(value) / 1000.0)

    def render(self) -> bytes:
        return generate_latest(self.registry)
