"""RLG under the step caches users stack on it, against exact RLG and against the base with the same cache.

    make bench-caches      (or: .comfy-host/venv/bin/python -m benchmarks.bench_caches [--quick])

Two parts, each timed in one run with the cases interleaved (medians over repetitions: a ratio against a baseline
taken in the same run, on this noisy machine):

1. A FLUX.1-shaped model (random weights, ComfyUI's own Flux class, the caches' home family), LoRA RL model on the
   base's module, 20 steps: for each cache (EasyCache, LazyCache, TeaCache, WaveSpeed's FBCache, where it runs on this
   ComfyUI), at a threshold where it reuses steps:
     time    RLG + cache / exact RLG, and base + cache / base alone (what the cache saves the base by itself);
     error   max |RLG + cache - exact RLG|, and max |base + cache - base| (the cache's own error, for scale);
   and rl_every 2, alone and with each cache.
   "RLG + cache, nothing reused" is what RLG pays under a cache by itself: a LoRA RL pass under a step cache adds the
   LoRA by weight function (the way that can prove each layer's part in one forward; a hook cannot tell a layer the
   cache skipped from one computed without it), which costs more than the hooks of exact RLG on a small model.
2. The demo pair (the trained tiny SD3 and its red-disc RL LoRA, make demo's models; trained here when missing), w = 2,
   256 samples from one noise: for each cache that engages on SD3 (LazyCache; FBCache where it runs): the share of
   red discs, the share of samples whose pattern differs from exact RLG's ("switched"), and the time against exact
   RLG; the same for rl_every 2 and both together, and the base with each cache against the base.

It says whether a cache helps RLG more than rl_every 2 does, and by how much both together beat either. Writes
benchmarks/results/caches_*.csv. Numbers are this machine's: the cost of a step cache's reuse decision and of RLG's
per-call work weigh more on a small model than on a real one.
"""

from __future__ import annotations

import argparse
import copy
import csv
import statistics
import time

from harness import host

ROOT = host.ROOT
RESULTS = ROOT / "benchmarks" / "results"
SCALE = 2.0
# FLUX.1's layout at a size a CPU samples in seconds: 256 wide, 4 heads, 2 double and 4 single blocks, 16 x 16 latent.
FLUX_SIZE = {"hidden_size": 256, "num_heads": 4, "axes_dim": [16, 24, 24], "depth": 2, "depth_single_blocks": 4}
CACHES = ("EasyCache", "LazyCache", "TeaCache", "ApplyFBCacheOnModel")
DEMO_CACHES = ("LazyCache", "ApplyFBCacheOnModel")  # EasyCache and TeaCache do not engage on SD3


def _setup():
    host.use_comfy(cpu=True)
    from harness.pack import load_pack

    load_pack()


def _caches(names) -> dict:
    """The cache nodes that run on this ComfyUI (the others are reported with their own error)."""
    from harness import step_cache_nodes as scn
    from harness import thirdparty

    out, skipped = {}, {}
    for name in names:
        try:
            if name in scn.PACK_OF:
                thirdparty.load(scn.PACK_OF[name])
            out[name] = scn.FACTORIES[name]()
        except Exception as err:  # noqa: BLE001  (a pack that fails on this host by itself)
            skipped[name] = f"{type(err).__name__}: {err}"
    return out, skipped


LADDER = (0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.8, 1.2, 2.0)


class Forwards:
    """Full network forwards: the network's last block runs only where no cache served the call."""

    def __init__(self, block):
        self.block, self.calls = block, 0

    def __enter__(self):
        self.handle = self.block.register_forward_pre_hook(lambda *a: setattr(self, "calls", self.calls + 1))
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def calibrate(node, base, sample, block, steps: int) -> float:
    """The cache's threshold: the smallest of LADDER at which the base with it computes at most 60% of its steps."""
    for threshold in LADDER:
        with Forwards(block) as forwards:
            sample(node.apply(base, threshold))()
        if forwards.calls <= 0.6 * steps:
            return threshold
    return LADDER[-1]


def _timed(runs: dict, reps: int) -> tuple[dict, dict]:
    """{case: median seconds}, {case: output}, the cases interleaved rep by rep."""
    times = {k: [] for k in runs}
    outs = {}
    for _ in range(reps):
        for case, fn in runs.items():
            t0 = time.perf_counter()
            outs[case] = fn()
            times[case].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}, outs


