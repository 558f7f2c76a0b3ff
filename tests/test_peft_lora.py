"""PEFT-format LoRAs (Flow-GRPO) keep alpha in adapter_config.json: load them at trained strength."""

import json
import logging

import comfy.sd
import pytest
import safetensors.torch
import torch

from comfyui_rlg.nodes.errors import RLGInputError
from comfyui_rlg.nodes.nodes_lora import RLGLoraLoaderModelOnly, load_peft_aware
from comfyui_rlg.nodes.peft_alpha import alpha_keys, find_adapter_config, needs_alpha
from harness import sampling as h
from harness import tiny_models as tm


@pytest.fixture
def peft_lora(tmp_path):
    base = h.load_model("sd3")
    sd = tm.peft_lora_for_sd3(base, seed=3)
    folder = tmp_path / "flow_grpo_pickscore"
    folder.mkdir()
    path = folder / "adapter_model.safetensors"
    safetensors.torch.save_file(sd, path)
    (folder / "adapter_config.json").write_text(json.dumps({"r": 4, "lora_alpha": 8, "peft_type": "LORA"}))
    return base, sd, path


def stock(model, sd, strength):
    return comfy.sd.load_lora_for_models(model, None, dict(sd), strength, 0)[0]


def test_peft_lora_is_recognised_and_its_config_found(peft_lora):
    _, sd, path = peft_lora
    assert needs_alpha(sd)
    assert find_adapter_config(path).name == "adapter_config.json"
    alphas = alpha_keys(sd, {"lora_alpha": 8, "r": 4})
    assert len(alphas) == len(sd) // 2 and all(float(v) == 8.0 for v in alphas.values())
    assert not needs_alpha(sd | alphas)
    rs = alpha_keys(sd, {"lora_alpha": 8, "use_rslora": True})
    assert all(float(v) == pytest.approx(8.0 * 4 / 4**0.5) for v in rs.values())
    pattern = alpha_keys(sd, {"lora_alpha": 8, "alpha_pattern": {"attn.to_q": 2}})
    assert {float(v) for k, v in pattern.items() if ".to_q." in k} == {2.0}


def test_loader_applies_the_trained_scale(peft_lora):
    base, sd, path = peft_lora
    # lora_alpha 8 / r 4 = scale 2: our strength 1 is the stock loader's strength 2.
    ours = h.ksample(load_peft_aware(base, str(path), 1.0))
    assert h.max_diff(ours, h.ksample(stock(base, sd, 2.0))) <= h.tolerance(ours)
    assert h.max_diff(ours, h.ksample(stock(base, sd, 1.0))) > 1e-3


def test_missing_config_warns_and_loads_like_the_stock_loader(peft_lora, caplog):
    base, sd, path = peft_lora
    (path.parent / "adapter_config.json").unlink()
    with caplog.at_level(logging.WARNING):
        out = h.ksample(load_peft_aware(base, str(path), 1.0))
    assert "adapter_config.json" in caplog.text and "scale 1" in caplog.text
    assert h.max_diff(out, h.ksample(stock(base, sd, 1.0))) <= h.tolerance(out)


def test_renamed_file_with_its_config_beside_it(tmp_path, peft_lora):
    base, sd, _ = peft_lora
    path = tmp_path / "sd3.5m_flow_grpo_pickscore.safetensors"
    safetensors.torch.save_file(sd, path)
    (tmp_path / "sd3.5m_flow_grpo_pickscore.json").write_text(json.dumps({"r": 4, "lora_alpha": 8}))
    out = h.ksample(load_peft_aware(base, str(path), 1.0))
    assert h.max_diff(out, h.ksample(stock(base, sd, 2.0))) <= h.tolerance(out)


def test_non_peft_lora_loads_exactly_as_stock(tmp_path):
    base = h.load_model("sd3")
    sd = tm.lora_for({k: v for k, v in base.model.diffusion_model.state_dict().items()}, 7)
    path = tmp_path / "plain.safetensors"
    safetensors.torch.save_file(sd, path)
    assert not needs_alpha(sd)
    assert h.max_diff(h.ksample(load_peft_aware(base, str(path), 0.7)), h.ksample(stock(base, sd, 0.7))) == 0.0


def test_rlg_with_a_peft_lora_rl_model(peft_lora):

    base, _, path = peft_lora
    rl = load_peft_aware(base, str(path), 1.0)
    ref_rl = h.ksample(rl)
    assert h.max_diff(h.ksample(h.rlg(base, rl, 1.0, 0, 1)), ref_rl) <= h.tolerance(ref_rl)
    assert RLGLoraLoaderModelOnly.define_schema().node_id == "RLGLoraLoaderModelOnly"


@pytest.mark.parametrize("content, reason", [
    (b"", "cannot be read"),
    (b"\x00" * 64, "cannot be read"),
    (b"PK\x03\x04 not a safetensors file", "cannot be read"),
])
def test_unreadable_lora_file_is_refused_by_name(tmp_path, content, reason):
    path = tmp_path / "broken.safetensors"
    path.write_bytes(content)
    with pytest.raises(RLGInputError, match=f"lora_name 'broken.safetensors' {reason}"):
        load_peft_aware(h.load_model("sd3"), str(path), 1.0)


