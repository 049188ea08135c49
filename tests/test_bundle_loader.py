"""Agent directories: valid bundles load; broken ones report path:line:col and exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.helpers.paths import ROOT
from voxgate.bundle import BundleError, load_bundle
from voxgate.cli import app

runner = CliRunner()


def _line_of(path: Path, needle: str) -> int:
    for i, line in enumerate(path.read_text().splitlines(), start=1):
        if needle in line:
            return i
    raise AssertionError(f"{needle!r} not in {path}")


def _problems(path: Path) -> list[str]:
    with pytest.raises(BundleError) as info:
        load_bundle(path)
    return [str(p) for p in info.value.problems]


def test_harbor_bundle_loads(harbor_bundle) -> None:  # type: ignore[no-untyped-def]
    assert set(harbor_bundle.topics) == {
        "order_status",
        "billing_dispute",
        "outage_check",
        "payment_due",
        "store_hours",
        "talk_to_human",
    }
    assert harbor_bundle.agent.authentication.mode == "verify"
    assert harbor_bundle.topic_requires_verification(harbor_bundle.topics["order_status"])
    assert not harbor_bundle.topic_requires_verification(harbor_bundle.topics["outage_check"])
    assert {k.path for k in harbor_bundle.knowledge} == {"knowledge/stores.md", "knowledge/payments.md"}


def test_bad_indentation_names_file_line_and_column(agent_copy: Path) -> None:
    topic = agent_copy / "topics" / "payment_due.yaml"
    text = topic.read_text().replace("    save_as: balance", "   save_as: balance")
    topic.write_text(text)
    result = runner.invoke(app, ["agent", "validate", str(agent_copy)])
    assert result.exit_code == 2
    line = _line_of(topic, "   save_as: balance")
    first = result.output.splitlines()[0]
    assert first.startswith(f"{topic}:{line}:")
    assert "invalid YAML" in first


def test_unknown_field_points_at_the_key(agent_copy: Path) -> None:
    agent = agent_copy / "agent.yaml"
    agent.write_text(agent.read_text().replace("  barge_in: true", "  barge_in: true\n  volume: 11"))
    problems = _problems(agent_copy)
    line = _line_of(agent, "volume: 11")
    assert f"{agent}:{line}:3: unknown field 'volume' (in voice)" in problems


def test_unknown_field_inside_a_step(agent_copy: Path) -> None:
    topic = agent_copy / "topics" / "order_status.yaml"
    topic.write_text(topic.read_text().replace("    save_as: order\n", "    save_as: order\n    colour: red\n"))
    problems = _problems(agent_copy)
    line = _line_of(topic, "colour: red")
    assert any(p.startswith(f"{topic}:{line}:5: unknown field 'colour'") for p in problems), problems


def test_undefined_action_is_a_cross_reference_error(agent_copy: Path) -> None:
    topic = agent_copy / "topics" / "payment_due.yaml"
    topic.write_text(topic.read_text().replace("call: get_balance", "call: get_balanse"))
    result = runner.invoke(app, ["agent", "validate", str(agent_copy)])
    assert result.exit_code == 2
    line = _line_of(topic, "call: get_balanse")
    assert f"{topic}:{line}:5: undefined action 'get_balanse'" in result.output
    assert "get_balance" in result.output  # the message lists what is defined


def test_undefined_slot_queue_connector_and_topic(agent_copy: Path) -> None:
    agent = agent_copy / "agent.yaml"
    text = agent.read_text()
    text = text.replace(
        "connector: harbor_api\n    method: GET\n    path: /api/customers/{customer_id}/balance",
        "connector: harbour_api\n    method: GET\n    path: /api/customers/{customer_id}/balance",
    )
    text = text.replace(
        "required_for: [order_status, billing_dispute, payment_due]",
        "required_for: [order_status, billing_dispute, payment_owed]",
    )
    text = text.replace("default_queue: general", "default_queue: genral")
    agent.write_text(text)
    topic = agent_copy / "topics" / "billing_dispute.yaml"
    topic.write_text(topic.read_text().replace("  - ask: reason", "  - ask: reasons"))
    problems = "\n".join(_problems(agent_copy))
    assert "undefined connector 'harbour_api'" in problems
    assert "undefined topic 'payment_owed'" in problems
    assert "undefined queue 'genral'" in problems
    assert f"{topic}:{_line_of(topic, 'ask: reasons')}:5: undefined slot 'reasons'" in problems


def test_inline_credential_is_rejected(agent_copy: Path) -> None:
    agent = agent_copy / "agent.yaml"
    agent.write_text(agent.read_text().replace("token: env:HARBOR_API_KEY", "token: sk-live-8f2a9c0d1e"))
    problems = _problems(agent_copy)
    line = _line_of(agent, "sk-live-8f2a9c0d1e")
    assert any(f"agent.yaml:{line}:" in p and "must be references" in p for p in problems), problems


def test_template_referring_to_unsaved_value(agent_copy: Path) -> None:
    topic = agent_copy / "topics" / "payment_due.yaml"
    topic.write_text(topic.read_text().replace("{balance.amount_due|money} is due", "{bal.amount_due|money} is due"))
    problems = "\n".join(_problems(agent_copy))
    assert "'bal' in 'bal.amount_due|money' is not saved by an earlier call step" in problems


def test_duplicate_keys_and_empty_files(agent_copy: Path) -> None:
    topic = agent_copy / "topics" / "store_hours.yaml"
    topic.write_text("name: store_hours\nname: again\n")
    (agent_copy / "topics" / "empty.yaml").write_text("")
    problems = "\n".join(_problems(agent_copy))
    assert f"{topic}:2:" in problems and "duplicate" in problems.lower()
    assert "empty.yaml:1:1: file is empty" in problems


def test_validate_json_output_and_success(agent_copy: Path) -> None:
    ok = runner.invoke(app, ["agent", "validate", str(agent_copy), "--json"])
    assert ok.exit_code == 0
    assert json.loads(ok.output)["agent"] == "harbor-support"


def test_schema_export_describes_agent_and_topic(tmp_path: Path) -> None:
    out = tmp_path / "agent.schema.json"
    assert runner.invoke(app, ["agent", "schema", "--out", str(out)]).exit_code == 0
    schema = json.loads(out.read_text())
    for key in ("scope", "connectors", "actions", "authentication", "escalation", "generative", "voice"):
        assert key in schema["properties"]
    topic = json.loads(runner.invoke(app, ["agent", "schema", "--kind", "topic"]).output)
    assert {"triggers", "slots", "steps"} <= set(topic["properties"])


def test_committed_schemas_are_current() -> None:
    """schemas/*.json are what editors load; regenerate with `make schema` after changing models."""
    from voxgate.bundle.schema import json_schema

    for kind in ("agent", "topic"):
        committed = json.loads((ROOT / "schemas" / f"{kind}.schema.json").read_text())
        assert committed == json_schema(kind), f"schemas/{kind}.schema.json is stale: run make schema"


def test_a_text_parsed_again_comes_from_the_cache_and_an_error_keeps_its_place() -> None:
    from ruamel.yaml.error import MarkedYAMLError

    from voxgate.bundle.loader import _ParseCache

    cache = _ParseCache(entries=2)
    first = cache.load("name: a\nitems: [1, 2]\n", aliases=False)
    assert cache.load("name: a\nitems: [1, 2]\n", aliases=False) is first and (cache.hits, cache.misses) == (1, 1)
    # one character more is another document; the alias rule is part of the key
    assert cache.load("name: b\nitems: [1, 2]\n", aliases=False)["name"] == "b"
    assert cache.load("name: a\nitems: [1, 2]\n", aliases=True) is not first
    # the oldest is dropped past the size
    assert cache.load("name: a\nitems: [1, 2]\n", aliases=False) is not first and cache.misses == 4
    for _ in range(2):  # a document that fails is never kept: the error and its line come every time
        with pytest.raises(MarkedYAMLError) as info:
            cache.load("name: a\nname: b\n", aliases=False)
        assert info.value.problem_mark is not None and info.value.problem_mark.line == 1
    with pytest.raises(MarkedYAMLError, match="alias"):
        cache.load("a: &x 1\nb: *x\n", aliases=False)
    assert cache.load("a: &x 1\nb: *x\n", aliases=True)["b"] == 1


def test_loading_an_agent_twice_gives_the_same_bundle_and_leaves_the_parsed_files_as_they_were(
    agent_copy: Path,
) -> None:
    first = load_bundle(agent_copy)
    second = load_bundle(agent_copy)  # every file now comes from the parse cache
    assert second.model_dump() == first.model_dump()
    # a changed file is read again, not served from the cache
    agent = agent_copy / "agent.yaml"
    agent.write_text(agent.read_text().replace("version:", "version: 9.9.9\nold_version:", 1))
    assert any("old_version" in p for p in _problems(agent_copy))
