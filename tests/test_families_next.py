"""RLG on the families users bring next: Z-Image, FLUX.2 (dev; klein where the host loads it), HunyuanVideo 1.5,
LTX-Video (LTXV; LTX-2 where the host has it).

Tiny instances of ComfyUI's own classes (harness/tiny_families.py), sampled through comfy.sample: per family the
w=0 / w=1 identities, the blend at every step, a separate RL model and a LoRA RL model in the format its RL
trainers save, which path each LoRA takes and what a step costs, the conditioning each family adds reaching both
passes, refusal of pairs from two families. Then the LoRA files each family's trainers write
(harness/trainer_loras.py): what ComfyUI's stock loader maps of them on this host, that Load LoRA (PEFT aware) maps
every layer at its trained strength, on the full-size models' key maps (meta device) and, weight by weight, on the
tiny models; and the tiny by-file stand-ins UNETLoader detects.
"""

from __future__ import annotations

import collections
import functools
import json
import logging

import comfy.lora
import comfy.lora_convert
import comfy.sample
import comfy.samplers
import comfy.utils
import pytest
import safetensors.torch
import torch

from comfyui_rlg.nodes.errors import RLGInputError
from comfyui_rlg.nodes.model_pair import PairForm
from comfyui_rlg.nodes.nodes_lora import load_lora_tensors, load_peft_aware
from comfyui_rlg.nodes.rl_delta import LayerPath
from harness import host
from harness import sampling as h
from harness import tiny_families as tf
from harness import trainer_loras as tl
from harness.tiny_families import free_models, one_thread  # noqa: F401 (autouse fixtures)

IDENTITY_DIFFS = h.IDENTITY_DIFFS
FAST_PATH_MISSED = "did not take the fast path"
VERSION = host.comfy_version()


def families(names=tf.NEXT_FAMILIES):
    return [pytest.param(f, marks=pytest.mark.skipif(bool(tf.missing(f)), reason=str(tf.missing(f))), id=f)
            for f in names]


def family_formats():
    return [pytest.param(f, fmt, marks=pytest.mark.skipif(bool(tf.missing(f)), reason=str(tf.missing(f))),
                         id=f"{f}-{fmt}") for f in tf.NEXT_FAMILIES for fmt in tl.FORMATS[f]]


# The format each family's RL LoRAs come in: Flow-Factory's GRPO / DiffusionNFT LoRAs for Z-Image and FLUX.2 (PEFT),
# musubi-tuner's for HunyuanVideo 1.5 (no published RL LoRA yet; musubi is its LoRA trainer), LTX-Video-Trainer's
# (diffusers) for LTXV and the LTX-2 trainer's for LTX-2.
RL_FORMAT = {"z_image": "peft", "flux2": "peft", "flux2_klein": "peft", "hunyuan_video15": "musubi",
             "ltxv": "diffusers", "ltxav": "ltx-trainer"}




def flat(x: torch.Tensor) -> torch.Tensor:
    """A latent as one tensor: LTX-2's nested video + audio latents concatenated."""
    return torch.cat([t.flatten() for t in x.unbind()]) if getattr(x, "is_nested", False) else x


def ksample(model, family, batch=2, cfg=3.0, steps=3, seed=42, positive=None, negative=None, latent_image=None,
            noise_mask=None):
    """What the KSampler node does (comfy.sample.sample), on the family's latent and conds."""
    if positive is None:
        positive, negative = tf.conds(family, batch)
    latent_image = tf.latent(family, batch) if latent_image is None else latent_image
    noise = comfy.sample.prepare_noise(latent_image, seed)
    return flat(comfy.sample.sample(model, noise, steps, cfg, "euler", "simple", positive, negative, latent_image,
                                    denoise=1.0, noise_mask=noise_mask, disable_pbar=True, seed=seed))


def probe(model, family, xs, sigmas, positive, negative, cfg):
    """h.probe_predictions on the family's latent: nested latents (LTX-2) go in packed, as the sampler packs them."""
    outputs = []

    def evaluate(model_k, noise, sigmas_, extra_args=None, callback=None, disable=None):
        for x, sigma in zip(xs, sigmas_[:-1], strict=True):
            outputs.append(model_k(x, sigma * x.new_ones([x.shape[0]]), **(extra_args or {})).clone())
        return noise

    guider = comfy.samplers.CFGGuider(model)
    guider.set_conds(positive, negative)
    guider.set_cfg(cfg)
    template = tf.latent(family, xs[0].shape[0])
    guider.sample(template, tf.latent(family, xs[0].shape[0]), comfy.samplers.KSAMPLER(evaluate), sigmas,
                  disable_pbar=True, seed=0)
    return outputs


