"""Copies of the packaged policies with an edit to environments.yaml, for workers a test starts."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from voxgate.governance.environments import DEFAULT_POLICY_DIR

#: prod's gates and checklist as the release-mechanics tests want them: none
NO_GATES = "      gates: []\n      checklist: {required: []}\n"
_DEV_SETTINGS_MARKER = "      retention_days: 7\n"
_PROD_CHECKLIST = "      checklist: {required: all}\n"


def policy_copy(tmp: Path, edit: Callable[[str], str] | None = None) -> Path:
    """The packaged policy directory copied to `tmp/policies` (once), its environments.yaml passed
    through `edit`: the policies a test's worker reads with `policy_dir=`."""
    policies = tmp / "policies"
    if not policies.exists():
        shutil.copytree(DEFAULT_POLICY_DIR, policies)
        if edit is not None:
            env_file = policies / "environments.yaml"
            env_file.write_text(edit(env_file.read_text()))
    return policies


def add_dev_settings(yaml_lines: str) -> Callable[[str], str]:
    """An environments.yaml edit adding `yaml_lines` (indented for dev's `settings:`) to dev's settings."""

    def edit(text: str) -> str:
        assert text.count(_DEV_SETTINGS_MARKER) == 1, "dev's settings are not where this helper expects them"
        return text.replace(_DEV_SETTINGS_MARKER, _DEV_SETTINGS_MARKER + yaml_lines)

    return edit


def relax_prod(text: str, extra: str = NO_GATES) -> str:
    """environments.yaml with prod's gates and checklist replaced by `extra`."""
    start = text.index("  prod:")
    head, prod = text[:start], text[start:]
    a = prod.index("      gates:")
    b = prod.index(_PROD_CHECKLIST) + len(_PROD_CHECKLIST)
    return head + prod[:a] + extra + prod[b:]


def mechanics_policies(tmp: Path) -> Path:
    """The packaged policies, with prod's readiness checklist not blocking: for tests about the
    release mechanics; gates and the checklist have their own tests (test_gates.py)."""
    return policy_copy(tmp, relax_prod)
