"""Where each sampling step's blend happens.

ComfyUI glue. RLG hooks the CALC_COND_BATCH wrapper chain of the model it returns: for every
step (and every extra pass other nodes make, such as PAG's), ComfyUI asks for the denoised
predictions of all conds at once. The wrapper evaluates the base through the rest of the chain,
the RL model through its own options, and returns base + w * (rl - base) for each cond, before
pre-CFG functions and CFG see it. Wrappers stack, so other packs' wrappers keep working.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import comfy.model_patcher
import comfy.patcher_extension
import comfy.samplers
import torch

from .lora_bypass import LoRABypass
from .model_pair import ADDITIONAL_MODELS_KEY, RLModelPair
from .patch_diff import added_entries, merge_entries
from .rlg_math import SigmaWindow, blend_prediction_lists, plan_step

log = logging.getLogger("ComfyUI-RLG")

WRAPPER_KEY = "rlg"

# Per-sampling-run entries that must follow the step, never the base model's own set.
_PATCHER_OWNED = ("wrappers", "callbacks")


class RLGCondBatchWrapper:
    """The CALC_COND_BATCH wrapper RLG installs; one per RLG Apply / RLG Guider."""

    def __init__(self, pair: RLModelPair, rlg_scale: float, start_percent: float, end_percent: float,
                 bypass: LoRABypass | None = None):
        self.pair = pair
        self.bypass = bypass
        self.rlg_scale = rlg_scale
        self.start_percent = start_percent
        self.end_percent = end_percent
        self._late_patches_checked_for: int | None = None  # id of the sampled patcher last checked
        # The sampler passes the same model_options dict at every step of a run: build the RL
        # pass's options once per dict, not once per step.
        self._rl_options_cache: tuple[dict, dict] | None = None

    def __call__(self, executor: Callable, model: Any, conds: Sequence, x_in: torch.Tensor,
                 timestep: torch.Tensor, model_options: dict) -> list[torch.Tensor]:
        if self.pair.mode == "identical":
            return executor(model, conds, x_in, timestep, model_options)

        sampling = model.model_sampling  # with the patcher's object patches (shift etc.) applied
        window = SigmaWindow.from_percents(self.start_percent, self.end_percent, sampling.percent_to_sigma)
        plan = plan_step(float(timestep.flatten()[0]), window, self.rlg_scale)
        if self.bypass is not None:
            return self.bypass.evaluate(executor, model, conds, x_in, timestep, model_options, plan)

        base_out = executor(model, conds, x_in, timestep, model_options) if plan.run_base else None
        rl_out = self._rl_predictions(model, conds, x_in, timestep, model_options) if plan.run_rl else None
        if rl_out is None:
            return base_out
        if base_out is None:
            return rl_out
        return blend_prediction_lists(base_out, rl_out, plan.scale)

    def _rl_predictions(self, model: Any, conds: Sequence, x_in: torch.Tensor,
                        timestep: torch.Tensor, model_options: dict) -> list[torch.Tensor]:
        pair = self.pair
        rl = pair.rl_patcher
        options = self.rl_model_options(model_options)
        if pair.mode == "shared":
            with pair.rl_pass(model):
                return comfy.samplers.calc_cond_batch(model, conds, x_in, timestep, options)
        # Additional models do not get pre_run() from the sampler, and _calc_cond_batch reads
        # model.current_patcher; the sampler's cleanup of additional models undoes this.
        rl_model = rl.model
        if getattr(rl_model, "current_patcher", None) is not rl:
            rl.pre_run()
        self._warn_if_patched_after(model)
        return comfy.samplers.calc_cond_batch(rl_model, conds, x_in, timestep, options)

    def rl_model_options(self, model_options: dict) -> dict:
        """The RL pass's options: the RL patcher's own, plus what this step added.

        Using the base's options would run the base's wrappers (a compiled base network, say)
        for the RL pass. What the sampling run or this very call added on top of the base's own
        transformer_options (sample_sigmas, PAG/SLG replacements for one extra pass, patches
        connected after RLG) belongs to the step and is carried over.
        """
        cached = self._rl_options_cache
        if cached is not None and cached[0] is model_options:
            return cached[1]
        rl = self.pair.rl_patcher
        options = comfy.model_patcher.create_model_options_clone(rl.model_options)
        to = options.setdefault("transformer_options", {})
        for name in _PATCHER_OWNED:
            comfy.patcher_extension.merge_nested_dicts(to.setdefault(name, {}), getattr(rl, name), copy_dict1=False)
        step_added = added_entries(model_options.get("transformer_options", {}),
                                   self.pair.base_transformer_options, skip=_PATCHER_OWNED)
        merge_entries(to, step_added)
        self._rl_options_cache = (model_options, options)
        return options

    def _warn_if_patched_after(self, model: Any) -> None:
        """Weight patches added to the base after RLG Apply do not reach a separate RL model."""
        patcher = getattr(model, "current_patcher", None)
        if self.pair.mode != "separate" or patcher is None or id(patcher) == self._late_patches_checked_for:
            return
        self._late_patches_checked_for = id(patcher)
        known = self.pair.base_patch_keys
        if any(len(v) > known.get(k, 0) for k, v in getattr(patcher, "patches", {}).items()):
            log.warning(
                "RLG: weight patches (LoRAs) were connected after RLG Apply; they change only the "
                "base model, not rl_model. Connect them before RLG Apply, to both models."
            )


def install(patcher: Any, wrapper: RLGCondBatchWrapper) -> None:
    """Attach the wrapper, the RL model and the RL-pass weight switch to a clone of the base."""
    pair = wrapper.pair
    patcher.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.CALC_COND_BATCH, WRAPPER_KEY, wrapper)
    if pair.mode == "separate":
        patcher.set_additional_models(
            ADDITIONAL_MODELS_KEY, patcher.get_additional_models_with_key(ADDITIONAL_MODELS_KEY) + [pair.rl_patcher]
        )
    elif pair.mode == "shared" and pair.switch is not None and wrapper.bypass is None:
        pair.switch.install(patcher)
