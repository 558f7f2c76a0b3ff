// ComfyUI-RLG front-end: the scrubber on RLG Sweep Grid. Choose rlg_scale by looking, without queueing again.
//
// After a sweep runs, RLG Sweep Grid (nodes/nodes_sweep.py) sends its picture, saved to ComfyUI's temp folder, with
// where each image lies in it (nodes/sweep_grid.py, GridLayout) and what the run used (nodes/sweep_run.py). The node
// then shows one scale's column at a time, large, the scale written on it:
// * the slider, the ◀ ▶ buttons or the left / right keys step through the scales (Home / End: the first / last);
// * "side by side" and "overlay, divider" show two scales (Shift + left / right steps the second one; the divider
//   has its own slider and follows the pointer); "whole grid" shows the grid picture itself;
// * "Use rlg_scale x" (or Enter) writes the shown scale into the rlg_scale of an RLG Apply, RLG Guider or RLG RL Model
//   of the same graph, as one change that the front-end's undo (Ctrl+Z) takes back, and that node's readout follows;
//   with several such nodes the artist chooses which one, with none the node says so;
// * a note says plainly when the images are from an earlier run whose settings have changed since.
//
// What the artist chose (scale, view, second scale, divider, target) lives in node.properties.rlg_scrubber, the last
// run's picture, layout and record in node.properties.rlg_sweep_result: saving, loading and reloading keep both, and
// widgets_values is untouched (the scrubber is a DOM widget that is not serialized). A run's result is not an edit:
// it is written into every state the change tracker keeps, so undo and redo never take it away.
// A front-end without DOM widgets (node.addDOMWidget) shows the grid picture on the node instead, with a note.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import { LINE_HEIGHT, fmt, meaningOf, refresh as refreshReadout, scrubberHooks, source, widget } from "./rlg_dial.js";

const GRID = "RLGSweepGrid";
const TARGETS = { RLGApply: "RLG Apply", RLGGuider: "RLG Guider", RLGRLModel: "RLG RL Model" };
const UI_KEY = "rlg_sweep"; // the grid's ui result (nodes_sweep.py SCRUBBER_UI)
const RESULT = "rlg_sweep_result"; // node.properties: the last run's picture, scales, layout and record
const STATE = "rlg_scrubber"; // node.properties: what the artist chose
const WIDGET = "rlg_scrubber";
const VIEWS = { one: "one scale", side: "side by side", overlay: "overlay, divider", grid: "whole grid" };
const BACKGROUND = "rgb(24, 24, 24)"; // nodes/sweep_grid.py BACKGROUND: the gaps between rows
const CONTROLS = 132; // px under the picture: three rows of controls and the note
const MIN_STAGE = 160; // px: the least height of the picture once there is one
const MIN_WIDTH = 300;
const BYPASS = 4;
const NEVER = 2;
const MOVING = new Set(["increment", "decrement", "randomize"]); // control_after_generate values that move a seed
const NO_TARGET = "No RLG Apply, RLG Guider or RLG RL Model in this graph to send the scale to: add one.";
const NO_DOM = "no scrubber in this front-end (it lacks DOM widgets): the whole grid is shown";
const GONE = "The picture of this run is no longer on the server (ComfyUI empties its temp folder when it " +
  "starts): queue the sweep again.";

// ---------------------------------------------------------------------------------------------- pure

// The index of the scale nearest to value (the first where value is not a number).
export function nearestIndex(scales, value) {
  if (!scales?.length) return -1;
  const v = Number(value);
  if (value === null || value === undefined || !Number.isFinite(v)) return 0;
  let best = 0;
  for (let i = 1; i < scales.length; i++) if (Math.abs(scales[i] - v) < Math.abs(scales[best] - v)) best = i;
  return best;
}

