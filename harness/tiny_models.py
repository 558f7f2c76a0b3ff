"""Tiny models that stock ComfyUI detects and loads, built here with seeded random weights.

The architectures come from ComfyUI's own classes (so the state-dict keys are exactly what its
detector and loaders expect); only the sizes are made small. No download is involved.
"""

from __future__ import annotations

import torch

from . import tiny_sd3
from .weights import perturbed, seeded_state_dict

__all__ = ["perturbed"]  # the RL twin of a tiny model, with the builders below

# SD3 / MMDiT: see tiny_sd3.py (1.1 M parameters; the demo's model too).
SD3_CONTEXT_DIM = tiny_sd3.CONTEXT_DIM
SD3_POOLED_DIM = tiny_sd3.POOLED_DIM
SD3_LATENT_CHANNELS = tiny_sd3.LATENT_CHANNELS

# SD1.5: the detector needs model_channels 320 and context 768; one level with one res block
# and one transformer block is the smallest that is still detected as SD1.5 (about 26 M params).
SD15_CONTEXT_DIM = 768
SD15_LATENT_CHANNELS = 4


def tiny_sd3_state_dict(seed: int = 0, std: float = 0.05, qk_norm: str | None = None) -> dict[str, torch.Tensor]:
    """qk_norm="rms" gives SD3.5's attention RMSNorm (plain torch parameters, not comfy layers)."""
    return seeded_state_dict(tiny_sd3.build_mmdit(qk_norm), seed, std)


def tiny_sd15_state_dict(seed: int = 0, std: float = 0.02) -> dict[str, torch.Tensor]:
    import comfy.ops
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    net = UNetModel(
        image_size=32,
        in_channels=SD15_LATENT_CHANNELS,
        out_channels=SD15_LATENT_CHANNELS,
        model_channels=320,
        num_res_blocks=[1],
        channel_mult=[1],
        transformer_depth=[1],
        transformer_depth_output=[1, 1],
        transformer_depth_middle=0,
        num_heads=8,
        context_dim=SD15_CONTEXT_DIM,
        use_linear_in_transformer=False,
        use_spatial_transformer=True,
        legacy=False,
        device="cpu",
        dtype=torch.float32,
        operations=comfy.ops.disable_weight_init,
    )
    return seeded_state_dict(net, seed, std)


def _lora_layers(state_dict: dict[str, torch.Tensor], match: str):
    """(ComfyUI's LoRA key base, weight) of every 2-D weight whose key contains `match`, in key order."""
    for key, value in sorted(state_dict.items()):
        if match in key and key.endswith(".weight") and value.ndim == 2:
            yield "diffusion_model." + key[: -len(".weight")], value


def lora_for(
    state_dict: dict[str, torch.Tensor], seed: int, rank: int = 4, scale: float = 0.5, match: str = "attn"
) -> dict[str, torch.Tensor]:
    """A LoRA in ComfyUI's generic key format on every 2-D weight whose key contains `match`.

    Keys: diffusion_model.<layer>.lora_up.weight / lora_down.weight / alpha.
    """
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for base, value in _lora_layers(state_dict, match):
        n_out, n_in = value.shape
        out[base + ".lora_up.weight"] = torch.randn(n_out, rank, generator=gen) * scale * value.float().std()
        out[base + ".lora_down.weight"] = torch.randn(rank, n_in, generator=gen)
        out[base + ".alpha"] = torch.tensor(float(rank))
    return out


