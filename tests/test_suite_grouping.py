"""The suite's own scheduling: under pytest-xdist the tests of a module with a module-scoped fixture
run on one worker, so its server, browser or scan starts once. xdist honours a group only by tagging
the test's node id with it; when a pytest release changes how node ids are kept, the tag silently
does nothing and every worker starts its own copy (a pytest upgrade once did exactly that)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers.assert_cache import rewritable, warm
from tests.helpers.paths import ROOT
from tests.helpers.scheduling import LONGEST_FIRST


@pytest.fixture(scope="module")
def shared() -> list[str]:
    return []


def test_a_test_with_a_module_fixture_is_in_its_modules_xdist_group(
    request: pytest.FixtureRequest, shared: list[str]
) -> None:
    group = request.node.get_closest_marker("xdist_group")
    assert group is not None and group.args == ("tests/test_suite_grouping.py",)
    if os.environ.get("PYTEST_XDIST_WORKER"):  # under --dist loadgroup: the id carries the group
        assert request.node.nodeid.endswith("@tests/test_suite_grouping.py"), request.node.nodeid


def test_a_test_without_one_is_free_to_go_anywhere(request: pytest.FixtureRequest) -> None:
    assert request.node.get_closest_marker("xdist_group") is None
    assert "@" not in request.node.nodeid


def test_the_modules_scheduled_first_exist() -> None:
    """A renamed module would silently drop out of the longest-first order and start late."""
    missing = [module for module in LONGEST_FIRST if not (ROOT / module).is_file()]
    assert not missing, missing
    assert len(set(LONGEST_FIRST)) == len(LONGEST_FIRST)


def test_the_assert_cache_holds_what_pytest_reads_back_with_its_asserts_rewritten(tmp_path: Path) -> None:
    """tests/helpers/assert_cache.py writes the rewritten modules the workers then read: when a pytest
    release moves what it uses, the cache quietly stops being written and every worker rewrites again."""
    from _pytest.assertion.rewrite import PYC_TAIL, _read_pyc

    module = tmp_path / "test_sample.py"
    module.write_text("def check(x):\n    assert x == 2\n", "utf-8")
    (tmp_path / "helper.py").write_text("X = 1\n", "utf-8")  # not a test module: left to Python
    assert rewritable(tmp_path) == [module]
    assert warm(tmp_path) == 1
    assert warm(tmp_path) == 0  # cached and current: not written again
    code = _read_pyc(module, tmp_path / "__pycache__" / f"test_sample{PYC_TAIL}")
    assert code is not None
    namespace: dict[str, object] = {}
    exec(code, namespace)
    with pytest.raises(AssertionError) as failed:
        namespace["check"](3)  # type: ignore[operator]
    assert "assert 3 == 2" in str(failed.value)  # pytest's explanation: the assert was rewritten
    module.write_text("def check(x):\n    assert x == 30\n", "utf-8")  # changed (its size): stale in the cache
    assert warm(tmp_path) == 1
