"""The host the workflow and front-end tests share: ComfyUI with the pack, the test and demo nodes,
and stand-in model files carrying the example workflows' file names."""

from __future__ import annotations

import json
from pathlib import Path

import safetensors.torch

import harness as h
import tiny_models as tm
from comfy_server import ComfyServer
from conftest import COMFY_DIR, ROOT

TEST_NODES = Path(__file__).resolve().parent / "comfy_test_nodes"
DEMO_NODES = ROOT / "demo" / "comfy_nodes"


def _model_files(models: Path) -> None:
    """Stand-ins with the workflows' file names: tiny real models where the family allows, else empty files."""
    def save(sd, path):
        path.parent.mkdir(parents=True, exist_ok=True)
        safetensors.torch.save_file(sd, path)

    sd3 = tm.tiny_sd3_state_dict(0)
    save({"model.diffusion_model." + k: v for k, v in sd3.items()}, models / "checkpoints/sd3.5_medium.safetensors")
    sd15 = tm.tiny_sd15_state_dict(0)
    save({"model.diffusion_model." + k: v for k, v in sd15.items()},
         models / "checkpoints/v1-5-pruned-emaonly.safetensors")
    save(tm.perturbed(sd15, 1), models / "diffusion_models/dpo-sd1.5-text2image-v1.safetensors")
    base = h.load_model("sd3")
    for seed, folder in ((3, "sd3.5m_flow_grpo_pickscore"), (4, "sd3.5m_flow_grpo_text")):
        save(tm.peft_lora_for_sd3(base, seed), models / f"loras/{folder}/adapter_model.safetensors")
        (models / f"loras/{folder}/adapter_config.json").write_text(json.dumps({"r": 4, "lora_alpha": 8}))
    for placeholder in ("checkpoints/sd_xl_base_1.0.safetensors", "loras/spo_sdxl_4k-p_10ep_lora_webui.safetensors",
                        "clip/clip_g.safetensors", "clip/clip_l.safetensors", "clip/t5xxl_fp16.safetensors",
                        "diffusion_models/rlg_demo_base.safetensors", "loras/rlg_demo_rl_lora.safetensors"):
        (models / placeholder).parent.mkdir(parents=True, exist_ok=True)
        (models / placeholder).write_bytes(b"")  # listed for validation only, never loaded


def start_workflow_server(work: Path) -> ComfyServer:
    from PIL import Image

    models = work / "models"
    _model_files(models)
    (work / "input").mkdir()
    image = Image.new("RGBA", (64, 64), (200, 120, 40, 255))
    image.paste((0, 0, 0, 0), (16, 16, 48, 48))  # transparent square = the inpainting mask
    image.save(work / "input" / "example.png")
    config = work / "extra_model_paths.yaml"
    config.write_text(f"t:\n  base_path: {models}\n  checkpoints: checkpoints\n  diffusion_models: diffusion_models\n"
                      f"  loras: loras\n  clip: clip\n  custom_nodes: |\n    {TEST_NODES}\n    {DEMO_NODES}\n")
    return ComfyServer(COMFY_DIR, work, config, ["ComfyUI-RLG", "rlg_test_nodes", "rlg_demo_nodes"]).start()