// Pure: what the scrubber's canvas holds, in the picture's own pixels (layout: GridLayout.as_dict()). a, b: the
// columns shown; divider: where the overlay switches from a to b (0..1 of the width). Returns {width, height, draws:
// [{sx, sy, sw, sh, dx, dy}] (copies from the picture, 1:1), parts: [{column, x}] (where each label goes), split}.
export function viewGeometry(layout, view, a, b = a, divider = 0.5) {
  const [w, h] = layout.image;
  const { gap, rows } = layout;
  const height = rows * h + (rows - 1) * gap;
  const column = (c, x0, from = 0, width = w) => layout.boxes[c].map((box, r) => (
    { sx: box[0] + from, sy: box[1], sw: width, sh: h, dx: x0 + from, dy: r * (h + gap) }));
  if (view === "grid") {
    const [gw, gh] = layout.size;
    return { width: gw, height: gh, draws: [{ sx: 0, sy: 0, sw: gw, sh: gh, dx: 0, dy: 0 }], parts: [] };
  }
  if (view === "side") {
    return { width: 2 * w + gap, height, draws: [...column(a, 0), ...column(b, w + gap)],
      parts: [{ column: a, x: 0 }, { column: b, x: w + gap }] };
  }
  if (view === "overlay") {
    const split = Math.max(0, Math.min(w, Math.round(divider * w)));
    return { width: w, height, split, draws: [...(split > 0 ? column(a, 0, 0, split) : []),
      ...(split < w ? column(b, 0, split, w - split) : [])], parts: [{ column: a, x: 0 }, { column: b, x: w }] };
  }
  return { width: w, height, draws: column(a, 0), parts: [{ column: a, x: 0 }] };
}

const SKIP = Symbol("not comparable");

function same(a, b) {
  if (typeof a === "number" && typeof b === "number") {
    return Math.abs(a - b) <= 1e-9 * Math.max(1, Math.abs(a), Math.abs(b));
  }
  if ((a && typeof a === "object") || (b && typeof b === "object")) return JSON.stringify(a) === JSON.stringify(b);
  return a === b;
}

function shown(value) {
  if (typeof value === "number") return fmt(value);
  const text = typeof value === "string" ? value : JSON.stringify(value);
  return text.length > 28 ? `${text.slice(0, 26)}…` : text;
}

// The node of an execution id ("12", or "5:12" inside subgraph node 5).
function nodeAt(graph, id) {
  let node = null;
  let current = graph;
  for (const part of String(id).split(":")) {
    node = current?.getNodeById?.(part) ?? current?.getNodeById?.(Number(part)) ?? null;
    if (!node) return null;
    current = node.subgraph;
  }
  return node;
}

// An input's value in the graph now: its widget's, or the widget of the primitive node it is linked to.
function valueNow(node, name) {
  const input = (node.inputs || []).find((i) => i.name === name);
  if (input?.link != null) {
    const from = source(node, name)?.node;
    const w = from && (from.type === "PrimitiveNode" || from.isVirtualNode) ? from.widgets?.[0] : null;
    return w ? { value: w.value, widget: w } : SKIP; // a value from another node: compared through that node
  }
  const w = widget(node, name);
  return w ? { value: w.value, widget: w } : SKIP;
}

