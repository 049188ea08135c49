"""Write pytest's rewritten test modules to its cache once, before the xdist workers start.

Every xdist worker collects the whole suite, and pytest rewrites each test module's asserts as it
imports it (about 7 s of CPU for this suite). It keeps the result next to the module
(`__pycache__/*-pytest-*.pyc`), but only when it may write bytecode (not under
PYTHONDONTWRITEBYTECODE, as on many CI images), and workers that start together all rewrite the
same modules before any has written one. Written here once, each worker reads them instead.

This is a warm-up and nothing else: pytest checks each cached file against its module's size and
modification time and rewrites a stale or missing one itself, so a run is the same with or without
it. It uses pytest's own rewriting functions; if a pytest upgrade moves them, it says so and does
nothing.

    python -m tests.helpers.assert_cache tests
"""

from __future__ import annotations

import sys
from pathlib import Path


class _Silent:
    """The assertion state pytest's writer reports through (only its trace is used)."""

    @staticmethod
    def trace(message: str) -> None:
        del message


def rewritable(root: Path) -> list[Path]:
    """The files pytest rewrites under `root` with this project's settings: test modules and conftests."""
    return sorted({*root.rglob("test_*.py"), *root.rglob("conftest.py")})


def warm(root: Path) -> int:
    """Rewrite and cache each of `root`'s test modules not cached yet; returns how many were written."""
    try:
        from _pytest.assertion.rewrite import PYC_TAIL, _read_pyc, _rewrite_test, _write_pyc, get_cache_dir
    except ImportError as exc:
        print(f"assert cache: pytest's rewriter moved ({exc}); the workers rewrite the modules themselves")
        return 0
    written = 0
    for path in rewritable(root):
        cache_dir = get_cache_dir(path)
        pyc = cache_dir / (path.name[:-3] + PYC_TAIL)
        if _read_pyc(path, pyc) is not None:
            continue
        cache_dir.mkdir(exist_ok=True)
        # no config: rewritten as with this project's (no assertion-pass hook), which is what decides the code
        stat, code = _rewrite_test(path, None)  # type: ignore[arg-type]
        written += bool(_write_pyc(_Silent(), code, stat, pyc))  # type: ignore[arg-type]
    return written


if __name__ == "__main__":
    warm(Path(sys.argv[1] if len(sys.argv) > 1 else "tests"))
