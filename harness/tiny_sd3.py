"""A tiny SD3/MMDiT network from ComfyUI's own class, so stock loaders detect it as SD3.

hidden = 64 * depth (the detector's rule), so depth 2 gives hidden 128 and 2 heads; 16 latent
channels, a 32-wide pooled vector, 64-wide text context, a 16x16 position table. 1.1 M params.
"""

from __future__ import annotations

import torch

LATENT_CHANNELS, CONTEXT_DIM, POOLED_DIM = 16, 64, 32
SHIFT = 3.0  # SD3's flow shift; ComfyUI samples the detected model with it


def build_mmdit(qk_norm: str | None = None, depth: int = 2) -> torch.nn.Module:
    """depth 2 is the demo/test model; larger depths (hidden 64 * depth) are for benchmarks."""
    import comfy.ops
    from comfy.ldm.modules.diffusionmodules.mmdit import OpenAISignatureMMDITWrapper

    return OpenAISignatureMMDITWrapper(
        input_size=None,
        patch_size=2,
        in_channels=LATENT_CHANNELS,
        out_channels=LATENT_CHANNELS,
        depth=depth,
        adm_in_channels=POOLED_DIM,
        context_embedder_config={"target": "torch.nn.Linear",
                                 "params": {"in_features": CONTEXT_DIM, "out_features": 64 * depth}},
        pos_embed_max_size=16,
        num_patches=256,
        qk_norm=qk_norm,
        device="cpu",
        dtype=torch.float32,
        operations=comfy.ops.disable_weight_init,
    )


def flow_sigmas(steps: int, shift: float = SHIFT) -> torch.Tensor:
    """SD3's shifted flow schedule from 1 to 0 (what ComfyUI's 'simple' scheduler approximates)."""
    t = torch.linspace(1.0, 0.0, steps + 1)
    return shift * t / (1 + (shift - 1) * t)
