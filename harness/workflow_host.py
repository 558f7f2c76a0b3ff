"""The host the workflow and front-end tests share: ComfyUI with the pack, the test and demo nodes,
and stand-in model files carrying the example workflows' file names."""

from __future__ import annotations

import json
from pathlib import Path

import comfy.sd
import safetensors.torch

from . import sampling as h
from . import tiny_families as tf
from . import tiny_models as tm
from .frontend import write_settings
from .host import ROOT
from .server import ComfyServer

TEST_NODES = ROOT / "tests" / "comfy_test_nodes"
DEMO_NODES = ROOT / "demo" / "comfy_nodes"

# The Wan 2.2 workflow's files: tiny Wan2.2-Fun-A14B-InP experts (ComfyUI detects Wan from its weights) and
# reward LoRAs in VideoX-Fun's format, with alpha.
WAN_EXPERTS = {"wan2.2_fun_inpaint_high_noise_14B_fp8_scaled.safetensors": 0,
               "wan2.2_fun_inpaint_low_noise_14B_fp8_scaled.safetensors": 2}
WAN_REWARD_LORAS = {"Wan2.2-Fun-A14B-InP-high-noise-HPS2.1.safetensors": "wan2.2_fun_inpaint_high_noise_14B_fp8_scaled"
                                                                        ".safetensors",
                    "Wan2.2-Fun-A14B-InP-low-noise-HPS2.1.safetensors": "wan2.2_fun_inpaint_low_noise_14B_fp8_scaled"
                                                                       ".safetensors"}


# The new families' workflows (Z-Image, FLUX.2, HunyuanVideo 1.5, LTX-Video): names for the /object_info check.
FAMILY_PLACEHOLDERS = (
    "diffusion_models/z_image_turbo_bf16.safetensors", "clip/qwen_3_4b.safetensors",
    "loras/z_image_turbo_rl/adapter_model.safetensors",
    "diffusion_models/flux2_dev_fp8mixed.safetensors", "clip/mistral_3_small_flux2_bf16.safetensors",
    "vae/flux2-vae.safetensors", "loras/flux2_dev_rl/adapter_model.safetensors",
    "diffusion_models/hunyuanvideo1.5_720p_t2v_fp16.safetensors", "clip/byt5_small_glyphxl_fp16.safetensors",
    "vae/hunyuanvideo15_vae_fp16.safetensors", "loras/hunyuanvideo1.5_rl_lora.safetensors",
    "checkpoints/ltx-video-2b-v0.9.safetensors", "loras/ltxv_rl_lora.safetensors",
)


# The next families' workflows that run end to end with tiny files of their names, where the harness has the
# families' by-file stand-ins (harness.tiny_families.file_state_dict) and this host reads them back:
# {family: (workflow, diffusion-model file, RL LoRA file)}. The LTX-Video workflow loads its checkpoint with
# CheckpointLoaderSimple (the VAE is inside); its stand-in is a diffusion-model file of the same name.
FILE_STAND_INS = {
    "hunyuan_video15": ("rlg_hunyuanvideo15_rl_lora", "hunyuanvideo1.5_720p_t2v_fp16.safetensors",
                        "hunyuanvideo1.5_rl_lora.safetensors"),
    "ltxv": ("rlg_ltxv_rl_lora", "ltx-video-2b-v0.9.safetensors", "ltxv_rl_lora.safetensors"),
    "flux2": ("rlg_flux2_dev_rl_lora", "flux2_dev_fp8mixed.safetensors", "flux2_dev_rl/adapter_model.safetensors"),
}


def file_stand_in_missing(family: str) -> str | None:
    """Why the family's workflow cannot run here with tiny files, or None where it can."""
    if not hasattr(tf, "file_state_dict"):
        return "harness/tiny_families.py has no by-file stand-ins of the next families in this checkout yet"
    return tf.file_missing(family)


def _family_files(models: Path, save) -> None:
    """Tiny files, with their RL LoRAs (kohya names, which ComfyUI maps for every family), where they load."""
    for seed, (family, (_, model_file, lora_file)) in enumerate(FILE_STAND_INS.items(), start=20):
        if file_stand_in_missing(family):
            continue
        state_dict, metadata = tf.file_state_dict(family, seed)
        path = models / "diffusion_models" / model_file
        path.parent.mkdir(parents=True, exist_ok=True)
        safetensors.torch.save_file(state_dict, path, metadata=metadata)
        model = comfy.sd.load_diffusion_model(str(path))
        save(tf.module_lora(model, seed + 1, "kohya", alpha=4.0), models / "loras" / lora_file)


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
    experts = {}
    for name, seed in WAN_EXPERTS.items():
        experts[name] = tf.wan_file_state_dict(seed)
        save(experts[name], models / "diffusion_models" / name)
    for name, expert in WAN_REWARD_LORAS.items():
        model = comfy.sd.load_diffusion_model_state_dict(dict(experts[expert]))
        save(tf.module_lora(model, 5, "videox", alpha=2.0), models / "loras" / name)
    # Families too large to load by file at a tiny size: names only, for the /object_info check.
    for placeholder in ("checkpoints/sd_xl_base_1.0.safetensors", "loras/spo_sdxl_4k-p_10ep_lora_webui.safetensors",
                        "clip/clip_g.safetensors", "clip/clip_l.safetensors", "clip/t5xxl_fp16.safetensors",
                        "diffusion_models/rlg_demo_base.safetensors", "loras/rlg_demo_rl_lora.safetensors",
                        "diffusion_models/dpo-sdxl-text2image-v1.safetensors", "diffusion_models/flux1-dev.safetensors",
                        "diffusion_models/flux1-dev-srpo.safetensors",
                        "loras/boxflow_grpo_flux/adapter_model.safetensors",
                        "diffusion_models/qwen_image_edit_fp8_e4m3fn.safetensors",
                        "loras/arr_rpo_qwen_image_edit/adapter_model.safetensors",
                        "clip/qwen_2.5_vl_7b_fp8_scaled.safetensors", "clip/umt5_xxl_fp8_e4m3fn_scaled.safetensors",
                        "vae/ae.safetensors", "vae/qwen_image_vae.safetensors", "vae/wan_2.1_vae.safetensors",
                        *FAMILY_PLACEHOLDERS):
        (models / placeholder).parent.mkdir(parents=True, exist_ok=True)
        (models / placeholder).write_bytes(b"")  # listed for validation only, never loaded
    _family_files(models, save)


def start_workflow_server(work: Path) -> ComfyServer:
    from PIL import Image

    models = work / "models"
    _model_files(models)
    (work / "input").mkdir()
    image = Image.new("RGBA", (64, 64), (200, 120, 40, 255))
    image.paste((0, 0, 0, 0), (16, 16, 48, 48))  # transparent square = the inpainting mask
    image.save(work / "input" / "example.png")
    write_settings(work / "user")
    config = work / "extra_model_paths.yaml"
    config.write_text(f"t:\n  base_path: {models}\n  checkpoints: checkpoints\n  diffusion_models: diffusion_models\n"
                      f"  loras: loras\n  clip: clip\n  vae: vae\n"
                      f"  custom_nodes: |\n    {TEST_NODES}\n    {DEMO_NODES}\n")
    return ComfyServer(work, config, ["ComfyUI-RLG", "rlg_test_nodes", "rlg_demo_nodes"]).start()
