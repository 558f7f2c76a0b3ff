"""Running the models one step needs: the base through the rest of ComfyUI's chain, each RL model in its form.

ComfyUI glue, below the step (step.py) and above the RL-model forms (model_pair.py, rl_delta.py):
* separate file: calc_cond_batch on its own module, with its own options (rl_options.py);
* LoRA on the base's module: a forward of the base's module whose RL rows get the LoRA added
  (rl_delta.RLRowsForward). LoRAs that hooks run exactly share one forward with the base's rows where
  batching pays (off the CPU); the others take a forward each.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import comfy.samplers
import torch

from .errors import RLGRuntimeError
from .model_pair import PairForm, RLModelPair
from .rl_delta import RLRowsForward, call_with, layers_called
from .rl_options import batchable, rl_model_options, with_apply_wrapper
from .settings import RLGSettings
from .step_caches import CacheStates, cache_named, own_states, separate_model_refusal

if TYPE_CHECKING:
    from comfy.model_base import BaseModel

log = logging.getLogger("ComfyUI-RLG")

Outputs = list[torch.Tensor]


@dataclass
class RLTerm:
    """One RL model in the blend: what the user set, and how the model runs."""

    settings: RLGSettings
    pair: RLModelPair
    label: str = "rl_model"


class ModelPasses:
    """Evaluates the base and the RL models for one calc_cond_batch call."""

    def __init__(self, terms: Sequence[RLTerm], batched: bool):
        self.terms = terms
        self.batched = batched
        self._rows_key = f"rlg_rl_rows_{id(self):x}"
        self._notified: set[str] = set()
        self._solo: set[int] = set()  # LoRA terms whose rows a hook could not pick out of a shared forward
        self._late_patches_checked_for: int | None = None  # id of the sampled patcher last checked
        # The sampler passes the same model_options dict at every step of a run: each RL model's options are
        # built once per dict, not once per step.
        self._options: dict[int, tuple[dict, dict]] = {}

    def evaluate(self, executor: Callable, model: BaseModel, conds: Sequence, term_conds: dict[int, list],
                 x_in: torch.Tensor, timestep: torch.Tensor, model_options: dict, run_base: bool,
                 encoded: dict | None = None, caches: CacheStates | None = None
                 ) -> tuple[Outputs | None, dict[int, Outputs]]:
        """(the base's outputs or None, {term: its outputs}) for the terms in term_conds.

        encoded: the sampling run's cache of conds an RL model encodes differently (own_conds), or None.
        caches: the sampling run's step-cache states of the RL models (step_caches.py), or None.
        """
        if encoded is not None:
            term_conds = {k: self.own_conds(k, model, c, x_in, encoded) for k, c in term_conds.items()}
        shared = [k for k in term_conds if self.terms[k].pair.form is PairForm.SHARED]
        separate = [k for k in term_conds if self.terms[k].pair.form is PairForm.SEPARATE]
        together = []
        if self.batched and batchable(model_options):
            together = [k for k in shared if k not in self._solo
                        and not self.terms[k].pair.own_options and self.terms[k].pair.delta.hooks_only]
        if len(together) + run_base < 2:
            together = []
        base_out, rl_out = None, {}

        if together:  # the base's rows and these RL models' rows in one forward
            segments = ([(0, list(conds))] if run_base else []) + [(k + 1, term_conds[k]) for k in together]
            owner = [term for term, seg in segments for _ in seg]
            flat = [c for _, seg in segments for c in seg]
            outs = self._shared_forward(executor, model, flat, x_in, timestep, model_options,
                                        {k + 1: self.terms[k].pair.delta for k in together},
                                        lambda c: owner[c], own_options=None)
            start = 0
            for term, seg in segments:
                part = outs[start:start + len(seg)]
                start += len(seg)
                if term == 0:
                    base_out = part
                else:
                    rl_out[term - 1] = part
        if run_base and base_out is None:
            base_out = executor(model, conds, x_in, timestep, model_options)
        for k in shared:
            if k not in rl_out:
                pair = self.terms[k].pair
                rl_out[k] = self._shared_forward(executor, model, term_conds[k], x_in, timestep, model_options,
                                                 {k + 1: pair.delta}, lambda c, k=k: k + 1,
                                                 own_options=k if pair.own_options else None, term=k, caches=caches)
        for k in separate:
            rl_out[k] = self._separate_forward(model, k, term_conds[k], x_in, timestep, model_options, caches)
        return base_out, rl_out

    def _shared_forward(self, executor, model, conds, x_in, timestep, model_options, deltas, term_of_cond,
                        own_options: int | None, term: int | None = None, caches: CacheStates | None = None
                        ) -> Outputs:
        """A forward of the base's module where the rows of each RL model get its delta (rl_delta.py).

        term: the one RL model whose rows these all are, whose step caches then hold its own state; None for a
        forward shared by several models (only ever made without a step cache: rl_options.batchable).
        """
        options = model_options if own_options is None else self.options_for(own_options, model_options)
        rows = RLRowsForward(deltas, term_of_cond, self.notify, on_shared_misfit=lambda term: self._solo.add(term - 1),
                             single_forward=cache_named(options))
        with own_states(options, caches if term is not None else None, term, model) as options:
            if own_options is None:  # the RL model needs nothing but its weights: the base's own chain
                return executor(model, conds, x_in, timestep, with_apply_wrapper(options, self._rows_key, rows))
            return comfy.samplers.calc_cond_batch(model, conds, x_in, timestep,
                                                  with_apply_wrapper(options, self._rows_key, rows))

    def _separate_forward(self, model, k, conds, x_in, timestep, model_options, caches: CacheStates | None) -> Outputs:
        rl = self.terms[k].pair.rl_patcher
        options = self.options_for(k, model_options)
        # Additional models do not get pre_run() from the sampler, and _calc_cond_batch reads
        # model.current_patcher; the sampler's cleanup of additional models undoes this.
        if getattr(rl.model, "current_patcher", None) is not rl:
            rl.pre_run()
        self._warn_if_patched_after(model)
        with own_states(options, caches, k, rl.model) as options:
            return comfy.samplers.calc_cond_batch(rl.model, conds, x_in, timestep, options)

    def own_conds(self, k: int, model: BaseModel, conds: list, x_in: torch.Tensor, encoded: dict) -> list:
        """The conds of term k as its RL model would have encoded them itself.

        ComfyUI encodes the conds once, with the sampled (base) model's extra_conds. For most families that is a
        function of the inputs alone. Newest ComfyUI runs some networks' own text connectors there (LTX-2, Anima,
        MiniMax H3: diffusion_model.preprocess_text_embeds), so a separate RL model with other connectors, or a LoRA
        on them, needs its own encoding: both models encode each cond from the same inputs, and what the RL model
        computes differently replaces the base's. Once per cond and sampling run (encoded is the run's cache).
        """
        pair = self.terms[k].pair
        if not hasattr(model.diffusion_model, "preprocess_text_embeds") or pair.form is PairForm.IDENTICAL:
            return conds
        out = []
        for group in conds:
            if group is None:
                out.append(None)
                continue
            new_group = []
            for cond in group:
                key = (k, id(cond))
                if key not in encoded or encoded[key][0] is not cond:
                    encoded[key] = (cond, self._encoded_by_rl(k, model, cond, x_in))
                new_group.append(encoded[key][1])
            out.append(new_group)
        return out

    def _encoded_by_rl(self, k: int, model: BaseModel, cond: dict, x_in: torch.Tensor) -> dict:
        pair = self.terms[k].pair
        params = dict(cond, device=x_in.device, noise=torch.zeros_like(x_in))
        if x_in.ndim >= 4:  # as comfy.samplers.encode_model_conds sets them
            params.setdefault("width", x_in.shape[3] * 8)
            params.setdefault("height", x_in.shape[2] * 8)
        if pair.form is PairForm.SEPARATE:
            base_enc, rl_enc = model.extra_conds(**params), pair.rl_patcher.model.extra_conds(**params)
        else:
            base_enc, layers = layers_called(model, pair.delta, lambda: model.extra_conds(**params))
            if not layers:  # the LoRA touches nothing that runs while encoding
                return cond
            rl_enc = call_with(model, layers, pair.delta.label, lambda: model.extra_conds(**params))
        differing = {name: value for name, value in rl_enc.items()
                     if name not in base_enc or not _same_cond(base_enc[name], value)}
        if not differing:
            return cond
        return dict(cond, model_conds={**cond.get("model_conds", {}), **differing})

    def check_run(self, model_options: dict) -> None:
        """At the start of a sampling run, before any forward: what the run's options make impossible stops here."""
        for k, term in enumerate(self.terms):
            if term.pair.form is PairForm.SEPARATE:
                self.options_for(k, model_options)

    def options_for(self, k: int, model_options: dict) -> dict:
        cached = self._options.get(k)
        if cached is None or cached[0] is not model_options:
            term = self.terms[k]
            options = rl_model_options(term.pair, model_options)
            if term.pair.form is PairForm.SEPARATE:
                refusal = separate_model_refusal(model_options, options, term.pair.base_options or {}, term.label)
                if refusal:
                    raise RLGRuntimeError("RLG: " + refusal)
            cached = (model_options, options)
            self._options[k] = cached
        return cached[1]

    def notify(self, message: str) -> None:
        if message not in self._notified:
            self._notified.add(message)
            log.warning(message)

    def _warn_if_patched_after(self, model: Any) -> None:
        """Weight patches added to the base after RLG Apply do not reach a separate RL model."""
        patcher = getattr(model, "current_patcher", None)
        if patcher is None or id(patcher) == self._late_patches_checked_for:
            return
        self._late_patches_checked_for = id(patcher)
        if any(term.pair.form is PairForm.SEPARATE and any(len(v) > term.pair.base_patch_keys.get(key, 0)
                                                           for key, v in getattr(patcher, "patches", {}).items())
               for term in self.terms):
            log.warning(
                "RLG: weight patches (LoRAs) were connected after RLG Apply; they change only the "
                "base model, not rl_model. Connect them before RLG Apply, to both models."
            )


def _same_cond(a, b) -> bool:
    """Whether two encoded conds (comfy.conds.CONDRegular and kin, or plain values) hold the same value."""
    a, b = getattr(a, "cond", a), getattr(b, "cond", b)
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b)
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001  (values without a plain equality: treat as different, the RL model's own)
        return False
