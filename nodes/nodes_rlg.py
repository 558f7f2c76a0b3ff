"""RLG Apply and RLG Guider: the pack's nodes (V3 schema)."""

from __future__ import annotations

import comfy.samplers
from comfy_api.latest import io

from .apply import apply_rlg

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


def _pair_inputs() -> list:
    return [io.Model.Input("model", tooltip=_MODEL_TOOLTIP), io.Model.Input("rl_model", tooltip=_RL_MODEL_TOOLTIP)]


def _rlg_inputs() -> list:
    return [
        io.Float.Input("rlg_scale", default=1.5, min=-10.0, max=10.0, step=0.05, round=0.001,
                       tooltip=_SCALE_TOOLTIP),
        io.Float.Input("start_percent", default=0.0, min=0.0, max=1.0, step=0.01, round=0.001,
                       tooltip=_START_TOOLTIP),
        io.Float.Input("end_percent", default=1.0, min=0.0, max=1.0, step=0.01, round=0.001,
                       tooltip=_END_TOOLTIP),
    ]


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
            inputs=[*_pair_inputs(), *_rlg_inputs()],
            outputs=[io.Model.Output(tooltip="The base model with RLG attached; use it like any model.")],
        )

    @classmethod
    def execute(cls, model, rl_model, rlg_scale, start_percent, end_percent) -> io.NodeOutput:
        return io.NodeOutput(apply_rlg(model, rl_model, rlg_scale, start_percent, end_percent))


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
                io.Float.Input("cfg", default=4.5, min=0.0, max=100.0, step=0.1, round=0.01,
                               tooltip="Classifier-free guidance scale, applied to the blended predictions."),
                *_rlg_inputs(),
            ],
            outputs=[io.Guider.Output(tooltip="Connect to SamplerCustomAdvanced.")],
        )

    @classmethod
    def execute(cls, model, rl_model, positive, negative, cfg, rlg_scale, start_percent, end_percent) -> io.NodeOutput:
        guider = comfy.samplers.CFGGuider(apply_rlg(model, rl_model, rlg_scale, start_percent, end_percent))
        guider.set_conds(positive, negative)
        guider.set_cfg(cfg)
        return io.NodeOutput(guider)


NODES = [RLGApply, RLGGuider]
