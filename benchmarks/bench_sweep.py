"""What a scale sweep costs: RLG Scale Sweep over k scales against k single RLG Apply runs.

    .comfy-host/venv/bin/python -m benchmarks.bench_sweep [--quick] [--reps N]   (also run by make bench)

The sweep samples one batch of k rows, one scale per row, so each step's base and RL forwards are
shared by all k scales: it should cost about one RLG run at batch k, well under k runs at batch 1.
Real ComfyUI sampling (euler, cfg 3) on the benchmark's SD3/MMDiT sizes, random weights, a full RL
file and a LoRA; every case warmed up, interleaved, medians of the repetitions.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import time

from benchmarks import bench_rlg  # the sizes, the models and the host set-up

SCALES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0)


def measure(size: str, sizes: dict, reps: int) -> list[dict]:
    import comfy.sample
    import torch

    rlg = bench_rlg._load_pack()
    from comfyui_rlg.nodes.nodes_sweep import RLGScaleSweep

    bench = bench_rlg.Bench(size, sizes, need=("rl", "lora"))
    one = {"samples": torch.zeros(1, 16, bench.side, bench.side)}
    # The benchmark's conds are for its batch; a sweep starts from one image.
    positive, negative = ([[c[0][0][:1], {k: v[:1] for k, v in c[0][1].items()}]]
                          for c in (bench.positive, bench.negative))
    scales = ", ".join(f"{s:g}" for s in SCALES)
    k = len(SCALES)

    def sample(model, latent):
        noise = comfy.sample.prepare_noise(latent["samples"], 1, latent.get("batch_index"))
        with torch.inference_mode():
            t0 = time.perf_counter()
            comfy.sample.sample(model, noise, bench.steps, 3.0, "euler", "simple", positive, negative,
                                latent["samples"], disable_pbar=True, seed=1)
            if os.environ.get("RLG_BENCH_DEVICE") == "cuda":
                torch.cuda.synchronize()
            return time.perf_counter() - t0

    def singles(rl):
        return sum(sample(rlg(bench.base, rl, s, 0.0, 1.0), one) for s in SCALES)

    batch = {"samples": one["samples"].repeat(k, 1, 1, 1), "batch_index": [0] * k}
    cases = {}
    for form, rl in (("full", bench.rl), ("lora", bench.lora)):
        sweep_model, swept, _ = RLGScaleSweep.execute(bench.base, rl, one, scales, 0.0, 1.0).args
        cases[f"{form}: sweep of {k} scales"] = (sample, sweep_model, swept)
        cases[f"{form}: {k} single runs"] = (lambda rl, _: singles(rl), rl, None)
        cases[f"{form}: one RLG run at batch {k}"] = (sample, rlg(bench.base, rl, 1.5, 0.0, 1.0), batch)
    for run, *inputs in cases.values():  # warm-up
        run(*inputs)
    names = list(cases)
    times = {name: [] for name in names}
    for rep in range(reps):
        for name in names[rep % len(names):] + names[:rep % len(names)]:
            run, *inputs = cases[name]
            times[name].append(run(*inputs))
    med = {name: statistics.median(v) for name, v in times.items()}
    print(f"\n[{size}] MMDiT depth {bench.depth}, latent {bench.side}x{bench.side}, {bench.steps} euler steps, "
          f"cfg 3, scales {scales}")
    for name in names:
        print(f"  {name:<36}{med[name]:8.3f} s")
    rows = [{"size": size, "case": name, "value": f"{med[name]:.4f}", "unit": "s", "reps": reps} for name in names]
    for form in ("full", "lora"):
        sweep = med[f"{form}: sweep of {k} scales"]
        print(f"  {form}: sweep / {k} single runs = {sweep / med[f'{form}: {k} single runs']:.3f};  "
              f"sweep / one RLG run at batch {k} = {sweep / med[f'{form}: one RLG run at batch {k}']:.3f}")
        for other in (f"{k} single runs", f"one RLG run at batch {k}"):
            rows.append({"size": size, "case": f"{form}: sweep / {other}",
                         "value": f"{sweep / med[f'{form}: {other}']:.4f}", "unit": "ratio", "reps": reps})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--sizes", default=",".join(bench_rlg.DEFAULT_SIZES),
                        help=f"comma-separated model sizes, of {', '.join(bench_rlg.SIZES)} (sd35m: a GPU)")
    parser.add_argument("--csv", help="also write the medians and ratios to this CSV file")
    args = parser.parse_args()
    bench_rlg._setup_comfy()
    sizes = bench_rlg.QUICK_SIZES if args.quick else {k: bench_rlg.SIZES[k] for k in args.sizes.split(",")}
    print(f"machine: {bench_rlg.machine()}")
    rows = []
    for size in sizes:
        rows += measure(size, sizes, args.reps)
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        print(f"CSV: {args.csv}")


if __name__ == "__main__":
    main()