def sampler_shape(family, batch):
    """The latent's shape as the model sees it in sampling (LTX-2's packed to batch x 1 x tokens)."""
    latent = tf.latent(family, batch)
    return comfy.utils.pack_latents(latent.unbind())[0].shape if getattr(latent, "is_nested", False) else latent.shape


def save_lora(lora: tl.TrainerLoRA, folder) -> str:
    """The file as the trainer leaves it: adapter_model.safetensors (with its metadata), adapter_config.json."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "adapter_model.safetensors"
    safetensors.torch.save_file(lora.state_dict, path, metadata=lora.metadata)
    if lora.adapter_config is not None:
        (folder / "adapter_config.json").write_text(json.dumps(lora.adapter_config))
    return str(path)


def lora_rl(family, base, tmp_path, fmt=None, seed=7):
    """The base plus an RL LoRA in the format its trainer saves, through Load LoRA (PEFT aware)."""
    fmt = fmt or RL_FORMAT[family]
    lora = tl.trainer_lora(base, family, fmt, seed=seed)
    return load_peft_aware(base, save_lora(lora, tmp_path / f"{family}_{fmt}"), 1.0)


def pair(family, form, tmp_path):
    base = tf.load(family)
    return base, (tf.load(family, rl_seed=1) if form == "separate" else lora_rl(family, base, tmp_path))


class NetworkForwards:
    """Counts forwards of a model's network itself (a pre-hook on its diffusion_model), with the rows of each."""

    def __init__(self, patcher):
        self.module = patcher.model.diffusion_model
        self.calls = self.rows = 0

    def _count(self, module, args, kwargs):
        x = args[0] if args else kwargs["x"]
        self.calls += 1
        self.rows += (x[0] if isinstance(x, list | tuple) else x).shape[0]  # LTX-2: [video, audio]

    def __enter__(self):
        self.handle = self.module.register_forward_pre_hook(self._count, with_kwargs=True)
        return self

    def __exit__(self, *exc):
        self.handle.remove()


# -- The families in ComfyUI's classes --------------------------------------------------------------------------

@pytest.mark.parametrize("family", families())
def test_model_classes_are_comfyuis_own(family):
    import comfy.model_base

    model = tf.load(family).model
    assert type(model.model_config).__name__ == tf.EXPECTED_CLASS[family]
    assert type(model).__module__ == comfy.model_base.__name__
    channels = {"z_image": 16, "flux2": 128, "flux2_klein": 128, "hunyuan_video15": 32, "ltxv": 128, "ltxav": 128}
    assert model.latent_format.latent_channels == channels[family]
    video = tf.latent(family)
    assert (video.unbind()[0] if video.is_nested else video).ndim == (5 if family in ("hunyuan_video15", "ltxv",
                                                                                       "ltxav") else 4)


def test_flux2_klein_is_loadable_here_exactly_where_its_detector_reads_its_heads():
    # klein 4B / 9B files load only where the detector derives the heads from the width (ComfyUI 0.33); 0.3.75
    # and 0.8.0 fix FLUX.2 dev's 48 and fail on klein's 24 / 32. The tests follow the host.
    assert (tf.missing("flux2_klein") is None) == (host.version_tuple() >= (0, 33, 0))
    assert (tf.missing("ltxav") is None) == (host.version_tuple() >= (0, 8, 0))


@pytest.mark.parametrize("family", families())
@pytest.mark.parametrize("form", ["separate", "lora"])
def test_w0_is_base_and_w1_is_rl(family, form, tmp_path):
    base, rl = pair(family, form, tmp_path)
    ref_base, ref_rl = ksample(base, family), ksample(rl, family)
    assert h.max_diff(ref_base, ref_rl) > 1e-3, "test models too similar to tell apart"
    d0 = h.max_diff(ksample(h.rlg(base, rl, 0.0), family), ref_base)
    d1 = h.max_diff(ksample(h.rlg(base, rl, 1.0), family), ref_rl)
    IDENTITY_DIFFS[f"{family} {form}"] = max(d0, d1)
    assert d0 <= h.tolerance(ref_base), f"w=0 differs from the base model by {d0}"
    assert d1 <= h.tolerance(ref_rl), f"w=1 differs from the RL model by {d1}"


