"""RLG Scale Sweep: one queue, one row per scale, each row what RLG Apply gives at that scale. RLG Sweep Grid: the
picture, where each image lies in it, and what it sends the front-end's scrubber."""

from __future__ import annotations

import json

import comfy.samplers
import folder_paths
import nodes as comfy_nodes
import numpy as np
import pytest
import torch

from comfyui_rlg.nodes.errors import RLGInputError, RLGRuntimeError
from comfyui_rlg.nodes.nodes_rlg import RLGApply
from comfyui_rlg.nodes.nodes_sweep import RLGScaleSweep, RLGSweepGrid
from comfyui_rlg.nodes.settings import parse_scales
from comfyui_rlg.nodes.sweep_grid import GridLayout, grid_layout, scale_label, sweep_grid
from comfyui_rlg.nodes.sweep_run import run_record, upstream
from harness import sampling as h

SCALES = "0, 0.5, 1, 1.5, 2, 3"


@pytest.fixture(autouse=True)
def _temp_dir(tmp_path):
    """The grid saves its picture for the front-end in ComfyUI's temp folder: here, the test's own."""
    before = folder_paths.get_temp_directory()
    folder_paths.set_temp_directory(str(tmp_path / "temp"))
    yield tmp_path / "temp"
    folder_paths.set_temp_directory(before)


def _pair(form: str):
    base = h.load_model("sd3")
    return base, (h.with_lora(base) if form == "lora" else h.load_model("sd3", rl_seed=1))


def _ksampler(model, latent, sampler="euler", seed=11, steps=4, positive=None, negative=None):
    if positive is None:
        positive, negative = h.conds("sd3")
    (out,) = comfy_nodes.common_ksampler(model, seed, steps, 3.5, sampler, "simple", positive, negative, latent)
    return out["samples"]


@pytest.mark.parametrize("form", ["full", "lora"])
@pytest.mark.parametrize("sampler", ["euler", "dpmpp_2m"])
def test_each_row_equals_rlg_apply_at_its_scale(form, sampler):
    base, rl = _pair(form)
    latent = {"samples": h.latent("sd3", 1)}
    model, swept, _ = RLGScaleSweep.execute(base, rl, latent, SCALES, 0.1, 1.0).args
    assert swept["samples"].shape[0] == 6 and swept["batch_index"] == [0] * 6
    rows = _ksampler(model, swept, sampler)
    for i, scale in enumerate(parse_scales(SCALES)):
        single = _ksampler(RLGApply.execute(base, rl, scale, 0.1, 1.0).args[0], latent, sampler)
        assert h.max_diff(rows[i:i + 1], single) <= 1e-5 * (1 + float(single.abs().max())), scale
    assert h.max_diff(rows[0], rows[5]) > 1e-3


def test_sampler_custom_advanced_takes_the_sweep_as_it_is():
    from comfy_extras.nodes_custom_sampler import CFGGuider, Noise_RandomNoise, SamplerCustomAdvanced

    base, rl = _pair("lora")
    positive, negative = h.conds("sd3")
    model, swept, _ = RLGScaleSweep.execute(base, rl, {"samples": h.latent("sd3", 1)}, "0, 2", 0.0, 1.0).args
    guider = CFGGuider.execute(model, positive, negative, 3.5).args[0]
    sigmas = h.schedule(base, steps=4)
    out = SamplerCustomAdvanced.execute(Noise_RandomNoise(11), guider, comfy.samplers.sampler_object("euler"), sigmas,
                                        swept).args[0]["samples"]
    single = SamplerCustomAdvanced.execute(
        Noise_RandomNoise(11), CFGGuider.execute(RLGApply.execute(base, rl, 2.0, 0.0, 1.0).args[0], positive,
                                                 negative, 3.5).args[0],
        comfy.samplers.sampler_object("euler"), sigmas, {"samples": h.latent("sd3", 1)}).args[0]["samples"]
    assert h.max_diff(out[1:2], single) <= 1e-5 * (1 + float(single.abs().max()))


