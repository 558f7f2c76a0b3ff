// ComfyUI-RLG front-end: says what the RLG settings mean while the graph is edited, and flags mistakes before
// anything is queued.
//
// * RLG Apply / RLG Guider / RLG RL Model: a readout under the widgets, in plain words: what rlg_scale does
//   (the base model, the RL model, between the two, stronger than the RL model, away from the reward), its ramp,
//   which part of the schedule is blended and what runs outside it, how often the RL model runs, the RL branch's
//   own CFG. end_scale is marked unused while the schedule is constant.
// * RLG Scale Sweep: the list it will sweep. RLG Sweep Grid: where its labels come from, and whether they match
//   the sweep's list (the server refuses a mismatch when the prompt is queued).
// * Mistakes turn the node red with the reason: a window whose start is after its end, a bad list, the same model
//   in model and rl_model (RLG would have no effect). The server refuses the first two when the prompt is queued,
//   and warns about the third when the node runs (the event "rlg.warning", shown here as a toast).
//
// RLG Sweep Grid also gets the scrubber (js/rlg_scrubber.js), which uses this file's readout and graph helpers.
//
// The pure functions are exported, and the test hooks live on one object: window.ComfyUI_RLG.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const DIAL_NODES = new Set(["RLGApply", "RLGGuider", "RLGRLModel"]);
const SWEEP = "RLGScaleSweep";
const GRID = "RLGSweepGrid";
const RLG_NODES = new Set([...DIAL_NODES, SWEEP, GRID]);
const PAIR_NODES = new Set(["RLGApply", "RLGGuider", SWEEP]);
const DIAL_WIDGETS = ["rlg_scale", "start_percent", "end_percent", "schedule", "end_scale", "rl_cfg", "outside_window",
  "rl_every"];
const SCALE_LIMIT = 10;
const MAX_SWEEP_SCALES = 64;
const ERROR_COLOR = "#a33";
export const LINE_HEIGHT = 16;
const FONT = "12px sans-serif";
const BYPASS = 4; // LiteGraph mode of a bypassed node
const END_SCALE_UNUSED = "end_scale (unused: constant)";

export function widget(node, name) {
  return (node.widgets || []).find((w) => w.name === name);
}

function widgetValue(node, name) {
  const w = widget(node, name);
  if (!w) return undefined;
  return typeof w.value === "string" ? w.value : Number(w.value);
}

export const fmt = (x) => String(Number(Number(x).toFixed(3)));

export function meaningOf(scale) {
  if (scale === 0) return "the base model";
  if (scale === 1) return "the RL model";
  if (scale > 1) return "stronger than the RL model";
  if (scale > 0) return "between base and RL";
  return "away from the reward";
}

function ordinal(n) {
  const tens = n % 100;
  if (tens >= 11 && tens <= 13) return `${n}th`;
  return `${n}${{ 1: "st", 2: "nd", 3: "rd" }[n % 10] ?? "th"}`;
}

const percent = (x) => `${Math.round(x * 100)}%`;

// What happens outside the window, by node: RLG Apply / Guider and the sweep treat their one RL model as the
// RL model alone there ("RL model") or leave the base alone ("off"); an RLG RL Model adds nothing ("off") or
// counts at scale 1 ("RL model") among the others.
function outsideOf(outside, kind) {
  const rlModel = outside === "RL model";
  if (kind === "RLGRLModel") return rlModel ? "scale 1 outside" : "adds nothing outside";
  return rlModel ? "RL model alone outside" : "base alone outside";
}

export function describeWindow(start, end, outside = "RL model", kind = "RLGApply") {
  if (start === 0 && end === 1) return "blends every step";
  return `blends ${Math.round(start * 100)}-${percent(end)} of the steps, ${outsideOf(outside, kind)}`;
}

function windowError(start, end) {
  if (!(start >= 0 && start <= 1) || !(end >= 0 && end <= 1)) return "start_percent and end_percent go from 0 to 1";
  if (start > end) return "start_percent after end_percent: nothing to blend";
  return null;
}

