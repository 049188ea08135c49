"""OpenTelemetry traces: off by default, exported over real OTLP/HTTP when turned on.

The export test runs voxgate in a child process (tracing set-up is per process) with
VOXGATE_OTEL_EXPORTER=otlp pointed at a receiver on loopback, holds a chat conversation, and
decodes what arrived with the OTLP protobuf definitions.
"""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.helpers.paths import HARBOR_AGENT, ROOT


def test_tracing_is_off_by_default() -> None:
    code = (
        "from voxgate import tracing\n"
        "from opentelemetry.trace import NoOpTracer\n"
        "assert isinstance(tracing.tracer(), NoOpTracer), tracing.tracer()\n"
        "t = tracing.ConversationTrace(session_id='s', agent='a', version='1', environment='dev', channel='text')\n"
        "assert not t.recording\n"
        "assert tracing.configure('none') is False\n"
        "print('off')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "off"


def test_an_unknown_exporter_is_a_clear_error() -> None:
    from voxgate.tracing import TracingError, exporter_for

    with pytest.raises(TracingError, match="unknown trace exporter 'zipkin'"):
        exporter_for("zipkin")


class _Receiver(http.server.BaseHTTPRequestHandler):
    requests: list[ExportTraceServiceRequest] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        type(self).requests.append(request)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture()
def receiver() -> Iterator[str]:
    _Receiver.requests = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1/traces"
    server.shutdown()


CHAT = """
import json, sys
from fastapi.testclient import TestClient
from voxgate.api.app import create_app
from voxgate.config import Settings
from voxgate.bundle import load_bundle

settings = Settings(data_dir=sys.argv[2], otel_exporter="otlp", otel_endpoint=sys.argv[3])
with TestClient(create_app(settings, [load_bundle(sys.argv[1])])) as client:
    sid = client.post("/api/agents/harbor-support/sessions", json={}).json()["session_id"]
    client.post(f"/api/sessions/{sid}/turns", json={"text": "what are your opening hours"})
    reply = client.post(f"/api/sessions/{sid}/turns", json={"text": "I want to talk to a real person, my card number is 4539 1488 0343 6467"})
    print(json.dumps({"session_id": sid, "ended": reply.json().get("ended")}))
"""


def _attrs(span: Any) -> dict[str, Any]:
    out = {}
    for kv in span.attributes:
        value = kv.value
        out[kv.key] = getattr(value, value.WhichOneof("value"))
    return out


def test_a_chat_conversation_is_exported_over_otlp(receiver: str, tmp_path: Any) -> None:
    env = {**os.environ, "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}
    out = subprocess.run(
        [sys.executable, "-c", CHAT, str(HARBOR_AGENT), str(tmp_path), receiver],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=ROOT,
        env=env,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    session_id = json.loads(out.stdout.strip().splitlines()[-1])["session_id"]

    spans = [
        span
        for request in _Receiver.requests
        for rs in request.resource_spans
        for ss in rs.scope_spans
        for span in ss.spans
    ]
    resources = [_attrs(rs.resource) for request in _Receiver.requests for rs in request.resource_spans]
    assert resources and resources[0]["service.name"] == "voxgate"
    conversations = [s for s in spans if s.name == "voxgate.conversation"]
    assert len(conversations) == 1
    conv = conversations[0]
    attrs = _attrs(conv)
    assert attrs["voxgate.session_id"] == session_id
    assert attrs["voxgate.agent"] == "harbor-support"
    assert attrs["voxgate.channel"] == "http"  # the REST chat API
    assert attrs["voxgate.outcome"] == "escalated"
    assert attrs["voxgate.escalation_reason"] == "caller_request"
    turns = [s for s in spans if s.name == "voxgate.turn"]
    assert len(turns) == 2
    assert all(t.trace_id == conv.trace_id and t.parent_span_id == conv.span_id for t in turns)
    assert all(conv.start_time_unix_nano <= t.start_time_unix_nano <= t.end_time_unix_nano for t in turns)
    first, second = sorted(turns, key=lambda t: t.start_time_unix_nano)
    assert _attrs(first)["voxgate.turn"] == 1 and _attrs(second)["voxgate.turn"] == 2
    assert not _attrs(first)["voxgate.escalated"] and _attrs(second)["voxgate.escalated"]
    # spans carry no words the caller said: the card number went nowhere near the exporter
    raw = b"".join(r.SerializeToString() for r in _Receiver.requests)
    assert b"4539" not in raw and b"opening hours" not in raw


def test_voice_stage_spans_lie_within_their_turn_to_the_nanosecond() -> None:
    """Stage spans that start when the turn starts must not start before it: every timestamp of
    one turn is converted with the same clock offset (two separate clock readings differ by
    hundreds of nanoseconds, which once put a stage 160 ns before its turn)."""
    import time

    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from voxgate import tracing

    exporter = InMemorySpanExporter()
    tracing.add_processor(SimpleSpanProcessor(exporter))
    try:
        conv = tracing.ConversationTrace(session_id="s", agent="a", version="1", environment="dev", channel="voice")
        for _ in range(300):
            t = time.perf_counter()
            conv.voice_turn(
                {
                    "speech_end_at": t,
                    "endpoint_at": t + 0.35,
                    "asr_final_at": t + 0.36,
                    "intent_at": t + 0.37,
                    "first_audio_at": t + 0.45,
                },
                {},
            )
        conv.end(outcome="resolved")
        spans = exporter.get_finished_spans()
    finally:
        exporter.shutdown()  # later tests' spans go nowhere
    turns = {s.context.span_id: s for s in spans if s.name == "voxgate.voice_turn"}
    stages = [s for s in spans if s.parent is not None and s.parent.span_id in turns]
    assert len(turns) == 300 and len(stages) == 4 * 300
    for stage in stages:
        turn = turns[stage.parent.span_id]
        assert turn.start_time <= stage.start_time <= stage.end_time <= turn.end_time
    endpoint = [s for s in stages if s.name == "voxgate.endpoint"]
    assert all(s.start_time == turns[s.parent.span_id].start_time for s in endpoint)
