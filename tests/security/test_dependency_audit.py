"""The offline dependency audit (scripts/audit-deps.py): OSV ranges evaluated right on real advisories,
and the pinned dependencies pass against the vendored snapshot with the reviewed exceptions."""

from __future__ import annotations

import copy
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("audit_deps", ROOT / "scripts" / "audit-deps.py")
audit_deps = sys.modules.setdefault("audit_deps", importlib.util.module_from_spec(_spec))  # type: ignore[arg-type]
_spec.loader.exec_module(audit_deps)  # type: ignore[union-attr]


@pytest.fixture(scope="module")
def snapshot() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(audit_deps.SNAPSHOT.read_text())
    return data


def _advisory(snapshot: dict[str, Any], vuln_id: str, *, ranges_only: bool = True) -> dict[str, Any]:
    advisory = copy.deepcopy(next(v for v in snapshot["vulns"] if v["id"] == vuln_id))
    if ranges_only:  # judge the range evaluator alone, not the explicit version list
        for entry in advisory["affected"]:
            entry.pop("versions", None)
    return advisory


# (advisory, package, version, affected?) from the PyPA database, around each range's edges
CASES = [
    ("PYSEC-2014-8", "jinja2", "2.7.1", True),  # introduced 0, fixed 2.7.2
    ("PYSEC-2014-8", "jinja2", "2.7.2", False),
    ("PYSEC-2014-8", "jinja2", "3.1.6", False),
    ("PYSEC-2023-212", "urllib3", "1.26.17", True),  # 0 → 1.26.18 and 2.0.0 → 2.0.7
    ("PYSEC-2023-212", "urllib3", "1.26.18", False),
    ("PYSEC-2023-212", "urllib3", "2.0.0", True),
    ("PYSEC-2023-212", "urllib3", "2.0.6", True),
    ("PYSEC-2023-212", "urllib3", "2.0.7", False),
    ("PYSEC-2023-212", "urllib3", "2.8.0", False),
    ("PYSEC-2021-47", "pydantic", "1.6.1", True),  # three ranges in one event list
    ("PYSEC-2021-47", "pydantic", "1.6.2", False),
    ("PYSEC-2021-47", "pydantic", "1.6.9", False),
    ("PYSEC-2021-47", "pydantic", "1.7.3", True),
    ("PYSEC-2021-47", "pydantic", "1.7.4", False),
    ("PYSEC-2021-47", "pydantic", "1.8.1", True),
    ("PYSEC-2021-47", "pydantic", "1.8.2", False),
    ("PYSEC-2023-83", "starlette", "0.13.4", False),  # introduced 0.13.5, fixed 0.27.0
    ("PYSEC-2023-83", "starlette", "0.13.5", True),
    ("PYSEC-2023-83", "starlette", "0.26.1", True),
    ("PYSEC-2023-83", "starlette", "0.27.0", False),
    ("PYSEC-2023-221", "werkzeug", "2.3.7", True),
    ("PYSEC-2023-221", "werkzeug", "2.3.8", False),
    ("PYSEC-2023-221", "werkzeug", "3.0.0", True),
    ("PYSEC-2023-221", "werkzeug", "3.0.1", False),
    ("PYSEC-2024-60", "idna", "3.6", True),
    ("PYSEC-2024-60", "idna", "3.7", False),
    ("PYSEC-2023-254", "cryptography", "41.0.5", True),
    ("PYSEC-2023-254", "cryptography", "41.0.6", False),
    ("PYSEC-2023-254", "cryptography", "3.0", False),  # before "introduced 3.1"
]


@pytest.mark.parametrize(
    ("vuln_id", "package", "version", "expected"), CASES, ids=[f"{c[1]}=={c[2]}-{c[0]}" for c in CASES]
)
def test_ecosystem_ranges_of_real_advisories(
    snapshot: dict[str, Any], vuln_id: str, package: str, version: str, expected: bool
) -> None:
    assert audit_deps.affects(_advisory(snapshot, vuln_id), package, version) is expected


def test_last_affected_includes_the_named_version() -> None:
    # PYSEC-2022-42969 (py, the ReDoS in svnurl): introduced 0, last_affected 1.11.0, never fixed
    advisory = {
        "id": "PYSEC-2022-42969",
        "affected": [
            {
                "package": {"name": "py", "ecosystem": "PyPI"},
                "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"last_affected": "1.11.0"}]}],
            }
        ],
    }
    assert audit_deps.affects(advisory, "py", "1.11.0")
    assert audit_deps.affects(advisory, "py", "1.4.0")
    assert not audit_deps.affects(advisory, "py", "1.11.1")