@pytest.mark.parametrize("family", families())
@pytest.mark.parametrize("form", ["separate", "lora"])
def test_each_step_blends_base_and_rl(family, form, tmp_path):
    base, rl = pair(family, form, tmp_path)
    positive, negative = tf.conds(family, batch=2)
    sigmas = h.schedule(base, steps=3)
    gen = torch.Generator().manual_seed(3)
    xs = [torch.randn(sampler_shape(family, 2), generator=gen) * float(s) for s in sigmas[:-1]]
    run = lambda m: probe(m, family, xs, sigmas, positive, negative, cfg=4.0)  # noqa: E731
    pred_base, pred_rl = run(base), run(rl)
    for w in (0.5, 2.0):
        for step, (b, r, g) in enumerate(zip(pred_base, pred_rl, run(h.rlg(base, rl, w)), strict=True)):
            assert h.max_diff(b, r) > 1e-4
            expected = b + w * (r - b)
            assert h.max_diff(g, expected) <= 1e-5 * (1 + float(expected.abs().max())), f"w={w} step {step}"


@pytest.mark.parametrize("family", families())
def test_lora_rl_model_path_and_forwards_per_step(family, tmp_path, caplog):
    # The RL LoRA in its trainer's format, all-linear: plain layers run as hooks, so off the CPU (batched) base and
    # RL rows share one forward of twice the rows. FLUX.2's diffusers-named final modulation (norm_out.linear) keeps
    # its rows in the other order: ComfyUI maps it with a swap function, which RLG runs as a weight function, so
    # that LoRA takes a forward of its own (two a step), still exact.
    base = tf.load(family)
    rl = lora_rl(family, base, tmp_path)
    swapped = family in ("flux2", "flux2_klein")
    steps, batch = 3, 2
    ref = {}
    for batched in (False, True):
        patched = h.rlg(base, rl, 1.5, batched=batched)
        delta = h.rlg_wrapper(patched).terms[0].pair.delta
        assert h.rlg_wrapper(patched).terms[0].pair.form is PairForm.SHARED
        assert delta.hooks_only is not swapped
        functions = [layer.key for layer in delta.layers if layer.fast is LayerPath.FUNCTION]
        assert functions == (["diffusion_model.final_layer.adaLN_modulation.1.weight"] if swapped else [])
        with caplog.at_level(logging.WARNING), NetworkForwards(base) as counter:
            caplog.clear()
            ref[batched] = ksample(patched, family, batch=batch, steps=steps)
        assert FAST_PATH_MISSED not in caplog.text
        rows = 2 * batch  # cond and uncond
        shared = batched and not swapped
        assert (counter.calls, counter.rows) == ((steps, steps * 2 * rows) if shared else (2 * steps, 2 * steps * rows))
    assert h.max_diff(ref[True], ref[False]) <= h.tolerance(ref[False], 1e-4)


@pytest.mark.parametrize("family", families())
def test_separate_rl_model_runs_its_own_module_and_not_outside_the_window(family):
    base, rl = tf.load(family), tf.load(family, rl_seed=1)
    assert h.rlg_wrapper(h.rlg(base, rl, 1.5)).terms[0].pair.form is PairForm.SEPARATE
    with NetworkForwards(base) as base_count, NetworkForwards(rl) as rl_count:
        ksample(h.rlg(base, rl, 1.5), family, steps=3)
    assert (base_count.calls, rl_count.calls) == (3, 3)
    with NetworkForwards(base) as base_count, NetworkForwards(rl) as rl_count:
        ksample(h.rlg(base, rl, 1.5, 1.0, 1.0), family, steps=3)
    assert (base_count.calls, rl_count.calls) == (0, 3)


def _other(family):
    return h.load_model(family) if family in ("sd3", "sd15") else tf.load(family)


@pytest.mark.parametrize("base_family, rl_family", [
    pytest.param(b, r, marks=pytest.mark.skipif(bool(tf.missing(b) or tf.missing(r)),
                                                reason=str(tf.missing(b) or tf.missing(r))), id=f"{b}-{r}")
    for b, r in [("z_image", "flux"), ("flux", "z_image"), ("flux2", "flux"), ("flux2", "flux2_klein"),
                 ("flux2_klein", "flux2"), ("flux2", "ltxv"), ("hunyuan_video15", "wan22_5b"),
                 ("hunyuan_video15", "wan21"), ("ltxv", "ltxav"), ("ltxav", "ltxv"), ("z_image", "sd3")]])
def test_pair_from_two_families_is_refused(base_family, rl_family):
    # Z-Image and FLUX.1 share their latent space, FLUX.2 and LTX-Video their 128 channels, dev and klein the class.
    with pytest.raises(RLGInputError, match="fine-tuned twin") as err:
        h.rlg(_other(base_family), _other(rl_family), 1.5)
    assert "rl_model" in str(err.value)


# -- What each family adds to the conditioning reaches both passes ------------------------------------------------

