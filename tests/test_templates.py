"""The example workflows as templates, the way an artist meets them in the real front-end.

No two nodes overlap (title bars, source badges and the readout lines the pack's js draws included), everything is
in view when a template opens, every loader says where its files come from, every template has a thumbnail. The
file checks run everywhere; the browser checks (marked `frontend`) run on the front-end the host serves, so the
matrix covers 1.32.9, 1.35.9, 1.49.6 and 1.58.1.
"""

from __future__ import annotations

import json

import pytest

from harness import templates
from harness.frontend_layout import (
    ABOVE,
    DRAWN,
    NODES,
    VISIBILITY,
    drawn_problems,
    hidden_nodes,
    open_template,
    overlap,
)

TEMPLATES = list(templates.templates())  # the pack's and the demo's (harness/templates.py)
DOWNLOAD_SOURCES = ("https://huggingface.co/", "https://civitai.com/")
MODEL_DIRECTORIES = {"checkpoints", "loras", "vae", "text_encoders", "diffusion_models"}
VIEWPORT = (1600, 900)


def workflow(name: str) -> dict:
    return json.loads(templates.ui_path(name).read_text())


def _box(node: dict) -> tuple[float, float, float, float]:
    """What a node covers on the canvas, from the file: body, title bar and badge row (x, y, w, h)."""
    x, y = node["pos"]
    w, h = node["size"]
    return x, y - ABOVE, w, h + ABOVE


def _label(node: dict) -> str:
    return f"{node.get('type')}#{node.get('id')}"


# ---------------------------------------------------------------------------------------------- the files

@pytest.mark.parametrize("name", TEMPLATES)
def test_saved_layout_has_no_overlapping_nodes(name):
    """From the saved positions and sizes: a node's size includes the readout lines the pack's js adds (the
    builder saves the sizes the front-end gives the nodes when the file is opened)."""
    nodes = workflow(name)["nodes"]
    clashes = [(_label(a), _label(b)) for i, a in enumerate(nodes) for b in nodes[i + 1:] if overlap(_box(a), _box(b))]
    assert not clashes, f"{name}: overlapping nodes {clashes}"


@pytest.mark.parametrize("name", TEMPLATES)
def test_template_opens_with_the_graph_fitted(name):
    """No stored view: every front-end fits the graph into the window when the template opens (1.32.9 and 1.35.9
    would restore the stored view as it is, 1.49+ fit templates anyway)."""
    assert "ds" not in workflow(name).get("extra", {}), name


def test_every_loader_says_where_its_files_come_from():
    from scripts.build_workflows import MODELS

    missing = []
    for name in TEMPLATES:
        for node in workflow(name)["nodes"]:
            files = [v for v in node.get("widgets_values") or [] if isinstance(v, str) and v.endswith(".safetensors")]
            entries = {e["name"]: e for e in node.get("properties", {}).get("models", [])}
            for file in files:
                if file in MODELS:
                    entry = entries.get(file)
                    assert entry, f"{name}: {_label(node)} selects {file} without its model metadata"
                    assert entry["url"].startswith(DOWNLOAD_SOURCES), entry  # the front-ends download only these
                    assert entry["directory"] in MODEL_DIRECTORIES, entry  # never the legacy clip / unet
                elif node["type"] != "Note":
                    missing.append((name, file))
            assert set(entries) <= set(files), f"{name}: {_label(node)} lists files it does not select"
    # The files without a download: the demo's (made by `make demo`) and RL LoRAs that are not published.
    assert {file for _, file in missing} <= {
        "rlg_demo_base.safetensors", "rlg_demo_rl_lora.safetensors", "z_image_turbo_rl/adapter_model.safetensors",
        "flux2_dev_rl/adapter_model.safetensors", "hunyuanvideo1.5_rl_lora.safetensors", "ltxv_rl_lora.safetensors"}


def test_every_template_has_a_square_thumbnail_and_a_description():
    from PIL import Image

    from scripts.build_workflows import DESCRIPTIONS

    assert set(DESCRIPTIONS) == set(TEMPLATES)
    for name in TEMPLATES:
        with Image.open(templates.ui_path(name).with_suffix(".jpg")) as image:
            assert image.format == "JPEG" and image.width == image.height >= 256, name
        assert DESCRIPTIONS[name].replace("_", " ") != name.replace("_", " ")
        note = next(n for n in workflow(name)["nodes"] if n["type"] == "Note")
        assert note["widgets_values"][0].startswith(DESCRIPTIONS[name]), name


# ---------------------------------------------------------------------------------------------- the front-end

@pytest.fixture(scope="module")
def chromium():
    from harness.frontend import chromium as launch

    with launch() as launched:
        yield launched


@pytest.mark.server
@pytest.mark.frontend
@pytest.mark.parametrize("name", TEMPLATES)
def test_template_opens_with_every_node_in_view_and_readable(workflow_server, chromium, name):
    """In a 1600x900 window, as it opens: each node (title bar and badge row included) inside the window and under
    nothing else (tab bar, side toolbar, menus, minimap, dialogs); and at a scale where the canvas draws text."""
    context, page = open_template(chromium, workflow_server, name, len(workflow(name)["nodes"]), VIEWPORT,
                                  templates.source_of(name))
    try:
        seen = page.evaluate(VISIBILITY, 6)
    finally:
        context.close()
    hidden = hidden_nodes(seen)
    assert not hidden, f"{name}: nodes not fully in view at scale {seen['scale']:.2f}: {hidden}"
    assert seen["lowQuality"] is not True and seen["scale"] >= 8 / 14, f"{name}: opens at {seen['scale']:.3f}, no text"


