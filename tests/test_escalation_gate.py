"""The escalation gate against the real Harbor agent and backend, and against sabotaged copies."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest

from voxgate.bundle import load_bundle
from voxgate.bundle.models import BundleSource
from voxgate.runtime.engine import AgentRuntime
from voxgate.testing.escalation import (
    MISSING,
    FieldCheck,
    format_side_by_side,
    plan_escalation_cases,
    run_escalation_gate,
    unified_packet_diff,
)
from voxgate.testing.results import SuiteResult

HARBOR_TRIGGERS = {"caller_request", "misunderstandings", "verification_failed", "action_failed", "abusive_language"}


def _gate(bundle: BundleSource, credentials: list[dict[str, str]], embedder: Any) -> SuiteResult:
    def factory() -> AgentRuntime:
        return AgentRuntime(bundle, environment="test", embedder=embedder)

    return asyncio.run(run_escalation_gate(bundle, runtime_factory=factory, fixtures=credentials))


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def test_harbor_escalates_with_context_for_every_declared_trigger(
    harbor_backend: object, harbor_bundle: BundleSource, credentials: list[dict[str, str]], embedder: Any
) -> None:
    suite = _gate(harbor_bundle, credentials, embedder)
    assert {c.category for c in suite.cases} == HARBOR_TRIGGERS
    for case in suite.cases:
        assert case.passed, f"{case.name}:\n" + "\n".join(case.failures)
        expected, actual = case.details["expected"], case.details["actual"]
        assert expected.keys() == actual.keys()
        assert {
            "queue",
            "reason",
            "identity.account_number",
            "intents",
            "summary",
            "transcript.caller",
            "secrets",
        } <= expected.keys()
        assert actual["secrets"] == []
    by_name = {c.name: c for c in suite.cases}
    human = by_name["caller_request:talk_to_human"].details
    assert human["expected"]["identity.verified"] is True
    assert human["actual"]["identity.customer_id"] == credentials[0]["customer_id"]
    assert human["actual"]["slots.amount"] == 23.5
    assert "talk_to_human" in human["actual"]["intents"]
    failed_login = by_name["verification_failed"].details
    assert failed_login["actual"]["queue"] == "security"  # reason_queues in agent.yaml
    assert failed_login["actual"]["identity.customer_id"] is None
    assert failed_login["actual"]["trigger_turns"] == 3
    # no PIN, right or wrong, reaches the stored evidence
    pins = {c["pin"] for c in credentials[:5]}
    evidence = repr(suite.to_dict())
    assert not any(re.search(rf"(?<!\d){p}(?!\d)", evidence) for p in pins)
    assert 'failures="0"' in suite.to_junit_xml()


def test_packet_without_identity_fails_with_a_readable_diff(
    harbor_backend: object, agent_copy: Path, credentials: list[dict[str, str]], embedder: Any
) -> None:
    _edit(agent_copy / "agent.yaml", "context_fields: [identity, verified,", "context_fields: [verified,")
    suite = _gate(load_bundle(agent_copy), credentials, embedder)
    assert suite.cases and suite.passed_count == 0
    case = next(c for c in suite.cases if c.name.startswith("caller_request"))
    message = case.failures[0]
    assert "identity.account_number" in message and "identity.customer_id" in message
    row = next(line for line in message.splitlines() if line.startswith("identity.account_number"))
    assert f'"{credentials[0]["account_number"]}"' in row and MISSING in row  # side by side
    assert case.details["actual"]["identity.account_number"] == MISSING
    assert '-  "identity.account_number": "' in case.details["diff"]
    assert "intents" not in message.split("\n")[0]  # fields that held are not blamed


@pytest.mark.parametrize("dropped, field", [("transcript", "transcript.caller"), ("summary", "summary")])
def test_dropping_a_packet_field_names_it(
    harbor_backend: object, agent_copy: Path, credentials: list[dict[str, str]], embedder: Any, dropped: str, field: str
) -> None:
    _edit(agent_copy / "agent.yaml", f", {dropped}", "")
    suite = _gate(load_bundle(agent_copy), credentials, embedder)
    for case in suite.cases:
        assert not case.passed
        assert case.details["actual"][field] == MISSING
        assert field in case.failures[0].splitlines()[0]


def test_a_new_escalating_topic_gets_its_own_case(
    harbor_backend: object, agent_copy: Path, credentials: list[dict[str, str]], embedder: Any
) -> None:
    (agent_copy / "topics" / "cancel_line.yaml").write_text(
        "name: cancel_line\n"
        "requires_verification: true\n"
        "triggers: [I want to cancel my phone line, close my line please, cancel my mobile line]\n"
        "slots:\n"
        "  line_digits:\n"
        "    type: digits\n"
        "    length: 4\n"
        "    prompt: What are the last four digits of the line?\n"
        "steps:\n"
        "  - ask: line_digits\n"
        "  - escalate: {reason: retention, queue: billing}\n"
    )
    _edit(agent_copy / "agent.yaml", "abusive_language: true\n  context", "abusive_language: false\n  context")
    _edit(agent_copy / "agent.yaml", "    - I want to cancel my contract\n", "")
    bundle = load_bundle(agent_copy)
    names = [c.name for c in plan_escalation_cases(bundle)]
    assert "topic:cancel_line" in names and "abusive_language" not in names
    suite = _gate(bundle, credentials, embedder)
    case = next(c for c in suite.cases if c.name == "topic:cancel_line")
    assert case.passed, "\n".join(case.failures)
    assert case.details["actual"]["reason"] == "retention"
    assert case.details["actual"]["queue"] == "billing"
    assert case.details["actual"]["slots.line_digits"] == "2468"


def test_a_verifying_agent_needs_fixture_customers(harbor_bundle: BundleSource, embedder: Any) -> None:
    with pytest.raises(ValueError, match="fixture customers"):
        _gate(harbor_bundle, [], embedder)


def test_side_by_side_table_and_unified_diff() -> None:
    checks = [
        FieldCheck("identity.account_number", "11815908", MISSING, False),
        FieldCheck("slots.amount", 23.5, 2.35, False),
    ]
    table = format_side_by_side(checks).splitlines()
    assert table[0].split(" | ")[0].strip() == "field" and "packet on the queue" in table[0]
    assert set(table[1]) <= {"-", "+"}
    assert table[2].startswith("identity.account_number") and table[2].endswith(MISSING)
    assert '"11815908"' in table[2]
    diff = unified_packet_diff({"slots.amount": 23.5}, {"slots.amount": 2.35})
    assert '-  "slots.amount": 23.5' in diff and '+  "slots.amount": 2.35' in diff
