"""The RL pass of an RL model that is the base plus a plain LoRA, as forward hooks ("bypass").

ComfyUI glue. When the RL model differs from the base only by LoRA patches on linear layers (the
Flow-GRPO / SPO case), the RL prediction needs no changed weights at all: a forward hook on each
LoRA layer adds strength * alpha / rank * up @ (down @ x) to the rows that belong to the RL model.
That is LoRA's bypass form, equal to merging the LoRA into the weight up to float rounding. The
base pass then runs the untouched network, and the RL pass costs two thin matmuls per layer.

With batched=True both share one forward of twice the batch: the conds are given twice, and the
hooks act on the rows of the second copy. Which rows those are is read from cond_or_uncond in an
APPLY_MODEL wrapper added for that one call. With batched=False they are two forwards.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import comfy.patcher_extension
import comfy.utils
import torch

from .patch_diff import added_entries
from .rlg_math import StepPlan, blend_prediction_lists

_ROWS_WRAPPER_KEY = "rlg_batched_rows"


def _plain_lora(patch: tuple) -> tuple[torch.Tensor, torch.Tensor, float] | None:
    """(up, down, scale) when a patch is a plain LoRA the bypass form reproduces, else None."""
    strength, value, strength_model, offset, function = (tuple(patch) + (None,) * 5)[:5]
    if offset is not None or function is not None or strength_model != 1.0:
        return None
    if getattr(value, "name", None) == "lora" and hasattr(value, "weights"):
        weights = value.weights
    elif isinstance(value, tuple) and len(value) == 2 and value[0] == "lora":
        weights = value[1]
    else:
        return None
    up, down, alpha, mid, dora_scale, reshape = (tuple(weights) + (None,) * 6)[:6]
    if mid is not None or dora_scale is not None or reshape is not None or up.ndim != 2 or down.ndim != 2:
        return None
    rank = down.shape[0]
    return up, down, float(strength) * (float(alpha) / rank if alpha is not None else 1.0)


class _LayerLoRA:
    def __init__(self, module: torch.nn.Module, terms: list[tuple[torch.Tensor, torch.Tensor, float]]):
        self.module = module
        self.terms = terms
        self._cast: dict[tuple, list] = {}

    def delta(self, x: torch.Tensor) -> torch.Tensor:
        key = (x.device, x.dtype)
        if key not in self._cast:
            self._cast[key] = [(u.to(x.device, x.dtype), d.to(x.device, x.dtype), s) for u, d, s in self.terms]
        out = None
        for up, down, scale in self._cast[key]:
            term = torch.nn.functional.linear(torch.nn.functional.linear(x, down), up) * scale
            out = term if out is None else out + term
        return out


class LoRABypass:
    """Runs the RL rows of a step through forward hooks (see the module docstring)."""

    def __init__(self, layers: list[_LayerLoRA], batched: bool = True):
        self.layers = layers
        self.batched = batched
        self._rl_rows: torch.Tensor | None = None

    @classmethod
    def from_pair(cls, pair: Any, base: Any, batched: bool = True) -> LoRABypass | None:
        """The bypass form of a shared-module pair, or None where it would not be exact."""
        switch = pair.switch
        rl = pair.rl_patcher
        if pair.mode != "shared" or switch is None or switch.swapped_keys:
            return None
        # The RL pass must need nothing but the LoRA: same options, wrappers and callbacks.
        if rl.model_options.keys() != base.model_options.keys() or rl.wrappers != base.wrappers \
                or rl.callbacks != base.callbacks:
            return None
        if added_entries(rl.model_options.get("transformer_options", {}), pair.base_transformer_options):
            return None
        layers = []
        for key in switch.wrapped_keys:
            owner_name, _, param = key.rpartition(".")
            module = comfy.utils.get_attr(base.model, owner_name)
            terms = [_plain_lora(p) for p in switch.extra_patches[key]]
            if param != "weight" or not isinstance(module, torch.nn.Linear) or any(t is None for t in terms):
                return None
            layers.append(_LayerLoRA(module, terms))
        return cls(layers, batched) if layers else None

    def evaluate(self, executor: Callable, model: Any, conds: Sequence, x_in: torch.Tensor, timestep: torch.Tensor,
                 model_options: dict, plan: StepPlan) -> list[torch.Tensor]:
        if plan.run_base and not plan.run_rl:
            return executor(model, conds, x_in, timestep, model_options)
        n = len(conds)
        if not plan.run_base:
            return self._run(executor, model, list(conds), x_in, timestep, model_options, rl_from=0)
        if not self.batched or not _batchable(model_options):
            base = executor(model, conds, x_in, timestep, model_options)
            rl = self._run(executor, model, list(conds), x_in, timestep, model_options, rl_from=0)
            return blend_prediction_lists(base, rl, plan.scale)
        out = self._run(executor, model, list(conds) + list(conds), x_in, timestep, model_options, rl_from=n)
        return blend_prediction_lists(out[:n], out[n:], plan.scale)

    def _run(self, executor, model, conds, x_in, timestep, model_options, rl_from: int) -> list[torch.Tensor]:
        options = dict(model_options)
        to = dict(options.get("transformer_options", {}))
        wrappers = dict(to.get("wrappers", {}))
        apply_wrappers = dict(wrappers.get(comfy.patcher_extension.WrappersMP.APPLY_MODEL, {}))
        apply_wrappers[_ROWS_WRAPPER_KEY] = [_RowMarker(self, rl_from)]
        wrappers[comfy.patcher_extension.WrappersMP.APPLY_MODEL] = apply_wrappers
        to["wrappers"] = wrappers
        options["transformer_options"] = to
        handles = [layer.module.register_forward_hook(self._hook(layer)) for layer in self.layers]
        try:
            return executor(model, conds, x_in, timestep, options)
        finally:
            for handle in handles:
                handle.remove()
            self._rl_rows = None

    def _hook(self, layer: _LayerLoRA):
        def hook(module, inputs, output):
            rows = self._rl_rows
            if rows is None or not bool(rows.any()):
                return output
            x = inputs[0]
            if x.shape[0] != rows.shape[0]:
                raise RuntimeError(
                    f"RLG LoRA bypass: a layer input has {x.shape[0]} rows but the forward has {rows.shape[0]}; "
                    "this model does not keep the batch first. Please report it. Loading the RL model as a "
                    "separate merged file avoids this path."
                )
            in_place = not torch.is_grad_enabled()  # sampling: the output is ours to change
            if bool(rows.all()):
                return output.add_(layer.delta(x)) if in_place else output + layer.delta(x)
            out = output if in_place else output.clone()
            out[rows] += layer.delta(x[rows])
            return out

        return hook


def _batchable(model_options: dict) -> bool:
    """Whether this call can take the doubled conds.

    Model patches (attention patches and replacements, a unet function wrapper) may read
    cond_or_uncond to find the cond or uncond rows; with the conds given twice the RL copy has other
    indices, so such calls run the two halves as two forwards instead (still without a weight copy).
    """
    to = model_options.get("transformer_options", {})
    has_patches = to.get("patches") or to.get("patches_replace")
    return not has_patches and "model_function_wrapper" not in model_options


class _RowMarker:
    """APPLY_MODEL wrapper: marks which rows of this forward are the RL copy of the conds."""

    def __init__(self, owner: LoRABypass, rl_from: int):
        self.owner = owner
        self.rl_from = rl_from

    def __call__(self, executor, x, *args, **kwargs):
        transformer_options = kwargs.get("transformer_options", args[4] if len(args) > 4 else {})
        chunks = transformer_options.get("cond_or_uncond", [])
        per_chunk = x.shape[0] // max(len(chunks), 1)
        rl = torch.tensor([c >= self.rl_from for c in chunks], device=x.device, dtype=torch.bool)
        self.owner._rl_rows = rl.repeat_interleave(per_chunk)
        try:
            return executor(x, *args, **kwargs)
        finally:
            self.owner._rl_rows = None
