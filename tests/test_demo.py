"""The demo: its data, training and sweep at a very small size (seconds); its training, the same bytes under emulated
CPUs; and what it claims, on a pair small enough to train here (docs/demo.md).

No test pins one machine's figures. The claims are run_demo.claims, the checks `make demo` runs on its own samples:
RLG at w = 1 is the RL model alone, the reward rises with w, rl_every 2 stays close to exact RLG.
"""

from __future__ import annotations

import csv
import json
import math

import comfy.lora
import comfy.sd
import pytest
import safetensors.torch
import torch

from demo import cpu_check, run_demo, synthetic, train
from harness import sampling as h
from harness import templates, tiny_sd3
from harness.server import ComfyServer
from harness.weights import seeded_state_dict

TINY = train.TrainConfig(base_steps=40, base_batch=32, rl_samples=64, rl_sample_steps=4, rl_steps=30, rl_batch=32)


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    models = tmp_path_factory.mktemp("demo_models")
    with torch.inference_mode(False):
        manifest = run_demo.ensure_models(models, TINY, quiet=True)
    return models, manifest


@pytest.fixture(scope="module")
def tiny_run(tiny_models, tmp_path_factory):
    """Both sweeps through one ComfyUI server: the dial at 0, 1, 2 and the (w_1, w_2) grid over {0, 1}^2."""
    models, _ = tiny_models
    out = tmp_path_factory.mktemp("demo_run")
    rows, grid, cost, _ = run_demo.run(models, out / "out", out / "work", TINY, scales=(0.0, 1.0, 2.0), samples=8,
                                       quiet=True, grid_scales=(0.0, 1.0), every_scales=(1.0, 2.0),
                                       lora_strengths=(1.0, 2.0))
    return rows, grid, out / "out", cost


def test_data_set_is_known_and_the_reward_is_per_mode():
    gen = torch.Generator().manual_seed(0)
    x, modes = synthetic.sample_data(2000, gen)
    assert torch.equal(synthetic.classify(x), modes)
    shares = torch.bincount(modes, minlength=4) / 2000
    assert torch.allclose(shares, torch.tensor(synthetic.MODE_WEIGHTS), atol=0.03)
    assert torch.equal(synthetic.reward(synthetic.patterns()), torch.tensor(synthetic.REWARDS))


def test_predicted_share_is_the_beta_over_w_tilt():
    base, beta = 0.15, 0.5
    assert synthetic.predicted_share(base, 0.0, beta) == pytest.approx(base)
    shares = [synthetic.predicted_share(base, w, beta) for w in (0, 0.5, 1, 2, 3)]
    assert all(a < b for a, b in zip(shares, shares[1:], strict=False))
    # Scale w with beta is the same as scale 1 with beta / w.
    assert synthetic.predicted_share(base, 2.0, beta) == pytest.approx(synthetic.predicted_share(base, 1.0, beta / 2))


