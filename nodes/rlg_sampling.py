"""Where each sampling step's blend happens.

ComfyUI glue. RLG hooks the CALC_COND_BATCH wrapper chain of the model it returns: for every
step (and every extra pass other nodes make, such as PAG's), ComfyUI asks for the denoised
predictions of all conds at once. RLGCondBatchWrapper.__call__ evaluates the base through the rest
of the chain and each RL model through its own form, and returns base + sum_i w_i (rl_i - base) for
each cond, before pre-CFG functions and CFG see it. Wrappers stack, so other packs' wrappers keep
working.

How each RL model runs (nodes/model_pair.py decides the form):
* separate file: calc_cond_batch on its own module, with its own options;
* LoRA on the base's module: a forward of the base's module whose RL rows get the LoRA added
  (nodes/rl_delta.py). LoRAs that hooks run exactly share one forward with the base's rows (off the
  CPU, where a bigger batch costs less than another call); the others take a forward each.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import comfy.model_patcher
import comfy.patcher_extension
import comfy.samplers
import torch

from .model_pair import ADDITIONAL_MODELS_KEY, RLModelPair
from .patch_diff import added_entries, merge_entries
from .rl_delta import RLRowsForward
from .rlg_math import (
    RLGRuntimeError,
    SigmaWindow,
    TermSpec,
    combine,
    plan_step,
    sigma_to_percent,
    with_branch_cfg,
)

log = logging.getLogger("ComfyUI-RLG")

WRAPPER_KEY = "rlg"

# Per-sampling-run entries that must follow the step, never the base model's own set.
_PATCHER_OWNED = ("wrappers", "callbacks")
QWEN_PREFIX_CACHE = "qwen_image21_cache"
# Newest ComfyUI's multi-GPU split: which module copy runs on which device, for one model.
_MULTIGPU_KEYS = ("multigpu_clones", "multigpu_thread_pool", "multigpu_options")


@dataclass
class RLTerm:
    """One RL model in the blend: what the user set, and how the model runs."""

    spec: TermSpec
    pair: RLModelPair
    label: str = "rl_model"


@dataclass
class _Pending:
    model_options: dict
    out: list
    base_uncond: torch.Tensor
    terms: list  # (weight, rl cond, rl uncond or None, rl_cfg)


class BranchCFG:
    """CFG per branch, second half: a pre-CFG function that gives RL branches their own CFG scale.

    The wrapper cannot know the sampler's cfg; the pre-CFG functions get it as cond_scale, right
    after calc_cond_batch. The wrapper leaves what the RL branches with their own cfg need here, and
    this turns each into its equivalent cond (rlg_math.branch_cfg_cond). It is put first among the
    pre-CFG functions, so every other CFG patch sees the finished pair.
    """

    def __init__(self):
        self._local = threading.local()

    def __deepcopy__(self, memo):  # ComfyUI 0.3.75 / 0.8.0 deep-copy model_options on clone: stay one object
        return self

    def leave(self, pending: _Pending) -> None:
        self._local.pending = pending

    def check_nothing_left(self, model_options: dict) -> None:
        pending = getattr(self._local, "pending", None)
        if pending is not None and pending.model_options is model_options:
            self._local.pending = None
            raise RLGRuntimeError(
                "RLG: an RL model with its own rl_cfg needs a sampler or guider that applies CFG through ComfyUI's "
                "standard sampling function (KSampler, CFGGuider, RLG Guider); this one did not. Set rl_cfg to 0 "
                "(same as cfg) or use one of those.")
        self._local.pending = None

    def __call__(self, args: dict) -> list:
        pending = getattr(self._local, "pending", None)
        conds_out = args["conds_out"]
        if pending is None:
            return conds_out
        self._local.pending = None
        if conds_out is not pending.out:
            raise RLGRuntimeError(
                "RLG: another node changed the predictions between RLG and CFG, so rl_cfg cannot be applied. "
                "Connect that node before RLG Apply, or set rl_cfg to 0 (same as cfg).")
        cond = with_branch_cfg(conds_out[0], pending.base_uncond, pending.terms, float(args["cond_scale"]))
        return [cond, *conds_out[1:]]


def _batchable(model_options: dict) -> bool:
    """Whether this call can take several models' rows in one forward.

    Model patches (attention patches and replacements, a unet function wrapper) may read
    cond_or_uncond to find the cond or uncond rows; with the conds given more than once the RL copies
    have other indices, so such calls run each model's rows as a forward of its own.
    """
    to = model_options.get("transformer_options", {})
    has_patches = to.get("patches") or to.get("patches_replace")
    return not has_patches and "model_function_wrapper" not in model_options


def _with_apply_wrapper(model_options: dict, key: str, wrapper: Callable) -> dict:
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


class RLGCondBatchWrapper:
    """The CALC_COND_BATCH wrapper RLG installs; one per RLG node."""

    def __init__(self, terms: list[RLTerm], rl_alone_outside: bool = False, batched: bool = True,
                 branch_cfg: BranchCFG | None = None):
        self.terms = terms
        self.rl_alone_outside = rl_alone_outside  # RLG Apply: outside its window the RL model runs alone
        self.batched = batched
        self.branch_cfg = branch_cfg
        self._rows_key = f"rlg_rl_rows_{id(self):x}"
        self._late_patches_checked_for: int | None = None  # id of the sampled patcher last checked
        self._notified: set[str] = set()
        self._solo: set[int] = set()  # LoRA terms whose rows a hook could not pick out of a shared forward
        # The sampler passes the same model_options dict at every step of a run: build each RL model's
        # options, and the sigma -> percent table, once per dict, not once per step.
        self._run_options: dict | None = None
        self._rl_options: dict[int, dict] = {}
        self._percents: dict[float, float] = {}

    # -- the step ---------------------------------------------------------------------------------
    def __call__(self, executor: Callable, model: Any, conds: Sequence, x_in: torch.Tensor,
                 timestep: torch.Tensor, model_options: dict) -> list[torch.Tensor]:
        if all(term.pair.mode == "identical" for term in self.terms):
            return executor(model, conds, x_in, timestep, model_options)
        if self._run_options is not model_options:
            self._run_options, self._rl_options, self._percents = model_options, {}, {}
            self._check_rows(x_in)

        sampling = model.model_sampling  # with the patcher's object patches (shift etc.) applied
        sigma = float(timestep.flatten()[0])
        plan = plan_step([self._weight(term, sigma, sampling) for term in self.terms], self.rl_alone_outside)
        if not plan.terms:
            return executor(model, conds, x_in, timestep, model_options)

        own_cfg = [k for k, _ in plan.terms if self.terms[k].spec.rl_cfg is not None]
        if own_cfg and len(conds) > 2:
            raise RLGRuntimeError(
                f"RLG: rl_cfg works with standard CFG (a positive and a negative prompt), but this guider evaluates "
                f"{len(conds)} conditionings (DualCFGGuider, PerpNeg...). Set rl_cfg to 0 (same as cfg) for it.")
        branch = bool(own_cfg) and len(conds) == 2
        if branch:
            self.branch_cfg.check_nothing_left(model_options)
        run_base = plan.run_base or branch  # CFG per branch is built on the base's uncond
        term_conds = {k: list(conds) for k, _ in plan.terms}
        if branch:
            for k in own_cfg:
                if self.terms[k].spec.rl_cfg == 1.0:  # trained without CFG: its uncond is never used
                    term_conds[k][1] = None

        base_out, rl_out = self._evaluate(executor, model, conds, term_conds, x_in, timestep, model_options,
                                          plan, run_base)
        out = []
        for i in range(len(conds)):
            # A branch without CFG has no uncond of its own: it enters the uncond as the base's.
            pairs = [(rl_out[k][i], w) for k, w in plan.terms if term_conds[k][i] is not None or conds[i] is None]
            out.append(combine(None if base_out is None else base_out[i], [p[0] for p in pairs],
                               [p[1] for p in pairs]))
        if branch:
            terms = [(w, rl_out[k][0], None if term_conds[k][1] is None else rl_out[k][1], self.terms[k].spec.rl_cfg)
                     for k, w in plan.terms if k in own_cfg]
            self.branch_cfg.leave(_Pending(model_options, out, base_out[1], terms))
        return out

    def _check_rows(self, x_in: torch.Tensor) -> None:
        for term in self.terms:
            scale = term.spec.scale
            if isinstance(scale, torch.Tensor) and scale.numel() != x_in.shape[0]:
                raise RLGRuntimeError(
                    f"RLG Scale Sweep: its MODEL samples {scale.numel()} rows (a scale per row) but the sampler got a "
                    f"latent of {x_in.shape[0]}; connect the sweep's LATENT output to the sampler's latent_image.")

    def _weight(self, term: RLTerm, sigma: float, sampling: Any):
        if term.pair.mode == "identical":
            return None if not self.rl_alone_outside else 0.0
        spec = term.spec
        window = SigmaWindow.from_percents(spec.start_percent, spec.end_percent, sampling.percent_to_sigma)
        return spec.weight_at(sigma, window, lambda s: self._percent(s, sampling))

    def _percent(self, sigma: float, sampling: Any) -> float:
        if sigma not in self._percents:
            self._percents[sigma] = sigma_to_percent(sigma, sampling.percent_to_sigma)
        return self._percents[sigma]

    # -- evaluating the models ------------------------------------------------------------------
    def _evaluate(self, executor, model, conds, term_conds, x_in, timestep, model_options, plan, run_base):
        shared = [k for k, _ in plan.terms if self.terms[k].pair.mode == "shared"]
        separate = [k for k, _ in plan.terms if self.terms[k].pair.mode == "separate"]
        together = []
        if self.batched and _batchable(model_options):
            together = [k for k in shared if k not in self._solo
                        and not self.terms[k].pair.own_options and self.terms[k].pair.delta.hooks_only]
        if len(together) + run_base < 2:
            together = []
        base_out, rl_out = None, {}

        if together:  # the base's rows and these RL models' rows in one forward
            segments = ([(0, list(conds))] if run_base else []) + [(k + 1, term_conds[k]) for k in together]
            owner = [term for term, seg in segments for _ in seg]
            flat = [c for _, seg in segments for c in seg]
            outs = self._shared_forward(executor, model, flat, x_in, timestep, model_options,
                                        {k + 1: self.terms[k].pair.delta for k in together},
                                        lambda c: owner[c], own_options=None)
            start = 0
            for term, seg in segments:
                part = outs[start:start + len(seg)]
                start += len(seg)
                if term == 0:
                    base_out = part
                else:
                    rl_out[term - 1] = part
        if run_base and base_out is None:
            base_out = executor(model, conds, x_in, timestep, model_options)
        for k in shared:
            if k not in rl_out:
                pair = self.terms[k].pair
                rl_out[k] = self._shared_forward(executor, model, term_conds[k], x_in, timestep, model_options,
                                                 {k + 1: pair.delta}, lambda c, k=k: k + 1,
                                                 own_options=k if pair.own_options else None)
        for k in separate:
            rl_out[k] = self._separate_forward(model, k, term_conds[k], x_in, timestep, model_options)
        return base_out, rl_out

    def _shared_forward(self, executor, model, conds, x_in, timestep, model_options, deltas, term_of_cond,
                        own_options: int | None):
        """A forward of the base's module where the rows of each RL model get its delta (rl_delta.py)."""
        rows = RLRowsForward(deltas, term_of_cond, self._notify, on_shared_misfit=lambda term: self._solo.add(term - 1))
        if own_options is None:  # the RL model needs nothing but its weights: the base's own chain
            return executor(model, conds, x_in, timestep, _with_apply_wrapper(model_options, self._rows_key, rows))
        options = dict(self.rl_model_options(model_options, own_options))
        for key in _MULTIGPU_KEYS:  # the same module as the base's, so the base's copies per GPU are right
            if key in model_options:
                options[key] = model_options[key]
        return comfy.samplers.calc_cond_batch(model, conds, x_in, timestep,
                                              _with_apply_wrapper(options, self._rows_key, rows))

    def _separate_forward(self, model, k, conds, x_in, timestep, model_options):
        rl = self.terms[k].pair.rl_patcher
        options = self.rl_model_options(model_options, k)
        # Additional models do not get pre_run() from the sampler, and _calc_cond_batch reads
        # model.current_patcher; the sampler's cleanup of additional models undoes this.
        if getattr(rl.model, "current_patcher", None) is not rl:
            rl.pre_run()
        self._warn_if_patched_after(model)
        return comfy.samplers.calc_cond_batch(rl.model, conds, x_in, timestep, options)

    def rl_model_options(self, model_options: dict, k: int) -> dict:
        """An RL model's options: the RL patcher's own, plus what this step added.

        Using the base's options would run the base's wrappers (a compiled base network, say)
        for the RL pass. What the sampling run or this very call added on top of the base's own
        transformer_options (sample_sigmas, PAG/SLG replacements for one extra pass, patches
        connected after RLG) belongs to the step and is carried over.
        """
        cached = self._rl_options.get(k)
        if cached is not None and cached[0] is model_options:
            return cached[1]
        pair = self.terms[k].pair
        rl = pair.rl_patcher
        options = comfy.model_patcher.create_model_options_clone(rl.model_options)
        to = options.setdefault("transformer_options", {})
        for name in _PATCHER_OWNED:
            comfy.patcher_extension.merge_nested_dicts(to.setdefault(name, {}), getattr(rl, name), copy_dict1=False)
        step_added = added_entries(model_options.get("transformer_options", {}), pair.base_transformer_options,
                                   skip=_PATCHER_OWNED)
        merge_entries(to, step_added)
        if pair.mode == "separate":
            options.update(_separate_multigpu(model_options, rl))
        self._rl_options[k] = (model_options, options)
        return options

    def _notify(self, message: str) -> None:
        if message not in self._notified:
            self._notified.add(message)
            log.warning(message)

    def _warn_if_patched_after(self, model: Any) -> None:
        """Weight patches added to the base after RLG Apply do not reach a separate RL model."""
        patcher = getattr(model, "current_patcher", None)
        if patcher is None or id(patcher) == self._late_patches_checked_for:
            return
        self._late_patches_checked_for = id(patcher)
        if any(term.pair.mode == "separate" and any(len(v) > term.pair.base_patch_keys.get(key, 0)
                                                    for key, v in getattr(patcher, "patches", {}).items())
               for term in self.terms):
            log.warning(
                "RLG: weight patches (LoRAs) were connected after RLG Apply; they change only the "
                "base model, not rl_model. Connect them before RLG Apply, to both models."
            )


