"""What ComfyUI 0.33.0 lets us run instead of read: the bypass LoRA loader, the multi-GPU split, int8 layers that
skip their module (linear_input_act), and dynamic VRAM's delegate.

Each test runs the host's own code, on the CPU, and is skipped (saying why) on hosts that lack it. What stays
simulated is named where it is: the multi-GPU split's second device is a second CPU device entry, and dynamic
VRAM, which needs CUDA, is forced on the CPU in a process of its own.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import comfy.lora
import comfy.model_management
import comfy.patcher_extension
import comfy.sd
import comfy.utils
import folder_paths
import pytest
import safetensors.torch
import torch

from comfyui_rlg.nodes.errors import RLGInputError
from comfyui_rlg.nodes.model_pair import PairForm
from harness import host
from harness import sampling as h
from harness import tiny_models as tm


def _has(module: str, name: str) -> bool:
    try:
        return hasattr(__import__(module, fromlist=[name]), name)
    except ImportError:
        return False


needs_bypass = pytest.mark.skipif(not _has("comfy_extras.nodes_lora_debug", "LoraLoaderBypassModelOnly"),
                                  reason=f"ComfyUI {host.comfy_version()} has no bypass LoRA loader (0.33.0 has)")
needs_multigpu = pytest.mark.skipif(not _has("comfy_extras.nodes_multigpu", "MultiGPUCFGSplitNode"),
                                    reason=f"ComfyUI {host.comfy_version()} has no multi-GPU split (0.33.0 has)")
needs_int8 = pytest.mark.skipif(not _has("comfy.ops", "linear_input_act"),
                                reason=f"ComfyUI {host.comfy_version()} has no linear_input_act (0.33.0 has)")
needs_dynamic = pytest.mark.skipif(not _has("comfy.model_patcher", "ModelPatcherDynamic"),
                                   reason=f"ComfyUI {host.comfy_version()} has no dynamic VRAM (0.33.0 has)")


# -- the bypass LoRA loader ----------------------------------------------------------------------------------

@pytest.fixture
def loras_folder(tmp_path):
    """A loras folder ComfyUI knows, holding a plain LoRA for the tiny SD3 on its attention layers."""
    folder = tmp_path / "loras"
    folder.mkdir()
    base = h.load_model("sd3")
    sd = {k: v for k, v in base.model.diffusion_model.state_dict().items()}
    safetensors.torch.save_file(tm.lora_for(sd, 7), folder / "rl_attn.safetensors")
    safetensors.torch.save_file(tm.peft_lora_for_sd3(base, 3), folder / "rl_peft_qkv.safetensors")
    folder_paths.add_model_folder_path("loras", str(folder), is_default=True)
    folder_paths.filename_list_cache.pop("loras", None)
    yield folder
    folder_paths.folder_names_and_paths["loras"][0].remove(str(folder))
    folder_paths.filename_list_cache.pop("loras", None)


def _bypass(model, name, strength=0.8):
    from comfy_extras.nodes_lora_debug import LoraLoaderBypassModelOnly

    return LoraLoaderBypassModelOnly().load_lora_model_only(model, name, strength)[0]


@needs_bypass
def test_bypass_lora_rl_model_runs_rlg_exactly(loras_folder):
    base = h.load_model("sd3")
    rl = _bypass(base, "rl_attn.safetensors")
    assert rl.injections and not rl.patches  # the LoRA lives in the injection, not in weight patches
    kw = dict(batch=2, cfg=3.5, steps=4)
    ref_base, ref_rl = h.ksample(base, **kw), h.ksample(rl, **kw)  # ComfyUI's own bypass forward for the RL model
    assert h.max_diff(ref_base, ref_rl) > 1e-3
    patched = h.rlg(base, rl, 1.0, 0.0, 1.0)
    assert h.rlg_wrapper(patched).terms[0].pair.form is PairForm.SHARED
    d0 = h.max_diff(h.ksample(h.rlg(base, rl, 0.0, 0.0, 1.0), **kw), ref_base)
    d1 = h.max_diff(h.ksample(patched, **kw), ref_rl)
    h.IDENTITY_DIFFS["sd3 bypass LoRA loader (0.33.0)"] = max(d0, d1)
    assert d0 <= h.tolerance(ref_base) and d1 <= h.tolerance(ref_rl), (d0, d1)
    # the per-step blend at 0.5 and 2, from the RL model's own (bypass) predictions
    positive, negative = h.conds("sd3", batch=2)
    sigmas = h.schedule(base, steps=4)
    gen = torch.Generator().manual_seed(3)
    xs = [torch.randn(2, 16, 8, 8, generator=gen) * float(s) for s in sigmas[:-1]]
    probe = lambda m: h.probe_predictions(m, xs, sigmas, positive, negative, cfg=4.5)  # noqa: E731
    pred_base, pred_rl = probe(base), probe(rl)
    for w in (0.5, 2.0):
        for b, r, g in zip(pred_base, pred_rl, probe(h.rlg(base, rl, w, 0.0, 1.0)), strict=True):
            expected = b + w * (r - b)
            assert h.max_diff(g, expected) <= 1e-5 * (1 + float(expected.abs().max())), w
    # the base the server would cache is as it was: no injection stayed on its module
    assert h.max_diff(h.ksample(base, **kw), ref_base) == 0.0


@needs_bypass
def test_bypass_loaders_rlg_cannot_run_are_refused_by_name(loras_folder):
    base = h.load_model("sd3")
    # A PEFT LoRA on SD3's q/k/v: ComfyUI's bypass loader drops keys on fused layers, so the RL model is the base.
    empty = _bypass(base, "rl_peft_qkv.safetensors")
    with pytest.raises(RLGInputError, match="adds nothing"):
        h.rlg(base, empty, 1.5, 0, 1)
    # A second bypass loader replaces the first one's injection (ComfyUI keeps one): not base + RL LoRA.
    styled = _bypass(base, "rl_attn.safetensors", 0.5)
    with pytest.raises(RLGInputError, match="replaces model's own bypass LoRA") as err:
        h.rlg(styled, _bypass(styled, "rl_attn.safetensors", 1.0), 1.5, 0, 1)
    assert "LoraLoaderBypassModelOnly" in str(err.value) and "LoraLoaderModelOnly" in str(err.value)


# -- the multi-GPU split, with a second CPU device ------------------------------------------------------------

@pytest.fixture
def two_devices(monkeypatch):
    """ComfyUI's multi-GPU split on two device entries of the one CPU: the only simulated part."""
    devices = [torch.device("cpu"), torch.device("cpu", 1)]
    monkeypatch.setattr(comfy.model_management, "get_all_torch_devices", lambda exclude_current=False: devices)
    return devices


