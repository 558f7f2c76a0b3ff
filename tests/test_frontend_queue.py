"""What an artist sees in the real front-end when something is wrong, before anything samples.

Each front-end of the matrix shows it its own way (docs/frontend.md, "What each front-end does differently"):
- a window whose start is after its end, or a sweep grid whose list differs from its sweep's, is refused when the
  prompt is queued: 1.32.9 and 1.35.9 open a "Prompt execution failed" dialog with the message; 1.49.6 and 1.58.1
  mark the node and open an errors overlay whose details list the node and input;
- the same model in model and rl_model is shown on the node (the readout) and, when it runs, as a toast;
- a missing model file comes with where to get it (the templates' model metadata): 1.32.9 and 1.35.9 in a
  "Missing Models" dialog, 1.49.6 and 1.58.1 in the errors overlay's Missing Models group, each with a Download
  button;
- the template browser shows each template's thumbnail.
"""

from __future__ import annotations

import json

import pytest

from harness import templates

pytestmark = [pytest.mark.server, pytest.mark.frontend]

NODES = "(app.graph.nodes ?? app.graph._nodes)"


def workflow(name: str) -> dict:
    return json.loads(templates.ui_path(name).read_text())


def version(page) -> tuple[int, ...]:
    return tuple(int(p) for p in page.evaluate("window.__COMFYUI_FRONTEND_VERSION__").split("."))


@pytest.fixture(scope="module")
def chromium():
    from harness.frontend import chromium as launch

    with launch() as launched:
        yield launched


@pytest.fixture
def page(workflow_server, chromium):
    from harness.frontend import new_context, open_page, reset_settings

    reset_settings(workflow_server)
    context = new_context(chromium)
    try:
        yield open_page(context, workflow_server.url)
    finally:
        context.close()
        reset_settings(workflow_server)  # what the test opened (the errors panel) stays on the server otherwise


LOAD = "async (wf) => { await app.loadGraphData(wf); }"

SET_WIDGETS = f"""([type, values]) => {{
  const node = {NODES}.find((n) => n.type === type);
  for (const [name, value] of Object.entries(values)) {{
    const w = node.widgets.find((w) => w.name === name);
    w.value = value;
    w.callback?.(value);
  }}
  return [String(node.id), node.rlgSummary?.text ?? null, node.rlgSummary?.warning ?? null];
}}"""

QUEUE = """async () => {
  const before = (await (await fetch('/history')).json());
  await app.queuePrompt(0, 1);
  await new Promise((r) => setTimeout(r, 1500));
  const after = (await (await fetch('/history')).json());
  const queue = await (await fetch('/queue')).json();
  return {errors: app.lastNodeErrors ?? app.extensionManager?.lastNodeErrors ?? null,
          queued: Object.keys(after).length - Object.keys(before).length + queue.queue_running.length +
                  queue.queue_pending.length};
}"""


def _shown(page, message: str, node_title: str, input_name: str) -> None:
    """The refusal as this front-end shows it."""
    if version(page) < (1, 49):
        dialog = page.get_by_text("Prompt outputs failed validation").first
        dialog.wait_for(timeout=10_000)
        assert message in page.inner_text("body"), "the dialog does not show the reason"
    else:
        page.get_by_text("View details").first.wait_for(timeout=10_000)
        page.get_by_text("View details").first.click()
        page.get_by_text(f"{node_title} - {input_name}").first.wait_for(timeout=10_000)


def _refused(page, node_id: str, message: str) -> None:
    result = page.evaluate(QUEUE)
    assert result["queued"] == 0, "the prompt was queued: something ran"
    errors = (result["errors"] or {}).get(node_id, {}).get("errors", [])
    assert any(message in e.get("details", "") for e in errors), result["errors"]


def test_window_after_its_end_is_refused_in_the_front_end_before_anything_runs(page):
    page.evaluate(LOAD, workflow("rlg_sd35_flowgrpo_pickscore"))
    node_id, text, warning = page.evaluate(SET_WIDGETS, ["RLGApply", {"start_percent": 0.8, "end_percent": 0.2}])
    assert warning is True and text.startswith("start_percent after end_percent")  # red before queueing
    message = "start_percent (0.8) is after end_percent (0.2)"
    _refused(page, node_id, message)
    _shown(page, message, "RLG Apply", "start_percent")


