// ComfyUI-RLG front-end: reads the RLG dial back to the user while they edit a graph.
//
// RLG Apply / RLG Guider / RLG RL Model nodes show one line under their widgets saying what
// rlg_scale means (base model, RL model, stronger alignment...), its ramp if it has one, which part
// of the schedule is blended, and the RL branch's own CFG if set. A window whose start is after its
// end turns the node red with the reason, before anything is queued (the server refuses it too,
// naming both inputs).
import { app } from "../../scripts/app.js";

const RLG_NODES = new Set(["RLGApply", "RLGGuider", "RLGRLModel", "RLGScaleSweep"]);
const DIAL_WIDGETS = ["rlg_scale", "start_percent", "end_percent", "schedule", "end_scale", "rl_cfg"];
const SWEEP_WIDGETS = ["scales", "start_percent", "end_percent"];
const SCALE_LIMIT = 10;
const MAX_SWEEP_SCALES = 64;
const WARNING_COLOR = "#a33";

function widgetValue(node, name) {
  const widget = (node.widgets || []).find((w) => w.name === name);
  if (!widget) return undefined;
  return typeof widget.value === "string" ? widget.value : Number(widget.value);
}

function meaningOf(scale) {
  if (scale === 0) return "base model";
  if (scale === 1) return "RL model";
  if (scale > 1) return `beyond RL (KL / ${scale})`;
  if (scale > 0) return "between base and RL";
  return "away from the reward";
}

// Pure: the short summary shown for one setting. Exported on window for tests.
// schedule, endScale and rlCfg are optional (older nodes and workflows have none).
export function describeDial(scale, start, end, schedule = "constant", endScale = scale, rlCfg = 0) {
  if (start > end) {
    return { text: `start_percent after end_percent: nothing to blend`, warning: true };
  }
  const ramp = schedule && schedule !== "constant" && endScale !== scale;
  const dial = ramp ? `w ${scale} → ${endScale} (${schedule})` : `w ${scale}: ${meaningOf(scale)}`;
  const span = spanOf(start, end);
  const cfg = !rlCfg ? "" : rlCfg === 1 ? " · RL branch without CFG" : ` · RL branch cfg ${rlCfg}`;
  return { text: `${dial} · ${span}${cfg}`, warning: false };
}

function spanOf(start, end) {
  return start === 0 && end === 1 ? "all steps" : `blend ${Math.round(start * 100)}-${Math.round(end * 100)}%`;
}

// Pure: the scales an RLG Scale Sweep will use, read as the server reads them (nodes/rlg_math.py).
export function describeSweep(scales, start, end) {
  if (start > end) {
    return { text: `start_percent after end_percent: nothing to blend`, warning: true };
  }
  const tokens = String(scales ?? "").split(/[,; ]+/).filter((t) => t.trim() !== "");
  if (tokens.length === 0) return { text: "scales is empty", warning: true };
  if (tokens.length > MAX_SWEEP_SCALES) return { text: `${tokens.length} scales: at most ${MAX_SWEEP_SCALES}`, warning: true };
  const values = tokens.map(Number);
  const bad = tokens.find((t, i) => !Number.isFinite(values[i]) || Math.abs(values[i]) > SCALE_LIMIT);
  if (bad !== undefined) return { text: `scales: ${bad} is not a number from -10 to 10`, warning: true };
  const noun = values.length === 1 ? "scale" : "scales";
  return { text: `sweeps ${values.length} ${noun}: ${values.join(", ")} · ${spanOf(start, end)}`, warning: false };
}

const LINE_HEIGHT = 16;

// Leave one line under the widgets for the summary.
function ensureRoom(node) {
  const needed = node.computeSize()[1] + LINE_HEIGHT;
  if (node.size[1] < needed) node.setSize([node.size[0], needed]);
}

function refresh(node) {
  const summary = node.comfyClass === "RLGScaleSweep"
    ? describeSweep(...SWEEP_WIDGETS.map((name) => widgetValue(node, name)))
    : describeDial(...DIAL_WIDGETS.map((name) => widgetValue(node, name)));
  node.rlgSummary = summary;
  if (summary.warning) {
    if (node.rlgSavedColor === undefined) node.rlgSavedColor = node.bgcolor ?? null;
    node.bgcolor = WARNING_COLOR;
  } else if (node.rlgSavedColor !== undefined) {
    node.bgcolor = node.rlgSavedColor ?? undefined;
    delete node.rlgSavedColor;
  }
  node.setDirtyCanvas?.(true, true);
}

app.registerExtension({
  name: "ComfyUI-RLG.dial",
  nodeCreated(node) {
    if (!RLG_NODES.has(node.comfyClass)) return;
    for (const widget of node.widgets || []) {
      if (!DIAL_WIDGETS.includes(widget.name) && !SWEEP_WIDGETS.includes(widget.name)) continue;
      const previous = widget.callback;
      widget.callback = function (...args) {
        const result = previous?.apply(this, args);
        refresh(node);
        return result;
      };
    }
    const onConfigure = node.onConfigure;
    node.onConfigure = function (...args) {
      const result = onConfigure?.apply(this, args);
      ensureRoom(node);
      refresh(node);
      return result;
    };
    const onDrawForeground = node.onDrawForeground;
    node.onDrawForeground = function (ctx) {
      const result = onDrawForeground?.apply(this, arguments);
      if (this.rlgSummary && !this.flags?.collapsed) {
        ctx.save();
        ctx.font = "12px sans-serif";
        ctx.fillStyle = this.rlgSummary.warning ? "#fcc" : "#bbb";
        ctx.fillText(this.rlgSummary.text, 10, this.size[1] - 5);
        ctx.restore();
      }
      return result;
    };
    ensureRoom(node);
    refresh(node);
  },
});

window.RLG_describeDial = describeDial;
window.RLG_describeSweep = describeSweep;