def _loadable(rl_seed: int | None = None):
    sd = tm.tiny_sd3_state_dict(0)
    sd = sd if rl_seed is None else tm.perturbed(sd, rl_seed)

    def loader(disable_dynamic=False):
        return comfy.sd.load_diffusion_model_state_dict(dict(sd), disable_dynamic=disable_dynamic)

    base = loader()
    base.cached_patcher_init = (loader, ())  # what UNETLoader sets: the split reloads the model per device
    return base


@needs_multigpu
@pytest.mark.parametrize("form", ["full", "lora"])
@pytest.mark.parametrize("order", ["rlg then split", "split then rlg"])
def test_multigpu_split_samples_rlg_as_one_device(two_devices, form, order):
    from comfy_extras.nodes_multigpu import MultiGPUCFGSplitNode

    base = _loadable()
    rl = h.with_lora(base) if form == "lora" else _loadable(rl_seed=1)
    ref = h.ksample(h.rlg(base, rl, 1.6, 0.0, 1.0), steps=3, cfg=3.0)
    devices = {"model": set(), "rl_model": set()}

    def on(which):
        def record(executor, *args, **kwargs):
            devices[which].add(str(args[5].get("multigpu_thread_device")))
            return executor(*args, **kwargs)
        return record

    if form == "full":  # before the split, so the RL model's copies per device carry it too
        rl.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL, "test_devices", on("rl_model"))
    if order == "rlg then split":
        patched = MultiGPUCFGSplitNode.execute(h.rlg(base, rl, 1.6, 0.0, 1.0), 2).args[0]
    else:
        split = MultiGPUCFGSplitNode.execute(base, 2).args[0]
        patched = h.rlg(split, rl, 1.6, 0.0, 1.0)
    patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL, "test_devices", on("model"))
    assert patched.get_additional_models_with_key("multigpu"), "the split made no copy for the second device"
    out = h.ksample(patched, steps=3, cfg=3.0)
    assert h.max_diff(out, ref) <= 1e-5 * (1 + float(ref.abs().max()))
    assert devices["model"] == {"cpu", "cpu:1"}, devices  # the base's forwards (and a LoRA's rows) on both devices
    if form == "full":
        # A separate RL model runs on each device's copy of it: ComfyUI copies the additional models of what was split,
        # and matches the copies again at each sampling run (match_multigpu_clones), so RLG after the split gets them
        # too; RLG finds them by the RL model's own identity and patches (rl_options.separate_multigpu).
        assert devices["rl_model"] == {"cpu", "cpu:1"}, devices


# -- int8 layers computed through linear_input_act (they never call their module) ------------------------------