def flux_part(quick: bool) -> list[dict]:
    import comfy.sample
    import torch

    from harness import sampling as h
    from harness import tiny_families as tf
    from harness.weights import seeded_state_dict

    config = tf.model_config("flux")
    config.unet_config = dict(copy.deepcopy(config.unet_config), **FLUX_SIZE)
    config.set_inference_dtype(torch.float32, None)

    def load():
        import comfy.model_management
        import comfy.model_patcher

        model = config.get_model({}, "")
        model.load_model_weights(dict(base_sd), "")
        return comfy.model_patcher.ModelPatcher(model, load_device=comfy.model_management.get_torch_device(),
                                                offload_device=comfy.model_management.unet_offload_device())

    base_sd = seeded_state_dict(config.get_model({}, "").diffusion_model, 0, 0.05, unit=tf.norm_vectors)
    steps, side, reps = (8, 8, 2) if quick else (20, 32, 3)
    base = load()
    rl = tf.load_lora(base, tf.module_lora(base, 7, "kohya", scale=2.0))
    positive, negative = tf.conds("flux", 1)
    latent = torch.zeros(1, 16, side, side)
    noise = comfy.sample.prepare_noise(latent, 42)

    def sample(model):
        return lambda: comfy.sample.sample(model, noise, steps, 3.0, "euler", "simple", positive, negative, latent,
                                           denoise=1.0, disable_pbar=True, seed=42)

    caches, skipped = _caches(CACHES)
    block = base.model.diffusion_model.single_blocks[-1]
    with torch.inference_mode():
        thresholds = {name: calibrate(node, base, sample, block, steps) for name, node in caches.items()}
    runs = {"base": sample(base), "RLG": sample(h.rlg(base, rl, SCALE)),
            "RLG rl_every 2": sample(h.rlg(base, rl, SCALE, rl_every=2))}
    for name, node in caches.items():
        t = thresholds[name]
        runs[f"base + {name}"] = sample(node.apply(base, t))
        # What RLG pays under the cache when it reuses nothing: the LoRA RL pass's exact way (weight functions).
        runs[f"RLG + {name}, nothing reused"] = sample(node.apply(h.rlg(base, rl, SCALE), node.nothing_reused))
        runs[f"RLG + {name}"] = sample(node.apply(h.rlg(base, rl, SCALE), t))
        runs[f"RLG rl_every 2 + {name}"] = sample(node.apply(h.rlg(base, rl, SCALE, rl_every=2), t))
    with torch.inference_mode():
        forwards = _forwards(runs, block)
        med, outs = _timed(runs, reps)
    rows = []
    for case in runs:
        reference = "base" if case.startswith("base") else "RLG"
        rows.append(_row("flux", case, reference, med, outs, forwards, thresholds, h))
    for name, why in skipped.items():
        rows.append({"part": "flux", "case": f"RLG + {name}", "skipped": why})
    return rows


def _forwards(runs: dict, block) -> dict:
    """{case: full network forwards of one run}; also the warm-up of every case."""
    out = {}
    for case, fn in runs.items():
        with Forwards(block) as forwards:
            fn()
        out[case] = forwards.calls
    return out


def _row(part, case, reference, med, outs, forwards, thresholds, h) -> dict:
    scale = float(outs[reference].abs().max())
    return {"part": part, "case": case, "vs": reference,
            "threshold": next((t for name, t in thresholds.items() if case.endswith(name)), ""),
            "forwards": forwards[case], "time_ratio": med[case] / med[reference],
            "max_diff": h.max_diff(outs[case], outs[reference]) / scale, "seconds": med[case]}