def _conditioned(family, tmp_path, variants, form="lora"):
    """For each variant of the conditioning: RLG at w=1 equals the RL model alone; the variants differ."""
    base, rl = pair(family, form, tmp_path)
    outs = []
    for positive, negative, latent in variants:
        kw = dict(positive=positive, negative=negative, latent_image=latent, steps=2)
        ref = ksample(rl, family, **kw)
        assert h.max_diff(ksample(h.rlg(base, rl, 1.0), family, **kw), ref) <= h.tolerance(ref)
        assert h.max_diff(ksample(h.rlg(base, rl, 0.0), family, **kw), ksample(base, family, **kw)) <= \
            h.tolerance(ref)
        outs.append(ref)
    return outs


@pytest.mark.parametrize("family", families(["flux2"]))
def test_flux2_guidance_and_its_larger_latent_reach_both_passes(family, tmp_path):
    # FLUX.2 dev embeds FluxGuidance's value (guidance_in); its latent has 128 channels at 1/16 of the image.
    variants = []
    for guidance, size in ((1.5, 8), (5.0, 8), (5.0, 16)):
        positive, negative = tf.conds(family, 2)
        for cond in (positive, negative):
            cond[0][1]["guidance"] = guidance
        variants.append((positive, negative, tf.latent(family, 2, size=size)))
    outs = _conditioned(family, tmp_path, variants)
    assert h.max_diff(outs[0], outs[1]) > 1e-3, "the tiny FLUX.2 dev ignores guidance"
    assert outs[2].shape == (2, 128, 8, 8)


@pytest.mark.parametrize("form", ["separate", "lora"])
def test_z_image_padded_caption_tokens_reach_both_passes(form, tmp_path):
    # NextDiT pads the caption to a multiple of 32 tokens with its learned cap_pad_token: 7 and 40 tokens here.
    variants = []
    for tokens in (tf.Z_IMAGE_TOKENS, 40):
        positive, negative = tf.conds("z_image", 2)
        gen = torch.Generator().manual_seed(tokens)
        for cond in (positive, negative):
            cond[0][0] = torch.randn(2, tokens, cond[0][0].shape[-1], generator=gen)
        variants.append((positive, negative, None))
    outs = _conditioned("z_image", tmp_path, variants, form)
    assert h.max_diff(*outs) > 1e-3


def test_z_image_rl_pass_pads_with_the_rl_models_own_pad_token():
    # A separate RL model that differs from the base only in its cap_pad_token: the RL pass must pad with it.
    sd = tf.state_dict("z_image")
    pad = {k: v + 0.5 for k, v in sd.items() if k.endswith("cap_pad_token")}
    assert pad, "the tiny Z-Image has no cap_pad_token"
    base, rl = tf.load("z_image"), tf.build("z_image", sd | pad)
    ref_base, ref_rl = ksample(base, "z_image"), ksample(rl, "z_image")
    assert h.max_diff(ref_base, ref_rl) > 1e-3, "the pad token does not reach the output"
    assert h.max_diff(ksample(h.rlg(base, rl, 1.0), "z_image"), ref_rl) <= h.tolerance(ref_rl)
    assert h.max_diff(ksample(h.rlg(base, rl, 0.0), "z_image"), ref_base) <= h.tolerance(ref_base)


@pytest.mark.parametrize("form", ["separate", "lora"])
def test_hunyuan_video15_glyph_and_image_conditioning_reach_both_passes(form, tmp_path):
    # The ByT5 glyph embeddings (byt5_in), and for image to video the start image's latent with its mask (the
    # model's concat channels) and the SigLIP embedding (vision_in, positive only). The LoRA here is diffusers'
    # all-linear one, so byt5_in and vision_in carry RL weights of their own.
    positive, negative = tf.conds("hunyuan_video15", 2)
    no_glyphs = [[[c[0][0], {k: v for k, v in c[0][1].items() if k != "conditioning_byt5small"}]]
                 for c in (positive, negative)]
    variants = [(positive, negative, None), (*no_glyphs, None),
                (*tf.hunyuan_video15_image_conds(positive, negative), None)]
    if form == "lora":
        base = tf.load("hunyuan_video15")
        rl = lora_rl("hunyuan_video15", base, tmp_path, fmt="diffusers")
        outs = []
        for pos, neg, _ in variants:
            kw = dict(positive=pos, negative=neg, steps=2)
            ref = ksample(rl, "hunyuan_video15", **kw)
            assert h.max_diff(ksample(h.rlg(base, rl, 1.0), "hunyuan_video15", **kw), ref) <= h.tolerance(ref)
            outs.append(ref)
    else:
        outs = _conditioned("hunyuan_video15", tmp_path, variants, form)
    assert h.max_diff(outs[0], outs[1]) > 1e-3 and h.max_diff(outs[0], outs[2]) > 1e-3


