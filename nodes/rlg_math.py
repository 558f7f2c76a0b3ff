"""The RLG arithmetic: the blend, the schedule window and scale ramps, CFG per branch, the RL correction between
evaluations.

Plain torch and Python, no ComfyUI import, so it can be read and tested on its own.

RLG (arXiv 2508.21016) combines a base model and its RL-fine-tuned twins at every sampling step:

    prediction = base + sum_i w_i * (rl_i - base)

With one RL model, w = 0 is the base model, w = 1 the RL model, 0 < w < 1 interpolates and w > 1
extrapolates (it samples what RL training with KL coefficient beta / w would have given). With
several, each reward is dialled on its own: the target is the base tilted by sum_i w_i r_i / beta_i.
The weights of base and RL models sum to one, so for one x and one sigma the blend of denoised (x0)
predictions equals the blend of eps, v or flow-velocity predictions: ComfyUI hands us denoised
predictions and that is enough.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from .errors import RLGRuntimeError
from .settings import OutsideWindow, RLGSettings, Schedule, Weight


def _per_row(weight: Weight, like: torch.Tensor) -> Weight:
    """A per-row weight shaped to broadcast over a prediction's non-batch dimensions."""
    if isinstance(weight, torch.Tensor):
        rows = like.shape[0]
        if weight.numel() != rows:
            raise ValueError(f"RLG: {weight.numel()} per-row scales for a batch of {rows} rows")
        return weight.to(like.device, like.dtype).reshape(rows, *([1] * (like.ndim - 1)))
    return weight


def blend_predictions(base: torch.Tensor, rl: torch.Tensor, scale: Weight) -> torch.Tensor:
    """base + scale * (rl - base), the RLG combination of two predictions."""
    return base + _per_row(scale, base) * (rl - base)


def blend_many(base: torch.Tensor, rls: Sequence[torch.Tensor], weights: Sequence[Weight]) -> torch.Tensor:
    """base + sum_i w_i (rl_i - base). With one term this is exactly blend_predictions."""
    out = base
    for rl, weight in zip(rls, weights, strict=True):
        out = out + _per_row(weight, base) * (rl - base)
    return out


def sum_weighted(rls: Sequence[torch.Tensor], weights: Sequence[Weight]) -> torch.Tensor:
    """sum_i w_i rl_i: the blend when the weights sum to one and the base's coefficient vanishes.

    A single term of weight 1 is returned as it is, so w = 1 is the RL model bit for bit.
    """
    if len(rls) == 1 and isinstance(weights[0], float) and weights[0] == 1.0:
        return rls[0]
    out = None
    for rl, weight in zip(rls, weights, strict=True):
        term = _per_row(weight, rl) * rl
        out = term if out is None else out + term
    return out


def blend_prediction_lists(
    base: Sequence[torch.Tensor], rl: Sequence[torch.Tensor], scale: Weight
) -> list[torch.Tensor]:
    """Blend ComfyUI's per-cond outputs ([cond, uncond, ...]) pairwise."""
    if len(base) != len(rl):
        raise ValueError(f"RLG: base gave {len(base)} predictions but the RL model gave {len(rl)}")
    return [blend_predictions(b, r, scale) for b, r in zip(base, rl, strict=True)]


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


def sigma_to_percent(sigma: float, percent_to_sigma: Callable[[float], float], iterations: int = 40) -> float:
    """The schedule percent whose sigma is `sigma`: percent_to_sigma inverted by bisection.

    ComfyUI's model_sampling offers only percent -> sigma; it is monotone (falling) for every
    parameterisation, so bisection works for all of them and needs no per-family formula.
    """
    if sigma >= float(percent_to_sigma(0.0)):
        return 0.0
    if sigma <= float(percent_to_sigma(1.0)):
        return 1.0
    lo, hi = 0.0, 1.0
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        if float(percent_to_sigma(mid)) > sigma:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def ramp(shape: Schedule, start_scale: float, end_scale: float, u: float) -> float:
    """The scale at position u of a window (0 = its start, 1 = its end), from start_scale to end_scale.

    u is measured in schedule percent, so every sampler, second-order and ancestral ones included, sees the
    same scale at the same sigma.
    """
    u = min(max(u, 0.0), 1.0)
    if shape is Schedule.LINEAR:
        return start_scale + (end_scale - start_scale) * u
    if shape is Schedule.COSINE:  # eases out of the start value and into the end value
        return end_scale + (start_scale - end_scale) * 0.5 * (1.0 + math.cos(math.pi * u))
    return start_scale