def test_batch_of_two_gives_two_rows_per_scale():
    base, rl = _pair("full")
    positive, negative = h.conds("sd3", batch=2)
    latent = {"samples": h.latent("sd3", 2)}
    model, swept, _ = RLGScaleSweep.execute(base, rl, latent, "0.5, 2", 0.0, 1.0).args
    assert swept["samples"].shape[0] == 4 and swept["batch_index"] == [0, 1, 0, 1]
    rows = _ksampler(model, swept, positive=positive, negative=negative)
    for i, scale in enumerate((0.5, 2.0)):
        single = _ksampler(RLGApply.execute(base, rl, scale, 0.0, 1.0).args[0], latent, positive=positive,
                           negative=negative)
        assert h.max_diff(rows[2 * i:2 * i + 2], single) <= 1e-5 * (1 + float(single.abs().max())), scale


@pytest.mark.parametrize("bad", ["", "  ,  ", "0, x, 1", "nan", "1, 20", ",".join(["1"] * 65)])
def test_bad_scale_lists_are_refused_before_sampling(bad):
    base, rl = _pair("full")
    assert isinstance(RLGScaleSweep.validate_inputs(scales=bad), str)  # what ComfyUI asks when queueing
    with pytest.raises(RLGInputError, match="scales"):
        RLGScaleSweep.execute(base, rl, {"samples": h.latent("sd3", 1)}, bad, 0.0, 1.0)
    assert RLGScaleSweep.validate_inputs(scales="0; 1 2.5") is True and parse_scales("0; 1 2.5") == [0, 1, 2.5]


def test_sweep_model_with_another_latent_says_what_to_connect():
    base, rl = _pair("full")
    model, _, _ = RLGScaleSweep.execute(base, rl, {"samples": h.latent("sd3", 1)}, SCALES, 0.0, 1.0).args
    with pytest.raises(RLGRuntimeError, match="LATENT output"):
        _ksampler(model, {"samples": h.latent("sd3", 1)})