function dynamicText(w, value) {
  return typeof value === "string" && (w.dynamicPrompts || w.options?.dynamicPrompts) && /\{[^{}]*\|/.test(value);
}

// Pure on the graph: what differs between the run that made the images (record: nodes/sweep_run.py run_record) and
// the graph now. {changed: [text], movedOn: [text]}; movedOn lists the seeds the front-end itself moved after the
// queue (control_after_generate increment / decrement / randomize), which the artist did not touch.
export function changesSince(record, graph) {
  const changed = [];
  const movedOn = [];
  for (const [id, ran] of Object.entries(record?.nodes ?? {})) {
    const node = nodeAt(graph, id);
    const name = node ? node.title || ran.class_type : ran.class_type;
    if (!node || (node.comfyClass ?? node.type) !== ran.class_type) {
      changed.push(`${name} #${id} removed`);
      continue;
    }
    if (node.mode === BYPASS || node.mode === NEVER) {
      changed.push(`${name} ${node.mode === BYPASS ? "bypassed" : "muted"}`);
      continue;
    }
    for (const [input, was] of Object.entries(ran.inputs ?? {})) {
      if (Array.isArray(was) && was.length === 2 && Number.isInteger(was[1]) && typeof was[0] === "string") {
        if (String(id).includes(":") || was[0].includes(":")) continue; // across a subgraph's border: not compared
        const from = source(node, input);
        if (!from) changed.push(`${name} ${input} disconnected`);
        else if (String(from.node.id) !== was[0] || from.slot !== was[1]) {
          changed.push(`${name} ${input} from ${from.node.title || from.node.type}`);
        }
        continue;
      }
      const now = valueNow(node, input);
      if (now === SKIP || dynamicText(now.widget, now.value) || same(now.value, was)) continue;
      const text = `${name} ${input} ${shown(was)} → ${shown(now.value)}`;
      const control = now.widget.linkedWidgets?.[0]?.value;
      if (MOVING.has(control)) movedOn.push(`${text} (${control} after each queue)`);
      else changed.push(text);
    }
  }
  return { changed, movedOn };
}

// ---------------------------------------------------------------------------------------------- state

const resultOf = (node) => {
  const r = node.properties?.[RESULT];
  return r && Array.isArray(r.scales) && r.layout?.boxes && r.image?.filename ? r : null;
};
const stateOf = (node) => {
  const s = node.properties?.[STATE];
  return s && typeof s === "object" ? s : {};
};

function setState(node, patch) {
  node.properties ??= {};
  node.properties[STATE] = { ...stateOf(node), ...patch };
}

function viewOf(node) {
  const view = stateOf(node).view;
  return Object.hasOwn(VIEWS, view) ? view : "one";
}

function indices(node) {
  const scales = resultOf(node)?.scales ?? [];
  const s = stateOf(node);
  const a = nearestIndex(scales, s.scale);
  let b = s.other === undefined ? -1 : nearestIndex(scales, s.other);
  if (b < 0 || (b === a && scales.length > 1)) b = a + 1 < scales.length ? a + 1 : Math.max(0, a - 1);
  return { scales, a, b };
}

// The change tracker of the workflow on the canvas (every front-end of the matrix has one).
function tracker() {
  return app.extensionManager?.workflow?.activeWorkflow?.changeTracker ?? null;
}

// What changed since the change tracker last looked becomes one undo step (and the front-end keeps it for a reload).
function recordPending() {
  const canvas = app.canvas;
  if (typeof canvas?.emitBeforeChange === "function") {
    canvas.emitBeforeChange();
    canvas.emitAfterChange();
  } else {
    const t = tracker();
    (t?.captureCanvasState ?? t?.checkState)?.call(t);
  }
}

// One undoable change: what was pending first becomes its own step, then `change` is recorded as one step.
function asOneChange(change) {
  const canvas = app.canvas;
  if (typeof canvas?.emitBeforeChange === "function") {
    canvas.emitBeforeChange();
    canvas.emitAfterChange();
    canvas.emitBeforeChange();
    try {
      change();
    } finally {
      canvas.emitAfterChange();
    }
    return;
  }
  const t = tracker();
  t?.beforeChange?.();
  try {
    change();
  } finally {
    t?.afterChange?.();
  }
}

// A run's result is not an edit: put it, and the size the node took for it, into every state the change tracker
// keeps for this node, so it is no undo step of its own and no undo or redo takes it away.
function absorbResult(node) {
  const t = tracker();
  const value = node.properties?.[RESULT];
  if (!t || !value) return;
  const json = JSON.stringify(value);
  const size = [node.size[0], node.size[1]];
  const graphId = node.graph && node.graph !== app.graph ? node.graph.id : null;
  for (const state of [t.activeState, t.initialState, ...(t.undoQueue ?? []), ...(t.redoQueue ?? [])]) {
    const nodes = graphId == null ? state?.nodes
      : (state?.definitions?.subgraphs ?? []).find((g) => g.id === graphId)?.nodes;
    const saved = (nodes ?? []).find((n) => String(n.id) === String(node.id) && n.type === GRID);
    if (!saved) continue;
    saved.properties = { ...(saved.properties ?? {}), [RESULT]: JSON.parse(json) };
    if (Array.isArray(saved.size)) saved.size = [Math.max(saved.size[0], size[0]), Math.max(saved.size[1], size[1])];
  }
}

// ---------------------------------------------------------------------------------------------- targets

function targetsOf(node) {
  const graph = node.graph ?? app.graph;
  return (graph?.nodes ?? graph?._nodes ?? []).filter((n) => TARGETS[n.comfyClass ?? n.type] && widget(n, "rlg_scale"));
}

function targetName(n) {
  const kind = TARGETS[n.comfyClass ?? n.type];
  const title = n.title && n.title !== kind ? ` "${n.title}"` : "";
  return `${kind} #${n.id}${title}`;
}

function chosenTarget(node, list) {
  if (list.length === 1) return list[0];
  const id = stateOf(node).target;
  return list.find((n) => String(n.id) === String(id)) ?? null;
}

// Write the shown scale into the chosen node's rlg_scale: one undoable change; its readout follows.
function useScale(node) {
  const ui = node.rlgScrubber;
  const { scales, a } = indices(node);
  if (!ui || a < 0) return false;
  const list = targetsOf(node);
  const target = chosenTarget(node, list);
  if (!list.length) return say(ui, NO_TARGET, true);
  if (!target) {
    ui.target.focus();
    return say(ui, "Choose which node gets the scale.", true);
  }
  const linked = (target.inputs || []).find((i) => i.name === "rlg_scale")?.link != null;
  if (linked) return say(ui, `${targetName(target)} takes rlg_scale from a link: disconnect it to set it here.`, true);
  const w = widget(target, "rlg_scale");
  const value = scales[a];
  asOneChange(() => {
    w.value = value;
    w.callback?.(value, app.canvas, target);
    refreshReadout(target);
  });
  target.setDirtyCanvas?.(true, true);
  return say(ui, `rlg_scale ${fmt(value)} sent to ${targetName(target)} (Ctrl+Z takes it back).`, false);
}

function say(ui, text, warning) {
  ui.message = { text, warning };
  ui.note.textContent = text;
  ui.note.classList.toggle("rlg-warn", !!warning);
  return !warning;
}

// ---------------------------------------------------------------------------------------------- the widget

const STYLE = `
.rlg-scrub { box-sizing: border-box; width: 100%; height: 100%; display: flex; flex-direction: column; gap: 4px;
  font: 13px/1.25 sans-serif; color: #ddd; overflow: hidden; outline: none; border-radius: 4px; }
.rlg-scrub:focus-visible { box-shadow: inset 0 0 0 2px #4a9eff; }
.rlg-scrub .rlg-stage { flex: 1 1 auto; min-height: 0; display: flex; align-items: center; justify-content: center;
  background: #181818; border-radius: 4px; position: relative; overflow: hidden; }
.rlg-scrub .rlg-frame { position: relative; flex: 0 0 auto; touch-action: none; }
.rlg-scrub .rlg-frame canvas { display: block; width: 100%; height: 100%; }
.rlg-scrub .rlg-label { position: absolute; top: 4px; padding: 1px 6px; background: rgba(0, 0, 0, 0.75);
  color: #fff; border-radius: 3px; font-weight: 600; white-space: nowrap; pointer-events: none; }
.rlg-scrub .rlg-divider { position: absolute; top: 0; bottom: 0; width: 2px; margin-left: -1px; background: #fff;
  box-shadow: 0 0 3px #000; pointer-events: none; }
.rlg-scrub .rlg-row { flex: 0 0 auto; display: flex; gap: 4px; align-items: center; min-width: 0; }
.rlg-scrub button, .rlg-scrub select { font: inherit; height: 26px; min-width: 26px; background: #353535;
  color: #eee; border: 1px solid #5a5a5a; border-radius: 4px; padding: 0 6px; }
.rlg-scrub button:focus-visible, .rlg-scrub select:focus-visible, .rlg-scrub input:focus-visible {
  outline: 2px solid #4a9eff; outline-offset: 0; }
.rlg-scrub button:disabled { opacity: 0.5; }
.rlg-scrub .rlg-use { flex: 1 1 auto; min-width: 0; overflow: hidden; text-overflow: ellipsis; white-space: nowrap;
  background: #2d4f7c; border-color: #4a78b5; font-weight: 600; }
.rlg-scrub select { min-width: 0; flex: 0 1 auto; }
.rlg-scrub input[type=range] { flex: 1 1 auto; min-width: 40px; accent-color: #4a9eff; }
.rlg-scrub .rlg-value { min-width: 34px; text-align: right; font-weight: 600; }
.rlg-scrub .rlg-note { flex: 0 0 auto; font-size: 12px; color: #bbb; min-height: 15px; max-height: 31px;
  overflow: hidden; padding: 0 4px; }
.rlg-scrub .rlg-note.rlg-warn { color: #ffb347; }
.rlg-scrub .rlg-placeholder { color: #999; padding: 8px; text-align: center; }
.rlg-scrub.rlg-empty .rlg-row, .rlg-scrub.rlg-empty .rlg-frame, .rlg-scrub.rlg-empty .rlg-note { display: none; }
.rlg-scrub:not(.rlg-empty) .rlg-placeholder { display: none; }
`;

function element(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "class") el.className = v;
    else if (k.startsWith("aria-") || k === "role") el.setAttribute(k, v);
    else el[k] = v;
  }
  el.append(...children);
  return el;
}

