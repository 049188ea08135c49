"""Results of a suite of checks (conversation tests, red-team callers, escalation checks): what each
case expected, what happened, and the suite's figures; written as JSON and JUnit XML.

Every gate and `voxgate test` report through these types, so evidence, the CLI and the console
read one shape.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET  # nosec B405: only builds JUnit XML, never parses any
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class CaseResult:
    """One case: passed only if every expectation held; `failures` says which did not, readably."""

    name: str
    passed: bool
    category: str = ""
    failures: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)  # e.g. expected/actual, transcript (redacted)
    duration_ms: float = 0.0


@dataclass
class SuiteResult:
    suite: str
    cases: list[CaseResult] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return len(self.cases)

    @property
    def passed_count(self) -> int:
        return sum(1 for c in self.cases if c.passed)

    @property
    def pass_rate(self) -> float:
        return self.passed_count / self.total if self.cases else 0.0

    def by_category(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for case in self.cases:
            row = out.setdefault(case.category or "-", {"passed": 0, "failed": 0})
            row["passed" if case.passed else "failed"] += 1
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "suite": self.suite,
            "total": self.total,
            "passed": self.passed_count,
            "pass_rate": round(self.pass_rate, 4),
            "by_category": self.by_category(),
            "metrics": self.metrics,
            "cases": [asdict(c) for c in self.cases],
        }

    def to_junit_xml(self) -> str:
        suite = ET.Element(
            "testsuite",
            name=self.suite,
            tests=str(self.total),
            failures=str(self.total - self.passed_count),
            time=f"{sum(c.duration_ms for c in self.cases) / 1000:.3f}",
        )
        for case in self.cases:
            el = ET.SubElement(
                suite,
                "testcase",
                name=case.name,
                classname=f"{self.suite}.{case.category or 'case'}",
                time=f"{case.duration_ms / 1000:.3f}",
            )
            if not case.passed:
                failure = ET.SubElement(el, "failure", message=(case.failures[0] if case.failures else "failed")[:500])
                failure.text = "\n".join(case.failures)
        return ET.tostring(suite, encoding="unicode", xml_declaration=True)
