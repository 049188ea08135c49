"""The release pipeline from the command line, as the README shows it, against a real server on loopback."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from tests.helpers.paths import HARBOR_AGENT
from voxgate.cli import app as cli


def _run(args: list[str], url: str, token: str, tmp_path: Path, expect: int = 0) -> Any:
    env = {"VOXGATE_URL": url, "VOXGATE_TOKEN": token, "VOXGATE_CREDENTIALS": str(tmp_path / "none.json")}
    result = CliRunner().invoke(cli, args, env=env)
    assert result.exit_code == expect, (args, result.output)
    return result


def test_release_from_the_command_line(release_server: tuple[str, dict[str, str]], tmp_path: Path) -> None:
    url, tokens = release_server
    agent = tmp_path / "harbor-support"
    shutil.copytree(HARBOR_AGENT, agent)
    key = tmp_path / "mia.pem"
    out = tmp_path / "harbor.vxb"
    _run(
        ["bundle", "build", str(agent), "--env", "prod", "--key", str(key), "--out", str(out)],
        url,
        tokens["mia"],
        tmp_path,
    )
    digest = json.loads((tmp_path / "harbor.vxb.sig").read_text())["digest"]
    _run(["release", "register-key", "--key", str(key)], url, tokens["mia"], tmp_path)
    uploaded = _run(["release", "upload", str(out), "--env", "dev", "--json"], url, tokens["mia"], tmp_path)
    assert json.loads(uploaded.output)["digest"] == digest
    _run(
        ["release", "deploy", "--env", "dev", "--agent", "harbor-support", "--digest", digest],
        url,
        tokens["mia"],
        tmp_path,
    )
    _run(["release", "promote", "--env", "test", "--agent", "harbor-support"], url, tokens["mia"], tmp_path)
    request = json.loads(
        _run(
            ["release", "request", "--env", "prod", "--agent", "harbor-support", "--reason", "first", "--json"],
            url,
            tokens["mia"],
            tmp_path,
        ).output
    )
    # the maker's own approval is refused with the status and reason, exit 1
    denied = _run(["release", "approve", request["id"], "--comment", "mine"], url, tokens["mia"], tmp_path, expect=1)
    assert "403" in denied.output
    _run(["release", "approve", request["id"], "--comment", "diff reviewed"], url, tokens["aaron"], tmp_path)
    _run(["release", "publish", request["id"]], url, tokens["aaron"], tmp_path)
    history = _run(["release", "history", "--env", "prod", "--agent", "harbor-support"], url, tokens["olga"], tmp_path)
    assert "publish" in history.output and digest[:19] in history.output
    # a first release rolled back withdraws the agent: nothing is active in prod afterwards
    _run(["rollback", "--env", "prod", "--agent", "harbor-support"], url, tokens["olga"], tmp_path)
    history = _run(["release", "history", "--env", "prod", "--agent", "harbor-support"], url, tokens["olga"], tmp_path)
    assert "rollback" in history.output and "withdrawn" in history.output
    # and then there is nothing left to roll back: a clear refusal, not a traceback
    refused = _run(["rollback", "--env", "prod", "--agent", "harbor-support"], url, tokens["olga"], tmp_path, expect=1)
    assert "nothing to roll back" in refused.output and "Traceback" not in refused.output


def test_build_names_the_inline_key_and_the_dlp_rule(tmp_path: Path) -> None:
    agent = tmp_path / "harbor-support"
    shutil.copytree(HARBOR_AGENT, agent)
    topic = agent / "topics" / "store_hours.yaml"
    lines = topic.read_text().splitlines()
    lines.insert(3, "# api_key: sk_live_4eC39HqLyjWDarjtT1zdp7dcQ9xVb2Zk")
    topic.write_text("\n".join(lines) + "\n")
    result = CliRunner().invoke(
        cli,
        [
            "bundle",
            "build",
            str(agent),
            "--env",
            "prod",
            "--key",
            str(tmp_path / "k.pem"),
            "--out",
            str(tmp_path / "x.vxb"),
        ],
    )
    assert result.exit_code == 2
    assert "topics/store_hours.yaml:4" in result.output
    assert "sk_live_4eC39HqLyjWDarjtT1zdp7dcQ9xVb2Zk" not in result.output
    # a non-business connector next to the business backend breaks the DLP rule, named
    topic.write_text("\n".join(lines[:3] + lines[4:]) + "\n")
    yaml = agent / "agent.yaml"
    yaml.write_text(
        yaml.read_text().replace(
            "\nactions:\n",
            "\n  social_api:\n    type: http\n"
            "    base_url: https://api.socialnet.example\n"
            "    hosts: [api.socialnet.example]\n    classification: public\n"
            "\nactions:\n",
            1,
        )
    )
    result = CliRunner().invoke(
        cli,
        [
            "bundle",
            "build",
            str(agent),
            "--env",
            "prod",
            "--key",
            str(tmp_path / "k.pem"),
            "--out",
            str(tmp_path / "x.vxb"),
        ],
    )
    assert result.exit_code == 2, result.output
    assert "dlp.mixed_groups" in result.output and "social_api" in result.output
