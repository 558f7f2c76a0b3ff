"""Where the example workflows live: each node pack's templates and their API twins.

ComfyUI lists <pack folder>/example_workflows/*.json in its template browser, under the pack's folder name, with a
same-named .jpg as the card's picture. The pack's own templates (shipped) need nothing but the pack and stock
nodes; the demo's need the demo's two nodes, so they live in the demo's node pack (`make demo-server` loads it).
The API twin of each template (what graphToPrompt gives, for people who queue over HTTP) sits beside it in
example_workflows_api/, a folder the template browser does not list.
"""

from __future__ import annotations

from pathlib import Path

from .host import ROOT

PACK_NAME = "ComfyUI-RLG"  # the folder name ComfyUI knows the pack by (harness.server.PACK_DIR_NAME)
DEMO_PACK = ROOT / "demo" / "comfy_nodes" / "rlg_demo_nodes"
UI_FOLDER, API_FOLDER = "example_workflows", "example_workflows_api"
# {source, as the template browser names it: the node pack's folder}
SOURCES: dict[str, Path] = {PACK_NAME: ROOT, DEMO_PACK.name: DEMO_PACK}


def templates(source: str | None = None) -> dict[str, str]:
    """{template name: its source}, of one source or of all, sorted by name."""
    found = {path.stem: name for name, root in SOURCES.items() if source in (None, name)
             for path in (root / UI_FOLDER).glob("*.json")}
    return dict(sorted(found.items()))


def source_of(name: str) -> str:
    return templates()[name]


def ui_path(name: str, source: str | None = None) -> Path:
    """The template's UI workflow (what the template browser opens); source: where a new one goes."""
    return SOURCES[source or source_of(name)] / UI_FOLDER / f"{name}.json"


def api_path(name: str, source: str | None = None) -> Path:
    """The template's API twin."""
    return SOURCES[source or source_of(name)] / API_FOLDER / f"{name}.json"
