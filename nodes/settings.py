"""One RL model's settings, checked in one place, and every limit the nodes' widgets use.

Plain Python and torch, no ComfyUI import. The nodes turn their widgets into an RLGSettings with
RLGSettings.from_widgets(); tests and benchmarks build one directly. Either way the settings are checked
when they are made (RLGInputError naming the input), so an RLGSettings that exists is usable.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum

import torch

from .errors import RLGInputError

# A scale is one number for the whole batch, or one per batch row (a scale sweep).
Weight = float | torch.Tensor


@dataclass(frozen=True)
class Range:
    low: float
    high: float

    def holds(self, value: float) -> bool:
        return self.low <= value <= self.high


# The limits: the widgets' min / max and the checks below both read them.
SCALE = Range(-10.0, 10.0)  # rlg_scale and end_scale (the paper uses 1 to 3)
PERCENT = Range(0.0, 1.0)  # start_percent and end_percent
CFG = Range(0.0, 100.0)  # the sampler's cfg on RLG Guider, and rl_cfg
RL_EVERY = Range(1, 8)  # RL model evaluated at every n-th step of its window
MAX_SWEEP_SCALES = 64


class Schedule(str, Enum):
    """How the scale moves across the window (the widget's values)."""

    CONSTANT = "constant"
    LINEAR = "linear"
    COSINE = "cosine"


class OutsideWindow(str, Enum):
    """What an RL model contributes at steps outside its window (the widget's values).

    OFF: nothing (its scale is 0 there). RL_MODEL: scale 1 there, which with a single RL model means the RL
    model alone, as the reference code's zero_init_step does.
    """

    OFF = "off"
    RL_MODEL = "RL model"


def _choice(enum: type[Enum], value, name: str):
    try:
        return enum(value)
    except ValueError:
        raise RLGInputError(f"{name} is {value!r}; it must be one of {', '.join(e.value for e in enum)}.") from None


def _number(value, name: str, limits: Range, what: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise RLGInputError(f"{name} is {value!r}; it must be a number ({what}).") from None
    if not math.isfinite(number):
        raise RLGInputError(f"{name} is {value!r}; it must be a finite number from {limits.low:g} to {limits.high:g} "
                            f"({what}).")
    if not limits.holds(number):
        raise RLGInputError(f"{name} is {value!r}; it must lie between {limits.low:g} and {limits.high:g} ({what}).")
    return number


def check_scale(value, name: str = "rlg_scale") -> float:
    return _number(value, name, SCALE, "0 = base model, 1 = RL model, above 1 = stronger; the paper uses 1 to 3")


def check_window(start_percent, end_percent) -> tuple[float, float]:
    start = _number(start_percent, "start_percent", PERCENT, "0 = first step, 1 = last")
    end = _number(end_percent, "end_percent", PERCENT, "0 = first step, 1 = last")
    if start > end:
        raise RLGInputError(f"start_percent ({start:g}) is after end_percent ({end:g}): RLG blends between the two, "
                            "so make start_percent smaller than or equal to end_percent.")
    return start, end


@dataclass(frozen=True)
class RLBranchCFG:
    """The CFG scale of an RL model's own branch. None: the sampler's cfg, like the base (the widget's 0).

    With its own scale, each step is CFG(base; cfg) + w (CFG(rl; rl_cfg) - CFG(base; cfg)). At 1 (an RL model
    trained without CFG) that is the RL model's cond alone, so its uncond is not evaluated.
    """

    scale: float | None = None

    @classmethod
    def from_widget(cls, value) -> RLBranchCFG:
        number = _number(value, "rl_cfg", CFG, "0 = the sampler's cfg, 1 = an RL model trained without CFG")
        return cls(None if number == 0 else number)

    @property
    def own(self) -> bool:
        return self.scale is not None

    @property
    def needs_uncond(self) -> bool:
        return self.scale != 1.0


@dataclass(frozen=True)
class RLGSettings:
    """One RL model's settings: its scale, window, ramp, CFG branch and how often it is evaluated."""

    scale: Weight
    start_percent: float = 0.0
    end_percent: float = 1.0
    schedule: Schedule = Schedule.CONSTANT
    end_scale: float | None = None  # the scale at end_percent; None: the same as scale (no ramp)
    rl_cfg: RLBranchCFG = field(default_factory=RLBranchCFG)
    outside_window: OutsideWindow = OutsideWindow.OFF
    rl_every: int = 1  # 1: the RL model at every step of its window (exact); n: every n-th, estimated between

    def __post_init__(self):
        if isinstance(self.scale, torch.Tensor):
            for value in self.scale.flatten().tolist():
                check_scale(value)
        else:
            object.__setattr__(self, "scale", check_scale(self.scale))
        start, end = check_window(self.start_percent, self.end_percent)
        object.__setattr__(self, "start_percent", start)
        object.__setattr__(self, "end_percent", end)
        object.__setattr__(self, "schedule", _choice(Schedule, self.schedule, "schedule"))
        object.__setattr__(self, "outside_window", _choice(OutsideWindow, self.outside_window, "outside_window"))
        if self.end_scale is not None:
            object.__setattr__(self, "end_scale", check_scale(self.end_scale, "end_scale"))
        if not isinstance(self.rl_cfg, RLBranchCFG):
            raise RLGInputError(f"rl_cfg is {self.rl_cfg!r}; build it with RLBranchCFG.from_widget.")
        every = self.rl_every
        if isinstance(every, bool) or not isinstance(every, int) or not RL_EVERY.holds(every):
            raise RLGInputError(f"rl_every is {every!r}; it must be a whole number from {RL_EVERY.low:g} to "
                                f"{RL_EVERY.high:g} (1 = the RL model at every step, exact).")

    @classmethod
    def from_widgets(cls, rlg_scale, start_percent, end_percent, schedule="constant", end_scale=1.0, rl_cfg=0.0,
                     outside_window: str = OutsideWindow.OFF.value, rl_every=1) -> RLGSettings:
        """The settings from a node's widget values (end_scale is ignored while the schedule is constant)."""
        shape = _choice(Schedule, schedule, "schedule")
        try:
            every = int(rl_every)
        except (TypeError, ValueError):
            raise RLGInputError(f"rl_every is {rl_every!r}; it must be a whole number.") from None
        if every != rl_every:
            raise RLGInputError(f"rl_every is {rl_every!r}; it must be a whole number.")
        return cls(rlg_scale, start_percent, end_percent, shape,
                   None if shape is Schedule.CONSTANT else end_scale, RLBranchCFG.from_widget(rl_cfg),
                   outside_window, every)

    @property
    def ramps(self) -> bool:
        """Whether the scale changes across the window (a sweep's per-row scales never do)."""
        return (not isinstance(self.scale, torch.Tensor) and self.schedule is not Schedule.CONSTANT
                and self.end_scale is not None and self.end_scale != self.scale)


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
