"""RLG on the families RL fine-tunes exist for: FLUX.1-dev, Qwen-Image-Edit, Wan 2.1, Wan 2.2, SDXL.

Tiny instances of ComfyUI's own classes (tests/tiny_families.py), sampled through comfy.sample and the
stock nodes. Per family: the w=0 / w=1 identities, the blend at every step, a separate RL model and a
LoRA RL model on the shared module (in the format the family's RL LoRAs are published in), which path
the LoRA takes and how many forwards each step costs, and refusal of pairs from two families.
"""

from __future__ import annotations

import json
import logging

import comfy.sample
import comfy.samplers
import pytest
import safetensors.torch
import torch

from comfyui_rlg.nodes.errors import RLGInputError
from comfyui_rlg.nodes.nodes_lora import load_peft_aware
from harness import sampling as h
from harness import tiny_families as tf
from harness.tiny_families import free_models, one_thread  # noqa: F401 (autouse fixtures)

IDENTITY_DIFFS = h.IDENTITY_DIFFS
FAST_PATH_MISSED = "did not take the fast path"

# Which way a LoRA RL model runs, per family (asserted below): every family's published LoRAs are plain
# LoRAs on linear layers that are called as modules with the batch first, so forward hooks run them,
# FLUX's slices of its fused qkv / linear1 included. The exception is a layer whose input is not batch-first:
# Wan's time embedding takes one row per frame when TI2V-5B gets a noise mask (image to video); where
# base and RL rows share a forward, that layer is recomputed the exact way (test below).
PATH = {"flux": "hooks", "qwen_image": "hooks", "wan21": "hooks", "wan22": "hooks", "wan22_5b": "hooks",
        "sdxl": "hooks"}




def ksample(model, family, batch=2, cfg=3.0, steps=3, sampler="euler", seed=42, positive=None, negative=None,
            latent_image=None, noise_mask=None):
    """What the KSampler node does (comfy.sample.sample), on the family's latent and conds."""
    if positive is None:
        positive, negative = tf.conds(family, batch)
    latent_image = tf.latent(family, batch) if latent_image is None else latent_image
    noise = comfy.sample.prepare_noise(latent_image, seed)
    return comfy.sample.sample(model, noise, steps, cfg, sampler, "simple", positive, negative, latent_image,
                               denoise=1.0, noise_mask=noise_mask, disable_pbar=True, seed=seed)


class NetworkForwards:
    """Counts forwards of a model's network itself (a pre-hook on its diffusion_model): every forward, an
    exact re-run inside the pack included, with the rows of each."""

    def __init__(self, patcher):
        self.module = patcher.model.diffusion_model
        self.calls = self.rows = 0

    def _count(self, module, args, kwargs):
        self.calls += 1
        self.rows += (args[0] if args else kwargs["x"]).shape[0]

    def __enter__(self):
        self.handle = self.module.register_forward_pre_hook(self._count, with_kwargs=True)
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def lora_rl(family: str, base, tmp_path=None):
    """The base plus an RL LoRA in its family's published format, loaded the way a workflow loads it.

    PEFT LoRAs (FLUX, Qwen-Image) through Load LoRA (PEFT aware) from a file with adapter_config.json;
    the others through the stock loader (comfy.sd.load_lora_for_models, what LoraLoaderModelOnly calls).
    """
    lora, config = tf.lora_for(base, family)
    if config is None:
        return tf.load_lora(base, lora)
    folder = tmp_path / f"{family}_rl_lora"
    folder.mkdir(exist_ok=True)
    safetensors.torch.save_file(lora, folder / "adapter_model.safetensors")
    (folder / "adapter_config.json").write_text(json.dumps(config))
    return load_peft_aware(base, str(folder / "adapter_model.safetensors"), 1.0)


def pair(family: str, form: str, tmp_path):
    base = tf.load(family)
    return base, (tf.load(family, rl_seed=1) if form == "separate" else lora_rl(family, base, tmp_path))


