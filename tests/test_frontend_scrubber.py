"""The scrubber on RLG Sweep Grid (js/rlg_scrubber.js) in the real front-end, after a real sweep through the server.

A sweep of four scales over a batch of two noises runs on the tiny SD3 pair (tests/comfy_test_nodes, the stand-in
files of harness/workflow_host.py), queued from the page. Then, in the front-end the host serves: the slider, the
buttons and the keys step through the scales, and what the node shows is that scale's column, pixel for pixel the
picture the node saved (read back over /view and cropped here with nodes/sweep_grid.py's own boxes); the two
comparisons and the whole grid likewise; "Use this scale" writes the target's rlg_scale, its readout follows and
the front-end's undo (Ctrl+Z) takes it back; a page reload and a saved and loaded workflow keep what was chosen;
the node says when the graph has changed since the run; a workflow saved before the scrubber loads as it was.
"""

from __future__ import annotations

import base64
import io
import json
import math
import urllib.parse
import urllib.request

import numpy as np
import pytest

from harness.host import ROOT

pytestmark = [pytest.mark.server, pytest.mark.frontend]

SCALES = [0.0, 0.5, 1.0, 2.5]  # RLG Apply's default rlg_scale (1.5) is none of them
BATCH = 2  # two noises: two rows per scale
PIXELS = 32  # RLG Demo Decode's picture size
BACKGROUND = (24, 24, 24, 255)  # nodes/sweep_grid.py BACKGROUND, in the gaps between rows
HOOKS = "window.ComfyUI_RLG?.scrubber?.state !== undefined"
NODES = "(app.graph.nodes ?? app.graph._nodes)"
ROOT_EL = ".rlg-scrub"

# The sweep, built in the page and queued from it (this page's client gets the grid's result).
BUILD = """async ([scales, batch, pixels, targets]) => {
  app.graph.clear();
  const add = (type, pos, values = {}) => {
    const n = LiteGraph.createNode(type);
    app.graph.add(n);
    n.pos = pos;
    for (const [k, v] of Object.entries(values)) {
      const w = n.widgets.find((w) => w.name === k);
      if (!w) throw new Error(type + ' has no widget ' + k);
      w.value = v;
    }
    return n;
  };
  const ckpt = add('CheckpointLoaderSimple', [0, 0], {ckpt_name: 'sd3.5_medium.safetensors'});
  const lora = add('RLGLoraLoaderModelOnly', [0, 160],
    {lora_name: 'sd3.5m_flow_grpo_pickscore/adapter_model.safetensors', strength_model: 1.0});
  const cond = add('RLGTestConditioning', [0, 320], {family: 'sd3', seed: 0, control_after_generate: 'fixed',
    batch_size: 1});
  const latent = add('EmptySD3LatentImage', [0, 520], {width: 64, height: 64, batch_size: batch});
  const sweep = add('RLGScaleSweep', [300, 0], {scales});
  const sampler = add('KSampler', [300, 300], {seed: 3, control_after_generate: 'fixed', steps: 2, cfg: 1.0,
    sampler_name: 'euler', scheduler: 'simple', denoise: 1.0});
  const decode = add('RLGDemoDecode', [300, 640], {pixels});
  const grid = add('RLGSweepGrid', [620, 0]);
  ckpt.connect(0, lora, lora.findInputSlot('model'));
  ckpt.connect(0, sweep, sweep.findInputSlot('model'));
  lora.connect(0, sweep, sweep.findInputSlot('rl_model'));
  latent.connect(0, sweep, sweep.findInputSlot('latent'));
  sweep.connect(0, sampler, sampler.findInputSlot('model'));
  sweep.connect(1, sampler, sampler.findInputSlot('latent_image'));
  cond.connect(0, sampler, sampler.findInputSlot('positive'));
  cond.connect(1, sampler, sampler.findInputSlot('negative'));
  sampler.connect(0, decode, decode.findInputSlot('samples'));
  decode.connect(0, grid, grid.findInputSlot('images'));
  sweep.connect(2, grid, grid.findInputSlot('sweep_scales'));
  const ids = {grid: grid.id, sampler: sampler.id, sweep: sweep.id, targets: []};
  targets.forEach((type, i) => {
    const t = add(type, [1020, 320 * i]);
    if (t.findInputSlot('model') >= 0) {
      ckpt.connect(0, t, t.findInputSlot('model'));
      lora.connect(0, t, t.findInputSlot('rl_model'));
    }
    ids.targets.push(t.id);
  });
  grid.setSize([360, 520]);
  app.canvas.ds.scale = 1;
  app.canvas.ds.offset = [40, 80];
  app.canvas.setDirty(true, true);
  await app.queuePrompt(0, 1);
  return ids;
}"""