def _separate_multigpu(model_options: dict, rl: Any) -> dict:
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
    return {"multigpu_clones": mapping, **{k: model_options[k] for k in _MULTIGPU_KEYS[1:] if k in model_options}}


def install(patcher: Any, wrapper: RLGCondBatchWrapper) -> None:
    """Attach the wrapper, the separate RL models and CFG per branch to a clone of the base."""
    patcher.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.CALC_COND_BATCH, WRAPPER_KEY, wrapper)
    separate = []
    for term in wrapper.terms:
        if term.pair.mode == "separate" and all(term.pair.rl_patcher is not s for s in separate):
            separate.append(term.pair.rl_patcher)
    if separate:
        patcher.set_additional_models(
            ADDITIONAL_MODELS_KEY, patcher.get_additional_models_with_key(ADDITIONAL_MODELS_KEY) + separate
        )
    if any(term.pair.mode == "shared" for term in wrapper.terms):
        # Newest ComfyUI's Qwen-Image 2.1 keeps text and reference K/V across steps, keyed on the inputs alone:
        # on a module shared by the base and RL passes, one pass would reuse what the other computed, the RL
        # part missing (or added) on those tokens. Its documented switch turns that cache off for this model.
        patcher.model_options.setdefault("transformer_options", {})[QWEN_PREFIX_CACHE] = {"device": "off"}
    if wrapper.branch_cfg is not None:
        options = patcher.model_options
        options["sampler_pre_cfg_function"] = [wrapper.branch_cfg, *options.get("sampler_pre_cfg_function", [])]
        if any(term.spec.rl_cfg not in (None, 1.0) for term in wrapper.terms):
            options["disable_cfg1_optimization"] = True  # at cfg 1 the RL branch's own CFG still needs the uncond
