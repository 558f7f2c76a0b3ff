"""An RL pass proves it ran the RL model, on hosts that rebuild modules or bypass them.

Newer ComfyUI builds new copies of the sampled module (a non-dynamic delegate, one copy per GPU),
computes some linear layers without calling their module, and runs APPLY_MODEL wrappers in several
threads at once. Each case here used to give the base model's prediction where the RL model's was due,
without an error; now the RL part is added on the module that actually runs, every layer is checked,
and what the fast path misses is recomputed exactly.
"""

from __future__ import annotations

import logging
import threading
import types

import comfy.ops
import comfy.patcher_extension
import pytest
import torch

from comfyui_rlg.nodes.errors import RLGInputError
from comfyui_rlg.nodes.rl_delta import RLRowsForward
from harness import sampling as h

QKV = "diffusion_model.joint_blocks.0.x_block.attn.qkv"


def rebuilt(patcher):
    """What newest ComfyUI's get_non_dynamic_delegate / multi-GPU deep clone make: the loader run again for a
    new module, under a clone of the patcher (same patches, wrappers and options)."""
    copy_ = patcher.clone()
    copy_.model = h.load_model("sd3").model
    return copy_


@pytest.mark.parametrize("batched", [False, True])
def test_rebuilt_module_after_rlg_apply_still_runs_the_rl_model(batched):
    base = h.load_model("sd3")
    rl = h.with_lora(base)
    ref_rl, ref_base = h.ksample(rl, batch=2), h.ksample(base, batch=2)
    for w, ref in ((1.0, ref_rl), (0.0, ref_base)):
        out = h.ksample(rebuilt(h.rlg(base, rl, w, 0, 1, batched=batched)), batch=2)
        assert h.max_diff(out, ref) <= h.tolerance(ref), f"w={w}"
    # And the blend at w=2 matches the one on the original module.
    blended = h.ksample(h.rlg(base, rl, 2.0, 0, 1, batched=batched), batch=2)
    assert h.max_diff(h.ksample(rebuilt(h.rlg(base, rl, 2.0, 0, 1, batched=batched)), batch=2), blended) <= 1e-5


def _compute_qkv_without_calling_it(patcher):
    """Make one attention compute its qkv layer as newest ComfyUI's linear_input_act does: through
    ComfyUI's weight cast (weight functions apply) and F.linear, never calling the qkv module."""
    attn = patcher.get_model_object(QKV.rsplit(".", 1)[0])

    from comfy.ldm.modules.diffusionmodules.mmdit import split_qkv

    def pre_attention(self, x):  # SelfAttention.pre_attention, with the qkv call replaced
        weight, bias = comfy.ops.cast_bias_weight(self.qkv, x)
        qkv = torch.nn.functional.linear(x, weight, bias)
        q, k, v = split_qkv(qkv, self.head_dim)
        q = self.ln_q(q).reshape(q.shape[0], q.shape[1], -1)
        k = self.ln_k(k).reshape(q.shape[0], q.shape[1], -1)
        return q, k, v

    original = type(attn).pre_attention
    attn.pre_attention = types.MethodType(pre_attention, attn)
    return attn, original


@pytest.mark.parametrize("batched", [False, True])
def test_layer_computed_without_calling_its_module_is_not_silently_base(batched, caplog):
    base = h.load_model("sd3")
    rl = h.with_lora(base)
    attn, original = _compute_qkv_without_calling_it(base)
    positive, negative = h.conds("sd3", batch=2)
    x = torch.randn(h.latent("sd3", 2).shape, generator=torch.Generator().manual_seed(1))
    sigmas = h.schedule(base, steps=3)
    xs = [x * float(s) for s in sigmas[:-1]]
    probe = lambda m: h.probe_predictions(m, xs, sigmas, positive, negative, cfg=3.0)  # noqa: E731
    # The override computes what the module would: same result as calling it.
    pb, pr = probe(base), probe(rl)
    attn.pre_attention = types.MethodType(original, attn)
    assert h.max_diff(probe(base)[0], pb[0]) <= 1e-6
    _compute_qkv_without_calling_it(base)
    for w in (1.0, 2.0):
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            pg = probe(h.rlg(base, rl, w, 0, 1, batched=batched))
        for b, r, g in zip(pb, pr, pg, strict=True):
            assert h.max_diff(g, b + w * (r - b)) <= 1e-4, f"w={w}"
        assert caplog.text.count("did not take the fast path") == 1, caplog.text  # said once, not every step
        assert QKV in caplog.text


