"""OpenTelemetry traces: one span per conversation, one per turn, and per-stage spans of voice turns.

Tracing is off by default: until an exporter is configured, ``tracer()`` hands out the API's
no-op tracer and a span costs next to nothing. ``VOXGATE_OTEL_EXPORTER=otlp`` sends spans over
OTLP/HTTP (protobuf) to ``VOXGATE_OTEL_ENDPOINT`` (default: the exporter's own default,
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` / ``http://localhost:4318/v1/traces``); ``console`` prints
them as JSON lines. Anything that records spans in-process (a test, an embedding application)
can ``add_processor()`` its own span processor.

voxgate keeps its own ``TracerProvider`` rather than installing the process-global one, so an
application that embeds voxgate keeps its own tracing set-up.

Span names and attributes (all prefixed ``voxgate.``):

- ``voxgate.conversation`` (one per session, voice or chat): session id, agent, version,
  environment, channel; at the end the outcome and escalation reason.
- ``voxgate.turn`` (child): the turn number, intent, confidence and dialogue state — never the
  caller's words (they hold personal data; transcripts are stored redacted instead).
- ``voxgate.voice_turn`` (child, voice only): from the end of the caller's speech to the first
  audio of the reply, with children ``voxgate.endpoint``, ``voxgate.asr``, ``voxgate.nlu`` and
  ``voxgate.tts`` timed from the pipeline's stage timestamps.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.trace import Span, Status, StatusCode, Tracer

from voxgate.errors import InvalidError

log = logging.getLogger("voxgate.tracing")

EXPORTERS = ("none", "otlp", "console")
_lock = threading.Lock()
_provider: TracerProvider | None = None
_processors: list[SpanProcessor] = []
_NOOP = trace.NoOpTracer()


class TracingError(InvalidError):
    """A tracing setting that cannot be used."""


def _ensure_provider() -> TracerProvider:
    global _provider
    if _provider is None:
        from importlib.metadata import PackageNotFoundError, version

        try:
            ours = version("voxgate")
        except PackageNotFoundError:  # running from a source tree
            ours = "0"
        _provider = TracerProvider(resource=Resource.create({"service.name": "voxgate", "service.version": ours}))
    return _provider


def add_processor(processor: SpanProcessor) -> None:
    """Send every span voxgate ends from now on to this processor as well."""
    with _lock:
        _ensure_provider().add_span_processor(processor)
        _processors.append(processor)


def exporter_for(name: str, endpoint: str | None = None) -> SpanExporter | None:
    """The span exporter a setting names; None for ``none``."""
    if name == "none":
        return None
    if name == "console":
        return ConsoleSpanExporter()
    if name == "otlp":
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError as exc:  # pragma: no cover - the lock installs it
            raise TracingError(
                f"VOXGATE_OTEL_EXPORTER=otlp needs opentelemetry-exporter-otlp-proto-http installed ({exc})"
            ) from None
        return OTLPSpanExporter(endpoint=endpoint) if endpoint else OTLPSpanExporter()
    raise TracingError(f"unknown trace exporter {name!r} (use one of {', '.join(EXPORTERS)})")


_configured: tuple[str, str | None] | None = None


def configure(exporter: str, endpoint: str | None = None) -> bool:
    """Turn on export as the settings say (once per process and setting); True when spans are exported."""
    global _configured
    span_exporter = exporter_for(exporter, endpoint)
    if span_exporter is None:
        return bool(_processors)
    with _lock:
        if _configured == (exporter, endpoint):
            return True
        _configured = (exporter, endpoint)
    add_processor(BatchSpanProcessor(span_exporter))
    log.info("exporting traces with %s%s", exporter, f" to {endpoint}" if endpoint else "")
    return True


def flush(timeout_ms: int = 5000) -> None:
    """Push out spans still buffered (server shutdown, tests)."""
    if _provider is not None:
        _provider.force_flush(timeout_ms)


def tracer() -> Tracer:
    """voxgate's tracer, or the no-op tracer while nothing consumes spans."""
    if not _processors:
        return _NOOP
    return _ensure_provider().get_tracer("voxgate")


