"""RLG on GGUF models loaded by ComfyUI-GGUF itself (its UnetLoaderGGUFAdvanced, GGUFModelPatcher and GGMLOps layers).

The tiny SD3 written as GGUF files by the registry's gguf package, in every format that package writes and the pack
reads (harness/gguf_files.py), then loaded through the pack's own loader node with its options. What must hold:
* a LoRA RL model on a GGUF base (stock loader; Load LoRA (PEFT aware)), of every kind ComfyUI applies to GGUF weights
  (LoRA, LoHa, LoKr), and a separate GGUF RL model beside a GGUF or safetensors base: RLG equals RLG on the same
  models dequantized (by the pack's own dequantization, into plain float tensors), at every scale and per step; w = 0
  is the GGUF base alone and w = 1 the GGUF RL model alone;
* a layer that would not apply the RL patches stops sampling with the reason, never returns the base as the RL model;
* what is still refused says the right reason (F16 weights are plain values, not a quantized format).
"""

from __future__ import annotations

import comfy.sd
import pytest
import torch

from comfyui_rlg.nodes.errors import RLGInputError, RLGRuntimeError
from comfyui_rlg.nodes.nodes_lora import load_peft_aware
from harness import gguf_files as gf
from harness import sampling as h
from harness import thirdparty
from harness import tiny_models as tm
from harness.tiny_families import free_models  # noqa: F401 (autouse fixture)

FORMATS = gf.FORMATS
ADAPTERS = ("lora", "loha", "lokr")
OPTIONS = {"default": {}, "dequant float16": {"dequant_dtype": "float16"}, "patch_on_device": {"patch_on_device": True}}
BASE_SEED, RL_SEED, LORA_SEED = 0, 3, 7


@pytest.fixture(scope="module")
def gguf_folder(tmp_path_factory):
    thirdparty.load_or_skip(thirdparty.GGUF)
    folder = tmp_path_factory.mktemp("gguf")
    gf.register_folder(folder)
    return folder


def gguf_file(folder, fmt: str, seed: int = BASE_SEED):
    path = folder / f"tiny_sd3_{seed}_{fmt}.gguf"
    if not path.exists():
        sd = tm.tiny_sd3_state_dict(0) if seed == BASE_SEED else tm.perturbed(tm.tiny_sd3_state_dict(0), seed)
        gf.write(path, sd, fmt)
    return path


def dequantized_model(path, dequant_dtype: str = "default"):
    """The same weights as a plain safetensors-style model: the pack's own dequantization of each tensor, float32."""
    loader = thirdparty.submodule(thirdparty.GGUF, "loader")
    dequant = thirdparty.submodule(thirdparty.GGUF, "dequant")
    dtype = {"default": None, "float16": torch.float16}[dequant_dtype]
    sd = {k: torch.Tensor(dequant.dequantize_tensor(v, torch.float32, dtype)).clone()
          for k, v in loader.gguf_sd_loader(str(path)).items()}
    return comfy.sd.load_diffusion_model_state_dict(sd)


def lora_rl(model, adapter: str):
    return comfy.sd.load_lora_for_models(model, None, tm.adapter_for(tm.tiny_sd3_state_dict(0), LORA_SEED, adapter),
                                         1.0, 0)[0]


def probe(model, base_for_sigmas):
    positive, negative = h.conds("sd3", batch=2)
    sigmas = h.schedule(base_for_sigmas, steps=3)
    gen = torch.Generator().manual_seed(2)
    xs = [torch.randn(h.latent("sd3", 2).shape, generator=gen) * float(s) for s in sigmas[:-1]]
    return h.probe_predictions(model, xs, sigmas, positive, negative, cfg=4.0)


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_the_gguf_package_writes_loads_as_written(gguf_folder, fmt):
    """The files are what they say: the pack's loader gives GGMLTensor weights of that format on the big layers."""
    model = gf.load(gguf_file(gguf_folder, fmt))
    weight = model.get_model_object("diffusion_model.joint_blocks.0.x_block.attn.qkv").weight
    assert type(model).__name__ == "GGUFModelPatcher" and type(weight).__name__ == "GGMLTensor"
    assert weight.tensor_type.name == fmt


