"""Templates in the real front-end, photographed for the docs: the demo templates as they open and after a queue
(laid out for their pictures), the scrubber on the demo sweep's grid (docs/scrubber.md), and one template of the
pack as it opens (the README's first picture).

The demo pair comes from RLG_DEMO_MODELS (a models folder with diffusion_models/ and loras/, as `make demo`
writes it), else from the host's models folder when `make demo` has run, else it is trained here at a tiny size
(seconds; its pictures are rougher). With RLG_WRITE_SCREENSHOTS=1 the pictures go to docs/frontend/ (the README's,
taken on the newest front-end of the matrix); otherwise to the test's temporary folder.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from harness import templates
from harness.frontend_layout import ABOVE, DRAWN, NODES, VISIBILITY, drawn_problems, hidden_nodes, open_template
from harness.host import ROOT, comfy_dir

pytestmark = [pytest.mark.server, pytest.mark.frontend]

DEMO_TEMPLATES = {"rlg_demo": "PreviewImage", "rlg_demo_sweep": "PreviewImage"}
DOCS = ROOT / "docs" / "frontend"
DEMO_FILES = ("diffusion_models/rlg_demo_base.safetensors", "loras/rlg_demo_rl_lora.safetensors")


def _demo_models(tmp: Path) -> Path:
    for candidate in (os.environ.get("RLG_DEMO_MODELS"), comfy_dir() / "models"):
        if candidate and all((Path(candidate) / f).exists() for f in DEMO_FILES):
            return Path(candidate)
    import torch

    from demo import run_demo, train

    tiny = train.TrainConfig(base_steps=40, base_batch=32, rl_samples=64, rl_sample_steps=4, rl_steps=30, rl_batch=32)
    with torch.inference_mode(False):
        run_demo.ensure_models(tmp, tiny, quiet=True)
    return tmp


@pytest.fixture(scope="module")
def demo_server(tmp_path_factory):
    from harness.frontend import write_settings
    from harness.server import ComfyServer

    models = _demo_models(tmp_path_factory.mktemp("demo_models"))
    work = tmp_path_factory.mktemp("screenshots")
    paths = work / "extra_model_paths.yaml"
    paths.write_text(f"demo:\n  base_path: {models}\n  diffusion_models: diffusion_models\n  loras: loras\n"
                     f"  custom_nodes: {ROOT / 'demo' / 'comfy_nodes'}\n")
    write_settings(work / "user")
    server = ComfyServer(work, paths, ["ComfyUI-RLG", "rlg_demo_nodes"]).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def chromium():
    from harness.frontend import chromium as launch

    with launch() as launched:
        yield launched


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    if os.environ.get("RLG_WRITE_SCREENSHOTS") == "1":
        DOCS.mkdir(parents=True, exist_ok=True)
        return DOCS
    return tmp_path_factory.mktemp("shots")


SHOWN = """(type) => {
  const node = (app.graph.nodes ?? app.graph._nodes).find((n) => n.type === type);
  return !!node?.imgs?.length && node.imgs.every((img) => img.complete && img.naturalWidth > 0);
}"""


@pytest.mark.parametrize("name", sorted(DEMO_TEMPLATES))
def test_demo_template_as_it_opens_and_after_a_queue(demo_server, chromium, shots, name):
    workflow = json.loads(templates.ui_path(name).read_text())
    context, page = open_template(chromium, demo_server, name, len(workflow["nodes"]), source=templates.source_of(name))
    try:
        assert not hidden_nodes(page.evaluate(VISIBILITY, 8)), "not everything is in view when it opens"
        page.screenshot(path=str(shots / f"{name}_open.png"))
        page.evaluate("async () => { await app.queuePrompt(0, 1); }")
        page.wait_for_function(SHOWN, arg=DEMO_TEMPLATES[name], timeout=300_000)
        page.wait_for_timeout(1000)
        # The pictures fit the nodes made for them: nothing grew over a neighbour, everything is still in view.
        assert not drawn_problems(page.evaluate(DRAWN)), drawn_problems(page.evaluate(DRAWN))
        assert not hidden_nodes(page.evaluate(VISIBILITY, 8)), hidden_nodes(page.evaluate(VISIBILITY, 8))
        page.screenshot(path=str(shots / f"{name}_queued.png"))
    finally:
        context.close()
    assert (shots / f"{name}_queued.png").stat().st_size > 0


# The demo sweep's grid framed at scale 1 with an RLG Apply on the demo pair beside it, to send the scale to.
FRAME_SCRUBBER = f"""() => {{
  const nodes = {NODES};
  const grid = nodes.find((n) => n.type === 'RLGSweepGrid');
  const preview = nodes.find((n) => n.type === 'PreviewImage');
  const base = nodes.find((n) => n.type === 'UNETLoader');
  const lora = nodes.find((n) => n.type === 'LoraLoaderModelOnly');
  const apply = LiteGraph.createNode('RLGApply');
  app.graph.add(apply);
  apply.pos = [preview.pos[0], preview.pos[1] + preview.size[1] + 80];  // under the preview, beside the grid
  base.connect(0, apply, apply.findInputSlot('model'));
  lora.connect(0, apply, apply.findInputSlot('rl_model'));
  app.canvas.ds.scale = 1;
  app.canvas.ds.offset = [140 - grid.pos[0], 170 - grid.pos[1]];  // below the front-end's menus
  app.canvas.setDirty(true, true);
  return [grid.id, apply.id];
}}"""
# The screen box of some nodes (title bars and badges included), with a margin.
CLIP = f"""(ids) => {{
  const r = (app.canvasEl ?? app.canvas.canvas).getBoundingClientRect(), ds = app.canvas.ds;
  const boxes = ids.map((id) => app.graph.getNodeById(id)).map((n) => [n.pos[0], n.pos[1] - {ABOVE},
    n.pos[0] + n.size[0], n.pos[1] + n.size[1]]);
  const x0 = Math.min(...boxes.map((b) => b[0])), y0 = Math.min(...boxes.map((b) => b[1]));
  const x1 = Math.max(...boxes.map((b) => b[2])), y1 = Math.max(...boxes.map((b) => b[3]));
  const m = 16, sx = r.left + (x0 + ds.offset[0]) * ds.scale - m, sy = r.top + (y0 + ds.offset[1]) * ds.scale - m;
  return {{x: Math.max(0, sx), y: Math.max(0, sy), width: (x1 - x0) * ds.scale + 2 * m,
           height: (y1 - y0) * ds.scale + 2 * m}};
}}"""
SCRUBBER_READY = """(id) => { const n = app.graph.getNodeById(id);
  return !!n && window.ComfyUI_RLG?.scrubber?.state(n).image === 'loaded'; }"""


def test_scrubber_on_the_demo_sweep(demo_server, chromium, shots):
    """After one queue of the demo sweep: rlg_scale 1.5 shown large and sent to an RLG Apply (rlg_scrubber.png),
    then 0 and 1.5 side by side (rlg_scrubber_compare.png)."""
    name = "rlg_demo_sweep"
    workflow = json.loads(templates.ui_path(name).read_text())
    context, page = open_template(chromium, demo_server, name, len(workflow["nodes"]), source=templates.source_of(name))
    try:
        grid, apply = page.evaluate(FRAME_SCRUBBER)
        page.wait_for_function("() => window.comfyAPI?.api?.api?.socket?.readyState === 1", timeout=60_000)
        page.evaluate("async () => { await app.queuePrompt(0, 1); }")
        page.wait_for_function(SCRUBBER_READY, arg=grid, timeout=300_000)
        page.locator(".rlg-scrub").focus()
        for _ in range(3):
            page.keyboard.press("ArrowRight")
        page.keyboard.press("Enter")
        value = page.evaluate("(id) => app.graph.getNodeById(id).widgets.find((w) => w.name === 'rlg_scale').value",
                              apply)
        assert value == 1.5
        page.wait_for_timeout(500)
        page.screenshot(path=str(shots / "rlg_scrubber.png"), clip=page.evaluate(CLIP, [grid, apply]))
        page.locator('.rlg-scrub select[aria-label="view"]').select_option("side")
        page.locator('.rlg-scrub select[aria-label="second scale"]').select_option("0")
        page.locator(".rlg-scrub").focus()
        page.wait_for_timeout(500)
        page.screenshot(path=str(shots / "rlg_scrubber_compare.png"), clip=page.evaluate(CLIP, [grid]))
    finally:
        context.close()
    assert (shots / "rlg_scrubber.png").stat().st_size > 0 and (shots / "rlg_scrubber_compare.png").stat().st_size > 0


# A template of the pack with real families' files, as an artist meets it: the README's first picture. The workflow
# server has stand-in files of every name the templates select, so no missing-model dialog covers it.
PACK_TEMPLATE = "rlg_sd35_flowgrpo_pickscore"


def test_pack_template_as_it_opens(workflow_server, chromium, shots):
    workflow = json.loads(templates.ui_path(PACK_TEMPLATE).read_text())
    context, page = open_template(chromium, workflow_server, PACK_TEMPLATE, len(workflow["nodes"]))
    try:
        assert not hidden_nodes(page.evaluate(VISIBILITY, 8)), "not everything is in view when it opens"
        page.screenshot(path=str(shots / f"{PACK_TEMPLATE}_open.png"))
    finally:
        context.close()
    assert (shots / f"{PACK_TEMPLATE}_open.png").stat().st_size > 0