def term_weight(settings: RLGSettings, sigma: float, window: SigmaWindow,
                percent_of: Callable[[float], float]) -> Weight | None:
    """One RL model's scale at `sigma`: its ramp inside its window; outside, None (off) or 1 (the RL model)."""
    if not window.contains(sigma):
        return 1.0 if settings.outside_window is OutsideWindow.RL_MODEL else None
    if not settings.ramps:
        return settings.scale
    span = settings.end_percent - settings.start_percent
    u = (percent_of(sigma) - settings.start_percent) / span if span > 0 else 0.0
    return ramp(settings.schedule, settings.scale, settings.end_scale, u)


def _is_zero(weight: Weight) -> bool:
    return bool((weight == 0).all()) if isinstance(weight, torch.Tensor) else weight == 0.0


def _base_coefficient_is_zero(weights: Sequence[Weight]) -> bool:
    total: Weight = 0.0
    for weight in weights:
        total = total + weight
    return bool((total == 1).all()) if isinstance(total, torch.Tensor) else total == 1.0


@dataclass(frozen=True)
class StepPlan:
    """What one sampling step evaluates: the base or not, and which terms with which weights."""

    run_base: bool
    terms: tuple[tuple[int, Weight], ...]  # (term index, weight), only the terms that are evaluated

    @property
    def run_rl(self) -> bool:
        return bool(self.terms)


def plan_step(weights: Sequence[Weight | None]) -> StepPlan:
    """Decide which models a step needs, from each term's weight (None: off at this step).

    A term of weight 0 is not evaluated; the base is not evaluated when its coefficient
    1 - sum_i w_i is zero (w = 1 with one RL model, inside its window or outside it with
    outside_window "RL model"): the blend would multiply it by zero. A step where every term is
    off runs the base alone.
    """
    active = tuple((i, w) for i, w in enumerate(weights) if w is not None and not _is_zero(w))
    run_base = not active or not _base_coefficient_is_zero([w for _, w in active])
    return StepPlan(run_base=run_base, terms=active)


def combine(base: torch.Tensor | None, rls: Sequence[torch.Tensor], weights: Sequence[Weight]) -> torch.Tensor:
    """The step's prediction for one cond from what the plan evaluated."""
    if not rls:
        return base
    out = sum_weighted(rls, weights) if base is None else blend_many(base, rls, weights)
    if len(rls) == 1 and isinstance(weights[0], torch.Tensor):
        # A scale per row (a sweep): rows at scale 1 are the RL model bit for bit, as a run at scale 1 is.
        out = torch.where(_per_row(weights[0], out) == 1, rls[0], out)
    return out


def branch_cfg_cond(base_uncond: torch.Tensor, rl_cond: torch.Tensor, rl_uncond: torch.Tensor | None,
                    cfg: float, rl_cfg: float) -> torch.Tensor:
    """The cond C' for which CFG(C', U'; cfg) == CFG(rl_cond, rl_uncond; rl_cfg).

    CFG per branch: the RL branch runs at its own scale (rl_cfg = 1 for models trained without
    CFG) while the sampler applies one cfg to one (cond, uncond) pair. CFG is affine and the blend's
    weights sum to one, so giving the RL branch the pair (C', U') makes the sampler's CFG of the
    blended pair equal CFG(base; cfg) + sum_i w_i (CFG(rl_i; rl_cfg_i) - CFG(base; cfg)).
    U' is the RL model's own uncond (so rl_cfg == cfg gives back rl_cond, the plain blend), or the
    base's for a branch without CFG, whose uncond is never evaluated (rl_uncond None).
    """
    if cfg == 0.0:
        raise RLGRuntimeError("rl_cfg needs the sampler's cfg to be above 0 (at cfg 0 only the negative prompt "
                              "counts); raise cfg or leave rl_cfg at 0 (same as cfg).")
    if rl_uncond is None:
        return base_uncond + (rl_cond - base_uncond) / cfg
    return rl_uncond + (rl_cond - rl_uncond) * (rl_cfg / cfg)


