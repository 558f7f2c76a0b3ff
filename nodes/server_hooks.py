"""What the pack hooks into the running ComfyUI server: a queue-time step and warnings the front-end shows.

* The queue-time step (an on-prompt handler, run by POST /prompt before the prompt is validated): an RLG Sweep
  Grid gets the list of the RLG Scale Sweep whose images it lays out, as a literal in its optional sweep_scales
  input, so its validate_inputs can compare that list with the grid's own one and refuse a mismatch before
  anything samples. A link from the sweep's scales output becomes the literal it would carry (the output is the
  sweep's list, written out); a grid with nothing connected there gets the list of the one sweep upstream of
  its images. Lists that only exist at run time (linked from another node) stay as they are and are compared
  when the grid runs. ComfyUI logs and ignores an exception in a handler, so this one never raises.
* The queue-time refusals (another on-prompt handler): graphs RLG cannot run as the user wired them (a step cache
  where it cannot hold per model, nodes/graph_checks.py). The refused RLG node is put in the prompt as RLG queue
  refusal (nodes/nodes_queue_refusal.py) under its own id, so validation fails there with the reason: the
  front-end marks the user's node, an HTTP client reads node_errors, and nothing runs.
* warn(): a warning for the front-end (the event "rlg.warning", which js/rlg_dial.js shows as a toast and on
  the node) and the console.

Nothing here runs on import. register() adds the handler once, from the extension's node list, when ComfyUI's
server is running (in-process tests have none).
"""

from __future__ import annotations

import logging
import sys
from collections import deque

from .graph_checks import refusals
from .nodes_queue_refusal import NODE_ID as REFUSAL_NODE

log = logging.getLogger("ComfyUI-RLG")

WARNING_EVENT = "rlg.warning"
SWEEP = "RLGScaleSweep"
GRID = "RLGSweepGrid"
SWEEP_SCALES_OUTPUT = 2  # RLG Scale Sweep's outputs: MODEL, LATENT, scales


def _prompt_server():
    server = sys.modules.get("server")  # ComfyUI's server module, imported by main.py before any custom node
    return getattr(getattr(server, "PromptServer", None), "instance", None)


def register() -> bool:
    """Add the queue-time handler to the running server, once. False where no server runs."""
    instance = _prompt_server()
    if instance is None or not hasattr(instance, "add_on_prompt_handler"):
        return False
    handlers = getattr(instance, "on_prompt_handlers", [])
    for handler in (fill_sweep_scales, refuse_graphs):
        if not any(getattr(h, "__name__", "") == handler.__name__ and
                   getattr(h, "__module__", "") == handler.__module__ for h in handlers):
            instance.add_on_prompt_handler(handler)
    return True


def warn(node_id, text: str) -> None:
    """A warning for the user: in the console, and in the front-end (a toast, and on the node)."""
    log.warning("RLG: %s", text)
    instance = _prompt_server()
    if instance is None:
        return
    try:
        instance.send_sync(WARNING_EVENT, {"node": None if node_id is None else str(node_id), "text": text})
    except Exception:  # a warning must never fail the node
        log.debug("RLG: could not send the warning to the front-end", exc_info=True)


def _is_link(value) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[1], int)


def _sweeps_upstream(prompt: dict, start) -> set[str]:
    """The RLG Scale Sweep nodes an input's value comes from, through any nodes in between."""
    found, seen, todo = set(), set(), deque([start])
    while todo:
        link = todo.popleft()
        node_id = str(link[0])
        if node_id in seen or not isinstance(prompt.get(node_id), dict):
            continue
        seen.add(node_id)
        node = prompt[node_id]
        if node.get("class_type") == SWEEP:
            found.add(node_id)
            continue
        todo.extend(v for v in (node.get("inputs") or {}).values() if _is_link(v))
    return found


def fill_sweep_scales(json_data):
    """On-prompt handler: give each RLG Sweep Grid the list of its sweep as a literal (see the module)."""
    try:
        prompt = json_data.get("prompt") if isinstance(json_data, dict) else None
        if not isinstance(prompt, dict):
            return json_data
        for node in prompt.values():
            if not isinstance(node, dict) or node.get("class_type") != GRID:
                continue
            inputs = node.get("inputs")
            if not isinstance(inputs, dict):
                continue
            link = inputs.get("sweep_scales")
            if _is_link(link):
                source = prompt.get(str(link[0]))
                sweep = source if isinstance(source, dict) and source.get("class_type") == SWEEP and \
                    link[1] == SWEEP_SCALES_OUTPUT else None
            elif link is None and _is_link(inputs.get("images")):
                sweeps = _sweeps_upstream(prompt, inputs["images"])
                sweep = prompt[next(iter(sweeps))] if len(sweeps) == 1 else None
            else:
                sweep = None
            scales = (sweep or {}).get("inputs", {}).get("scales")
            if isinstance(scales, str):
                inputs["sweep_scales"] = scales
    except Exception:  # ComfyUI would only log it; never let the pack stand between a user and the queue
        log.debug("RLG: the sweep grid's queue-time step failed", exc_info=True)
    return json_data


def refuse_graphs(json_data):
    """On-prompt handler: each RLG node graph_checks refuses becomes RLG queue refusal, carrying the reason."""
    try:
        prompt = json_data.get("prompt") if isinstance(json_data, dict) else None
        if not isinstance(prompt, dict):
            return json_data
        for node_id, reason in refusals(prompt).items():
            prompt[node_id] = {"class_type": REFUSAL_NODE, "inputs": {"refusal": f"RLG: {reason}"},
                               "_meta": prompt[node_id].get("_meta", {})}
    except Exception:  # ComfyUI would only log it; the same graphs are refused again when they run
        log.debug("RLG: the queue-time graph check failed", exc_info=True)
    return json_data