@pytest.mark.parametrize("family", tf.FAMILIES)
@pytest.mark.parametrize("form", ["separate", "lora"])
def test_w0_is_base_and_w1_is_rl(family, form, tmp_path):
    base, rl = pair(family, form, tmp_path)
    ref_base, ref_rl = ksample(base, family), ksample(rl, family)
    assert h.max_diff(ref_base, ref_rl) > 1e-3, "test models too similar to tell apart"
    d0 = h.max_diff(ksample(h.rlg(base, rl, 0.0, 0.0, 1.0), family), ref_base)
    d1 = h.max_diff(ksample(h.rlg(base, rl, 1.0, 0.0, 1.0), family), ref_rl)
    IDENTITY_DIFFS[f"{family} {form}"] = max(d0, d1)
    assert d0 <= h.tolerance(ref_base), f"w=0 differs from the base model by {d0}"
    assert d1 <= h.tolerance(ref_rl), f"w=1 differs from the RL model by {d1}"


@pytest.mark.parametrize("family", tf.FAMILIES)
@pytest.mark.parametrize("form", ["separate", "lora"])
def test_each_step_blends_base_and_rl(family, form, tmp_path):
    base, rl = pair(family, form, tmp_path)
    positive, negative = tf.conds(family, batch=2)
    sigmas = h.schedule(base, steps=3)
    gen = torch.Generator().manual_seed(3)
    xs = [torch.randn(tf.latent(family, 2).shape, generator=gen) * float(s) for s in sigmas[:-1]]
    probe = lambda m: h.probe_predictions(m, xs, sigmas, positive, negative, cfg=4.0)  # noqa: E731
    pred_base, pred_rl = probe(base), probe(rl)
    for w in (0.5, 2.0):
        for step, (b, r, g) in enumerate(zip(pred_base, pred_rl, probe(h.rlg(base, rl, w, 0.0, 1.0)), strict=True)):
            assert h.max_diff(b, r) > 1e-4
            expected = b + w * (r - b)
            assert h.max_diff(g, expected) <= 1e-5 * (1 + float(expected.abs().max())), f"w={w} step {step}"


@pytest.mark.parametrize("family", tf.FAMILIES)
def test_lora_path_and_forwards_per_step(family, tmp_path, caplog):
    """The way the family's RL LoRA runs, and what a step costs: two forwards (base, RL), or one of twice the rows."""
    base = tf.load(family)
    rl = lora_rl(family, base, tmp_path)
    steps, batch = 3, 2
    ref = {}
    for batched in (False, True):
        patched = h.rlg(base, rl, 1.5, 0.0, 1.0, batched=batched)
        term = h.rlg_wrapper(patched).terms[0]
        assert term.pair.form == "shared"
        assert term.pair.delta.hooks_only == (PATH[family] == "hooks")
        with caplog.at_level(logging.WARNING), NetworkForwards(base) as counter:
            caplog.clear()
            ref[batched] = ksample(patched, family, batch=batch, steps=steps)
        assert FAST_PATH_MISSED not in caplog.text
        rows = 2 * batch  # cond and uncond
        if batched:
            assert (counter.calls, counter.rows) == (steps, steps * 2 * rows)
        else:
            assert (counter.calls, counter.rows) == (2 * steps, 2 * steps * rows)
    assert h.max_diff(ref[True], ref[False]) <= h.tolerance(ref[False], 1e-4)


@pytest.mark.parametrize("family", tf.FAMILIES)
def test_separate_rl_model_forwards_per_step(family):
    base, rl = tf.load(family), tf.load(family, rl_seed=1)
    patched = h.rlg(base, rl, 1.5, 0.0, 1.0)
    assert h.rlg_wrapper(patched).terms[0].pair.form == "separate"
    with NetworkForwards(base) as base_count, NetworkForwards(rl) as rl_count:
        ksample(patched, family, steps=3)
    assert (base_count.calls, rl_count.calls) == (3, 3)
    # Outside the window only the RL model runs.
    with NetworkForwards(base) as base_count, NetworkForwards(rl) as rl_count:
        ksample(h.rlg(base, rl, 1.5, 1.0, 1.0), family, steps=3)
    assert (base_count.calls, rl_count.calls) == (0, 3)


