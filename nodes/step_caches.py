"""The step caches users stack on RLG, each model with its own state: EasyCache, LazyCache, TeaCache, FBCache.

ComfyUI glue, beside rl_options.py (below the step, above the RL-model forms). A step cache reuses a model's
earlier output where its input changed little since; what it keeps is that model's history. RLG runs two models
per step through the same options, often on the same module, so a cache that sees both passes would serve one
model from the other's history (the RL pass handed the base's output: RLG pulled back to the base). Here each RL
model gets the cache's state of its own, for the sampling run, wherever the cache node sits:

* EasyCache (ComfyUI): its state is one holder object in transformer_options["easycache"]. The RL pass runs with a
  holder of its own (a clone, prepared for the run as EasyCache's own sample wrapper prepares the base's). Its
  wrappers are plain functions that read the holder from the options, so a separate RL model's pass can run them
  too when EasyCache comes after RLG Apply; RLG logs the RL model's count as EasyCache logs the base's.
* LazyCache (ComfyUI): caches the whole guided prediction (a PREDICT_NOISE wrapper), so after RLG Apply it caches
  RLG's blend and needs nothing here. On rl_model alone it would never run: refused (check_rl_model).
* TeaCache: its state is a few attributes on the network module it patches. The RL pass swaps in its own.
* WaveSpeed's first-block cache (ApplyFBCacheOnModel): its state is one module-wide cache context plus a few
  variables of the node's closure (the last timestep seen, the run of cache hits). The RL pass swaps in its own.

TeaCache and FBCache bind their wrapper to the module they patched; a separate RL model (its own module) cannot
run the base's, so one of them after RLG Apply with a separate rl_model is refused (separate_model_refusal): the
fix is one cache node on model and one on rl_model. Caches are recognised by the functions their nodes install;
one whose internals are not what RLG knows stops with an RLGRuntimeError rather than being shared.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import comfy.patcher_extension

from .errors import RLGInputError, RLGRuntimeError
from .graph_checks import lazycache_text, refusal_text

log = logging.getLogger("ComfyUI-RLG")

EASYCACHE_KEY = "easycache"  # the transformer_options key and wrapper key of ComfyUI's EasyCache and LazyCache
# What TeaCache keeps on the module it patches (ComfyUI-TeaCache's forwards and wrapper, every model type).
TEACACHE_STATE = ("accumulated_rel_l1_distance", "previous_modulated_input", "previous_residual", "teacache_state")
# The variables of ApplyFBCacheOnModel.patch that its wrapper's closures keep between calls, and their initial values.
FBCACHE_STATE = {"prev_timestep": None, "prev_input_state": None, "current_timestep": None,
                 "consecutive_cache_hits": 0}
FBCACHE_REQUIRED = ("prev_timestep", "prev_input_state")


@dataclass
class CacheStates:
    """The caches' states of one sampling run's RL passes: {(cache instance, RL model): (the cache, its state)}."""

    states: dict = field(default_factory=dict)

    def of(self, cache: StepCache, term: int) -> dict:
        return self.states.setdefault((cache.kind, cache.key, term), (cache, {}))[1]

    def finish(self, labels: dict[int, str], steps: int) -> None:
        """End of run: each RL model's own cache figures, in the cache's own words."""
        for (_, _, term), (cache, state) in self.states.items():
            cache.finish(state, labels.get(term, "rl_model"), steps)


class StepCache:
    """One step cache found in the options a pass runs with."""

    kind = ""  # the cache node's title, as users know it
    key: int = 0  # what tells two instances apart (their state object or wrapper)

    def own_state(self, options: dict, state: dict, model: Any) -> contextlib.AbstractContextManager[dict]:
        """A context in which a pass runs with `state` as this cache's; yields the options to run with."""
        raise NotImplementedError

    def finish(self, state: dict, label: str, steps: int) -> None:
        """The end of a sampling run: say what the cache did for this RL model, as it says it for the base."""