def clock_offset_ns() -> int:
    """Epoch nanoseconds minus ``time.perf_counter()`` nanoseconds, read now.

    The two clocks are read one after the other, so each reading differs by some hundreds
    of nanoseconds: timestamps that must keep their order (a stage inside its turn) are
    converted with one offset.
    """
    return time.time_ns() - int(time.perf_counter() * 1e9)


def wall_ns(perf: float, offset_ns: int | None = None) -> int:
    """A ``time.perf_counter()`` reading as epoch nanoseconds (what span timestamps are)."""
    return (clock_offset_ns() if offset_ns is None else offset_ns) + int(perf * 1e9)


class ConversationTrace:
    """The spans of one session: the conversation span stays open until the session ends."""

    def __init__(self, *, session_id: str, agent: str, version: str, environment: str | None, channel: str):
        self._tracer = tracer()
        self._on = not isinstance(self._tracer, trace.NoOpTracer)
        self.span: Span = self._tracer.start_span(
            "voxgate.conversation",
            attributes={
                "voxgate.session_id": session_id,
                "voxgate.agent": agent,
                "voxgate.agent_version": version,
                "voxgate.environment": environment or "",
                "voxgate.channel": channel,
            },
        )
        self._context = trace.set_span_in_context(self.span)
        self.ended = False

    @property
    def recording(self) -> bool:
        """Whether spans are kept (tracing is on); turns after the conversation span ended still count."""
        return self._on

    def turn(self, number: int, *, start_ns: int, end_ns: int, attributes: dict[str, Any]) -> None:
        """A dialogue turn, timed by the caller of this method."""
        if not self.recording:
            return
        span = self._tracer.start_span(
            "voxgate.turn",
            context=self._context,
            start_time=start_ns,
            attributes={"voxgate.turn": number, **_clean(attributes)},
        )
        span.end(end_time=end_ns)

    def voice_turn(self, timing: dict[str, float], attributes: dict[str, Any]) -> None:
        """Stage spans of one voice turn from perf_counter timestamps (0 where a stage did not happen)."""
        if not self.recording:
            return
        start, end = timing.get("speech_end_at", 0.0), timing.get("first_audio_at", 0.0)
        if not start or not end or end < start:
            return
        offset = clock_offset_ns()
        parent = self._tracer.start_span(
            "voxgate.voice_turn",
            context=self._context,
            start_time=wall_ns(start, offset),
            attributes=_clean(attributes),
        )
        inner = trace.set_span_in_context(parent)
        stages = (
            ("voxgate.endpoint", "speech_end_at", "endpoint_at"),
            ("voxgate.asr", "speech_end_at", "asr_final_at"),
            ("voxgate.nlu", "asr_final_at", "intent_at"),
            ("voxgate.tts", "intent_at", "first_audio_at"),
        )
        for name, a, b in stages:
            t0, t1 = timing.get(a, 0.0), timing.get(b, 0.0)
            if t0 and t1 and t1 >= t0:
                span = self._tracer.start_span(name, context=inner, start_time=wall_ns(t0, offset))
                span.end(end_time=wall_ns(t1, offset))
        parent.end(end_time=wall_ns(end, offset))

    def end(self, *, outcome: str | None, escalation_reason: str | None = None, error: str | None = None) -> None:
        if self.ended:
            return
        self.ended = True
        if self.recording:
            self.span.set_attribute("voxgate.outcome", outcome or "")
            if escalation_reason:
                self.span.set_attribute("voxgate.escalation_reason", escalation_reason)
            if error:
                self.span.set_status(Status(StatusCode.ERROR, error))
        self.span.end()


def _clean(attributes: dict[str, Any]) -> dict[str, Any]:
    """OpenTelemetry attributes are scalars; drop Nones."""
    out: dict[str, Any] = {}
    for key, value in attributes.items():
        if value is None:
            continue
        out[key if key.startswith("voxgate.") else f"voxgate.{key}"] = (
            value if isinstance(value, (str, bool, int, float)) else str(value)
        )
    return out