@pytest.mark.parametrize("base_family, rl_family", [
    ("flux", "sd3"), ("sd3", "flux"), ("qwen_image", "wan21"), ("wan21", "qwen_image"), ("wan21", "wan22_5b"),
    ("wan22", "wan21"), ("sdxl", "sd15"), ("flux", "qwen_image"),
])
def test_pair_from_two_families_is_refused(base_family, rl_family):
    def model(family):
        return h.load_model(family) if family in ("sd3", "sd15") else tf.load(family)

    with pytest.raises(RLGInputError, match="fine-tuned twin") as err:
        h.rlg(model(base_family), model(rl_family), 1.5, 0.0, 1.0)
    assert "rl_model" in str(err.value)


def test_model_classes_are_comfyuis_own():
    import comfy.model_base

    for family in tf.FAMILIES:
        model = tf.load(family).model
        assert type(model.model_config).__name__ == tf.EXPECTED_CLASS[family], family
        assert type(model).__module__ == comfy.model_base.__name__


def _ti2v_image_to_video(batch: int):
    """What Wan22ImageToVideoLatent gives TI2V-5B for image to video: the image in the first latent frame and a
    noise mask that keeps it. With a mask, ComfyUI's WAN22 gives each frame its own timestep
    (model_base.WAN22.process_timestep), so Wan's time embedding runs on one row per frame, not per sample."""
    gen = torch.Generator().manual_seed(11)
    latent = tf.latent("wan22_5b", batch)
    latent[:, :, :1] = torch.randn(latent[:, :, :1].shape, generator=gen)
    mask = torch.ones(batch, 1, *latent.shape[2:])
    mask[:, :, :1] = 0.0
    return latent, mask


@pytest.mark.parametrize("batched", [False, True])
def test_layer_without_the_batch_first_takes_the_exact_path(batched, caplog):
    # Base and RL rows in one forward (batched): a hook cannot tell which of the per-frame rows of the time
    # embedding are the RL model's, so that layer is recomputed the exact way, said once, and the result is
    # still exact. In a forward of its own (two passes) every row is the RL model's: the hooks fit.
    base = tf.load("wan22_5b")
    rl = tf.load_lora(base, tf.module_lora(base, 5, "videox", alpha=2.0, match=lambda n: "time_embedding" in n or
                                           "attn" in n))
    latent, mask = _ti2v_image_to_video(batch=2)
    kw = dict(family="wan22_5b", latent_image=latent, noise_mask=mask, steps=3)
    ref_base, ref_rl = ksample(base, **kw), ksample(rl, **kw)
    for w, ref in ((0.0, ref_base), (1.0, ref_rl)):
        assert h.max_diff(ksample(h.rlg(base, rl, w, 0, 1, batched=batched), **kw), ref) <= h.tolerance(ref), w
    patched = h.rlg(base, rl, 2.0, 0, 1, batched=batched)
    with caplog.at_level(logging.WARNING), NetworkForwards(base) as counter:
        out = ksample(patched, **kw)
    two_pass = ksample(h.rlg(base, rl, 2.0, 0, 1, batched=False), **kw)
    assert h.max_diff(out, two_pass) <= h.tolerance(two_pass, 1e-4)
    rows = 2 * 2  # cond and uncond, batch 2
    if batched:  # first step: the shared forward of base and RL rows, then that forward again the exact way (its RL
        # rows kept); from then on the RL rows take a forward of their own, where the hooks fit
        assert caplog.text.count(FAST_PATH_MISSED) == 1 and "time_embedding" in caplog.text
        assert (counter.calls, counter.rows) == (2 * 3, 2 * 2 * rows + 2 * 2 * rows)
    else:
        assert FAST_PATH_MISSED not in caplog.text
        assert (counter.calls, counter.rows) == (2 * 3, 2 * 3 * rows)


# -- FLUX's fused layers --------------------------------------------------------------------------

