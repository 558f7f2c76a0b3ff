"""RLG on a scaled-fp8 checkpoint (the fp8 SD3.5 and FLUX files people share).

ComfyUI 0.8.0 and newer load these with mixed-precision ops: quantized linears that are not
torch.nn.Linear (0.3.75 loads them as fp8-weight nn.Linear subclasses; the same tests run there).
The LoRA's fast path takes these layers by what they compute, and the base pass keeps their
quantized kernel: no weight function sits on them outside the RL pass.
"""

from __future__ import annotations

import logging

import comfy.sd
import pytest
import torch

from comfyui_rlg.nodes.rl_delta import LayerPath
from harness import sampling as h
from harness import tiny_models as tm
from harness.host import comfy_version

QKV = "diffusion_model.joint_blocks.0.x_block.attn.qkv"


@pytest.fixture
def fp8_pair():
    float_sd = tm.tiny_sd3_state_dict(0)
    base = comfy.sd.load_diffusion_model_state_dict(tm.scaled_fp8(float_sd))
    layer = base.get_model_object(QKV)
    if tuple(int(p) for p in comfy_version().split(".")[:2]) >= (0, 8):
        assert not isinstance(layer, torch.nn.Linear) and getattr(layer, "layout_type", None) is not None
    else:
        assert isinstance(layer, torch.nn.Linear) and layer.weight.dtype == torch.float8_e4m3fn
    return base, h.with_lora(base, like=float_sd)


def test_fast_path_takes_quantized_linears_and_leaves_their_kernel_to_the_base_pass(fp8_pair, caplog):
    base, rl = fp8_pair
    patched = h.rlg(base, rl, 1.5, 0, 1)
    delta = h.rlg_wrapper(patched).terms[0].pair.delta
    assert delta.hooks_only and {layer.fast for layer in delta.layers} == {LayerPath.HOOK}
    seen = []
    layer = base.get_model_object(QKV)
    handle = layer.register_forward_pre_hook(lambda m, args: seen.append(len(m.weight_function)))
    try:
        with caplog.at_level(logging.WARNING):
            h.ksample(patched, steps=2)
    finally:
        handle.remove()
    assert seen and set(seen) == {0}  # quantized kernel in every forward, base and RL rows alike
    assert "fast path" not in caplog.text


def test_identities_and_per_step_blend_on_fp8(fp8_pair):
    base, rl = fp8_pair
    ref_base, ref_rl = h.ksample(base, batch=2), h.ksample(rl, batch=2)
    out0 = h.ksample(h.rlg(base, rl, 0.0, 0, 1), batch=2)
    out1 = h.ksample(h.rlg(base, rl, 1.0, 0, 1), batch=2)
    assert h.max_diff(out0, ref_base) == 0.0
    # ComfyUI's own LoRA on an fp8 layer re-quantizes W + dW; RLG adds dW @ x in full precision. Both are
    # the RL model to fp8 precision, and RLG(w=1) is far from the base.
    gap, rl_effect = h.max_diff(out1, ref_rl), h.max_diff(ref_rl, ref_base)
    print(f"fp8: |RLG(w=1) - stock LoRA| = {gap:.3e}, |RL - base| = {rl_effect:.3e}")
    assert gap <= 0.1 * rl_effect and h.max_diff(out1, ref_base) >= 0.5 * rl_effect

    positive, negative = h.conds("sd3", batch=2)
    sigmas = h.schedule(base, steps=3)
    gen = torch.Generator().manual_seed(2)
    xs = [torch.randn(h.latent("sd3", 2).shape, generator=gen) * float(s) for s in sigmas[:-1]]
    probe = lambda m: h.probe_predictions(m, xs, sigmas, positive, negative, cfg=4.0)  # noqa: E731
    pb, pr = probe(base), probe(h.rlg(base, rl, 1.0, 0, 1))
    for w in (0.5, 2.0):
        for b, r, g in zip(pb, pr, probe(h.rlg(base, rl, w, 0, 1)), strict=True):
            assert h.max_diff(b, r) > 1e-3
            assert h.max_diff(g, b + w * (r - b)) <= 1e-4 * (1 + float(r.abs().max()))