STATE = "(id) => window.ComfyUI_RLG.scrubber.state(app.graph.getNodeById(id))"
PIXELS_JS = "(id) => window.ComfyUI_RLG.scrubber.pixels(app.graph.getNodeById(id))"
RESULT = "(id) => app.graph.getNodeById(id).properties.rlg_sweep_result"
LOADED = "(id) => { const n = window.app?.graph?.getNodeById(id); return !!n && " \
         "window.ComfyUI_RLG.scrubber.state(n).image === 'loaded'; }"
WIDGET = """([id, name]) => {
  const n = app.graph.getNodeById(id);
  return [n.widgets.find((w) => w.name === name).value, n.rlgSummary?.text ?? null];
}"""
# A change as the artist makes it: the widget's value and callback, then the mouse button let go (the change
# tracker records a step there).
EDIT = """([id, name, value]) => {
  const n = app.graph.getNodeById(id);
  const w = n.widgets.find((w) => w.name === name);
  w.value = value;
  w.callback?.(value, app.canvas, n);
  window.dispatchEvent(new MouseEvent('mouseup'));
}"""


def version(page) -> tuple[int, ...]:
    return tuple(int(p) for p in page.evaluate("window.__COMFYUI_FRONTEND_VERSION__").split("."))


@pytest.fixture(scope="module")
def chromium():
    from harness.frontend import chromium as launch

    with launch() as launched:
        yield launched


@pytest.fixture
def context(workflow_server, chromium):
    from harness.frontend import new_context, reset_settings

    reset_settings(workflow_server)
    made = new_context(chromium)
    try:
        yield made
    finally:
        made.close()
        reset_settings(workflow_server)


def open_scrubber_page(context, url: str):
    from harness.frontend import open_page

    page = open_page(context, url)
    page.wait_for_function(HOOKS, timeout=60_000)
    return page


def queued_sweep(page, targets=("RLGApply",)) -> dict:
    """Build the sweep in the page, queue it, and wait for the scrubber to show its picture."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    # The page's websocket first: the server sends the grid's result to the client that queued (a prompt it has
    # run before is answered at once, from its cache).
    page.wait_for_function("() => { const a = window.comfyAPI?.api?.api; return !!a?.clientId && "
                           "a.socket?.readyState === 1; }", timeout=60_000)
    ids = page.evaluate(BUILD, [", ".join(f"{s:g}" for s in SCALES), BATCH, PIXELS, list(targets)])
    try:
        page.wait_for_function(LOADED, arg=ids["grid"], timeout=180_000)
    except PlaywrightTimeout:
        queue = page.evaluate("async () => [await (await fetch('/queue')).json(), "
                              "await (await fetch('/history')).json()]")
        raise AssertionError(f"no picture on the scrubber: {page.evaluate(STATE, ids['grid'])}; queue and history "
                             f"{json.dumps(queue)[-3000:]}") from None
    return ids


def picture(server, result: dict) -> np.ndarray:
    """The grid picture the node saved, as the server serves it (RGBA)."""
    from PIL import Image

    image = result["image"]
    query = urllib.parse.urlencode({"filename": image["filename"], "subfolder": image["subfolder"],
                                    "type": image["type"]})
    with urllib.request.urlopen(f"{server.url}/view?{query}", timeout=30) as resp:
        return np.asarray(Image.open(io.BytesIO(resp.read())).convert("RGBA"))


def shown(page, grid_id) -> np.ndarray:
    got = page.evaluate(PIXELS_JS, grid_id)
    return np.frombuffer(base64.b64decode(got["rgba"]), dtype=np.uint8).reshape(got["height"], got["width"], 4)


def expected(pic: np.ndarray, layout, view: str, a: int, b: int = 0, divider: float = 0.5) -> np.ndarray:
    """What the scrubber must show, cut out of the picture with the Python layout's own boxes."""
    if view == "grid":
        return pic
    w, h, gap, rows = layout.image_width, layout.image_height, layout.gap, layout.rows

    def column(c: int) -> np.ndarray:
        out = np.empty((rows * h + (rows - 1) * gap, w, 4), dtype=np.uint8)
        out[:] = BACKGROUND
        for r in range(rows):
            x, y, _, _ = layout.image_box(c, r)
            out[r * (h + gap):r * (h + gap) + h] = pic[y:y + h, x:x + w]
        return out

    if view == "side":
        spacer = np.empty((rows * h + (rows - 1) * gap, gap, 4), dtype=np.uint8)
        spacer[:] = BACKGROUND
        return np.concatenate([column(a), spacer, column(b)], axis=1)
    if view == "overlay":
        split = max(0, min(w, math.floor(divider * w + 0.5)))
        return np.concatenate([column(a)[:, :split], column(b)[:, split:]], axis=1)
    return column(a)