@pytest.mark.server
@pytest.mark.frontend
def test_no_node_or_text_it_draws_overlaps_another_in_the_front_end(workflow_server, chromium):
    """Measured in the front-end, with the sizes it gives the nodes when the file is opened: node boxes (title bar
    and badge row included), and every text a node draws (title, widgets, badge, the readout lines) inside its own
    box and on no other node."""
    from harness.frontend import new_context, open_page, reset_settings

    reset_settings(workflow_server)
    context = new_context(chromium, (3200, 2000))
    problems = {}
    try:
        page = open_page(context, workflow_server.url)
        for name in TEMPLATES:
            page.evaluate("async (wf) => { await app.loadGraphData(wf); }", workflow(name))
            page.wait_for_timeout(200)
            drawn = page.evaluate(DRAWN)
            found = drawn_problems(drawn) + _grown_on_load(workflow(name), drawn)
            readouts = [n for n in drawn["nodes"] if n["readout"]]
            if any(n["label"].startswith(("RLGApply#", "RLGScaleSweep#")) for n in drawn["nodes"]):
                assert readouts, f"{name}: no readout drawn by the pack's js"
            if found:
                problems[name] = found
    finally:
        context.close()
    assert not problems, json.dumps(problems, indent=1)[:6000]


def _grown_on_load(saved: dict, drawn: dict) -> list[str]:
    """RLG nodes keep their saved height when the file is opened: the saved size already holds the readout's
    lines, so the saved layout (and the file check above) is what the front-end shows."""
    heights = {str(n["id"]): n["size"][1] for n in saved["nodes"] if n["type"].startswith("RLG")}
    return [f"{n['label']} grew from {heights[n['id']]:.0f} to {n['box'][3] - ABOVE:.0f} px high on load"
            for n in drawn["nodes"] if n["id"] in heights and n["box"][3] - ABOVE > heights[n["id"]] + 0.5]


# ---------------------------------------------------------------------------------------------- as installed

# Nodes the front-end itself provides (no server class): a template may hold them with the pack alone.
FRONT_END_NODES = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}


@pytest.fixture(scope="module")
def installed_server(tmp_path_factory):
    """ComfyUI with nothing but the pack as the registry package ships it: a copy of the files `comfy node pack`
    zips (harness.pack.registry_files), as custom_nodes/ComfyUI-RLG; no test or demo nodes, no model files."""
    from harness.frontend import write_settings
    from harness.host import ROOT
    from harness.pack import registry_files
    from harness.server import ComfyServer

    work = tmp_path_factory.mktemp("installed")
    pack = work / "packs" / templates.PACK_NAME
    for name in registry_files():
        (pack / name).parent.mkdir(parents=True, exist_ok=True)
        (pack / name).write_bytes((ROOT / name).read_bytes())
    config = work / "installed_paths.yaml"
    config.write_text(f"installed:\n  custom_nodes: {pack.parent}\n")

    class Installed(ComfyServer):
        def _link_pack(self):  # the copy above, not a link to the checkout
            return config

    write_settings(work / "user")
    server = Installed(work, config, [templates.PACK_NAME]).start()
    yield server
    server.stop()


def _shipped_templates(server) -> dict[str, dict]:
    """{name: the UI workflow} of every template the installed pack lists, read from the server."""
    import urllib.request

    names = server.get("/workflow_templates").get(templates.PACK_NAME, [])
    out = {}
    for name in names:
        with urllib.request.urlopen(f"{server.url}/api/workflow_templates/{templates.PACK_NAME}/{name}.json",
                                    timeout=30) as resp:
            out[name] = json.loads(resp.read())
    return out


@pytest.mark.server
def test_every_shipped_template_has_every_node_with_the_pack_alone(installed_server):
    """What someone who installs the pack from the registry meets: every template it lists is one of the pack's
    (the demo's need the demo's nodes and are not shipped), and each node of each is on the server, or one the
    front-end provides. Model files may be missing: the loaders carry their download metadata."""
    shipped = _shipped_templates(installed_server)
    assert sorted(shipped) == list(templates.templates(templates.PACK_NAME)), sorted(shipped)
    info = installed_server.get("/object_info")
    missing = {name: sorted({n["type"] for n in wf["nodes"]} - set(info) - FRONT_END_NODES)
               for name, wf in shipped.items()}
    assert not any(missing.values()), {k: v for k, v in missing.items() if v}


MISSING_NODES = f"""() => {{
  const nodes = {NODES};
  return {{count: nodes.length,
          missing: [...new Set(nodes.filter((n) => !LiteGraph.registered_node_types[n.type]).map((n) => n.type))]}};
}}"""


@pytest.mark.server
@pytest.mark.frontend
def test_every_shipped_template_opens_with_no_missing_node_in_the_front_end(installed_server, chromium):
    """Each template opened as the template browser opens it, in the front-end of the installed pack's server:
    every node is one the front-end knows (none drawn as a missing node)."""
    problems = {}
    for name, wf in _shipped_templates(installed_server).items():
        context, page = open_template(chromium, installed_server, name, len(wf["nodes"]), VIEWPORT)
        try:
            seen = page.evaluate(MISSING_NODES)
        finally:
            context.close()
        if seen["missing"] or seen["count"] != len(wf["nodes"]):
            problems[name] = seen
    assert not problems, problems
