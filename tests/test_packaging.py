"""What the Comfy Registry gets: `comfy node pack` zips the files git tracks less those .comfyignore matches
(harness.pack.registry_files applies comfy-cli's rule). It must ship what ComfyUI loads of the pack and what its
README shows, and nothing else: no harness, tests, demo, scripts or benchmarks."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from harness.host import ROOT
from harness.pack import pack_sources, registry_files, web_directory

# The project's own folders: what the tests, the demo, the benchmarks and the scripts need, never the pack.
NOT_SHIPPED = ("harness/", "tests/", "demo/", "scripts/", "benchmarks/", ".ci/")


def _git_checkout() -> bool:
    if shutil.which("git") is None:
        return False
    return subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--is-inside-work-tree"],
                          capture_output=True, text=True).stdout.strip() == "true"


pytestmark = pytest.mark.skipif(not _git_checkout(), reason="comfy node pack packs a git checkout's tracked files")


def _readme_files() -> set[str]:
    """The checkout's files the README links or shows (relative links that name a file)."""
    links = re.findall(r"\]\(([^)\s#]+)", (ROOT / "README.md").read_text())
    files = {os.path.normpath(link) for link in links if "://" not in link}
    return {f for f in files if not f.startswith("..") and (ROOT / f).is_file()}


def test_comfy_node_pack_ships_what_comfyui_loads_and_the_readme_shows_and_nothing_else():
    shipped = set(registry_files())
    tracked = set(subprocess.run(["git", "-C", str(ROOT), "ls-files"], capture_output=True, text=True,
                                 check=True).stdout.split())
    loaded = {str(p.relative_to(ROOT)) for p in pack_sources()}
    workflows = {f for f in tracked if f.startswith("example_workflows/")}  # ComfyUI's template browser lists them
    wanted = loaded | workflows | _readme_files() | {"README.md", "LICENSE", "pyproject.toml"}

    project = sorted(f for f in shipped if f.startswith(NOT_SHIPPED))
    assert project == [], f"ships the project's own files: {project}"
    assert wanted & tracked <= shipped, f"tracked but not shipped: {sorted((wanted & tracked) - shipped)}"
    assert shipped <= wanted, (f"ships what ComfyUI does not load and the README does not show (add it to "
                               f".comfyignore): {sorted(shipped - wanted)}")
    assert web_directory() is not None and any(f.startswith("js/") for f in shipped)