# Every format with a plain LoRA (forward hooks) and a LoHa (applied at dequantization, or by weight function on F16 /
# BF16); LoKr and the loader's options on one plain and one quantized format.
CASES = ([(fmt, adapter, "default") for fmt in FORMATS for adapter in ("lora", "loha")]
         + [(fmt, "lokr", "default") for fmt in ("F16", "Q8_0")]
         + [("Q8_0", adapter, option) for adapter in ("lora", "loha") for option in OPTIONS if option != "default"])


@pytest.mark.parametrize(("fmt", "adapter", "option"), CASES)
def test_lora_rl_model_on_a_gguf_base_is_rlg_on_the_dequantized_models(gguf_folder, fmt, adapter, option):
    path = gguf_file(gguf_folder, fmt)
    base = gf.load(path, **OPTIONS[option])
    rl = lora_rl(base, adapter)
    ref_base = dequantized_model(path, OPTIONS[option].get("dequant_dtype", "default"))
    ref_rl = lora_rl(ref_base, adapter)
    alone_base, alone_rl = h.ksample(base), h.ksample(rl)
    effect = h.max_diff(alone_rl, alone_base)
    assert effect > 1e-3
    for w in (0.0, 1.0, 2.0):
        out = h.ksample(h.rlg(base, rl, w))
        assert h.max_diff(out, h.ksample(h.rlg(ref_base, ref_rl, w))) <= 1e-6, w
        if w == 0.0:
            assert h.max_diff(out, alone_base) == 0.0
        if w == 1.0:
            # The GGUF RL model alone: its F16 / BF16 weights get the LoRA rounded back into the file's precision
            # (the pack rounds stochastically), RLG keeps it in float32; a quantized weight gets it the same way.
            assert h.max_diff(out, alone_rl) <= 2e-3 * effect, (h.max_diff(out, alone_rl), effect)
    pb, pr = probe(base, base), probe(h.rlg(base, rl, 1.0), base)
    for b, r, g in zip(pb, pr, probe(h.rlg(base, rl, 2.0), base), strict=True):
        assert h.max_diff(b, r) > 1e-4
        assert h.max_diff(g, b + 2.0 * (r - b)) <= 1e-4 * (1 + float(r.abs().max()))


@pytest.mark.parametrize("fmt", ["F16", "Q8_0", "Q4_0"])
def test_peft_lora_through_load_lora_peft_aware_on_a_gguf_base(gguf_folder, tmp_path, fmt):
    import json

    import safetensors.torch

    path = gguf_file(gguf_folder, fmt)
    base, ref_base = gf.load(path), dequantized_model(path)
    folder = tmp_path / "flow_grpo"
    folder.mkdir()
    safetensors.torch.save_file(tm.peft_lora_for_sd3(ref_base, 3), folder / "adapter_model.safetensors")
    (folder / "adapter_config.json").write_text(json.dumps({"r": 4, "lora_alpha": 8, "peft_type": "LORA"}))
    lora = str(folder / "adapter_model.safetensors")
    rl, ref_rl = load_peft_aware(base, lora, 1.0), load_peft_aware(ref_base, lora, 1.0)
    for w in (0.0, 1.0, 2.0):
        assert h.max_diff(h.ksample(h.rlg(base, rl, w)), h.ksample(h.rlg(ref_base, ref_rl, w))) <= 1e-6
    assert h.max_diff(h.ksample(h.rlg(base, rl, 0.0)), h.ksample(base)) == 0.0
    assert h.max_diff(h.ksample(rl), h.ksample(base)) > 1e-3


