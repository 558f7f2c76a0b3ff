"""The example workflows as templates, the way an artist meets them in the real front-end.

No two nodes overlap (title bars, source badges and the readout lines the pack's js draws included), everything is
in view when a template opens, every loader says where its files come from, every template has a thumbnail. The
file checks run everywhere; the browser checks (marked `frontend`) run on the front-end the host serves, so the
matrix covers 1.32.9, 1.35.9, 1.49.6 and 1.58.1.
"""

from __future__ import annotations

import json

import pytest

from harness.host import ROOT

UI_DIR = ROOT / "example_workflows"
TEMPLATES = sorted(p.stem for p in UI_DIR.glob("*.json"))
PACK = "ComfyUI-RLG"
TITLE = 30  # LiteGraph.NODE_TITLE_HEIGHT in every front-end of the matrix: drawn above node.pos
BADGE = 22  # the node-source badge ("RLG", "rlg_demo_nodes"): 20 px high, 2 px above the title bar
DOWNLOAD_SOURCES = ("https://huggingface.co/", "https://civitai.com/")
MODEL_DIRECTORIES = {"checkpoints", "loras", "vae", "text_encoders", "diffusion_models"}
VIEWPORT = (1600, 900)


def workflow(name: str) -> dict:
    return json.loads((UI_DIR / f"{name}.json").read_text())


def _box(node: dict) -> tuple[float, float, float, float]:
    """What a node covers on the canvas, from the file: body, title bar and badge row (x, y, w, h)."""
    x, y = node["pos"]
    w, h = node["size"]
    return x, y - TITLE - BADGE, w, h + TITLE + BADGE


def _overlap(a, b) -> bool:
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


def _label(node: dict) -> str:
    return f"{node.get('type')}#{node.get('id')}"


# ---------------------------------------------------------------------------------------------- the files

@pytest.mark.parametrize("name", TEMPLATES)
def test_saved_layout_has_no_overlapping_nodes(name):
    """From the saved positions and sizes: a node's size includes the readout lines the pack's js adds (the
    builder saves the sizes the front-end gives the nodes when the file is opened)."""
    nodes = workflow(name)["nodes"]
    clashes = [(_label(a), _label(b)) for i, a in enumerate(nodes) for b in nodes[i + 1:] if _overlap(_box(a), _box(b))]
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
        with Image.open(UI_DIR / f"{name}.jpg") as image:
            assert image.format == "JPEG" and image.width == image.height >= 256, name
        assert DESCRIPTIONS[name].replace("_", " ") != name.replace("_", " ")
        note = next(n for n in workflow(name)["nodes"] if n["type"] == "Note")
        assert note["widgets_values"][0].startswith(DESCRIPTIONS[name]), name


# ---------------------------------------------------------------------------------------------- the front-end

NODES = "(app.graph.nodes ?? app.graph._nodes)"

SETTLED = f"""(count) => {NODES}.length === count && app.canvas && app.canvas.ds"""

# Every node's area on the screen (title bar and badge row included), sampled: what covers each point.
VISIBILITY = """(step) => {
  const canvas = app.canvasEl ?? app.canvas.canvas;
  const ds = app.canvas.ds;
  const r = canvas.getBoundingClientRect();
  const name = (el) => el.tagName.toLowerCase() + (el.id ? '#' + el.id : '') +
      (typeof el.className === 'string' && el.className.trim() ? '.' + el.className.trim().split(/\\s+/)[0] : '');
  const nodes = (app.graph.nodes ?? app.graph._nodes).map((n) => {
    const x = n.pos[0], y = n.pos[1] - ABOVE, w = n.size[0], h = n.size[1] + ABOVE;
    const sx = r.left + (x + ds.offset[0]) * ds.scale, sy = r.top + (y + ds.offset[1]) * ds.scale;
    const covered = [];
    let total = 0;
    for (let py = sy + 1; py <= sy + h * ds.scale - 1; py += step) {
      for (let px = sx + 1; px <= sx + w * ds.scale - 1; px += step) {
        total++;
        const inside = px >= 0 && py >= 0 && px < innerWidth && py < innerHeight;
        const el = inside ? document.elementFromPoint(px, py) : null;
        if (!el) covered.push('outside the window');
        else if (el !== canvas && !el.closest('.dom-widget')) covered.push(name(el));
      }
    }
    return {label: n.type + '#' + n.id, total, covered: covered.length, by: [...new Set(covered)].slice(0, 3)};
  });
  return {scale: ds.scale, lowQuality: app.canvas.low_quality ?? null, nodes};
}""".replace("ABOVE", str(TITLE + BADGE))