def the_layout(result: dict):
    from comfyui_rlg.nodes.sweep_grid import grid_layout

    layout = grid_layout(len(SCALES) * BATCH, PIXELS, PIXELS, len(SCALES))
    assert result["layout"] == layout.as_dict(), "the node's boxes are not nodes/sweep_grid.py's"
    return layout


def check_view(page, server, grid_id, view: str, a: int, b: int = 0, divider: float = 0.5) -> None:
    state = page.evaluate(STATE, grid_id)
    assert (state["view"], state["index"]) == (view, a), state
    if view in ("side", "overlay"):
        assert state["other"] == b, state
    result = page.evaluate(RESULT, grid_id)
    want = expected(picture(server, result), the_layout(result), view, a, b, divider)
    got = shown(page, grid_id)
    assert got.shape == want.shape, (view, a, b, got.shape, want.shape)
    assert np.array_equal(got, want), f"{view} {a}/{b}: {int((got != want).any(axis=-1).sum())} pixels differ"


def labels(page) -> list[str]:
    return page.eval_on_selector_all(f"{ROOT_EL} .rlg-label", "(els) => els.map((e) => e.textContent)")


def test_slider_and_keys_step_through_the_scales_showing_each_columns_pixels(workflow_server, context):
    page = open_scrubber_page(context, workflow_server.url)
    ids = queued_sweep(page)
    grid = ids["grid"]
    state = page.evaluate(STATE, grid)
    assert state["scales"] == SCALES and state["result"] and not state["warning"], state
    # The picture the node saved is the grid IMAGE output's, and the boxes are the layout's.
    result = page.evaluate(RESULT, grid)
    assert result["labels"] == [f"rlg_scale {s:g}" for s in SCALES]
    assert picture(workflow_server, result).shape[:2] == tuple(reversed(result["layout"]["size"]))
    root = page.locator(ROOT_EL)
    root.focus()
    for i in range(len(SCALES)):
        check_view(page, workflow_server, grid, "one", i)
        assert labels(page)[0].startswith(f"rlg_scale {SCALES[i]:g} · "), labels(page)
        page.keyboard.press("ArrowRight")
    check_view(page, workflow_server, grid, "one", len(SCALES) - 1)  # stays on the last
    page.keyboard.press("Home")
    check_view(page, workflow_server, grid, "one", 0)
    page.keyboard.press("End")
    page.keyboard.press("ArrowLeft")
    check_view(page, workflow_server, grid, "one", len(SCALES) - 2)
    # The slider (its own keys) and the buttons.
    slider = page.locator(f'{ROOT_EL} input[aria-label="rlg_scale shown"]')
    slider.focus()
    page.keyboard.press("Home")
    check_view(page, workflow_server, grid, "one", 0)
    page.keyboard.press("ArrowRight")
    check_view(page, workflow_server, grid, "one", 1)
    page.locator(f'{ROOT_EL} button[aria-label="next scale"]').click()
    check_view(page, workflow_server, grid, "one", 2)
    page.locator(f'{ROOT_EL} button[aria-label="previous scale"]').click()
    check_view(page, workflow_server, grid, "one", 1)
    # Two scales side by side, then overlaid with a divider; Shift + arrows step the second one.
    page.locator(f'{ROOT_EL} select[aria-label="view"]').select_option("side")
    check_view(page, workflow_server, grid, "side", 1, 2)
    assert labels(page) == ["rlg_scale 0.5", "rlg_scale 1"]
    root.focus()
    page.keyboard.press("Shift+ArrowRight")
    check_view(page, workflow_server, grid, "side", 1, 3)
    page.locator(f'{ROOT_EL} select[aria-label="view"]').select_option("overlay")
    check_view(page, workflow_server, grid, "overlay", 1, 3, 0.5)
    divider = page.locator(f'{ROOT_EL} input[aria-label="divider"]')
    divider.focus()
    for _ in range(25):
        page.keyboard.press("ArrowLeft")
    check_view(page, workflow_server, grid, "overlay", 1, 3, 0.25)
    page.locator(f'{ROOT_EL} select[aria-label="view"]').select_option("grid")
    check_view(page, workflow_server, grid, "grid", 1)
    root.focus()
    page.keyboard.press("Escape")
    check_view(page, workflow_server, grid, "one", 1)
    # Readable at the default zoom: the picture fills the node's width, the text is 12-13 px.
    state = page.evaluate(STATE, grid)
    assert state["frame"][1] >= 200, state["frame"]
    assert page.evaluate(f"parseFloat(getComputedStyle(document.querySelector('{ROOT_EL}')).fontSize)") >= 13


