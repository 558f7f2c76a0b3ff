"""Putting RLG on a model: attach_rlg(), the one entry the nodes, the tests and the benchmarks all use."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import comfy.patcher_extension

from .branch_cfg import BranchCFG
from .errors import RLGInputError
from .model_pair import ADDITIONAL_MODELS_KEY, PairForm, RLModelPair, build_pair, describe_model
from .rl_options import disable_shared_module_caches
from .rl_passes import RLTerm
from .settings import RLGSettings
from .step import RLGCondBatchWrapper
from .step_caches import check_rl_model

if TYPE_CHECKING:
    from comfy.model_patcher import ModelPatcher

log = logging.getLogger("ComfyUI-RLG")

WRAPPER_KEY = "rlg"


def attach_rlg(model: ModelPatcher, rl_models: Sequence[tuple[ModelPatcher, RLGSettings]],
               batched: bool | None = None, rl_input: str = "rl_model") -> ModelPatcher:
    """A clone of `model` that samples base + sum_i w_i (rl_i - base) at every step.

    rl_models: (RL model, its settings), in the order the user chained them. Every RLG node is a use of this:
    RLG Apply and RLG Guider with one RL model (outside_window "RL model" by default), RLG Apply (several RL
    models) with each RLG RL Model's, RLG Scale Sweep with a scale per batch row. The inputs are left as they
    were: the patches go on a clone, as with every ComfyUI model patch node. Raises RLGInputError (a ValueError
    naming the input) for unusable inputs; rl_input is the node input the RL models came from, named in
    messages (a single rl_model as it is, others as "rl_models (RL model i)").

    batched=True evaluates the base and the LoRA RL models that hooks run exactly in one forward of a bigger
    batch, batched=False in a forward each; None batches where that pays, off the CPU (ComfyUI's own batch
    splitting keeps the bigger batch within free VRAM).
    """
    if not rl_models:
        raise RLGInputError("rl_models is empty: connect at least one RLG RL Model node.")
    terms, seen = [], {}
    for i, (rl_model, settings) in enumerate(rl_models, start=1):
        if not isinstance(settings, RLGSettings):
            raise TypeError(f"RL model {i}: settings must be an RLGSettings, not {type(settings).__name__}")
        label = rl_input if len(rl_models) == 1 and rl_input == "rl_model" else f"{rl_input} (RL model {i})"
        pair = build_pair(model, rl_model, rl_input=label)
        _check_adds_something(model, rl_model, pair, label)
        check_rl_model(model, rl_model, label)
        if id(rl_model) in seen:
            log.warning("RLG: %s is the same RL model as %s; their scales add up.", label, seen[id(rl_model)])
        seen.setdefault(id(rl_model), label)
        terms.append(RLTerm(settings, pair, label=label))
    if batched is None:
        batched = model.load_device.type != "cpu"
    branch_cfg = BranchCFG() if any(term.settings.rl_cfg.own for term in terms) else None
    patched = model.clone()
    _install(patched, RLGCondBatchWrapper(terms, batched=batched, branch_cfg=branch_cfg))
    return patched


def _check_adds_something(model: ModelPatcher, rl_model: ModelPatcher, pair: RLModelPair, rl_input: str) -> None:
    """An RL model that adds nothing to the base: fine when it is the base itself, an error otherwise.

    The very same model (the RL LoRA loader bypassed, or at strength 0) is a deliberate comparison, and
    RLG runs the base alone. A copy of the base with nothing added is what a LoRA loader returns when
    none of the LoRA's keys matched the model: sampling would silently be the base.
    """
    if pair.form is not PairForm.IDENTICAL:
        return
    if rl_model is model:
        log.warning("RLG: %s is the base model itself (a bypassed RL LoRA loader?), so RLG runs the base alone.",
                    rl_input)
        return
    raise RLGInputError(
        f"{rl_input} adds nothing to model ({describe_model(model)}): if it comes from a LoRA loader, none of the "
        "LoRA's keys matched this model (the console lists them as 'lora key not loaded'). Pick the RL LoRA made for "
        "this base model, or load it with Load LoRA (PEFT aware), which names the problem.")


def _install(patcher: ModelPatcher, wrapper: RLGCondBatchWrapper) -> None:
    """Attach the wrapper, the separate RL models and CFG per branch to a clone of the base."""
    patcher.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.CALC_COND_BATCH, WRAPPER_KEY, wrapper)
    patcher.add_callback_with_key(comfy.patcher_extension.CallbacksMP.ON_CLEANUP, WRAPPER_KEY, wrapper.end_run)
    separate = []
    for term in wrapper.terms:
        if term.pair.form is PairForm.SEPARATE and all(term.pair.rl_patcher is not s for s in separate):
            separate.append(term.pair.rl_patcher)
    if separate:
        patcher.set_additional_models(
            ADDITIONAL_MODELS_KEY, patcher.get_additional_models_with_key(ADDITIONAL_MODELS_KEY) + separate
        )
    if any(term.pair.form is PairForm.SHARED for term in wrapper.terms):
        disable_shared_module_caches(patcher)
    if wrapper.branch_cfg is not None:
        options = patcher.model_options
        options["sampler_pre_cfg_function"] = [wrapper.branch_cfg, *options.get("sampler_pre_cfg_function", [])]
        if any(term.settings.rl_cfg.own and term.settings.rl_cfg.needs_uncond for term in wrapper.terms):
            options["disable_cfg1_optimization"] = True  # at cfg 1 the RL branch's own CFG still needs the uncond
