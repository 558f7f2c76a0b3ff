"""Several RL models at once: RLG RL Model (one RL model of the set), RLG Apply and RLG Guider over the set.

At every step the prediction is base + sum_i w_i (rl_i - base): each reward dialled on its own.
"""

from __future__ import annotations

from comfy_api.latest import io

from .apply import attach_rlg
from .nodes_rlg import CATEGORY, cfg_guider, warn_if_same_model
from .settings import OutsideWindow, RLGSettings
from .widgets import cfg_input, outside_window_input, ramp_inputs, rl_every_input, term_inputs, validate_window

RLModels = io.Custom("RLG_RL_MODELS")

_RL_MODELS_TOOLTIP = (
    "The RL models to blend with the base, each with its own scale and window: a chain of RLG RL Model nodes."
)
_TERM_START_TOOLTIP = (
    "Where in the schedule this RL model starts to count (0 = first step). Outside its window: see outside_window "
    "(by default it is not run and adds nothing; where no RL model counts, the base model runs alone)."
)
_TERM_END_TOOLTIP = "Where in the schedule this RL model stops counting (1 = last step)."


class RLGRLModel(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="RLGRLModel",
            display_name="RLG RL Model",
            category=CATEGORY,
            description=(
                "One RL model for RLG Apply (several RL models): the RL model, its scale and its window. Chain "
                "these nodes (rl_models in, rl_models out) to dial several rewards on one base at once."
            ),
            inputs=[
                io.Model.Input("rl_model", tooltip=(
                    "An RL-tuned twin of the base: a checkpoint or diffusion-model file, or the base model through a "
                    "LoRA loader with the RL LoRA.")),
                *term_inputs(_TERM_START_TOOLTIP, _TERM_END_TOOLTIP),
                *ramp_inputs(),
                RLModels.Input("rl_models", optional=True,
                               tooltip="The RL models so far (from another RLG RL Model); this one is added to them."),
                outside_window_input(OutsideWindow.OFF),
                rl_every_input(),
            ],
            outputs=[RLModels.Output(tooltip="The RL models so far, with this one added.")],
        )

    @classmethod
    def validate_inputs(cls, start_percent=None, end_percent=None):
        return validate_window(start_percent, end_percent)

    @classmethod
    def execute(cls, rl_model, rlg_scale, start_percent, end_percent, schedule="constant", end_scale=1.0,
                rl_cfg=0.0, rl_models=None, outside_window=OutsideWindow.OFF.value, rl_every=1) -> io.NodeOutput:
        # Checked here, by this node, not later by the Apply node as "RL model <i>".
        settings = RLGSettings.from_widgets(rlg_scale, start_percent, end_percent, schedule, end_scale, rl_cfg,
                                            outside_window, rl_every)
        return io.NodeOutput((*(rl_models or ()), (rl_model, settings)))  # a new tuple: the input list stays as it was


def _warn_if_base_among(cls, model, rl_models) -> None:
    for i, (rl_model, _) in enumerate(rl_models or (), start=1):
        warn_if_same_model(cls, model, rl_model, f"rl_models (RL model {i})")


def _base_input() -> io.Model.Input:
    return io.Model.Input("model", tooltip="The base model: the model every RL model was fine-tuned from.")


class RLGApplyMulti(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="RLGApplyMulti",
            display_name="RLG Apply (several RL models)",
            category=CATEGORY,
            description=(
                "Reinforcement Learning Guidance with several RL models: at every step base + sum_i w_i (rl_i - base), "
                "for the positive and the negative prompt, before CFG. Each RL model counts only inside its own "
                "window. Connect the output to any sampler or guider; keep RLG last before it."
            ),
            inputs=[_base_input(), RLModels.Input("rl_models", tooltip=_RL_MODELS_TOOLTIP)],
            outputs=[io.Model.Output(tooltip="The base model with RLG attached; use it like any model.")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, model, rl_models) -> io.NodeOutput:
        _warn_if_base_among(cls, model, rl_models)
        return io.NodeOutput(attach_rlg(model, list(rl_models or ()), rl_input="rl_models"))


class RLGGuiderMulti(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="RLGGuiderMulti",
            display_name="RLG Guider (several RL models)",
            category="sampling/custom_sampling/guiders",
            description=(
                "CFG guider with RLG over several RL models, for SamplerCustomAdvanced. Gives the same result as "
                "CFGGuider on the output of RLG Apply (several RL models)."
            ),
            inputs=[
                _base_input(),
                RLModels.Input("rl_models", tooltip=_RL_MODELS_TOOLTIP),
                io.Conditioning.Input("positive", tooltip="What the image should show."),
                io.Conditioning.Input("negative", tooltip="What the image should not show."),
                cfg_input(),
            ],
            outputs=[io.Guider.Output(tooltip="Connect to SamplerCustomAdvanced.")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, model, rl_models, positive, negative, cfg) -> io.NodeOutput:
        _warn_if_base_among(cls, model, rl_models)
        patched = attach_rlg(model, list(rl_models or ()), rl_input="rl_models")
        return io.NodeOutput(cfg_guider(patched, positive, negative, cfg))


NODES = [RLGRLModel, RLGApplyMulti, RLGGuiderMulti]
