"""The static checks `make test` runs with the suite: ruff (lint and format), mypy, and the size limits
of the call's audio path (a module under voice/ stays under 400 lines, a class under 250).

Each tool runs from the checkout's virtualenv (next to this interpreter) with its configuration in
pyproject.toml; a failure prints the tool's own report. The import-linter contracts are checked by
tests/test_layers.py.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from tests.helpers.paths import ROOT

BIN = Path(sys.executable).parent
LINTED = ["src", "tests", "bench", "scripts", "examples"]
VOICE = ROOT / "src" / "voxgate" / "voice"
MAX_VOICE_MODULE_LINES = 400
MAX_VOICE_CLASS_LINES = 250


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)


def test_ruff_finds_nothing_to_fix() -> None:
    run = _run(str(BIN / "ruff"), "check", "--no-cache", *LINTED)
    assert run.returncode == 0, run.stdout + run.stderr


def test_the_code_is_formatted_as_ruff_formats_it() -> None:
    run = _run(str(BIN / "ruff"), "format", "--check", "--no-cache", *LINTED)
    assert run.returncode == 0, run.stdout + run.stderr


def test_mypy_passes_strict_where_configured() -> None:
    # no incremental cache: the answer must not depend on what an earlier run left behind
    run = _run(str(BIN / "mypy"), "--no-incremental", "--cache-dir", "/dev/null")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Success" in run.stdout


def oversized(path: Path) -> list[str]:
    """What in one module breaks the voice size limits: the module's length, or a class's."""
    text = path.read_text("utf-8")
    found = []
    lines = len(text.splitlines())
    if lines > MAX_VOICE_MODULE_LINES:
        found.append(f"{path.name}: {lines} lines")
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.ClassDef) and node.end_lineno is not None:
            length = node.end_lineno - node.lineno + 1
            if length > MAX_VOICE_CLASS_LINES:
                found.append(f"{path.name}: class {node.name} has {length} lines")
    return found


def test_the_voice_modules_and_classes_stay_small() -> None:
    modules = sorted(VOICE.rglob("*.py"))
    assert len(modules) > 10  # the stages really are there
    problems = [p for module in modules for p in oversized(module)]
    assert problems == []


def test_the_size_check_sees_a_long_module_and_a_long_class(tmp_path: Path) -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_VOICE_CLASS_LINES))
    module = tmp_path / "big.py"
    module.write_text(f"class Big:\n{body}\n" + "\n" * MAX_VOICE_MODULE_LINES, "utf-8")
    assert oversized(module) == [
        f"big.py: {MAX_VOICE_CLASS_LINES + MAX_VOICE_MODULE_LINES + 1} lines",
        f"big.py: class Big has {MAX_VOICE_CLASS_LINES + 1} lines",
    ]