function readoutRoom(node) {
  return (node.rlgSummary?.lines?.length ?? 1) * LINE_HEIGHT + 6;
}

function minHeight(node) {
  return resultOf(node) ? CONTROLS + MIN_STAGE : 0;
}

// Leave the readout's lines, drawn at the bottom of the node (rlg_dial.js), uncovered.
function maxHeight(node, w) {
  return Math.max(minHeight(node), node.size[1] - (w.y || 0) - readoutRoom(node));
}

function build(node) {
  if (!document.getElementById("rlg-scrubber-style")) {
    document.head.append(element("style", { id: "rlg-scrubber-style", textContent: STYLE }));
  }
  const ui = {};
  ui.canvas = element("canvas", { width: 1, height: 1 });
  ui.labels = element("div");
  ui.divider = element("div", { class: "rlg-divider" });
  ui.frame = element("div", { class: "rlg-frame" }, ui.canvas, ui.labels, ui.divider);
  ui.placeholder = element("div", { class: "rlg-placeholder",
    textContent: "Queue the sweep: its scales show here, one at a time." });
  ui.stage = element("div", { class: "rlg-stage" }, ui.frame, ui.placeholder);
  ui.prev = element("button", { textContent: "◀", title: "Previous scale (left key)", "aria-label": "previous scale" });
  ui.range = element("input", { type: "range", min: 0, max: 0, step: 1, value: 0, "aria-label": "rlg_scale shown" });
  ui.next = element("button", { textContent: "▶", title: "Next scale (right key)", "aria-label": "next scale" });
  ui.value = element("span", { class: "rlg-value" });
  ui.view = element("select", { title: "What the node shows", "aria-label": "view" });
  for (const [value, text] of Object.entries(VIEWS)) ui.view.append(element("option", { value, textContent: text }));
  ui.other = element("select", { title: "The second scale (Shift + left / right)", "aria-label": "second scale" });
  ui.split = element("input", { type: "range", min: 0, max: 100, step: 1, value: 50, title: "Divider",
    "aria-label": "divider" });
  ui.use = element("button", { class: "rlg-use", title: "Write this scale into the chosen node's rlg_scale (Enter)" });
  ui.target = element("select", { title: "Which node gets the scale", "aria-label": "node that gets the scale" });
  ui.note = element("div", { class: "rlg-note", role: "status" });
  ui.root = element("div", { class: "rlg-scrub rlg-empty", tabIndex: 0, role: "group",
    "aria-label": "RLG sweep: one scale at a time" },
  ui.stage,
  element("div", { class: "rlg-row" }, ui.prev, ui.range, ui.next, ui.value),
  element("div", { class: "rlg-row" }, ui.view, ui.other, ui.split),
  element("div", { class: "rlg-row" }, ui.use, ui.target),
  ui.note);

  // What the artist chose, kept in the node's properties: saved with the workflow, and a step of the front-end's
  // undo (recorded at once, so a reload right after it keeps it; a drag is recorded when the button is let go).
  const choose = (patch, record = true) => {
    ui.message = null;
    setState(node, patch);
    update(node);
    if (record) recordPending();
  };
  const step = (delta, second = false) => {
    const { scales, a, b } = indices(node);
    if (!scales.length) return;
    const i = Math.max(0, Math.min(scales.length - 1, (second ? b : a) + delta));
    choose(second ? { other: scales[i] } : { scale: scales[i] });
  };
  ui.prev.addEventListener("click", () => step(-1));
  ui.next.addEventListener("click", () => step(1));
  ui.range.addEventListener("input", () => choose({ scale: (resultOf(node)?.scales ?? [])[Number(ui.range.value)] }));
  ui.view.addEventListener("change", () => choose({ view: ui.view.value }));
  ui.other.addEventListener("change", () => choose({ other: (resultOf(node)?.scales ?? [])[Number(ui.other.value)] }));
  ui.split.addEventListener("input", () => choose({ divider: Number(ui.split.value) / 100 }));
  ui.target.addEventListener("change", () => choose({ target: ui.target.value || null }));
  ui.use.addEventListener("click", () => useScale(node));
  ui.root.addEventListener("keydown", (event) => {
    // Plain keys stay with the scrubber (no panel toggles or node deletion while it has the focus); Ctrl / Cmd
    // combinations (undo, save) go on to the front-end.
    if (!event.ctrlKey && !event.metaKey && !event.altKey) event.stopPropagation();
    const tag = event.target?.tagName;
    if (tag === "SELECT" || (tag === "BUTTON" && (event.key === "Enter" || event.key === " "))) return;
    const onRange = event.target === ui.range || event.target === ui.split;
    const compare = ["side", "overlay"].includes(viewOf(node));
    let handled = true;
    if (event.key === "Enter") useScale(node);
    else if (onRange && !event.shiftKey && ["ArrowLeft", "ArrowRight", "Home", "End"].includes(event.key)) return;
    else if (event.key === "ArrowLeft" || event.key === "ArrowRight") {
      step(event.key === "ArrowLeft" ? -1 : 1, event.shiftKey && compare);
    } else if (event.key === "Home" || event.key === "End") {
      step(event.key === "Home" ? -Infinity : Infinity);
    } else if (event.key === "Escape" && viewOf(node) !== "one") choose({ view: "one" });
    else handled = false;
    if (handled) event.preventDefault();
  });
  // The divider follows the pointer in the overlay view.
  const drag = (event) => {
    if (viewOf(node) !== "overlay" || !(event.buttons & 1)) return;
    const box = ui.frame.getBoundingClientRect();
    if (box.width <= 0) return;
    choose({ divider: Math.max(0, Math.min(1, (event.clientX - box.left) / box.width)) }, false);
  };
  ui.frame.addEventListener("pointerdown", (event) => {
    if (viewOf(node) !== "overlay") return;
    ui.frame.setPointerCapture?.(event.pointerId);
    drag(event);
  });
  ui.frame.addEventListener("pointermove", drag);
  if (typeof ResizeObserver === "function") new ResizeObserver(() => fit(ui)).observe(ui.stage);

  const w = node.addDOMWidget(WIDGET, WIDGET, ui.root, {
    serialize: false,
    getValue: () => "",
    setValue: () => {},
    getMinHeight: () => minHeight(node),
    getMaxHeight: () => maxHeight(node, w),
  });
  w.serialize = false;
  ui.widget = w;
  node.rlgScrubber = ui;
}