function extrasOf(rlEvery, rlCfg) {
  const out = [];
  if (rlEvery > 1) out.push(`RL every ${ordinal(rlEvery)} step, estimated between`);
  if (rlCfg === 1) out.push("RL branch without CFG");
  else if (rlCfg) out.push(`RL branch cfg ${fmt(rlCfg)}`);
  return out.length ? [out.join(" · ")] : [];
}

// Pure: the readout of one RLG Apply / Guider / RL Model. Every setting after end is optional (older nodes and
// workflows lack them). Returns {lines, warning, text}: text is the lines joined with " · ".
export function describeDial(scale, start, end, schedule = "constant", endScale = scale, rlCfg = 0,
  outside = "RL model", rlEvery = 1, kind = "RLGApply") {
  const error = windowError(start, end);
  if (error) return summary([error], true);
  const ramp = schedule && schedule !== "constant" && endScale !== undefined && endScale !== scale;
  const dial = ramp ? `rlg_scale ${fmt(scale)} → ${fmt(endScale)} (${schedule})`
    : `rlg_scale ${fmt(scale)}: ${meaningOf(scale)}`;
  return summary([dial, describeWindow(start, end, outside, kind), ...extrasOf(rlEvery, rlCfg)], false);
}

function summary(lines, warning) {
  return { lines, warning, text: lines.join(" · ") };
}

// Pure: the scales of a list typed as the server reads it (nodes/settings.py parse_scales), or an error.
export function parseScales(text) {
  const tokens = String(text ?? "").split(/[,; ]+/).filter((t) => t.trim() !== "");
  if (tokens.length === 0) return { error: "scales is empty" };
  if (tokens.length > MAX_SWEEP_SCALES) return { error: `${tokens.length} scales: at most ${MAX_SWEEP_SCALES}` };
  const values = tokens.map(Number);
  const bad = tokens.find((t, i) => !Number.isFinite(values[i]) || Math.abs(values[i]) > SCALE_LIMIT);
  if (bad !== undefined) return { error: `scales: ${bad} is not a number from -10 to 10` };
  return { values };
}

// Pure: the readout of an RLG Scale Sweep.
export function describeSweep(scales, start, end, rlEvery = 1) {
  const error = windowError(start, end);
  if (error) return summary([error], true);
  const parsed = parseScales(scales);
  if (parsed.error) return summary([parsed.error], true);
  const noun = parsed.values.length === 1 ? "scale" : "scales";
  return summary([`sweeps ${parsed.values.length} ${noun}: ${parsed.values.map(fmt).join(", ")}`,
    describeWindow(start, end, "RL model", SWEEP), ...extrasOf(rlEvery, 0)], false);
}

// Pure: the readout of an RLG Sweep Grid. own: its scales box; swept: the sweep's list (undefined where no sweep
// is found upstream, null where the sweep's list is linked and only known when it runs).
export function describeGrid(own, swept) {
  const typed = String(own ?? "").trim() === "" ? null : parseScales(own);
  if (typed?.error) return summary([typed.error], true);
  const sweep = typeof swept === "string" ? parseScales(swept) : null;
  if (typed && sweep?.values) {
    const same = typed.values.length === sweep.values.length && typed.values.every((v, i) => v === sweep.values[i]);
    if (!same) {
      return summary([`scales ${typed.values.map(fmt).join(", ")} differ from the sweep's`,
        `(${sweep.values.map(fmt).join(", ")}): clear scales to take the sweep's`], true);
    }
  }
  if (sweep?.values) return summary([`labels from the sweep: ${sweep.values.map(fmt).join(", ")}`], false);
  if (typed) return summary([`labels: ${typed.values.map(fmt).join(", ")}`], false);
  if (swept === null) return summary(["labels from the sweep"], false);
  return summary(["no labels: connect the sweep's scales to sweep_scales"], true);
}

// ---------------------------------------------------------------------------------------------- the graph

function inputLink(node, name) {
  const slot = (node.inputs || []).findIndex((i) => i.name === name);
  if (slot < 0 || node.inputs[slot].link == null) return null;
  const id = node.inputs[slot].link;
  const links = node.graph?.links ?? app.graph?.links;
  return node.getInputLink?.(slot) ?? links?.get?.(id) ?? links?.[id] ?? null;
}