def test_flux_peft_lora_on_fused_layers_runs_as_hooks_on_their_slices(tmp_path):
    # A diffusers-named LoRA on q, k, v (and the MLP input) of FLUX maps to dim-0 slices of one fused weight:
    # a double block's qkv, a single block's linear1 (q, k, v, mlp). The hooks add each LoRA to its slice of
    # the fused output; the RL model alone merges them into the weight. Both must agree.
    base = tf.load("flux")
    rl = lora_rl("flux", base, tmp_path)
    patched = h.rlg(base, rl, 1.0, 0.0, 1.0)
    delta = h.rlg_wrapper(patched).terms[0].pair.delta
    assert delta.hooks_only
    hidden = tf.unet_config("flux")["hidden_size"]
    slices = {layer.key: [lr.out_slice for lr in layer.lowrank] for layer in delta.layers}
    assert sorted(slices["diffusion_model.single_blocks.0.linear1.weight"]) == [
        (0, hidden), (hidden, hidden), (2 * hidden, hidden), (3 * hidden, 4 * hidden)]
    assert sorted(slices["diffusion_model.double_blocks.0.img_attn.qkv.weight"]) == [
        (0, hidden), (hidden, hidden), (2 * hidden, hidden)]
    assert slices["diffusion_model.double_blocks.0.img_attn.proj.weight"] == [None]
    positive, negative = tf.conds("flux", batch=2)
    sigmas = h.schedule(base, steps=3)
    xs = [torch.randn(tf.latent("flux", 2).shape, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    probe = lambda m: h.probe_predictions(m, xs, sigmas, positive, negative, cfg=1.0)  # noqa: E731
    for r, g in zip(probe(rl), probe(patched), strict=True):
        assert h.max_diff(g, r) <= 1e-5 * (1 + float(r.abs().max()))


# -- Wan 2.2: two experts, two stages ------------------------------------------------------------

def test_wan22_rlg_on_each_expert_with_two_ksampler_advanced_stages():
    # Wan 2.2 A14B samples the high-noise expert for the first steps and the low-noise expert for the rest,
    # each with its own reward LoRA (Wan2.2-Fun-Reward-LoRAs). RLG goes on each expert; at w=1 the two
    # stages are the RL experts alone, at w=0 the base experts.
    import nodes

    high, low = tf.load("wan22", seed=0), tf.load("wan22", seed=2)
    high_rl = tf.load_lora(high, tf.lora_for(high, "wan22", seed=7)[0])
    low_rl = tf.load_lora(low, tf.lora_for(low, "wan22", seed=8)[0])
    positive, negative = tf.conds("wan22", batch=1)
    latent = {"samples": tf.latent("wan22", 1)}

    def two_stages(expert_high, expert_low):
        sampler = nodes.KSamplerAdvanced()
        (stage1,) = sampler.sample(expert_high, "enable", 5, 4, 3.5, "euler", "simple", positive, negative, latent,
                                   0, 2, "enable")
        (stage2,) = sampler.sample(expert_low, "disable", 5, 4, 3.5, "euler", "simple", positive, negative, stage1,
                                   2, 10000, "disable")
        return stage2["samples"]

    ref_base, ref_rl = two_stages(high, low), two_stages(high_rl, low_rl)
    assert h.max_diff(ref_base, ref_rl) > 1e-3
    rlg = lambda w: two_stages(h.rlg(high, high_rl, w, 0, 1), h.rlg(low, low_rl, w, 0, 1))  # noqa: E731
    d0, d1 = h.max_diff(rlg(0.0), ref_base), h.max_diff(rlg(1.0), ref_rl)
    IDENTITY_DIFFS["wan22 two experts, two stages"] = max(d0, d1)
    assert d0 <= h.tolerance(ref_base) and d1 <= h.tolerance(ref_rl), (d0, d1)
    assert h.max_diff(rlg(1.5), ref_rl) > 1e-3


# -- Loading what is published -------------------------------------------------------------------

def _entries(patcher) -> list:
    return [entry for entries in patcher.patches.values() for entry in entries]


def _scale(entry) -> float:
    """alpha / rank of a LoRA patch entry: the scale ComfyUI applies it at (strength 1)."""
    up, down, alpha = entry[1].weights[:3]
    return float(alpha) / down.shape[0]


@pytest.mark.parametrize("family", ["flux", "qwen_image"])
def test_peft_lora_loads_at_its_trained_strength_with_every_key_mapped(family, tmp_path, caplog):
    # BoxFlow-GRPO (r 64, alpha 128) and ARR-RPO (FLUX r 16 / 32, Qwen-Image-Edit r 32 / 64) save PEFT files:
    # base_model.model.<diffusers layer>, lora_alpha in adapter_config.json. Checked against the key names of
    # ComfyUI's full-size model of the family (built on the meta device: names and shapes, no weights).
    model = tf.build_full_size(family)
    lora = tf.peft_lora(model, family, seed=1, rank=2)
    layers = len(lora) // 2
    path = tmp_path / "adapter_model.safetensors"
    safetensors.torch.save_file(lora, path)
    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 2, "lora_alpha": 4, "peft_type": "LORA"}))
    with caplog.at_level(logging.WARNING):
        rl = load_peft_aware(model, str(path), 1.0)
    assert "not loaded" not in caplog.text.lower()
    entries = _entries(rl)
    assert len(entries) == layers > 100
    assert {_scale(e) for e in entries} == {2.0}  # lora_alpha / r, as trained
    if family == "flux":  # q, k, v and the MLP input of every single block: slices of its linear1
        linear1 = rl.patches["diffusion_model.single_blocks.37.linear1.weight"]
        assert sorted(e[3] for e in linear1) == [(0, 0, 3072), (0, 3072, 3072), (0, 6144, 3072), (0, 9216, 12288)]


