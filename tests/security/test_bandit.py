"""Static analysis of the shipped code: every bandit finding is fixed or carries a reviewed reason,
inline (`# nosec BXXX: reason`) or in security/bandit-exceptions.toml, and no reason outlives its finding."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "voxgate"
EXCEPTIONS = ROOT / "security" / "bandit-exceptions.toml"
# a nosec comment must name the tests it silences and say why (a bare `# nosec` silences everything)
NOSEC = re.compile(r"#\s*nosec\b(?P<rest>[^#]*)")
JUSTIFIED = re.compile(r"^:?\s*B\d{3}(?:\s*,\s*B\d{3})*:\s*\S.{8,}")


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    run = subprocess.run(
        [sys.executable, "-m", "bandit", "-c", "pyproject.toml", "-r", "src/voxgate", "-f", "json", "-q"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode in (0, 1), run.stderr[-2000:]  # 1: findings, judged below
    data: dict[str, Any] = json.loads(run.stdout)
    assert data["errors"] == [], data["errors"]  # a file bandit could not parse is not a pass
    return data


def _exceptions() -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = tomllib.loads(EXCEPTIONS.read_text())["finding"]
    for e in entries:
        assert set(e) == {"test", "path", "line", "reason", "reviewed"}, e
        assert re.fullmatch(r"B\d{3}", e["test"]) and e["reason"].strip() and (ROOT / e["path"]).is_file(), e
    return entries


def _flagged_line(result: dict[str, Any]) -> str:
    lines = (ROOT / result["filename"]).read_text().splitlines()
    return lines[result["line_number"] - 1]


def test_bandit_scans_the_whole_package(report: dict[str, Any]) -> None:
    scanned = {Path(name).as_posix() for name in report["metrics"] if name != "_totals"}
    expected = {p.relative_to(ROOT).as_posix() for p in SRC.rglob("*.py")}
    assert expected <= scanned, sorted(expected - scanned)


def test_every_finding_is_fixed_or_justified(report: dict[str, Any]) -> None:
    entries = _exceptions()
    used: set[int] = set()
    unjustified = []
    for result in report["results"]:
        path = Path(result["filename"]).as_posix()
        source = _flagged_line(result)
        matches = [
            i
            for i, e in enumerate(entries)
            if e["test"] == result["test_id"] and e["path"] == path and e["line"] in source
        ]
        if matches:
            used.update(matches)
        else:
            unjustified.append(
                f"{path}:{result['line_number']} {result['test_id']} {result['issue_text']}\n    {source.strip()}"
            )
    stale = [f"{e['path']} {e['test']} {e['line']!r}" for i, e in enumerate(entries) if i not in used]
    assert unjustified == [], "fix these, or justify them inline or in security/bandit-exceptions.toml:\n" + "\n".join(
        unjustified
    )
    assert stale == [], "these exceptions match no finding any more; remove them:\n" + "\n".join(stale)


def test_every_nosec_names_its_tests_and_a_reason() -> None:
    bare = []
    for path in sorted(SRC.rglob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            match = NOSEC.search(line)
            if match and not JUSTIFIED.match(match["rest"].strip()):
                bare.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert bare == [], "write `# nosec BXXX: why it is safe`:\n" + "\n".join(bare)


def test_inline_nosec_comments_are_honoured(report: dict[str, Any]) -> None:
    # the inline reasons above only count if bandit saw them: its tally of skipped findings matches
    inline = sum(
        len(re.findall(r"B\d{3}", NOSEC.search(line)["rest"]))  # type: ignore[index]
        for path in SRC.rglob("*.py")
        for line in path.read_text().splitlines()
        if NOSEC.search(line)
    )
    assert inline > 0
    assert report["metrics"]["_totals"]["skipped_tests"] == inline
