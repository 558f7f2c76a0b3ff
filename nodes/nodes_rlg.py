"""RLG Apply and RLG Guider: RLG with one RL model (V3 schema)."""

from __future__ import annotations

import comfy.samplers
from comfy_api.latest import io

from .apply import attach_rlg
from .server_hooks import warn
from .settings import OutsideWindow, RLGSettings
from .widgets import cfg_input, outside_window_input, ramp_inputs, rl_every_input, term_inputs, validate_window

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


def pair_inputs() -> list:
    return [io.Model.Input("model", tooltip=_MODEL_TOOLTIP), io.Model.Input("rl_model", tooltip=_RL_MODEL_TOOLTIP)]


def warn_if_same_model(cls, model, rl_model, rl_input: str = "rl_model") -> None:
    """The very same model in both inputs is allowed (RLG then runs the base alone), but the user should know."""
    if rl_model is model:
        warn(getattr(getattr(cls, "hidden", None), "unique_id", None),
             f"{rl_input} is model: {'RLG has' if rl_input == 'rl_model' else 'that RL model has'} no effect (the "
             f"base model alone at every rlg_scale). Connect the RL model to {rl_input}: model through the RL LoRA "
             "loader, or the RL checkpoint.")


def one_model_inputs() -> list:
    """The settings of RLG Apply and RLG Guider: one RL model, by default the RL model alone outside its window."""
    return [*term_inputs(), *ramp_inputs(), outside_window_input(OutsideWindow.RL_MODEL), rl_every_input()]


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
            inputs=[*pair_inputs(), *one_model_inputs()],
            outputs=[io.Model.Output(tooltip="The base model with RLG attached; use it like any model.")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def validate_inputs(cls, start_percent=None, end_percent=None):
        return validate_window(start_percent, end_percent)

    @classmethod
    def execute(cls, model, rl_model, rlg_scale, start_percent, end_percent, schedule="constant", end_scale=1.0,
                rl_cfg=0.0, outside_window=OutsideWindow.RL_MODEL.value, rl_every=1) -> io.NodeOutput:
        settings = RLGSettings.from_widgets(rlg_scale, start_percent, end_percent, schedule, end_scale, rl_cfg,
                                            outside_window, rl_every)
        warn_if_same_model(cls, model, rl_model)
        return io.NodeOutput(attach_rlg(model, [(rl_model, settings)]))


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
                *pair_inputs(),
                io.Conditioning.Input("positive", tooltip="What the image should show."),
                io.Conditioning.Input("negative", tooltip="What the image should not show."),
                cfg_input(),
                *one_model_inputs(),
            ],
            outputs=[io.Guider.Output(tooltip="Connect to SamplerCustomAdvanced.")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def validate_inputs(cls, start_percent=None, end_percent=None):
        return validate_window(start_percent, end_percent)

    @classmethod
    def execute(cls, model, rl_model, positive, negative, cfg, rlg_scale, start_percent, end_percent,
                schedule="constant", end_scale=1.0, rl_cfg=0.0, outside_window=OutsideWindow.RL_MODEL.value,
                rl_every=1) -> io.NodeOutput:
        settings = RLGSettings.from_widgets(rlg_scale, start_percent, end_percent, schedule, end_scale, rl_cfg,
                                            outside_window, rl_every)
        warn_if_same_model(cls, model, rl_model)
        return io.NodeOutput(cfg_guider(attach_rlg(model, [(rl_model, settings)]), positive, negative, cfg))


def cfg_guider(patched, positive, negative, cfg) -> comfy.samplers.CFGGuider:
    guider = comfy.samplers.CFGGuider(patched)
    guider.set_conds(positive, negative)
    guider.set_cfg(cfg)
    return guider


NODES = [RLGApply, RLGGuider]
