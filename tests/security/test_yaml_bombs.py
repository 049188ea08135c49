"""YAML alias bombs ("billion laughs") and deep nesting: a few hundred bytes of YAML whose aliases
stand for 10^10 values. An agent directory refuses aliases with path:line:col; an uploaded bundle
holding one is a 422 that stores nothing; an operator's environments.yaml may use aliases, within a
budget. None of them expands the document."""

from __future__ import annotations

import shutil
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.helpers.org import Org
from tests.helpers.paths import HARBOR_AGENT
from tests.helpers.uploads import harbor_files, problems_of, signed_body, stored_bundles, upload
from voxgate.bundle import BundleError, load_bundle
from voxgate.bundle.loader import MAX_YAML_VALUES
from voxgate.governance.environments import DEFAULT_POLICY_DIR, GovernanceConfigError, load_environments_file

pytestmark = pytest.mark.sqlite_only  # hostile YAML is refused by the loader before anything is stored


def laughs(levels: int = 10, key: str = "lol") -> str:
    """`levels` anchors, each a list of ten aliases of the one before: 10^levels strings."""
    lines = [f"{key}0: &{key}0 [" + ", ".join(['"ha"'] * 10) + "]"]
    for i in range(1, levels):
        lines.append(f"{key}{i}: &{key}{i} [" + ", ".join([f"*{key}{i - 1}"] * 10) + "]")
    return "\n".join(lines) + "\n"


@pytest.fixture(autouse=True)
def no_hang() -> Iterator[None]:
    """A bomb that does go off runs for hours: fail the test instead of hanging the run."""

    def stop(*_: Any) -> None:
        raise TimeoutError("the YAML was expanded")

    old = signal.signal(signal.SIGALRM, stop)
    signal.alarm(120)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


@pytest.fixture()
def agent(tmp_path: Path) -> Path:
    dst = tmp_path / "harbor-support"
    shutil.copytree(HARBOR_AGENT, dst)
    return dst


def test_yaml_bomb_in_agent_yaml_is_a_loader_error_at_the_alias(agent: Path) -> None:
    original = (agent / "agent.yaml").read_text()
    (agent / "agent.yaml").write_text(original + laughs())
    with pytest.raises(BundleError) as caught:
        load_bundle(agent)
    line = len(original.splitlines()) + 2  # the first alias is on the bomb's second line
    assert f"{agent / 'agent.yaml'}:{line}:" in str(caught.value)
    assert "alias *lol0 is not allowed" in str(caught.value)


@pytest.mark.parametrize("where", ["topics/store_hours.yaml", "tests/bomb.yaml"])
def test_yaml_alias_in_a_topic_or_test_file_is_refused(agent: Path, where: str) -> None:
    path = agent / where
    text = path.read_text() if path.exists() else "name: bomb\n"
    path.write_text(text + "x-base: &b {a: 1}\nx-copy: *b\n")
    with pytest.raises(BundleError, match=r"alias \*b is not allowed"):
        load_bundle(agent)


def test_yaml_deep_nesting_is_a_loader_error(agent: Path) -> None:
    (agent / "agent.yaml").write_text((agent / "agent.yaml").read_text() + "deep: " + "[" * 20000 + "]" * 20000 + "\n")
    with pytest.raises(BundleError, match="maximum depth"):
        load_bundle(agent)


def test_yaml_environments_may_use_aliases_but_not_a_bomb(tmp_path: Path) -> None:
    text = (DEFAULT_POLICY_DIR / "environments.yaml").read_text()
    ok = tmp_path / "ok" / "environments.yaml"
    ok.parent.mkdir()
    ok.write_text(text)
    assert load_environments_file(ok).environments  # the packaged file itself loads
    bomb = tmp_path / "bomb" / "environments.yaml"
    bomb.parent.mkdir()
    bomb.write_text(text + laughs(key="x-lol"))
    with pytest.raises(GovernanceConfigError, match=f"more than {MAX_YAML_VALUES} values"):
        load_environments_file(bomb)


# ---- uploads ---------------------------------------------------------------------------------------


def test_yaml_bomb_upload_is_422_and_stores_nothing(org: Org, client: TestClient) -> None:
    files = harbor_files()
    files["agent.yaml"] += laughs().encode()
    r = upload(client, org, signed_body(org, files))
    assert r.status_code == 422, r.text
    assert "agent.yaml:" in problems_of(r) and "alias *lol0 is not allowed" in problems_of(r)
    assert stored_bundles(org) == 0


def test_yaml_bomb_in_a_member_the_loader_does_not_read_is_scanned_once(org: Org, client: TestClient) -> None:
    files = harbor_files()
    files["notes/bomb.yaml"] = laughs().encode()
    files["notes/creds.yaml"] = b"base: &b\n  password: hunter2hunter2\nservice:\n  auth: *b\n"
    r = upload(client, org, signed_body(org, files))
    assert r.status_code == 422, r.text
    assert "notes/creds.yaml:2: inline secret" in problems_of(r)  # an alias hides no credential
    assert "hunter2" not in r.text and stored_bundles(org) == 0


def test_yaml_deeply_nested_upload_is_422(org: Org, client: TestClient) -> None:
    files = harbor_files()
    files["agent.yaml"] += b"deep: " + b"[" * 20000 + b"]" * 20000 + b"\n"
    r = upload(client, org, signed_body(org, files))
    assert r.status_code == 422, r.text
    assert stored_bundles(org) == 0
