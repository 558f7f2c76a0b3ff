"""RLG Scale Sweep and RLG Sweep Grid: compare rlg_scale values side by side, from one queue.

RLG's blend is per batch row, so one sampling run can carry a different scale on each row. Every
row starts from the same noise as a batch-1 run with the same seed (ComfyUI's latent batch_index),
so row i is what RLG Apply at scale i gives on that latent with that seed.
"""

from __future__ import annotations

import torch
from comfy_api.latest import io

from .apply import attach_rlg
from .errors import RLGInputError
from .nodes_rlg import CATEGORY
from .settings import OutsideWindow, RLGSettings, parse_scales
from .sweep_grid import scale_label, sweep_grid
from .widgets import rl_every_input, window_inputs

_SCALES_TOOLTIP = (
    "The rlg_scale values to compare, separated by commas (for example 0, 0.5, 1, 1.5, 2, 3). 0 = base model, "
    "1 = RL model, above 1 = stronger alignment."
)


def _validate_scales(scales) -> bool | str:
    """Refuse a bad list when the prompt is queued (a linked value is checked at execution).

    validate_inputs names only `scales`: ComfyUI skips its own min/max checks for the inputs it names.
    """
    try:
        if isinstance(scales, str):
            parse_scales(scales)
    except RLGInputError as err:
        return str(err)
    return True


class RLGScaleSweep(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="RLGScaleSweep",
            display_name="RLG Scale Sweep",
            category=CATEGORY,
            description=(
                "Compare rlg_scale values in one queue: returns a MODEL that samples each batch row at its own scale, "
                "and a LATENT with one row per scale, all from the same starting noise. Sample them with a stock "
                "KSampler, decode, and lay the images out with RLG Sweep Grid."
            ),
            inputs=[
                io.Model.Input("model", tooltip="The base model (the one the RL model was fine-tuned from)."),
                io.Model.Input("rl_model", tooltip=(
                    "The RL-tuned twin of model: a second checkpoint or diffusion-model file, or model passed through "
                    "a LoRA loader with the RL LoRA.")),
                io.Latent.Input("latent", tooltip=(
                    "The latent to sample, usually one image (Empty Latent Image, batch 1). With a batch of n, every "
                    "scale gets all n images: the output holds n rows per scale.")),
                io.String.Input("scales", default="0, 0.5, 1, 1.5, 2, 3", tooltip=_SCALES_TOOLTIP),
                *window_inputs(),  # outside the window: the RL model alone, as RLG Apply by default
                rl_every_input(),
            ],
            outputs=[
                io.Model.Output(tooltip="The base model with RLG at one scale per batch row; connect it to the "
                                        "sampler."),
                io.Latent.Output(tooltip=(
                    "One row per scale (n rows per scale for a batch of n), each starting from the noise a batch-1 run "
                    "with the same seed would use; connect it to the same sampler.")),
            ],
        )

    @classmethod
    def validate_inputs(cls, scales=None):
        return _validate_scales(scales)

    @classmethod
    def execute(cls, model, rl_model, latent, scales, start_percent, end_percent, rl_every=1) -> io.NodeOutput:
        values = parse_scales(scales)
        samples = latent["samples"]
        per_scale = samples.shape[0]
        out = dict(latent)
        out["samples"] = samples.repeat(len(values), *([1] * (samples.ndim - 1)))
        # Each copy of the latent draws the same noise as the latent alone: its own batch indices, repeated.
        indices = list(latent.get("batch_index", range(per_scale)))
        out["batch_index"] = indices * len(values)
        mask = latent.get("noise_mask")
        if mask is not None and mask.shape[0] == per_scale and per_scale > 1:
            out["noise_mask"] = mask.repeat(len(values), *([1] * (mask.ndim - 1)))
        rows = torch.tensor(values, dtype=torch.float32).repeat_interleave(per_scale)
        settings = RLGSettings(rows, start_percent, end_percent, outside_window=OutsideWindow.RL_MODEL,
                               rl_every=int(rl_every))
        patched = attach_rlg(model, [(rl_model, settings)])
        return io.NodeOutput(patched, out)


class RLGSweepGrid(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="RLGSweepGrid",
            display_name="RLG Sweep Grid",
            category=CATEGORY,
            description="Lays out the decoded images of an RLG Scale Sweep as one picture, the scale under each image.",
            inputs=[
                io.Image.Input("images", tooltip="The decoded images of the sweep (VAE Decode of the sampled latent)."),
                io.String.Input("scales", default="0, 0.5, 1, 1.5, 2, 3",
                                tooltip="The same list as on RLG Scale Sweep: one column per scale, labelled."),
            ],
            outputs=[io.Image.Output(tooltip="One picture: a column per scale, its value written under each image.")],
        )

    @classmethod
    def validate_inputs(cls, scales=None):
        return _validate_scales(scales)

    @classmethod
    def execute(cls, images, scales) -> io.NodeOutput:
        values = parse_scales(scales)
        if images.shape[0] % len(values):
            raise RLGInputError(
                f"images has {images.shape[0]} images but scales lists {len(values)} values; connect the images "
                "decoded from the RLG Scale Sweep's latent and give the same scales list as on that node.")
        return io.NodeOutput(sweep_grid(images, [scale_label(v) for v in values]))


NODES = [RLGScaleSweep, RLGSweepGrid]