def test_wan_fun_reward_lora_loads_through_the_stock_path_with_its_alpha(caplog):
    # Wan2.2-Fun-Reward-LoRAs (rank 128, network_alpha 64) are saved by VideoX-Fun's LoRANetwork: every linear
    # layer of the transformer as lora_unet__<module path>, with alpha. ComfyUI's stock loader converts that
    # format (comfy.lora_convert) and maps every key onto its own Wan 2.2 A14B expert (full size, meta device).
    model = tf.build_full_size("wan22")
    lora = tf.module_lora(model, 1, "videox", rank=2, alpha=1.0)
    linears = sum(isinstance(m, torch.nn.Linear) for m in model.model.diffusion_model.modules())
    with caplog.at_level(logging.WARNING):
        rl = tf.load_lora(model, lora)
    assert "not loaded" not in caplog.text.lower()
    entries = _entries(rl)
    assert len(entries) == len(lora) // 3 == linears > 300
    assert {_scale(e) for e in entries} == {0.5}  # network_alpha / rank, as trained (64 / 128)


def test_diffusers_flux_transformer_is_read_as_flux_dev_and_paired():
    # SRPO and MixGRPO ship the FLUX.1-dev transformer in diffusers format. UNETLoader converts such a file
    # (comfy.model_detection.convert_diffusers_mmdit) and detects it: full size, on the meta device, it is
    # FLUX.1-dev with exactly flux1-dev's network config and keys, so RLG takes it as rl_model.
    import comfy.model_detection

    base = tf.build_full_size("flux")
    comfy_sd = base.model.diffusion_model.state_dict()
    detected = comfy.model_detection.detect_unet_config(comfy_sd, "")  # what flux1-dev.safetensors gives
    assert detected == detected | tf.full_size_config("flux")  # FLUX.1-dev: 3072 wide, 19 + 38 blocks, guidance
    converted = comfy.model_detection.convert_diffusers_mmdit(tf.to_diffusers_flux(base, comfy_sd), "")
    assert set(converted) == set(comfy_sd)
    assert all(converted[k].shape == comfy_sd[k].shape for k in comfy_sd)
    config = comfy.model_detection.model_config_from_unet(converted, "")
    assert type(config).__name__ == "Flux" and config.unet_config == detected
    rl = tf.build_full_size("flux", config.unet_config)
    assert h.rlg_wrapper(h.rlg(base, rl, 1.5, 0.0, 1.0)).terms[0].pair.form == "separate"