def test_layer_that_ignores_weight_functions_gets_the_rl_weights_swapped_in():
    # A non-LoRA RL patch (here a diff) runs as a weight function; a layer that runs without applying
    # weight functions (as small modules can under newest ComfyUI's dynamic VRAM) gets a swap instead.
    base = h.load_model("sd3")
    rl = h.with_lora(base)
    rl.add_patches({QKV + ".weight": ("diff", (torch.full(base.get_model_object(QKV + ".weight").shape, 0.02),))})
    qkv = base.get_model_object(QKV)
    qkv.forward = lambda x: torch.nn.functional.linear(x, qkv.weight, qkv.bias)  # ignores weight_function
    ref_rl = h.ksample(rl)
    assert h.max_diff(h.ksample(h.rlg(base, rl, 1.0, 0, 1)), ref_rl) <= h.tolerance(ref_rl)
    ref_base = h.ksample(base)
    assert h.max_diff(h.ksample(h.rlg(base, rl, 0.0, 0, 1)), ref_base) <= h.tolerance(ref_base)
    assert h.max_diff(h.ksample(base), ref_base) == 0.0  # swapped back


def test_skipped_layers_are_fine_and_not_reported(caplog):
    # SkipLayerGuidance skips whole blocks in its extra pass: their LoRA layers take no part, which is
    # right (the RL model alone skips them too), and nothing is reported.
    from comfy_extras.nodes_slg import SkipLayerGuidanceDiT

    base = h.load_model("sd3")
    rl = h.with_lora(base)
    slg = lambda m: SkipLayerGuidanceDiT.execute(m, 3.0, 0.0, 1.0, "0", "", 0.0).args[0]  # noqa: E731
    kw = dict(cfg=3.0, steps=3)
    ref_rl = h.ksample(slg(rl), **kw)
    assert h.max_diff(ref_rl, h.ksample(rl, **kw)) > 1e-4  # SLG acts
    with caplog.at_level(logging.WARNING):
        out = h.ksample(slg(h.rlg(base, rl, 1.0, 0, 1)), **kw)
    assert h.max_diff(out, ref_rl) <= h.tolerance(ref_rl)
    assert "fast path" not in caplog.text