// The canvas as large as the stage allows, its pixels kept (no smoothing when enlarged).
function fit(ui) {
  const { width, height } = ui.geometry ?? {};
  const sw = ui.stage.clientWidth;
  const sh = ui.stage.clientHeight;
  if (!width || !height || !sw || !sh) return;
  const s = Math.min(sw / width, sh / height);
  ui.frame.style.width = `${Math.max(1, Math.floor(width * s))}px`;
  ui.frame.style.height = `${Math.max(1, Math.floor(height * s))}px`;
  ui.canvas.style.imageRendering = s >= 1 ? "pixelated" : "auto";
}

function imageURL(image) {
  const q = new URLSearchParams({ filename: image.filename, type: image.type ?? "temp", subfolder: image.subfolder ?? "" });
  return api.apiURL(`/view?${q}`);
}

function loadImage(node, ui, result) {
  const key = `${result.image.type}/${result.image.subfolder}/${result.image.filename}`;
  if (ui.imageKey === key) return;
  ui.imageKey = key;
  ui.imageState = "loading";
  const img = new Image();
  img.onload = () => {
    if (ui.imageKey !== key) return;
    ui.img = img;
    ui.imageState = "loaded";
    update(node);
  };
  img.onerror = () => {
    if (ui.imageKey !== key) return;
    ui.img = null;
    ui.imageState = "error";
    update(node);
  };
  img.src = imageURL(result.image);
}

