"""How the RL model is held next to the base: the checks, and which form it takes.

ComfyUI glue. Three forms reach RLG:

* separate: the RL model is its own module (a second checkpoint or diffusion-model file). It is
  registered as an additional model of the base, so ComfyUI loads both for sampling and frees
  them like any model after.
* shared: the RL model is the base's module plus extra weight patches (base -> LoraLoader ->
  rl_model). Only one set of patches can be baked into a shared module, so the base's set is
  baked in and the RL model's extra patches (an RLDelta, nodes/rl_delta.py) are added on the fly,
  only for the RL model's rows of a forward. No second copy of the weights, and no re-patching of
  the whole model at each step.
* identical: the RL model adds nothing; RLG then has no effect and only the base runs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import comfy.model_patcher

from .patch_diff import DivergentPatchesError, added_entries, extra_weight_patches
from .rl_delta import RLDelta, build_layer_deltas
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


def _diverging(base: dict, rl: dict) -> list[str]:
    """Keys whose entries differ between two of a patcher's per-key dicts of lists (identity, not value)."""
    return sorted(k for k in set(base) | set(rl)
                  if len(base.get(k, ())) != len(rl.get(k, ())) or any(
                      a is not b for a, b in zip(base.get(k, ()), rl.get(k, ()), strict=False)))


@dataclass
class RLModelPair:
    """The RL model as RLG runs it, next to the base patcher it was checked against.

    mode: "separate" (its own module), "shared" (the base's module plus `delta`) or "identical".
    own_options: a shared RL model whose options differ from the base's (its own wrappers, say),
    so its pass runs with its own options and cannot share a forward with the base's rows.
    """

    mode: str
    rl_patcher: Any
    base_transformer_options: dict
    base_patch_keys: dict[str, int]
    delta: RLDelta | None = None
    own_options: bool = False


def _divergent_message(err: DivergentPatchesError, rl_input: str) -> str:
    keys = (err.missing_in_rl + err.changed)[:3]
    return (
        f"{rl_input} shares model's weights but is not model plus extra patches: model has weight "
        f"patches (for example on {', '.join(keys)}) that {rl_input} lacks. RLG blends model with "
        f"'model + RL LoRA', so load the RL LoRA after model's own LoRAs (model -> your LoRAs -> RL "
        f"LoRA -> {rl_input}), or check that model and {rl_input} are not swapped."
    )


def build_pair(base: Any, rl: Any, rl_input: str = "rl_model") -> RLModelPair:
    """Check the pair and decide how the RL pass runs. Raises RLGInputError for unusable pairs."""
    check_same_architecture(base, rl, rl_input=rl_input)
    base_options = comfy.model_patcher.create_model_options_clone(base.model_options)
    base_to = base_options.get("transformer_options", {})
    base_patch_keys = {k: len(v) for k, v in base.patches.items()}

    if not base.is_clone(rl):
        return RLModelPair("separate", rl, base_to, base_patch_keys)

    try:
        extra = extra_weight_patches(base.patches, rl.patches)
    except DivergentPatchesError as err:
        raise RLGInputError(_divergent_message(err, rl_input)) from None

    differing_objects = sorted(
        k for k in set(base.object_patches) | set(rl.object_patches)
        if base.object_patches.get(k) is not rl.object_patches.get(k)
    )
    if differing_objects:
        raise RLGInputError(
            f"{rl_input} shares model's weights but was patched differently "
            f"({', '.join(differing_objects)}); both passes run on one module, so apply such "
            "patches (for example ModelSampling nodes) before the RL LoRA loader so both inputs "
            "carry them, or after RLG Apply."
        )
    # What newer ComfyUI can also put on a LoRA clone. None of it can be switched per pass on a shared
    # module, and a pair compared by its weight patches alone would look identical: refuse it by name.
    for what, differing, fix in (
        ("injections (ComfyUI's bypass LoRA loader)", _diverging(getattr(base, "injections", {}),
                                                                  getattr(rl, "injections", {})),
         "load the RL LoRA with LoraLoaderModelOnly or Load LoRA (PEFT aware) instead"),
        ("weight wrappers", _diverging(base.weight_wrapper_patches, rl.weight_wrapper_patches),
         "load the RL model as a separate file, or apply that node to both inputs before the RL LoRA"),
        ("hook patches", sorted(map(str, set(getattr(rl, "hook_patches", {}))
                                         ^ set(getattr(base, "hook_patches", {})))),
         "set the hooks on both inputs (before the RL LoRA loader), or load the RL model as a separate file"),
    ):
        if differing:
            raise RLGInputError(
                f"{rl_input} shares model's weights but differs from it by {what} ({', '.join(differing[:3])}), "
                f"which RLG cannot switch on for the RL pass only; {fix}."
            )

    delta = RLDelta(build_layer_deltas(extra, base.model), label=rl_input)
    rl_options_added = added_entries(rl.model_options.get("transformer_options", {}), base_to)
    own_options = bool(rl_options_added) or rl.model_options.keys() != base.model_options.keys() \
        or rl.wrappers != base.wrappers or rl.callbacks != base.callbacks
    if delta.is_empty and not own_options:
        return RLModelPair("identical", rl, base_to, base_patch_keys)
    if delta.skipped:
        log.info("RLG: %d RL patches on non-leaf parameters are skipped, as ComfyUI's loader skips them: %s",
                 len(delta.skipped), ", ".join(layer.key for layer in delta.skipped[:3]))
    return RLModelPair("shared", rl, base_to, base_patch_keys, delta=delta, own_options=own_options)
