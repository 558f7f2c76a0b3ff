"""RLG Apply and RLG Guider: the pack's nodes (V3 schema), and the inputs every RLG node shares."""

from __future__ import annotations

import comfy.samplers
from comfy_api.latest import io

from .apply import apply_rlg_spec
from .rlg_math import SCALE_LIMIT, SCHEDULE_SHAPES, RLGInputError, TermSpec

CATEGORY = "model_patches/rlg"

_MODEL_TOOLTIP = (
    "The base model: the model the RL-tuned one was fine-tuned from (or that model with your "
    "own LoRAs already applied)."
)
_RL_MODEL_TOOLTIP = (
    "The RL-tuned twin of model: a second checkpoint or diffusion-model file (Diffusion-DPO, SPO, "
    "SRPO...), or model passed through a LoRA loader with the RL LoRA (Flow-GRPO, SPO LoRA). Must be "
    "the same architecture as model."
)
_SCALE_TOOLTIP = (
    "How strongly to follow what RL fine-tuning taught. 0 = base model, 1 = RL model, between 0 and 1 "
    "interpolates, above 1 aligns harder than the RL model (like dividing the RL KL coefficient by this "
    "value; the paper uses 1 to 3), below 0 moves away from the reward."
)
_START_TOOLTIP = (
    "Where in the schedule the blend starts (0 = first step, 1 = last). Before it, the RL model is used "
    "alone and the base model is not run at all (the reference code's zero_init_step)."
)
_END_TOOLTIP = (
    "Where in the schedule the blend ends (0 = first step, 1 = last). After it, the RL model is used "
    "alone and the base model is not run at all."
)


_SCHEDULE_TOOLTIP = (
    "How the scale moves across the window. constant: rlg_scale throughout. linear / cosine: from rlg_scale at "
    "start_percent to end_scale at end_percent, measured in schedule percent (noise level), so every sampler sees "
    "the same scale at the same noise level."
)
_END_SCALE_TOOLTIP = "The scale at end_percent for a linear or cosine schedule (ignored when schedule is constant)."
_RL_CFG_TOOLTIP = (
    "CFG scale of the RL model's branch. 0 = the sampler's cfg, like the base (default). 1 = no CFG, for RL models "
    "trained without it (Flow-GRPO 'no CFG', DiffusionNFT). Other values: the RL branch's own scale. Each step is "
    "then CFG(base; cfg) + w * (CFG(rl; rl_cfg) - CFG(base; cfg))."
)


def _pair_inputs() -> list:
    return [io.Model.Input("model", tooltip=_MODEL_TOOLTIP), io.Model.Input("rl_model", tooltip=_RL_MODEL_TOOLTIP)]


def term_inputs(start_tooltip: str = _START_TOOLTIP, end_tooltip: str = _END_TOOLTIP) -> list:
    """rlg_scale and the window; after them, optional, the ramp and the RL branch's CFG.

    The optional widgets come last so workflows saved before they existed load with the same values.
    """
    return [
        io.Float.Input("rlg_scale", default=1.5, min=-SCALE_LIMIT, max=SCALE_LIMIT, step=0.05, round=0.001,
                       tooltip=_SCALE_TOOLTIP),
        io.Float.Input("start_percent", default=0.0, min=0.0, max=1.0, step=0.01, round=0.001, tooltip=start_tooltip),
        io.Float.Input("end_percent", default=1.0, min=0.0, max=1.0, step=0.01, round=0.001, tooltip=end_tooltip),
    ]


def ramp_inputs() -> list:
    return [
        io.Combo.Input("schedule", options=list(SCHEDULE_SHAPES), default="constant", optional=True,
                       tooltip=_SCHEDULE_TOOLTIP),
        io.Float.Input("end_scale", default=1.0, min=-SCALE_LIMIT, max=SCALE_LIMIT, step=0.05, round=0.001,
                       optional=True, tooltip=_END_SCALE_TOOLTIP),
        io.Float.Input("rl_cfg", default=0.0, min=0.0, max=100.0, step=0.1, round=0.01, optional=True,
                       tooltip=_RL_CFG_TOOLTIP),
    ]


def term_spec(rlg_scale, start_percent, end_percent, schedule="constant", end_scale=1.0, rl_cfg=0.0) -> TermSpec:
    """The node inputs as one RL model's settings (rl_cfg 0 = the sampler's cfg)."""
    if schedule not in SCHEDULE_SHAPES:  # ComfyUI before 0.8 does not check a V3 node's combo values itself
        raise RLGInputError(f"schedule is {schedule!r}; it must be one of {', '.join(SCHEDULE_SHAPES)}.")
    return TermSpec(rlg_scale, start_percent, end_percent, schedule,
                    None if schedule == "constant" else end_scale, None if rl_cfg == 0 else rl_cfg)


class RLGApply(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="RLGApply",
            display_name="RLG Apply",
            category=CATEGORY,
            description=(
                "Reinforcement Learning Guidance: at every step blends the base model and its RL-tuned "
                "twin as base + rlg_scale * (rl - base), for the positive and the negative prompt, "
                "before CFG. Connect the output to any sampler or guider; keep RLG last before it."
            ),
            inputs=[*_pair_inputs(), *term_inputs(), *ramp_inputs()],
            outputs=[io.Model.Output(tooltip="The base model with RLG attached; use it like any model.")],
        )

    @classmethod
    def execute(cls, model, rl_model, rlg_scale, start_percent, end_percent, schedule="constant", end_scale=1.0,
                rl_cfg=0.0) -> io.NodeOutput:
        spec = term_spec(rlg_scale, start_percent, end_percent, schedule, end_scale, rl_cfg)
        return io.NodeOutput(apply_rlg_spec(model, rl_model, spec))


class RLGGuider(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="RLGGuider",
            display_name="RLG Guider",
            category="sampling/custom_sampling/guiders",
            description=(
                "CFG guider with Reinforcement Learning Guidance, for SamplerCustomAdvanced. Gives the "
                "same result as CFGGuider on the output of RLG Apply."
            ),
            inputs=[
                *_pair_inputs(),
                io.Conditioning.Input("positive", tooltip="What the image should show."),
                io.Conditioning.Input("negative", tooltip="What the image should not show."),
                cfg_input(),
                *term_inputs(),
                *ramp_inputs(),
            ],
            outputs=[io.Guider.Output(tooltip="Connect to SamplerCustomAdvanced.")],
        )

    @classmethod
    def execute(cls, model, rl_model, positive, negative, cfg, rlg_scale, start_percent, end_percent,
                schedule="constant", end_scale=1.0, rl_cfg=0.0) -> io.NodeOutput:
        spec = term_spec(rlg_scale, start_percent, end_percent, schedule, end_scale, rl_cfg)
        return io.NodeOutput(cfg_guider(apply_rlg_spec(model, rl_model, spec), positive, negative, cfg))


def cfg_input():
    return io.Float.Input("cfg", default=4.5, min=0.0, max=100.0, step=0.1, round=0.01,
                          tooltip="Classifier-free guidance scale (the base's; see rl_cfg for the RL branch).")


def cfg_guider(patched, positive, negative, cfg) -> comfy.samplers.CFGGuider:
    guider = comfy.samplers.CFGGuider(patched)
    guider.set_conds(positive, negative)
    guider.set_cfg(cfg)
    return guider


NODES = [RLGApply, RLGGuider]
