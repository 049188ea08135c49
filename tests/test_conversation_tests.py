"""Conversation tests (tests/*.yaml): the Harbor suite against the real backend, by text and by
voice, sabotaged agents that must fail readably, bad test files named by path:line, and reports."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from voxgate.bundle import BundleError, load_bundle
from voxgate.cli import test as cli_test
from voxgate.testing.conversations import (
    ConversationTestError,
    caller_voice_for,
    fill_placeholders,
    run_conversation_tests,
)

VOICE_SUBSET = [
    "order status, verified by speech",
    "known outage in the caller's postcode",
    "store opening hours from the knowledge base",
    "verified caller asks for a person and the context travels",
]


@pytest.fixture(scope="module")
def harbor_fixtures(credentials: list[dict[str, str]]) -> dict[str, Any]:
    """Harbor's fixture provider: its deterministic customers and outages (test-side, not library code)."""
    from voxgate.testing.conversations import load_fixtures

    return {"customer": credentials, **load_fixtures({"outage": "harbor_backend.data:draw_outages"})}


def line_of(path: Path, text: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), start=1) if text in line)


def cli(*args: str) -> Any:
    app = typer.Typer()
    app.command()(cli_test.test_command)
    return CliRunner().invoke(app, list(args))


# ---- the Harbor suite -----------------------------------------------------------------------------


async def test_harbor_suite_passes_in_text(harbor_bundle: Any, harbor_backend: Any, harbor_fixtures: dict) -> None:
    suite = await run_conversation_tests(harbor_bundle, fixtures=harbor_fixtures, env="test")
    failures = [f for case in suite.cases for f in case.failures]
    assert suite.pass_rate == 1.0, "\n".join(failures)
    assert suite.total >= 12
    assert {"billing", "conversation", "knowledge", "orders", "outages", "verification"} <= set(suite.by_category())
    # every topic the agent declares is started by some test
    started = {turn["intent"] for case in suite.cases for turn in case.details["turns"]}
    assert set(harbor_bundle.topics) <= started
    assert suite.metrics["mode"] == "text" and suite.metrics["environment"] == "test"
    # the evidence keeps the session's redacted words, never a PIN said or keyed
    pins = {c["pin"] for c in harbor_fixtures["customer"][:12]}
    said = json.dumps(suite.to_dict())
    assert "<PIN>" in said and not any(re.search(rf"\b{pin}\b", said) for pin in pins)


@pytest.mark.slow
async def test_harbor_subset_passes_by_voice(harbor_bundle: Any, harbor_backend: Any, harbor_fixtures: dict) -> None:
    suite = await run_conversation_tests(harbor_bundle, fixtures=harbor_fixtures, voice=True, names=VOICE_SUBSET)
    assert suite.pass_rate == 1.0, "\n".join(f for case in suite.cases for f in case.failures)
    assert suite.total == len(VOICE_SUBSET)
    assert suite.metrics["spoken_turns"] >= 10
    assert suite.metrics["caller_voice"] != harbor_bundle.agent.voice.voice
    assert all(t.get("spoken") for t in suite.cases[0].details["turns"])


# ---- sabotaged agents fail, readably ------------------------------------------------------------


async def test_sabotaged_reply_fails_naming_turn_and_expectation(
    agent_copy: Path, harbor_backend: Any, harbor_fixtures: dict
) -> None:
    topic = agent_copy / "topics" / "outage_check.yaml"
    topic.write_text(
        topic.read_text().replace(
            "Yes, there is a known {outage.outages.0.service} outage",
            "Everything is fine with the {outage.outages.0.service} service",
        )
    )
    bundle = load_bundle(agent_copy)
    suite = await run_conversation_tests(bundle, fixtures=harbor_fixtures)
    failed = {c.name: c for c in suite.cases if not c.passed}
    assert set(failed) == {"known outage in the caller's postcode", "digression to store hours while giving a postcode"}
    tests_file = agent_copy / "tests" / "outages.yaml"
    line = line_of(tests_file, '- say: "{outage.3.postcode|spoken}"')
    message = failed["known outage in the caller's postcode"].failures[0]
    service = harbor_fixtures["outage"][3]["service"]
    assert message.startswith(f"turn 2 ({tests_file}:{line}): reply should contain 'known {service} outage'; it was: ")
    assert f"Everything is fine with the {service} service" in message
    assert suite.pass_rate < 1.0