def test_explicit_versions_and_git_ranges(snapshot: dict[str, Any]) -> None:
    advisory = _advisory(snapshot, "PYSEC-2014-8", ranges_only=False)
    for entry in advisory["affected"]:
        entry["ranges"] = [
            {"type": "GIT", "repo": "https://example.invalid", "events": [{"introduced": "0"}, {"fixed": "acb672b6"}]}
        ]
    assert audit_deps.affects(advisory, "jinja2", "2.7.1")  # listed
    assert audit_deps.affects(advisory, "jinja2", "2.0rc1")
    assert not audit_deps.affects(advisory, "jinja2", "2.7.2")  # not listed; GIT ranges are not versions


def test_withdrawn_advisories_and_other_packages_do_not_count(snapshot: dict[str, Any]) -> None:
    advisory = _advisory(snapshot, "PYSEC-2014-8")
    assert not audit_deps.affects(advisory, "jinja3", "2.7.1")
    advisory["withdrawn"] = "2024-01-01T00:00:00Z"
    assert not audit_deps.affects(advisory, "jinja2", "2.7.1")


def test_lock_parsing_normalises_names() -> None:
    pins = audit_deps.parse_lock(
        "# header\nRuamel.YAML==0.18.6 \\\n    --hash=sha256:00\n"
        "psycopg[binary]==3.2.1 \\\nuvicorn_Standard==1.0\n    # via x\n"
    )
    assert pins == {"ruamel-yaml": "0.18.6", "psycopg": "3.2.1", "uvicorn-standard": "1.0"}


def _snap(vulns: list[dict[str, Any]], packages: list[str]) -> dict[str, Any]:
    return {"source": "test", "commit": "0" * 40, "commit_date": "2024-10-10", "packages": packages, "vulns": vulns}


def test_findings_need_a_matching_exception_and_stale_ones_fail(snapshot: dict[str, Any]) -> None:
    vulns = [_advisory(snapshot, "PYSEC-2023-212"), _advisory(snapshot, "PYSEC-2024-60")]
    pins = {"urllib3": "2.0.6", "idna": "3.6", "requests": "2.34.2"}
    report = audit_deps.audit(pins, _snap(vulns, sorted(pins)), [])
    assert not report.ok
    assert {(f.id, f.package, f.version) for f in report.findings} == {
        ("PYSEC-2023-212", "urllib3", "2.0.6"),
        ("PYSEC-2024-60", "idna", "3.6"),
    }
    # an exception by alias justifies one; one for a version no longer pinned is stale
    exceptions = [
        {"id": "CVE-2023-45803", "package": "urllib3", "reason": "r", "reviewed": "2026-12-06"},
        {"id": "PYSEC-2024-60", "package": "idna", "reason": "r", "reviewed": "2026-12-06"},
    ]
    report = audit_deps.audit({**pins, "idna": "3.7"}, _snap(vulns, sorted(pins)), exceptions)
    assert [f.id for f in report.justified] == ["PYSEC-2023-212"]
    assert report.findings == []
    assert [e["id"] for e in report.stale] == ["PYSEC-2024-60"]
    assert not report.ok


def test_a_pinned_package_the_snapshot_was_not_made_for_fails() -> None:
    report = audit_deps.audit({"urllib3": "2.8.0", "newcomer": "1.0"}, _snap([], ["urllib3"]), [])
    assert report.uncovered == ["newcomer"] and not report.ok


def test_the_snapshot_records_its_source_and_covers_every_pin(snapshot: dict[str, Any]) -> None:
    assert snapshot["source"] == "https://github.com/pypa/advisory-database"
    assert len(snapshot["commit"]) == 40 and snapshot["commit_date"][:4].isdigit()
    assert set(audit_deps.load_pins()) <= set(snapshot["packages"])
    assert len(snapshot["vulns"]) > 20 and all(v["id"].startswith("PYSEC-") for v in snapshot["vulns"])


def test_the_locked_dependencies_pass_the_audit() -> None:
    run = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "audit-deps.py")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "no unjustified advisory" in run.stdout


def test_the_check_fails_and_lists_a_vulnerable_pin(tmp_path: Path) -> None:
    lock = tmp_path / "old.lock"
    lock.write_text("urllib3==1.26.17 \\\n    --hash=sha256:00\njinja2==3.1.6\n")
    run = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "audit-deps.py"), "--lock", str(lock)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 1
    assert "VULNERABLE urllib3==1.26.17: PYSEC-2023-212" in run.stdout
    assert "jinja2" not in run.stdout.split("advisories:", 1)[1].split("\n", 1)[1]