class EasyCache(StepCache):
    kind = "EasyCache"

    def __init__(self, holder):
        self.holder = holder
        self.key = id(holder)

    @contextlib.contextmanager
    def own_state(self, options: dict, state: dict, model: Any) -> Iterator[dict]:
        holder = state.get("holder")
        if holder is None:  # what EasyCache's own sample wrapper does for the base, at the start of a run
            holder = state["holder"] = self.holder.clone().prepare_timesteps(model.model_sampling)
        holder.skip_current_step = False  # what its calc_cond_batch wrapper does at every evaluation
        options = dict(options)
        options["transformer_options"] = dict(options.get("transformer_options", {}), **{EASYCACHE_KEY: holder})
        yield options

    def finish(self, state: dict, label: str, steps: int) -> None:
        holder = state.get("holder")
        if holder is not None:
            log.info("%s (%s, the RL model's own) - skipped %d/%d steps.", self.kind, label,
                     holder.total_steps_skipped, steps)


def _closure_cells(function: Callable, depth: int = 2) -> dict[str, Any]:
    """The closure cells a function and the functions it closes over (to `depth`) share, by variable name."""
    cells, todo, seen = {}, [(function, 0)], set()
    while todo:
        fn, level = todo.pop()
        if id(fn) in seen or not inspect.isfunction(fn):
            continue
        seen.add(id(fn))
        for name, cell in zip(fn.__code__.co_freevars, fn.__closure__ or (), strict=True):
            cells.setdefault(name, cell)
            try:
                value = cell.cell_contents
            except ValueError:  # not bound yet
                continue
            if level < depth and inspect.isfunction(value):
                todo.append((value, level + 1))
    return cells


def _unknown_version(kind: str, what: str) -> RLGRuntimeError:
    return RLGRuntimeError(
        f"RLG cannot give each model its own {kind} state: {what}, which is not the {kind} RLG knows. Sampling would "
        f"hand one model the other's cache. Update ComfyUI-RLG, or move {kind} off the RLG graph, and report this "
        "with your versions.")


class TeaCache(StepCache):
    kind = "TeaCache"

    def __init__(self, wrapper: Callable):
        self.wrapper = wrapper
        self.key = id(wrapper)
        module = _closure_cells(wrapper, depth=0).get("diffusion_model")
        self.module = None if module is None else module.cell_contents

    @contextlib.contextmanager
    def own_state(self, options: dict, state: dict, model: Any) -> Iterator[dict]:
        module = self.module
        if module is None:
            raise _unknown_version(self.kind, "its wrapper names no diffusion_model")
        attrs = module.__dict__
        others = {k: attrs.pop(k) for k in TEACACHE_STATE if k in attrs}
        attrs.update(state.get("attrs", {}))
        before = {k: id(v) for k, v in attrs.items() if k not in TEACACHE_STATE}
        try:
            yield options
        finally:
            state["attrs"] = {k: attrs.pop(k) for k in TEACACHE_STATE if k in attrs}
            attrs.update(others)
        changed = sorted(k for k, v in attrs.items() if k not in TEACACHE_STATE and before.get(k) != id(v))
        if changed:
            raise _unknown_version(self.kind, f"it left {', '.join(changed)} on the model")


class FirstBlockCache(StepCache):
    kind = "ApplyFBCacheOnModel"

    def __init__(self, wrapper: Callable):
        self.wrapper = wrapper
        self.key = id(wrapper)
        self.cells = {k: v for k, v in _closure_cells(wrapper).items() if k in FBCACHE_STATE}
        ensure = _closure_cells(wrapper, depth=0).get("ensure_cache_state")
        globals_ = getattr(getattr(ensure, "cell_contents", None), "__globals__", {})
        self.context_module = globals_.get("first_block_cache")

    @contextlib.contextmanager
    def own_state(self, options: dict, state: dict, model: Any) -> Iterator[dict]:
        missing = [k for k in FBCACHE_REQUIRED if k not in self.cells]
        if missing or not hasattr(self.context_module, "_current_cache_context"):
            raise _unknown_version(self.kind, f"its wrapper keeps no {', '.join(missing) or 'cache context'}")
        others = {k: cell.cell_contents for k, cell in self.cells.items()}
        other_context = self.context_module._current_cache_context
        for name, cell in self.cells.items():
            cell.cell_contents = state.get("cells", FBCACHE_STATE)[name]
        self.context_module._current_cache_context = state.get("context")
        try:
            yield options
        finally:
            state["cells"] = {k: cell.cell_contents for k, cell in self.cells.items()}
            state["context"] = self.context_module._current_cache_context
            for name, cell in self.cells.items():
                cell.cell_contents = others[name]
            self.context_module._current_cache_context = other_context


def _qualname(function: Any) -> str:
    return getattr(function, "__qualname__", "") or ""


