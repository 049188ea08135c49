"""The layers of shared/DESIGN.md hold: import-linter's contracts (pyproject.toml) pass, and imports
moved inside functions, which import-linter sees but which once dodged cycles, only get fewer."""

from __future__ import annotations

import ast
import subprocess  # nosec B404: runs the virtualenv's own lint-imports, no shell, no input
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "voxgate"
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")

#: in-function `import voxgate…` / `from voxgate… import` statements measured after the layers work;
#: lower it when you remove some, never raise it (import at the top, or hand in a port instead).
MAX_IN_FUNCTION_IMPORTS = 83


def in_function_imports(package: Path = PACKAGE, root: Path = ROOT) -> list[str]:
    """`path:line module` (path relative to `root`) of every voxgate import inside a function body, nested ones too."""
    found: set[str] = set()
    for path in sorted(package.rglob("*.py")):
        if "migrations" in path.relative_to(package).parts:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for func in ast.walk(tree):
            if not isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(func):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom):
                    names = ["." * node.level + (node.module or "")]
                else:
                    continue
                for name in names:
                    if name == "voxgate" or name.startswith(("voxgate.", ".")):
                        found.add(f"{path.relative_to(root)}:{node.lineno} {name}")
    return sorted(found)


def test_the_import_contracts_hold() -> None:
    assert LINT_IMPORTS.is_file(), f"import-linter is not installed next to {sys.executable}"
    run = subprocess.run(  # nosec B603: a fixed argument list
        [str(LINT_IMPORTS), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert "0 broken" in run.stdout


def test_imports_inside_functions_only_get_fewer() -> None:
    found = in_function_imports()
    print(f"{len(found)} voxgate imports inside functions:", *found, sep="\n  ")
    assert len(found) <= MAX_IN_FUNCTION_IMPORTS, (
        f"{len(found)} voxgate imports inside functions, at most {MAX_IN_FUNCTION_IMPORTS}: import at the top of "
        "the module (the layers contracts say where), or hand the dependency in as a port"
    )


def test_the_counter_sees_nested_and_relative_imports(tmp_path: Path) -> None:
    module = tmp_path / "voxgate_like" / "m.py"
    module.parent.mkdir()
    module.write_text(
        "import voxgate.top\n"
        "def f():\n"
        "    import voxgate.errors\n"
        "    def g():\n"
        "        from .sibling import x\n"
        "    from json import dumps\n"
        "class C:\n"
        "    async def h(self):\n"
        "        from voxgate import clock\n",
        encoding="utf-8",
    )
    found = in_function_imports(module.parent, root=tmp_path)
    assert found == [
        "voxgate_like/m.py:3 voxgate.errors",
        "voxgate_like/m.py:5 .sibling",
        "voxgate_like/m.py:9 voxgate",
    ]
