"""What the Comfy Registry gets: `comfy node pack` zips the files git tracks less those .comfyignore matches
(harness.pack.registry_files applies comfy-cli's rule). It must ship what ComfyUI loads of the pack (its sources,
its web folder with the node help pages, the templates), the templates' API twins, and the README with the
documentation pages it links, and nothing else: no harness, tests, demo, scripts or benchmarks."""

from __future__ import annotations

import json
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
    """The checkout's files the README links or shows (relative links that name a file), and those the markdown
    pages it links link or show in turn (docs/*.md and their pictures), through every page reached."""
    found, todo = set(), ["README.md"]
    while todo:
        page = todo.pop()
        for link in re.findall(r"\]\(([^)\s#]+)", (ROOT / page).read_text()):
            if "://" in link or link.startswith("mailto:"):
                continue
            path = os.path.normpath(os.path.join(os.path.dirname(page), link))
            if path.startswith(("..", *NOT_SHIPPED)) or not (ROOT / path).is_file() or path in found:
                continue  # the project's own files are for developers, on the repository
            found.add(path)
            if path.endswith(".md"):
                todo.append(path)
    return found


def test_comfy_node_pack_ships_what_comfyui_loads_and_the_readme_shows_and_nothing_else():
    shipped = set(registry_files())
    tracked = set(subprocess.run(["git", "-C", str(ROOT), "ls-files"], capture_output=True, text=True,
                                 check=True).stdout.split())
    loaded = {str(p.relative_to(ROOT)) for p in pack_sources()}
    # ComfyUI's template browser lists the first; the second holds their API twins, for scripts over HTTP.
    workflows = {f for f in tracked if f.startswith(("example_workflows/", "example_workflows_api/"))}
    wanted = loaded | workflows | _readme_files() | {"README.md", "LICENSE", "pyproject.toml"}

    project = sorted(f for f in shipped if f.startswith(NOT_SHIPPED))
    assert project == [], f"ships the project's own files: {project}"
    assert wanted & tracked <= shipped, f"tracked but not shipped: {sorted((wanted & tracked) - shipped)}"
    assert shipped <= wanted, (f"ships what ComfyUI does not load and the README does not show (add it to "
                               f".comfyignore): {sorted(shipped - wanted)}")
    assert web_directory() is not None and any(f.startswith("js/") for f in shipped)


def test_every_shipped_template_ships_its_api_twin_and_no_template_needs_the_demo():
    """Someone who queues over HTTP finds each template's API twin in the package (example_workflows_api/, which the
    template browser does not list), and no shipped template uses a node the package does not ship."""
    shipped = set(registry_files())
    names = {os.path.splitext(os.path.basename(f))[0] for f in shipped
             if f.startswith("example_workflows/") and f.endswith(".json")}
    twins = {os.path.splitext(os.path.basename(f))[0] for f in shipped if f.startswith("example_workflows_api/")}
    assert names and names == twins, sorted(names ^ twins)
    for name in sorted(names):
        types = {n["type"] for n in json.loads((ROOT / "example_workflows" / f"{name}.json").read_text())["nodes"]}
        assert not {t for t in types if t.startswith("RLGDemo")}, f"{name} needs the demo's nodes, which do not ship"