def test_use_this_scale_writes_the_target_and_undo_takes_it_back(workflow_server, context):
    page = open_scrubber_page(context, workflow_server.url)
    ids = queued_sweep(page)
    grid, (apply,) = ids["grid"], ids["targets"]
    page.evaluate(EDIT, [apply, "rlg_scale", 0.7])  # the artist's own value first
    page.wait_for_timeout(300)
    assert page.evaluate(WIDGET, [apply, "rlg_scale"])[0] == pytest.approx(0.7)
    page.locator(ROOT_EL).focus()
    for _ in range(3):
        page.keyboard.press("ArrowRight")
    state = page.evaluate(STATE, grid)
    assert state["scale"] == 2.5 and state["use"] == f"Use rlg_scale 2.5 → RLG Apply #{apply}", state
    assert not state["chooser"]  # one target: no question
    page.keyboard.press("Enter")
    value, readout = page.evaluate(WIDGET, [apply, "rlg_scale"])
    assert value == 2.5 and readout.startswith("rlg_scale 2.5: stronger than the RL model"), readout
    assert "sent to RLG Apply" in page.evaluate(STATE, grid)["note"]
    # The front-end's own undo, with the canvas's keys (the focus off the scrubber).
    page.evaluate("() => document.activeElement?.blur()")
    page.wait_for_timeout(300)
    page.keyboard.press("Control+z")
    page.wait_for_function("([id, v]) => app.graph.getNodeById(id)?.widgets.find((w) => w.name === 'rlg_scale')"
                           ".value === v", arg=[apply, 0.7], timeout=20_000)
    page.wait_for_timeout(300)
    value, readout = page.evaluate(WIDGET, [apply, "rlg_scale"])
    assert value == pytest.approx(0.7) and readout.startswith("rlg_scale 0.7: between base and RL"), readout
    # Undo took back that one change only: the scrubber still shows its run, at the scale it was on.
    page.wait_for_function(LOADED, arg=grid, timeout=20_000)
    state = page.evaluate(STATE, grid)
    assert state["result"] and state["scale"] == 2.5, state
    check_view(page, workflow_server, grid, "one", 3)
    # Redo puts it back.
    page.keyboard.press("Control+y")
    page.wait_for_function("([id, v]) => app.graph.getNodeById(id)?.widgets.find((w) => w.name === 'rlg_scale')"
                           ".value === v", arg=[apply, 2.5], timeout=20_000)

    # Two targets: the artist is asked which one; the other one is left alone.
    guider = page.evaluate("""() => {
      const g = LiteGraph.createNode('RLGGuider');
      app.graph.add(g);
      g.pos = [1020, 700];
      return g.id;
    }""")
    page.wait_for_timeout(600)  # the scrubber sees the graph change when it is drawn next
    state = page.evaluate(STATE, grid)
    assert state["chooser"] and state["choices"] == ["which node?", f"RLG Apply #{apply}", f"RLG Guider #{guider}"]
    page.locator(ROOT_EL).focus()
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("Enter")
    assert page.evaluate(STATE, grid)["note"] == "Choose which node gets the scale." and \
        page.evaluate(WIDGET, [guider, "rlg_scale"])[0] == 1.5
    page.locator(f'{ROOT_EL} select[aria-label="node that gets the scale"]').select_option(str(guider))
    page.locator(f"{ROOT_EL} .rlg-use").click()
    assert page.evaluate(WIDGET, [guider, "rlg_scale"])[0] == 1.0
    assert page.evaluate(WIDGET, [apply, "rlg_scale"])[0] == 2.5
    # None: the node says so, and the button is off.
    page.evaluate(f"""() => {{ for (const n of [...{NODES}]) if (['RLGApply', 'RLGGuider'].includes(n.type))
      app.graph.remove(n); }}""")
    page.wait_for_timeout(600)
    state = page.evaluate(STATE, grid)
    assert state["useDisabled"] and state["note"].startswith("No RLG Apply, RLG Guider or RLG RL Model"), state


