"""Seeded weights and the difference measures: one of each for the tests, the demo and the benchmarks.

Plain torch. A "tiny model" here is one of ComfyUI's own network classes with small sizes and weights
from seeded_state_dict(); an "RL model" of it is perturbed(); comparisons go through max_diff() with a
tolerance() scaled to the reference.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

# Which weights start at 1 (normalisation scales, as the networks initialise them) rather than at random. Two
# naming rules, each kept as the models were first made with it, so their weights stay what they were.
UnitRule = Callable[[str, torch.Tensor], bool]


def norm_weight_keys(key: str, value: torch.Tensor) -> bool:
    """MMDiT and the UNets: `...norm.weight` and the qk-norm `...ln_q.weight`."""
    return key.endswith("norm.weight") or (".ln_" in key and key.endswith(".weight"))


def norm_vectors(key: str, value: torch.Tensor) -> bool:
    """The DiT families (FLUX, Qwen-Image, Wan...): every 1-D norm weight or `.scale`."""
    return value.ndim == 1 and ("norm" in key or key.endswith(".scale")) and not key.endswith("bias")


def seeded_state_dict(module: torch.nn.Module, seed: int, std: float, unit: UnitRule = norm_weight_keys,
                      dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu") -> dict:
    """Deterministic weights for `module`'s state dict: one generator in sorted-key order, N(0, std), the
    weights `unit` picks 1. The module may live on the meta device (only its shapes are read)."""
    gen = torch.Generator(device).manual_seed(seed)
    out = {}
    for key, value in sorted(module.state_dict().items()):
        if unit(key, value):
            tensor = torch.ones(value.shape, device=device)
        else:
            tensor = torch.randn(value.shape, generator=gen, device=device) * std
        out[key] = tensor.to(dtype).contiguous()
    return out


def perturbed(state_dict: Mapping[str, torch.Tensor], seed: int, rel: float = 0.3) -> dict[str, torch.Tensor]:
    """A 'fine-tuned' twin: every tensor of more than one value moved by a seeded relative perturbation."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key, value in sorted(state_dict.items()):
        if value.numel() <= 1:
            out[key] = value
            continue
        noise = torch.randn(value.shape, generator=gen)
        out[key] = (value + rel * value.std().clamp_min(1e-3) * noise).contiguous()
    return out


def max_diff(a: torch.Tensor | Mapping[str, torch.Tensor], b: torch.Tensor | Mapping[str, torch.Tensor]) -> float:
    """max |a - b| over tensors, or over the tensors of two dicts with the same keys and shapes."""
    if isinstance(a, Mapping):
        assert a.keys() == b.keys(), (sorted(a), sorted(b))
        for key in a:
            assert a[key].shape == b[key].shape, (key, a[key].shape, b[key].shape)
        return max(max_diff(a[key], b[key]) for key in a)
    return float((a.detach().float() - b.detach().float()).abs().max())


def tolerance(ref: torch.Tensor | Mapping[str, torch.Tensor], rel: float = 1e-5) -> float:
    """Float tolerance for an identity: rel * (1 + max |ref|).

    Two exact computations can still round differently (a LoRA merged into the weight against the
    same LoRA added in the forward), and latents are scaled (1 / 0.18215 for SD1.5), so the bound
    follows the reference's magnitude.
    """
    if isinstance(ref, Mapping):
        return max(tolerance(v, rel) for v in ref.values())
    return rel * (1.0 + float(ref.detach().abs().max()))