def test_sweep_grid_list_that_differs_is_refused_in_the_front_end(page):
    page.evaluate(LOAD, workflow("rlg_sd35_flowgrpo_sweep"))
    node_id, text, warning = page.evaluate(SET_WIDGETS, ["RLGSweepGrid", {"scales": "0, 1"}])
    assert warning is True and "differ from the sweep's" in text
    message = "the grid's scales (0, 1) differ from the scales the RLG Scale Sweep samples (0, 1, 1.6, 2.5, 3)"
    _refused(page, node_id, message)
    _shown(page, message, "RLG Sweep Grid", "scales")


SAME_MODEL_PROMPT = {
    "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd3.5_medium.safetensors"}},
    "2": {"class_type": "RLGTestConditioning", "inputs": {"family": "sd3", "seed": 0, "batch_size": 1}},
    "3": {"class_type": "RLGApply", "inputs": {"model": ["1", 0], "rl_model": ["1", 0], "rlg_scale": 2.0,
                                               "start_percent": 0.0, "end_percent": 1.0}},
    "4": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
    "5": {"class_type": "KSampler", "inputs": {"model": ["3", 0], "seed": 0, "steps": 1, "cfg": 1.0,
                                               "sampler_name": "euler", "scheduler": "simple", "positive": ["2", 0],
                                               "negative": ["2", 1], "latent_image": ["4", 0], "denoise": 1.0}},
    "6": {"class_type": "SaveLatent", "inputs": {"samples": ["5", 0], "filename_prefix": "frontend/same_model"}},
}


def test_same_model_in_both_inputs_is_a_warning_the_front_end_shows(page):
    """When RLG Apply runs with rl_model = model, the server warns ("rlg.warning") and the front-end shows a toast."""
    page.evaluate("""async (prompt) => {
      await fetch('/prompt', {method: 'POST', headers: {'Content-Type': 'application/json'},
                              body: JSON.stringify({prompt, client_id: window.comfyAPI?.api?.api?.clientId})});
    }""", SAME_MODEL_PROMPT)
    page.get_by_text("rl_model is model: RLG has no effect").first.wait_for(timeout=60_000)


MISSING = "sd3.5_medium_missing.safetensors"


def test_a_missing_model_comes_with_where_to_get_it(page):
    """The model metadata on the loaders: a file the server lacks is offered for download."""
    wf = workflow("rlg_sd35_flowgrpo_pickscore")
    ckpt = next(n for n in wf["nodes"] if n["type"] == "CheckpointLoaderSimple")
    ckpt["widgets_values"][0] = MISSING
    (entry,) = ckpt["properties"]["models"]
    entry["name"] = MISSING
    page.evaluate("async (wf) => { await app.loadGraphData(wf, true, true, 'missing'); }", wf)
    if version(page) < (1, 49):
        page.get_by_text("Missing Models").first.wait_for(timeout=20_000)
        page.get_by_text(f"checkpoints / {MISSING}").first.wait_for(timeout=10_000)
    else:
        page.get_by_text("View details").first.wait_for(timeout=20_000)
        page.get_by_text("View details").first.click()
        page.get_by_text(MISSING).first.wait_for(timeout=10_000)
    assert page.get_by_role("button", name="Download").count() + page.get_by_text("Download").count() > 0


def test_template_browser_shows_the_thumbnails(page):
    """The cards load <template>.jpg (the front-ends fetch it and show it as a blob): ours, not the placeholder."""
    fetched = {}
    page.on("response", lambda r: fetched.__setitem__(r.url, (r.status, r.headers.get("content-type", "")))
            if "/workflow_templates/ComfyUI-RLG/" in r.url else None)
    page.evaluate("() => app.extensionManager.command.execute('Comfy.BrowseTemplates')")
    page.get_by_text("ComfyUI-RLG").first.wait_for(timeout=20_000)
    page.get_by_text("ComfyUI-RLG").first.click()
    page.wait_for_function("[...document.querySelectorAll('img')].filter((i) => i.complete && i.naturalWidth === 512 "
                           "&& i.naturalHeight === 512).length >= 4", timeout=30_000)
    pictures = {url.rsplit("/", 1)[-1]: answer for url, answer in fetched.items() if url.endswith(".jpg")}
    assert len(pictures) >= 4, fetched
    assert all(answer == (200, "image/jpeg") for answer in pictures.values()), pictures
