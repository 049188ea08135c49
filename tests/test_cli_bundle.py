"""`voxgate bundle build`'s default archive name: the version in agent.yaml is free text, the file
it names stays in the current folder."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.helpers.paths import HARBOR_AGENT
from voxgate.cli import app as cli
from voxgate.cli.bundle import default_archive_name


@pytest.mark.parametrize(
    "version,expected",
    [
        ("1.2.0", "harbor-support-1.2.0.vxb"),
        ("1.0.0+build.7", "harbor-support-1.0.0+build.7.vxb"),
        ("../../../escape", "harbor-support-.._.._.._escape.vxb"),
        ("/etc/cron.d/x", "harbor-support-_etc_cron.d_x.vxb"),
        ("a\\b\x00c\nd", "harbor-support-a_b_c_d.vxb"),
        ("", "harbor-support-0.vxb"),
    ],
)
def test_bundle_build_default_name_is_one_file_here(version: str, expected: str) -> None:
    name = default_archive_name("harbor-support", version)
    assert name == expected
    assert Path(name).name == name and name not in (".", "..")


def test_bundle_build_with_a_path_in_its_version_writes_in_the_current_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    agent = tmp_path / "src" / "harbor-support"
    shutil.copytree(HARBOR_AGENT, agent)
    text = (agent / "agent.yaml").read_text()
    assert "\nversion:" in text
    lines = [("version: '../../outside/pwned'" if line.startswith("version:") else line) for line in text.splitlines()]
    (agent / "agent.yaml").write_text("\n".join(lines) + "\n")
    here = tmp_path / "a" / "b" / "here"
    here.mkdir(parents=True)
    monkeypatch.chdir(here)
    result = CliRunner().invoke(cli, ["bundle", "build", str(agent), "--env", "dev", "--key", str(tmp_path / "k.pem")])
    assert result.exit_code == 0, result.output
    written = sorted(p.relative_to(tmp_path / "a").as_posix() for p in (tmp_path / "a").rglob("*"))
    assert written == [
        "b",
        "b/here",
        "b/here/harbor-support-.._.._outside_pwned.vxb",
        "b/here/harbor-support-.._.._outside_pwned.vxb.sig",
    ]