@pytest.mark.parametrize("family", families(["ltxv", "ltxav"]))
def test_ltx_frame_rate_reaches_both_passes(family, tmp_path):
    variants = []
    for rate in (24.0, 8.0):
        positive, negative = tf.conds(family, 2)
        for cond in (positive, negative):
            cond[0][1]["frame_rate"] = rate
        variants.append((positive, negative, None))
    assert h.max_diff(*_conditioned(family, tmp_path, variants)) > 1e-3


# -- LTX-Video image to video: a timestep per token ---------------------------------------------------------------

@pytest.mark.parametrize("batched", [False, True])
def test_ltxv_image_to_video_time_embedding_lora_takes_the_exact_path_where_rows_are_tokens(batched, caplog):
    # With a noise mask (LTXVImgToVideo), ComfyUI's LTXV gives every token its own timestep, so the time embedding
    # (adaln_single) runs on one row per token, not per sample. An all-linear LoRA has layers there: in a forward
    # shared with the base's rows a hook cannot tell which rows are the RL model's, so that first step is redone the
    # exact way, said once, and the RL rows take a forward of their own from then on. Exact either way.
    base = tf.load("ltxv")
    lora = tl.trainer_lora(base, "ltxv", "comfy", seed=5)
    rl = tf.load_lora(base, lora.state_dict)
    latent, mask = tf.image_to_video_latent("ltxv", batch=2)
    kw = dict(family="ltxv", latent_image=latent, noise_mask=mask, steps=3)
    ref_base, ref_rl = ksample(base, **kw), ksample(rl, **kw)
    for w, ref in ((0.0, ref_base), (1.0, ref_rl)):
        assert h.max_diff(ksample(h.rlg(base, rl, w, batched=batched), **kw), ref) <= h.tolerance(ref), w
    with caplog.at_level(logging.WARNING), NetworkForwards(base) as counter:
        out = ksample(h.rlg(base, rl, 2.0, batched=batched), **kw)
    two_pass = ksample(h.rlg(base, rl, 2.0, batched=False), **kw)
    assert h.max_diff(out, two_pass) <= h.tolerance(two_pass, 1e-4)
    rows = 2 * 2  # cond and uncond, batch 2
    if batched:
        assert caplog.text.count(FAST_PATH_MISSED) == 1 and "adaln_single" in caplog.text
        assert (counter.calls, counter.rows) == (2 * 3, 2 * 2 * rows + 2 * 2 * rows)
    else:
        assert FAST_PATH_MISSED not in caplog.text
        assert (counter.calls, counter.rows) == (2 * 3, 2 * 3 * rows)


@pytest.mark.parametrize("family", families(["ltxv", "ltxav"]))
def test_ltx_image_to_video_attention_lora_shares_the_forward(family, tmp_path, caplog):
    # The LTX trainers' default LoRA (attention only) never meets the per-token rows: one forward of twice the rows.
    base = tf.load(family)
    fmt = "ltx-trainer" if family == "ltxav" else "diffusers"
    rl = lora_rl(family, base, tmp_path, fmt=fmt)
    assert all(".attn" in key or "_attn" in key for key in rl.patches)
    latent, mask = tf.image_to_video_latent(family, batch=2) if family == "ltxv" else (None, None)
    kw = dict(family=family, latent_image=latent, noise_mask=mask, steps=3)
    with caplog.at_level(logging.WARNING), NetworkForwards(base) as counter:
        out = ksample(h.rlg(base, rl, 2.0, batched=True), **kw)
    assert FAST_PATH_MISSED not in caplog.text
    assert counter.calls == 3
    two_pass = ksample(h.rlg(base, rl, 2.0, batched=False), **kw)
    assert h.max_diff(out, two_pass) <= h.tolerance(two_pass, 1e-4)