function paint(ui, geometry) {
  const ctx = ui.canvas.getContext("2d");
  ui.canvas.width = geometry.width;
  ui.canvas.height = geometry.height;
  ctx.fillStyle = BACKGROUND;
  ctx.fillRect(0, 0, geometry.width, geometry.height);
  if (ui.imageState !== "loaded") return;
  ctx.imageSmoothingEnabled = false;
  for (const d of geometry.draws) {
    if (d.sw > 0 && d.sh > 0) ctx.drawImage(ui.img, d.sx, d.sy, d.sw, d.sh, d.dx, d.dy, d.sw, d.sh);
  }
}

function labelText(scale) {
  return `rlg_scale ${fmt(scale)}`;
}

function setOptions(select, items, chosen) {
  const key = JSON.stringify(items);
  if (select.dataset.items !== key) {
    select.replaceChildren(...items.map(([value, text]) => element("option", { value, textContent: text })));
    select.dataset.items = key;
  }
  select.value = chosen;
}

// Everything on the widget, from the node's properties and the graph now.
function update(node) {
  const ui = node.rlgScrubber;
  if (!ui) return;
  const result = resultOf(node);
  ui.root.classList.toggle("rlg-empty", !result);
  if (!result) {
    ui.geometry = null;
    return;
  }
  loadImage(node, ui, result);
  const { scales, a, b } = indices(node);
  const view = viewOf(node);
  const divider = Math.max(0, Math.min(1, Number(stateOf(node).divider ?? 0.5)));
  ui.range.max = String(scales.length - 1);
  ui.range.value = String(a);
  ui.range.setAttribute("aria-valuetext", labelText(scales[a]));
  ui.value.textContent = fmt(scales[a]);
  ui.prev.disabled = a <= 0;
  ui.next.disabled = a >= scales.length - 1;
  ui.view.value = view;
  setOptions(ui.other, scales.map((s, i) => [String(i), `with ${fmt(s)}`]), String(b));
  ui.other.style.display = view === "side" || view === "overlay" ? "" : "none";
  ui.split.style.display = view === "overlay" ? "" : "none";
  ui.split.value = String(Math.round(divider * 100));

  ui.geometry = viewGeometry(result.layout, view, a, b, divider);
  paint(ui, ui.geometry);
  const g = ui.geometry;
  ui.labels.replaceChildren(...g.parts.map((part, k) => {
    const scale = scales[part.column];
    const text = view === "one" ? `${labelText(scale)} · ${meaningOf(scale)}` : labelText(scale);
    const style = part.x >= g.width ? `right: 4px` : `left: calc(${(100 * part.x) / g.width}% + 4px)`;
    return element("div", { class: "rlg-label", textContent: text, style: `${style}; z-index: ${k + 1}` });
  }));
  ui.divider.style.display = view === "overlay" ? "" : "none";
  if (view === "overlay") ui.divider.style.left = `${(100 * g.split) / g.width}%`;
  fit(ui);

  const list = targetsOf(node);
  const target = chosenTarget(node, list);
  ui.use.textContent = target ? `Use rlg_scale ${fmt(scales[a])} → ${targetName(target)}` : `Use rlg_scale ${fmt(scales[a])}`;
  ui.use.disabled = list.length === 0;
  ui.target.style.display = list.length > 1 ? "" : "none";
  setOptions(ui.target, [["", "which node?"], ...list.map((n) => [String(n.id), targetName(n)])],
    target && list.length > 1 ? String(target.id) : "");

  ui.staleness = result.run ? changesSince(result.run, node.graph ?? app.graph) : null;
  ui.staleKey = staleKey(node);
  let text = "";
  let warning = false;
  if (ui.imageState === "error") [text, warning] = [GONE, true];
  else if (ui.staleness?.changed.length) {
    const more = ui.staleness.changed.length > 2 ? ` (+${ui.staleness.changed.length - 2} more)` : "";
    text = `These images are from an earlier run. Changed since: ${ui.staleness.changed.slice(0, 2).join("; ")}${more}.`;
    warning = true;
  } else if (!list.length) [text, warning] = [NO_TARGET, true];
  else if (ui.message) [text, warning] = [ui.message.text, ui.message.warning];
  else if (ui.staleness?.movedOn.length) text = `Made before ${ui.staleness.movedOn[0]}.`;
  else text = "←/→ step, Enter uses the scale shown";
  ui.note.textContent = text;
  ui.note.classList.toggle("rlg-warn", warning);
  node.setDirtyCanvas?.(true, false);
}

