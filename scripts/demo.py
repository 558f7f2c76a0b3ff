"""Turn the RLG dial through a real ComfyUI server and print what it does.

Builds a tiny SD3-shaped base model and an "RL-tuned" twin (seeded random weights, no download),
starts ComfyUI with this pack, queues RLG Apply + KSampler over its HTTP API for a sweep of
rlg_scale values, and prints how far each result moved from the base towards the RL model:
0 = base, 1 = RL model, above 1 = past it. Results go to out/demo/.
"""

from __future__ import annotations

import csv
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / ".comfy-host" / "ComfyUI"))  # tiny_models builds with ComfyUI's own classes

import comfy.cli_args  # noqa: E402
import safetensors.torch  # noqa: E402
import torch  # noqa: E402

comfy.cli_args.args.cpu = True  # the models are built here on the CPU; the server is started with --cpu too
import tiny_models as tm  # noqa: E402
from comfy_server import ComfyServer  # noqa: E402

SCALES = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0]
OUT = ROOT / "out" / "demo"


def graph(rl_scale: float, prefix: str) -> dict:
    return {
        "1": {"class_type": "UNETLoader",
              "inputs": {"unet_name": "rlg_demo_base.safetensors", "weight_dtype": "default"}},
        "2": {"class_type": "UNETLoader",
              "inputs": {"unet_name": "rlg_demo_rl.safetensors", "weight_dtype": "default"}},
        "3": {"class_type": "RLGApply", "inputs": {"model": ["1", 0], "rl_model": ["2", 0], "rlg_scale": rl_scale,
                                                   "start_percent": 0.0, "end_percent": 1.0}},
        "4": {"class_type": "RLGTestConditioning", "inputs": {"family": "sd3", "seed": 0, "batch_size": 8}},
        "5": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 128, "height": 128, "batch_size": 8}},
        "6": {"class_type": "KSampler", "inputs": {"model": ["3", 0], "seed": 1, "steps": 20, "cfg": 4.5,
                                                   "sampler_name": "euler", "scheduler": "simple",
                                                   "positive": ["4", 0], "negative": ["4", 1],
                                                   "latent_image": ["5", 0], "denoise": 1.0}},
        "7": {"class_type": "SaveLatent", "inputs": {"samples": ["6", 0], "filename_prefix": prefix}},
    }


def main() -> None:
    work = ROOT / ".comfy-host" / "demo"
    models = work / "models" / "diffusion_models"
    models.mkdir(parents=True, exist_ok=True)
    base_sd = tm.tiny_sd3_state_dict(0)
    safetensors.torch.save_file(base_sd, models / "rlg_demo_base.safetensors")
    safetensors.torch.save_file(tm.perturbed(base_sd, 1, rel=0.1), models / "rlg_demo_rl.safetensors")
    config = work / "extra_model_paths.yaml"
    config.write_text(f"rlg_demo:\n  base_path: {work / 'models'}\n  diffusion_models: diffusion_models\n"
                      f"  custom_nodes: {ROOT / 'tests' / 'comfy_test_nodes'}\n")
    print("starting ComfyUI with ComfyUI-RLG ...", flush=True)
    server = ComfyServer(ROOT / ".comfy-host" / "ComfyUI", work, config, ["ComfyUI-RLG", "rlg_test_nodes"]).start()
    results = {}
    try:
        for w in SCALES:
            t0 = time.perf_counter()
            entry = server.run_prompt(graph(w, f"demo/w{w}"))
            if entry["status"]["status_str"] != "success":
                raise SystemExit(f"prompt failed: {entry['status']}\n{server.log()}")
            (info,) = entry["outputs"]["7"]["latents"]
            path = server.output_dir / info["subfolder"] / info["filename"]
            results[w] = (safetensors.torch.load_file(path)["latent_tensor"], time.perf_counter() - t0)
            print(f"  rlg_scale={w:<4} done in {results[w][1]:.1f} s", flush=True)
    finally:
        server.stop()

    base, rl = results[0.0][0], results[1.0][0]
    direction = (rl - base).flatten()
    OUT.mkdir(parents=True, exist_ok=True)
    rows = []
    for w, (latent, seconds) in results.items():
        moved = float(torch.dot((latent - base).flatten(), direction) / torch.dot(direction, direction))
        rows.append((w, moved, float((latent - base).norm()), float((latent - rl).norm()), seconds))
    with open(OUT / "sweep.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["rlg_scale", "moved_towards_rl", "dist_to_base", "dist_to_rl", "seconds"])
        writer.writerows(rows)
    print("\nRLG dial, 8 samples x 20 euler steps, cfg 4.5, through ComfyUI's HTTP API")
    print(f"{'rlg_scale':>9} {'moved to RL':>11} {'|x - base|':>11} {'|x - RL|':>9} {'seconds':>8}")
    for w, moved, db, dr, s in rows:
        print(f"{w:>9} {moved:>11.3f} {db:>11.3f} {dr:>9.3f} {s:>8.1f}")
    print("moved to RL: projection of (result - base) on (RL - base); 0 = base, 1 = RL model, >1 = past it.")
    print(f"table: {OUT / 'sweep.csv'}")


if __name__ == "__main__":
    main()
