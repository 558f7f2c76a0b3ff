"""RLG inside real ComfyUI sampling (in-process, CPU, tiny models built by the tests).

Identities (w = 0 is the base, w = 1 the RL model), the per-step blend, the window, the LoRA
form on a shared module, and interplay with stock patches and masks.
"""

from __future__ import annotations

import comfy.patcher_extension
import comfy.sample
import comfy.samplers
import pytest
import torch

from comfyui_rlg.nodes.rl_delta import LayerPath
from harness import sampling as h
from harness import tiny_models as tm

TOL = 1e-5
IDENTITY_DIFFS = h.IDENTITY_DIFFS


def _pair(family: str, form: str):
    base = h.load_model(family)
    if form == "full":
        return base, h.load_model(family, rl_seed=1)
    return base, h.with_lora(base)


@pytest.mark.parametrize("family", ["sd3", "sd15"])
@pytest.mark.parametrize("form", ["full", "lora"])
@pytest.mark.parametrize("cfg", [1.0, 3.5])
@pytest.mark.parametrize("sampler", ["euler", "dpmpp_2m", "euler_ancestral"])
def test_w0_is_base_and_w1_is_rl(family, form, cfg, sampler):
    base, rl = _pair(family, form)
    kw = dict(family=family, batch=2, cfg=cfg, sampler=sampler, steps=4)
    ref_base = h.ksample(base, **kw)
    ref_rl = h.ksample(rl, **kw)
    assert h.max_diff(ref_base, ref_rl) > 1e-3, "test models too similar to tell apart"
    out0 = h.ksample(h.rlg(base, rl, 0.0, 0.0, 1.0), **kw)
    out1 = h.ksample(h.rlg(base, rl, 1.0, 0.0, 1.0), **kw)
    d0, d1 = h.max_diff(out0, ref_base), h.max_diff(out1, ref_rl)
    IDENTITY_DIFFS[f"{family} {form:4s} cfg={cfg} {sampler}"] = max(d0, d1)
    assert d0 <= h.tolerance(ref_base), f"w=0 differs from the base model by {d0}"
    assert d1 <= h.tolerance(ref_rl), f"w=1 differs from the RL model by {d1}"


@pytest.mark.parametrize("family", ["sd3", "sd15"])
@pytest.mark.parametrize("form", ["full", "lora"])
@pytest.mark.parametrize("w", [0.5, 2.0])
def test_each_step_blends_base_and_rl(family, form, w):
    base, rl = _pair(family, form)
    positive, negative = h.conds(family, batch=2)
    sigmas = h.schedule(base, steps=5)
    gen = torch.Generator().manual_seed(3)
    xs = [torch.randn(h.latent(family, 2).shape, generator=gen) * float(s) for s in sigmas[:-1]]
    probe = lambda m: h.probe_predictions(m, xs, sigmas, positive, negative, cfg=4.5)  # noqa: E731
    pred_base, pred_rl, pred_rlg = probe(base), probe(rl), probe(h.rlg(base, rl, w, 0.0, 1.0))
    for step, (b, r, g) in enumerate(zip(pred_base, pred_rl, pred_rlg, strict=True)):
        assert h.max_diff(b, r) > 1e-4
        expected = b + w * (r - b)
        assert h.max_diff(g, expected) <= TOL * (1 + float(expected.detach().abs().max())), f"step {step}"


@pytest.mark.parametrize("form", ["full", "lora"])
def test_outside_window_only_the_rl_model_runs(form):
    base, rl = _pair("sd3", form)
    base_count, rl_count = h.ForwardCounter(), h.ForwardCounter()
    # Counters go on after the LoRA clone was made, so each counts only its own passes.
    base_c = base_count.attach(base.clone())
    rl_c = rl_count.attach(rl.clone()) if form == "full" else rl_count.attach(rl)
    steps = 6
    ref_rl = h.ksample(rl, steps=steps)
    base_count.calls = rl_count.calls = 0

    # A window that holds no step: every step is the RL model's, the base never runs.
    out = h.ksample(h.rlg(base_c, rl_c, 2.5, 1.0, 1.0), steps=steps)
    assert base_count.calls == 0
    assert rl_count.calls == steps
    assert h.max_diff(out, ref_rl) <= TOL

    # Window [0.5, 1]: the first steps run the RL model alone.
    base_count.calls = rl_count.calls = 0
    sampling = base.get_model_object("model_sampling")
    sigma_start = float(sampling.percent_to_sigma(0.5))
    sigmas = h.schedule(base, steps=steps)[:-1]
    in_window = int((sigmas <= sigma_start).sum())
    assert 0 < in_window < steps
    h.ksample(h.rlg(base_c, rl_c, 2.5, 0.5, 1.0), steps=steps)
    assert base_count.calls == in_window
    assert rl_count.calls == steps


