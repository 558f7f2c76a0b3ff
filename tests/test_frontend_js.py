"""js/rlg_dial.js in the real front-end: served, loaded, and saying what the RLG settings mean in plain words."""

import os

import pytest

pytestmark = [pytest.mark.server, pytest.mark.frontend]

HOOKS = "window.ComfyUI_RLG !== undefined"

SET = """
  const set = (node, name, value) => {
    const w = node.widgets.find(w => w.name === name);
    w.value = value;
    w.callback?.(value);
  };
  const row = (node) => [node.rlgSummary.text, node.rlgSummary.warning, node.bgcolor ?? null];
"""

READ = """() => {""" + SET + """
  const node = LiteGraph.createNode('RLGApply');
  app.graph.add(node);
  const out = [];
  for (const [scale, start, end] of [[0, 0, 1], [1, 0, 1], [1.6, 0, 1], [0.5, 0.2, 0.8], [-1, 0, 1], [1.5, 0.8, 0.2]]) {
    set(node, 'rlg_scale', scale); set(node, 'start_percent', start); set(node, 'end_percent', end);
    out.push(row(node));
  }
  set(node, 'start_percent', 0); set(node, 'end_percent', 1);
  out.push(row(node));
  const endScale = node.widgets.find(w => w.name === 'end_scale');
  const unused = [endScale.label ?? null, !!endScale.disabled];
  set(node, 'schedule', 'cosine'); set(node, 'end_scale', 0.5);
  out.push(row(node));
  const used = [endScale.label ?? null, !!endScale.disabled];
  set(node, 'schedule', 'constant'); set(node, 'rl_cfg', 1);
  out.push(row(node));
  set(node, 'rl_cfg', 0); set(node, 'rl_every', 2);
  out.push(row(node));
  set(node, 'rl_every', 1); set(node, 'start_percent', 0.2); set(node, 'end_percent', 0.7);
  set(node, 'outside_window', 'off');
  out.push(row(node));
  const term = LiteGraph.createNode('RLGRLModel');
  app.graph.add(term);
  out.push(row(term));
  set(term, 'start_percent', 0.2); set(term, 'end_percent', 0.7);
  out.push(row(term));
  set(term, 'outside_window', 'RL model'); set(term, 'rl_every', 3);
  out.push(row(term));
  return {rows: out, unused, used, lines: node.rlgSummary.lines, height: node.size[1],
          least: node.computeSize()[1], hooks: Object.keys(window.ComfyUI_RLG).sort(),
          oldHooks: [typeof window.RLG_describeDial, typeof window.RLG_describeSweep]};
}"""


def test_extension_is_served(workflow_server):
    import urllib.request

    with urllib.request.urlopen(workflow_server.url + "/extensions/ComfyUI-RLG/rlg_dial.js", timeout=30) as resp:
        assert b"ComfyUI-RLG.dial" in resp.read()


def test_rlg_nodes_say_what_the_dial_means_in_plain_words(workflow_server):
    from harness.frontend import browser_page

    with browser_page(workflow_server.url) as page:
        page.wait_for_function(HOOKS, timeout=60_000)
        got = page.evaluate(READ)
    texts = [r[0] for r in got["rows"]]
    assert texts[0] == "rlg_scale 0: the base model · blends every step"
    assert texts[1] == "rlg_scale 1: the RL model · blends every step"
    assert texts[2] == "rlg_scale 1.6: stronger than the RL model · blends every step"
    assert texts[3] == "rlg_scale 0.5: between base and RL · blends 20-80% of the steps, RL model alone outside"
    assert texts[4] == "rlg_scale -1: away from the reward · blends every step"
    assert got["rows"][5][1] is True and "start_percent after end_percent" in texts[5] and got["rows"][5][2] == "#a33"
    assert got["rows"][6][1] is False and got["rows"][6][2] in (None, "")  # the warning colour goes away again
    assert texts[7] == "rlg_scale 1.5 → 0.5 (cosine) · blends every step"
    assert texts[8] == "rlg_scale 1.5: stronger than the RL model · blends every step · RL branch without CFG"
    assert texts[9] == "rlg_scale 1.5: stronger than the RL model · blends every step · RL every 2nd step, " \
                       "estimated between"
    assert texts[10] == "rlg_scale 1.5: stronger than the RL model · blends 20-70% of the steps, base alone outside"
    # RLG RL Model reads its dial too; outside its window it adds nothing by default, or counts at scale 1.
    assert texts[11] == "rlg_scale 1.5: stronger than the RL model · blends every step"
    assert texts[12] == "rlg_scale 1.5: stronger than the RL model · blends 20-70% of the steps, adds nothing outside"
    assert texts[13] == "rlg_scale 1.5: stronger than the RL model · blends 20-70% of the steps, scale 1 outside · " \
                        "RL every 3rd step, estimated between"
    # end_scale is marked unused while the schedule is constant, and usable again with a ramp.
    assert got["unused"] == ["end_scale (unused: constant)", True] and got["used"] == [None, False]
    # One line each, under the widgets: the node has room for them.
    assert len(got["lines"]) == 2 and got["height"] >= got["least"] + 2 * 16
    # The test hooks live on one object named for the pack.
    assert {"describeDial", "describeSweep", "describeGrid"} <= set(got["hooks"])
    assert got["oldHooks"] == ["undefined", "undefined"]