def _int8_wan():
    import comfy.ops
    from comfy.ldm.wan.model import WanModel

    net = WanModel(model_type="t2v", dim=128, ffn_dim=256, num_heads=1, num_layers=1, text_dim=4096, in_dim=16,
                   out_dim=16, device="cpu", dtype=torch.float32, operations=comfy.ops.disable_weight_init)
    gen = torch.Generator().manual_seed(0)
    sd = {k: (torch.randn(v.shape, generator=gen) * 0.05 if v.is_floating_point() else v)
          for k, v in sorted(net.state_dict().items())}
    key = "blocks.0.ffn.2.weight"  # Wan's FFN down-projection: linear_input_act for an int8 weight
    scale = sd[key].abs().max() / 127.0
    sd[key] = torch.round(sd[key] / scale).clamp(-127, 127).to(torch.int8)
    sd["blocks.0.ffn.2.weight_scale"] = scale.reshape(())
    sd["blocks.0.ffn.2.comfy_quant"] = torch.tensor(list(json.dumps({"format": "int8_tensorwise"}).encode()),
                                                    dtype=torch.uint8)
    return comfy.sd.load_diffusion_model_state_dict(sd)


@needs_int8
def test_int8_layers_that_skip_their_module_get_the_rl_part_the_exact_way(caplog):
    base = _int8_wan()
    layer = base.model.diffusion_model.blocks[0].ffn[2]
    assert "int8" in str(getattr(layer.weight, "_layout_cls", "")).lower(), "the layer did not load as int8"
    lora = {"diffusion_model.blocks.0.ffn.2.lora_up.weight": torch.randn(128, 4) * 0.5,
            "diffusion_model.blocks.0.ffn.2.lora_down.weight": torch.randn(4, 256),
            "diffusion_model.blocks.0.ffn.2.alpha": torch.tensor(4.0),
            "diffusion_model.blocks.0.self_attn.q.lora_up.weight": torch.randn(128, 4) * 0.5,
            "diffusion_model.blocks.0.self_attn.q.lora_down.weight": torch.randn(4, 128),
            "diffusion_model.blocks.0.self_attn.q.alpha": torch.tensor(4.0)}
    rl = base.clone()
    rl.add_patches(comfy.lora.load_lora(lora, comfy.lora.model_lora_keys_unet(base.model, {})), 1.0)
    gen = torch.Generator().manual_seed(2)
    context = torch.randn(1, 8, 4096, generator=gen) * 0.1
    positive, negative = [[context, {}]], [[torch.zeros_like(context), {}]]
    latent = torch.zeros(1, 16, 1, 8, 8)
    kw = dict(latent_image=latent, positive=positive, negative=negative, steps=3, cfg=3.0)
    ref_base = h.ksample(base, **kw)
    with caplog.at_level("WARNING"):
        outs = {w: h.ksample(h.rlg(base, rl, w, 0.0, 1.0), **kw) for w in (0.0, 1.0)}
    assert torch.equal(outs[0.0], ref_base)  # the base pass keeps the int8 kernel
    # The hook on the int8 layer cannot fire; RLG notices and recomputes it through a weight function, once said.
    assert "did not take the fast path" in caplog.text and "ffn.2" in caplog.text
    ref_rl = h.ksample(rl, **kw)  # ComfyUI re-quantizes W + dW to int8; RLG applies dW in full precision
    effect = h.max_diff(ref_rl, ref_base)
    assert h.max_diff(outs[1.0], ref_rl) < 0.25 * effect, (h.max_diff(outs[1.0], ref_rl), effect)
    # and each step is the blend of what RLG computed for the base and the RL model
    sigmas = h.schedule(base, steps=3)
    xs = [torch.randn(1, 16, 1, 8, 8, generator=gen) * float(s) for s in sigmas[:-1]]
    probe = lambda m: h.probe_predictions(m, xs, sigmas, positive, negative, cfg=3.0)  # noqa: E731
    pred_base, pred_rl = probe(h.rlg(base, rl, 0.0, 0.0, 1.0)), probe(h.rlg(base, rl, 1.0, 0.0, 1.0))
    for b, r, g in zip(pred_base, pred_rl, probe(h.rlg(base, rl, 2.0, 0.0, 1.0)), strict=True):
        assert h.max_diff(g, b + 2.0 * (r - b)) <= 1e-4 * (1 + float(r.abs().max()))


# -- dynamic VRAM, forced on the CPU in a process of its own -------------------------------------------------

@needs_dynamic
def test_dynamic_vram_and_its_non_dynamic_delegate():
    """ModelPatcherDynamic needs CUDA; tests/dynamic_vram_check.py forces it on the CPU (comfy-aimdo initialised
    first, the CPU reroute of its constructor removed) and reports what RLG gave, as JSON."""
    script = Path(__file__).with_name("dynamic_vram_check.py")
    out = subprocess.run([sys.executable, str(script)], cwd=host.ROOT, env=host.child_env(), capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-4000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["dynamic"], report  # the base really was a ModelPatcherDynamic
    assert report["delegate"], report  # with hooked conds the guider sampled its non-dynamic delegate
    for case, diff in report["diffs"].items():
        assert diff <= report["tolerance"], (case, report)