def test_rl_pass_uses_the_rl_models_own_options():
    # A wrapper on the base (standing in for TorchCompileModel and the like) must not run for the
    # RL pass, and one on the RL model must not run for the base pass.
    base, rl = _pair("sd3", "full")
    base_count, rl_count = h.ForwardCounter(), h.ForwardCounter()
    base_count.attach(base)
    rl_count.attach(rl)
    h.ksample(h.rlg(base, rl, 0.5, 0.0, 1.0), steps=3)
    assert base_count.calls == 3 and rl_count.calls == 3


def test_lora_rl_model_keeps_no_second_copy_and_leaves_base_clean():
    base = h.load_model("sd3")
    lora = h.with_lora(base)
    before = {k: v.clone() for k, v in base.model.state_dict().items()}
    ref_base = h.ksample(base)
    h.ksample(h.rlg(base, lora, 1.7, 0.0, 1.0))
    after_base = h.ksample(base)
    assert h.max_diff(after_base, ref_base) == 0.0
    # The module holds the base weights again, not the LoRA-patched ones.
    h.ksample(base)
    for k, v in base.model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_base_with_its_own_lora_and_rl_lora_on_top():
    # model = checkpoint + style LoRA; rl_model = that + RL LoRA. Only the RL LoRA is the RL part.
    ckpt = h.load_model("sd3")
    styled = h.with_lora(ckpt, lora_seed=11, match="mlp")
    rl = h.with_lora(styled, lora_seed=12)
    ref_styled, ref_rl = h.ksample(styled, cfg=2.0), h.ksample(rl, cfg=2.0)
    assert h.max_diff(h.ksample(h.rlg(styled, rl, 0.0, 0, 1), cfg=2.0), ref_styled) <= TOL
    assert h.max_diff(h.ksample(h.rlg(styled, rl, 1.0, 0, 1), cfg=2.0), ref_rl) <= TOL


def test_works_after_rescale_cfg_on_the_base():
    from comfy_extras.nodes_model_advanced import RescaleCFG

    base, rl = _pair("sd3", "full")
    rescaled = RescaleCFG().patch(base, 0.7)[0]
    ref = h.ksample(rescaled, cfg=5.0)
    assert h.max_diff(h.ksample(h.rlg(rescaled, rl, 0.0, 0, 1), cfg=5.0), ref) <= TOL
    # And after RLG: RescaleCFG(RLG(w=1)) is RescaleCFG(rl).
    after = RescaleCFG().patch(h.rlg(base, rl, 1.0, 0, 1), 0.7)[0]
    ref_rl = h.ksample(RescaleCFG().patch(rl, 0.7)[0], cfg=5.0)
    assert h.max_diff(h.ksample(after, cfg=5.0), ref_rl) <= TOL


@pytest.mark.parametrize("form", ["full", "lora"])
def test_pag_extra_pass_reaches_the_rl_model(form):
    # PAG evaluates an extra, perturbed pass through calc_cond_batch with options changed for that
    # call; the RL pass must be perturbed too, or PAG(RLG(w=1)) would differ from PAG(rl).
    from comfy_extras.nodes_pag import PerturbedAttentionGuidance as PAG

    base, rl = _pair("sd15", form)
    pag = lambda m: PAG.execute(m, 2.0).args[0]  # noqa: E731
    kw = dict(family="sd15", cfg=3.0, steps=3)
    ref_rl, ref_base = h.ksample(pag(rl), **kw), h.ksample(pag(base), **kw)
    assert h.max_diff(h.ksample(pag(h.rlg(base, rl, 1.0, 0, 1)), **kw), ref_rl) <= h.tolerance(ref_rl)
    assert h.max_diff(h.ksample(pag(h.rlg(base, rl, 0.0, 0, 1)), **kw), ref_base) <= h.tolerance(ref_base)


