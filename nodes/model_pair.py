"""How the RL model is held next to the base: the checks, and which form it takes.

ComfyUI glue. Three forms reach RLG (PairForm):

* separate: the RL model is its own module (a second checkpoint or diffusion-model file). It is
  registered as an additional model of the base, so ComfyUI loads both for sampling and frees
  them like any model after.
* shared: the RL model is the base's module plus extra weight patches (base -> LoraLoader ->
  rl_model). Only one set of patches can be baked into a shared module, so the base's set is
  baked in and the RL model's extra patches (an RLDelta, nodes/rl_delta.py) are added on the fly,
  only for the RL model's rows of a forward. No second copy of the weights, and no re-patching of
  the whole model at each step. Newest ComfyUI's bypass LoRA loader (LoraLoaderBypassModelOnly)
  keeps the LoRA as an injection instead of patches; RLG reads the LoRA out of it and runs it the
  same way.
* identical: the RL model adds nothing; RLG then has no effect and only the base runs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any

import comfy.model_patcher

from .errors import RLGInputError
from .patch_diff import DivergentPatchesError, added_entries, extra_weight_patches
from .rl_delta import RLDelta, build_layer_deltas

if TYPE_CHECKING:
    from comfy.model_patcher import ModelPatcher

log = logging.getLogger("ComfyUI-RLG")

ADDITIONAL_MODELS_KEY = "rlg_rl_model"
BYPASS_INJECTIONS = "bypass_lora"  # the key ComfyUI's bypass LoRA loader keeps its injection under


class PairForm(str, Enum):
    """How the RL model runs next to the base (see the module's docstring)."""

    SEPARATE = "separate"
    SHARED = "shared"
    IDENTICAL = "identical"

# unet_config entries that say how weights are stored, not what the network is.
_STORAGE_KEYS = ("dtype", "device", "operations")


def _prediction_kind(model_sampling: Any) -> str:
    """EPS, V_PREDICTION, CONST (flow), X0... : the class that defines calculate_denoised."""
    for cls in type(model_sampling).__mro__:
        if "calculate_denoised" in cls.__dict__:
            return cls.__name__
    return type(model_sampling).__name__


def describe_model(patcher: ModelPatcher) -> str:
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


def check_same_architecture(base: ModelPatcher, rl: ModelPatcher, base_input: str = "model",
                            rl_input: str = "rl_model") -> None:
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

    form: separate (its own module), shared (the base's module plus `delta`) or identical.
    own_options: a shared RL model whose options differ from the base's (its own wrappers, say),
    so its pass runs with its own options and cannot share a forward with the base's rows.
    base_options: a separate RL model's base's model_options when RLG Apply ran, to tell what a node connected after
    RLG Apply added (a step cache, torch.compile) from what the base already had.
    """

    form: PairForm
    rl_patcher: ModelPatcher
    base_transformer_options: dict
    base_patch_keys: dict[str, int]
    delta: RLDelta | None = None
    own_options: bool = False
    base_options: dict | None = None


def _check_nothing_shared(base: ModelPatcher, rl: ModelPatcher, rl_input: str) -> None:
    """Two models that are not clones of one patcher must not share parts of one network.

    Some loaders copy the model but keep its network (Nunchaku's LoRA loaders keep one quantized transformer and
    switch LoRAs inside it at each forward; other packs wrap a network again). RLG would run both passes on that one
    network, with no way to tell which model's state it is in: refused, with the loaders that work.
    """
    def modules(patcher) -> dict[int, str]:
        network = getattr(patcher.model, "diffusion_model", None)
        return {id(m): name for name, m in network.named_modules()} if network is not None else {}

    base_modules, rl_modules = modules(base), modules(rl)
    shared = [rl_modules[k] or "the whole network" for k in rl_modules.keys() & base_modules.keys()]
    if shared:
        raise RLGInputError(
            f"{rl_input} and model are two models that share parts of one network ({len(shared)} modules, for example "
            f"{sorted(shared, key=len)[0]}): the loader of {rl_input} copied the model but kept its network (as "
            "Nunchaku's LoRA loaders do). RLG runs the base and the RL pass on that one network and cannot tell them "
            f"apart. Load {rl_input} with a loader of its own (its own model file), or as a LoRA with "
            "LoraLoaderModelOnly on model.")


def _divergent_message(err: DivergentPatchesError, rl_input: str) -> str:
    keys = (err.missing_in_rl + err.changed)[:3]
    return (
        f"model and {rl_input} look swapped, or {rl_input} is not model plus the RL LoRA: the RL LoRA goes to "
        f"{rl_input}, loaded after model's own LoRAs (model -> your LoRAs, if any -> RL LoRA loader -> "
        f"{rl_input}). (Details: {rl_input} shares model's weights but lacks weight patches that "
        f"model has, for example on {', '.join(keys)}.)"
    )


def build_pair(base: ModelPatcher, rl: ModelPatcher, rl_input: str = "rl_model") -> RLModelPair:
    """Check the pair and decide how the RL pass runs. Raises RLGInputError for unusable pairs."""
    check_same_architecture(base, rl, rl_input=rl_input)
    base_options = comfy.model_patcher.create_model_options_clone(base.model_options)
    base_to = base_options.get("transformer_options", {})
    base_patch_keys = {k: len(v) for k, v in base.patches.items()}

    if not base.is_clone(rl):
        _check_nothing_shared(base, rl, rl_input)
        return RLModelPair(PairForm.SEPARATE, rl, base_to, base_patch_keys, base_options=base_options)

    try:
        extra = extra_weight_patches(base.patches, rl.patches)
    except DivergentPatchesError as err:
        raise RLGInputError(_divergent_message(err, rl_input)) from None
    for key, patches in bypass_lora_patches(base, rl, rl_input).items():
        extra[key] = [*extra.get(key, ()), *patches]

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
        ("injections", [k for k in _diverging(getattr(base, "injections", {}), getattr(rl, "injections", {}))
                        if k != BYPASS_INJECTIONS],
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
        return RLModelPair(PairForm.IDENTICAL, rl, base_to, base_patch_keys)
    if delta.skipped:
        log.info("RLG: %d RL patches on non-leaf parameters are skipped, as ComfyUI's loader skips them: %s",
                 len(delta.skipped), ", ".join(layer.key for layer in delta.skipped[:3]))
    return RLModelPair(PairForm.SHARED, rl, base_to, base_patch_keys, delta=delta, own_options=own_options)


def _bypass_refusal(rl_input: str, why: str) -> RLGInputError:
    return RLGInputError(
        f"{rl_input} comes from a bypass LoRA loader (LoraLoaderBypassModelOnly) whose injection {why}, so RLG cannot "
        "run it for the RL pass only. Load the RL LoRA with LoraLoaderModelOnly or Load LoRA (PEFT aware) instead.")


def _bypass_manager(injection: Any) -> Any:
    """The BypassInjectionManager behind one of ComfyUI's bypass LoRA injections, or None.

    ComfyUI keeps no reference to it but the injection's own closures (comfy/weight_adapter/bypass.py), so it is
    found there and recognised by its class name and its adapters table.
    """
    for function in (getattr(injection, "inject", None), getattr(injection, "eject", None)):
        for cell in getattr(function, "__closure__", None) or ():
            try:
                value = cell.cell_contents
            except ValueError:  # an empty cell
                continue
            if type(value).__name__ == "BypassInjectionManager" and isinstance(getattr(value, "adapters", None), dict):
                return value
    return None


def bypass_lora_patches(base: ModelPatcher, rl: ModelPatcher, rl_input: str = "rl_model") -> dict[str, list]:
    """The LoRA a bypass LoRA loader put on rl_model, as the weight patches the stock loader would have added.

    ComfyUI's bypass loader (newest ComfyUI) keeps a LoRA as an injection that replaces each layer's forward with
    f(x) + strength * up(down(x)) * alpha / rank, for every row, whenever that patcher is the loaded one. RLG
    samples the base, so the injection never runs; the same LoRA, read from the injection's adapters, runs as
    RLG's own RL delta instead, exactly and for the RL rows only. Anything that is not a plain or mid LoRA
    (LoHa, LoKr, DoRA, which the bypass path computes differently from a merged weight) is refused by name.
    """
    base_list = getattr(base, "injections", {}).get(BYPASS_INJECTIONS, [])
    rl_list = getattr(rl, "injections", {}).get(BYPASS_INJECTIONS, [])
    if len(rl_list) == len(base_list) and all(a is b for a, b in zip(base_list, rl_list, strict=True)):
        return {}
    if base_list:
        raise _bypass_refusal(rl_input, "replaces model's own bypass LoRA (ComfyUI keeps only the last one)")
    patches: dict[str, list] = {}
    for injection in rl_list:
        manager = _bypass_manager(injection)
        if manager is None:
            raise _bypass_refusal(rl_input, "is not one RLG can read on this ComfyUI version")
        for module_path, entry in manager.adapters.items():
            adapter, strength = entry
            weights = getattr(adapter, "weights", None)
            if getattr(adapter, "name", None) != "lora" or not isinstance(weights, tuple) or len(weights) < 3:
                raise _bypass_refusal(rl_input, f"holds a {type(adapter).__name__} on {module_path}, not a LoRA")
            if len(weights) > 4 and weights[4] is not None:
                raise _bypass_refusal(rl_input, f"holds a DoRA LoRA on {module_path}")
            patches.setdefault(module_path + ".weight", []).append((float(strength), adapter, 1.0, None, None))
    return patches
