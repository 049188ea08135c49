"""Where the checkout and the demo agent are."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HARBOR_AGENT = ROOT / "examples" / "harbor-telecom" / "agents" / "harbor-support"