SAME_MODEL = """() => {""" + SET + """
  const loader = LiteGraph.createNode('UNETLoader');
  const lora = LiteGraph.createNode('LoraLoaderModelOnly');
  const rlg = LiteGraph.createNode('RLGApply');
  for (const n of [loader, lora, rlg]) app.graph.add(n);
  loader.connect(0, lora, lora.findInputSlot('model'));
  loader.connect(0, rlg, rlg.findInputSlot('model'));
  lora.connect(0, rlg, rlg.findInputSlot('rl_model'));
  const refresh = () => rlg.onConnectionsChange?.();
  refresh();
  const out = [row(rlg)];
  lora.mode = 4;  // the RL LoRA loader bypassed: rl_model is model itself
  refresh();
  out.push(row(rlg));
  lora.mode = 0;
  loader.connect(0, rlg, rlg.findInputSlot('rl_model'));  // wired straight to both inputs
  out.push(row(rlg));
  return out;
}"""


def test_same_model_in_both_inputs_is_shown_on_the_node(workflow_server):
    from harness.frontend import browser_page

    with browser_page(workflow_server.url) as page:
        page.wait_for_function(HOOKS, timeout=60_000)
        rows = page.evaluate(SAME_MODEL)
    assert rows[0][1] is False
    for text, warning, color in rows[1:]:
        assert text.startswith("rl_model is model: RLG has no effect") and warning is True and color == "#a33", text


def test_front_end_version_is_the_one_under_test(workflow_server):
    """scripts/run_tests.sh runs the browser tests once more on the newest front-end package: check it is served."""
    from harness.frontend import browser_page

    with browser_page(workflow_server.url) as page:
        served = page.evaluate("window.__COMFYUI_FRONTEND_VERSION__")
    print(f"front-end served: {served}")
    expected = os.environ.get("RLG_EXPECT_FRONTEND")
    assert served and (expected is None or served == expected), served


SWEEP = """() => {""" + SET + """
  const node = LiteGraph.createNode('RLGScaleSweep');
  app.graph.add(node);
  const out = [[node.rlgSummary.text, node.rlgSummary.warning]];
  for (const scales of ['0, 1, 2.5', '0; x', '']) {
    set(node, 'scales', scales);
    out.push([node.rlgSummary.text, node.rlgSummary.warning]);
  }
  set(node, 'scales', '1 2'); set(node, 'start_percent', 0.25); set(node, 'rl_every', 2);
  out.push([node.rlgSummary.text, node.rlgSummary.warning]);
  return out;
}"""


def test_scale_sweep_shows_the_list_it_will_sweep(workflow_server):
    from harness.frontend import browser_page

    with browser_page(workflow_server.url) as page:
        page.wait_for_function(HOOKS, timeout=60_000)
        rows = page.evaluate(SWEEP)
    assert rows[0] == ["sweeps 6 scales: 0, 0.5, 1, 1.5, 2, 3 · blends every step", False]
    assert rows[1] == ["sweeps 3 scales: 0, 1, 2.5 · blends every step", False]
    assert rows[2][1] is True and "x" in rows[2][0]
    assert rows[3] == ["scales is empty", True]
    assert rows[4] == ["sweeps 2 scales: 1, 2 · blends 25-100% of the steps, RL model alone outside · RL every 2nd "
                       "step, estimated between", False]


GRID = """() => {""" + SET + """
  const sweep = LiteGraph.createNode('RLGScaleSweep');
  const sampler = LiteGraph.createNode('KSampler');
  const decode = LiteGraph.createNode('RLGDemoDecode');
  const grid = LiteGraph.createNode('RLGSweepGrid');
  for (const n of [sweep, sampler, decode, grid]) app.graph.add(n);
  const readout = () => { grid.onConnectionsChange?.(); return [grid.rlgSummary.text, grid.rlgSummary.warning]; };
  const out = [readout()];
  // Typed once: the sweep's scales output labels the grid.
  sweep.connect(2, grid, grid.findInputSlot('sweep_scales'));
  out.push(readout());
  set(sweep, 'scales', '0, 1, 2');
  out.push(readout());
  set(grid, 'scales', '0, 1, 2, 3');  // a list typed on the grid too, and different
  out.push(readout());
  // A workflow saved before: no scales link, the grid's own list, the images from the sweep.
  grid.disconnectInput(grid.findInputSlot('sweep_scales'));
  sweep.connect(1, sampler, sampler.findInputSlot('latent_image'));
  sampler.connect(0, decode, decode.findInputSlot('samples'));
  decode.connect(0, grid, grid.findInputSlot('images'));
  out.push(readout());
  set(grid, 'scales', '0, 1, 2');
  out.push(readout());
  return out;
}"""


def test_sweep_grid_takes_its_labels_from_the_sweep_and_flags_another_list(workflow_server):
    from harness.frontend import browser_page

    with browser_page(workflow_server.url) as page:
        page.wait_for_function(HOOKS, timeout=60_000)
        rows = page.evaluate(GRID)
    assert rows[0] == ["no labels: connect the sweep's scales to sweep_scales", True]
    assert rows[1] == ["labels from the sweep: 0, 0.5, 1, 1.5, 2, 3", False]
    assert rows[2] == ["labels from the sweep: 0, 1, 2", False]
    assert rows[3][1] is True and rows[3][0].startswith("scales 0, 1, 2, 3 differ from the sweep's")
    assert rows[4][1] is True and "(0, 1, 2)" in rows[4][0]  # found upstream of the images
    assert rows[5] == ["labels from the sweep: 0, 1, 2", False]
