#!/usr/bin/env python3
"""Check the pinned dependencies against a vendored advisory snapshot, offline.

Reads the lock files (name==version), the OSV advisories in security/advisories.json (made by
scripts/refresh-advisories.py from the PyPA advisory database) and the reviewed exceptions in
security/audit-exceptions.toml. Exits 1 listing every pinned version an advisory affects that no
exception justifies, every exception that matches nothing any more, and every pinned package the
snapshot does not cover (refresh it); 0 otherwise. Needs only the standard library and `packaging`.

    scripts/audit-deps.py [--json]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import sys
import tomllib
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from packaging.version import InvalidVersion, Version

ROOT = Path(__file__).resolve().parents[1]
LOCKS = (ROOT / "requirements.lock", ROOT / "requirements-piper.lock")
SNAPSHOT = ROOT / "security" / "advisories.json"
EXCEPTIONS = ROOT / "security" / "audit-exceptions.toml"
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;\\]+)")


def normalize(name: str) -> str:
    """The PEP 503 form of a project name: `Ruamel.YAML` and `ruamel-yaml` are one project."""
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_lock(text: str) -> dict[str, str]:
    """{normalized name: version} of every `name==version` requirement line (hashes and comments skipped)."""
    pins: dict[str, str] = {}
    for line in text.splitlines():
        match = _PIN.match(line)
        if match:
            pins[normalize(match[1])] = match[2]
    return pins


def _version(text: Any) -> Version | None:
    try:
        return Version(str(text))
    except InvalidVersion:
        return None


def in_range(version: Version, events: list[dict[str, Any]]) -> bool:
    """Whether `version` falls in one OSV ECOSYSTEM range (events introduced / fixed / last_affected / limit).

    Follows the OSV evaluation: events sorted by version, an `introduced` at or below the version
    opens the range, a `fixed` (or `limit`) at or below it closes it, a `last_affected` below it closes it.
    """
    parsed: list[tuple[Version, str]] = []
    for event in events:
        for kind in ("introduced", "fixed", "last_affected", "limit"):
            if kind in event:
                value = str(event[kind])
                at = Version("0") if value == "0" else _version(value)
                if at is None:
                    raise ValueError(f"unparsable {kind} version {value!r}")
                parsed.append((at, kind))
    affected = False
    for at, kind in sorted(parsed, key=lambda p: (p[0], p[1] != "introduced")):
        if kind == "introduced" and version >= at:
            affected = True
        elif kind in ("fixed", "limit") and version >= at:
            affected = False
        elif kind == "last_affected" and version > at:
            affected = False
    return affected


def affects(advisory: dict[str, Any], package: str, version: str) -> bool:
    """Whether an OSV advisory lists this PyPI package version, by its ranges or its explicit versions."""
    if advisory.get("withdrawn"):
        return False
    wanted = _version(version)
    for entry in advisory.get("affected", []):
        pkg = entry.get("package", {})
        if pkg.get("ecosystem") != "PyPI" or normalize(pkg.get("name", "")) != package:
            continue
        if wanted is None:
            if version in [str(v) for v in entry.get("versions", [])]:
                return True
            continue
        if any(_version(v) == wanted for v in entry.get("versions", [])):
            return True
        for rng in entry.get("ranges", []):
            if rng.get("type") == "ECOSYSTEM" and in_range(wanted, rng.get("events", [])):
                return True
    return False


def fixed_in(advisory: dict[str, Any], package: str) -> list[str]:
    out = []
    for entry in advisory.get("affected", []):
        if normalize(entry.get("package", {}).get("name", "")) == package:
            for rng in entry.get("ranges", []):
                out += [str(e["fixed"]) for e in rng.get("events", []) if "fixed" in e]
    return out


@dataclass(frozen=True)
class Finding:
    id: str
    package: str
    version: str
    aliases: tuple[str, ...]
    fixed_in: tuple[str, ...]
    summary: str


@dataclass(frozen=True)
class Report:
    findings: list[Finding]  # affected and not justified
    justified: list[Finding]  # affected, with a reviewed exception
    stale: list[dict[str, Any]]  # exceptions that match no finding
    uncovered: list[str]  # pinned packages the snapshot was not made for
    snapshot: dict[str, Any]

    @property
    def ok(self) -> bool:
        return not (self.findings or self.stale or self.uncovered)


def audit(pins: dict[str, str], snapshot: dict[str, Any], exceptions: Iterable[dict[str, Any]]) -> Report:
    """Every advisory of the snapshot that affects a pinned version, judged against the exceptions."""
    exceptions = list(exceptions)
    covered = set(snapshot.get("packages", []))
    by_package: dict[str, list[dict[str, Any]]] = {}
    for advisory in snapshot.get("vulns", []):
        for entry in advisory.get("affected", []):
            by_package.setdefault(normalize(entry.get("package", {}).get("name", "")), []).append(advisory)
    found, justified, used = [], [], set()
    for package, version in sorted(pins.items()):
        seen = set()
        for advisory in by_package.get(package, []):
            if advisory["id"] in seen or not affects(advisory, package, version):
                continue
            seen.add(advisory["id"])
            finding = Finding(
                advisory["id"],
                package,
                version,
                tuple(advisory.get("aliases", [])),
                tuple(fixed_in(advisory, package)),
                (advisory.get("summary") or advisory.get("details") or "").strip().split("\n")[0][:160],
            )
            names = {finding.id, *finding.aliases}
            match = [i for i, e in enumerate(exceptions) if e["id"] in names and normalize(e["package"]) == package]
            if match:
                used.update(match)
                justified.append(finding)
            else:
                found.append(finding)
    stale = [e for i, e in enumerate(exceptions) if i not in used]
    uncovered = sorted(set(pins) - covered)
    return Report(found, justified, stale, uncovered, {k: v for k, v in snapshot.items() if k != "vulns"})


def load_exceptions(path: Path = EXCEPTIONS) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = tomllib.loads(path.read_text()).get("exception", [])
    for e in entries:
        missing = {"id", "package", "reason", "reviewed"} - set(e)
        if missing or not str(e.get("reason", "")).strip():
            raise ValueError(f"{path.name}: exception {e.get('id', '?')} needs id, package, reason and reviewed")
    return entries


def load_pins(locks: Iterable[Path] = LOCKS) -> dict[str, str]:
    pins: dict[str, str] = {}
    for lock in locks:
        pins.update(parse_lock(lock.read_text()))
    return pins


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--snapshot", type=Path, default=SNAPSHOT)
    parser.add_argument("--exceptions", type=Path, default=EXCEPTIONS)
    parser.add_argument("--lock", type=Path, action="append", help="a lock file (default: both of the project's)")
    args = parser.parse_args(argv)
    report = audit(
        load_pins(args.lock or LOCKS), json.loads(args.snapshot.read_text()), load_exceptions(args.exceptions)
    )
    if args.json:
        print(json.dumps({"ok": report.ok, **{k: v for k, v in asdict(report).items()}}, indent=2, default=str))
        return 0 if report.ok else 1
    snap = report.snapshot
    age = (dt.date.today() - dt.date.fromisoformat(str(snap.get("commit_date", "1970-01-01"))[:10])).days
    print(
        f"advisories: {snap.get('source')} at {str(snap.get('commit', '?'))[:12]} ({snap.get('commit_date')}, "
        f"{age} days old); {len(report.justified)} finding(s) justified in {args.exceptions.name}"
    )
    for f in report.findings:
        fix = f"fixed in {', '.join(f.fixed_in)}" if f.fixed_in else "no fixed version"
        print(f"VULNERABLE {f.package}=={f.version}: {f.id} ({', '.join(f.aliases)}) {fix} — {f.summary}")
    for e in report.stale:
        print(f"STALE EXCEPTION {e['id']} for {e['package']}: no pinned version is affected any more; remove it")
    for name in report.uncovered:
        print(f"NOT COVERED {name}: pinned but absent from the snapshot; run scripts/refresh-advisories.py")
    if report.ok:
        print(f"ok: {len(load_pins(args.lock or LOCKS))} pinned packages, no unjustified advisory")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
