"""RLG cost against its floor: time and memory of RLG sampling versus the models alone.

    make bench            (or, from the checkout: .comfy-host/venv/bin/python -m benchmarks.bench_rlg [--quick])

RLG needs a base and an RL prediction per blended step, so the floor is t_base + t_rl. This script
samples, in one run and interleaved, with medians over repetitions, on SD3/MMDiT-shaped models of
two sizes (random weights, real ComfyUI sampling on this machine's device):

  time    t_base, t_rl, t_rlg                       -> t_rlg / (t_base + t_rl)     (target <= 1.05)
          t_base, t_lora, t_rlg(LoRA on shared base) -> t_rlg / (t_base + t_lora) (target <= 1.10)
          two and three LoRA RL models at once       -> t / (t_base + sum_i t_lora_i) (target <= 1.10)
          t_rlg with the batched LoRA path            -> same ratio, "well under 1" where batching pays
          50% window                                   -> against 0.5 * full + 0.5 * RL alone (within 5%)
  memory  peak resident memory of each case in a fresh process (GPU: peak allocated device memory);
          RLG's extra over base-only sampling, against the RL weights' size (full; target <= +10%)
          and the LoRA's size (target <= 2x)

On a GPU machine: RLG_BENCH_DEVICE=cuda make bench.

It prints the machine, a table and the ratios, and writes benchmarks/results/*.csv.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from harness import host
from harness.pack import load_pack

ROOT = host.ROOT

SIZES = {
    # name: (depth, latent side, steps, batch); hidden = 64 * depth
    "tiny": (2, 8, 8, 2),      # 1.1 M params, 16 image tokens: per-call overhead dominates
    "small": (6, 32, 6, 1),    # 31 M params, 256 image tokens: the network's compute dominates
    # SD3.5-Medium's true shape (MMDiT-X, depth 24, hidden 1536, 2.5 B params), random weights, a
    # 512x512 image (64x64 latent): only with --sizes sd35m, on a GPU (RLG_BENCH_DEVICE=cuda).
    "sd35m": (24, 64, 6, 1),
}
DEFAULT_SIZES = ("tiny", "small")
QUICK_SIZES = {"tiny": (2, 8, 4, 2), "small": (4, 16, 4, 1)}
EXACT_CASES = ("base", "rl", "rlg", "lora", "rlg_lora", "rlg_lora_batched", "rlg_lora_wrappers", "rlg_window50",
               "lora2", "lora3", "rlg_2loras", "rlg_3loras")
# rl_every n: the RL model at every n-th step, its correction estimated between (an opt-in estimate, not exact RLG)
EVERY_CASES = {"rlg_every": ("rl", None), "rlg_lora_every": ("lora", False), "rlg_lora_batched_every": ("lora", True)}
EVERY_TARGETS = {2: 0.80, 3: 0.72}  # t / (t_base + t_rl) on the small model (the targets)
DEFAULT_EVERY = (2, 3)


def cases_for(every: tuple[int, ...] = DEFAULT_EVERY) -> tuple[str, ...]:
    """The exact cases, then each rl_every case for these n."""
    return EXACT_CASES + tuple(f"{name}{n}" for n in every for name in EVERY_CASES)


CASES = cases_for()


def _every_of(case: str) -> tuple[str, int] | None:
    """(the EVERY_CASES name, n) of an rl_every case, else None."""
    match = re.fullmatch(r"(rlg_every|rlg_lora_every|rlg_lora_batched_every)([2-8])", case)
    return (match.group(1), int(match.group(2))) if match else None


def parse_every(text: str) -> tuple[int, ...]:
    """--rl-every: a comma-separated list of n from 2 to 8 ('' or 'none': no rl_every cases)."""
    if text.strip().lower() in ("", "none"):
        return ()
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: a comma-separated list of whole numbers from 2 to 8") from None
    if not all(2 <= v <= 8 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: each value from 2 to 8 (1 is exact RLG, the rlg cases)")
    return values


def _setup_comfy():
    host.use_comfy(cpu=os.environ.get("RLG_BENCH_DEVICE", "cpu") == "cpu")


def _load_pack():
    """RLG Apply's one RL model through the pack's one entry, attach_rlg (harness.sampling.rlg)."""
    load_pack()
    from harness.sampling import rlg

    return rlg


def _with_weight_functions(base, lora):
    """RLG on a LoRA pair through the general path (weight functions), which non-plain LoRAs take."""
    import comfy.patcher_extension

    patched = _load_pack()(base, lora, 1.5, 0.0, 1.0, batched=False)
    (wrapper,) = patched.get_all_wrappers(comfy.patcher_extension.WrappersMP.CALC_COND_BATCH)
    for layer in wrapper.terms[0].pair.delta.layers:
        layer.lowrank = None  # no hooks: every layer takes its weight function
    return patched


def sd35m_state_dict(seed: int = 0) -> dict:
    """SD3.5-Medium's diffusion model, with its true shapes and seeded random fp16 weights.

    MMDiT-X: depth 24, hidden 1536, 24 heads, RMS qk-norm, dual attention in blocks 0-12, a 384
    position table, T5/CLIP context 4096 wide and a 2048-wide pooled vector. Built on the meta
    device (shapes only), then filled on the benchmark device and handed over on the CPU, as a
    loaded file is (and as tiny_models' helpers take it).
    """
    import comfy.ops
    import torch
    from comfy.ldm.modules.diffusionmodules.mmdit import OpenAISignatureMMDITWrapper

    with torch.device("meta"):
        net = OpenAISignatureMMDITWrapper(
            input_size=None, patch_size=2, in_channels=16, out_channels=16, depth=24, adm_in_channels=2048,
            context_embedder_config={"target": "torch.nn.Linear",
                                     "params": {"in_features": 4096, "out_features": 1536}},
            pos_embed_max_size=384, num_patches=384 * 384, qk_norm="rms", x_block_self_attn=False,
            x_block_self_attn_layers=list(range(13)), device="meta", dtype=torch.float16,
            operations=comfy.ops.disable_weight_init)
    device = "cuda" if os.environ.get("RLG_BENCH_DEVICE") == "cuda" else "cpu"
    gen = torch.Generator(device).manual_seed(seed)
    out = {}
    for key, value in sorted(net.state_dict().items()):
        if key.endswith("norm.weight") or (".ln_" in key and key.endswith(".weight")):
            out[key] = torch.ones(value.shape, dtype=torch.float16)
        else:
            out[key] = (torch.randn(value.shape, generator=gen, device=device) * 0.02).to("cpu", torch.float16)
    return out


def _several(base, loras):
    """RLG Apply (several RL models) over LoRA RL models, each at its own scale."""
    _load_pack()
    from comfyui_rlg.nodes.apply import attach_rlg
    from comfyui_rlg.nodes.settings import RLGSettings

    scales = (1.2, 0.8, 0.5)[:len(loras)]
    return attach_rlg(base, [(lora, RLGSettings(scale)) for lora, scale in zip(loras, scales, strict=True)])


class Bench:
    """Models and inputs of one size, and a runner per case."""

    def __init__(self, size: str, sizes: dict, need: tuple[str, ...] = ("rl", "lora", "lora", "lora")):
        import comfy.lora
        import comfy.sd
        import torch

        from harness import tiny_models, tiny_sd3
        from harness.weights import seeded_state_dict

        self.torch = torch
        self.depth, self.side, self.steps, self.batch = sizes[size]
        self.size = size
        if size == "sd35m":
            base_sd = sd35m_state_dict()
        else:
            net = tiny_sd3.build_mmdit(depth=self.depth)
            base_sd = seeded_state_dict(net, 0, std=0.02)
            del net
        self.params = sum(v.numel() for v in base_sd.values())
        self.rl_bytes = sum(v.numel() * v.element_size() for v in base_sd.values())  # same shapes as the base
        self.lora_bytes = 0
        self.base = comfy.sd.load_diffusion_model_state_dict(dict(base_sd))
        self.rl = self.lora = None
        self.loras = []
        self.lora_patches = None
        # Build only what is asked for: memory children must not hold (or have held) the others.
        if "rl" in need:  # sd35m: a second seeded model, drawn on the device as the base is
            rl_sd = sd35m_state_dict(seed=1) if size == "sd35m" else tiny_models.perturbed(base_sd, 1, rel=0.1)
            self.rl = comfy.sd.load_diffusion_model_state_dict(rl_sd)
            del rl_sd
        if "lora" in need:
            # rank 64 on every linear layer: big enough that its size stands above RSS noise. Several RL
            # LoRAs (two or three RL models at once) differ by their seed.
            key_map = comfy.lora.model_lora_keys_unet(self.base.model, {})
            for seed in (7, 8, 9)[:need.count("lora") if need.count("lora") > 1 else 1]:
                lora_sd = tiny_models.lora_for(base_sd, seed, rank=64, match="")
                self.lora_bytes = sum(v.numel() * v.element_size() for v in lora_sd.values())
                patched = self.base.clone()
                patches = comfy.lora.load_lora(lora_sd, key_map)
                patched.add_patches(patches)
                self.loras.append(patched)
                self.lora_patches = self.lora_patches or patches  # the first LoRA's, to rebuild it (rl_forwards)
                del lora_sd
            self.lora = self.loras[0]
        del base_sd
        if size == "sd35m":  # T5 + CLIP tokens, 4096 wide; the pooled CLIP-L + CLIP-G vector, 2048 wide
            gen = torch.Generator().manual_seed(0)
            self.positive, self.negative = (
                [[torch.randn(self.batch, 333, 4096, generator=gen),
                  {"pooled_output": torch.randn(self.batch, 2048, generator=gen)}]] for _ in range(2))
        else:
            self.positive, self.negative = tiny_models.tiny_conds("sd3", self.batch, 0)
        self.latent = torch.zeros(self.batch, 16, self.side, self.side)

    def model_for(self, case: str):
        rlg = _load_pack()
        every = _every_of(case)
        if every:
            rl_name, batched = EVERY_CASES[every[0]]
            return rlg(self.base, getattr(self, rl_name), 1.5, 0.0, 1.0, batched=batched, rl_every=every[1])
        return {
            "base": lambda: self.base,
            "rl": lambda: self.rl,
            "lora": lambda: self.lora,
            "rlg": lambda: rlg(self.base, self.rl, 1.5, 0.0, 1.0),
            "rlg_lora": lambda: rlg(self.base, self.lora, 1.5, 0.0, 1.0, batched=False),
            "rlg_lora_wrappers": lambda: _with_weight_functions(self.base, self.lora),
            "rlg_lora_batched": lambda: rlg(self.base, self.lora, 1.5, 0.0, 1.0, batched=True),
            "rlg_window50": lambda: rlg(self.base, self.rl, 1.5, 0.5, 1.0),
            "lora2": lambda: self.loras[1],
            "lora3": lambda: self.loras[2],
            "rlg_2loras": lambda: _several(self.base, self.loras[:2]),
            "rlg_3loras": lambda: _several(self.base, self.loras[:3]),
        }[case]()

    def rl_forwards(self, rl_name: str, every: int, batched: bool | None) -> int:
        """How many forwards ran the RL model in one sampling run (counted on fresh patchers, not timed)."""
        import comfy.lora
        import comfy.sample

        from harness.sampling import ForwardCounter

        rlg = _load_pack()
        counter = ForwardCounter()
        base = self.base.clone()
        if rl_name == "rl":
            rl = self.rl.clone()
            counter.attach(rl)
        else:  # a LoRA's RL rows run in the base's forwards: count the RL model's rows there
            counter.attach(base)
            rl = base.clone()
            rl.add_patches(self.lora_patches)
        noise = comfy.sample.prepare_noise(self.latent, 1)
        with self.torch.inference_mode():
            comfy.sample.sample(rlg(base, rl, 1.5, 0.0, 1.0, batched=batched, rl_every=every), noise, self.steps, 3.0,
                                "euler", "simple", self.positive, self.negative, self.latent, disable_pbar=True, seed=1)
        if rl_name == "rl":
            return counter.calls
        base_rows = self.steps * 2 * self.batch  # cond and uncond rows of every step
        return round((counter.rows - base_rows) / (2 * self.batch))

    def run(self, case: str) -> float:
        import comfy.model_management
        import comfy.sample

        model = self.model_for(case)
        noise = comfy.sample.prepare_noise(self.latent, 1)
        with self.torch.inference_mode():
            t0 = time.perf_counter()
            comfy.sample.sample(model, noise, self.steps, 3.0, "euler", "simple", self.positive, self.negative,
                                self.latent, disable_pbar=True, seed=1)
            comfy.model_management.soft_empty_cache()
            if self.torch.cuda.is_available() and os.environ.get("RLG_BENCH_DEVICE") == "cuda":
                self.torch.cuda.synchronize()
            return time.perf_counter() - t0


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def memory_child(size: str, case: str, quick: bool) -> None:
    """In a fresh process: load only what the case needs, then the peak resident memory of sampling.

    Load-time garbage is returned to the OS (malloc_trim) and the kernel's peak counter (VmHWM) is
    reset after loading (clear_refs 5), so the figure is the peak while sampling: the resident
    models plus what the sampling allocates.
    """
    import gc

    _setup_comfy()
    loras = 3 if case in ("lora3", "rlg_3loras") else 2 if case in ("lora2", "rlg_2loras") else 1
    full_rl = case in ("rl", "rlg", "rlg_window50") or case.startswith("rlg_every")
    need = ("rl",) if full_rl else ("lora",) * loras if "lora" in case else ()
    bench = Bench(size, QUICK_SIZES if quick else SIZES, need)
    gc.collect()
    try:  # give load-time garbage back to the OS, so what stays resident is the models themselves
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass  # not Linux, or not allowed: the figure is then the lifetime peak
    loaded = _status_mb("VmRSS")
    on_gpu = os.environ.get("RLG_BENCH_DEVICE") == "cuda"
    if on_gpu:  # on a GPU what matters is device memory: the allocator's peak during sampling
        import torch

        torch.cuda.reset_peak_memory_stats()
    bench.run(case)
    peak = torch.cuda.max_memory_allocated() / 2**20 if on_gpu else _status_mb("VmHWM")
    print(json.dumps({"peak_mb": peak, "loaded_mb": loaded}))


def measure_memory(size: str, quick: bool, cases: tuple[str, ...] = CASES) -> dict[str, float]:
    out = {}
    for case in cases:
        proc = subprocess.run([sys.executable, "-m", "benchmarks.bench_rlg", "--memory-child", size, case]
                              + (["--quick"] if quick else []), cwd=ROOT, env=host.child_env(), capture_output=True,
                              text=True, check=True)
        out[case] = json.loads(proc.stdout.strip().splitlines()[-1])["peak_mb"]
    return out


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    device = torch.cuda.get_device_name(0) if os.environ.get("RLG_BENCH_DEVICE") == "cuda" else "CPU"
    return (f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), "
            f"device {device}, python {platform.python_version()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=5, help="timed repetitions per case (median reported)")
    parser.add_argument("--quick", action="store_true", help="smaller models and fewer steps (a smoke run)")
    parser.add_argument("--no-memory", action="store_true", help="skip the per-case memory processes")
    parser.add_argument("--sizes", default=",".join(DEFAULT_SIZES),
                        help=f"comma-separated model sizes, of {', '.join(SIZES)} (sd35m: a GPU and ~20 GB)")
    parser.add_argument("--csv", help="write the CSV here (default: benchmarks/results/bench-<time>.csv)")
    parser.add_argument("--rl-every", type=parse_every, default=DEFAULT_EVERY, metavar="N,N",
                        help="the rl_every values (2 to 8) whose cases run besides exact RLG (default 2,3; none: "
                             "none)")
    parser.add_argument("--memory-child", nargs=2, metavar=("SIZE", "CASE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(*args.memory_child, args.quick)
        return

    _setup_comfy()
    cases = cases_for(args.rl_every)
    sizes = QUICK_SIZES if args.quick else {name: SIZES[name] for name in args.sizes.split(",")}
    results_dir = ROOT / "benchmarks" / "results"
    results_dir.mkdir(parents=True, exist_ok=True)
    print(f"machine: {machine()}")
    rows = []
    for size in sizes:
        bench = Bench(size, sizes)
        print(f"\n[{size}] MMDiT depth {bench.depth} ({bench.params / 1e6:.1f} M params), latent {bench.side}x"
              f"{bench.side}, batch {bench.batch}, {bench.steps} euler steps, cfg 3 (cond+uncond batched)", flush=True)
        for case in cases:  # warm-up: load every model, compile nothing, fill caches
            bench.run(case)
        times: dict[str, list[float]] = {c: [] for c in cases}
        for rep in range(args.reps):
            order = cases[rep % len(cases):] + cases[:rep % len(cases)]  # rotate, so drift spreads evenly
            for case in order:
                times[case].append(bench.run(case))
        med = {c: statistics.median(v) for c, v in times.items()}
        mem = {} if args.no_memory else measure_memory(size, args.quick, cases)
        rl_mb, lora_mb = bench.rl_bytes / 2**20, bench.lora_bytes / 2**20
        ratios = {
            "full: t_rlg / (t_base + t_rl)": (med["rlg"] / (med["base"] + med["rl"]), 1.05),
            "LoRA: t_rlg / (t_base + t_lora)": (med["rlg_lora"] / (med["base"] + med["lora"]), 1.10),
            "LoRA batched: t_rlg / (t_base + t_lora)": (med["rlg_lora_batched"] / (med["base"] + med["lora"]), 1.0),
            "LoRA weight wrappers: t / (t_base + t_lora)": (med["rlg_lora_wrappers"] / (med["base"] + med["lora"]),
                                                           1.10),
            "window 50%: t / (0.5 t_rlg + 0.5 t_rl)": (med["rlg_window50"] / (0.5 * med["rlg"] + 0.5 * med["rl"]),
                                                       1.05),
            "2 LoRAs: t / (t_base + t_lora1 + t_lora2)": (
                med["rlg_2loras"] / (med["base"] + med["lora"] + med["lora2"]), 1.10),
            "3 LoRAs: t / (t_base + sum t_lora_i)": (
                med["rlg_3loras"] / (med["base"] + med["lora"] + med["lora2"] + med["lora3"]), 1.10),
            **{f"{what} rl_every {n}: t / (t_base + t_{rl_name})": (
                med[f"{name}{n}"] / (med["base"] + med[rl_name]), EVERY_TARGETS.get(n))
               for name, (rl_name, batched) in EVERY_CASES.items() for n in args.rl_every
               for what in ({"rlg_every": "full", "rlg_lora_every": "LoRA", "rlg_lora_batched_every": "LoRA batched"}
                            [name],)},
        }
        print(f"{'case':<18}{'median s':>10}{'min s':>9}{'peak mem MB':>13}")
        for case in cases:
            peak = f"{mem[case]:.0f}" if mem else "-"
            print(f"{case:<18}{med[case]:>10.3f}{min(times[case]):>9.3f}{peak:>13}")
        for name, (value, target) in ratios.items():
            if target is None:
                print(f"  {name:<42} {value:6.3f}")
                continue
            verdict = "ok" if value <= target else "over target"
            print(f"  {name:<42} {value:6.3f}   (target <= {target:.2f}: {verdict})")
        forwards = {(rl_name, batched, n): bench.rl_forwards(rl_name, n, batched)
                    for rl_name, batched in (("rl", None), ("lora", False)) for n in (1, *args.rl_every)}
        print(f"  RL forwards per run ({bench.steps} steps): " + ", ".join(
            f"{'full' if rl_name == 'rl' else 'LoRA'} rl_every {n}: {count}"
            for (rl_name, _, n), count in forwards.items()))
        if mem:
            extra_full, extra_lora = mem["rlg"] - mem["base"], mem["rlg_lora"] - mem["base"]
            extra_batched = mem["rlg_lora_batched"] - mem["base"]
            extra_wrappers = mem["rlg_lora_wrappers"] - mem["base"]
            print(f"  extra memory, full RL:  {extra_full:7.1f} MB  vs RL weights {rl_mb:.1f} MB "
                  f"(target <= {1.1 * rl_mb:.1f})")
            print(f"  extra memory, LoRA RL:  {extra_lora:7.1f} MB  vs LoRA {lora_mb:.1f} MB "
                  f"(target <= {2 * lora_mb:.1f}); batched {extra_batched:.1f} MB (one more batch of "
                  f"activations); weight wrappers {extra_wrappers:.1f} MB; LoRA alone (stock, in place) "
                  f"{mem['lora'] - mem['base']:.1f} MB")
            for n in (2, 3):
                extra = mem[f"rlg_{n}loras"] - mem["base"]
                print(f"  extra memory, {n} LoRA RL models: {extra:7.1f} MB  vs their LoRAs {n * lora_mb:.1f} MB "
                      f"(target <= {2 * n * lora_mb:.1f}: no copy of the base)")
        for case in cases:
            rows.append({"size": size, "case": case, "median_s": f"{med[case]:.4f}", "min_s": f"{min(times[case]):.4f}",
                         "reps": args.reps, "peak_rss_mb": f"{mem.get(case, float('nan')):.1f}",
                         "params_m": f"{bench.params / 1e6:.2f}", "rl_weights_mb": f"{rl_mb:.2f}",
                         "lora_mb": f"{lora_mb:.2f}"})
        for name, (value, _target) in ratios.items():
            rows.append({"size": size, "case": name, "median_s": f"{value:.4f}", "min_s": "", "reps": args.reps,
                         "peak_rss_mb": "", "params_m": "", "rl_weights_mb": "", "lora_mb": ""})
        del bench
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = Path(args.csv) if args.csv else results_dir / f"bench-{'quick-' if args.quick else ''}{stamp}.csv"
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"\nmachine: {machine()}\nCSV: {path}")


if __name__ == "__main__":
    main()
