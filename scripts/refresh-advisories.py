#!/usr/bin/env python3
"""Rebuild security/advisories.json from a checkout of the PyPA advisory database (the online step).

    git clone --depth 1 https://github.com/pypa/advisory-database /tmp/advisory-database
    .venv/bin/python scripts/refresh-advisories.py /tmp/advisory-database
    scripts/audit-deps.py          # then judge what changed; commit both

Keeps the OSV records (vulns/<package>/PYSEC-*.yaml) of every package pinned in the lock files,
as JSON, with the database's commit and commit date, so `scripts/audit-deps.py` runs offline.
Run it again whenever a lock file gains a package (the audit reports it as not covered).
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import subprocess  # nosec B404: runs git with an argv list
import sys
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("audit_deps", ROOT / "scripts" / "audit-deps.py")
audit_deps = sys.modules["audit_deps"] = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
_spec.loader.exec_module(audit_deps)  # type: ignore[union-attr]


def _git(git_dir: Path, *args: str, data: bytes | None = None) -> bytes:
    return subprocess.run(["git", "--git-dir", str(git_dir), *args], input=data, capture_output=True, check=True).stdout


def build(database: Path, pins: dict[str, str]) -> dict[str, Any]:
    """The snapshot for these pins from a clone (or bare git directory) of the advisory database."""
    git_dir = database / ".git" if (database / ".git").exists() else database
    commit = _git(git_dir, "rev-parse", "HEAD").decode().strip()
    date = _git(git_dir, "show", "-s", "--format=%cI", commit).decode().strip()
    names = _git(git_dir, "ls-tree", "-r", "--name-only", commit, "vulns").decode().split("\n")
    wanted = [n for n in names if n.endswith((".yaml", ".json")) and audit_deps.normalize(n.split("/")[1]) in pins]
    batch = _git(git_dir, "cat-file", "--batch", data="".join(f"{commit}:{n}\n" for n in wanted).encode())
    yaml = YAML(typ="safe", pure=True)
    vulns, at = [], 0
    for _ in wanted:
        header_end = batch.index(b"\n", at)
        size = int(batch[at:header_end].split()[2])
        body = batch[header_end + 1 : header_end + 1 + size]
        at = header_end + 1 + size + 1
        vulns.append(json.loads(json.dumps(yaml.load(io.BytesIO(body)), default=str)))
    vulns.sort(key=lambda v: v["id"])
    return {
        "source": "https://github.com/pypa/advisory-database",
        "commit": commit,
        "commit_date": date,
        "locks": [p.name for p in audit_deps.LOCKS],
        "packages": sorted(pins),
        "vulns": vulns,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("database", type=Path, help="a clone of github.com/pypa/advisory-database")
    parser.add_argument("--out", type=Path, default=audit_deps.SNAPSHOT)
    args = parser.parse_args()
    snapshot = build(args.database, audit_deps.load_pins())
    args.out.write_text(json.dumps(snapshot, indent=1, sort_keys=True) + "\n")
    print(
        f"{args.out}: {len(snapshot['vulns'])} advisories for {len(snapshot['packages'])} pinned packages "
        f"from {snapshot['commit'][:12]} ({snapshot['commit_date']})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
