"""What a sweep grid's images were made from: the part of the queued prompt upstream of the grid.

RLG Sweep Grid sends this record to the front-end with its picture. The scrubber (js/rlg_scrubber.js) compares it
with the graph as it is now, and says plainly when the images are from an earlier run whose settings have since
changed (a seed, the sweep's scales, a model, a link). Plain Python over the API-format prompt: no ComfyUI import.
"""

from __future__ import annotations

import json
from collections import deque

MAX_RECORD_CHARS = 200_000  # a record larger than this (long texts in a huge graph) is not sent: no stale check


def _is_link(value) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[1], int) and \
        isinstance(value[0], (str, int))


def upstream(prompt: dict, node_id) -> list[str]:
    """The ids of node_id and every node its inputs come from, through any nodes in between (node_id first)."""
    start = str(node_id)
    if not isinstance(prompt, dict) or not isinstance(prompt.get(start), dict):
        return []
    order, seen, todo = [], {start}, deque([start])
    while todo:
        current = todo.popleft()
        order.append(current)
        for value in (prompt[current].get("inputs") or {}).values():
            if _is_link(value):
                origin = str(value[0])
                if origin not in seen and isinstance(prompt.get(origin), dict):
                    seen.add(origin)
                    todo.append(origin)
    return order


def _literal(value):
    """A JSON value as it is; anything else (a value no front-end could have typed) as its text."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, list):
        return [_literal(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _literal(v) for k, v in value.items()}
    return str(value)


def run_record(prompt: dict | None, node_id) -> dict | None:
    """{"node": the grid's id, "nodes": {id: {"class_type", "inputs"}}} for the grid and everything upstream of it
    in the prompt as it ran; links stay [origin id, output slot]. None without a prompt (a direct call) or when the
    record would be too large to keep in a workflow."""
    if node_id is None:
        return None
    ids = upstream(prompt or {}, node_id)
    if not ids:
        return None
    nodes = {}
    for current in ids:
        node = prompt[current]
        inputs = {str(k): [str(v[0]), v[1]] if _is_link(v) else _literal(v)
                  for k, v in (node.get("inputs") or {}).items()}
        nodes[current] = {"class_type": str(node.get("class_type")), "inputs": inputs}
    record = {"node": str(node_id), "nodes": nodes}
    return record if len(json.dumps(record)) <= MAX_RECORD_CHARS else None
