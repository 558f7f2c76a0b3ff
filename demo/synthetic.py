"""The demo's world: a data set whose distribution is known exactly, and a reward on samples.

Plain torch, no ComfyUI import. Samples live in the latent space of an SD3-shaped model (16
channels, 8x8), as the network sees them. The data is a mixture of four visual patterns, each
plus a little Gaussian noise. Channels 0-2 are drawn as RGB, so samples can be looked at.

The reward is 1 for samples of the "red disc" mode and 0 for the others. Because it is constant on
each mode, the reward-tilted distribution p(x) exp(r(x) / beta) / Z is the same mixture with its
mode weights tilted, and its share of red discs has a closed form (predicted_share).

A second reward, 1 for the "blue cross" mode, is the target of the demo's second RL model. Tilting by
both, p(x) exp(w_1 r_1(x) / beta_1 + w_2 r_2(x) / beta_2) / Z, is again the mixture with its mode
weights tilted (predicted_shares): what RLG with two RL models at scales w_1, w_2 aims for.
"""

from __future__ import annotations

import math

import torch

CHANNELS, SIZE = 16, 8
MODE_NAMES = ("red disc", "green square", "blue cross", "yellow stripes")
MODE_WEIGHTS = (0.15, 0.35, 0.25, 0.25)  # the base distribution's mode shares
REWARDS = (1.0, 0.0, 0.0, 0.0)  # reward per mode: the red disc is what "RL" is trained towards
REWARDED_MODE = 0
REWARDED_MODE_2 = 2  # the second reward: the blue cross
REWARDS_2 = tuple(float(k == REWARDED_MODE_2) for k in range(len(MODE_NAMES)))
DATA_NOISE = 0.1  # per-element std of the Gaussian around each pattern
_COLORS = ((1.0, -0.6, -0.6), (-0.6, 1.0, -0.6), (-0.6, -0.6, 1.0), (1.0, 1.0, -0.6))


def _masks() -> torch.Tensor:
    y, x = torch.meshgrid(torch.arange(SIZE) + 0.5, torch.arange(SIZE) + 0.5, indexing="ij")
    c = SIZE / 2
    disc = ((x - c) ** 2 + (y - c) ** 2 <= 3.2**2).float()
    square = ((x - c).abs() <= 2.6) & ((y - c).abs() <= 2.6)
    cross = ((x - c).abs() <= 1.0) | ((y - c).abs() <= 1.0)
    stripes = (torch.arange(SIZE)[:, None].expand(SIZE, SIZE) % 3 == 0)
    return torch.stack([disc, square.float(), cross.float(), stripes.float()])


def patterns() -> torch.Tensor:
    """The four mode centres, shape (4, 16, 8, 8): a coloured shape on a dark background."""
    gen = torch.Generator().manual_seed(1234)
    masks = _masks()
    out = torch.empty(len(MODE_NAMES), CHANNELS, SIZE, SIZE)
    for k, (mask, rgb) in enumerate(zip(masks, _COLORS, strict=True)):
        color = torch.cat([torch.tensor(rgb), 0.5 * torch.randn(CHANNELS - 3, generator=gen)])
        out[k] = color[:, None, None] * (2 * mask - 1)[None] * 0.8
    return out


def sample_data(n: int, generator: torch.Generator, weights=MODE_WEIGHTS) -> tuple[torch.Tensor, torch.Tensor]:
    """n samples of the mixture and their mode labels."""
    modes = torch.multinomial(torch.tensor(weights), n, replacement=True, generator=generator)
    noise = torch.randn(n, CHANNELS, SIZE, SIZE, generator=generator) * DATA_NOISE
    return patterns()[modes] + noise, modes


def classify(x: torch.Tensor) -> torch.Tensor:
    """The nearest pattern of each sample."""
    centres = patterns().flatten(1)
    return torch.cdist(x.flatten(1).float(), centres).argmin(dim=1)


def reward(x: torch.Tensor, rewards=REWARDS) -> torch.Tensor:
    """The reward of each sample: rewards[k] for a sample of pattern k (reward 1 unless told)."""
    return torch.tensor(rewards)[classify(x)]


def mode_shares(x: torch.Tensor) -> list[float]:
    """The share of each pattern among the samples, in MODE_NAMES order."""
    counts = torch.bincount(classify(x), minlength=len(MODE_NAMES))
    return (counts.double() / max(x.shape[0], 1)).tolist()


def predicted_share(base_share: float, scale: float, beta: float) -> float:
    """Share of the rewarded mode under p_base * exp(scale * r / beta), r = 1 on that mode, else 0.

    This is what RL with KL coefficient beta / scale would give; RLG at scale w aims for it.
    """
    tilted = base_share * math.exp(scale * REWARDS[REWARDED_MODE] / beta)
    return tilted / (tilted + (1.0 - base_share))


def predicted_shares(base_shares, scales, betas, rewards=(REWARDS, REWARDS_2)) -> list[float]:
    """Share of each pattern under p_base * exp(sum_i scales[i] * r_i / betas[i]), the sum tilt.

    base_shares: the base's share of each pattern; rewards[i][k]: reward i on pattern k. This is what
    RL with reward sum_i (w_i / beta_i) r_i and KL coefficient 1 would give: each reward i with its own
    KL coefficient beta_i / w_i. RLG with several RL models, base + sum_i w_i (rl_i - base), aims for it.
    """
    if not len(scales) == len(betas) == len(rewards):
        raise ValueError(f"one scale and one beta per reward: {len(scales)} scales, {len(betas)} betas, "
                         f"{len(rewards)} rewards")
    base = torch.tensor(base_shares, dtype=torch.float64)
    exponent = torch.zeros_like(base)
    for w, beta, r in zip(scales, betas, rewards, strict=True):
        exponent += w * torch.tensor(r, dtype=torch.float64) / beta
    # Shift by the largest exponent (over patterns the base has) so large scales do not overflow.
    present = base > 0
    if present.any():
        exponent -= exponent[present].max()
    tilted = base * torch.exp(exponent)
    return (tilted / tilted.sum()).tolist()


def to_rgb(x: torch.Tensor, pixels: int = 64) -> torch.Tensor:
    """Samples (n, 16, 8, 8) -> images (n, 3, pixels, pixels) in [0, 1], channels 0-2 as RGB."""
    rgb = (x[:, :3].float() / 1.6 + 0.5).clamp(0, 1)
    return torch.nn.functional.interpolate(rgb, size=(pixels, pixels), mode="nearest")


CONTEXT_DIM, CONTEXT_TOKENS, POOLED_DIM = 64, 8, 32


def prompt_conditioning() -> tuple[torch.Tensor, torch.Tensor]:
    """The demo's one 'prompt': a fixed text-context tensor (1, 8, 64) and pooled vector (1, 32).

    It stands in for a text encoder's output, so the demo needs no CLIP.
    """
    gen = torch.Generator().manual_seed(4321)
    return torch.randn(1, CONTEXT_TOKENS, CONTEXT_DIM, generator=gen), torch.randn(1, POOLED_DIM, generator=gen)