# At scale 1 in a big window every node is drawn: every text each node draws (title, widgets, badge, the pack's
# readout), with the node that drew it, in graph coordinates; and each node's box.
DRAWN = f"""() => {{
  const ds = app.canvas.ds;
  ds.scale = 1; ds.offset = [40, 80];
  app.canvas.renderInfo = () => {{}};
  const texts = [];
  const proto = CanvasRenderingContext2D.prototype;
  const fillText = proto.fillText;
  proto.fillText = function (text, x, y, maxWidth) {{
    const node = app.canvas.current_node;
    if (node && this === app.canvas.ctx && String(text).trim()) {{
      const m = this.measureText(text);
      const w = maxWidth ? Math.min(m.width, maxWidth) : m.width;
      const x0 = this.textAlign === 'center' ? x - w / 2 : ['right', 'end'].includes(this.textAlign) ? x - w : x;
      const t = this.getTransform(), dpr = devicePixelRatio;
      const a = t.transformPoint({{x: x0, y: y - m.actualBoundingBoxAscent}});
      const b = t.transformPoint({{x: x0 + w, y: y + m.actualBoundingBoxDescent}});
      const g = (p) => [p.x / dpr / ds.scale - ds.offset[0], p.y / dpr / ds.scale - ds.offset[1]];
      const [ax, ay] = g(a), [bx, by] = g(b);
      texts.push({{node: String(node.id), text: String(text).slice(0, 80), box: [ax, ay, bx - ax, by - ay]}});
    }}
    return fillText.apply(this, arguments);
  }};
  try {{ app.canvas.draw(true, true); }} finally {{ proto.fillText = fillText; }}
  const nodes = {NODES}.map((n) => ({{id: String(n.id), label: n.type + '#' + n.id,
    box: [n.pos[0], n.pos[1] - {TITLE + BADGE}, n.size[0], n.size[1] + {TITLE + BADGE}],
    readout: n.rlgSummary?.lines ?? null}}));
  return {{texts, nodes}};
}}"""


@pytest.fixture(scope="module")
def chromium():
    from harness.frontend import chromium as launch

    with launch() as launched:
        yield launched


def open_template(launched, url: str, name: str, viewport=VIEWPORT):
    """The template as the template browser opens it (its URL form runs the same code), in a fresh context."""
    from harness.frontend import new_context, open_page

    context = new_context(launched, viewport)
    page = open_page(context, f"{url}/?template={name}&source={PACK}")
    page.wait_for_function(SETTLED, arg=len(workflow(name)["nodes"]), timeout=60_000)
    page.wait_for_timeout(800)  # the fitted view is applied on the next frames
    return context, page


@pytest.mark.server
@pytest.mark.frontend
@pytest.mark.parametrize("name", TEMPLATES)
def test_template_opens_with_every_node_in_view_and_readable(workflow_server, chromium, name):
    """In a 1600x900 window, as it opens: each node (title bar and badge row included) inside the window and under
    nothing else (tab bar, side toolbar, menus, minimap, dialogs); and at a scale where the canvas draws text."""
    context, page = open_template(chromium, workflow_server.url, name)
    try:
        seen = page.evaluate(VISIBILITY, 6)
    finally:
        context.close()
    hidden = [(n["label"], f"{n['covered']}/{n['total']}", n["by"]) for n in seen["nodes"] if n["covered"]]
    assert not hidden, f"{name}: nodes not fully in view at scale {seen['scale']:.2f}: {hidden}"
    assert seen["lowQuality"] is not True and seen["scale"] >= 8 / 14, f"{name}: opens at {seen['scale']:.3f}, no text"


@pytest.mark.server
@pytest.mark.frontend
def test_no_node_or_text_it_draws_overlaps_another_in_the_front_end(workflow_server, chromium):
    """Measured in the front-end, with the sizes it gives the nodes when the file is opened: node boxes (title bar
    and badge row included), and every text a node draws (title, widgets, badge, the readout lines) inside its own
    box and on no other node."""
    from harness.frontend import new_context, open_page

    context = new_context(chromium, (3200, 2000))
    problems = {}
    try:
        page = open_page(context, workflow_server.url)
        for name in TEMPLATES:
            page.evaluate("async (wf) => { await app.loadGraphData(wf); }", workflow(name))
            page.wait_for_timeout(200)
            drawn = page.evaluate(DRAWN)
            found = _drawn_problems(drawn)
            readouts = [n for n in drawn["nodes"] if n["readout"]]
            if any(n["label"].startswith(("RLGApply#", "RLGScaleSweep#")) for n in drawn["nodes"]):
                assert readouts, f"{name}: no readout drawn by the pack's js"
            if found:
                problems[name] = found
    finally:
        context.close()
    assert not problems, json.dumps(problems, indent=1)[:6000]


def _drawn_problems(drawn: dict) -> list[str]:
    nodes = {n["id"]: n for n in drawn["nodes"]}
    out = []
    ids = list(nodes)
    for i, a in enumerate(ids):
        for b in ids[i + 1:]:
            if _overlap(nodes[a]["box"], nodes[b]["box"]):
                out.append(f"{nodes[a]['label']} and {nodes[b]['label']} overlap")
    for text in drawn["texts"]:
        own = nodes.get(text["node"])
        if own is None:
            continue
        box, t = own["box"], text["box"]
        inside = t[0] >= box[0] - 1 and t[1] >= box[1] - 1 and t[0] + t[2] <= box[0] + box[2] + 1 and \
            t[1] + t[3] <= box[1] + box[3] + 1
        if not inside:
            out.append(f"{own['label']}'s text {text['text']!r} leaves its node")
        for other in nodes.values():
            if other is not own and _overlap(t, other["box"]):
                out.append(f"{own['label']}'s text {text['text']!r} lies on {other['label']}")
    return out