@pytest.mark.parametrize("form", ["full", "lora"])
def test_latent_noise_mask_inpainting(form):
    base, rl = _pair("sd3", form)
    gen = torch.Generator().manual_seed(5)
    source = torch.randn(1, 16, 8, 8, generator=gen)
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., 2:6, 2:6] = 1.0
    kw = dict(latent_image=source, denoise_mask=mask, cfg=3.0)
    ref_base, ref_rl = h.ksample(base, **kw), h.ksample(rl, **kw)
    out0 = h.ksample(h.rlg(base, rl, 0.0, 0, 1), **kw)
    out1 = h.ksample(h.rlg(base, rl, 1.0, 0, 1), **kw)
    out2 = h.ksample(h.rlg(base, rl, 2.0, 0, 1), **kw)
    assert h.max_diff(out0, ref_base) <= TOL and h.max_diff(out1, ref_rl) <= TOL
    keep = mask.expand_as(source) == 0
    processed = base.model.process_latent_in(source)
    assert torch.allclose(base.model.process_latent_out(processed)[keep], out2[keep], atol=1e-4)
    assert h.max_diff(out2, out1) > 1e-4


def test_ksampler_rlgapply_equals_sampler_custom_advanced_rlgguider():
    import nodes as comfy_nodes
    from comfy_extras.nodes_custom_sampler import Noise_RandomNoise, SamplerCustomAdvanced

    from comfyui_rlg.nodes.nodes_rlg import RLGApply, RLGGuider

    base, rl = _pair("sd3", "lora")
    positive, negative = h.conds("sd3", batch=2)
    latent = {"samples": h.latent("sd3", 2)}
    seed, steps, cfg = 123, 5, 4.0
    patched = RLGApply.execute(base, rl, 1.6, 0.2, 0.9).args[0]
    (ks_out,) = comfy_nodes.common_ksampler(patched, seed, steps, cfg, "euler", "simple", positive, negative, latent)
    guider = RLGGuider.execute(base, rl, positive, negative, cfg, 1.6, 0.2, 0.9).args[0]
    sigmas = h.schedule(base, steps=steps, scheduler="simple")
    out = SamplerCustomAdvanced.execute(Noise_RandomNoise(seed), guider, comfy.samplers.sampler_object("euler"),
                                        sigmas, latent).args[0]
    assert h.max_diff(ks_out["samples"], out["samples"]) <= TOL



@pytest.mark.parametrize("path", ["KSamplerAdvanced", "SamplerCustom", "BasicGuider"])
def test_other_stock_sampler_nodes(path):
    import nodes as comfy_nodes
    from comfy_extras.nodes_custom_sampler import BasicGuider, Noise_RandomNoise, SamplerCustom, SamplerCustomAdvanced

    base, rl = _pair("sd3", "lora")
    positive, negative = h.conds("sd3", batch=2)
    latent = {"samples": h.latent("sd3", 2)}
    sigmas = h.schedule(base, steps=4)
    euler = comfy.samplers.sampler_object("euler")

    def run(model):
        if path == "KSamplerAdvanced":
            return comfy_nodes.KSamplerAdvanced().sample(model, "enable", 9, 4, 3.0, "euler", "simple", positive,
                                                         negative, latent, 0, 4, "disable")[0]["samples"]
        if path == "SamplerCustom":
            out = SamplerCustom.execute(model, True, 9, 3.0, positive, negative, euler, sigmas, latent)
            return out.args[0]["samples"]
        guider = BasicGuider.execute(model, positive).args[0]
        return SamplerCustomAdvanced.execute(Noise_RandomNoise(9), guider, euler, sigmas, latent).args[0]["samples"]

    ref_base, ref_rl = run(base), run(rl)
    assert h.max_diff(run(h.rlg(base, rl, 0.0, 0, 1)), ref_base) <= TOL
    assert h.max_diff(run(h.rlg(base, rl, 1.0, 0, 1)), ref_rl) <= TOL
    assert h.max_diff(run(h.rlg(base, rl, 2.0, 0, 1)), ref_rl) > 1e-4


def test_model_management_holds_both_models_while_sampling():
    import comfy.model_management as mm

    base, rl = _pair("sd3", "full")
    lora_rl = h.with_lora(base)
    seen = {}

    def loaded_modules():
        return [m.model.model for m in mm.current_loaded_models if m.model is not None]

    def note(name):
        def callback(step, x0, x, total):
            seen[name] = loaded_modules()
        return callback

    patched = h.rlg(base, rl, 1.5, 0, 1)
    positive, negative = h.conds("sd3")
    lat = h.latent("sd3")
    comfy.sample.sample(patched, comfy.sample.prepare_noise(lat, 1), 3, 3.0, "euler", "simple", positive, negative,
                        lat, callback=note("separate"), disable_pbar=True)
    assert any(m is base.model for m in seen["separate"]) and any(m is rl.model for m in seen["separate"])

    # The LoRA form adds no model: the RL pass runs on the base's module.
    shared = h.rlg(base, lora_rl, 1.5, 0, 1)
    assert shared.get_additional_models() == []
    assert patched.get_additional_models() != []
    mm.unload_all_models()
    assert not any(m is rl.model for m in loaded_modules())



