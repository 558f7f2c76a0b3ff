"""js/rlg_dial.js in the real front-end: served, loaded, and reading the dial back on RLG nodes."""

import os

import pytest

pytestmark = [pytest.mark.server, pytest.mark.frontend]

READ = """() => {
  const node = LiteGraph.createNode('RLGApply');
  app.graph.add(node);
  const set = (name, value) => {
    const w = node.widgets.find(w => w.name === name);
    w.value = value;
    w.callback?.(value);
  };
  const out = [];
  for (const [scale, start, end] of [[0, 0, 1], [1, 0, 1], [1.6, 0, 1], [0.5, 0.2, 0.8], [-1, 0, 1], [1.5, 0.8, 0.2]]) {
    set('rlg_scale', scale); set('start_percent', start); set('end_percent', end);
    out.push([node.rlgSummary.text, node.rlgSummary.warning, node.bgcolor ?? null]);
  }
  set('start_percent', 0); set('end_percent', 1);
  out.push([node.rlgSummary.text, node.rlgSummary.warning, node.bgcolor ?? null]);
  set('schedule', 'cosine'); set('end_scale', 0.5);
  out.push([node.rlgSummary.text, node.rlgSummary.warning, null]);
  set('schedule', 'constant'); set('rl_cfg', 1);
  out.push([node.rlgSummary.text, node.rlgSummary.warning, null]);
  const term = LiteGraph.createNode('RLGRLModel');
  app.graph.add(term);
  out.push([term.rlgSummary.text, term.rlgSummary.warning, null]);
  return out;
}"""


def test_extension_is_served(workflow_server):
    import urllib.request

    with urllib.request.urlopen(workflow_server.url + "/extensions/ComfyUI-RLG/rlg_dial.js", timeout=30) as resp:
        assert b"ComfyUI-RLG.dial" in resp.read()


def test_rlg_nodes_read_the_dial_back(workflow_server):
    from harness.frontend import browser_page

    with browser_page(workflow_server.url) as page:
        page.wait_for_function("window.RLG_describeDial !== undefined", timeout=60_000)
        rows = page.evaluate(READ)
    texts = [r[0] for r in rows]
    assert texts[0] == "w 0: base model · all steps"
    assert texts[1] == "w 1: RL model · all steps"
    assert texts[2] == "w 1.6: beyond RL (KL / 1.6) · all steps"
    assert texts[3] == "w 0.5: between base and RL · blend 20-80%"
    assert "away from the reward" in texts[4]
    assert rows[5][1] is True and "start_percent after end_percent" in texts[5] and rows[5][2] == "#a33"
    assert rows[6][1] is False and rows[6][2] in (None, "")  # the warning colour goes away again
    assert texts[7] == "w 1.5 → 0.5 (cosine) · all steps"
    assert texts[8] == "w 1.5: beyond RL (KL / 1.5) · all steps · RL branch without CFG"
    assert texts[9] == "w 1.5: beyond RL (KL / 1.5) · all steps"  # RLG RL Model reads its dial too


def test_front_end_version_is_the_one_under_test(workflow_server):
    """scripts/run_tests.sh runs the browser tests once more on the newest front-end package: check it is served."""
    from harness.frontend import browser_page

    with browser_page(workflow_server.url) as page:
        served = page.evaluate("window.__COMFYUI_FRONTEND_VERSION__")
    print(f"front-end served: {served}")
    expected = os.environ.get("RLG_EXPECT_FRONTEND")
    assert served and (expected is None or served == expected), served


SWEEP = """() => {
  const node = LiteGraph.createNode('RLGScaleSweep');
  app.graph.add(node);
  const set = (name, value) => {
    const w = node.widgets.find(w => w.name === name);
    w.value = value;
    w.callback?.(value);
  };
  const out = [[node.rlgSummary.text, node.rlgSummary.warning]];
  for (const scales of ['0, 1, 2.5', '0; x', '']) {
    set('scales', scales);
    out.push([node.rlgSummary.text, node.rlgSummary.warning]);
  }
  set('scales', '1 2'); set('start_percent', 0.25);
  out.push([node.rlgSummary.text, node.rlgSummary.warning]);
  return out;
}"""


def test_scale_sweep_shows_the_list_it_will_sweep(workflow_server):
    from harness.frontend import browser_page

    with browser_page(workflow_server.url) as page:
        page.wait_for_function("window.RLG_describeSweep !== undefined", timeout=60_000)
        rows = page.evaluate(SWEEP)
    assert rows[0] == ["sweeps 6 scales: 0, 0.5, 1, 1.5, 2, 3 · all steps", False]
    assert rows[1] == ["sweeps 3 scales: 0, 1, 2.5 · all steps", False]
    assert rows[2][1] is True and "x" in rows[2][0]
    assert rows[3] == ["scales is empty", True]
    assert rows[4] == ["sweeps 2 scales: 1, 2 · blend 25-100%", False]