@pytest.mark.parametrize("combo", ["gguf + gguf", "safetensors + gguf", "gguf + safetensors"])
@pytest.mark.parametrize("fmt", ["F16", "Q8_0", "Q4_0"])
def test_separate_gguf_rl_model(gguf_folder, fmt, combo):
    base_kind, rl_kind = combo.split(" + ")
    sd = tm.tiny_sd3_state_dict(0)
    base = gf.load(gguf_file(gguf_folder, fmt)) if base_kind == "gguf" else \
        comfy.sd.load_diffusion_model_state_dict(dict(sd))
    rl = gf.load(gguf_file(gguf_folder, fmt, RL_SEED)) if rl_kind == "gguf" else \
        comfy.sd.load_diffusion_model_state_dict(tm.perturbed(sd, RL_SEED))
    alone_base, alone_rl = h.ksample(base), h.ksample(rl)
    assert h.max_diff(alone_base, alone_rl) > 1e-2
    assert h.max_diff(h.ksample(h.rlg(base, rl, 0.0)), alone_base) == 0.0
    assert h.max_diff(h.ksample(h.rlg(base, rl, 1.0)), alone_rl) == 0.0
    pb, pr = probe(base, base), probe(rl, base)
    for b, r, g in zip(pb, pr, probe(h.rlg(base, rl, 2.0), base), strict=True):
        assert h.max_diff(g, b + 2.0 * (r - b)) <= 1e-4 * (1 + float(r.abs().max()))


def test_a_lora_none_of_whose_keys_fit_the_gguf_model_is_refused(gguf_folder):
    base = gf.load(gguf_file(gguf_folder, "Q8_0"))
    stray = {k.replace("joint_blocks", "no_such_blocks"): v
             for k, v in tm.lora_for(tm.tiny_sd3_state_dict(0), LORA_SEED).items()}
    rl = comfy.sd.load_lora_for_models(base, None, stray, 1.0, 0)[0]
    with pytest.raises(RLGInputError, match="adds nothing to model"):
        h.rlg(base, rl, 2.0)


def test_a_quantized_layer_that_drops_the_rl_patches_stops_sampling(gguf_folder):
    """A GGML layer that dequantizes without applying its tensor's patches (another version of the pack, say): the RL
    pass must not come back as the base. RLG sees its patches were never applied and stops, with the reason."""
    base = gf.load(gguf_file(gguf_folder, "Q8_0"))
    rl = lora_rl(base, "loha")  # LoHa: applied at dequantization on quantized layers
    layer = base.get_model_object("diffusion_model.joint_blocks.0.x_block.attn.qkv")
    dequant = thirdparty.submodule(thirdparty.GGUF, "dequant")
    layer.get_weight = lambda tensor, dtype: None if tensor is None else dequant.dequantize_tensor(
        tensor, dtype, layer.dequant_dtype)  # no patches applied
    try:
        with pytest.raises(RLGRuntimeError, match="stored quantized \\(Q8_0"):
            h.ksample(h.rlg(base, rl, 2.0))
    finally:
        del layer.get_weight


def test_f16_weights_are_not_called_quantized(gguf_folder):
    """LoHa on F16 GGUF weights runs (weight functions on their plain values); where patching really is impossible the
    message names the quantized format."""
    from comfyui_rlg.nodes.rl_delta import LayerDelta, LayerPath

    base = gf.load(gguf_file(gguf_folder, "F16"))
    rl = lora_rl(base, "loha")
    h.ksample(h.rlg(base, rl, 2.0))  # runs: no refusal
    f16 = base.get_model_object("diffusion_model.joint_blocks.0.x_block.attn.qkv").weight
    delta = LayerDelta("k", "m", "weight", [], LayerPath.FUNCTION)
    assert delta.patched(f16).dtype == torch.float16  # plain values: patched
    q8 = gf.load(gguf_file(gguf_folder, "Q8_0")).get_model_object("diffusion_model.joint_blocks.0.x_block.attn.qkv")
    with pytest.raises(RLGRuntimeError, match=r"stored quantized \(Q8_0, a GGMLTensor\)"):
        delta.patched(q8.weight)
