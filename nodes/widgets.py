"""The widgets every RLG node shares (V3 schema), with their limits from settings.py and their tooltips."""

from __future__ import annotations

from comfy_api.latest import io

from .errors import RLGInputError
from .settings import CFG, PERCENT, RL_EVERY, SCALE, OutsideWindow, Schedule, check_window

_SCALE_TOOLTIP = (
    "How strongly to follow what RL fine-tuning taught. 0 = base model, 1 = RL model, between 0 and 1 "
    "interpolates, above 1 aligns harder than the RL model (like dividing the RL KL coefficient by this "
    "value; the paper uses 1 to 3), below 0 moves away from the reward."
)
_START_TOOLTIP = "Where in the schedule the blend starts (0 = first step, 1 = last). Before it: see outside_window."
_END_TOOLTIP = "Where in the schedule the blend ends (0 = first step, 1 = last). After it: see outside_window."
_SCHEDULE_TOOLTIP = (
    "How the scale moves across the window. constant: rlg_scale throughout. linear / cosine: from rlg_scale at "
    "start_percent to end_scale at end_percent, measured in schedule percent (noise level), so every sampler sees "
    "the same scale at the same noise level."
)
_END_SCALE_TOOLTIP = "The scale at end_percent for a linear or cosine schedule (unused while schedule is constant)."
_RL_CFG_TOOLTIP = (
    "CFG scale of the RL model's branch. 0 = the sampler's cfg, like the base (default). 1 = no CFG, for RL models "
    "trained without it (Flow-GRPO 'no CFG', DiffusionNFT). Other values: the RL branch's own scale. Each step is "
    "then CFG(base; cfg) + w * (CFG(rl; rl_cfg) - CFG(base; cfg))."
)
_OUTSIDE_TOOLTIP = (
    "What this RL model does at the steps outside its window. 'RL model': the RL model alone there (its scale is 1; "
    "the base is not run), as the reference code's zero_init_step. 'off': it adds nothing there (its scale is 0), "
    "so with one RL model the base runs alone."
)
_RL_EVERY_TOOLTIP = (
    "Run the RL model only at every n-th step of its window (its first step always) and estimate its correction "
    "rl - base at the others from its last two evaluations, where only the base runs. 1 = every step, exact "
    "(default). 2 or 3 cost about 0.75 or 0.68 of base + RL at a small change of the image (docs/rl-every.md)."
)


def scale_input(name: str = "rlg_scale", default: float = 1.5, tooltip: str = _SCALE_TOOLTIP,
                optional: bool = False) -> io.Float.Input:
    return io.Float.Input(name, default=default, min=SCALE.low, max=SCALE.high, step=0.05, round=0.001,
                          optional=optional, tooltip=tooltip)


def window_inputs(start_tooltip: str = _START_TOOLTIP, end_tooltip: str = _END_TOOLTIP) -> list:
    return [
        io.Float.Input("start_percent", default=PERCENT.low, min=PERCENT.low, max=PERCENT.high, step=0.01,
                       round=0.001, tooltip=start_tooltip),
        io.Float.Input("end_percent", default=PERCENT.high, min=PERCENT.low, max=PERCENT.high, step=0.01, round=0.001,
                       tooltip=end_tooltip),
    ]


def term_inputs(start_tooltip: str = _START_TOOLTIP, end_tooltip: str = _END_TOOLTIP) -> list:
    """rlg_scale and the window."""
    return [scale_input(), *window_inputs(start_tooltip, end_tooltip)]


def ramp_inputs() -> list:
    """Optional, after the required widgets so workflows saved before them load with the same values."""
    return [
        io.Combo.Input("schedule", options=[s.value for s in Schedule], default=Schedule.CONSTANT.value, optional=True,
                       tooltip=_SCHEDULE_TOOLTIP),
        scale_input("end_scale", default=1.0, tooltip=_END_SCALE_TOOLTIP, optional=True),
        io.Float.Input("rl_cfg", default=0.0, min=CFG.low, max=CFG.high, step=0.1, round=0.01, optional=True,
                       tooltip=_RL_CFG_TOOLTIP),
    ]


def outside_window_input(default: OutsideWindow) -> io.Combo.Input:
    return io.Combo.Input("outside_window", options=[o.value for o in OutsideWindow], default=default.value,
                          optional=True, tooltip=_OUTSIDE_TOOLTIP)


def rl_every_input() -> io.Int.Input:
    return io.Int.Input("rl_every", default=int(RL_EVERY.low), min=int(RL_EVERY.low), max=int(RL_EVERY.high),
                        optional=True, tooltip=_RL_EVERY_TOOLTIP)


def cfg_input() -> io.Float.Input:
    return io.Float.Input("cfg", default=4.5, min=CFG.low, max=CFG.high, step=0.1, round=0.01,
                          tooltip="Classifier-free guidance scale (the base's; see rl_cfg for the RL branch).")


def validate_window(start_percent=None, end_percent=None) -> bool | str:
    """The window's check when the prompt is queued, before anything runs (a node's validate_inputs).

    A linked value arrives as None and is checked when the node runs. A node that names start_percent and
    end_percent in its validate_inputs switches off ComfyUI's own min / max check for them, so their range is
    checked here too (check_window). ComfyUI shows the message once for each input the signature names.
    """
    try:
        if start_percent is not None and end_percent is not None:
            check_window(start_percent, end_percent)
        elif start_percent is not None or end_percent is not None:
            check_window(*((start_percent, PERCENT.high) if end_percent is None else (PERCENT.low, end_percent)))
    except RLGInputError as err:
        return str(err)
    return True