def test_truncated_lora_file_is_refused_by_name(peft_lora, tmp_path):
    _, _, path = peft_lora
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(RLGInputError, match="truncated"):
        load_peft_aware(h.load_model("sd3"), str(cut), 1.0)


def test_lora_whose_keys_match_nothing_is_refused(tmp_path):
    sd15 = h.load_model("sd15")
    lora = tm.lora_for({k: v for k, v in sd15.model.diffusion_model.state_dict().items()}, 7)
    path = tmp_path / "sd15_lora.safetensors"
    safetensors.torch.save_file(lora, path)
    with pytest.raises(RLGInputError, match="none of its .* tensors fits .*SD3"):
        load_peft_aware(h.load_model("sd3"), str(path), 1.0)


@pytest.mark.parametrize("config, reason", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "not a PEFT config object"),
    ('{"r": 4}', "no lora_alpha"),
    ('{"r": 4, "lora_alpha": "eight"}', "not a number"),
    ('{"r": 4, "lora_alpha": 8, "alpha_pattern": {"to_q": "x"}}', "alpha_pattern"),
])
def test_broken_adapter_config_is_refused_naming_the_file(peft_lora, config, reason):
    base, _, path = peft_lora
    (path.parent / "adapter_config.json").write_text(config)
    with pytest.raises(RLGInputError, match=f"adapter_config.json cannot be used: .*{reason}"):
        load_peft_aware(base, str(path), 1.0)


def test_huge_adapter_config_is_not_read(peft_lora):
    base, _, path = peft_lora
    (path.parent / "adapter_config.json").write_text('{"lora_alpha": 8, "pad": "' + "x" * (2 << 20) + '"}')
    with pytest.raises(RLGInputError, match="not one \\(limit"):
        load_peft_aware(base, str(path), 1.0)


def test_layer_names_are_mapped_only_where_comfyui_does_not_map_them():
    from comfyui_rlg.nodes.peft_alpha import extra_key_map, layer_names

    lora = {"base_model.model.transformer_blocks.0.attn.to_q.lora_A.weight": 1,
            "base_model.model.transformer_blocks.0.attn.to_q.lora_B.weight": 2,
            "base_model.model.transformer_blocks.0.attn.to_q.alpha": 3,
            "base_model.model.single_transformer_blocks.0.attn.to_k.lora_A.weight": 4,
            "base_model.model.unknown.lora_A.weight": 5,
            "lora_unet_x.lora_down.weight": 6}
    names = layer_names(lora)
    assert names == {"base_model.model.transformer_blocks.0.attn.to_q",
                     "base_model.model.single_transformer_blocks.0.attn.to_k", "base_model.model.unknown",
                     "lora_unet_x"}
    # FLUX's key map knows diffusers layers as transformer.<layer>, Qwen-Image's also as <layer>: the PEFT name
    # takes the same target, the rows of a fused weight included.
    q, k = ("q", (0, 0, 8)), ("k", (0, 8, 8))
    flux_map = {"transformer.transformer_blocks.0.attn.to_q": q, "transformer.single_transformer_blocks.0.attn.to_k": k}
    assert extra_key_map(names, flux_map) == {"base_model.model.transformer_blocks.0.attn.to_q": q,
                                              "base_model.model.single_transformer_blocks.0.attn.to_k": k}
    assert extra_key_map(names, {"transformer_blocks.0.attn.to_q": "w"}) == {
        "base_model.model.transformer_blocks.0.attn.to_q": "w"}
    # ComfyUI 0.3.75 knows Z-Image's diffusers layers only under diffusion_model.: diffusers' transformer. prefix
    # and PEFT's are mapped there, and kohya-style names of the same paths (musubi-tuner) too.
    zimage_map = {"diffusion_model.layers.0.attention.to_q": q, "diffusion_model.layers.0.attention.out": "o"}
    trainer = {"transformer.layers.0.attention.to_q", "base_model.model.layers.0.attention.to_q",
               "lora_unet_layers_0_attention_to_q"}
    assert extra_key_map(trainer | {"lora_unet_layers_0_attention_out"}, zimage_map) == \
        {name: q for name in trainer} | {"lora_unet_layers_0_attention_out": "o"}
    # A family table names what the key map lacks; a kohya-style name two paths share is not guessed at.
    assert extra_key_map({"transformer.a.b"}, {}, {"a.b": "w"}) == {"transformer.a.b": "w"}
    assert extra_key_map({"lora_unet_a_b"}, {"diffusion_model.a_b": "w1"}, {"a.b": "w2"}) == {}
    # Where ComfyUI maps the names itself (SD3: Flow-GRPO's LoRAs), nothing is added.
    sd3_map = {"base_model.model.transformer_blocks.0.attn.to_q": "w",
               "transformer.transformer_blocks.0.attn.to_q": "w"}
    assert extra_key_map({"base_model.model.transformer_blocks.0.attn.to_q"}, sd3_map) == {}


def test_sd3_peft_lora_loads_exactly_as_before(peft_lora):
    base, sd, path = peft_lora
    ours = load_peft_aware(base, str(path), 1.0)
    stock_ = stock(base, sd | {k[: -len(".lora_A.weight")] + ".alpha": torch.tensor(8.0)
                              for k in sd if k.endswith(".lora_A.weight")}, 1.0)
    assert ours.patches.keys() == stock_.patches.keys()