// The output a link really comes from: through bypassed nodes (their input of the same type) and Reroute nodes.
export function source(node, name) {
  let link = inputLink(node, name);
  for (let hops = 0; link && hops < 32; hops++) {
    const origin = node.graph?.getNodeById?.(link.origin_id) ?? app.graph?.getNodeById?.(link.origin_id);
    if (!origin) return null;
    const type = origin.outputs?.[link.origin_slot]?.type;
    const through = origin.type === "Reroute" ? origin.inputs?.[0]
      : origin.mode === BYPASS ? (origin.inputs || []).find((i) => i.type === type && i.link != null) : null;
    if (!through) return { node: origin, slot: link.origin_slot };
    node = origin;
    link = inputLink(origin, through.name);
  }
  return null;
}

function sameModel(node) {
  const a = source(node, "model");
  const b = source(node, "rl_model");
  return !!(a && b && a.node === b.node && a.slot === b.slot);
}

// The sweep's list a grid gets: from its sweep_scales link, else from the one sweep upstream of its images.
function sweptList(grid) {
  const linked = source(grid, "sweep_scales");
  let sweep = linked?.node?.comfyClass === SWEEP || linked?.node?.type === SWEEP ? linked.node : null;
  if (!linked) {
    const found = new Set();
    const seen = new Set();
    const todo = [grid];
    while (todo.length) {
      const n = todo.pop();
      for (const input of n.inputs || []) {
        const s = input.link == null ? null : source(n, input.name);
        if (!s || seen.has(s.node.id)) continue;
        seen.add(s.node.id);
        if ((s.node.comfyClass ?? s.node.type) === SWEEP) found.add(s.node);
        else todo.push(s.node);
      }
    }
    if (found.size === 1) sweep = [...found][0];
  } else if (!sweep) {
    return null; // linked to something else: known when it runs
  }
  if (!sweep) return undefined;
  if (inputLink(sweep, "scales")) return null;
  return String(widgetValue(sweep, "scales") ?? "");
}

function readout(node) {
  const kind = node.comfyClass ?? node.type;
  if (kind === GRID) {
    const g = describeGrid(widgetValue(node, "scales"), sweptList(node));
    return node.rlgScrubberNote ? summary([...g.lines, node.rlgScrubberNote], g.warning) : g;  // rlg_scrubber.js
  }
  if (kind === SWEEP) {
    const s = describeSweep(widgetValue(node, "scales"), widgetValue(node, "start_percent"),
      widgetValue(node, "end_percent"), widgetValue(node, "rl_every") ?? 1);
    return sameModel(node) ? summary(["rl_model is model: RLG has no effect", ...s.lines], true) : s;
  }
  const [scale, start, end, schedule, endScale, rlCfg, outside, rlEvery] = DIAL_WIDGETS.map((n) => widgetValue(node, n));
  const d = describeDial(scale, start, end, schedule ?? "constant", endScale ?? scale, rlCfg ?? 0,
    outside ?? (kind === "RLGRLModel" ? "off" : "RL model"), rlEvery ?? 1, kind);
  if (PAIR_NODES.has(kind) && sameModel(node)) return summary(["rl_model is model: RLG has no effect", ...d.lines], true);
  if (node.rlgServerWarning) return summary([node.rlgServerWarning, ...d.lines], true);
  return d;
}

let measureCtx = null;
function textWidth(text) {
  measureCtx ??= document.createElement("canvas").getContext("2d");
  measureCtx.font = FONT;
  return measureCtx.measureText(text).width;
}

// Room under the widgets for the readout's lines, and wide enough for the longest.
function ensureRoom(node) {
  const lines = node.rlgSummary?.lines?.length ?? 1;
  const width = Math.ceil(Math.max(0, ...(node.rlgSummary?.lines ?? []).map(textWidth)) + 20);
  const needed = [Math.max(node.size[0], width), Math.max(node.size[1], node.computeSize()[1] + lines * LINE_HEIGHT)];
  if (needed[0] !== node.size[0] || needed[1] !== node.size[1]) node.setSize(needed);
}