def test_rl_patch_on_a_plain_torch_parameter_is_swapped_in_and_restored():
    # SD3.5's attention RMSNorm scales are plain parameters of leaf modules, not comfy layers, so no
    # weight wrapper reaches them; the RL pass swaps the patched tensor in and restores it after.
    import comfy.sd

    base = comfy.sd.load_diffusion_model_state_dict(tm.tiny_sd3_state_dict(0, qk_norm="rms"))
    key = "diffusion_model.joint_blocks.0.x_block.attn.ln_q.weight"
    original = base.get_model_object(key).detach().clone()
    rl = h.with_lora(base)
    assert rl.add_patches({key: ("diff", (torch.full(original.shape, 0.5),))}) == [key]
    ref_base, ref_rl = h.ksample(base), h.ksample(rl)
    assert h.max_diff(h.ksample(h.rlg(base, rl, 0.0, 0, 1)), ref_base) <= TOL
    assert h.max_diff(h.ksample(h.rlg(base, rl, 1.0, 0, 1)), ref_rl) <= TOL
    lora_only = h.with_lora(base)
    assert h.max_diff(h.ksample(h.rlg(base, rl, 1.0, 0, 1)), h.ksample(lora_only)) > 1e-4
    h.ksample(h.rlg(base, rl, 2.0, 0, 1))
    assert torch.equal(base.get_model_object(key), original)
    assert h.max_diff(h.ksample(base), ref_base) == 0.0


def test_rl_patch_comfy_does_not_apply_is_not_applied_by_rlg_either():
    # ComfyUI's loader skips patches on parameters of non-leaf modules (MMDiT's pos_embed), so
    # the RL model alone ignores them; w = 1 must still be exactly that model.
    base = h.load_model("sd3")
    key = "diffusion_model.pos_embed"
    rl = h.with_lora(base)
    delta = torch.ones(base.get_model_object(key).shape)
    assert rl.add_patches({key: ("diff", (delta,))}) == [key]
    assert h.max_diff(h.ksample(h.rlg(base, rl, 1.0, 0, 1)), h.ksample(rl)) <= TOL


@pytest.mark.parametrize("w", [0.0, 0.5, 1.0, 2.0])
def test_batched_lora_path_blends_like_two_passes(w):
    # Base and RL rows in one forward, the LoRA added to the RL rows by forward hooks.
    base = h.load_model("sd3")
    lora = h.with_lora(base)
    fast = h.rlg(base, lora, w, 0.0, 1.0, batched=True)
    wrapper = h.rlg_wrapper(fast)
    assert wrapper.passes.batched and wrapper.terms[0].pair.delta.hooks_only
    counter = h.ForwardCounter()
    counter.attach(fast)
    kw = dict(batch=2, cfg=3.0, steps=4)
    two_pass = h.ksample(h.rlg(base, lora, w, 0.0, 1.0, batched=False), **kw)
    out = h.ksample(fast, **kw)
    assert h.max_diff(out, two_pass) <= 1e-4
    assert counter.calls == 4  # one forward per step, whatever w
    assert counter.rows == 4 * (8 if 0.0 < w != 1.0 else 4)
    assert h.max_diff(h.ksample(base, **kw), h.ksample(base, **kw)) == 0.0  # no hook left behind