def found(options: dict) -> list[StepCache]:
    """The step caches whose state a pass with these options would use."""
    out: list[StepCache] = []
    holder = options.get("transformer_options", {}).get(EASYCACHE_KEY)
    if type(holder).__name__ == "EasyCacheHolder":
        out.append(EasyCache(holder))
    wrapper = options.get("model_function_wrapper")
    name = _qualname(wrapper)
    if name.startswith("TeaCache.") and name.endswith(".unet_wrapper_function"):
        out.append(TeaCache(wrapper))
    elif name.startswith("ApplyFBCacheOnModel.patch.") and name.endswith(".model_unet_function_wrapper"):
        out.append(FirstBlockCache(wrapper))
    return out


def has_lazycache(options: dict) -> bool:
    return type(options.get("transformer_options", {}).get(EASYCACHE_KEY)).__name__ == "LazyCacheHolder"


def cache_named(options: dict) -> str | None:
    """The name of a step cache RLG knows on these options, or None."""
    caches = found(options)
    if caches:
        return caches[0].kind
    return "LazyCache" if has_lazycache(options) else None


def any_cache(options: dict) -> bool:
    """Whether a step cache of any kind RLG knows is on these options (then no two models share one forward)."""
    return cache_named(options) is not None


@contextlib.contextmanager
def own_states(options: dict, states: CacheStates | None, term: int, model: Any) -> Iterator[dict]:
    """Run an RL pass (term) with every step cache in its options holding that RL model's own state."""
    caches = found(options) if states is not None else []
    with contextlib.ExitStack() as stack:
        for cache in caches:
            options = stack.enter_context(cache.own_state(options, states.of(cache, term), model))
        yield options


def carry_to_separate(step_options: dict, rl_options: dict, base_transformer_options: dict) -> None:
    """EasyCache connected after RLG Apply also caches a separate RL model's pass (with its own holder).

    Its wrappers are the module functions EasyCache installs, which read the holder from the options; a separate RL
    model runs with its own options, so they are added there when the RL model has no EasyCache of its own. A cache
    that was already on the base when RLG Apply ran is left to the base, as the graph has it.
    """
    step_to = step_options.get("transformer_options", {})
    if type(step_to.get(EASYCACHE_KEY)).__name__ != "EasyCacheHolder" or EASYCACHE_KEY in base_transformer_options:
        return
    rl_to = rl_options.setdefault("transformer_options", {})
    if type(rl_to.get(EASYCACHE_KEY)).__name__ == "EasyCacheHolder" and _easycache_wrapped(rl_to):
        return
    rl_to[EASYCACHE_KEY] = step_to[EASYCACHE_KEY]
    wrappers = rl_to.setdefault("wrappers", {})
    kinds = comfy.patcher_extension.WrappersMP
    for kind in (kinds.DIFFUSION_MODEL, kinds.CALC_COND_BATCH):
        functions = step_to.get("wrappers", {}).get(kind, {}).get(EASYCACHE_KEY)
        if functions:
            wrappers[kind] = dict(wrappers.get(kind, {}), **{EASYCACHE_KEY: list(functions)})


def _easycache_wrapped(to: dict) -> bool:
    return bool(to.get("wrappers", {}).get(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, {}).get(EASYCACHE_KEY))


def separate_model_refusal(step_options: dict, rl_options: dict, base_options_at_apply: dict, label: str) -> str | None:
    """Why a separate RL model cannot run under the module-bound cache connected after RLG Apply, or None.

    TeaCache and FBCache patch the module they were applied to; the one after RLG Apply is the base's. A separate RL
    model is another module: its pass would run uncached (or, had it the same wrapper, patch the base). The user puts
    one such node on each model instead.
    """
    wrapper = step_options.get("model_function_wrapper")
    if wrapper is None or wrapper is base_options_at_apply.get("model_function_wrapper"):
        return None  # none, or already on the base when RLG Apply ran: it caches the base, as the graph says
    caches = [c for c in found(step_options) if isinstance(c, TeaCache | FirstBlockCache)]
    if not caches or any(type(c) is type(caches[0]) for c in found(rl_options)):
        return None
    return refusal_text(caches[0].kind, label)


def check_rl_model(base, rl, label: str) -> None:
    """Refuse a LazyCache that is on the RL model only: RLG never runs the RL model's whole guided step."""
    if has_lazycache(rl.model_options) and not has_lazycache(base.model_options):
        raise RLGInputError(lazycache_text(label))
