"""Graphs RLG refuses when the prompt is queued: step caches placed where they cannot hold per model.

Plain Python on the API-format prompt (what POST /prompt receives), no ComfyUI import; nodes/server_hooks.py runs it
before the prompt is validated and turns each refusal into a validation error on the RLG node. The same situations
are refused again when they are met (step_caches.py), so this walk only has to be right where it speaks: it follows
MODEL links by their usual input name ("model"), and calls an RL model separate only when its chain starts at a
model loader of its own. Anything it cannot tell is left to the run-time check.

Refused (and why, in the messages below):
* TeaCache or WaveSpeed's ApplyFBCacheOnModel after an RLG node whose RL model is a separate file: these caches patch
  the one network they were applied to, the base's;
* LazyCache on an RL model and not on the base: RLG never runs an RL model's whole guided step, so it would never run.
"""

from __future__ import annotations

from collections.abc import Iterator

MODULE_BOUND_CACHES = {"TeaCache": "TeaCache", "ApplyFBCacheOnModel": "ApplyFBCacheOnModel"}
LAZYCACHE = "LazyCache"
# Nodes that load a model file of their own: a chain starting at one of these is its own module.
LOADERS = frozenset({
    "UNETLoader", "CheckpointLoaderSimple", "CheckpointLoader", "DiffusersLoader", "ImageOnlyCheckpointLoader",
    "unCLIPCheckpointLoader", "UnetLoaderGGUF", "UnetLoaderGGUFAdvanced",
})
# RLG nodes: (title, its base input, its RL model inputs: a MODEL link, or a chain of RLG RL Model nodes).
PAIR_NODES = {
    "RLGApply": ("RLG Apply", "rl_model"),
    "RLGGuider": ("RLG Guider", "rl_model"),
    "RLGScaleSweep": ("RLG Scale Sweep", "rl_model"),
    "RLGApplyMulti": ("RLG Apply (several RL models)", "rl_models"),
    "RLGGuiderMulti": ("RLG Guider (several RL models)", "rl_models"),
}
RL_MODEL_NODE = "RLGRLModel"
MAX_CHAIN = 256


def refusal_text(kind: str, label: str, where: str = "RLG Apply") -> str:
    return (f"{kind} is connected after {where}, but {label} is a separate model: {kind} patches the one network it "
            f"was applied to, so it would cache the base model only and share nothing with {label}. Put one {kind} on "
            f"model and another on {label}, before {where}, and connect {where}'s output to the sampler directly.")


def lazycache_text(label: str, where: str = "RLG Apply") -> str:
    return (f"LazyCache is on {label} only: it caches a model's whole guided step, and RLG evaluates {label} one "
            f"prediction at a time inside its own step, so it would never run. Put LazyCache after {where} instead (it "
            f"then caches RLG's blended prediction), or use EasyCache on {label}, which RLG runs per model.")


def _is_link(value) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[1], int)


def _node(prompt: dict, node_id) -> dict | None:
    node = prompt.get(str(node_id))
    return node if isinstance(node, dict) else None


def _inputs(node: dict | None) -> dict:
    inputs = (node or {}).get("inputs")
    return inputs if isinstance(inputs, dict) else {}


def model_chain(prompt: dict, link) -> list[tuple[str, str]]:
    """(node id, class_type) from the node a MODEL link comes from, up its "model" inputs to where the chain starts."""
    chain, seen = [], set()
    while _is_link(link) and len(chain) < MAX_CHAIN:
        node_id = str(link[0])
        node = _node(prompt, node_id)
        if node is None or node_id in seen:
            break
        seen.add(node_id)
        chain.append((node_id, str(node.get("class_type"))))
        link = _inputs(node).get("model")
    return chain


def _own_loader(chain: list[tuple[str, str]], base_chain: list[tuple[str, str]]) -> bool:
    return bool(chain) and chain[-1][1] in LOADERS and chain[-1][0] not in {node_id for node_id, _ in base_chain}


def _rl_links(prompt: dict, node: dict, rl_input: str) -> Iterator[tuple[str, list]]:
    """(label, MODEL link) of each RL model of an RLG node, labelled as the node's messages label them."""
    link = _inputs(node).get(rl_input)
    if rl_input == "rl_model":
        if _is_link(link):
            yield "rl_model", link
        return
    links, seen = [], set()
    while _is_link(link) and len(links) < MAX_CHAIN:
        term = _node(prompt, link[0])
        if term is None or term.get("class_type") != RL_MODEL_NODE or str(link[0]) in seen:
            break
        seen.add(str(link[0]))
        links.append(_inputs(term).get("rl_model"))
        link = _inputs(term).get("rl_models")
    for i, rl_link in enumerate(reversed(links), start=1):  # the first of the chain is RL model 1
        if _is_link(rl_link):
            yield f"rl_models (RL model {i})", rl_link


def _downstream(prompt: dict, node_id: str) -> list[tuple[str, str]]:
    """(node id, class_type) of the nodes fed by node_id's MODEL output through "model" inputs, transitively."""
    found, todo, seen = [], [node_id], {node_id}
    while todo and len(found) < MAX_CHAIN:
        current = todo.pop()
        for other_id, other in prompt.items():
            link = _inputs(other if isinstance(other, dict) else None).get("model")
            if _is_link(link) and str(link[0]) == current and str(other_id) not in seen:
                seen.add(str(other_id))
                found.append((str(other_id), str(other.get("class_type"))))
                todo.append(str(other_id))
    return found


def refusals(prompt: dict) -> dict[str, str]:
    """{RLG node id: why the graph cannot run} for the situations of the module's docstring."""
    out: dict[str, str] = {}
    for node_id, node in prompt.items():
        if not isinstance(node, dict) or node.get("class_type") not in PAIR_NODES:
            continue
        title, rl_input = PAIR_NODES[node["class_type"]]
        base_chain = model_chain(prompt, _inputs(node).get("model"))
        after = [kind for _, kind in _downstream(prompt, str(node_id)) if kind in MODULE_BOUND_CACHES]
        for label, link in _rl_links(prompt, node, rl_input):
            chain = model_chain(prompt, link)
            kinds = {kind for _, kind in chain}
            if LAZYCACHE in kinds and LAZYCACHE not in {kind for _, kind in base_chain}:
                out[str(node_id)] = lazycache_text(label, title)
                break
            if after and _own_loader(chain, base_chain):
                out[str(node_id)] = refusal_text(MODULE_BOUND_CACHES[after[0]], label, title)
                break
    return out
