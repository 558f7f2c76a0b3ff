"""The options an RL pass runs with, and the newest host's plumbing around them (multi-GPU, caches).

ComfyUI glue. An RL model must run with its own model_options (never the base's: a compiled base would
silently run in its place) plus what the step added on top of the base's (sample_sigmas, PAG or SLG
replacements for one extra pass). Newest ComfyUI also splits a step over GPUs (multigpu_clones) and keeps a
Qwen-Image 2.1 prefix cache keyed on the inputs alone; both need RLG's care, here.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING

import comfy.model_patcher
import comfy.patcher_extension
import torch

from .model_pair import ADDITIONAL_MODELS_KEY, PairForm, RLModelPair
from .patch_diff import added_entries, merge_entries
from .step_caches import any_cache, carry_to_separate

if TYPE_CHECKING:
    from comfy.model_patcher import ModelPatcher

# Per-sampling-run entries that must follow the step, never the base model's own set.
PATCHER_OWNED = ("wrappers", "callbacks")
QWEN_PREFIX_CACHE = "qwen_image21_cache"
# Newest ComfyUI's multi-GPU split: which module copy runs on which device, for one model.
MULTIGPU_KEYS = ("multigpu_clones", "multigpu_thread_pool", "multigpu_options")


def batchable(model_options: dict) -> bool:
    """Whether this call can take several models' rows in one forward.

    Model patches (attention patches and replacements, a unet function wrapper) may read
    cond_or_uncond to find the cond or uncond rows; with the conds given more than once the RL copies
    have other indices, so such calls run each model's rows as a forward of its own. A step cache decides
    per forward whether to reuse its last output: a forward of two models' rows would be one decision for
    both, from one history, so each model takes a forward of its own there too.
    """
    to = model_options.get("transformer_options", {})
    has_patches = to.get("patches") or to.get("patches_replace")
    return not has_patches and "model_function_wrapper" not in model_options and not any_cache(model_options)


def with_apply_wrapper(model_options: dict, key: str, wrapper: Callable) -> dict:
    """A shallow copy of model_options whose APPLY_MODEL wrappers end with `wrapper` (innermost)."""
    options = dict(model_options)
    to = dict(options.get("transformer_options", {}))
    wrappers = dict(to.get("wrappers", {}))
    apply_wrappers = dict(wrappers.get(comfy.patcher_extension.WrappersMP.APPLY_MODEL, {}))
    apply_wrappers[key] = [wrapper]
    wrappers[comfy.patcher_extension.WrappersMP.APPLY_MODEL] = apply_wrappers
    to["wrappers"] = wrappers
    options["transformer_options"] = to
    return options


def rl_model_options(pair: RLModelPair, model_options: dict) -> dict:
    """An RL model's options: the RL patcher's own, plus what this step added on top of the base's.

    What the sampling run or this very call added on top of the base's own transformer_options
    (sample_sigmas, PAG/SLG replacements for one extra pass, patches connected after RLG) belongs to
    the step and is carried over. A separate RL model runs on each GPU's copy of it where ComfyUI made
    one; a shared one uses the base's copies, since it is the same module.
    """
    rl = pair.rl_patcher
    options = comfy.model_patcher.create_model_options_clone(rl.model_options)
    to = options.setdefault("transformer_options", {})
    for name in PATCHER_OWNED:
        comfy.patcher_extension.merge_nested_dicts(to.setdefault(name, {}), getattr(rl, name), copy_dict1=False)
    merge_entries(to, added_entries(model_options.get("transformer_options", {}), pair.base_transformer_options,
                                    skip=PATCHER_OWNED))
    if pair.form is PairForm.SEPARATE:
        options.update(separate_multigpu(model_options, rl))
        carry_to_separate(model_options, options, pair.base_transformer_options)
        compile_separate(model_options, options, pair)
    else:
        options.update({key: model_options[key] for key in MULTIGPU_KEYS if key in model_options})
    return options


# A separate RL model's network compiled with the settings of a TorchCompileModel connected after RLG Apply, once per
# network and settings: {network: (the settings, the compiled module)}.
_COMPILED_RL: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def compile_separate(step_options: dict, rl_options: dict, pair: RLModelPair) -> None:
    """TorchCompileModel after RLG Apply also compiles a separate RL model: its own network, with the same settings.

    ComfyUI's compile wrapper swaps the compiled copy of the network it was applied to into the model for each
    forward; the base's copy must never run the RL pass (it would be the base's network), so the RL pass gets a
    wrapper of its own around the RL model's network, compiled once. A compile already on the RL model, or one the
    base had when RLG Apply ran (then the graph compiles the base alone), is left as it is. Where this ComfyUI has
    no compile helpers, the RL pass runs uncompiled: exact, only slower.
    """
    try:
        from comfy_api.torch_helpers.torch_compile import COMPILE_KEY, TORCH_COMPILE_KWARGS, apply_torch_compile_factory
    except ImportError:
        return
    settings = step_options.get(TORCH_COMPILE_KWARGS)
    if not isinstance(settings, dict) or TORCH_COMPILE_KWARGS in (pair.base_options or {}) or \
            TORCH_COMPILE_KWARGS in rl_options:
        return
    network = pair.rl_patcher.get_model_object("diffusion_model")
    cached = _COMPILED_RL.get(network)
    if cached is None or cached[0] != settings:
        cached = (dict(settings), torch.compile(model=network, **settings))
        _COMPILED_RL[network] = cached
    wrappers = rl_options.setdefault("transformer_options", {}).setdefault("wrappers", {})
    kind = comfy.patcher_extension.WrappersMP.APPLY_MODEL
    wrappers[kind] = dict(wrappers.get(kind, {}), **{COMPILE_KEY: [apply_torch_compile_factory(
        compiled_module_dict={"diffusion_model": cached[1]})]})


def separate_multigpu(model_options: dict, rl: ModelPatcher) -> dict:
    """The multi-GPU entries that run a separate RL model on each GPU's own copy of it, or nothing.

    Newest ComfyUI splits a step's batch over GPUs (model_options["multigpu_clones"]: device ->
    that GPU's copy of the base) and copies the base's additional models, the RL model among them,
    to every GPU. Where each GPU's copy of the RL model is found, the RL pass uses them too; where
    not, the RL options carry no split and the RL pass runs whole on the main GPU: exact either way.
    """
    clones = model_options.get("multigpu_clones")
    if not clones:
        return {}
    # A GPU's copy is the RL model's only if it comes from the same loaded model (clone_base_uuid) with the
    # same patches (patches_uuid): ComfyUI merges copies by clone_base_uuid alone, so two RL models cloned
    # from one checkpoint with different LoRAs can share one copy per GPU, carrying the first one's patches.
    ids = (getattr(rl, "clone_base_uuid", None), getattr(rl, "patches_uuid", None))
    mapping = {}
    for device, base_copy in clones.items():
        if base_copy.model is rl.model or device == rl.load_device:
            mapping[device] = rl
            continue
        found = [m for m in base_copy.get_additional_models_with_key(ADDITIONAL_MODELS_KEY)
                 if None not in ids and (getattr(m, "clone_base_uuid", None), getattr(m, "patches_uuid", None)) == ids]
        if len(found) != 1:
            return {}
        mapping[device] = found[0]
    for copy in mapping.values():
        if getattr(copy.model, "current_patcher", None) is not copy:
            copy.pre_run()
    return {"multigpu_clones": mapping, **{k: model_options[k] for k in MULTIGPU_KEYS[1:] if k in model_options}}


def disable_shared_module_caches(patcher: ModelPatcher) -> None:
    """Caches keyed on a forward's inputs alone would hand one pass the other's work on a shared module.

    Newest ComfyUI's Qwen-Image 2.1 keeps text and reference K/V across steps, keyed on the inputs: on a module
    shared by the base and RL passes, one pass would reuse what the other computed, the RL part missing (or
    added) on those tokens. Its documented switch turns that cache off for this model.
    """
    patcher.model_options.setdefault("transformer_options", {})[QWEN_PREFIX_CACHE] = {"device": "off"}