def test_lora_fast_path_is_used_only_where_it_is_exact():
    base = h.load_model("sd3")
    pair = lambda m: h.rlg_wrapper(m).terms[0].pair  # noqa: E731
    assert pair(h.rlg(base, h.load_model("sd3", rl_seed=1), 1.5, 0, 1)).form == "separate"  # not a LoRA
    assert pair(h.rlg(base, h.with_lora(base), 1.5, 0, 1)).delta.hooks_only
    diff = h.with_lora(base)
    key = "diffusion_model.joint_blocks.0.x_block.attn.qkv.weight"
    diff.add_patches({key: ("diff", (torch.zeros(base.get_model_object(key).shape),))})
    delta = pair(h.rlg(base, diff, 1.5, 0, 1)).delta
    assert not delta.hooks_only  # not a plain LoRA on that layer: a weight function, in a forward of its own
    assert {layer.fast for layer in delta.layers if layer.key == key} == {LayerPath.FUNCTION}
    assert not h.rlg_wrapper(h.rlg(base, h.with_lora(base), 1.5, 0, 1)).passes.batched  # on the CPU: two forwards

    # An RL model with a wrapper of its own needs its own options: its rows never share the base's forward.
    rl = h.with_lora(base)
    base_count, rl_count = h.ForwardCounter(), h.ForwardCounter()
    rl_count.attach(rl)
    patched = h.rlg(base, rl, 1.5, 0, 1, batched=True)
    assert pair(patched).own_options
    base_count.attach(patched)
    out = h.ksample(patched, steps=3)
    assert rl_count.calls == 3 and base_count.calls == 3  # two forwards a step, each with its own wrappers
    two_pass = h.ksample(h.rlg(base, rl, 1.5, 0, 1, batched=False), steps=3)
    assert h.max_diff(out, two_pass) <= 1e-5


@pytest.mark.parametrize("form", ["bypass", "weight wrappers"])
def test_two_pass_lora_paths_blend_each_step(form):
    # The plain-LoRA bypass in two forwards, and the general weight-wrapper path (forced by a
    # diff patch), both match base + w (rl - base) at each step.
    base = h.load_model("sd3")
    rl = h.with_lora(base)
    if form == "weight wrappers":
        key = "diffusion_model.joint_blocks.1.x_block.mlp.fc1.weight"
        rl.add_patches({key: ("diff", (torch.full(base.get_model_object(key).shape, 0.01),))})
    positive, negative = h.conds("sd3", batch=2)
    sigmas = h.schedule(base, steps=4)
    xs = [torch.randn(h.latent("sd3", 2).shape, generator=torch.Generator().manual_seed(i)) for i in range(4)]
    probe = lambda m: h.probe_predictions(m, xs, sigmas, positive, negative, cfg=3.0)  # noqa: E731
    pb, pr, pg = probe(base), probe(rl), probe(h.rlg(base, rl, 2.0, 0, 1, batched=False))
    for b, r, g in zip(pb, pr, pg, strict=True):
        assert h.max_diff(g, b + 2.0 * (r - b)) <= 1e-4


def test_batched_path_with_pag_matches_two_passes():
    # PAG's extra pass carries an attention replacement that may read cond_or_uncond: the batched
    # path runs such calls as two forwards, and the result equals the two-pass path.
    from comfy_extras.nodes_pag import PerturbedAttentionGuidance as PAG

    base = h.load_model("sd15")
    lora = h.with_lora(base)
    kw = dict(family="sd15", cfg=3.0, steps=3)
    fast = PAG.execute(h.rlg(base, lora, 1.5, 0, 1, batched=True), 2.0).args[0]
    slow = PAG.execute(h.rlg(base, lora, 1.5, 0, 1, batched=False), 2.0).args[0]
    assert h.max_diff(h.ksample(fast, **kw), h.ksample(slow, **kw)) <= 1e-4


@pytest.mark.parametrize("form", ["full", "lora"])
def test_controlnet_keeps_working(form):
    # A ControlNet (ComfyUI's own cldm class, tiny) on the conds: both passes see its residuals.
    import comfy.controlnet
    from nodes import ControlNetApplyAdvanced

    base, rl = _pair("sd15", form)
    control = comfy.controlnet.load_controlnet_state_dict(tm.tiny_sd15_controlnet_state_dict(0))
    positive, negative = h.conds("sd15", batch=2)
    hint = torch.rand(2, 64, 64, 3, generator=torch.Generator().manual_seed(0))
    positive, negative = ControlNetApplyAdvanced().apply_controlnet(positive, negative, control, hint, 1.0, 0.0, 1.0)
    kw = dict(family="sd15", batch=2, positive=positive, negative=negative, cfg=4.0, steps=3)
    ref_base, ref_rl = h.ksample(base, **kw), h.ksample(rl, **kw)
    assert h.max_diff(ref_base, h.ksample(base, family="sd15", batch=2, cfg=4.0, steps=3)) > 1e-3  # it acts
    assert h.max_diff(h.ksample(h.rlg(base, rl, 0.0, 0, 1), **kw), ref_base) <= h.tolerance(ref_base)
    assert h.max_diff(h.ksample(h.rlg(base, rl, 1.0, 0, 1), **kw), ref_rl) <= h.tolerance(ref_rl)
    assert h.max_diff(h.ksample(h.rlg(base, rl, 2.0, 0, 1), **kw), ref_rl) > 1e-3
