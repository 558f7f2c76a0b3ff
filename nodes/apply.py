"""The one function both nodes use to put RLG on a model."""

from __future__ import annotations

import logging
from typing import Any

from .lora_bypass import LoRABypass
from .model_pair import build_pair, describe_model
from .rlg_math import check_scale, check_window
from .rlg_sampling import RLGCondBatchWrapper, install

log = logging.getLogger("ComfyUI-RLG")


def apply_rlg(model: Any, rl_model: Any, rlg_scale: float, start_percent: float, end_percent: float,
              batched: bool | None = None) -> Any:
    """Return a clone of `model` that samples base + rlg_scale * (rl - base) at every step.

    The inputs are left as they were: the patches go on a clone, as with every ComfyUI model
    patch node. Raises RLGInputError (a ValueError naming the input) for unusable inputs.

    An RL model that is the base plus a plain LoRA runs its pass through forward hooks (no weight
    copies; nodes/lora_bypass.py). batched=True evaluates base and RL in one forward of twice the
    batch, batched=False in two forwards; None batches where that pays, off the CPU (ComfyUI's own
    batch splitting keeps the doubled batch within free VRAM).
    """
    scale = check_scale(rlg_scale)
    start, end = check_window(start_percent, end_percent)
    pair = build_pair(model, rl_model)
    if pair.mode == "identical":
        log.warning(
            "RLG: rl_model is identical to model (%s), so RLG has no effect. If rl_model comes from "
            "a LoRA loader, check the console for LoRA keys that were not loaded.", describe_model(model)
        )
    if batched is None:
        batched = model.load_device.type != "cpu"
    bypass = LoRABypass.from_pair(pair, model, batched=batched)
    patched = model.clone()
    install(patched, RLGCondBatchWrapper(pair, scale, start, end, bypass=bypass))
    return patched
