"""The RLG arithmetic: the blend, the schedule window and scale ramps, CFG per branch, input checks.

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

# A weight is one number for the whole batch, or one per batch row (a scale sweep).
Weight = float | torch.Tensor


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


class RLGInputError(ValueError):
    """A user input RLG cannot work with; the message names the input and the fix."""


class RLGRuntimeError(RuntimeError):
    """RLG could not compute a step exactly on this host; the message says why and what to do."""


# Widget limits, shared by the nodes and the checks.
SCALE_LIMIT = 10.0


def check_scale(rlg_scale: float, name: str = "rlg_scale") -> float:
    try:
        value = float(rlg_scale)
    except (TypeError, ValueError):
        raise RLGInputError(f"{name} is {rlg_scale!r}; it must be a number.") from None
    if not math.isfinite(value):
        raise RLGInputError(
            f"{name} is {rlg_scale!r}; it must be a finite number "
            "(0 = base model, 1 = RL model, above 1 = stronger alignment)."
        )
    if abs(value) > SCALE_LIMIT:
        raise RLGInputError(f"{name} is {value:g}; it must lie between -{SCALE_LIMIT:g} and {SCALE_LIMIT:g} "
                            "(the paper uses 1 to 3).")
    return value


def check_window(start_percent: float, end_percent: float) -> tuple[float, float]:
    values = {}
    for name, value in (("start_percent", start_percent), ("end_percent", end_percent)):
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise RLGInputError(f"{name} is {value!r}; it must be a number between 0 and 1.") from None
        if not math.isfinite(value) or not 0.0 <= value <= 1.0:
            raise RLGInputError(f"{name} is {value!r}; it must lie between 0 and 1.")
        values[name] = value
    start, end = values["start_percent"], values["end_percent"]
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


SCHEDULE_SHAPES = ("constant", "linear", "cosine")


@dataclass(frozen=True)
class ScaleSchedule:
    """The scale across a window: from start_scale at its start to end_scale at its end.

    u is the position in the window in schedule percent (0 = start_percent, 1 = end_percent), so
    every sampler, second-order and ancestral ones included, sees the same scale at the same sigma.
    """

    shape: str
    start_scale: float
    end_scale: float

    def __post_init__(self):
        if self.shape not in SCHEDULE_SHAPES:
            raise RLGInputError(f"schedule is {self.shape!r}; it must be one of {', '.join(SCHEDULE_SHAPES)}.")

    @property
    def is_constant(self) -> bool:
        return self.shape == "constant" or self.start_scale == self.end_scale

    def at(self, u: float) -> float:
        if self.is_constant:
            return self.start_scale
        u = min(max(u, 0.0), 1.0)
        if self.shape == "linear":
            return self.start_scale + (self.end_scale - self.start_scale) * u
        # cosine: eases out of the start value and into the end value
        return self.end_scale + (self.start_scale - self.end_scale) * 0.5 * (1.0 + math.cos(math.pi * u))


@dataclass(frozen=True)
class TermSpec:
    """One RL model's settings, as the user gave them (no model inside)."""

    scale: Weight
    start_percent: float = 0.0
    end_percent: float = 1.0
    schedule: str = "constant"
    end_scale: float | None = None
    rl_cfg: float | None = None  # None: the RL branch uses the sampler's cfg, like the base

    def scale_schedule(self) -> ScaleSchedule:
        if isinstance(self.scale, torch.Tensor):
            return ScaleSchedule("constant", 0.0, 0.0)  # per-row scales are constant by construction
        end = self.scale if self.end_scale is None else self.end_scale
        return ScaleSchedule(self.schedule, self.scale, end)

    def weight_at(self, sigma: float, window: SigmaWindow, percent_of: Callable[[float], float]) -> Weight | None:
        """This term's weight at `sigma`, or None outside its window."""
        if not window.contains(sigma):
            return None
        schedule = self.scale_schedule()
        if schedule.is_constant:
            return self.scale
        span = self.end_percent - self.start_percent
        u = (percent_of(sigma) - self.start_percent) / span if span > 0 else 0.0
        return schedule.at(u)


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


def plan_step(weights: Sequence[Weight | None], rl_alone_outside: bool = False) -> StepPlan:
    """Decide which models a step needs, from each term's weight (None outside its window).

    A term of weight 0 is not evaluated; the base is not evaluated when its coefficient
    1 - sum_i w_i is zero (w = 1 with one RL model): the blend would multiply it by zero.
    With rl_alone_outside (RLG Apply's single model, as the reference code's zero_init_step), a
    step outside the window runs the RL model alone; otherwise a term outside its window is off,
    and a step where every term is off runs the base alone.
    """
    if rl_alone_outside and len(weights) == 1 and weights[0] is None:
        return StepPlan(run_base=False, terms=((0, 1.0),))
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


MAX_SWEEP_SCALES = 64


def parse_scales(text: str, name: str = "scales") -> list[float]:
    """A list of RLG scales typed by the user: numbers separated by commas, semicolons or spaces."""
    tokens = [t for t in str(text).replace(";", ",").replace(" ", ",").split(",") if t.strip()]
    if not tokens:
        raise RLGInputError(f"{name} is empty; give the scales to compare, for example: 0, 0.5, 1, 1.5, 2, 3")
    if len(tokens) > MAX_SWEEP_SCALES:
        raise RLGInputError(f"{name} has {len(tokens)} values; at most {MAX_SWEEP_SCALES} fit one sweep.")
    values = []
    for token in tokens:
        try:
            value = float(token)
        except ValueError:
            raise RLGInputError(f"{name}: {token.strip()!r} is not a number; write numbers separated by commas, "
                                "for example: 0, 0.5, 1, 1.5, 2, 3") from None
        values.append(check_scale(value, f"{name} ({token.strip()})"))
    return values


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