def test_ltx2_rl_models_get_their_own_text_connectors_on_0_33():
    # ComfyUI 0.33 runs LTX-2's text connectors inside the diffusion model, in extra_conds, on the conditioning its
    # text encoder leaves unprocessed, once, with the sampled (base) model. RLG encodes each cond again for an RL
    # model whose connectors differ (a full RL checkpoint) or whose LoRA touches them, and gives it its own.
    if tf.missing("ltxav") or host.version_tuple() < (0, 33, 0):
        pytest.skip("the text connectors live in the text encoder before ComfyUI 0.33")
    base, rl = tf.load("ltxav"), tf.load("ltxav", rl_seed=1)
    width = tf.unet_config("ltxav")["caption_channels"]
    gen = torch.Generator().manual_seed(2)
    # As the text encoder leaves it: no attention mask (the connectors pad the caption to their registers).
    unprocessed = [[[torch.randn(2, 8, width, generator=gen),
                     {"frame_rate": 24.0, "pooled_output": None, "unprocessed_ltxav_embeds": True}]]
                   for _ in range(2)]
    kw = dict(positive=unprocessed[0], negative=unprocessed[1], steps=2)
    ref_rl, ref_base = ksample(rl, "ltxav", **kw), ksample(base, "ltxav", **kw)
    assert h.max_diff(ksample(h.rlg(base, rl, 1.0), "ltxav", **kw), ref_rl) <= h.tolerance(ref_rl)
    assert h.max_diff(ksample(h.rlg(base, rl, 0.0), "ltxav", **kw), ref_base) <= h.tolerance(ref_base)
    # A LoRA on the connectors alone: the RL model differs from the base only in how it encodes the prompt.
    connector_lora = tf.module_lora(base, 5, "kohya", alpha=4.0, match=lambda n: "embeddings_connector" in n)
    assert connector_lora
    rl_lora = tf.load_lora(base, connector_lora)
    ref_lora = ksample(rl_lora, "ltxav", **kw)
    assert h.max_diff(ref_lora, ref_base) > 1e-3
    got = ksample(h.rlg(base, rl_lora, 1.0), "ltxav", **kw)
    assert h.max_diff(got, ref_lora) <= h.tolerance(ref_lora, 1e-4)


# -- The LoRA files trainers write ---------------------------------------------------------------------------------

# How many layers of each format ComfyUI's stock loader maps on the full-size model, per host (the rest it drops
# with "lora key not loaded"); Load LoRA (PEFT aware) maps all of them (DIFFUSERS_LINEARS and the trainer's targets).
STOCK_MAPS = {
    ("z_image", "ai-toolkit"): {"0.3.75": 276, "0.8.0": 276, "0.33.0": 276},
    ("z_image", "diffusers"): {"0.3.75": 0, "0.8.0": 276, "0.33.0": 276},
    ("z_image", "peft"): {"0.3.75": 0, "0.8.0": 0, "0.33.0": 0},
    ("z_image", "musubi"): {"0.3.75": 90, "0.8.0": 90, "0.33.0": 90},  # of 210: not attention's to_q/k/v/out
    ("flux2", "ai-toolkit"): {"0.3.75": 171, "0.8.0": 171, "0.33.0": 171},
    ("flux2", "musubi"): {"0.3.75": 160, "0.8.0": 160, "0.33.0": 160},
    ("flux2", "diffusers"): {"0.3.75": 68, "0.8.0": 68, "0.33.0": 196},
    ("flux2", "peft"): {"0.3.75": 0, "0.8.0": 0, "0.33.0": 0},
    ("flux2_klein", "ai-toolkit"): {"0.33.0": 89},
    ("flux2_klein", "musubi"): {"0.33.0": 80},
    ("flux2_klein", "diffusers"): {"0.33.0": 104},
    ("flux2_klein", "peft"): {"0.33.0": 0},
    ("hunyuan_video15", "diffusers"): {"0.3.75": 0, "0.8.0": 0, "0.33.0": 0},
    ("hunyuan_video15", "peft"): {"0.3.75": 0, "0.8.0": 0, "0.33.0": 0},
    ("hunyuan_video15", "musubi"): {"0.3.75": 108, "0.8.0": 108, "0.33.0": 108},  # of 756: the two attn_proj
    ("hunyuan_video15", "comfy"): {"0.3.75": 564, "0.8.0": 564, "0.33.0": 564},
    ("ltxv", "diffusers"): {"0.3.75": 0, "0.8.0": 0, "0.33.0": 0},
    ("ltxv", "peft"): {"0.3.75": 0, "0.8.0": 0, "0.33.0": 0},
    ("ltxv", "comfy"): {"0.3.75": 287, "0.8.0": 287, "0.33.0": 287},
    ("ltxav", "ltx-trainer"): {"0.8.0": 1152, "0.33.0": 1152},
    ("ltxav", "peft"): {"0.8.0": 0, "0.33.0": 0},
    ("ltxav", "diffusers"): {"0.8.0": 0, "0.33.0": 0},
}


@functools.cache
def full_size(family):
    return tf.build_full_size(family)


def _scale(entry) -> float:
    up, down, alpha = entry[1].weights[:3]
    return float(alpha) / down.shape[0] if alpha is not None else 1.0