def test_diffusers_flux_transformer_converts_exactly_at_a_tiny_size():
    # ComfyUI's detector fixes FLUX's 24 heads of 128, so UNETLoader cannot build a tiny FLUX from a file
    # (it raises that the hidden size is not divisible by 24); the conversion itself is checked here, value by
    # value, and the converted model runs as rl_model.
    import comfy.model_detection

    rl_sd = tf.state_dict("flux", rl_seed=1)
    base = tf.load("flux")
    converted = comfy.model_detection.convert_diffusers_mmdit(tf.to_diffusers_flux(base, rl_sd), "")
    assert set(converted) == set(rl_sd) and all(torch.equal(converted[k], rl_sd[k]) for k in rl_sd)
    rl = tf.build("flux", converted)
    ref = ksample(rl, "flux", steps=2)
    assert h.max_diff(ksample(h.rlg(base, rl, 1.0, 0, 1), "flux", steps=2), ref) <= h.tolerance(ref)


@pytest.mark.parametrize("family, key, values", [("flux", "guidance", (1.5, 5.0)), ("sdxl", "width", (256, 1024))])
def test_conditioning_the_family_embeds_reaches_both_models(family, key, values, tmp_path):
    # FLUX.1-dev embeds FluxGuidance's value, SDXL the image size in its ADM vector: both passes get it.
    base, rl = pair(family, "lora", tmp_path)
    outs = []
    for value in values:
        positive, negative = tf.conds(family, batch=2)
        for cond in (positive, negative):
            cond[0][1][key] = value
        kw = dict(positive=positive, negative=negative, steps=2)
        ref = ksample(rl, family, **kw)
        assert h.max_diff(ksample(h.rlg(base, rl, 1.0, 0, 1), family, **kw), ref) <= h.tolerance(ref)
        outs.append(ref)
    assert h.max_diff(*outs) > 1e-3, f"the tiny {family} ignores {key}"


# -- A second full model, made small: a difference LoRA from ComfyUI's own extraction node ---------------

@pytest.mark.parametrize("bias_diff", [False, True])
def test_difference_lora_from_comfyuis_extract_node_runs_on_the_shared_module(bias_diff):
    # What a user can do about a second 12 B FLUX transformer (SRPO): ModelMergeSubtract (RL - base) into
    # Extract and Save Lora (LoraSave), then LoraLoaderModelOnly on the base. The LoRA approximates the RL
    # model (rank, fp16, the extractor clips its largest 1 %); RLG with it is exact for that LoRA model, on the
    # hooks where the LoRA is plain (bias_diff off) and with weight functions for the bias differences.
    from comfy_extras.nodes_lora_extract import LORAType, calc_lora_model
    from comfy_extras.nodes_model_merging import ModelSubtract

    base = tf.load("flux")
    tuned = {k: v + (0.3 * v.std() * torch.randn(v.shape, generator=torch.Generator().manual_seed(1))
                     if v.ndim == 2 or k.endswith(".bias") else 0) for k, v in tf.state_dict("flux").items()}
    full_rl = tf.build("flux", tuned)
    (difference,) = ModelSubtract().merge(full_rl, base, 1.0)
    lora = calc_lora_model(difference, 64, "diffusion_model.", "diffusion_model.", {}, LORAType.STANDARD, bias_diff)
    rl = tf.load_lora(base, lora)
    patched = h.rlg(base, rl, 1.0, 0, 1)
    assert h.rlg_wrapper(patched).terms[0].pair.delta.hooks_only == (not bias_diff)
    ref_rl, ref_full, ref_base = ksample(rl, "flux", steps=2), ksample(full_rl, "flux", steps=2), \
        ksample(base, "flux", steps=2)
    assert h.max_diff(ksample(patched, "flux", steps=2), ref_rl) <= h.tolerance(ref_rl)
    assert h.max_diff(ref_rl, ref_full) < 0.5 * h.max_diff(ref_base, ref_full)  # most of the RL model's change