def _apply_model_inputs(family_batch=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(family_batch, 16, 8, 8, generator=gen)
    t = torch.full((family_batch,), 0.6)
    context = torch.randn(family_batch, 8, 64, generator=gen)
    y = torch.randn(family_batch, 32, generator=gen)
    return x, t, context, y


def test_two_threads_on_two_module_copies_get_exact_rows():
    # Newest ComfyUI's multi-GPU split: the same APPLY_MODEL wrappers run at once in one thread per GPU,
    # each on its own copy of the module and its own share of the rows (cond_or_uncond).
    base = h.load_model("sd3")
    rl = h.with_lora(base)
    pair = h.rlg_wrapper(h.rlg(base, rl, 1.5, 0, 1)).terms[0].pair
    rows = RLRowsForward({1: pair.delta}, lambda c: 1 if c >= 2 else 0, notify=lambda msg: None)
    copies = [h.load_model("sd3").model, h.load_model("sd3").model]  # one copy of the module per "GPU"
    barrier = threading.Barrier(2, timeout=30)

    def meet(module, args):  # both threads are inside a forward at the same time
        barrier.wait()

    for m in copies:
        m.diffusion_model.joint_blocks[0].register_forward_pre_hook(meet)
    x, t, context, y = _apply_model_inputs()
    chunks = {0: [0, 2], 1: [1, 3]}  # thread 0: base cond + RL cond rows; thread 1: base uncond + RL uncond
    results, errors = {}, []

    def run(i):
        try:
            to = {"cond_or_uncond": chunks[i], "wrappers": {comfy.patcher_extension.WrappersMP.APPLY_MODEL:
                                                            {"rows": [rows]}}}
            sl = slice(2 * i, 2 * i + 2)
            with torch.inference_mode():
                results[i] = copies[i].apply_model(x[sl], t[sl], c_crossattn=context[sl], y=y[sl],
                                                   transformer_options=to)
        except Exception as err:  # noqa: BLE001  (reported below)
            errors.append(err)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors
    with torch.inference_mode():
        ref_base = base.model.apply_model(x, t, c_crossattn=context, y=y)
        import comfy.model_management as mm
        mm.load_models_gpu([rl])  # the RL model alone: its LoRA merged into the weights by ComfyUI
        ref_rl = rl.model.apply_model(x, t, c_crossattn=context, y=y)
        mm.unload_all_models()
    for i in range(2):
        out = results[i]
        assert h.max_diff(out[0], ref_base[2 * i]) <= 1e-5, f"thread {i}: base row"
        assert h.max_diff(out[1], ref_rl[2 * i + 1]) <= 1e-4, f"thread {i}: RL row"
        assert h.max_diff(out[1], ref_base[2 * i + 1]) > 1e-3


def test_rl_model_made_with_injections_rlg_cannot_read_is_refused_not_taken_as_identical():
    # Newest ComfyUI's bypass LoRA loader puts the LoRA in `injections`, not in weight patches; RLG reads the LoRA
    # out of it (tests/test_newest_host.py runs the real loader). An injection it cannot read, or one of another
    # kind, would make the pair look identical: it is refused, naming the loader and what to use instead.
    base = h.load_model("sd3")
    opaque = comfy.patcher_extension.PatcherInjection(inject=lambda p: None, eject=lambda p: None)
    for key, words in (("bypass_lora", "bypass LoRA loader"), ("some_pack", "injections")):
        rl = base.clone()
        rl.set_injections(key, [opaque])
        with pytest.raises(RLGInputError, match=words) as err:
            h.rlg(base, rl, 1.5, 0, 1)
        assert "LoraLoaderModelOnly" in str(err.value)


def test_rl_pass_that_cannot_be_made_exact_stops_with_a_clear_error():
    # A LoRA layer the running model does not have (rl_model was loaded on another model): refuse
    # loudly inside sampling rather than leave the RL part out.
    from comfyui_rlg.nodes.errors import RLGRuntimeError

    base = h.load_model("sd3")
    rl = h.with_lora(base)
    patched = h.rlg(base, rl, 1.5, 0, 1)
    layer = h.rlg_wrapper(patched).terms[0].pair.delta.layers[0]
    layer.module_name = layer.module_name + "_gone"
    with pytest.raises(RLGRuntimeError, match="has no layer"):
        h.ksample(patched, steps=2)


def test_caches_keyed_on_inputs_alone_are_off_for_a_shared_module():
    # Newest ComfyUI's Qwen-Image 2.1 caches text/reference K/V across steps keyed on the inputs only, so the
    # base and RL passes of one shared module would reuse each other's; RLG switches it off where it matters.
    from comfyui_rlg.nodes.rl_options import QWEN_PREFIX_CACHE

    base = h.load_model("sd3")
    shared = h.rlg(base, h.with_lora(base), 1.5, 0, 1)
    assert shared.model_options["transformer_options"][QWEN_PREFIX_CACHE] == {"device": "off"}
    separate = h.rlg(base, h.load_model("sd3", rl_seed=1), 1.5, 0, 1)  # two modules, two caches: left on
    assert QWEN_PREFIX_CACHE not in separate.model_options.get("transformer_options", {})
    assert QWEN_PREFIX_CACHE not in base.model_options.get("transformer_options", {})  # the input is unchanged


def test_separate_rl_model_uses_each_gpus_copy_only_when_it_is_that_model():
    # Newest ComfyUI's multi-GPU split hands model_options["multigpu_clones"] = {device: that GPU's copy of the
    # base}, and copies the base's additional models (the RL model) to every GPU, merged by clone_base_uuid.
    # The RL pass uses those copies when each is the RL model (same loaded model, same patches); otherwise it
    # runs whole on the main device (no split in its options). Built here from real patchers (the host has no
    # multi-GPU split); the ids are what newest ComfyUI's clone() copies.
    from comfyui_rlg.nodes.model_pair import ADDITIONAL_MODELS_KEY
    from comfyui_rlg.nodes.rl_options import separate_multigpu

    base, rl = h.load_model("sd3"), h.load_model("sd3", rl_seed=1)
    patched = h.rlg(base, rl, 1.5, 0, 1)
    rl.clone_base_uuid, rl.patches_uuid = "rl-file", "rl-patches"
    rl_on_gpu1 = rl.clone()
    rl_on_gpu1.clone_base_uuid, rl_on_gpu1.patches_uuid = "rl-file", "rl-patches"
    base_on_gpu1 = patched.clone()
    base_on_gpu1.set_additional_models(ADDITIONAL_MODELS_KEY, [rl_on_gpu1])
    gpu1, pool = torch.device("cuda", 1), object()
    options = {"multigpu_clones": {rl.load_device: patched, gpu1: base_on_gpu1}, "multigpu_thread_pool": pool}
    split = separate_multigpu(options, rl)
    assert split["multigpu_clones"] == {rl.load_device: rl, gpu1: rl_on_gpu1} and split["multigpu_thread_pool"] is pool
    assert rl_on_gpu1.model.current_patcher is rl_on_gpu1  # pre_run: the core does not run it for these copies
    rl_on_gpu1.patches_uuid = "another RL model's patches"  # ComfyUI merged two RL models' copies into one
    assert separate_multigpu(options, rl) == {}
    assert separate_multigpu({}, rl) == {}