def test_grid_size_and_labels():
    images = torch.zeros(6, 40, 48, 3)
    for i in range(6):
        images[i, :, :, i % 3] = 1.0  # tell the tiles apart
    (grid,) = RLGSweepGrid.execute(images, "0, 0.5, 1").args
    assert grid.shape[0] == 1 and grid.shape[-1] == 3
    gap, text = 4, max(10, min(32, 48 // 8))
    cell_w, cell_h = 48 + gap, 40 + text + 2 * gap
    assert grid.shape[1:3] == (2 * cell_h + gap, 3 * cell_w + gap)  # a column per scale, a row per image
    # tile (scale 1, image 0) is image 2 of the batch; its label strip has text, and each label differs
    x, y = gap + 1 * cell_w, gap
    assert torch.equal(grid[0, y:y + 40, x:x + 48], images[2])
    strips = [grid[0, gap + 40:gap + 40 + text + gap, gap + i * cell_w:gap + i * cell_w + 48] for i in range(3)]
    assert all(float(s.max()) > 0.5 for s in strips)  # light text on the dark strip
    assert not torch.equal(strips[0], strips[1]) and not torch.equal(strips[1], strips[2])
    with pytest.raises(RLGInputError, match="images has 6 images but scales lists 4"):
        RLGSweepGrid.execute(images, "0, 1, 2, 3")


def _tiles(count: int, height: int, width: int) -> torch.Tensor:
    """Images that differ from each other in every pixel (a ramp per image), in 0..1 on the 1/255 grid."""
    base = torch.arange(height * width, dtype=torch.float32).reshape(height, width, 1)
    return torch.stack([((base * (3 + i) + 17 * i + torch.tensor([0.0, 85.0, 170.0])) % 256) / 255.0
                        for i in range(count)])


@pytest.mark.parametrize(("columns", "rows", "height", "width"), [(3, 1, 40, 48), (2, 3, 24, 30), (5, 2, 64, 64)])
def test_layout_boxes_are_where_the_grid_draws_each_image(columns, rows, height, width):
    images = _tiles(columns * rows, height, width)
    labels = [scale_label(v) for v in range(columns)]
    grid = sweep_grid(images, labels)[0]
    layout = grid_layout(columns * rows, height, width, columns)
    assert layout == GridLayout(columns, rows, width, height)
    assert tuple(grid.shape[:2]) == (layout.size[1], layout.size[0])
    d = layout.as_dict()
    assert d["size"] == list(layout.size) and d["columns"] == columns and d["rows"] == rows
    assert d["image"] == [width, height] and json.loads(json.dumps(d)) == d
    for c in range(columns):
        for r in range(rows):
            x, y, w, h_ = d["boxes"][c][r]
            assert (w, h_) == (width, height)
            # The batch is scale by scale: column c, row r is image c * rows + r, pixel for pixel.
            assert torch.equal(grid[y:y + h_, x:x + w], images[c * rows + r]), (c, r)
            lx, ly, lw, lh = layout.label_box(c, r)
            assert (lx, ly, lw) == (x, y + height, width) and float(grid[ly:ly + lh, lx:lx + lw].max()) > 0.5
    with pytest.raises(IndexError):
        layout.image_box(columns, 0)
    with pytest.raises(ValueError, match="cannot be split evenly"):
        grid_layout(7, height, width, 3)


def test_grid_sends_the_scrubber_its_picture_and_layout(_temp_dir):
    images = _tiles(6, 20, 24)
    out = RLGSweepGrid.execute(images, "0, 1.5, 3")
    (grid,) = out.args
    (sent,) = out.ui["rlg_sweep"]
    assert sent["scales"] == [0.0, 1.5, 3.0] and sent["labels"] == ["rlg_scale 0", "rlg_scale 1.5", "rlg_scale 3"]
    assert sent["layout"] == grid_layout(6, 20, 24, 3).as_dict() and sent["layout"]["rows"] == 2
    assert sent["image"]["type"] == "temp" and sent["image"]["filename"].endswith(".png")
    assert sent["run"] is None and sent["node"] is None  # called directly: no prompt to record
    json.dumps(sent)  # goes over the websocket and into the workflow as it is
    from PIL import Image

    saved = Image.open(_temp_dir / sent["image"]["subfolder"] / sent["image"]["filename"])
    assert saved.size == tuple(sent["layout"]["size"])
    # The saved picture is the IMAGE output, to the byte.
    expected = (grid[0] * 255).round().to(torch.uint8).numpy()
    assert np.array_equal(np.asarray(saved.convert("RGB")), expected)


def test_run_record_is_the_prompt_upstream_of_the_grid():
    prompt = {
        "1": {"class_type": "Loader", "inputs": {"name": "a.safetensors"}},
        "2": {"class_type": "RLGScaleSweep", "inputs": {"model": ["1", 0], "scales": "0, 1", "start_percent": 0.0}},
        "3": {"class_type": "KSampler", "inputs": {"model": ["2", 0], "latent_image": ["2", 1], "seed": 5}},
        "4": {"class_type": "Decode", "inputs": {"samples": ["3", 0]}},
        "5": {"class_type": "RLGSweepGrid", "inputs": {"images": ["4", 0], "scales": "", "sweep_scales": "0, 1"}},
        "6": {"class_type": "PreviewImage", "inputs": {"images": ["5", 0]}},
        "7": {"class_type": "Other", "inputs": {"seed": 1}},
    }
    assert upstream(prompt, 5) == ["5", "4", "3", "2", "1"]
    record = run_record(prompt, "5")
    assert record["node"] == "5" and set(record["nodes"]) == {"1", "2", "3", "4", "5"}
    assert record["nodes"]["3"] == {"class_type": "KSampler",
                                    "inputs": {"model": ["2", 0], "latent_image": ["2", 1], "seed": 5}}
    assert record["nodes"]["5"]["inputs"]["sweep_scales"] == "0, 1"
    assert run_record(prompt, "99") is None and run_record(None, "5") is None and run_record(prompt, None) is None
    big = {**prompt, "1": {"class_type": "Loader", "inputs": {"name": "x" * 300_000}}}
    assert run_record(big, "5") is None  # too large to keep in a workflow: no stale check rather than a huge file
