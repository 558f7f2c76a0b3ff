"""RL patches on ComfyUI-GGUF's quantized layers: applied where GGUF applies LoRAs, at dequantization.

ComfyUI glue for one third-party pack, read by duck typing (nothing of the pack is imported). ComfyUI-GGUF
(city96) loads weights as GGMLTensor, a torch.Tensor subclass holding the raw GGML blocks (Q8_0, Q4_0...) or, for
F16 / F32 tensors, plain values. Its layers compute a quantized weight through their own cast, which dequantizes
it and then applies the LoRA patches its patcher (GGUFModelPatcher) left on the tensor itself, in
`tensor.patches`, as a list of (patches, key); ComfyUI's weight functions are not called there. Layers whose
weights are F16 / F32 take ComfyUI's own cast (weight functions apply, the weight is a GGMLTensor of plain values).

So for the RL pass of a quantized layer, the RL model's patches are appended to the tensor's own list for one
forward: GGUF then computes dequant(W) + base patches + RL patches, exactly what it computes for the RL model
alone. Each RL patch counts when it is applied, so the forward proves GGUF applied it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch


def is_ggml_layer(module: torch.nn.Module) -> bool:
    """A ComfyUI-GGUF layer: it dequantizes through get_weight and knows whether it is quantized."""
    return callable(getattr(module, "get_weight", None)) and callable(getattr(module, "is_ggml_quantized", None))


def quantized_format(tensor: Any) -> str | None:
    """The GGML format of a tensor that holds quantized blocks (Q8_0, Q4_K...), or None for plain values."""
    if not isinstance(tensor, torch.Tensor) or tensor.dtype.is_floating_point:
        return None
    kind = getattr(tensor, "tensor_type", None)
    if kind is None:
        return str(tensor.dtype)
    return getattr(kind, "name", None) or str(kind)


def plain(tensor: torch.Tensor) -> torch.Tensor:
    """A tensor subclass of plain float values (GGUF's F16 / F32 GGMLTensor) as a torch.Tensor, sharing storage."""
    return tensor if type(tensor) is torch.Tensor else tensor.as_subclass(torch.Tensor)


def _counted(patches: list, applied: Callable[[], None]) -> list:
    """The patch entries with a function that counts each time ComfyUI's calculate_weight applies them.

    A patch entry is (strength, adapter, strength_model, offset, function); calculate_weight passes what the adapter
    adds through `function` (None: as it is). Counting there proves the patch was applied, not merely handed over.
    """
    def counting(function):
        def apply(diff):
            applied()
            return diff if function is None else function(diff)
        return apply

    out = []
    for patch in patches:
        entry = (tuple(patch) + (None,) * 5)[:5]
        out.append((*entry[:4], counting(entry[4])))
    return out


@contextlib.contextmanager
def rl_patches_on(module: torch.nn.Module, param: str, key: str, patches: list,
                  applied: Callable[[], None]) -> Iterator[None]:
    """For one forward: `patches` on the quantized tensor module.<param>, applied by GGUF at dequantization.

    applied() is called each time one of them is applied to that tensor. A layer that is not quantized (its weights
    F16 / F32) takes ComfyUI's own cast, so the entry changes nothing there.
    """
    tensor = getattr(module, param, None)
    if not is_ggml_layer(module) or tensor is None or quantized_format(getattr(module, "weight", None)) is None:
        yield
        return
    before = getattr(tensor, "patches", None)
    # A new list: GGMLTensor's default `patches` is one list shared by every tensor of the file.
    tensor.patches = [*(before or ()), (_counted(patches, applied), key)]
    try:
        yield
    finally:
        if before is None:
            del tensor.patches
        else:
            tensor.patches = before
