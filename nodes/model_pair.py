"""How the RL model is held next to the base: checks, and the two ways of running it.

ComfyUI glue. Three forms reach RLG:

* separate: the RL model is its own module (a second checkpoint or diffusion-model file). It is
  registered as an additional model of the base, so ComfyUI loads both for sampling and frees
  them like any model after.
* shared: the RL model is the base's module plus extra weight patches (base -> LoraLoader ->
  rl_model). Only one set of patches can be baked into a shared module, so the base's set is
  baked in and the RL model's extra patches are added on the fly, only during the RL pass, by
  weight wrappers (the same mechanism ComfyUI uses for low-VRAM LoRA). No second copy of the
  weights, and no re-patching of the whole model at each step.
* identical: the RL model adds nothing; RLG then has no effect and only the base runs.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import comfy.lora
import comfy.model_patcher
import comfy.utils
import torch

from .patch_diff import DivergentPatchesError, added_entries, extra_weight_patches
from .rlg_math import RLGInputError

log = logging.getLogger("ComfyUI-RLG")

ADDITIONAL_MODELS_KEY = "rlg_rl_model"

# unet_config entries that say how weights are stored, not what the network is.
_STORAGE_KEYS = ("dtype", "device", "operations")


def _prediction_kind(model_sampling: Any) -> str:
    """EPS, V_PREDICTION, CONST (flow), X0... : the class that defines calculate_denoised."""
    for cls in type(model_sampling).__mro__:
        if "calculate_denoised" in cls.__dict__:
            return cls.__name__
    return type(model_sampling).__name__


def describe_model(patcher: Any) -> str:
    model = patcher.model
    config = getattr(model, "model_config", None)
    family = type(config).__name__ if config is not None else type(model).__name__
    sampling = _prediction_kind(patcher.get_model_object("model_sampling"))
    latent = type(getattr(model, "latent_format", None)).__name__
    return f"{family} ({type(model).__name__}, prediction {sampling}, latent {latent})"


def _architecture(patcher: Any) -> dict:
    model = patcher.model
    config = getattr(model, "model_config", None)
    unet_config = dict(getattr(config, "unet_config", {}) or {})
    for key in _STORAGE_KEYS:
        unet_config.pop(key, None)
    return {
        "model class": type(model).__name__,
        "model family": type(config).__name__ if config is not None else None,
        "model type": str(getattr(model, "model_type", None)),
        "prediction": _prediction_kind(patcher.get_model_object("model_sampling")),
        "latent format": type(getattr(model, "latent_format", None)).__name__,
        "network config": unet_config,
    }


def check_same_architecture(base: Any, rl: Any, base_input: str = "model", rl_input: str = "rl_model") -> None:
    """Refuse pairs whose predictions cannot be blended.

    The conds are encoded once, by the base model; a model of another family either fails with a
    shape error deep inside sampling or, worse, samples garbage (an EPS model read as a flow).
    """
    a, b = _architecture(base), _architecture(rl)
    differing = [k for k in a if a[k] != b[k]]
    if differing:
        detail = "; ".join(f"{k}: {base_input} has {a[k]!r}, {rl_input} has {b[k]!r}" for k in differing[:3])
        raise RLGInputError(
            f"RLG needs {rl_input} to be a fine-tuned twin of {base_input} (same architecture, latent "
            f"space and prediction type), but {base_input} is {describe_model(base)} and {rl_input} is "
            f"{describe_model(rl)}. Differences: {detail}. Connect the RL-tuned version of the same base model."
        )


class RLPassSwitch:
    """Adds the RL model's extra weight patches only while the RL pass runs (shared module).

    Each patched key is handled the way ComfyUI itself would apply it, so w = 1 is exactly the RL
    model as ComfyUI samples it:
    * weights and biases of comfy-op layers (Linear, Conv, norms) get a weight wrapper: ComfyUI
      calls it on a fresh copy of the weight at every forward of that layer, and it applies the
      extra patches only while `active`;
    * other parameters of leaf modules (for example SD3.5's RMSNorm scales) are swapped in for the
      duration of the pass and restored after;
    * parameters of non-leaf modules (MMDiT's pos_embed) are skipped, as ComfyUI's loader skips them.
    """

    def __init__(self, extra_patches: dict[str, list], module: torch.nn.Module):
        self.extra_patches = extra_patches
        self.active = False
        self.wrapped_keys: list[str] = []
        self.swapped_keys: list[str] = []
        self.ignored_keys: list[str] = []
        for key in extra_patches:
            owner_name, _, param = key.rpartition(".")
            owner = comfy.utils.get_attr(module, owner_name) if owner_name else module
            if param in ("weight", "bias") and hasattr(owner, "comfy_cast_weights"):
                self.wrapped_keys.append(key)
            elif _owns_all_its_parameters(owner):
                self.swapped_keys.append(key)
            else:
                self.ignored_keys.append(key)

    @property
    def is_empty(self) -> bool:
        return not self.wrapped_keys and not self.swapped_keys

    def install(self, patcher: Any) -> None:
        for key in self.wrapped_keys:
            patcher.add_weight_wrapper(key, _RLWeightWrapper(self, key))

    @contextlib.contextmanager
    def rl_pass(self, module: torch.nn.Module) -> Iterator[None]:
        saved: dict[str, torch.Tensor] = {}
        try:
            for key in self.swapped_keys:
                param = comfy.utils.get_attr(module, key)
                saved[key] = param.data
                param.data = _apply_patches(self.extra_patches[key], param.data, key)
            self.active = True
            yield
        finally:
            self.active = False
            for key, data in saved.items():
                comfy.utils.get_attr(module, key).data = data


def _owns_all_its_parameters(module: torch.nn.Module) -> bool:
    own = {name for name, _ in module.named_parameters(recurse=False)}
    return all(name in own for name, _ in module.named_parameters())


class _RLWeightWrapper:
    """One layer's weight function; a no-op outside the RL pass."""

    def __init__(self, switch: RLPassSwitch, key: str):
        self.switch = switch
        self.key = key

    def __call__(self, weight: torch.Tensor) -> torch.Tensor:
        if not self.switch.active:
            return weight
        return _apply_patches(self.switch.extra_patches[self.key], weight, self.key)


def _apply_patches(patches: list, weight: torch.Tensor, key: str) -> torch.Tensor:
    # calculate_weight adds in place; work on a float32 copy and return the layer's dtype.
    out = comfy.lora.calculate_weight(patches, weight.to(torch.float32, copy=True), key)
    return out.to(weight.dtype)


@dataclass
class RLModelPair:
    """The RL model as RLG runs it, next to the base patcher it was checked against."""

    mode: str  # "separate", "shared" or "identical"
    rl_patcher: Any
    base_transformer_options: dict
    base_patch_keys: dict[str, int]
    switch: RLPassSwitch | None = None

    @contextlib.contextmanager
    def rl_pass(self, module: torch.nn.Module) -> Iterator[None]:
        if self.switch is None:
            yield
        else:
            with self.switch.rl_pass(module):
                yield


def _divergent_message(err: DivergentPatchesError) -> str:
    keys = (err.missing_in_rl + err.changed)[:3]
    return (
        "rl_model shares model's weights but is not model plus extra patches: model has weight "
        f"patches (for example on {', '.join(keys)}) that rl_model lacks. RLG blends model with "
        "'model + RL LoRA', so load the RL LoRA after model's own LoRAs (model -> your LoRAs -> RL "
        "LoRA -> rl_model), or check that model and rl_model are not swapped."
    )


def build_pair(base: Any, rl: Any) -> RLModelPair:
    """Check the pair and decide how the RL pass runs. Raises RLGInputError for unusable pairs."""
    check_same_architecture(base, rl)
    base_options = comfy.model_patcher.create_model_options_clone(base.model_options)
    base_to = base_options.get("transformer_options", {})
    base_patch_keys = {k: len(v) for k, v in base.patches.items()}

    if not base.is_clone(rl):
        return RLModelPair("separate", rl, base_to, base_patch_keys)

    try:
        extra = extra_weight_patches(base.patches, rl.patches)
    except DivergentPatchesError as err:
        raise RLGInputError(_divergent_message(err)) from None

    differing_objects = sorted(
        k for k in set(base.object_patches) | set(rl.object_patches)
        if base.object_patches.get(k) is not rl.object_patches.get(k)
    )
    if differing_objects:
        raise RLGInputError(
            "rl_model shares model's weights but was patched differently "
            f"({', '.join(differing_objects)}); both passes run on one module, so apply such "
            "patches (for example ModelSampling nodes) before the RL LoRA loader so both inputs "
            "carry them, or after RLG Apply."
        )

    switch = RLPassSwitch(extra, base.model)
    rl_options_added = added_entries(rl.model_options.get("transformer_options", {}), base_to)
    if switch.is_empty and not rl_options_added and rl.model_options.keys() == base.model_options.keys():
        return RLModelPair("identical", rl, base_to, base_patch_keys)
    if switch.ignored_keys:
        log.info("RLG: %d RL patches on non-leaf parameters are skipped, as ComfyUI's loader skips them: %s",
                 len(switch.ignored_keys), ", ".join(switch.ignored_keys[:3]))
    return RLModelPair("shared", rl, base_to, base_patch_keys, switch=switch)