// What the note and the target row depend on beyond the node's own properties: checked when the node is drawn.
function staleKey(node) {
  const graph = node.graph ?? app.graph;
  const nodes = graph?.nodes ?? graph?._nodes ?? [];
  const links = graph?.links instanceof Map ? [...graph.links.values()] : Object.values(graph?.links ?? {});
  return links.map((l) => (l ? `${l.origin_id}.${l.origin_slot}>${l.target_id}.${l.target_slot}` : "")).join(",") +
    "|" + nodes.map((n) => `${n.id}.${n.mode}.${n.title}.${(n.widgets || []).map((w) => String(w.value)).join(",")}`)
    .join("|");
}

// Room for the picture once there is one (a node made smaller before stays as the artist sized it otherwise).
function ensureRoom(node) {
  if (!resultOf(node)) return;
  const least = node.computeSize?.() ?? node.size;
  const width = Math.max(node.size[0], MIN_WIDTH);
  const height = Math.max(node.size[1], least[1] + readoutRoom(node));
  if (width !== node.size[0] || height !== node.size[1]) node.setSize([width, height]);
}

// A front-end without DOM widgets: the grid picture on the node, as a preview, and a note in the readout.
function fallback(node) {
  const result = resultOf(node);
  if (!result) return;
  const img = new Image();
  img.onload = () => {
    node.imgs = [img];
    node.setDirtyCanvas?.(true, true);
  };
  img.src = imageURL(result.image);
}

