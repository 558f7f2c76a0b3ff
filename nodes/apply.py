"""Putting RLG on a model: what the nodes call."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from .model_pair import build_pair, describe_model
from .rlg_math import RLGInputError, TermSpec, check_scale, check_window
from .rlg_sampling import BranchCFG, RLGCondBatchWrapper, RLTerm, install

log = logging.getLogger("ComfyUI-RLG")


def check_term(spec: TermSpec, name: str = "") -> TermSpec:
    """The term with its inputs checked; `name` prefixes input names in messages (several RL models)."""
    scale = spec.scale if not isinstance(spec.scale, float | int) else check_scale(spec.scale, f"{name}rlg_scale")
    try:
        start, end = check_window(spec.start_percent, spec.end_percent)
    except RLGInputError as err:
        raise RLGInputError(f"{name}{err}") from None
    end_scale = None if spec.end_scale is None else check_scale(spec.end_scale, f"{name}end_scale")
    rl_cfg = spec.rl_cfg
    if rl_cfg is not None:
        rl_cfg = float(rl_cfg)
        if not 0.0 < rl_cfg <= 100.0:
            raise RLGInputError(f"{name}rl_cfg is {spec.rl_cfg!r}; use 0 for the sampler's cfg, 1 for an RL model "
                                "trained without CFG, or the RL branch's own CFG scale (up to 100).")
    return TermSpec(scale, start, end, spec.schedule, end_scale, rl_cfg)


def apply_rlg(model: Any, rl_model: Any, rlg_scale: float, start_percent: float, end_percent: float,
              batched: bool | None = None, schedule: str = "constant", end_scale: float | None = None,
              rl_cfg: float | None = None) -> Any:
    """Return a clone of `model` that samples base + w * (rl - base) at every step (RLG Apply).

    Outside [start_percent, end_percent] the RL model runs alone, as the reference code's
    zero_init_step does. w is rlg_scale, or a ramp to end_scale across the window (schedule);
    rl_cfg gives the RL branch its own CFG scale (None: the sampler's). The inputs are left as they
    were: the patches go on a clone, as with every ComfyUI model patch node. Raises RLGInputError (a
    ValueError naming the input) for unusable inputs.

    batched=True evaluates base and a LoRA RL model in one forward of twice the batch where hooks
    run the LoRA exactly, batched=False in two forwards; None batches where that pays, off the CPU
    (ComfyUI's own batch splitting keeps the doubled batch within free VRAM).
    """
    return apply_rlg_spec(model, rl_model, TermSpec(rlg_scale, start_percent, end_percent, schedule, end_scale, rl_cfg),
                          batched)


def apply_rlg_spec(model: Any, rl_model: Any, spec: TermSpec, batched: bool | None = None) -> Any:
    """apply_rlg with the settings as one TermSpec (what the nodes build from their inputs)."""
    spec = check_term(spec)
    pair = build_pair(model, rl_model)
    _check_adds_something(model, rl_model, pair, "rl_model")
    return _attach(model, [RLTerm(spec, pair)], rl_alone_outside=True, batched=batched)


def apply_rlg_terms(model: Any, terms: Sequence[tuple[Any, TermSpec]], batched: bool | None = None) -> Any:
    """Return a clone of `model` that samples base + sum_i w_i (rl_i - base) (RLG Apply, several RL models).

    terms: (rl_model, its settings), in the order the user chained them. A term outside its window
    is off; a step where every term is off runs the base alone.
    """
    if not terms:
        raise RLGInputError("rl_models is empty: connect at least one RLG RL Model node.")
    built, seen = [], {}
    for i, (rl_model, spec) in enumerate(terms, start=1):
        name = f"RL model {i}"
        checked = check_term(spec, f"{name}: ")
        pair = build_pair(model, rl_model, rl_input=f"rl_models ({name})")
        _check_adds_something(model, rl_model, pair, f"rl_models ({name})")
        if id(rl_model) in seen:
            log.warning("RLG: %s is the same RL model as %s; their scales add up.", name, seen[id(rl_model)])
        seen.setdefault(id(rl_model), name)
        built.append(RLTerm(checked, pair, label=name))
    return _attach(model, built, rl_alone_outside=False, batched=batched)


def _check_adds_something(model: Any, rl_model: Any, pair: Any, rl_input: str) -> None:
    """An RL model that adds nothing to the base: fine when it is the base itself, an error otherwise.

    The very same model (the RL LoRA loader bypassed, or at strength 0) is a deliberate comparison, and
    RLG runs the base alone. A copy of the base with nothing added is what a LoRA loader returns when
    none of the LoRA's keys matched the model: sampling would silently be the base.
    """
    if pair.mode != "identical":
        return
    if rl_model is model:
        log.warning("RLG: %s is the base model itself (a bypassed RL LoRA loader?), so RLG runs the base alone.",
                    rl_input)
        return
    raise RLGInputError(
        f"{rl_input} adds nothing to model ({describe_model(model)}): if it comes from a LoRA loader, none of the "
        "LoRA's keys matched this model (the console lists them as 'lora key not loaded'). Pick the RL LoRA made for "
        "this base model, or load it with Load LoRA (PEFT aware), which names the problem.")


def _attach(model: Any, terms: list[RLTerm], rl_alone_outside: bool, batched: bool | None) -> Any:
    if batched is None:
        batched = model.load_device.type != "cpu"
    branch_cfg = BranchCFG() if any(term.spec.rl_cfg is not None for term in terms) else None
    patched = model.clone()
    install(patched, RLGCondBatchWrapper(terms, rl_alone_outside=rl_alone_outside, batched=batched,
                                         branch_cfg=branch_cfg))
    return patched