def test_reload_and_saved_workflow_keep_the_choice_and_a_changed_graph_is_said(workflow_server, context):
    page = open_scrubber_page(context, workflow_server.url)
    ids = queued_sweep(page, targets=("RLGRLModel",))
    grid, sampler, sweep, (term,) = ids["grid"], ids["sampler"], ids["sweep"], ids["targets"]
    page.locator(ROOT_EL).focus()
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    page.keyboard.press("Enter")  # RLG RL Model gets 1
    page.locator(f'{ROOT_EL} select[aria-label="view"]').select_option("side")
    page.wait_for_timeout(1500)  # the front-end keeps the workflow for a reload (each recorded change)
    page.reload()
    page.wait_for_function(f"window.app && window.app.graph && window.LiteGraph && {HOOKS}", timeout=90_000)
    page.wait_for_function(LOADED, arg=grid, timeout=60_000)
    state = page.evaluate(STATE, grid)
    assert (state["scale"], state["view"], state["other"]) == (1.0, "side", 3), state
    assert page.evaluate(WIDGET, [term, "rlg_scale"])[0] == 1.0
    check_view(page, workflow_server, grid, "side", 2, 3)
    assert not state["warning"], state["note"]
    # Saved and loaded again: the same; and the widgets are where they were (nothing added to widgets_values).
    saved = page.evaluate("() => JSON.parse(JSON.stringify(app.graph.serialize()))")
    grid_saved = next(n for n in saved["nodes"] if str(n["id"]) == str(grid))  # 1.58.1: live ids are strings
    assert grid_saved["widgets_values"] == [""] and grid_saved["properties"]["rlg_scrubber"]["scale"] == 1.0
    page.evaluate("async (wf) => { app.graph.clear(); await app.loadGraphData(wf); }", saved)
    page.wait_for_function(LOADED, arg=grid, timeout=60_000)
    check_view(page, workflow_server, grid, "side", 2, 3)
    prompt = page.evaluate("async () => (await app.graphToPrompt()).output")
    assert set(prompt[str(grid)]["inputs"]) == {"images", "scales", "sweep_scales"}, prompt[str(grid)]

    # The graph changes after the run: the node says so, plainly; put back, the note goes.
    page.evaluate(EDIT, [sampler, "seed", 4])
    page.wait_for_timeout(700)
    state = page.evaluate(STATE, grid)
    assert state["warning"] and state["note"].startswith("These images are from an earlier run. Changed since: "
                                                         "KSampler seed 3 → 4"), state["note"]
    page.evaluate(EDIT, [sweep, "scales", "0, 1"])
    page.wait_for_timeout(700)
    assert "RLG Scale Sweep scales 0, 0.5, 1, 2.5 → 0, 1" in page.evaluate(STATE, grid)["note"]
    page.evaluate(EDIT, [sampler, "seed", 3])
    page.evaluate(EDIT, [sweep, "scales", "0, 0.5, 1, 2.5"])
    page.wait_for_timeout(700)
    assert not page.evaluate(STATE, grid)["warning"], page.evaluate(STATE, grid)["note"]
    # A seed the front-end moves after each queue is said, but as what it is.
    page.evaluate(EDIT, [sampler, "control_after_generate", "increment"])
    page.evaluate(EDIT, [sampler, "seed", 5])
    page.wait_for_timeout(700)
    state = page.evaluate(STATE, grid)
    assert not state["warning"] and state["note"] == "Made before KSampler seed 3 → 5 (increment after each queue).", \
        state["note"]
    page.evaluate("(id) => { app.graph.getNodeById(id).mode = 4; window.dispatchEvent(new MouseEvent('mouseup')); }",
                  ids["sweep"])
    page.wait_for_timeout(700)
    assert "RLG Scale Sweep bypassed" in page.evaluate(STATE, grid)["note"]


