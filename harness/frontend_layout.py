"""What a graph looks like in the real front-end: where each node and each text it draws lies, what covers it.

The geometry is the same in every front-end of the matrix (1.32.9 to 1.58.1): node.pos is the top-left of the
body, the 30-px title bar is drawn above it, and a node from a custom pack gets a 20-px source badge ("RLG",
"rlg_demo_nodes") 2 px above the title bar. A node's area here is its body, title bar and badge row. Used by the
template tests, the screenshots and scripts/build_workflows.py's layout.
"""

from __future__ import annotations

TITLE = 30  # LiteGraph.NODE_TITLE_HEIGHT
BADGE = 22  # the node-source badge row above the title bar
ABOVE = TITLE + BADGE
PACK = "ComfyUI-RLG"
NODES = "(app.graph.nodes ?? app.graph._nodes)"

SETTLED = f"(count) => {NODES}.length === count && app.canvas && app.canvas.ds"

# Every node's area on the screen, sampled every `step` px: what covers each point (the canvas and the nodes'
# own DOM widgets do not count as covering). Also the scale, and whether the canvas draws text at it.
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
}""".replace("ABOVE", str(ABOVE))

# At scale 1 in a big window every node is drawn: every text each node draws (title, widgets, badge, the pack's
# readout), with the node that drew it, in graph coordinates; and each node's area. The view is put back after.
DRAWN = f"""() => {{
  const ds = app.canvas.ds;
  const view = [ds.scale, [...ds.offset]];
  const minX = Math.min(...{NODES}.map((n) => n.pos[0])), minY = Math.min(...{NODES}.map((n) => n.pos[1]));
  ds.scale = 1; ds.offset = [40 - minX, {ABOVE} + 40 - minY];
  const info = app.canvas.renderInfo;
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
  try {{ app.canvas.draw(true, true); }} finally {{
    proto.fillText = fillText;
    app.canvas.renderInfo = info;
    ds.scale = view[0]; ds.offset = view[1];
    app.canvas.setDirty(true, true);
  }}
  const nodes = {NODES}.map((n) => ({{id: String(n.id), label: n.type + '#' + n.id,
    box: [n.pos[0], n.pos[1] - {ABOVE}, n.size[0], n.size[1] + {ABOVE}],
    readout: n.rlgSummary?.lines ?? null}}));
  return {{texts, nodes}};
}}"""


def overlap(a, b) -> bool:
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


def drawn_problems(drawn: dict) -> list[str]:
    """Nodes whose areas overlap, and texts outside their own node or on another node (1 px tolerance)."""
    nodes = {n["id"]: n for n in drawn["nodes"]}
    out = []
    ids = list(nodes)
    for i, a in enumerate(ids):
        for b in ids[i + 1:]:
            if overlap(nodes[a]["box"], nodes[b]["box"]):
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
            if other is not own and overlap(t, other["box"]):
                out.append(f"{own['label']}'s text {text['text']!r} lies on {other['label']}")
    return out


def hidden_nodes(seen: dict) -> list:
    return [(n["label"], f"{n['covered']}/{n['total']}", n["by"]) for n in seen["nodes"] if n["covered"]]


def open_template(launched, server, name: str, node_count: int, viewport=(1600, 900), source: str = PACK):
    """The template as the template browser opens it (its URL form runs the same code), in a fresh context and
    with the test user's settings: (context, page). source: the node pack whose template it is."""
    from .frontend import new_context, open_page, reset_settings

    reset_settings(server)
    context = new_context(launched, viewport)
    page = open_page(context, f"{server.url}/?template={name}&source={source}")
    page.wait_for_function(SETTLED, arg=node_count, timeout=60_000)
    # The front-end blocks the page while it loads (a PrimeVue block-UI mask); then the fitted view is applied on
    # the next frames.
    page.wait_for_function("!document.querySelector('.p-blockui-mask')", timeout=60_000)
    page.wait_for_timeout(800)
    return context, page