def demo_part(quick: bool) -> list[dict]:
    import comfy.latent_formats
    import comfy.sample
    import comfy.sd
    import comfy.utils
    import torch

    from demo import run_demo, synthetic, train
    from harness import sampling as h

    models = host.comfy_dir() / "models"
    run_demo.ensure_models(models, train.TrainConfig(), quiet=True)
    base = comfy.sd.load_diffusion_model_state_dict(
        comfy.utils.load_torch_file(str(models / "diffusion_models" / run_demo.BASE_FILE)))
    lora = comfy.utils.load_torch_file(str(models / "loras" / run_demo.LORA_FILE))
    rl = comfy.sd.load_lora_for_models(base, None, lora, 1.0, 0)[0]
    samples, reps = (64, 1) if quick else (256, 3)
    context, pooled = synthetic.prompt_conditioning()
    positive = [[context, {"pooled_output": pooled}]]
    negative = [[torch.zeros_like(context), {"pooled_output": torch.zeros_like(pooled)}]]
    latent = torch.zeros(samples, 16, 8, 8)
    noise = comfy.sample.prepare_noise(latent, 1)

    def sample(model):
        return lambda: comfy.latent_formats.SD3().process_in(comfy.sample.sample(
            model, noise, run_demo.STEPS, 1.0, "euler", "simple", positive, negative, latent, denoise=1.0,
            disable_pbar=True, seed=1))

    caches, skipped = _caches(DEMO_CACHES)
    block = base.model.diffusion_model.joint_blocks[-1]
    with torch.inference_mode():
        thresholds = {name: calibrate(node, base, sample, block, run_demo.STEPS) for name, node in caches.items()}
    runs = {"base": sample(base), "RLG": sample(h.rlg(base, rl, SCALE)),
            "RLG rl_every 2": sample(h.rlg(base, rl, SCALE, rl_every=2))}
    for name, node in caches.items():
        t = thresholds[name]
        runs[f"base + {name}"] = sample(node.apply(base, t))
        runs[f"RLG + {name}"] = sample(node.apply(h.rlg(base, rl, SCALE), t))
        runs[f"RLG rl_every 2 + {name}"] = sample(node.apply(h.rlg(base, rl, SCALE, rl_every=2), t))
    with torch.inference_mode():
        forwards = _forwards(runs, block)
        med, outs = _timed(runs, reps)
    exact = {k: synthetic.classify(outs[k]) for k in ("base", "RLG")}
    rows = []
    for case, x in outs.items():
        modes = synthetic.classify(x)
        reference = "base" if case.startswith("base") else "RLG"
        row = _row("demo", case, reference, med, outs, forwards, thresholds, h)
        row.update(red_share=float((modes == synthetic.REWARDED_MODE).float().mean()),
                   switched=float((modes != exact[reference]).float().mean()))
        rows.append(row)
    for name, why in skipped.items():
        rows.append({"part": "demo", "case": f"RLG + {name}", "skipped": why})
    return rows


def verdicts(rows: list[dict]) -> list[str]:
    """Whether a cache helps RLG more than rl_every 2, and what both together give, from the FLUX part's times."""
    t = {r["case"]: r["time_ratio"] for r in rows if r["part"] == "flux" and "time_ratio" in r}
    every = t.get("RLG rl_every 2")
    lines = []
    for case, ratio in t.items():
        if not case.startswith("RLG + ") or case.endswith("nothing reused"):
            continue
        name = case[len("RLG + "):]
        both = t.get(f"RLG rl_every 2 + {name}")
        better = "more" if ratio < every else "less"
        line = f"{name} helps RLG {better} than rl_every 2 does (time {ratio:.2f} against {every:.2f} of exact RLG)"
        if both is not None:
            best = min(ratio, every)
            line += (f"; both together: {both:.2f}, " + (f"{(1 - both / best) * 100:.0f}% faster than the better one"
                                                        if both < best else "no faster than the better one alone"))
        lines.append(line)
    return lines


def print_table(rows: list[dict]) -> None:
    for part, title in (("flux", "FLUX.1-shaped model, LoRA RL model, w = 2"), ("demo", "the demo pair, w = 2")):
        print(f"\n[{title}]")
        head = f"{'case':<44}{'threshold':>10}{'forwards':>9}{'time':>7}{'vs':>6}{'rel. max |diff|':>16}"
        if part == "demo":
            head += f"{'red discs':>11}{'switched':>10}"
        print(head)
        print("-" * len(head))
        for r in (r for r in rows if r["part"] == part):
            if "skipped" in r:
                print(f"{r['case']:<44} skipped (fails on this ComfyUI by itself: {r['skipped'][:80]})")
                continue
            line = (f"{r['case']:<44}{r['threshold']!s:>10}{r['forwards']:>9}{r['time_ratio']:>7.2f}{r['vs']:>6}"
                    f"{r['max_diff']:>16.3g}")
            if part == "demo":
                line += f"{r['red_share']:>11.3f}{r['switched']:>10.3f}"
            print(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer steps, samples and repetitions (a smoke run)")
    parser.add_argument("--no-demo", action="store_true", help="the FLUX part only (no demo models needed)")
    args = parser.parse_args()
    _setup()
    import torch

    torch.set_num_threads(1)  # steadier timings on a shared 2-core machine
    print(f"ComfyUI {host.comfy_version()}; time = median seconds / the reference case's, in the same run")
    rows = flux_part(args.quick)
    if not args.no_demo:
        rows += demo_part(args.quick)
    print_table(rows)
    print()
    for line in verdicts(rows):
        print(line)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"caches_{host.comfy_version()}{'_quick' if args.quick else ''}.csv"
    fields = ["part", "case", "threshold", "forwards", "time_ratio", "vs", "max_diff", "red_share", "switched",
              "seconds", "skipped"]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    print(f"\nCSV: {path}")


if __name__ == "__main__":
    main()