async def test_sabotaged_escalation_routing_fails_the_conversation_check(
    agent_copy: Path, harbor_backend: Any, harbor_fixtures: dict
) -> None:
    agent = agent_copy / "agent.yaml"
    agent.write_text(agent.read_text().replace("verification_failed: security", "verification_failed: general"))
    suite = await run_conversation_tests(
        load_bundle(agent_copy), fixtures=harbor_fixtures, names=["three wrong PINs escalate to security"]
    )
    (case,) = suite.cases
    assert not case.passed
    assert case.failures == [
        f"end of conversation ({case.details['source']}): expected escalation to queue security, got general"
    ]


# ---- bad test files -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "line", "message"),
    [
        (
            "tests:\n  - name: a\n    turns:\n      - say: hi\n        expect: {intent: order_status\n",
            6,
            "invalid YAML",
        ),
        (
            "tests:\n  - name: a\n    turns:\n      - say: hi\n        expect:\n          reply_contans: x\n",
            6,
            "unknown field 'reply_contans'",
        ),
        ("tests:\n  - name: a\n    turns:\n      - say: hi\n        dtmf: '12'\n", 4, "exactly one of 'say' or 'dtmf'"),
        ("name: a\nturns:\n  - say: hi\nexpect:\n  actions: [get_balanse]\n", 5, "undefined action 'get_balanse'"),
        (
            "tests:\n  - name: a\n    turns:\n      - say: hi\n    expect:\n      escalation: {queue: billng}\n",
            6,
            "undefined queue 'billng'",
        ),
    ],
)
def test_malformed_test_file_names_path_and_line(agent_copy: Path, content: str, line: int, message: str) -> None:
    bad = agent_copy / "tests" / "zz_bad.yaml"
    bad.write_text(content)
    with pytest.raises(BundleError) as err:
        load_bundle(agent_copy)
    (problem,) = [p for p in err.value.problems if p.path == str(bad)]
    assert problem.line == line and message in problem.message
    result = cli(str(agent_copy))
    assert result.exit_code == 2
    assert f"{bad}:{line}:" in result.output


async def test_unknown_fixture_is_reported_before_running(harbor_bundle: Any) -> None:
    with pytest.raises(ConversationTestError) as err:
        await run_conversation_tests(
            harbor_bundle, fixtures={"customer": []}, names=["order status, verified by keypad"]
        )
    text = str(err.value)
    assert re.search(
        r"tests/orders\.yaml:\d+: test 'order status, verified by keypad': unknown fixture "
        r"'\{customer\.10\.account_number\}'",
        text,
    )


# ---- reports and the command ------------------------------------------------------------------------


def test_cli_reports_and_threshold(agent_copy: Path, harbor_backend: Any, tmp_path: Path) -> None:
    topic = agent_copy / "topics" / "store_hours.yaml"
    topic.write_text(topic.read_text().replace("  - answer: knowledge\n", "  - say: We are open sometimes.\n"))
    junit, out = tmp_path / "junit.xml", tmp_path / "result.json"
    args = [
        str(agent_copy),
        "--fixtures",
        "customer=harbor_backend:demo_credentials",
        "--fixtures",
        "outage=harbor_backend.data:draw_outages",
        "--junit",
        str(junit),
        "--json",
        str(out),
    ]
    result = cli(*args)
    assert result.exit_code == 1, result.output
    assert "FAIL  store opening hours from the knowledge base" in result.output
    assert re.search(r"knowledge\s+1\s+1", result.output)  # the summary table, by category
    data = json.loads(out.read_text())
    root = ET.fromstring(junit.read_text())
    assert root.tag == "testsuite"
    assert int(root.get("tests")) == data["total"] == len(root.findall("testcase")) >= 12
    failed = [c for c in root.findall("testcase") if c.find("failure") is not None]
    assert int(root.get("failures")) == len(failed) == data["total"] - data["passed"] >= 1
    assert cli(*args, "--min-pass-rate", "0.5").exit_code == 0


def test_fill_placeholders_and_caller_voice() -> None:
    fixtures = {"customer": [{"pin": "0427", "first_name": "Ana"}]}
    assert (
        fill_placeholders("pin {customer.0.pin|spoken}, {customer.0.first_name}", fixtures)
        == "pin zero four two seven, Ana"
    )
    assert fill_placeholders("{customer.0.pin|spaced} {not a placeholder}", fixtures) == "0 4 2 7 {not a placeholder}"
    with pytest.raises(KeyError):
        fill_placeholders("{customer.1.pin}", fixtures)
    assert caller_voice_for("joe-us", ["pico-en-GB", "pico-en-US"]) == "pico-en-US"
    assert caller_voice_for("pico-en-GB", ["pico-en-GB", "pico-en-US"]) == "pico-en-US"