LEGACY = ROOT / "tests" / "legacy_sweep_workflows"


def test_sweep_workflows_saved_before_the_scrubber_load_as_they_were(workflow_server, context):
    page = open_scrubber_page(context, workflow_server.url)
    for path in [*sorted(LEGACY.glob("*.ui.json")), *sorted((ROOT / "example_workflows").glob("*sweep.json"))]:
        workflow = json.loads(path.read_text())
        page.evaluate("async (wf) => { await app.loadGraphData(wf); }", workflow)
        (old,) = [n for n in workflow["nodes"] if n["type"] == "RLGSweepGrid"]
        saved = page.evaluate("() => JSON.parse(JSON.stringify(app.graph.serialize()))")
        (new,) = [n for n in saved["nodes"] if n["type"] == "RLGSweepGrid"]
        assert new["widgets_values"] == old["widgets_values"], path.name
        state = page.evaluate(STATE, new["id"])
        assert not state["result"] and state["image"] is None and not state["fallback"], (path.name, state)
        assert page.evaluate("(id) => app.graph.getNodeById(id).rlgScrubber.root.classList.contains('rlg-empty')",
                             new["id"]), path.name


def test_front_end_without_dom_widgets_shows_the_grid_with_a_note(workflow_server, context):
    """Every front-end of the matrix has node.addDOMWidget; without it the node shows the whole grid picture."""
    page = open_scrubber_page(context, workflow_server.url)
    ids = queued_sweep(page, targets=())
    result = page.evaluate(RESULT, ids["grid"])
    got = page.evaluate("""async (result) => {
      let proto = Object.getPrototypeOf(LiteGraph.createNode('RLGSweepGrid'));
      while (proto && !Object.hasOwn(proto, 'addDOMWidget')) proto = Object.getPrototypeOf(proto);
      const own = Object.getOwnPropertyDescriptor(proto, 'addDOMWidget');
      proto.addDOMWidget = undefined;
      try {
        const n = LiteGraph.createNode('RLGSweepGrid');
        app.graph.add(n);
        n.onExecuted({rlg_sweep: [result]});
        for (let i = 0; i < 100 && !n.imgs?.length; i++) await new Promise((r) => setTimeout(r, 50));
        return {imgs: n.imgs?.map((i) => [i.naturalWidth, i.naturalHeight]) ?? null, readout: n.rlgSummary.lines,
                state: window.ComfyUI_RLG.scrubber.state(n)};
      } finally {
        if (own) Object.defineProperty(proto, 'addDOMWidget', own); else delete proto.addDOMWidget;
      }
    }""", result)
    assert got["imgs"] == [result["layout"]["size"]], got
    assert got["state"]["fallback"] and any("no scrubber in this front-end" in line for line in got["readout"]), got
