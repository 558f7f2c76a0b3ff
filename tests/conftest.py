"""Test setup: a real ComfyUI host, on the CPU.

The host is .comfy-host/ComfyUI (0.3.75, see scripts/setup_host.sh) unless RLG_COMFY_DIR names
another ComfyUI tree: scripts/run_tests.sh runs the suite once per host of the test matrix, and a user
can point it at their own ComfyUI (README, "ComfyUI versions").

In-process tests import ComfyUI as a library and load this pack the way ComfyUI does (a package
from the checkout's __init__.py). Server tests (marked `server`) start ComfyUI's main.py; browser
tests (marked `frontend`) also drive its front-end in headless Chromium.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HOST = Path(os.environ.get("RLG_HOST_DIR", ROOT / ".comfy-host"))
COMFY_DIR = Path(os.environ.get("RLG_COMFY_DIR", HOST / "ComfyUI")).resolve()
PACK_NAME = "comfyui_rlg"

if not (COMFY_DIR / "main.py").exists():
    raise pytest.UsageError(f"No ComfyUI host at {COMFY_DIR}: run `make test` (or scripts/setup_host.sh) first.")

sys.path.insert(0, str(COMFY_DIR))
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT / "demo"))  # the demo's training code and HTTP driver are tested too

import comfy.cli_args  # noqa: E402

# The CPU unless RLG_TEST_DEVICE=cuda (scripts/gpu_check.sh, on a GPU machine; never in CI).
ON_GPU = os.environ.get("RLG_TEST_DEVICE") == "cuda"
comfy.cli_args.args.cpu = not ON_GPU
comfy.cli_args.args.deterministic = True
if ON_GPU:
    import torch  # noqa: E402

    torch.backends.cuda.matmul.allow_tf32 = False  # the identities compare float32 results
    torch.backends.cudnn.allow_tf32 = False

import comfy.model_management  # noqa: E402,F401  (reads args.cpu at import)


def _load_pack():
    if PACK_NAME in sys.modules:
        return sys.modules[PACK_NAME]
    spec = importlib.util.spec_from_file_location(
        PACK_NAME, ROOT / "__init__.py", submodule_search_locations=[str(ROOT)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACK_NAME] = module
    spec.loader.exec_module(module)
    return module


_load_pack()


def comfy_version() -> str:
    import runpy

    return runpy.run_path(str(COMFY_DIR / "comfyui_version.py"))["__version__"]


def pytest_report_header(config):
    return f"ComfyUI host: {comfy_version()} at {COMFY_DIR}, device {'cuda' if ON_GPU else 'cpu'}"


def pytest_terminal_summary(terminalreporter):
    """Print the measured w=0 / w=1 identity differences and the reliability figures, so a run records them."""
    diffs = getattr(sys.modules.get("harness"), "IDENTITY_DIFFS", None)
    if diffs:
        terminalreporter.section("RLG identities: max |RLG(w=0) - base|, |RLG(w=1) - RL| per case")
        for case, diff in sorted(diffs.items()):
            terminalreporter.write_line(f"{case:45s} {diff:.3e}")
        terminalreporter.write_line(f"{'overall max':45s} {max(diffs.values()):.3e}")
    reliability = sys.modules.get("reliability_host")  # tests/test_reliability.py
    lines = reliability.summary_lines() if reliability is not None else []
    if lines:
        terminalreporter.section(f"RLG reliability (ComfyUI {comfy_version()})")
        for line in lines:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def workflow_server(tmp_path_factory):
    """One ComfyUI server for the workflow and front-end tests (see workflow_host.py)."""
    from workflow_host import start_workflow_server

    server = start_workflow_server(tmp_path_factory.mktemp("workflows"))
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _inference_mode():
    """ComfyUI executes every node under torch.inference_mode(); in-process tests do the same."""
    import torch

    with torch.inference_mode():
        yield
