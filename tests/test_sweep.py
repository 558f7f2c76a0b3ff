"""RLG Scale Sweep: one queue, one row per scale, each row what RLG Apply gives at that scale."""

from __future__ import annotations

import comfy.samplers
import nodes as comfy_nodes
import pytest
import torch

from comfyui_rlg.nodes.errors import RLGInputError, RLGRuntimeError
from comfyui_rlg.nodes.nodes_rlg import RLGApply
from comfyui_rlg.nodes.nodes_sweep import RLGScaleSweep, RLGSweepGrid
from comfyui_rlg.nodes.settings import parse_scales
from harness import sampling as h

SCALES = "0, 0.5, 1, 1.5, 2, 3"


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