function markEndScale(node) {
  const w = widget(node, "end_scale");
  if (!w) return;
  const unused = (widgetValue(node, "schedule") ?? "constant") === "constant";
  w.label = unused ? END_SCALE_UNUSED : undefined;
  w.disabled = unused;
  node.rlgEndScaleUnused = unused;
}

// The readout of an RLG node, computed again (after a widget changed, and from rlg_scrubber.js).
export function refresh(node) {
  const summary = readout(node);
  node.rlgSummary = summary;
  node.rlgKey = keyOf(node);
  markEndScale(node);
  if (summary.warning) {
    if (node.rlgSavedColor === undefined) node.rlgSavedColor = node.bgcolor ?? null;
    node.bgcolor = ERROR_COLOR;
  } else if (node.rlgSavedColor !== undefined) {
    node.bgcolor = node.rlgSavedColor ?? undefined;
    delete node.rlgSavedColor;
  }
  ensureRoom(node);
  node.setDirtyCanvas?.(true, true);
}

// What the readout depends on beyond the node's own widgets (links, upstream nodes): checked when drawing.
function keyOf(node) {
  const kind = node.comfyClass ?? node.type;
  const parts = (node.widgets || []).map((w) => String(w.value));
  if (PAIR_NODES.has(kind)) parts.push(sameModel(node));
  if (kind === GRID) parts.push(String(sweptList(node)));
  parts.push(node.rlgServerWarning ?? "", node.rlgScrubberNote ?? "");
  return parts.join("\u0001");
}

function nodesWithId(id) {
  const node = app.graph?.getNodeById?.(id) ?? app.graph?.getNodeById?.(Number(id));
  return node ? [node] : [];
}

function toast(summary, detail) {
  const toasts = app.extensionManager?.toast;
  if (toasts?.add) toasts.add({ severity: "warn", summary, detail, life: 10000 });
  else console.warn(`${summary}: ${detail}`);
}

api.addEventListener("rlg.warning", (event) => {
  const { node: id, text } = event.detail ?? {};
  toast("RLG", text);
  for (const node of id == null ? [] : nodesWithId(id)) {
    node.rlgServerWarning = String(text).split(" (")[0];  // "rl_model is model: RLG has no effect"
    refresh(node);
  }
});

api.addEventListener("execution_start", () => {
  for (const node of app.graph?._nodes ?? []) {
    if (node.rlgServerWarning) {
      delete node.rlgServerWarning;
      refresh(node);
    }
  }
});

app.registerExtension({
  name: "ComfyUI-RLG.dial",
  nodeCreated(node) {
    if (!RLG_NODES.has(node.comfyClass)) return;
    for (const w of node.widgets || []) {
      const previous = w.callback;
      w.callback = function (...args) {
        const result = previous?.apply(this, args);
        refresh(node);
        return result;
      };
    }
    for (const hook of ["onConfigure", "onConnectionsChange"]) {
      const previous = node[hook];
      node[hook] = function (...args) {
        const result = previous?.apply(this, args);
        refresh(node);
        return result;
      };
    }
    const onDrawForeground = node.onDrawForeground;
    node.onDrawForeground = function (ctx) {
      const result = onDrawForeground?.apply(this, arguments);
      if (keyOf(this) !== this.rlgKey) refresh(this);
      const lines = this.rlgSummary?.lines;
      if (lines?.length && !this.flags?.collapsed) {
        ctx.save();
        ctx.font = FONT;
        ctx.fillStyle = this.rlgSummary.warning ? "#fcc" : "#bbb";
        lines.forEach((line, i) => ctx.fillText(line, 10, this.size[1] - 5 - (lines.length - 1 - i) * LINE_HEIGHT));
        ctx.restore();
      }
      return result;
    };
    refresh(node);
  },
});

// Test hooks, under one object named for the pack; rlg_scrubber.js fills in the scrubber's.
export const scrubberHooks = {};
window.ComfyUI_RLG = Object.freeze({
  describeDial, describeSweep, describeGrid, describeWindow, meaningOf, parseScales,
  readout: (node) => node?.rlgSummary ?? null,
  END_SCALE_UNUSED, LINE_HEIGHT, scrubber: scrubberHooks,
});
