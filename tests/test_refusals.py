"""Inputs RLG cannot work with are refused before sampling, with a message naming the input."""

import logging
import math

import pytest

from comfyui_rlg.nodes.errors import RLGInputError
from comfyui_rlg.nodes.nodes_rlg import RLGApply
from harness import sampling as h


def test_other_family_is_refused_naming_both_models():
    sd3, sd15 = h.load_model("sd3"), h.load_model("sd15")
    with pytest.raises(RLGInputError) as err:
        RLGApply.execute(sd3, sd15, 1.5, 0.0, 1.0)
    msg = str(err.value)
    assert "rl_model" in msg and "model" in msg and "SD3" in msg and "SD15" in msg
    assert "prediction" in msg


def test_other_prediction_type_is_refused():
    # The same network read as an EPS model samples garbage without any error: refuse it.
    from comfy_extras.nodes_model_advanced import ModelSamplingDiscrete

    base = h.load_model("sd3")
    eps = ModelSamplingDiscrete().patch(h.load_model("sd3", rl_seed=1), "eps", False)[0]
    with pytest.raises(RLGInputError, match="prediction"):
        h.rlg(base, eps, 1.5, 0.0, 1.0)


def test_other_shape_is_refused():
    import comfy.sd

    from harness import tiny_models as tm

    base = h.load_model("sd3")
    sd = tm.tiny_sd3_state_dict(0)
    wider = comfy.sd.load_diffusion_model_state_dict(
        {k: v for k, v in sd.items()} | {"y_embedder.mlp.0.weight": sd["y_embedder.mlp.0.weight"][:, :16]}
    )
    with pytest.raises(RLGInputError, match="network config"):
        h.rlg(base, wider, 1.5, 0.0, 1.0)


def test_window_and_scale_are_checked():
    base, rl = h.load_model("sd3"), h.load_model("sd3", rl_seed=1)
    with pytest.raises(RLGInputError, match="start_percent"):
        RLGApply.execute(base, rl, 1.5, 0.8, 0.2)
    with pytest.raises(RLGInputError, match="rlg_scale"):
        RLGApply.execute(base, rl, math.nan, 0.0, 1.0)


def test_lora_not_chained_after_the_bases_lora_is_refused():
    ckpt = h.load_model("sd3")
    styled = h.with_lora(ckpt, lora_seed=11, match="mlp")
    rl_without_style = h.with_lora(ckpt, lora_seed=12)
    with pytest.raises(RLGInputError, match="after model's own LoRAs"):
        h.rlg(styled, rl_without_style, 1.5, 0.0, 1.0)


def test_inputs_are_not_changed():
    base = h.load_model("sd3")
    rl = h.with_lora(base)
    before = (dict(base.patches), dict(base.weight_wrapper_patches), base.model_options.copy(),
              dict(rl.patches), rl.model_options.copy())
    h.rlg(base, rl, 2.0, 0.1, 0.9)
    after = (dict(base.patches), dict(base.weight_wrapper_patches), base.model_options.copy(),
             dict(rl.patches), rl.model_options.copy())
    assert before == after


def test_rl_model_that_adds_nothing_is_refused_unless_it_is_the_base_itself(caplog):
    base = h.load_model("sd3")
    no_match = base.clone()
    assert no_match.add_patches({"not.a.key": ("diff", (None,))}) == []  # a LoRA whose keys all failed
    with pytest.raises(RLGInputError, match="rl_model adds nothing to model.*lora key not loaded"):
        h.rlg(base, no_match, 2.0, 0.0, 1.0)
    # The base itself (the RL LoRA loader bypassed, or at strength 0): a deliberate comparison, the base runs.
    with caplog.at_level(logging.WARNING):
        out = h.ksample(h.rlg(base, base, 2.0, 0.0, 1.0))
    assert "the base model itself" in caplog.text
    assert h.max_diff(out, h.ksample(base)) == 0.0


def test_lora_connected_after_rlg_apply_warns_once(caplog):
    base, rl = h.load_model("sd3"), h.load_model("sd3", rl_seed=1)
    late = h.with_lora(h.rlg(base, rl, 1.5, 0.0, 1.0))
    with caplog.at_level(logging.WARNING):
        h.ksample(late, steps=3)
    assert caplog.text.count("connected after RLG Apply") == 1
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        h.ksample(h.rlg(base, rl, 1.5, 0.0, 1.0), steps=3)
    assert "connected after RLG Apply" not in caplog.text


def test_two_models_sharing_one_network_are_refused():
    """A loader that makes a new model around the base's network (Nunchaku's LoRA loaders keep one quantized
    transformer for both): not a clone, so RLG would take it for a separate model and run both passes on one network.
    Refused, naming the loaders that work."""
    import comfy.model_patcher

    base = h.load_model("sd3")
    copy = h.load_model("sd3")  # another BaseModel and patcher...
    copy.model.diffusion_model = base.model.diffusion_model  # ...around the base's very network
    rl = comfy.model_patcher.ModelPatcher(copy.model, load_device=base.load_device, offload_device=base.offload_device)
    assert not base.is_clone(rl)
    with pytest.raises(RLGInputError, match="share parts of one network.*Load rl_model with a loader of its own"):
        h.rlg(base, rl, 1.5)
