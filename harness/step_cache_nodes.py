"""The step-cache nodes users stack on RLG, applied as their nodes apply them, for tests and benchmarks.

ComfyUI's own EasyCache and LazyCache (comfy_extras/nodes_easycache.py), TeaCache and WaveSpeed's
ApplyFBCacheOnModel (the pinned snapshots in .comfy-host/thirdparty, harness.thirdparty). Each is called through its
node's own function with the node's other widgets at their defaults (start 0 / end 1 where the node has them, so
every step may be cached), so `apply(model, threshold)` is what a user's node with that threshold returns.

NOTHING_REUSED is each cache's "patched, but nothing reused" threshold: 0 for EasyCache and LazyCache (they stay on
the model and compute every step), a tiny positive one for TeaCache and FBCache (their nodes hand the model back
untouched at 0).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from . import thirdparty


@dataclass(frozen=True)
class CacheNode:
    name: str  # the node's class_type
    apply: Callable  # (model, threshold) -> the cached model
    nothing_reused: float
    reusing: float  # a threshold at which the tiny FLUX reuses a fair share of steps, in both models
    module_bound: bool  # it patches the one network it was applied to (refused after RLG with a separate RL model)


def _v3_result(out):
    return out.args[0] if hasattr(out, "args") else out[0]


def easycache() -> CacheNode:
    from comfy_extras.nodes_easycache import EasyCacheNode

    return CacheNode("EasyCache", lambda m, t: _v3_result(EasyCacheNode.execute(m, t, 0.0, 1.0, False)), 0.0, 0.6,
                     False)


def lazycache() -> CacheNode:
    from comfy_extras.nodes_easycache import LazyCacheNode

    return CacheNode("LazyCache", lambda m, t: _v3_result(LazyCacheNode.execute(m, t, 0.0, 1.0, False)), 0.0, 0.6,
                     False)


def teacache() -> CacheNode:
    nodes = thirdparty.submodule(thirdparty.TEACACHE, "nodes")
    return CacheNode("TeaCache", lambda m, t: nodes.TeaCache().apply_teacache(m, "flux", t, 0.0, 1.0, "cpu")[0],
                     1e-6, 0.6, True)


def fbcache() -> CacheNode:
    nodes = thirdparty.submodule(thirdparty.WAVESPEED, "fbcache_nodes")
    return CacheNode("ApplyFBCacheOnModel",
                     lambda m, t: nodes.ApplyFBCacheOnModel().patch(m, "diffusion_model", t, -1, 0.0, 1.0)[0],
                     1e-6, 0.3, True)


FACTORIES = {"EasyCache": easycache, "LazyCache": lazycache, "TeaCache": teacache, "ApplyFBCacheOnModel": fbcache}
PACK_OF = {"TeaCache": thirdparty.TEACACHE, "ApplyFBCacheOnModel": thirdparty.WAVESPEED}


def get(name: str, probe: Callable | None = None) -> CacheNode:
    """The cache node, or a skip saying why it cannot run on this host by itself (its import, or probe(node) on a
    model without RLG raising)."""
    if name in PACK_OF:
        thirdparty.load_or_skip(PACK_OF[name])
    node = FACTORIES[name]()
    if probe is not None:
        try:
            probe(node)
        except Exception as err:  # noqa: BLE001  (the pack's own failure on this host, without RLG)
            pytest.skip(f"{name} fails on this ComfyUI by itself, without RLG: {type(err).__name__}: {err}")
    return node
