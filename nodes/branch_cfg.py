"""CFG per branch, second half: the pre-CFG function that gives RL branches their own CFG scale.

ComfyUI glue. The step (step.py) cannot know the sampler's cfg; pre-CFG functions get it as cond_scale, right
after calc_cond_batch. The step leaves what the RL branches with their own cfg need here, and this turns each
into its equivalent cond (rlg_math.with_branch_cfg). It is put first among the pre-CFG functions, so every other
CFG patch sees the finished pair.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import torch

from .errors import RLGRuntimeError
from .rlg_math import with_branch_cfg


@dataclass
class PendingBranches:
    """What one step leaves for the pre-CFG function: its outputs and each own-cfg RL branch."""

    model_options: dict
    out: list
    base_uncond: torch.Tensor
    terms: list  # (weight, rl cond, rl uncond or None, rl_cfg)


class BranchCFG:
    """The pre-CFG function RLG puts first in model_options["sampler_pre_cfg_function"] when a term has rl_cfg."""

    def __init__(self):
        self._local = threading.local()

    def __deepcopy__(self, memo):  # ComfyUI 0.3.75 / 0.8.0 deep-copy model_options on clone: stay one object
        return self

    def leave(self, pending: PendingBranches) -> None:
        self._local.pending = pending

    def check_nothing_left(self, model_options: dict) -> None:
        pending = getattr(self._local, "pending", None)
        if pending is not None and pending.model_options is model_options:
            self._local.pending = None
            raise RLGRuntimeError(
                "RLG: an RL model with its own rl_cfg needs a sampler or guider that applies CFG through ComfyUI's "
                "standard sampling function (KSampler, CFGGuider, RLG Guider); this one did not. Set rl_cfg to 0 "
                "(same as cfg) or use one of those.")
        self._local.pending = None

    def __call__(self, args: dict) -> list:
        pending = getattr(self._local, "pending", None)
        conds_out = args["conds_out"]
        if pending is None:
            return conds_out
        self._local.pending = None
        if conds_out is not pending.out:
            raise RLGRuntimeError(
                "RLG: another node changed the predictions between RLG and CFG, so rl_cfg cannot be applied. "
                "Connect that node before RLG Apply, or set rl_cfg to 0 (same as cfg).")
        cond = with_branch_cfg(conds_out[0], pending.base_uncond, pending.terms, float(args["cond_scale"]))
        return [cond, *conds_out[1:]]