function received(node, output) {
  const sent = output?.[UI_KEY]?.[0];
  if (!sent?.layout) return;
  node.properties ??= {};
  node.properties[RESULT] = sent;
  if (node.rlgScrubber) {
    node.rlgScrubber.message = null;
    ensureRoom(node);
    update(node);
  } else fallback(node);
  absorbResult(node);
}

// The note and the target row again when the graph may have changed: at most four times a second, and once more
// after the last change.
function scheduleCheck(node) {
  const s = node.rlgScrubber;
  if (!s || !resultOf(node) || s.check) return;
  s.check = setTimeout(() => {
    s.check = null;
    if (staleKey(node) !== s.staleKey) update(node);
  }, 250);
}

// Each change the front-end records (the change tracker's "graphChanged"), besides each time the node is drawn.
api.addEventListener("graphChanged", () => {
  const graph = app.canvas?.graph ?? app.graph;
  for (const n of graph?.nodes ?? graph?._nodes ?? []) if (n.rlgScrubber) scheduleCheck(n);
});

app.registerExtension({
  name: "ComfyUI-RLG.scrubber",
  nodeCreated(node) {
    if ((node.comfyClass ?? node.type) !== GRID) return;
    if (typeof node.addDOMWidget === "function") build(node);
    else {
      node.rlgScrubberNote = NO_DOM;
      refreshReadout(node);
    }
    const onExecuted = node.onExecuted;
    node.onExecuted = function (output) {
      const r = onExecuted?.apply(this, arguments);
      received(this, output);
      return r;
    };
    const onConfigure = node.onConfigure;
    node.onConfigure = function () {
      const r = onConfigure?.apply(this, arguments);
      if (this.rlgScrubber) {
        ensureRoom(this);
        update(this);
      } else fallback(this);
      return r;
    };
    const onDrawForeground = node.onDrawForeground;
    node.onDrawForeground = function () {
      const r = onDrawForeground?.apply(this, arguments);
      scheduleCheck(this);
      return r;
    };
    update(node);
  },
});

// The pixels the scrubber shows, for the tests: {width, height, rgba: base64}.
function pixels(node) {
  const c = node.rlgScrubber?.canvas;
  if (!c) return null;
  const data = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
  let binary = "";
  for (let i = 0; i < data.length; i += 0x8000) binary += String.fromCharCode(...data.subarray(i, i + 0x8000));
  return { width: c.width, height: c.height, rgba: btoa(binary) };
}

function state(node) {
  const s = node?.rlgScrubber;
  const { scales, a, b } = indices(node);
  return {
    result: !!resultOf(node), scales, index: a, other: b, scale: scales[a] ?? null, view: viewOf(node),
    chosen: { ...stateOf(node) }, image: s?.imageState ?? null, note: s?.note.textContent ?? null,
    warning: s?.note.classList.contains("rlg-warn") ?? null, use: s?.use.textContent ?? null,
    useDisabled: s?.use.disabled ?? null, chooser: s ? s.target.style.display !== "none" : null,
    choices: s ? [...s.target.options].map((o) => o.textContent) : [], staleness: s?.staleness ?? null,
    geometry: s?.geometry ?? null, fallback: !s, note_on_node: node?.rlgScrubberNote ?? null,
    frame: s ? [s.frame.offsetWidth, s.frame.offsetHeight] : null,
  };
}

Object.assign(scrubberHooks, { nearestIndex, viewGeometry, changesSince, state, pixels, RESULT, STATE, WIDGET });