def with_branch_cfg(cond: torch.Tensor, base_uncond: torch.Tensor, terms: Sequence[tuple], cfg: float) -> torch.Tensor:
    """The blended cond with each own-cfg RL branch moved from its raw cond to its equivalent cond.

    `cond` blended the raw RL conds; terms are (weight, rl cond, rl uncond or None, rl_cfg).
    """
    for weight, rl_cond, rl_uncond, rl_cfg in terms:
        equivalent = branch_cfg_cond(base_uncond, rl_cond, rl_uncond, cfg, rl_cfg)
        cond = cond + _per_row(weight, cond) * (equivalent - rl_cond)
    return cond


# -- the RL correction between evaluations (rl_every) ---------------------------------------------------

def schedule_index(sigma: float, schedule: Sequence[float]) -> int | None:
    """The step of the sampling schedule that starts at `sigma`, or None for a call between its sigmas.

    Samplers that call the model more than once per step (heun, dpmpp_2s_ancestral, uni_pc...) make their
    extra calls at other sigmas; steps are told apart by sigma, never by counting calls.
    """
    for i, s in enumerate(schedule):
        if math.isclose(s, sigma, rel_tol=1e-5, abs_tol=1e-9):
            return i
    return None


def first_step_in(window: SigmaWindow, schedule: Sequence[float]) -> int | None:
    """The first step of the schedule whose sigma lies in the window."""
    return next((i for i, s in enumerate(schedule) if s > 0 and window.contains(s)), None)


def evaluates_at(step: int | None, first: int | None, every: int) -> bool:
    """Whether an RL model evaluated at every `every`-th step of its window, its first step included, runs at
    this call: the call at `step` of the schedule (None: a call between schedule sigmas, which is estimated)."""
    if every == 1 or first is None:
        return True
    if step is None:
        return False
    return step <= first or (step - first) % every == 0


Corrections = list  # per cond: rl - base, or None where the RL model did not evaluate that cond


class CorrectionHistory:
    """One RL model's correction rl - base, per cond, at its last two evaluations (for rl_every > 1).

    Between evaluations the correction is extrapolated linearly in sigma from the last two, as a correction of the
    noise prediction: d / sigma, which is -(rl - base) in eps for an EPS model and in velocity for a flow model
    (denoised = x - sigma * output). That quantity moves slowly with sigma where the denoised correction itself
    falls to zero quickly at the end of sampling: on a Gaussian base with exact scores, extrapolating the denoised
    correction misses the tilted mean by 0.14 at w = 2 (every 2nd step), the noise-prediction correction by 0.01
    (tests/test_rl_every.py prints it). With one evaluation the noise-prediction correction is held. Each cond
    keeps its own rows: nothing is shared between conds, terms or batch rows.
    """

    def __init__(self):
        self.points: list[tuple[float, Corrections]] = []

    def reset(self) -> None:
        self.points = []

    def record(self, sigma: float, corrections: Corrections) -> None:
        """Keep this evaluation and the one before it (if it was at another sigma, for the same conds)."""
        kept = [p for p in self.points if p[0] != sigma and _same_shapes(p[1], corrections)]
        self.points = [*kept[-1:], (sigma, corrections)]

    def fits(self, sigma: float, like: Sequence[torch.Tensor | None]) -> bool:
        """Whether an estimate can stand at `sigma` for these outputs: after an evaluation at a higher sigma (the
        sampler moving down, not restarting), for the same conds, each of the same shape."""
        return bool(self.points) and sigma < self.points[-1][0] and _same_shapes(self.points[-1][1], like)

    def estimate(self, sigma: float) -> Corrections:
        (s2, d2) = self.points[-1]
        (s1, d1) = self.points[0] if len(self.points) > 1 else self.points[-1]
        t = 0.0 if s1 == s2 else (sigma - s2) / (s2 - s1)
        out = []
        for a, b in zip(d1, d2, strict=True):
            if b is None:
                out.append(None)
                continue
            e2, e1 = b / s2, a / s1  # the corrections of the noise prediction, up to its sign
            out.append((e2 + (e2 - e1) * t) * sigma)
        return out


def _same_shapes(a: Sequence, b: Sequence) -> bool:
    return len(a) == len(b) and all((x is None) == (y is None) and (x is None or x.shape == y.shape)
                                    for x, y in zip(a, b, strict=True))
