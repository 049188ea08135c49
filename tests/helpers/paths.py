"""Where the checkout, the demo agent and the benchmarks are."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
HARBOR_AGENT = ROOT / "examples" / "harbor-telecom" / "agents" / "harbor-support"
BENCH = ROOT / "bench"


def bench_module(name: str) -> Any:
    """bench/<name>.py as a module (bench/ on the path: a benchmark may import another)."""
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location(f"voxgate_bench_{name}", BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module
