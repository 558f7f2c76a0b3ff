"""A Gaussian base and its exactly tilted RL twin, as ComfyUI models with exact scores (flow matching, SD3-like).

Every latent element of the base is N(mu, s^2); the RL model is the base tilted by a linear reward r(x) = b x with
KL coefficient beta, N(mu + s^2 b / beta, s^2). RLG at scale w then targets N(mu + w s^2 b / beta, s^2) exactly
(the geometric average of two Gaussians of one variance; see ../shared/notes/rlg-method.md), so a sampler's result
can be checked against a closed form. The networks compute the exact posterior means; they replace the network of
a tiny SD3 model that ComfyUI loaded, so sampling runs through ComfyUI's real path (flow sampling, shift 3).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from . import sampling


class GaussianFlowDenoiser(torch.nn.Module):
    """The flow-matching velocity of data N(mean, std^2) per element, for x = (1 - sigma) x0 + sigma eps."""

    def __init__(self, mean: float, std: float):
        super().__init__()
        self.mean, self.std = mean, std
        self.dtype = torch.float32  # what ComfyUI reads of a network (BaseModel.get_dtype)

    def forward(self, x, timesteps, context=None, y=None, **kwargs):
        sigma = (timesteps.float() / 1000.0).reshape(-1, *([1] * (x.ndim - 1)))  # SD3: timestep = 1000 sigma
        keep = 1.0 - sigma
        gain = keep * self.std**2 / (keep**2 * self.std**2 + sigma**2)
        x0 = self.mean + gain * (x - keep * self.mean)
        return (x - x0) / sigma.clamp_min(1e-6)


@dataclass(frozen=True)
class GaussianCase:
    mean: float = 0.0
    std: float = 1.0
    reward: float = 0.5  # b of r(x) = b x
    beta: float = 1.0

    @property
    def rl_mean(self) -> float:
        return self.mean + self.std**2 * self.reward / self.beta

    def target_mean(self, w: float) -> float:
        return self.mean + w * (self.rl_mean - self.mean)

    def models(self):
        """(base, RL model): two separately loaded tiny SD3 patchers whose networks are the exact denoisers."""
        out = []
        for mean in (self.mean, self.rl_mean):
            patcher = sampling.load_model("sd3")
            patcher.model.diffusion_model = GaussianFlowDenoiser(mean, self.std)
            out.append(patcher)
        return tuple(out)
