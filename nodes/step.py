"""Where each sampling step's blend happens: RLGCondBatchWrapper.__call__.

ComfyUI glue. RLG hooks the CALC_COND_BATCH wrapper chain of the model it returns: for every step (and every
extra pass other nodes make, such as PAG's), ComfyUI asks for the denoised predictions of all conds at once.
The wrapper evaluates the base through the rest of the chain and each RL model in its form (rl_passes.py),
and returns base + sum_i w_i (rl_i - base) for each cond, before pre-CFG functions and CFG see it. Wrappers
stack, so other packs' wrappers keep working.

With rl_every = n > 1 an RL model is evaluated at every n-th step of its window, its first step included;
at the other calls its correction rl - base is estimated from its last evaluations (rlg_math.CorrectionHistory)
and only the base runs. The estimates live in one RunState per sampling run and thread, dropped when the run
ends (the patcher's cleanup, which ComfyUI runs even when a run is interrupted) and reset at the window's first
step, so nothing crosses runs, prompts or threads.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from .branch_cfg import BranchCFG, PendingBranches
from .errors import RLGRuntimeError
from .model_pair import PairForm
from .rl_passes import ModelPasses, RLTerm
from .rlg_math import (
    CorrectionHistory,
    SigmaWindow,
    StepPlan,
    combine,
    evaluates_at,
    first_step_in,
    plan_step,
    schedule_index,
    sigma_to_percent,
    term_weight,
)
from .step_caches import CacheStates

if TYPE_CHECKING:
    from comfy.model_base import BaseModel


@dataclass
class RunState:
    """What RLG keeps for one sampling run in one thread."""

    options: dict  # the run's own model_options (the sampler passes this dict at every step)
    sample_sigmas: object  # the run's schedule, as the sampler gave it
    schedule: list[float]
    percents: dict[float, float] = field(default_factory=dict)
    histories: dict[int, CorrectionHistory] = field(default_factory=dict)
    encoded: dict = field(default_factory=dict)  # conds as an RL model encodes them itself (rl_passes.own_conds)
    caches: CacheStates = field(default_factory=CacheStates)  # each RL model's own step-cache state (step_caches)

    def history(self, k: int) -> CorrectionHistory:
        return self.histories.setdefault(k, CorrectionHistory())


class RLGCondBatchWrapper:
    """The CALC_COND_BATCH wrapper RLG installs; one per RLG node."""

    def __init__(self, terms: list[RLTerm], batched: bool = True, branch_cfg: BranchCFG | None = None):
        self.terms = terms
        self.passes = ModelPasses(terms, batched)
        self.branch_cfg = branch_cfg
        self._local = threading.local()

    # -- the step ---------------------------------------------------------------------------------
    def __call__(self, executor: Callable, model: BaseModel, conds: Sequence, x_in: torch.Tensor,
                 timestep: torch.Tensor, model_options: dict) -> list[torch.Tensor]:
        if all(term.pair.form is PairForm.IDENTICAL for term in self.terms):
            return executor(model, conds, x_in, timestep, model_options)
        run = self._run(model_options, x_in)
        sigma = float(timestep.flatten()[0])
        plan = plan_step([self._weight(k, sigma, model, run) for k in range(len(self.terms))])
        if not plan.terms:  # every RL model is off here: the base alone
            return executor(model, conds, x_in, timestep, model_options)

        own_cfg, term_conds = self._branches(plan, conds, model_options)
        estimated = self._estimated(plan, sigma, model, run, model_options, term_conds, x_in)
        run_base = plan.run_base or bool(own_cfg) or bool(estimated)  # CFG per branch is built on the base's uncond
        evaluated = {k: term_conds[k] for k, _ in plan.terms if k not in estimated}
        base_out, rl_out = self.passes.evaluate(executor, model, conds, evaluated, x_in, timestep, model_options,
                                                run_base, run.encoded, run.caches)
        rl_out.update(self._corrections(plan, sigma, model, run, model_options, term_conds, base_out, rl_out,
                                        estimated))

        out = []
        for i in range(len(conds)):
            # A branch without CFG has no uncond of its own: it enters the uncond as the base's.
            pairs = [(rl_out[k][i], w) for k, w in plan.terms if term_conds[k][i] is not None or conds[i] is None]
            out.append(combine(None if base_out is None else base_out[i], [p[0] for p in pairs],
                               [p[1] for p in pairs]))
        if own_cfg:
            terms = [(w, rl_out[k][0], None if term_conds[k][1] is None else rl_out[k][1],
                      self.terms[k].settings.rl_cfg.scale) for k, w in plan.terms if k in own_cfg]
            self.branch_cfg.leave(PendingBranches(model_options, out, base_out[1], terms))
        return out

    # -- what the step runs -----------------------------------------------------------------------
    def _weight(self, k: int, sigma: float, model: BaseModel, run: RunState):
        term = self.terms[k]
        if term.pair.form is PairForm.IDENTICAL:  # the base itself: whatever its scale, it adds nothing
            return None
        return term_weight(term.settings, sigma, self._window(k, model), lambda s: self._percent(s, model, run))

    def _window(self, k: int, model: BaseModel) -> SigmaWindow:
        settings = self.terms[k].settings
        # model_sampling carries the patcher's object patches (shift etc.)
        return SigmaWindow.from_percents(settings.start_percent, settings.end_percent,
                                         model.model_sampling.percent_to_sigma)

    @staticmethod
    def _percent(sigma: float, model: BaseModel, run: RunState) -> float:
        if sigma not in run.percents:
            run.percents[sigma] = sigma_to_percent(sigma, model.model_sampling.percent_to_sigma)
        return run.percents[sigma]

    def _branches(self, plan: StepPlan, conds: Sequence, model_options: dict) -> tuple[list[int], dict[int, list]]:
        """The terms with their own CFG at this call, and the conds each term evaluates."""
        own_cfg = [k for k, _ in plan.terms if self.terms[k].settings.rl_cfg.own]
        if own_cfg and len(conds) > 2:
            raise RLGRuntimeError(
                f"RLG: rl_cfg works with standard CFG (a positive and a negative prompt), but this guider evaluates "
                f"{len(conds)} conditionings (DualCFGGuider, PerpNeg...). Set rl_cfg to 0 (same as cfg) for it.")
        own_cfg = own_cfg if len(conds) == 2 else []
        if own_cfg:
            self.branch_cfg.check_nothing_left(model_options)
        term_conds = {k: list(conds) for k, _ in plan.terms}
        for k in own_cfg:
            if not self.terms[k].settings.rl_cfg.needs_uncond:  # trained without CFG: its uncond is never used
                term_conds[k][1] = None
        return own_cfg, term_conds

    # -- rl_every: the RL correction between evaluations ------------------------------------------
    def _estimated(self, plan: StepPlan, sigma: float, model: BaseModel, run: RunState, model_options: dict,
                   term_conds: dict[int, list], x_in: torch.Tensor) -> set[int]:
        """The terms whose RL pass this call skips, its correction estimated instead.

        Only on the run's own passes (an extra pass of PAG or SLG evaluates every RL model), only where the base
        runs anyway (at w = 1 the RL model alone is one forward, already the least), inside the term's window,
        between its evaluation steps, and where its last evaluation fits these outputs and is fewer than n steps
        back (a step cache that serves RLG's whole step, LazyCache, can skip an evaluation step).
        """
        if model_options is not run.options or not plan.run_base:
            return set()
        out = set()
        for k, _ in plan.terms:
            every = self.terms[k].settings.rl_every
            window = self._window(k, model)
            if every == 1 or not window.contains(sigma):
                continue
            step = schedule_index(sigma, run.schedule)
            if evaluates_at(step, first_step_in(window, run.schedule), every):
                continue
            history = run.history(k)
            if history.points and step is not None:
                last = schedule_index(history.points[-1][0], run.schedule)
                if last is not None and step - last >= every:
                    continue  # steps no call reached (a cache served the whole step): evaluate rather than stretch
            if history.fits(sigma, [None if c is None else x_in for c in term_conds[k]]):
                out.add(k)
        return out

    def _corrections(self, plan: StepPlan, sigma: float, model: BaseModel, run: RunState, model_options: dict,
                     term_conds: dict[int, list], base_out, rl_out: dict, estimated: set[int]) -> dict[int, list]:
        """Record each rl_every term's correction where it was evaluated; the estimated terms' outputs."""
        if base_out is None or model_options is not run.options:
            return {}
        out = {}
        for k, _ in plan.terms:
            if self.terms[k].settings.rl_every == 1:
                continue
            history = run.history(k)
            if k in estimated:
                out[k] = [b if d is None else b + d for b, d in zip(base_out, history.estimate(sigma), strict=True)]
                continue
            window = self._window(k, model)
            if not window.contains(sigma):
                continue
            if schedule_index(sigma, run.schedule) == first_step_in(window, run.schedule):
                history.reset()  # the window starts again: nothing from before it counts
            # A cond the term did not evaluate (an uncond skipped at cfg 1, a branch without CFG) has no correction.
            history.record(sigma, [None if c is None else r - b
                                   for c, r, b in zip(term_conds[k], rl_out[k], base_out, strict=True)])
        return out

    # -- the sampling run -------------------------------------------------------------------------
    def _run(self, model_options: dict, x_in: torch.Tensor) -> RunState:
        """This thread's sampling run: the one under way, or a new one (another options dict and schedule)."""
        run = getattr(self._local, "run", None)
        sigmas = model_options.get("transformer_options", {}).get("sample_sigmas")
        if run is None or (run.options is not model_options and (sigmas is None or run.sample_sigmas is not sigmas)):
            self._check_rows(x_in)
            self.passes.check_run(model_options)
            schedule = [] if sigmas is None else [float(s) for s in sigmas.flatten()]
            run = RunState(model_options, sigmas, schedule)
            self._local.run = run
        return run

    def end_run(self, patcher=None) -> None:
        """The patcher's cleanup (CallbacksMP.ON_CLEANUP), after every sampling run: drop this thread's run.

        A step cache that logs what it did for the base (EasyCache) gets the same line for each RL model first.
        """
        run = getattr(self._local, "run", None)
        self._local.run = None
        if run is not None and run.caches.states:
            run.caches.finish({k: term.label for k, term in enumerate(self.terms)}, max(len(run.schedule) - 1, 0))

    def _check_rows(self, x_in: torch.Tensor) -> None:
        for term in self.terms:
            scale = term.settings.scale
            if isinstance(scale, torch.Tensor) and scale.numel() != x_in.shape[0]:
                raise RLGRuntimeError(
                    f"RLG Scale Sweep: its MODEL samples {scale.numel()} rows (a scale per row) but the sampler got a "
                    f"latent of {x_in.shape[0]}; connect the sweep's LATENT output to the sampler's latent_image.")