@pytest.mark.parametrize("family, fmt", family_formats())
def test_full_size_every_targeted_layer_maps_at_its_trained_scale(family, fmt, tmp_path, caplog):
    # Full size, on the meta device: ComfyUI's key map of the published model, and the trainer's file for it
    # (factors on the meta device too). All-linear for the PEFT and diffusers formats, the trainers' default targets
    # for musubi-tuner and the LTX-2 trainer.
    model = full_size(family)
    lora = tl.trainer_lora(model, family, fmt, rank=2, meta=True)
    spec = tl.FORMATS[family][fmt]
    if spec.naming == "diffusers" and spec.targets == "all":
        assert len(lora.layers) == tl.DIFFUSERS_LINEARS[family]
    stock = comfy.lora.load_lora(comfy.lora_convert.convert_lora(dict(lora.state_dict)),
                                 comfy.lora.model_lora_keys_unet(model.model, {}), log_missing=False)
    assert len(stock) == STOCK_MAPS[family, fmt][VERSION], "ComfyUI's stock loader maps another share now"
    if lora.adapter_config is not None:
        (tmp_path / "adapter_config.json").write_text(json.dumps(lora.adapter_config))
    with caplog.at_level(logging.INFO, logger="ComfyUI-RLG"):
        ours = load_lora_tensors(model, dict(lora.state_dict), lora.metadata, 1.0,
                                 str(tmp_path / "adapter_model.safetensors"), "lora")
    assert "not loaded" not in caplog.text.lower()
    if len(stock) < len(lora.layers):
        assert f"RLG mapped the other {len(lora.layers) - len(stock)}" in caplog.text
    entries = [(key, e) for key, es in ours.patches.items() for e in es]
    assert len(entries) == len(lora.layers)
    assert {_scale(e) for _, e in entries} == {tl.SCALE[spec.alpha]}
    sd = model.model.state_dict()
    by_target = collections.Counter((layer.key, layer.rows) for layer in lora.targets)
    got = collections.Counter((key, None if e[3] is None else (e[3][1], e[3][2])) for key, e in entries)
    assert got == by_target  # every layer on its weight, on its rows
    for key, e in entries:
        up, down = e[1].weights[:2]
        rows = e[3][2] if e[3] is not None else sd[key].shape[0]
        assert (up.shape[0], down.shape[1]) == (rows, sd[key].shape[1]), key


@pytest.mark.parametrize("family, fmt", family_formats())
def test_each_format_changes_every_weight_as_trained_and_runs_its_path(family, fmt, tmp_path):
    # Tiny model, real factors: what Load LoRA (PEFT aware) puts on each weight equals the trained change written
    # out (alpha, rows of fused weights, FLUX.2's and HunyuanVideo 1.5's swapped final modulation); RLG runs every
    # plain layer on a hook, a layer with a function (the swap) as a weight function; w=1 is the LoRA model.
    base = tf.load(family)
    lora = tl.trainer_lora(base, family, fmt)
    rl = load_peft_aware(base, save_lora(lora, tmp_path / fmt), 1.0)
    sd = base.model.state_dict()
    expected = tl.expected_delta(lora, {k: v.shape for k, v in sd.items()})
    assert set(rl.patches) == set(expected)
    for key, delta in expected.items():
        weight = sd[key].float()
        got = comfy.lora.calculate_weight(rl.patches[key], weight.clone(), key) - weight
        assert h.max_diff(got, delta) <= 1e-6 * (1 + float(delta.abs().max())), key
    if STOCK_MAPS[family, fmt][VERSION] == len(lora.layers) and lora.adapter_config is None and lora.metadata is None:
        stock = tf.load_lora(base, lora.state_dict)  # all of it is the stock loader's: ours is the same
        assert stock.patches.keys() == rl.patches.keys()
        for key in expected:
            weight = sd[key].float()
            assert torch.equal(comfy.lora.calculate_weight(stock.patches[key], weight.clone(), key),
                               comfy.lora.calculate_weight(rl.patches[key], weight.clone(), key)), key
    delta = h.rlg_wrapper(h.rlg(base, rl, 1.0)).terms[0].pair.delta
    paths = collections.Counter(layer.fast for layer in delta.layers)
    swapped = {layer.key for layer in lora.targets if layer.swap}
    assert paths == collections.Counter({LayerPath.HOOK: len(expected) - len(swapped)} |
                                        ({LayerPath.FUNCTION: len(swapped)} if swapped else {}))
    ref = ksample(rl, family, steps=2)
    assert h.max_diff(ksample(h.rlg(base, rl, 1.0), family, steps=2), ref) <= h.tolerance(ref)


