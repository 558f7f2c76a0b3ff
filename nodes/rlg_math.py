"""The RLG arithmetic: the blend, the schedule window and input checks.

Plain torch and Python, no ComfyUI import, so it can be read and tested on its own.

RLG (arXiv 2508.21016) combines a base model and its RL-fine-tuned twin at every sampling step:

    prediction = base + w * (rl - base)

w = 0 is the base model, w = 1 the RL model, 0 < w < 1 interpolates and w > 1 extrapolates
(it samples what RL training with KL coefficient beta / w would have given). The weights sum to
one, so for one x and one sigma the blend of denoised (x0) predictions equals the blend of eps,
v or flow-velocity predictions: ComfyUI hands us denoised predictions and that is enough.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch


def blend_predictions(base: torch.Tensor, rl: torch.Tensor, scale: float) -> torch.Tensor:
    """base + scale * (rl - base), the RLG combination of two predictions."""
    return base + scale * (rl - base)


def blend_prediction_lists(
    base: Sequence[torch.Tensor], rl: Sequence[torch.Tensor], scale: float
) -> list[torch.Tensor]:
    """Blend ComfyUI's per-cond outputs ([cond, uncond, ...]) pairwise."""
    if len(base) != len(rl):
        raise ValueError(f"RLG: base gave {len(base)} predictions but the RL model gave {len(rl)}")
    return [blend_predictions(b, r, scale) for b, r in zip(base, rl, strict=True)]


class RLGInputError(ValueError):
    """A user input RLG cannot work with; the message names the input and the fix."""


def check_scale(rlg_scale: float) -> float:
    value = float(rlg_scale)
    if not math.isfinite(value):
        raise RLGInputError(
            f"rlg_scale is {rlg_scale!r}; it must be a finite number "
            "(0 = base model, 1 = RL model, above 1 = stronger alignment)."
        )
    return value


def check_window(start_percent: float, end_percent: float) -> tuple[float, float]:
    start, end = float(start_percent), float(end_percent)
    for name, value in (("start_percent", start), ("end_percent", end)):
        if not math.isfinite(value) or not 0.0 <= value <= 1.0:
            raise RLGInputError(f"{name} is {value!r}; it must lie between 0 and 1.")
    if start > end:
        raise RLGInputError(
            f"start_percent ({start}) is after end_percent ({end}); RLG blends between the two, "
            "so start_percent must be less than or equal to end_percent."
        )
    return start, end


@dataclass(frozen=True)
class SigmaWindow:
    """The part of the noise schedule where the blend is on.

    Sigmas fall during sampling, so start_percent maps to the larger sigma. Both ends are
    inclusive, as in ComfyUI's ControlNet and SkipLayerGuidance windows.
    """

    sigma_start: float
    sigma_end: float

    @classmethod
    def from_percents(
        cls, start_percent: float, end_percent: float, percent_to_sigma: Callable[[float], float]
    ) -> SigmaWindow:
        return cls(float(percent_to_sigma(start_percent)), float(percent_to_sigma(end_percent)))

    def contains(self, sigma: float) -> bool:
        return self.sigma_end <= sigma <= self.sigma_start


@dataclass(frozen=True)
class StepPlan:
    """What one sampling step evaluates, and with which weight."""

    scale: float
    run_base: bool
    run_rl: bool


def plan_step(sigma: float, window: SigmaWindow, rlg_scale: float) -> StepPlan:
    """Decide which models a step needs.

    Outside the window the RL model is used alone, as the reference code's zero_init_step does
    for its first steps. Inside it, w = 0 and w = 1 need only one model: the blend would return
    that model's prediction, so the other evaluation is skipped rather than multiplied by zero.
    """
    if not window.contains(sigma):
        return StepPlan(scale=1.0, run_base=False, run_rl=True)
    if rlg_scale == 0.0:
        return StepPlan(scale=0.0, run_base=True, run_rl=False)
    if rlg_scale == 1.0:
        return StepPlan(scale=1.0, run_base=False, run_rl=True)
    return StepPlan(scale=rlg_scale, run_base=True, run_rl=True)
