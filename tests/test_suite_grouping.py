"""The suite's own scheduling: under pytest-xdist the tests of a module with a module-scoped fixture
run on one worker, so its server, browser or scan starts once. xdist honours a group only by tagging
the test's node id with it; when a pytest release changes how node ids are kept, the tag silently
does nothing and every worker starts its own copy (a pytest upgrade once did exactly that)."""

from __future__ import annotations

import os

import pytest

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
