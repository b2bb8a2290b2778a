"""How the host's suites share out over pytest-xdist's processes (scripts/test.sh: ``--dist loadgroup``).

Each group runs in one process, in collection order: the tests on the session's composed stack
(the ``stack`` fixture, directly or through another fixture) in the group ``stack``, so the stack
starts once and its tests never run at the same time as each other (they share its rate limits);
the modules that override ``stack`` with the ``scratch_stack`` (their tests stop, kill or take
down what they test) in the group ``scratch``; every other test in the group of its module, so a
module's own compose project, cluster or lab starts once too. The longest groups go first (the
two stacks', then the modules marked ``own_project``, longest first), so the short ones fill the
other processes around them.
"""

from __future__ import annotations

import pytest


def _group(item: pytest.Item) -> str:
    names = item.fixturenames  # type: ignore[attr-defined]  # every fixture the test needs
    if "scratch_stack" in names:
        return "scratch"
    if "stack" in names:
        return "stack"
    return item.path.stem  # the module


def _order(item: pytest.Item) -> float:
    """The shared stacks' groups first, then the modules with a project of their own, the longest
    first (``own_project(minutes=...)``), then the others."""
    if _group(item) in ("scratch", "stack"):
        return -float("inf")
    if marker := item.get_closest_marker("own_project"):
        return -float(marker.kwargs["minutes"])
    return 0


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(pytest.mark.xdist_group(_group(item)))
    # Stable: each group keeps its order. The two shared stacks' groups are each kept together, also
    # in one process (`-n 0`): each stack is taken down after its group (tests/integration/conftest.py).
    items.sort(key=lambda item: (_order(item), _group(item) if _group(item) in ("scratch", "stack") else ""))


def pytest_collection_finish(session: pytest.Session) -> None:
    """Refuse to run when pytest-xdist did not take the groups (as on pytest 9.2, whose node ids it
    cannot suffix: pytest-dev/pytest-xdist#1386), rather than start the stack in every process."""
    if getattr(session.config.option, "loadgroup", False) and session.items and "@" not in session.items[0].nodeid:
        reason = "pytest-xdist's --dist loadgroup does not group with this pytest (see tests/requirements-unit.in)"
        raise pytest.UsageError(reason)
