"""pytest plugin for scripts/gpu_check.sh: stop the test session cleanly at a deadline.

    RLG_GPU_CHECK_DEADLINE=<epoch seconds> python -m pytest -p gpu_check_deadline ...   (scripts/ on PYTHONPATH)

A lent GPU machine runs one command for at most 10 minutes, so the check gives its tests a share of that. When the
share is spent, the test running finishes, the rest are not started, and pytest still writes its summary (how many
passed and failed) and says how many tests the deadline left out, instead of being killed with no summary at all.
"""

from __future__ import annotations

import os
import time

import pytest

_state = {"collected": 0, "ran": 0, "stopped": False}


def _deadline() -> float | None:
    value = os.environ.get("RLG_GPU_CHECK_DEADLINE")
    return float(value) if value else None


def pytest_collection_modifyitems(session, config, items):
    _state["collected"] = len(items)


def pytest_runtest_logfinish(nodeid, location):
    _state["ran"] += 1


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item, nextitem):
    deadline = _deadline()
    if deadline is not None and nextitem is not None and time.time() > deadline:
        _state["stopped"] = True
        item.session.shouldstop = "the GPU check's time for tests is spent (RLG_GPU_CHECK_DEADLINE)"


def pytest_terminal_summary(terminalreporter):
    if _state["stopped"]:
        left = _state["collected"] - _state["ran"]
        terminalreporter.section("GPU check: time limit")
        terminalreporter.write_line(f"stopped at the deadline: {left} of {_state['collected']} tests not run")