@pytest.mark.parametrize("family", families(["z_image", "ltxv"]))
def test_diffusers_alpha_in_the_files_metadata_is_applied(family, tmp_path, caplog):
    # diffusers' save_lora_weights writes no alpha keys; the LoraConfig sits in the file's metadata. Without it the
    # stock loader applies lora_alpha / r = 2 as 1.
    base = tf.load(family)
    lora = tl.trainer_lora(base, family, "diffusers")
    with caplog.at_level(logging.INFO, logger="ComfyUI-RLG"):
        rl = load_peft_aware(base, save_lora(lora, tmp_path / "with"), 1.0)
    assert "from its metadata 'lora_adapter_metadata'" in caplog.text
    assert {_scale(e) for es in rl.patches.values() for e in es} == {2.0}
    lora.metadata = None
    assert {_scale(e) for es in load_peft_aware(base, save_lora(lora, tmp_path / "without"), 1.0).patches.values()
            for e in es} == {1.0}
    # A model-level save_lora_adapter file: bare layer names, the config unprefixed.
    bare = {k.removeprefix("transformer."): v for k, v in lora.state_dict.items()}
    path = tmp_path / "bare.safetensors"
    config = {"r": 2, "lora_alpha": 1.0}
    safetensors.torch.save_file(bare, path, metadata={"lora_adapter_metadata": json.dumps(config)})
    assert {_scale(e) for es in load_peft_aware(base, str(path), 1.0).patches.values() for e in es} == {0.5}


def test_broken_metadata_config_is_refused_by_name(tmp_path):
    base = tf.load("ltxv")
    lora = tl.trainer_lora(base, "ltxv", "diffusers")
    lora.metadata = {"lora_adapter_metadata": '{"transformer.lora_alpha": "two"}'}
    with pytest.raises(RLGInputError, match="metadata 'lora_adapter_metadata' cannot be used: .*not a number"):
        load_peft_aware(base, save_lora(lora, tmp_path), 1.0, name="ltxv_rl.safetensors")


def test_stock_loader_maps_nothing_rlg_refuses_it_and_load_lora_peft_aware_maps_it(tmp_path):
    # A diffusers-named HunyuanVideo 1.5 LoRA: ComfyUI's stock loader maps none of it on any host, so its clone adds
    # nothing and RLG refuses it, as for any empty RL model; Load LoRA (PEFT aware) maps every layer, and refuses a
    # LoRA of another family by name.
    import comfy.sd

    hunyuan = tf.load("hunyuan_video15")
    lora = tl.trainer_lora(hunyuan, "hunyuan_video15", "diffusers")
    stock, _ = comfy.sd.load_lora_for_models(hunyuan, None, dict(lora.state_dict), 1.0, 0)
    with pytest.raises(RLGInputError, match="rl_model adds nothing to model"):
        h.rlg(hunyuan, stock, 1.5)
    path = save_lora(lora, tmp_path)
    assert h.rlg_wrapper(h.rlg(hunyuan, load_peft_aware(hunyuan, path, 1.0), 1.5)).terms[0].pair.form is \
        PairForm.SHARED
    with pytest.raises(RLGInputError, match="none of its .* tensors fits .*ZImage"):
        load_peft_aware(tf.load("z_image"), path, 1.0)


# -- The families by file (UNETLoader) -----------------------------------------------------------------------------

def file_families():
    return [pytest.param(f, marks=pytest.mark.skipif(bool(tf.file_missing(f)), reason=str(tf.file_missing(f))),
                         id=f) for f in tf.FILE_FAMILIES]


@pytest.mark.parametrize("family", file_families())
def test_tiny_file_is_detected_by_unetloader_and_pairs(family, tmp_path):
    import comfy.sd

    paths = []
    for seed in (0, 1):
        sd, metadata = tf.file_state_dict(family, seed)
        paths.append(tmp_path / f"{family}_{seed}.safetensors")
        safetensors.torch.save_file(sd, paths[-1], metadata=metadata)
    base, rl = (comfy.sd.load_diffusion_model(str(p)) for p in paths)
    assert type(base.model.model_config).__name__ == tf.EXPECTED_CLASS[family]
    positive, negative = tf.file_conds(family, 1)
    kw = dict(positive=positive, negative=negative, batch=1, steps=2)
    ref = ksample(rl, family, **kw)
    assert h.max_diff(ksample(base, family, **kw), ref) > 1e-3
    assert h.max_diff(ksample(h.rlg(base, rl, 1.0), family, **kw), ref) <= h.tolerance(ref)


@pytest.mark.parametrize("family", tf.FILE_FAMILIES)
def test_test_conditioning_node_gives_the_file_conds(family):
    from tests.comfy_test_nodes.rlg_test_nodes import RLGTestConditioning

    option = f"{family}_file"
    assert option in RLGTestConditioning.INPUT_TYPES()["required"]["family"][0]
    got = RLGTestConditioning().make(option, 3, 2)
    want = tf.file_conds(family, 2, 3)
    for g, w in zip(got, want, strict=True):
        assert torch.equal(g[0][0], w[0][0]) and g[0][1].keys() == w[0][1].keys()
