"""The suite's pytest plugin (pyproject's addopts load it: -p harness.pytest_plugin, from the checkout).

The checkout's root holds the pack's __init__.py, which ComfyUI imports as a package (relative imports). pytest
would take the root for a test package and import that __init__.py itself before any test ran: under the
checkout folder's name, a second copy of the pack, or an ImportError when that name is no identifier
("ComfyUI-RLG"). The root is collected as a plain folder instead; the tests load the pack as ComfyUI does
(harness.pack). A conftest cannot do this: pytest asks only plugins, not tests/conftest.py, about the root.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .host import ROOT


@pytest.hookimpl(tryfirst=True)
def pytest_collect_directory(path: Path, parent: pytest.Collector):
    if path == ROOT:
        return pytest.Dir.from_parent(parent, path=path)
    return None
