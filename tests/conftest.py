"""Test setup: a real ComfyUI host, on the CPU.

The host is the tree harness.host.comfy_dir() names: .comfy-host/ComfyUI (0.3.75, see scripts/setup_host.sh)
unless RLG_COMFY_DIR names another. scripts/run_tests.sh runs the suite once per host of the test matrix, and a
user can point it at their own ComfyUI (CONTRIBUTING.md, "Running the matrix"). Every process of a run uses that
one tree: this one (pytest_configure below, before any test module is imported), and the servers and the reference
process it starts (harness.host.child_env). tests/test_host_isolation.py proves it.

In-process tests import ComfyUI as a library and load this pack the way ComfyUI does (the package comfyui_rlg).
Server tests (marked `server`) start ComfyUI's main.py; browser tests (marked `frontend`) also drive its
front-end in headless Chromium.
"""

from __future__ import annotations

import os
import sys

import pytest

from harness import host

# The CPU unless RLG_TEST_DEVICE=cuda (the GPU check, on a GPU machine; never in CI).
ON_GPU = os.environ.get("RLG_TEST_DEVICE") == "cuda"


def pytest_configure(config):
    try:
        host.use_comfy(cpu=not ON_GPU)
    except host.HostError as err:
        raise pytest.UsageError(str(err)) from None
    if ON_GPU:
        import torch

        torch.backends.cuda.matmul.allow_tf32 = False  # the identities compare float32 results
        torch.backends.cudnn.allow_tf32 = False
    from harness.pack import load_pack

    load_pack()


def pytest_report_header(config):
    return f"ComfyUI host: {host.comfy_version()} at {host.comfy_dir()}, device {'cuda' if ON_GPU else 'cpu'}"


def pytest_terminal_summary(terminalreporter):
    """Print the measured w=0 / w=1 identity differences and the reliability figures, so a run records them."""
    diffs = getattr(sys.modules.get("harness.sampling"), "IDENTITY_DIFFS", None)
    if diffs:
        terminalreporter.section("RLG identities: max |RLG(w=0) - base|, |RLG(w=1) - RL| per case")
        for case, diff in sorted(diffs.items()):
            terminalreporter.write_line(f"{case:45s} {diff:.3e}")
        terminalreporter.write_line(f"{'overall max':45s} {max(diffs.values()):.3e}")
    reliability = sys.modules.get("harness.reliability")  # tests/reliability/, tests/test_security.py
    lines = reliability.summary_lines() if reliability is not None else []
    if lines:
        terminalreporter.section(f"RLG reliability (ComfyUI {host.comfy_version()})")
        for line in lines:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def workflow_server(tmp_path_factory):
    """One ComfyUI server for the workflow and front-end tests (see harness/workflow_host.py)."""
    from harness.workflow_host import start_workflow_server

    server = start_workflow_server(tmp_path_factory.mktemp("workflows"))
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _inference_mode():
    """ComfyUI executes every node under torch.inference_mode(); in-process tests do the same."""
    import torch

    with torch.inference_mode():
        yield


def pytest_sessionfinish(session, exitstatus):
    """Modules imported while the tests ran count too: a module of another tree turns the whole run red."""
    foreign = host.foreign_modules()
    if foreign:
        lines = "\n".join(f"  {name}: {where}" for name, where in sorted(foreign.items()))
        message = f"\nRLG: modules of another ComfyUI tree than {host.comfy_dir()} were loaded in this leg:\n{lines}"
        session.config.get_terminal_writer().line(message, red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED

