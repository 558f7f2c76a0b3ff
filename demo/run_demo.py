"""The RLG demo: train a tiny base and two RL models, turn the dials through ComfyUI, measure.

    make demo          (or, from the checkout: .comfy-host/venv/bin/python -m demo.run_demo)

1. Makes the demo models with demo/train.py (or reuses a cached copy whose manifest matches) and
   puts them in the host ComfyUI's stock folders: models/diffusion_models/rlg_demo_base.safetensors,
   rlg_demo_rl.safetensors (full RL model, reward 1 = red disc), models/loras/rlg_demo_rl_lora.safetensors
   (the same RL model as a LoRA) and models/loras/rlg_demo_rl2_lora.safetensors (the second RL model,
   reward 2 = blue cross).
2. Starts that ComfyUI with ComfyUI-RLG and queues, over its HTTP API:
   * one dial: base -> RLG Apply (rl_model = base + RL LoRA through LoraLoaderModelOnly) -> KSampler
     -> SaveLatent for each rlg_scale, plus the RL model alone in both forms;
   * two dials: base + RL LoRA 1 and base + RL LoRA 2, each into an RLG RL Model node (w_1, w_2),
     chained into RLG Apply (several RL models) -> KSampler -> SaveLatent, over a grid of (w_1, w_2).
   * the cost of RLG: the RL model at every 2nd and 3rd step only (rl_every), and the free alternative, the RL
     LoRA alone at strength w (one forward per step), against exact RLG from the same noise.
3. Classifies every sample, scores the rewards, and writes tables, plots and sample pictures to
   out/demo/.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import safetensors.torch
import torch
from tqdm import tqdm

from demo import synthetic, train
from harness import host
from harness.server import ComfyServer
from harness.weights import max_diff, tolerance

ROOT = host.ROOT

BASE_FILE = "rlg_demo_base.safetensors"
RL_FILE = "rlg_demo_rl.safetensors"
LORA_FILE = "rlg_demo_rl_lora.safetensors"
LORA2_FILE = "rlg_demo_rl2_lora.safetensors"
DEMO_NODES = Path(__file__).resolve().parent / "comfy_nodes"
SCALES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0)
GRID_SCALES = (0.0, 1.0, 2.0)  # the two-dial grid: every (w_1, w_2) with both from this list
EVERY_SCALES = (1.0, 2.0, 3.0)  # rl_every 2 and 3 at these scales, against exact RLG from the same noise
LORA_STRENGTHS = (0.5, 1.0, 1.5, 2.0, 3.0)  # the RL LoRA alone at strength w: the one-forward alternative
STEPS = 20
CODE_FILES = (ROOT / "demo" / "train.py", ROOT / "demo" / "synthetic.py", ROOT / "harness" / "tiny_sd3.py")


@dataclass
class SweepRow:
    label: str
    scale: float | None
    mean_reward: float
    rewarded_share: float
    predicted_share: float | None
    seconds: float
    samples: torch.Tensor


@dataclass
class CostRow:
    """One setting of the cost table: a way to get RLG's scale w for less, against exact RLG at w."""

    method: str
    w: float
    share: float  # of red discs
    switched: float | None  # share of samples whose pattern differs from exact RLG at w with the same noise
    rl_forwards: int  # forwards that run the RL model (or the LoRA at strength w) in one run of STEPS steps
    base_forwards: int  # forwards that run the base model in that run
    seconds: float
    samples: torch.Tensor

    @property
    def label(self) -> str:
        return f"{self.method} w={self.w:g}"


@dataclass
class GridRow:
    """One (w_1, w_2) of the two-dial grid: the share of each pattern, measured and predicted."""

    w1: float
    w2: float
    measured: list[float]  # per pattern, synthetic.MODE_NAMES order
    predicted: list[float] | None
    seconds: float
    samples: torch.Tensor

    @property
    def label(self) -> str:
        return f"w1={self.w1:g} w2={self.w2:g}"


# ---------------------------------------------------------------- models (trained or cached)

def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _code_version() -> str:
    return hashlib.sha256(b"".join(f.read_bytes() for f in CODE_FILES)).hexdigest()


def ensure_models(models_dir: Path, config: train.TrainConfig, quiet: bool = False, native: bool = False) -> dict:
    """Train the base and both RL models into models_dir unless a cached copy with the same config and code is there.
    native: with the CPU's own numerics, faster but this CPU's files (tests that need no figures of the demo's)."""
    unet_dir, lora_dir = models_dir / "diffusion_models", models_dir / "loras"
    files = dict(zip(train.FILES, (unet_dir / BASE_FILE, unet_dir / RL_FILE, lora_dir / LORA_FILE,
                                   lora_dir / LORA2_FILE), strict=True))
    manifest_path = unet_dir / "rlg_demo_manifest.json"
    wanted = {"config": config.as_dict(), "code": _code_version(), "native": native}
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
        if ({k: manifest.get(k, False) for k in wanted} == wanted  # manifests before "native" were pinned
                and all(p.exists() and _sha256(p) == manifest["sha256"][k] for k, p in files.items())):
            if not quiet:
                print(f"demo models: cached copy is valid ({unet_dir})")
            return manifest

    t0 = time.perf_counter()
    models_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=models_dir, prefix=".training-") as tmp:
        stats = train.train_in_process(config, Path(tmp), quiet, native)
        for name, path in files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(Path(tmp) / f"{name}.safetensors", path)
    manifest = dict(wanted, sha256={k: _sha256(p) for k, p in files.items()}, **stats,
                    train_seconds=round(time.perf_counter() - t0, 1))
    manifest_path.write_text(json.dumps(manifest, indent=2))
    return manifest


# ---------------------------------------------------------------- the workflow, API format

def rlg_graph(scale: float, samples: int, seed: int, prefix: str, rl_every: int = 1) -> dict:
    """The demo workflow (the rlg_demo template, in demo/comfy_nodes/rlg_demo_nodes/, is its UI twin) at one
    rlg_scale."""
    graph = {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": BASE_FILE, "weight_dtype": "default"}},
        "2": {"class_type": "LoraLoaderModelOnly",
              "inputs": {"model": ["1", 0], "lora_name": LORA_FILE, "strength_model": 1.0}},
        "3": {"class_type": "RLGApply", "inputs": {"model": ["1", 0], "rl_model": ["2", 0], "rlg_scale": scale,
                                                   "start_percent": 0.0, "end_percent": 1.0}},
        "4": {"class_type": "RLGDemoPrompt", "inputs": {}},
        "5": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 64, "height": 64, "batch_size": samples}},
        "6": {"class_type": "KSampler", "inputs": {"model": ["3", 0], "seed": seed, "steps": STEPS, "cfg": 1.0,
                                                   "sampler_name": "euler", "scheduler": "simple",
                                                   "positive": ["4", 0], "negative": ["4", 1],
                                                   "latent_image": ["5", 0], "denoise": 1.0}},
        "7": {"class_type": "SaveLatent", "inputs": {"samples": ["6", 0], "filename_prefix": prefix}},
    }
    if rl_every != 1:
        graph["3"]["inputs"]["rl_every"] = rl_every
    return graph


def rl_alone_graph(form: str, samples: int, seed: int, prefix: str, strength: float = 1.0) -> dict:
    """The RL model alone: the full file, or the base through the RL LoRA at `strength` (1 = as trained)."""
    graph = rlg_graph(1.0, samples, seed, prefix)
    del graph["3"]
    if form == "full":
        graph["2"] = {"class_type": "UNETLoader", "inputs": {"unet_name": RL_FILE, "weight_dtype": "default"}}
    else:
        graph["2"]["inputs"]["strength_model"] = strength
    graph["6"]["inputs"]["model"] = ["2", 0]
    return graph


def grid_graph(w1: float, w2: float, samples: int, seed: int, prefix: str) -> dict:
    """Two dials: base + RL LoRA 1 and base + RL LoRA 2, chained RLG RL Model nodes, RLG Apply (several)."""
    graph = rlg_graph(1.0, samples, seed, prefix)
    del graph["3"]
    graph["8"] = {"class_type": "LoraLoaderModelOnly",
                  "inputs": {"model": ["1", 0], "lora_name": LORA2_FILE, "strength_model": 1.0}}
    graph["9"] = {"class_type": "RLGRLModel", "inputs": {"rl_model": ["2", 0], "rlg_scale": w1,
                                                         "start_percent": 0.0, "end_percent": 1.0}}
    graph["10"] = {"class_type": "RLGRLModel", "inputs": {"rl_model": ["8", 0], "rlg_scale": w2,
                                                          "start_percent": 0.0, "end_percent": 1.0,
                                                          "rl_models": ["9", 0]}}
    graph["11"] = {"class_type": "RLGApplyMulti", "inputs": {"model": ["1", 0], "rl_models": ["10", 0]}}
    graph["6"]["inputs"]["model"] = ["11", 0]
    return graph


SWEEP_SCALES = "0, 0.5, 1, 1.5, 2, 3"


def sweep_grid_graph(scales: str, per_scale: int, seed: int, prefix: str) -> dict:
    """RLG Scale Sweep on the demo pair (the rlg_demo_sweep template), its images in one grid."""
    graph = rlg_graph(1.0, per_scale, seed, prefix)
    graph["3"] = {"class_type": "RLGScaleSweep", "inputs": {"model": ["1", 0], "rl_model": ["2", 0],
                                                            "latent": ["5", 0], "scales": scales,
                                                            "start_percent": 0.0, "end_percent": 1.0}}
    graph["6"]["inputs"]["latent_image"] = ["3", 1]
    graph["8"] = {"class_type": "RLGDemoDecode", "inputs": {"samples": ["6", 0], "pixels": 64}}
    graph["9"] = {"class_type": "RLGSweepGrid", "inputs": {"images": ["8", 0], "scales": scales}}
    graph["10"] = {"class_type": "SaveImage", "inputs": {"images": ["9", 0], "filename_prefix": prefix}}
    return graph


def sweep_grid_picture(server: ComfyServer, path: Path, per_scale: int = 4, seed: int = 1,
                       scales: str = SWEEP_SCALES) -> Path:
    """One queue through RLG Scale Sweep: per_scale samples per scale from the same noises, one grid PNG."""
    entry = server.run(sweep_grid_graph(scales, per_scale, seed, "rlg_demo/sweep_grid"))
    if entry["status"]["status_str"] != "success":
        raise RuntimeError(f"ComfyUI could not run the sweep graph: {entry['status']}\n{server.log()}")
    (info,) = entry["outputs"]["10"]["images"]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes((server.output_dir / info["subfolder"] / info["filename"]).read_bytes())
    return path


def _run(server: ComfyServer, graph: dict) -> tuple[torch.Tensor, float]:
    import comfy.latent_formats

    t0 = time.perf_counter()
    entry = server.run(graph)
    seconds = time.perf_counter() - t0
    if entry["status"]["status_str"] != "success":
        raise RuntimeError(f"ComfyUI could not run the demo graph: {entry['status']}\n{server.log()}")
    (info,) = entry["outputs"]["7"]["latents"]
    latent = safetensors.torch.load_file(server.output_dir / info["subfolder"] / info["filename"])["latent_tensor"]
    # SaveLatent stores the user-facing latent; the data set lives in the network's space.
    return comfy.latent_formats.SD3().process_in(latent), seconds


def sweep(server: ComfyServer, scales, samples: int, seed: int, beta: float, quiet: bool = False):
    rows: list[SweepRow] = []
    jobs = [(f"RLG w={w:g}", w, rlg_graph(w, samples, seed, f"rlg_demo/w{w:g}")) for w in scales]
    jobs += [(f"RL alone ({form})", None, rl_alone_graph(form, samples, seed, f"rlg_demo/rl_{form}"))
             for form in ("lora", "full")]
    for label, scale, graph in tqdm(jobs, desc=f"sampling {samples} images per setting via ComfyUI",
                                    unit="prompt", disable=quiet):
        x, seconds = _run(server, graph)
        r = synthetic.reward(x)
        share = float((synthetic.classify(x) == synthetic.REWARDED_MODE).float().mean())
        rows.append(SweepRow(label, scale, float(r.mean()), share, None, seconds, x))
    base_share = next(r.rewarded_share for r in rows if r.scale == 0.0)
    for row in rows:
        w = 1.0 if row.scale is None else row.scale
        row.predicted_share = synthetic.predicted_share(base_share, w, beta)
    return rows


def _red_share(x: torch.Tensor) -> float:
    return float((synthetic.classify(x) == synthetic.REWARDED_MODE).float().mean())


def cost_sweep(server: ComfyServer, dial: list[SweepRow], samples: int, seed: int, every_scales=EVERY_SCALES,
               lora_strengths=LORA_STRENGTHS, quiet: bool = False) -> list[CostRow]:
    """RLG for less than two models, against exact RLG at the same w from the same noise.

    rl_every n: the RL model evaluated at every n-th step, its correction estimated between (the RL forwards of a
    run: one per evaluation step). The RL LoRA at strength w: one forward per step, weight-space extrapolation.
    Exact RLG's samples come from the dial sweep (same seed, same graph) where it ran that w.
    """
    exact = {r.scale: r for r in dial if r.scale is not None}
    jobs = [("RLG", w, 1, rlg_graph(w, samples, seed, f"rlg_demo/cost_w{w:g}")) for w in
            sorted(set(every_scales) | set(lora_strengths)) if w not in exact]
    jobs += [(f"RLG, RL every {n}{'nd' if n == 2 else 'rd'} step", w, n,
              rlg_graph(w, samples, seed, f"rlg_demo/every{n}_w{w:g}", rl_every=n))
             for n in (2, 3) for w in every_scales]
    jobs += [("RL LoRA at strength w", w, None, rl_alone_graph("lora", samples, seed, f"rlg_demo/lora_w{w:g}", w))
             for w in lora_strengths]
    rows: list[CostRow] = []
    for method, w, every, graph in tqdm(jobs, desc=f"the cost of RLG: {samples} images per setting via ComfyUI",
                                        unit="prompt", disable=quiet):
        x, seconds = _run(server, graph)
        rows.append(CostRow(method, w, _red_share(x), None, *_forwards(w, every), seconds, x))
        if method == "RLG":
            exact[w] = SweepRow(f"RLG w={w:g}", w, float(synthetic.reward(x).mean()), rows[-1].share, None, seconds, x)
    reference = {w: synthetic.classify(r.samples) for w, r in exact.items()}
    out = [CostRow("RLG", w, exact[w].rewarded_share, 0.0, *_forwards(w, 1), exact[w].seconds, exact[w].samples)
           for w in sorted(exact) if w in set(every_scales) | set(lora_strengths)]
    for row in rows:
        if row.method != "RLG":
            row.switched = float((synthetic.classify(row.samples) != reference[row.w]).float().mean()) \
                if row.w in reference else None
            out.append(row)
    return out


def _forwards(w: float, every: int | None) -> tuple[int, int]:
    """(RL, base) forwards of one run of STEPS euler steps at cfg 1 (one cond), by RLG's rule: at w = 1 each step is
    the RL model alone and at w = 0 the base alone, at any rl_every; otherwise the base runs at every step and the
    RL model at every `every`-th (its first step included). every=None: the LoRA at strength w, one model per step.
    tests/test_rl_every.py counts the forwards of this rule in real sampling runs."""
    if every is None:
        return STEPS, 0
    if w == 1.0:
        return STEPS, 0
    if w == 0.0:
        return 0, STEPS
    return len(range(0, STEPS, every)), STEPS


def grid_sweep(server: ComfyServer, grid_scales, samples: int, seed: int, betas: tuple[float, float],
               quiet: bool = False) -> list[GridRow]:
    """Every (w_1, w_2) from grid_scales x grid_scales; (0, 0), the base, gives the shares to tilt."""
    if 0.0 not in grid_scales:
        raise ValueError(f"the grid needs w = 0 (the base model's shares): {grid_scales}")
    points = [(w1, w2) for w1 in grid_scales for w2 in grid_scales]
    rows: list[GridRow] = []
    for w1, w2 in tqdm(points, desc=f"two dials: {samples} images per (w_1, w_2) via ComfyUI", unit="prompt",
                       disable=quiet):
        x, seconds = _run(server, grid_graph(w1, w2, samples, seed, f"rlg_demo/grid_w{w1:g}_{w2:g}"))
        rows.append(GridRow(w1, w2, synthetic.mode_shares(x), None, seconds, x))
    base = next(r.measured for r in rows if r.w1 == 0.0 and r.w2 == 0.0)
    for row in rows:
        row.predicted = synthetic.predicted_shares(base, (row.w1, row.w2), betas)
    return rows


# ---------------------------------------------------------------- what the demo shows

EVERY_2_SHARE, EVERY_2_SWITCHED = 0.02, 0.03  # rl_every 2 against exact RLG: the share's distance, samples switched
# RLG at w = 1 against the RL model alone: float rounding, relative to the latents' size (the LoRA runs as a hook in
# RLG and merged into the weights alone; the claim prints the differences measured).
W1_ROUNDING = 1e-3


def claims(rows: list[SweepRow], cost: list[CostRow]) -> list[tuple[str, bool]]:
    """What the demo shows, checked on its own samples: (the claim in words, whether it holds). These are what the
    docs say the demo shows (docs/demo.md); `make demo` fails where one does not hold, and tests/test_demo.py runs
    them on a smaller pair. No figure of one machine is pinned here."""
    by_label = {r.label: r for r in rows}
    w1, lora, full = (by_label[label].samples for label in ("RLG w=1", "RL alone (lora)", "RL alone (full)"))
    dial = sorted((r.scale, r.mean_reward) for r in rows if r.scale is not None)
    exact = {r.w: r.share for r in cost if r.method == "RLG"}
    every_2 = [r for r in cost if r.method == "RLG, RL every 2nd step"]
    to_lora, to_full = max_diff(w1, lora), max_diff(w1, full)
    return [
        (f"RLG at w = 1 is the RL model alone, to float rounding: largest difference {to_lora:.1e} from the RL LoRA, "
         f"{to_full:.1e} from the merged file (the latents reach {float(lora.abs().max()):.2f})",
         max(to_lora, to_full) <= tolerance(lora, W1_ROUNDING)),
        ("the reward rises with w: " + ", ".join(f"{reward:.3f} at {w:g}" for w, reward in dial),
         all(a[1] < b[1] for a, b in zip(dial, dial[1:], strict=False))),
        (f"rl_every 2 is within {EVERY_2_SHARE} of exact RLG and switches at most {EVERY_2_SWITCHED:.0%} of the "
         "samples: " + ", ".join(f"w = {r.w:g}: {r.share - exact[r.w]:+.3f}, {r.switched:.1%}" for r in every_2),
         bool(every_2) and all(abs(r.share - exact[r.w]) <= EVERY_2_SHARE and r.switched <= EVERY_2_SWITCHED
                               for r in every_2)),
    ]


# ---------------------------------------------------------------- outputs

def _write_csv(path: Path, header: list, rows) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def write_table(rows: list[SweepRow], path: Path) -> None:
    _write_csv(path, ["setting", "rlg_scale", "mean_reward", "rewarded_share", "predicted_share", "seconds"],
               ([r.label, "" if r.scale is None else r.scale, f"{r.mean_reward:.4f}", f"{r.rewarded_share:.4f}",
                 f"{r.predicted_share:.4f}", f"{r.seconds:.2f}"] for r in rows))


def write_plot(rows: list[SweepRow], beta: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dial = [r for r in rows if r.scale is not None]
    base_share = next(r.rewarded_share for r in dial if r.scale == 0.0)
    grid = torch.linspace(min(r.scale for r in dial), max(r.scale for r in dial), 100).tolist()
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    ax.plot(grid, [synthetic.predicted_share(base_share, w, beta) for w in grid], "--", color="gray",
            label=r"predicted: base tilted by $\exp(w\,r/\beta)$")
    ax.plot([r.scale for r in dial], [r.mean_reward for r in dial], "o-", color="tab:red", label="measured (RLG)")
    rl_alone = [r for r in rows if r.scale is None]
    ax.plot([1.0] * len(rl_alone), [r.mean_reward for r in rl_alone], "x", color="black", markersize=9,
            label="RL model alone")
    for r in dial:
        if r.scale in (0.0, 1.0):
            name = "base model" if r.scale == 0.0 else "RL model"
            ax.annotate(name, (r.scale, r.mean_reward), textcoords="offset points", xytext=(8, -14))
    ax.set_xlabel("rlg_scale w")
    ax.set_ylabel("mean reward (share of red discs)")
    ax.set_ylim(0, 1.02)
    ax.set_title("RLG dial through ComfyUI: mean reward against rlg_scale")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_cost_table(rows: list[CostRow], path: Path) -> None:
    _write_csv(path, ["method", "w", "red_disc_share", "switched_vs_exact_rlg", "rl_forwards", "base_forwards",
                      "seconds"],
               ([r.method, r.w, f"{r.share:.4f}", "" if r.switched is None else f"{r.switched:.4f}", r.rl_forwards,
                 r.base_forwards, f"{r.seconds:.2f}"] for r in rows))


def write_cost_plot(rows: list[CostRow], dial: list[SweepRow], beta: float, path: Path) -> None:
    """Share of red discs against w: exact RLG, RLG with the RL model every 2nd / 3rd step, the LoRA at strength w."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    base_share = next(r.rewarded_share for r in dial if r.scale == 0.0)
    exact = sorted({(r.scale, r.rewarded_share) for r in dial if r.scale is not None}
                   | {(r.w, r.share) for r in rows if r.method == "RLG"})
    top = max(w for w, _ in exact)
    grid = torch.linspace(0.0, top, 100).tolist()
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    ax.plot(grid, [synthetic.predicted_share(base_share, w, beta) for w in grid], "--", color="gray",
            label=r"tilt: base tilted by $\exp(w\,r/\beta)$")
    ax.plot([w for w, _ in exact], [s for _, s in exact], "o-", color="tab:red", label=f"RLG ({STEPS} RL forwards)")
    for method, marker, color in (("RLG, RL every 2nd step", "s", "tab:orange"), ("RLG, RL every 3rd step", "^",
                                                                                   "tab:purple")):
        pts = [(r.w, r.share, r.rl_forwards) for r in rows if r.method == method]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker, color=color, markersize=8, linestyle="none",
                    label=f"{method} ({min(p[2] for p in pts)} RL forwards)")
    lora = [(0.0, base_share)] + [(r.w, r.share) for r in rows if r.method == "RL LoRA at strength w"]
    ax.plot([p[0] for p in lora], [p[1] for p in lora], "x-", color="tab:blue",
            label="RL LoRA at strength w (one forward per step)")
    ax.set_xlabel("w (rlg_scale, or the LoRA's strength)")
    ax.set_ylabel("share of red discs")
    ax.set_ylim(0, 1.02)
    ax.set_title("RLG for less: the RL model every n-th step, or the LoRA at strength w")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=7.5)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _slug(name: str) -> str:
    return name.replace(" ", "_")


def write_grid_table(rows: list[GridRow], path: Path) -> None:
    _write_csv(path, ["w_1", "w_2", *(f"measured_{_slug(n)}" for n in synthetic.MODE_NAMES),
                      *(f"predicted_{_slug(n)}" for n in synthetic.MODE_NAMES), "seconds"],
               ([r.w1, r.w2, *(f"{v:.4f}" for v in r.measured), *(f"{v:.4f}" for v in r.predicted),
                 f"{r.seconds:.2f}"] for r in rows))


def write_grid_plot(rows: list[GridRow], betas: tuple[float, float], path: Path) -> None:
    """Heatmaps over (w_1, w_2): the share of red discs and of blue crosses, measured next to predicted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    w1s, w2s = sorted({r.w1 for r in rows}), sorted({r.w2 for r in rows})
    by_point = {(r.w1, r.w2): r for r in rows}
    panels = ((synthetic.REWARDED_MODE, "red discs", "Reds"), (synthetic.REWARDED_MODE_2, "blue crosses", "Blues"))
    fig, axes = plt.subplots(2, 2, figsize=(8.8, 7.6), dpi=110, constrained_layout=True)
    for i, (mode, plural, cmap) in enumerate(panels):
        for j, kind in enumerate(("measured", "predicted")):
            ax = axes[i, j]
            grid = torch.tensor([[getattr(by_point[(w1, w2)], kind)[mode] for w1 in w1s] for w2 in w2s])
            image = ax.imshow(grid.numpy(), origin="lower", cmap=cmap, vmin=0.0, vmax=1.0, aspect="auto")
            for b in range(len(w2s)):
                for a in range(len(w1s)):
                    value = float(grid[b, a])
                    ax.text(a, b, f"{value:.2f}", ha="center", va="center", fontsize=11,
                            color="white" if value > 0.55 else "black")
            ax.set_xticks(range(len(w1s)), [f"{w:g}" for w in w1s])
            ax.set_yticks(range(len(w2s)), [f"{w:g}" for w in w2s])
            ax.set_xlabel(r"$w_1$ (RL model 1: red disc)")
            ax.set_ylabel(r"$w_2$ (RL model 2: blue cross)")
            what = "measured through ComfyUI" if kind == "measured" else "predicted by the sum tilt"
            ax.set_title(f"share of {plural}: {what}", fontsize=10)
        fig.colorbar(image, ax=axes[i, :], shrink=0.9, label=f"share of {plural}")
    fig.suptitle(f"Two RLG dials at once: RLG Apply (several RL models), {rows[0].samples.shape[0]} samples per cell\n"
                 r"predicted: the base's measured shares tilted by $\exp(w_1 r_1/\beta_1 + w_2 r_2/\beta_2)$, "
                 rf"$\beta_1 = \beta_2 = {betas[0]:.3g}$", fontsize=10.5)
    fig.savefig(path)
    plt.close(fig)


def write_pictures(rows: list[SweepRow] | list[GridRow], path: Path, per_row: int = 16, pixels: int = 48) -> None:
    from PIL import Image, ImageDraw

    label_w, pad = 130, 4
    img = Image.new("RGB", (label_w + per_row * (pixels + pad), len(rows) * (pixels + pad) + pad), "white")
    draw = ImageDraw.Draw(img)
    for i, row in enumerate(rows):
        y = pad + i * (pixels + pad)
        draw.text((6, y + pixels // 2 - 6), row.label, fill="black")
        rgb = synthetic.to_rgb(row.samples[:per_row], pixels)
        for j, tile in enumerate(rgb):
            arr = (tile.permute(1, 2, 0) * 255).round().byte().numpy()
            img.paste(Image.fromarray(arr), (label_w + j * (pixels + pad), y))
    img.save(path)


def summary(rows: list[SweepRow], grid: list[GridRow], manifest: dict, models_dir: Path, out_dir: Path,
            total_seconds: float, cost: list[CostRow] = ()) -> str:
    lines = ["", "RLG demo: the same 'prompt', sampled by ComfyUI at each rlg_scale "
             f"({rows[0].samples.shape[0]} samples, euler, {STEPS} steps, cfg 1)",
             f"{'setting':<18}{'mean reward':>12}{'red discs':>11}{'predicted':>11}{'seconds':>9}"]
    for r in rows:
        lines.append(f"{r.label:<18}{r.mean_reward:>12.3f}{r.rewarded_share:>11.3f}{r.predicted_share:>11.3f}"
                     f"{r.seconds:>9.1f}")
    lines += [
        "reward: 1 for a red disc, 0 for the other three patterns. predicted: the base model's share",
        f"tilted by exp(w r / beta), beta = {manifest['config']['beta']:.3f}: what RL with KL coefficient"
        " beta / w would give.",
    ]
    if grid:
        red, blue = synthetic.REWARDED_MODE, synthetic.REWARDED_MODE_2
        lines += [
            "",
            "Two dials: RL model 1 (red disc) at w_1 and RL model 2 (blue cross) at w_2, RLG Apply (several RL models)",
            f"{'w_1':>5}{'w_2':>5}{'red discs':>11}{'predicted':>11}{'blue crosses':>14}{'predicted':>11}"
            f"{'seconds':>9}",
        ]
        for r in grid:
            lines.append(f"{r.w1:>5g}{r.w2:>5g}{r.measured[red]:>11.3f}{r.predicted[red]:>11.3f}"
                         f"{r.measured[blue]:>14.3f}{r.predicted[blue]:>11.3f}{r.seconds:>9.1f}")
        lines.append("predicted: the base's shares tilted by exp(w_1 r_1 / beta + w_2 r_2 / beta).")
    if cost:
        lines += ["", "RLG for less than two models: share of red discs, and of samples that end in another pattern "
                      "than exact RLG from the same noise",
                  f"{'method':<26}{'w':>5}{'red discs':>11}{'switched':>10}{'RL forwards':>13}{'base':>6}"
                  f"{'seconds':>9}"]
        for r in sorted(cost, key=lambda r: (r.method != "RLG", r.method, r.w)):
            switched = "" if r.switched is None else f"{100 * r.switched:.1f}%"
            lines.append(f"{r.method:<26}{r.w:>5g}{r.share:>11.3f}{switched:>10}{r.rl_forwards:>13}{r.base_forwards:>6}"
                         f"{r.seconds:>9.1f}")
        lines.append(f"forwards: of {STEPS} euler steps at cfg 1; at w = 1 RLG is the RL model alone (no base pass), "
                     "and the LoRA at strength w is one model per step.")
    lines += [
        f"outputs in {out_dir}: sweep.csv, rlg_dial.png, samples.png, grid.csv, rlg_two_dials.png,",
        f"  grid_samples.png, sweep_grid.png, cost.csv, rlg_cost.png   (total {total_seconds:.0f} s)",
        f"models in {models_dir}: diffusion_models/{BASE_FILE}, diffusion_models/{RL_FILE},",
        f"  loras/{LORA_FILE}, loras/{LORA2_FILE}. To use them in the front-end: make demo-server, open",
        "  http://127.0.0.1:8188 and open the template rlg_demo_nodes > rlg_demo (the demo node pack's own template).",
    ]
    return "\n".join(lines)


def run(models_dir: Path, out_dir: Path, work_dir: Path, config: train.TrainConfig, scales=SCALES,
        samples: int = 256, seed: int = 1, quiet: bool = False, grid_scales=GRID_SCALES, every_scales=EVERY_SCALES,
        lora_strengths=LORA_STRENGTHS, server_env: dict[str, str] | None = None,
        ) -> tuple[list[SweepRow], list[GridRow], list[CostRow], dict]:
    """The sweeps through one ComfyUI server; grid_scales=() leaves the two-dial grid out, every_scales=() and
    lora_strengths=() the cost table; server_env: more environment for the server (demo/cpu_check.py)."""
    t0 = time.perf_counter()
    manifest = ensure_models(models_dir, config, quiet)
    work_dir.mkdir(parents=True, exist_ok=True)
    paths = work_dir / "extra_model_paths.yaml"
    paths.write_text(f"rlg_demo:\n  base_path: {models_dir}\n  diffusion_models: diffusion_models\n"
                     f"  loras: loras\n  custom_nodes: {DEMO_NODES}\n")
    if not quiet:
        print("starting ComfyUI with ComfyUI-RLG ...", flush=True)
    server = ComfyServer(work_dir, paths, ["ComfyUI-RLG", "rlg_demo_nodes"], env=server_env).start()
    try:
        rows = sweep(server, scales, samples, seed, config.beta, quiet)
        grid = grid_sweep(server, grid_scales, samples, seed, (config.beta, config.beta), quiet) if grid_scales else []
        cost = cost_sweep(server, rows, samples, seed, every_scales, lora_strengths, quiet) \
            if every_scales or lora_strengths else []
        sweep_grid_picture(server, out_dir / "sweep_grid.png", seed=seed)
    finally:
        server.stop()
    out_dir.mkdir(parents=True, exist_ok=True)
    write_table(rows, out_dir / "sweep.csv")
    write_plot(rows, config.beta, out_dir / "rlg_dial.png")
    write_pictures(rows, out_dir / "samples.png")
    if grid:
        write_grid_table(grid, out_dir / "grid.csv")
        write_grid_plot(grid, (config.beta, config.beta), out_dir / "rlg_two_dials.png")
        write_pictures(grid, out_dir / "grid_samples.png")
    if cost:
        write_cost_table(cost, out_dir / "cost.csv")
        write_cost_plot(cost, rows, config.beta, out_dir / "rlg_cost.png")
    if not quiet:
        print(summary(rows, grid, manifest, models_dir, out_dir, time.perf_counter() - t0, cost))
    return rows, grid, cost, manifest


def print_claims(checked: list[tuple[str, bool]]) -> bool:
    print("\nWhat the demo shows, checked on these samples:")
    for claim, holds in checked:
        print(f"  {'holds' if holds else 'FAILS'}: {claim}")
    return all(holds for _, holds in checked)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=256, help="samples per setting (default 256)")
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "demo", help="output folder")
    parser.add_argument("--models", type=Path, help="where the demo models go (default: the host ComfyUI's models/)")
    args = parser.parse_args()
    tree = host.use_comfy(cpu=True)  # training runs on the CPU; the server is started with --cpu too
    models = args.models or tree / "models"
    work = host.host_dir() / "demo-run" if args.models is None else args.models.parent / "demo-run"
    rows, _, cost, _ = run(models.resolve(), args.out, work, train.TrainConfig(), samples=args.samples)
    if not print_claims(claims(rows, cost)):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