def adapter_for(state_dict: dict[str, torch.Tensor], seed: int, kind: str, rank: int = 4, scale: float = 0.5,
                match: str = "attn") -> dict[str, torch.Tensor]:
    """A LoRA of another kind (LyCORIS "loha" or "lokr") on the same layers as lora_for, in ComfyUI's key format.

    LoHa: (w1_a @ w1_b) * (w2_a @ w2_b) * alpha / rank. LoKr: kron(w1, w2), w1 a 4 x 4 factor. Both sized so the
    change is of the order of lora_for's.
    """
    if kind == "lora":
        return lora_for(state_dict, seed, rank, scale, match)
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for base, value in _lora_layers(state_dict, match):
        n_out, n_in = value.shape
        std = float(value.float().std())
        if kind == "loha":
            out[base + ".hada_w1_a"] = torch.randn(n_out, rank, generator=gen) * (scale * std) ** 0.5
            out[base + ".hada_w1_b"] = torch.randn(rank, n_in, generator=gen) / rank**0.5
            out[base + ".hada_w2_a"] = torch.randn(n_out, rank, generator=gen) * (scale * std) ** 0.5
            out[base + ".hada_w2_b"] = torch.randn(rank, n_in, generator=gen) / rank**0.5
            out[base + ".alpha"] = torch.tensor(float(rank))
        elif kind == "lokr":
            out[base + ".lokr_w1"] = torch.randn(4, 4, generator=gen)
            out[base + ".lokr_w2"] = torch.randn(n_out // 4, n_in // 4, generator=gen) * scale * std / 4
        else:
            raise ValueError(kind)
    return out


def tiny_conds(family: str = "sd3", batch: int = 1, seed: int = 0):
    """(positive, negative) in ComfyUI's CONDITIONING format, seeded, without a text encoder."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(2):
        if family == "sd3":
            ctx = torch.randn(batch, 8, SD3_CONTEXT_DIM, generator=gen)
            out.append([[ctx, {"pooled_output": torch.randn(batch, SD3_POOLED_DIM, generator=gen)}]])
        else:
            out.append([[torch.randn(batch, 8, SD15_CONTEXT_DIM, generator=gen), {}]])
    return out[0], out[1]


def peft_lora_for_sd3(model, seed: int, rank: int = 4, scale: float = 0.5) -> dict[str, torch.Tensor]:
    """A PEFT/diffusers-format LoRA on the attention q/k/v of a loaded tiny SD3 (as Flow-GRPO saves).

    Keys: base_model.model.transformer_blocks.N.attn.to_q.lora_A.weight / lora_B.weight; no alpha
    (PEFT keeps lora_alpha in adapter_config.json).
    """
    import comfy.utils

    gen = torch.Generator().manual_seed(seed)
    mapping = comfy.utils.mmdit_to_diffusers(model.model.model_config.unet_config, output_prefix="diffusion_model.")
    hidden = model.model.diffusion_model.x_embedder.proj.weight.shape[0]
    out = {}
    for key in sorted(mapping):
        if ".attn.to_" not in key or not key.endswith(".weight") or key.startswith("single"):
            continue
        if not any(f".attn.to_{n}.weight" in key for n in ("q", "k", "v")):
            continue
        prefix = "base_model.model." + key[: -len(".weight")]
        out[prefix + ".lora_A.weight"] = torch.randn(rank, hidden, generator=gen) / hidden**0.5
        out[prefix + ".lora_B.weight"] = torch.randn(hidden, rank, generator=gen) * scale / rank**0.5
    return out


def tiny_sd15_controlnet_state_dict(seed: int = 0, std: float = 0.02) -> dict[str, torch.Tensor]:
    """A ControlNet for the tiny SD1.5 (same one-level layout), from ComfyUI's own cldm class."""
    import comfy.ops
    from comfy.cldm.cldm import ControlNet

    net = ControlNet(
        image_size=32, in_channels=SD15_LATENT_CHANNELS, model_channels=320, hint_channels=3, num_res_blocks=[1],
        channel_mult=[1], transformer_depth=[1], transformer_depth_middle=0, num_heads=8, context_dim=SD15_CONTEXT_DIM,
        use_linear_in_transformer=False, use_spatial_transformer=True, legacy=False, device="cpu",
        dtype=torch.float32, operations=comfy.ops.disable_weight_init,
    )
    return {"control_model." + k: v for k, v in seeded_state_dict(net, seed, std).items()}


def scaled_fp8(state_dict: dict[str, torch.Tensor], match: tuple[str, ...] = ("attn", "mlp")) -> dict:
    """A 'scaled fp8' checkpoint of a state dict, as fp8 SD3.5 / FLUX files ship.

    The 2-D weights whose key contains one of `match` are stored as float8_e4m3fn with a per-layer
    scale_weight, plus the 'scaled_fp8' marker key; ComfyUI 0.8.0 and newer load these layers as
    mixed-precision (quantized) linears, not torch.nn.Linear.
    """
    out = {}
    for key, value in state_dict.items():
        if key.endswith(".weight") and value.ndim == 2 and any(m in key for m in match):
            scale = value.abs().max() / 448.0
            out[key] = (value / scale).to(torch.float8_e4m3fn)
            out[key[: -len("weight")] + "scale_weight"] = scale.reshape(1)
        else:
            out[key] = value
    out["scaled_fp8"] = torch.empty(0, dtype=torch.float8_e4m3fn)
    return out