def test_predicted_shares_are_the_sum_tilt():
    base, betas = (0.15, 0.35, 0.25, 0.25), (2 / 3, 0.5)
    assert synthetic.predicted_shares(base, (0.0, 0.0), betas) == pytest.approx(base)
    # The closed form: p_k proportional to base_k exp(w_1 r_1(k) / beta_1 + w_2 r_2(k) / beta_2).
    w1, w2 = 1.5, 0.8
    tilted = [b * math.exp(w1 * r1 / betas[0] + w2 * r2 / betas[1])
              for b, r1, r2 in zip(base, synthetic.REWARDS, synthetic.REWARDS_2, strict=True)]
    expected = [t / sum(tilted) for t in tilted]
    shares = synthetic.predicted_shares(base, (w1, w2), betas)
    assert shares == pytest.approx(expected) and sum(shares) == pytest.approx(1.0)
    # w_2 = 0 is the one-dial tilt; each reward's scale w_i with beta_i is scale 1 with beta_i / w_i.
    for w in (0.5, 1.0, 3.0):
        one_dial = synthetic.predicted_shares(base, (w, 0.0), betas)[synthetic.REWARDED_MODE]
        assert one_dial == pytest.approx(synthetic.predicted_share(base[0], w, betas[0]))
    assert shares == pytest.approx(synthetic.predicted_shares(base, (1.0, 1.0), (betas[0] / w1, betas[1] / w2)))
    # Raising one dial raises its pattern and lowers the other rewarded one; huge scales do not overflow.
    more = synthetic.predicted_shares(base, (w1 + 1, w2), betas)
    assert more[0] > shares[0] and more[2] < shares[2]
    assert synthetic.predicted_shares(base, (1e3, 0.0), betas) == pytest.approx([1.0, 0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="one scale and one beta per reward"):
        synthetic.predicted_shares(base, (1.0,), betas)


def test_training_is_deterministic_and_learns():
    with torch.inference_mode(False):
        cfg = train.TrainConfig(base_steps=25, base_batch=32)
        a, b = train.train_base(cfg), train.train_base(cfg)
        assert all(torch.equal(a[k], b[k]) for k in a)
        net = tiny_sd3.build_mmdit()
        gen = torch.Generator().manual_seed(5)
        x0 = synthetic.sample_data(256, gen)[0]
        sigma = torch.full((256,), 0.5)
        eps = torch.randn(x0.shape, generator=gen)
        x = 0.5 * x0 + 0.5 * eps

        def loss(sd):
            net.load_state_dict(sd)
            with torch.no_grad():
                return float(torch.nn.functional.mse_loss(train.predict(net, x, sigma), eps - x0))

        init = seeded_state_dict(net, 0, std=0.02)
        assert loss(a) < 0.8 * loss(init)


def test_saved_models_load_in_comfyui_and_lora_equals_full(tiny_models):
    models, _ = tiny_models
    base = comfy.sd.load_diffusion_model(str(models / "diffusion_models" / run_demo.BASE_FILE))
    full = comfy.sd.load_diffusion_model(str(models / "diffusion_models" / run_demo.RL_FILE))
    assert type(base.model).__name__ == "SD3" and type(full.model).__name__ == "SD3"
    lora_sd = safetensors.torch.load_file(models / "loras" / run_demo.LORA_FILE)
    key_map = comfy.lora.model_lora_keys_unet(base.model, {})
    patches = comfy.lora.load_lora(lora_sd, key_map)
    lora = base.clone()
    assert len(lora.add_patches(patches, 1.0)) == len(patches) == len(lora_sd) // 3
    context, pooled = synthetic.prompt_conditioning()
    positive = [[context, {"pooled_output": pooled}]]
    negative = [[torch.zeros_like(context), {"pooled_output": torch.zeros_like(pooled)}]]
    kw = dict(positive=positive, negative=negative, cfg=1.0, steps=6, latent_image=torch.zeros(4, 16, 8, 8))
    via_lora, via_full, via_base = h.ksample(lora, **kw), h.ksample(full, **kw), h.ksample(base, **kw)
    assert h.max_diff(via_lora, via_full) <= 1e-4
    assert h.max_diff(via_full, via_base) > 1e-3


def test_second_rl_lora_loads_in_comfyui(tiny_models):
    models, manifest = tiny_models
    assert manifest["stats_2"]["base_sample_count"] == TINY.rl_samples
    base = comfy.sd.load_diffusion_model(str(models / "diffusion_models" / run_demo.BASE_FILE))
    key_map = comfy.lora.model_lora_keys_unet(base.model, {})
    kw = dict(cfg=1.0, steps=6, latent_image=torch.zeros(4, 16, 8, 8))
    context, pooled = synthetic.prompt_conditioning()
    kw["positive"] = [[context, {"pooled_output": pooled}]]
    kw["negative"] = [[torch.zeros_like(context), {"pooled_output": torch.zeros_like(pooled)}]]
    outs = {}
    for name in (run_demo.LORA_FILE, run_demo.LORA2_FILE):
        lora_sd = safetensors.torch.load_file(models / "loras" / name)
        patches = comfy.lora.load_lora(lora_sd, key_map)
        lora = base.clone()
        assert len(lora.add_patches(patches, 1.0)) == len(patches) == len(lora_sd) // 3, name
        outs[name] = h.ksample(lora, **kw)
    # Its own model: not the base, not the first RL LoRA.
    assert h.max_diff(outs[run_demo.LORA2_FILE], h.ksample(base, **kw)) > 1e-3
    assert h.max_diff(outs[run_demo.LORA2_FILE], outs[run_demo.LORA_FILE]) > 1e-3


def test_model_cache_is_reused_and_checked(tiny_models, tmp_path):
    models, manifest = tiny_models
    again = run_demo.ensure_models(models, TINY, quiet=True)
    assert again["sha256"] == manifest["sha256"] and again.get("train_seconds") == manifest["train_seconds"]
    # A damaged file is noticed and the models are made again (into a copy, to keep the fixture intact).
    copy = tmp_path / "models"
    for sub in ("diffusion_models", "loras"):
        (copy / sub).mkdir(parents=True)
        for f in (models / sub).iterdir():
            (copy / sub / f.name).write_bytes(f.read_bytes())
    (copy / "loras" / run_demo.LORA_FILE).write_bytes(b"broken")
    with torch.inference_mode(False):
        remade = run_demo.ensure_models(copy, TINY, quiet=True)
    assert remade["sha256"] == manifest["sha256"]  # deterministic: the same files again


@pytest.mark.server
def test_sweep_through_comfyui_at_small_size(tiny_run):
    rows, _, out, _ = tiny_run
    by_label = {r.label: r for r in rows}
    w1, rl_lora, rl_full = by_label["RLG w=1"], by_label["RL alone (lora)"], by_label["RL alone (full)"]
    # The LoRA runs as a forward-hook bypass in RLG and merged into the weights alone: equal to rounding.
    assert h.max_diff(w1.samples, rl_lora.samples) <= h.tolerance(rl_lora.samples)
    assert h.max_diff(w1.samples, rl_full.samples) <= 1e-4
    assert h.max_diff(by_label["RLG w=2"].samples, w1.samples) > 1e-3
    for name in ("sweep.csv", "rlg_dial.png", "samples.png"):
        assert (out / name).stat().st_size > 0
    assert len((out / "sweep.csv").read_text().splitlines()) == 1 + 3 + 2


@pytest.mark.server
def test_two_dial_grid_through_comfyui_at_small_size(tiny_run):
    rows, grid, out, _ = tiny_run
    assert [(r.w1, r.w2) for r in grid] == [(0.0, 0.0), (0.0, 1.0), (1.0, 0.0), (1.0, 1.0)]
    point = {(r.w1, r.w2): r for r in grid}
    single = {r.scale: r for r in rows if r.scale is not None}
    # RLG Apply (several RL models) with RL model 2 at 0 is RLG Apply with RL model 1 alone; (0, 0) is the base.
    for w in (0.0, 1.0):
        assert h.max_diff(point[(w, 0.0)].samples, single[w].samples) <= h.tolerance(single[w].samples), w
    # The second dial does something, and something else than the first.
    assert h.max_diff(point[(0.0, 1.0)].samples, point[(0.0, 0.0)].samples) > 1e-3
    assert h.max_diff(point[(0.0, 1.0)].samples, point[(1.0, 0.0)].samples) > 1e-3
    for r in grid:
        assert sum(r.measured) == pytest.approx(1.0) and sum(r.predicted) == pytest.approx(1.0)
    assert point[(0.0, 0.0)].predicted == pytest.approx(point[(0.0, 0.0)].measured)
    with open(out / "grid.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert len(table) == 4 and [float(t["w_2"]) for t in table] == [0.0, 1.0, 0.0, 1.0]
    assert float(table[3]["predicted_red_disc"]) == pytest.approx(point[(1.0, 1.0)].predicted[0], abs=1e-4)
    assert float(table[3]["measured_blue_cross"]) == pytest.approx(point[(1.0, 1.0)].measured[2], abs=1e-4)
    for name in ("rlg_two_dials.png", "grid_samples.png"):
        assert (out / name).stat().st_size > 0


@pytest.mark.server
def test_cost_table_rl_every_and_lora_strength_through_comfyui(tiny_run):
    rows, _, out, cost = tiny_run
    by = {(r.method, r.w): r for r in cost}
    exact = {r.scale: r for r in rows if r.scale is not None}
    steps = run_demo.STEPS
    for w in (1.0, 2.0):
        assert by[("RLG", w)].switched == 0.0
        assert 0.0 <= by[("RLG, RL every 2nd step", w)].switched <= 1.0
        lora = by[("RL LoRA at strength w", w)]
        assert (lora.rl_forwards, lora.base_forwards) == (steps, 0)
    # (RL, base) forwards: at w = 1 RLG is the RL model alone at any rl_every; at w = 2 the base runs at every step
    assert [(by[(m, 1.0)].rl_forwards, by[(m, 1.0)].base_forwards) for m in ("RLG", "RLG, RL every 2nd step")] == \
        [(steps, 0), (steps, 0)]
    assert [(by[(m, 2.0)].rl_forwards, by[(m, 2.0)].base_forwards) for m in
            ("RLG", "RLG, RL every 2nd step", "RLG, RL every 3rd step")] == [(steps, steps), (10, steps), (7, steps)]
    # At w = 1 RLG is the RL model alone (one forward), which rl_every leaves exact; the LoRA at strength 1 too.
    for method in ("RLG, RL every 2nd step", "RL LoRA at strength w"):
        assert h.max_diff(by[(method, 1.0)].samples, exact[1.0].samples) <= h.tolerance(exact[1.0].samples), method
    # At w = 2 both differ from exact RLG (an estimate, and weight-space extrapolation)
    assert h.max_diff(by[("RLG, RL every 2nd step", 2.0)].samples, exact[2.0].samples) > 1e-4
    assert h.max_diff(by[("RL LoRA at strength w", 2.0)].samples, exact[2.0].samples) > 1e-4
    with open(out / "cost.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert len(table) == len(cost) and {t["method"] for t in table} == {r.method for r in cost}
    assert (out / "rlg_cost.png").stat().st_size > 0


@pytest.mark.server
def test_scale_sweep_grid_picture_from_the_demo_models(tiny_run):
    from PIL import Image

    _, _, out, _ = tiny_run
    grid = Image.open(out / "sweep_grid.png")
    # 6 scales across, 4 samples per scale down, each a 64-pixel picture with a label strip under it
    assert grid.size[0] > 6 * 64 and grid.size[1] > 4 * 64 and grid.size[0] < 6 * 80 and grid.size[1] < 4 * 100


@pytest.mark.server
def test_demo_example_workflow_runs(tiny_models, tmp_path):
    models, _ = tiny_models
    paths = tmp_path / "extra_model_paths.yaml"
    paths.write_text(f"t:\n  base_path: {models}\n  diffusion_models: diffusion_models\n  loras: loras\n"
                     f"  custom_nodes: {run_demo.DEMO_NODES}\n")
    graph = json.loads(templates.api_path("rlg_demo").read_text())
    graph["5"]["inputs"]["batch_size"] = 2
    sweep = json.loads(templates.api_path("rlg_demo_sweep").read_text())
    server = ComfyServer(tmp_path / "work", paths, ["ComfyUI-RLG", "rlg_demo_nodes"]).start()
    try:
        listed = server.get("/workflow_templates")
        entry = server.run(graph)
        swept = server.run(sweep)
    finally:
        server.stop()
    # Listed with the demo's nodes, which they need, not with the pack (harness/templates.py).
    assert {"rlg_demo", "rlg_demo_sweep"} <= set(listed.get("rlg_demo_nodes", [])), listed
    assert not {"rlg_demo", "rlg_demo_sweep"} & set(listed.get("ComfyUI-RLG", [])), listed
    assert entry["status"]["status_str"] == "success", entry["status"]
    assert len(entry["outputs"]["8"]["images"]) == 2
    assert swept["status"]["status_str"] == "success", swept["status"]
    (grid_id,) = [k for k, v in sweep.items() if v["class_type"] in ("PreviewImage", "SaveImage")]
    assert len(swept["outputs"][grid_id]["images"]) == 1  # the sweep's images, as one grid picture


def test_training_gives_the_same_files_under_every_emulated_cpu():
    """make demo's training is pinned (demo.train.PINNED_ENV, pin_numerics), so other kinds of CPU, emulated by
    capping what torch, MKL, oneDNN and glibc may use (demo.cpu_check.KINDS), train the same bytes; left to the CPU
    the same caps give other bytes, so the emulation does change the arithmetic."""
    if torch.backends.cpu.get_cpu_capability() == "DEFAULT":
        pytest.skip("this CPU has no AVX2: the kinds demo.cpu_check emulates cap AVX2 and AVX-512, which it lacks")
    kinds = ["this CPU", "AVX2, no AVX-512", "SSE4.2, no AVX (x86-64-v2)", "4 threads"]
    pinned = cpu_check.train_digests(TINY, kinds, native=False)
    assert len(set(pinned.values())) == 1, pinned
    native = cpu_check.train_digests(TINY, kinds[1:3], native=True)
    assert len(set(native.values())) == 2, native


def test_training_process_refuses_to_train_without_the_pins(tmp_path):
    """Started without PINNED_ENV, the training process finds torch on its AVX2 / AVX-512 kernels and refuses, saying
    how to start it, rather than train models of this CPU's own."""
    import subprocess
    import sys

    from harness import host

    if torch.backends.cpu.get_cpu_capability() == "DEFAULT":
        pytest.skip("this CPU runs torch's portable kernels anyway")
    cmd = [sys.executable, "-m", "demo.train", "--config", json.dumps(TINY.as_dict()), "--out", str(tmp_path),
           "--quiet"]
    done = subprocess.run(cmd, cwd=host.ROOT, env=host.child_env(), capture_output=True, text=True)
    assert done.returncode != 0 and "not the portable ones" in done.stderr, done.stderr[-2000:]
    assert not list(tmp_path.iterdir())


# What the demo claims, on a pair trained here: half the demo's base steps, a third of its RL steps and half its RL
# samples, pinned as make demo pins them (this test needs no figure of the demo's, only its claims). The models are
# kept in the checkout's out/ (git-ignored) and reused while their config and the training code are the same: trained
# once per checkout, by the first leg of the matrix. (The sweep trains them pinned, so asking ensure_models for the
# CPU's own numerics first made each leg train the pair twice, each run undoing the other's cache.)
CLAIMS_PAIR = train.TrainConfig(base_steps=600, rl_samples=1024, rl_sample_steps=16, rl_steps=300)
CLAIMS_MODELS = run_demo.ROOT / "out" / "test-cache" / "demo-claims"


@pytest.mark.server
def test_what_the_demo_claims_holds_on_a_smaller_pair(tmp_path):
    """run_demo.claims, the checks `make demo` runs on its own samples: RLG at w = 1 is the RL model alone, the
    reward rises with w, and rl_every 2 stays within 0.02 of exact RLG with at most 3% of the samples switched."""
    with torch.inference_mode(False):
        run_demo.ensure_models(CLAIMS_MODELS, CLAIMS_PAIR, quiet=True)
    rows, _, cost, _ = run_demo.run(CLAIMS_MODELS, tmp_path / "out", tmp_path / "work", CLAIMS_PAIR,
                                    scales=(0.0, 1.0, 2.0, 3.0), quiet=True, grid_scales=(), every_scales=(2.0, 3.0),
                                    lora_strengths=())
    checked = run_demo.claims(rows, cost)
    print("\n".join(f"{'holds' if holds else 'FAILS'}: {claim}" for claim, holds in checked))
    assert len(checked) == 3 and all(holds for _, holds in checked), checked
