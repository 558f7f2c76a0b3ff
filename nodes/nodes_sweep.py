"""RLG Scale Sweep and RLG Sweep Grid: compare rlg_scale values side by side, from one queue.

RLG's blend is per batch row, so one sampling run can carry a different scale on each row. Every
row starts from the same noise as a batch-1 run with the same seed (ComfyUI's latent batch_index),
so row i is what RLG Apply at scale i gives on that latent with that seed.
"""

from __future__ import annotations

import random

import torch
from comfy_api.latest import io, ui

from .apply import attach_rlg
from .errors import RLGInputError
from .nodes_rlg import CATEGORY, warn_if_same_model
from .settings import OutsideWindow, RLGSettings, parse_scales
from .sweep_grid import grid_layout, scale_label, sweep_grid
from .sweep_run import run_record
from .widgets import rl_every_input, validate_window, window_inputs

_SCALES_TOOLTIP = (
    "The rlg_scale values to compare, separated by commas (for example 0, 0.5, 1, 1.5, 2, 3). 0 = base model, "
    "1 = RL model, above 1 = stronger alignment."
)
_GRID_SCALES_TOOLTIP = (
    "Leave empty: the columns are labelled from the RLG Scale Sweep (its scales output, connected to sweep_scales, "
    "or the sweep whose images these are). A list typed here must be the sweep's own; a different one is refused "
    "when the prompt is queued. Needed only for images that do not come from an RLG Scale Sweep."
)
_ABSENT = object()  # validate_inputs: an input not in the prompt (a linked one arrives as None)
SCRUBBER_UI = "rlg_sweep"  # the grid's ui result: what js/rlg_scrubber.js needs to show one scale at a time


def _scale_list(text) -> list[float] | None:
    """A typed list, parsed; None for an empty box (the grid's "take the sweep's list")."""
    return parse_scales(text) if isinstance(text, str) and text.strip() else None


def _values(values: list[float]) -> str:
    return ", ".join(f"{v:g}" for v in values)


def _mismatch(own: list[float], swept: list[float]) -> str:
    return (f"the grid's scales ({_values(own)}) differ from the scales the RLG Scale Sweep samples "
            f"({_values(swept)}), so its labels would be wrong: clear the grid's scales box to label the columns from "
            "the sweep, or type the same list there.")


def _validate_scales(scales) -> bool | str:
    """Refuse a bad list when the prompt is queued (a linked value is checked at execution)."""
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
                io.String.Output("scales_out", display_name="scales", tooltip=(
                    "The scales swept, in order: connect it to RLG Sweep Grid's sweep_scales, so one list labels the "
                    "grid.")),
            ],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def validate_inputs(cls, scales=None, start_percent=None, end_percent=None):
        # Naming an input here switches off ComfyUI's own range check for it: validate_window checks the range.
        checked = _validate_scales(scales)
        return checked if checked is not True else validate_window(start_percent, end_percent)

    @classmethod
    def execute(cls, model, rl_model, latent, scales, start_percent, end_percent, rl_every=1) -> io.NodeOutput:
        values = parse_scales(scales)
        warn_if_same_model(cls, model, rl_model)
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
        return io.NodeOutput(patched, out, _values(values))


class RLGSweepGrid(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="RLGSweepGrid",
            display_name="RLG Sweep Grid",
            category=CATEGORY,
            description=(
                "Lays out the decoded images of an RLG Scale Sweep as one picture, the scale under each image. The "
                "labels come from the sweep: connect its scales output to sweep_scales. After a queue the node shows "
                "the sweep one scale at a time: step through the scales with the slider or the arrow keys, compare "
                "two, and send the one you like to RLG Apply, RLG Guider or RLG RL Model with 'Use this scale'."),
            inputs=[
                io.Image.Input("images", tooltip="The decoded images of the sweep (VAE Decode of the sampled latent)."),
                # Optional and after images, so workflows saved with a typed list load with it in place.
                io.String.Input("scales", default="", optional=True, tooltip=_GRID_SCALES_TOOLTIP),
                io.String.Input("sweep_scales", optional=True, force_input=True,
                                tooltip="RLG Scale Sweep's scales output: the grid's labels."),
            ],
            outputs=[io.Image.Output(tooltip="One picture: a column per scale, its value written under each image.")],
            # An output node: the grid shows its sweep on the node (the scrubber), a preview node is optional.
            is_output_node=True,
            hidden=[io.Hidden.unique_id, io.Hidden.prompt, io.Hidden.extra_pnginfo],
        )

    @classmethod
    def validate_inputs(cls, scales=None, sweep_scales=_ABSENT):
        """The typed list against the sweep's, when the prompt is queued.

        sweep_scales is the sweep's literal list where the server's queue-time step (nodes/server_hooks.py) found
        it; None where it is linked to a value known only at run time; _ABSENT where nothing gives one.
        """
        try:
            own = _scale_list(scales)
            swept = _scale_list(sweep_scales) if isinstance(sweep_scales, str) else None
        except RLGInputError as err:
            return str(err)
        if own is not None and swept is not None and own != swept:
            return _mismatch(own, swept)
        if own is None and sweep_scales is _ABSENT:
            return ("scales is empty and nothing gives the grid its labels: connect RLG Scale Sweep's scales output "
                    "to sweep_scales (the images should be that sweep's), or type the list in scales.")
        return True

    @classmethod
    def execute(cls, images, scales="", sweep_scales=None) -> io.NodeOutput:
        own, swept = _scale_list(scales), _scale_list(sweep_scales)
        if own is not None and swept is not None and own != swept:
            raise RLGInputError(_mismatch(own, swept))
        values = swept or own
        if values is None:
            raise RLGInputError("scales is empty and sweep_scales is not connected: connect RLG Scale Sweep's scales "
                                "output to sweep_scales, or type the list in scales.")
        if images.shape[0] % len(values):
            raise RLGInputError(
                f"images has {images.shape[0]} images but {'sweep_scales' if swept else 'scales'} lists {len(values)} "
                "values; connect the images decoded from the RLG Scale Sweep's latent, and its scales output to "
                "sweep_scales.")
        labels = [scale_label(v) for v in values]
        grid = sweep_grid(images, labels)
        return io.NodeOutput(grid, ui={SCRUBBER_UI: [cls._scrubber(grid, images, values, labels)]})

    @classmethod
    def _scrubber(cls, grid: torch.Tensor, images: torch.Tensor, values: list[float], labels: list[str]) -> dict:
        """The picture, saved to ComfyUI's temp folder as PreviewImage saves its images, and where each image lies
        in it; what the run used, for the front-end's "these images are from an earlier run" note."""
        hidden = cls.hidden
        prefix = "RLG_sweep_grid_" + "".join(random.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(5))
        (saved,) = ui.ImageSaveHelper.save_images(grid, filename_prefix=prefix, folder_type=io.FolderType.temp,
                                                  cls=cls, compress_level=1)
        layout = grid_layout(images.shape[0], images.shape[1], images.shape[2], len(values))
        node_id = getattr(hidden, "unique_id", None)
        return {"image": dict(saved), "scales": values, "labels": labels, "layout": layout.as_dict(),
                "node": None if node_id is None else str(node_id),
                "run": run_record(getattr(hidden, "prompt", None), node_id)}


NODES = [RLGScaleSweep, RLGSweepGrid]
