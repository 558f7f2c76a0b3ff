"""Build the example workflows, their API twins and their thumbnails in the real ComfyUI front-end.

    .comfy-host/venv/bin/python -m scripts.build_workflows      (from the checkout)
    .comfy-host/venv/bin/python -m scripts.build_workflows rlg_demo_sweep rlg_sd35_flowgrpo_sweep   (only these)

Each workflow is described below as nodes (type, widget values by name), links (by input name) and a
layout (columns of nodes, left to right; each column top to bottom). The script starts the host ComfyUI
with this pack and the demo nodes, creates each graph in the front-end (LiteGraph.createNode, widgets
set by name, links by input name), loads it back so every node has the size the front-end and the
pack's js give it (the readout lines included), places the columns so that no two nodes, title bars and
source badges included, overlap, and saves the front-end's own serialisation (the UI workflow) and
graphToPrompt()'s output (the API twin). No format is converted by hand. The pack's templates go to
example_workflows/ (twins: example_workflows_api/); those that need the demo's nodes go with them, to the demo's
node pack (demo/comfy_nodes/rlg_demo_nodes/, the same two folders), so every template the pack ships opens with
the pack alone (harness/templates.py).

Every loader gets the front-end's model metadata (properties.models: name, url, directory) for the
files it selects that can be downloaded, so a missing file comes with where to get it. The stored view
(extra.ds) is dropped, so every front-end fits the whole graph into the window when the template opens.
Each template gets a thumbnail (<name>.jpg, the only picture the template browser shows): the demo's own
outputs where it has them, a diagram of the graph otherwise, with the workflow's one-line description
under it (the browser takes the card's text from the file name only). Needs Chromium (apt: chromium)
and the playwright package, which scripts/setup_host.sh installs.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from harness import templates

SD35 = "sd3.5_medium.safetensors"
CLIPS_SD35 = {"clip_name1": "clip_g.safetensors", "clip_name2": "clip_l.safetensors",
              "clip_name3": "t5xxl_fp16.safetensors"}
PICKSCORE = "sd3.5m_flow_grpo_pickscore/adapter_model.safetensors"
TEXT_LORA = "sd3.5m_flow_grpo_text/adapter_model.safetensors"
SD15 = "v1-5-pruned-emaonly.safetensors"
DPO15 = "dpo-sd1.5-text2image-v1.safetensors"
SDXL = "sd_xl_base_1.0.safetensors"
SPO_XL = "spo_sdxl_4k-p_10ep_lora_webui.safetensors"
DPO_XL = "dpo-sdxl-text2image-v1.safetensors"
FLUX_DEV = "flux1-dev.safetensors"
SRPO = "flux1-dev-srpo.safetensors"
BOXFLOW = "boxflow_grpo_flux/adapter_model.safetensors"
QWEN_EDIT = "qwen_image_edit_fp8_e4m3fn.safetensors"
ARR_QWEN = "arr_rpo_qwen_image_edit/adapter_model.safetensors"
QWEN_VL = "qwen_2.5_vl_7b_fp8_scaled.safetensors"
WAN_HIGH = "wan2.2_fun_inpaint_high_noise_14B_fp8_scaled.safetensors"
WAN_LOW = "wan2.2_fun_inpaint_low_noise_14B_fp8_scaled.safetensors"
WAN_REWARD_HIGH = "Wan2.2-Fun-A14B-InP-high-noise-HPS2.1.safetensors"
WAN_REWARD_LOW = "Wan2.2-Fun-A14B-InP-low-noise-HPS2.1.safetensors"
Z_IMAGE = "z_image_turbo_bf16.safetensors"
QWEN3_4B = "qwen_3_4b.safetensors"
Z_IMAGE_RL = "z_image_turbo_rl/adapter_model.safetensors"
FLUX2_DEV = "flux2_dev_fp8mixed.safetensors"
MISTRAL_FLUX2 = "mistral_3_small_flux2_bf16.safetensors"
FLUX2_VAE = "flux2-vae.safetensors"
FLUX2_RL = "flux2_dev_rl/adapter_model.safetensors"
HV15 = "hunyuanvideo1.5_720p_t2v_fp16.safetensors"
BYT5 = "byt5_small_glyphxl_fp16.safetensors"
HV15_VAE = "hunyuanvideo15_vae_fp16.safetensors"
HV15_RL = "hunyuanvideo1.5_rl_lora.safetensors"
LTXV = "ltx-video-2b-v0.9.safetensors"
LTXV_RL = "ltxv_rl_lora.safetensors"

HF = "https://huggingface.co/"
# Where each downloadable file comes from, as the front-end's model metadata wants it: {name: (url, directory)}.
# The name is the loader's widget value; the directory a ComfyUI models folder (text_encoders and diffusion_models,
# never the legacy clip / unet, which the front-ends refuse or ignore). Base models, text encoders and VAEs: the
# URLs of ComfyUI's own templates (Comfy-Org repackages) or the model's repository; RL models: their repository.
# A file saved under another name than the URL's last part (adapter_model.safetensors in a subfolder, a renamed
# diffusers UNet) must still be put where the Note says. The demo's files and the RL LoRAs that have no published
# file (the new families) have no entry.
MODELS = {
    SD35: (HF + "stabilityai/stable-diffusion-3.5-medium/resolve/main/sd3.5_medium.safetensors", "checkpoints"),
    "clip_g.safetensors": (HF + "stabilityai/stable-diffusion-3.5-medium/resolve/main/text_encoders/clip_g.safetensors",
                           "text_encoders"),
    "clip_l.safetensors": (HF + "comfyanonymous/flux_text_encoders/resolve/main/clip_l.safetensors", "text_encoders"),
    "t5xxl_fp16.safetensors": (HF + "comfyanonymous/flux_text_encoders/resolve/main/t5xxl_fp16.safetensors",
                               "text_encoders"),
    PICKSCORE: (HF + "jieliu/SD3.5M-FlowGRPO-PickScore/resolve/main/adapter_model.safetensors", "loras"),
    TEXT_LORA: (HF + "jieliu/SD3.5M-FlowGRPO-Text/resolve/main/adapter_model.safetensors", "loras"),
    SD15: (HF + "Comfy-Org/stable-diffusion-v1-5-archive/resolve/main/v1-5-pruned-emaonly.safetensors", "checkpoints"),
    DPO15: (HF + "mhdang/dpo-sd1.5-text2image-v1/resolve/main/unet/diffusion_pytorch_model.safetensors",
            "diffusion_models"),
    SDXL: (HF + "stabilityai/stable-diffusion-xl-base-1.0/resolve/main/sd_xl_base_1.0.safetensors", "checkpoints"),
    SPO_XL: ("https://civitai.com/api/download/models/567119", "loras"),
    DPO_XL: (HF + "mhdang/dpo-sdxl-text2image-v1/resolve/main/unet/diffusion_pytorch_model.safetensors",
             "diffusion_models"),
    FLUX_DEV: (HF + "Comfy-Org/flux1-dev/resolve/main/flux1-dev.safetensors", "diffusion_models"),
    "ae.safetensors": (HF + "Comfy-Org/z_image_turbo/resolve/main/split_files/vae/ae.safetensors", "vae"),
    SRPO: (HF + "tencent/SRPO/resolve/main/diffusion_pytorch_model.safetensors", "diffusion_models"),
    BOXFLOW: (HF + "P1n3/boxflow-grpo-flux-lora/resolve/main/adapter_model.safetensors", "loras"),
    QWEN_EDIT: (HF + "Comfy-Org/Qwen-Image-Edit_ComfyUI/resolve/main/split_files/diffusion_models/"
                "qwen_image_edit_fp8_e4m3fn.safetensors", "diffusion_models"),
    QWEN_VL: (HF + "Comfy-Org/Qwen-Image_ComfyUI/resolve/main/split_files/text_encoders/"
              "qwen_2.5_vl_7b_fp8_scaled.safetensors", "text_encoders"),
    "qwen_image_vae.safetensors": (HF + "Comfy-Org/Qwen-Image_ComfyUI/resolve/main/split_files/vae/"
                                   "qwen_image_vae.safetensors", "vae"),
    ARR_QWEN: (HF + "OpenEnvisionLab/Auto-Rubric-as-Reward/resolve/main/ARR-Qwen-Image-Edit/adapter_model.safetensors",
               "loras"),
    WAN_HIGH: (HF + "Comfy-Org/Wan_2.2_ComfyUI_Repackaged/resolve/main/split_files/diffusion_models/" + WAN_HIGH,
               "diffusion_models"),
    WAN_LOW: (HF + "Comfy-Org/Wan_2.2_ComfyUI_Repackaged/resolve/main/split_files/diffusion_models/" + WAN_LOW,
              "diffusion_models"),
    "umt5_xxl_fp8_e4m3fn_scaled.safetensors": (HF + "Comfy-Org/Wan_2.1_ComfyUI_repackaged/resolve/main/split_files/"
                                               "text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors", "text_encoders"),
    "wan_2.1_vae.safetensors": (HF + "Comfy-Org/Wan_2.1_ComfyUI_repackaged/resolve/main/split_files/vae/"
                                "wan_2.1_vae.safetensors", "vae"),
    WAN_REWARD_HIGH: (HF + "alibaba-pai/Wan2.2-Fun-Reward-LoRAs/resolve/main/" + WAN_REWARD_HIGH, "loras"),
    WAN_REWARD_LOW: (HF + "alibaba-pai/Wan2.2-Fun-Reward-LoRAs/resolve/main/" + WAN_REWARD_LOW, "loras"),
    Z_IMAGE: (HF + "Comfy-Org/z_image_turbo/resolve/main/split_files/diffusion_models/" + Z_IMAGE, "diffusion_models"),
    QWEN3_4B: (HF + "Comfy-Org/z_image_turbo/resolve/main/split_files/text_encoders/" + QWEN3_4B, "text_encoders"),
    FLUX2_DEV: (HF + "Comfy-Org/flux2-dev/resolve/main/split_files/diffusion_models/" + FLUX2_DEV, "diffusion_models"),
    MISTRAL_FLUX2: (HF + "Comfy-Org/flux2-dev/resolve/main/split_files/text_encoders/" + MISTRAL_FLUX2,
                    "text_encoders"),
    FLUX2_VAE: (HF + "Comfy-Org/flux2-dev/resolve/main/split_files/vae/" + FLUX2_VAE, "vae"),
    HV15: (HF + "Comfy-Org/HunyuanVideo_1.5_repackaged/resolve/main/split_files/diffusion_models/" + HV15,
           "diffusion_models"),
    BYT5: (HF + "Comfy-Org/HunyuanVideo_1.5_repackaged/resolve/main/split_files/text_encoders/" + BYT5,
           "text_encoders"),
    HV15_VAE: (HF + "Comfy-Org/HunyuanVideo_1.5_repackaged/resolve/main/split_files/vae/" + HV15_VAE, "vae"),
    LTXV: (HF + "Lightricks/LTX-Video/resolve/main/" + LTXV, "checkpoints"),
}

# What each workflow is for, in one line: the thumbnail's caption and the Note's first line.
DESCRIPTIONS = {
    "rlg_demo": "The RLG dial on the tiny demo pair: turn rlg_scale and watch the red discs take over",
    "rlg_demo_sweep": "Pick rlg_scale by looking: the demo pair at six scales from one queue, in one grid",
    "rlg_sd35_flowgrpo_pickscore": "SD3.5-Medium + Flow-GRPO PickScore LoRA: pictures people prefer (the paper's "
                                   "setting)",
    "rlg_sd35_flowgrpo_text": "SD3.5-Medium + Flow-GRPO Text LoRA: words in the picture spelled right more often",
    "rlg_sd35_flowgrpo_two_loras": "Two rewards at once: PickScore and text-rendering LoRAs, each with its own dial",
    "rlg_sd35_flowgrpo_schedule": "A scale that changes over the steps: strong alignment early, the RL model at the "
                                  "end",
    "rlg_sd35_flowgrpo_sweep": "Pick rlg_scale by looking: one SD3.5 image per scale from one queue, labelled",
    "rlg_sd35_inpaint": "Inpainting with RLG: repaint the masked area with SD3.5 + the PickScore LoRA",
    "rlg_guider_sampler_custom_advanced": "RLG as a guider for SamplerCustomAdvanced (SD3.5 + PickScore LoRA)",
    "rlg_sd15_diffusion_dpo": "SD1.5 + Diffusion-DPO: a whole preference-tuned UNet, dialled by rlg_scale",
    "rlg_sdxl_spo_lora": "SDXL + SPO LoRA: step-aware preference alignment, dialled by rlg_scale",
    "rlg_sdxl_diffusion_dpo": "SDXL + Diffusion-DPO: a whole preference-tuned UNet, dialled by rlg_scale",
    "rlg_flux_srpo": "FLUX.1-dev + SRPO: more realistic pictures, dialled by rlg_scale",
    "rlg_flux_boxflow_grpo_lora": "FLUX.1-dev + BoxFlow-GRPO LoRA: fewer artifacts and prompt mismatches",
    "rlg_qwen_image_edit_arr_rpo": "Qwen-Image-Edit + ARR-RPO LoRA: edits that follow the instruction more closely",
    "rlg_wan22_fun_reward_loras": "Wan 2.2 image to video with a reward LoRA on each expert",
    "rlg_zimage_turbo_rl_lora": "Z-Image-Turbo + your RL LoRA (Flow-GRPO, DiffusionNFT), dialled by rlg_scale",
    "rlg_flux2_dev_rl_lora": "FLUX.2 dev + your RL LoRA, through SamplerCustomAdvanced, dialled by rlg_scale",
    "rlg_hunyuanvideo15_rl_lora": "HunyuanVideo 1.5 text to video + your RL LoRA, with RLG Guider",
    "rlg_ltxv_rl_lora": "LTX-Video text to video + your RL LoRA, dialled by rlg_scale",
}


def note(text: str) -> dict:
    return {"type": "Note", "widgets": {"text": text}, "size": [NOTE_WIDTH, 230]}


def sd35_text2img(rl_lora: str, prompt: str, negative: str, extra_note: str) -> tuple[dict, list]:
    nodes = {
        "ckpt": {"type": "CheckpointLoaderSimple", "widgets": {"ckpt_name": SD35}},
        "clip": {"type": "TripleCLIPLoader", "widgets": CLIPS_SD35},
        "rl": {"type": "RLGLoraLoaderModelOnly", "widgets": {"lora_name": rl_lora, "strength_model": 1.0}},
        "pos": {"type": "CLIPTextEncode", "widgets": {"text": prompt}},
        "neg": {"type": "CLIPTextEncode", "widgets": {"text": negative}},
        "rlg": {"type": "RLGApply", "widgets": {"rlg_scale": 1.6, "start_percent": 0.0, "end_percent": 1.0}},
        "latent": {"type": "EmptySD3LatentImage", "widgets": {"width": 512, "height": 512, "batch_size": 1}},
        "sampler": {"type": "KSampler", "widgets": {"seed": 42, "control_after_generate": "fixed", "steps": 20,
                                                    "cfg": 4.5, "sampler_name": "euler", "scheduler": "sgm_uniform",
                                                    "denoise": 1.0}},
        "decode": {"type": "VAEDecode", "widgets": {}},
        "save": {"type": "SaveImage", "widgets": {"filename_prefix": "rlg"}},
        "note": note(extra_note),
    }
    links = [("ckpt", 0, "rl", "model"), ("ckpt", 0, "rlg", "model"), ("rl", 0, "rlg", "rl_model"),
             ("clip", 0, "pos", "clip"), ("clip", 0, "neg", "clip"), ("rlg", 0, "sampler", "model"),
             ("pos", 0, "sampler", "positive"), ("neg", 0, "sampler", "negative"),
             ("latent", 0, "sampler", "latent_image"), ("sampler", 0, "decode", "samples"),
             ("ckpt", 2, "decode", "vae"), ("decode", 0, "save", "images")]
    return nodes, links


def checkpoint_text2img(ckpt: str, rl_node: dict, prompt: str, negative: str, size: int, cfg: float, steps: int,
                        text: str) -> tuple[dict, list]:
    """A single-file checkpoint (model, CLIP, VAE) and an RL loader node (a UNet file, or a LoRA on the base)."""
    rl_is_lora = "Lora" in rl_node["type"]
    nodes = {
        "ckpt": {"type": "CheckpointLoaderSimple", "widgets": {"ckpt_name": ckpt}},
        "rl": dict(rl_node),
        "pos": {"type": "CLIPTextEncode", "widgets": {"text": prompt}},
        "neg": {"type": "CLIPTextEncode", "widgets": {"text": negative}},
        "rlg": {"type": "RLGApply", "widgets": {"rlg_scale": 1.5, "start_percent": 0.0, "end_percent": 1.0}},
        "latent": {"type": "EmptyLatentImage", "widgets": {"width": size, "height": size, "batch_size": 1}},
        "sampler": {"type": "KSampler", "widgets": {"seed": 42, "control_after_generate": "fixed", "steps": steps,
                                                    "cfg": cfg, "sampler_name": "dpmpp_2m", "scheduler": "karras",
                                                    "denoise": 1.0}},
        "decode": {"type": "VAEDecode", "widgets": {}},
        "save": {"type": "SaveImage", "widgets": {"filename_prefix": "rlg"}},
        "note": note(text),
    }
    links = [("ckpt", 0, "rl", "model")] if rl_is_lora else []
    links += [("ckpt", 0, "rlg", "model"), ("rl", 0, "rlg", "rl_model"), ("ckpt", 1, "pos", "clip"),
              ("ckpt", 1, "neg", "clip"), ("rlg", 0, "sampler", "model"), ("pos", 0, "sampler", "positive"),
              ("neg", 0, "sampler", "negative"), ("latent", 0, "sampler", "latent_image"),
              ("sampler", 0, "decode", "samples"), ("ckpt", 2, "decode", "vae"), ("decode", 0, "save", "images")]
    return nodes, links


def flux_text2img(rl_node: dict, prompt: str, text: str) -> tuple[dict, list]:
    """FLUX.1-dev as its own files (diffusion model, two text encoders, VAE) and an RL loader node."""
    rl_is_lora = "Lora" in rl_node["type"]
    nodes = {
        "unet": {"type": "UNETLoader", "widgets": {"unet_name": FLUX_DEV, "weight_dtype": "default"}},
        "rl": dict(rl_node),
        "clip": {"type": "DualCLIPLoader", "widgets": {"clip_name1": "clip_l.safetensors",
                                                       "clip_name2": "t5xxl_fp16.safetensors", "type": "flux"}},
        "vae": {"type": "VAELoader", "widgets": {"vae_name": "ae.safetensors"}},
        "pos": {"type": "CLIPTextEncode", "widgets": {"text": prompt}},
        "neg": {"type": "CLIPTextEncode", "widgets": {"text": ""}},
        "guidance": {"type": "FluxGuidance", "widgets": {"guidance": 3.5}},
        "rlg": {"type": "RLGApply", "widgets": {"rlg_scale": 1.5, "start_percent": 0.0, "end_percent": 1.0}},
        "latent": {"type": "EmptySD3LatentImage", "widgets": {"width": 1024, "height": 1024, "batch_size": 1}},
        "sampler": {"type": "KSampler", "widgets": {"seed": 42, "control_after_generate": "fixed", "steps": 28,
                                                    "cfg": 1.0, "sampler_name": "euler", "scheduler": "simple",
                                                    "denoise": 1.0}},
        "decode": {"type": "VAEDecode", "widgets": {}},
        "save": {"type": "SaveImage", "widgets": {"filename_prefix": "rlg"}},
        "note": note(text),
    }
    links = [("unet", 0, "rl", "model")] if rl_is_lora else []
    links += [("unet", 0, "rlg", "model"), ("rl", 0, "rlg", "rl_model"), ("clip", 0, "pos", "clip"),
              ("clip", 0, "neg", "clip"), ("pos", 0, "guidance", "conditioning"), ("rlg", 0, "sampler", "model"),
              ("guidance", 0, "sampler", "positive"), ("neg", 0, "sampler", "negative"),
              ("latent", 0, "sampler", "latent_image"), ("sampler", 0, "decode", "samples"),
              ("vae", 0, "decode", "vae"), ("decode", 0, "save", "images")]
    return nodes, links


def qwen_image_edit(rl_lora: str, prompt: str, text: str) -> tuple[dict, list]:
    """Qwen-Image-Edit: the input image goes to the text encoder (TextEncodeQwenImageEdit) and the latent."""
    nodes = {
        "unet": {"type": "UNETLoader", "widgets": {"unet_name": QWEN_EDIT, "weight_dtype": "default"}},
        "shift": {"type": "ModelSamplingAuraFlow", "widgets": {"shift": 3.0}},
        "rl": {"type": "RLGLoraLoaderModelOnly", "widgets": {"lora_name": rl_lora, "strength_model": 1.0}},
        "clip": {"type": "CLIPLoader", "widgets": {"clip_name": "qwen_2.5_vl_7b_fp8_scaled.safetensors",
                                                   "type": "qwen_image"}},
        "vae": {"type": "VAELoader", "widgets": {"vae_name": "qwen_image_vae.safetensors"}},
        "image": {"type": "LoadImage", "widgets": {"image": "example.png"}, "size": [300, 330]},
        "scale": {"type": "ImageScale", "widgets": {"upscale_method": "lanczos", "width": 1024, "height": 1024,
                                                    "crop": "center"}},
        "pos": {"type": "TextEncodeQwenImageEdit", "widgets": {"prompt": prompt}},
        "neg": {"type": "TextEncodeQwenImageEdit", "widgets": {"prompt": ""}},
        "encode": {"type": "VAEEncode", "widgets": {}},
        "rlg": {"type": "RLGApply", "widgets": {"rlg_scale": 1.5, "start_percent": 0.0, "end_percent": 1.0}},
        "sampler": {"type": "KSampler", "widgets": {"seed": 42, "control_after_generate": "fixed", "steps": 20,
                                                    "cfg": 2.5, "sampler_name": "euler", "scheduler": "simple",
                                                    "denoise": 1.0}},
        "decode": {"type": "VAEDecode", "widgets": {}},
        "save": {"type": "SaveImage", "widgets": {"filename_prefix": "rlg"}},
        "note": note(text),
    }
    links = [("unet", 0, "shift", "model"), ("shift", 0, "rl", "model"), ("shift", 0, "rlg", "model"),
             ("rl", 0, "rlg", "rl_model"), ("image", 0, "scale", "image"),
             ("clip", 0, "pos", "clip"), ("vae", 0, "pos", "vae"), ("scale", 0, "pos", "image"),
             ("clip", 0, "neg", "clip"), ("vae", 0, "neg", "vae"), ("scale", 0, "neg", "image"),
             ("scale", 0, "encode", "pixels"), ("vae", 0, "encode", "vae"), ("rlg", 0, "sampler", "model"),
             ("pos", 0, "sampler", "positive"), ("neg", 0, "sampler", "negative"),
             ("encode", 0, "sampler", "latent_image"), ("sampler", 0, "decode", "samples"),
             ("vae", 0, "decode", "vae"), ("decode", 0, "save", "images")]
    return nodes, links


def wan22_two_experts(text: str) -> tuple[dict, list]:
    """Wan 2.2 A14B (Fun InP): RLG on each expert, its reward LoRA as rl_model, two KSamplerAdvanced stages."""
    sampler = {"control_after_generate": "fixed", "steps": 20, "cfg": 3.5, "sampler_name": "euler",
               "scheduler": "simple"}
    nodes = {
        "high": {"type": "UNETLoader", "widgets": {"unet_name": WAN_HIGH, "weight_dtype": "default"}},
        "low": {"type": "UNETLoader", "widgets": {"unet_name": WAN_LOW, "weight_dtype": "default"}},
        "shift_high": {"type": "ModelSamplingSD3", "widgets": {"shift": 8.0}},
        "shift_low": {"type": "ModelSamplingSD3", "widgets": {"shift": 8.0}},
        "rl_high": {"type": "LoraLoaderModelOnly", "widgets": {"lora_name": WAN_REWARD_HIGH, "strength_model": 1.0}},
        "rl_low": {"type": "LoraLoaderModelOnly", "widgets": {"lora_name": WAN_REWARD_LOW, "strength_model": 1.0}},
        "rlg_high": {"type": "RLGApply", "widgets": {"rlg_scale": 1.5, "start_percent": 0.0, "end_percent": 1.0}},
        "rlg_low": {"type": "RLGApply", "widgets": {"rlg_scale": 1.5, "start_percent": 0.0, "end_percent": 1.0}},
        "clip": {"type": "CLIPLoader", "widgets": {"clip_name": "umt5_xxl_fp8_e4m3fn_scaled.safetensors",
                                                   "type": "wan"}},
        "vae": {"type": "VAELoader", "widgets": {"vae_name": "wan_2.1_vae.safetensors"}},
        "image": {"type": "LoadImage", "widgets": {"image": "example.png"}, "size": [300, 330]},
        "pos": {"type": "CLIPTextEncode", "widgets": {"text": "a red fox trotting through fresh snow, the camera "
                                                                "follows it, soft morning light"}},
        "neg": {"type": "CLIPTextEncode", "widgets": {"text": "blurry, static, distorted, low quality"}},
        "i2v": {"type": "WanFunInpaintToVideo", "widgets": {"width": 640, "height": 640, "length": 81,
                                                             "batch_size": 1}},
        "stage1": {"type": "KSamplerAdvanced", "widgets": {"add_noise": "enable", "noise_seed": 42, **sampler,
                                                           "start_at_step": 0, "end_at_step": 10,
                                                           "return_with_leftover_noise": "enable"}},
        "stage2": {"type": "KSamplerAdvanced", "widgets": {"add_noise": "disable", "noise_seed": 42, **sampler,
                                                           "start_at_step": 10, "end_at_step": 10000,
                                                           "return_with_leftover_noise": "disable"}},
        "decode": {"type": "VAEDecode", "widgets": {}},
        "video": {"type": "CreateVideo", "widgets": {"fps": 16.0}},
        "save": {"type": "SaveVideo", "widgets": {"filename_prefix": "video/rlg_wan22"}},
        "note": note(text),
    }
    links = [("high", 0, "shift_high", "model"), ("low", 0, "shift_low", "model"),
             ("shift_high", 0, "rl_high", "model"), ("shift_low", 0, "rl_low", "model"),
             ("shift_high", 0, "rlg_high", "model"), ("rl_high", 0, "rlg_high", "rl_model"),
             ("shift_low", 0, "rlg_low", "model"), ("rl_low", 0, "rlg_low", "rl_model"),
             ("clip", 0, "pos", "clip"), ("clip", 0, "neg", "clip"), ("pos", 0, "i2v", "positive"),
             ("neg", 0, "i2v", "negative"), ("vae", 0, "i2v", "vae"), ("image", 0, "i2v", "start_image"),
             ("rlg_high", 0, "stage1", "model"), ("i2v", 0, "stage1", "positive"), ("i2v", 1, "stage1", "negative"),
             ("i2v", 2, "stage1", "latent_image"), ("rlg_low", 0, "stage2", "model"),
             ("i2v", 0, "stage2", "positive"), ("i2v", 1, "stage2", "negative"),
             ("stage1", 0, "stage2", "latent_image"),
             ("stage2", 0, "decode", "samples"), ("vae", 0, "decode", "vae"), ("decode", 0, "video", "images"),
             ("video", 0, "save", "video")]
    return nodes, links


FLUX_FILES = (f"diffusion_models/{FLUX_DEV} (black-forest-labs/FLUX.1-dev); text_encoders/clip_l.safetensors and "
              "t5xxl_fp16.safetensors (comfyanonymous/flux_text_encoders); vae/ae.safetensors "
              "(black-forest-labs/FLUX.1-dev)")


FILES_SD35 = (f"checkpoints/{SD35} (stabilityai/stable-diffusion-3.5-medium); text_encoders/clip_g.safetensors, "
              "clip_l.safetensors, t5xxl_fp16.safetensors (its text_encoders folder)")


def workflows() -> dict[str, tuple[dict, list]]:
    out = {}
    out["rlg_sd35_flowgrpo_pickscore"] = sd35_text2img(
        PICKSCORE,
        "a photo of a fox reading a book in a sunlit library, detailed fur, warm light",
        "blurry, low quality",
        "RLG: SD3.5-Medium + Flow-GRPO PickScore LoRA (the paper's main setting: 20 steps, euler, cfg 4.5, "
        "rlg_scale 1.6, 512x512).\n\nModels: " + FILES_SD35 + f"; loras/{PICKSCORE} with its adapter_config.json "
        "beside it (jieliu/SD3.5M-FlowGRPO-PickScore).\n\nLoad LoRA (PEFT aware) reads lora_alpha from "
        "adapter_config.json; the stock LoRA loader would apply it at half strength.\nrlg_scale: 0 = base, "
        "1 = RL model, 1-3 = stronger alignment. RLG Apply stays last before the sampler.")
    out["rlg_sd35_flowgrpo_text"] = sd35_text2img(
        TEXT_LORA,
        'a storefront at night with a glowing neon sign that says "OPEN LATE", photo',
        "blurry, misspelled text",
        "RLG: SD3.5-Medium + Flow-GRPO text-rendering LoRA.\n\nModels: " + FILES_SD35 +
        f"; loras/{TEXT_LORA} with its adapter_config.json beside it (jieliu/SD3.5M-FlowGRPO-Text).\n\n"
        "Raise rlg_scale towards 2-3 for text that is spelled right more often.")
    # SD1.5 + Diffusion-DPO: the RL model is a whole UNet, loaded separately.
    out["rlg_sd15_diffusion_dpo"] = checkpoint_text2img(
        SD15, {"type": "UNETLoader", "widgets": {"unet_name": DPO15, "weight_dtype": "default"}},
        "a cozy cabin in a snowy forest at dusk, highly detailed", "blurry, deformed", size=512, cfg=7.5, steps=25,
        text="RLG: SD1.5 + Diffusion-DPO (a full RL-tuned UNet).\n\nModels: checkpoints/" + SD15 + " (any SD1.5 "
             "checkpoint); diffusion_models/" + DPO15 + " = unet/diffusion_pytorch_model.safetensors from "
             "mhdang/dpo-sd1.5-text2image-v1, renamed.\n\nTwo full models: twice the weight memory. rlg_scale 1-3.")
    # SDXL + SPO LoRA (webui format: the stock loader reads its alpha).
    out["rlg_sdxl_spo_lora"] = checkpoint_text2img(
        SDXL, {"type": "LoraLoaderModelOnly", "widgets": {"lora_name": SPO_XL, "strength_model": 1.0}},
        "an astronaut riding a horse on the moon, cinematic", "blurry, low quality", size=1024, cfg=5.0, steps=25,
        text="RLG: SDXL + SPO LoRA.\n\nModels: checkpoints/" + SDXL + " (stabilityai/stable-diffusion-xl-base-1.0); "
             "loras/" + SPO_XL + " (SPO-Diffusion-Models/SPO-SDXL_4k-p_10ep_LoRA_webui, renamed).\n\nThe LoRA "
             "shares the base's weights: no extra weight memory.")
    # SDXL + Diffusion-DPO: a whole RL-tuned UNet in diffusers format, loaded by UNETLoader.
    out["rlg_sdxl_diffusion_dpo"] = checkpoint_text2img(
        SDXL, {"type": "UNETLoader", "widgets": {"unet_name": DPO_XL, "weight_dtype": "default"}},
        "a lighthouse on a cliff above a stormy sea at sunset, highly detailed", "blurry, deformed", size=1024,
        cfg=5.0, steps=30,
        text="RLG: SDXL + Diffusion-DPO (a full RL-tuned UNet).\n\nModels: checkpoints/" + SDXL + " (stabilityai/"
             "stable-diffusion-xl-base-1.0); diffusion_models/" + DPO_XL + " = unet/diffusion_pytorch_model."
             "safetensors from mhdang/dpo-sdxl-text2image-v1, renamed (diffusers format: UNETLoader converts it)."
             "\n\nTwo full UNets: twice SDXL's 2.6 B-parameter weights (5 GB more at fp16). rlg_scale 1-3.")
    # FLUX.1-dev + SRPO: a second full 12 B transformer.
    out["rlg_flux_srpo"] = flux_text2img(
        {"type": "UNETLoader", "widgets": {"unet_name": SRPO, "weight_dtype": "default"}},
        "a portrait photo of an elderly fisherman mending a net on a wooden pier, overcast light",
        "RLG: FLUX.1-dev + SRPO (a full RL-tuned FLUX transformer). FLUX.1-dev is guidance-distilled: cfg 1, "
        "FluxGuidance 3.5.\n\nModels: " + FLUX_FILES + "; diffusion_models/" + SRPO + " = diffusion_pytorch_model."
        "safetensors from tencent/SRPO, renamed (diffusers format: UNETLoader converts it).\n\nMemory: two 12 B "
        "transformers, 2 x 24 GB at bf16. To halve it, set weight_dtype fp8_e4m3fn on both loaders, or turn SRPO "
        "into a difference LoRA against flux1-dev with ComfyUI's Extract and Save Lora node and load that with "
        "LoraLoaderModelOnly (one transformer + the LoRA). rlg_scale 1-3.")
    # FLUX.1-dev + BoxFlow-GRPO LoRA (PEFT).
    out["rlg_flux_boxflow_grpo_lora"] = flux_text2img(
        {"type": "RLGLoraLoaderModelOnly", "widgets": {"lora_name": BOXFLOW, "strength_model": 1.0}},
        'a chalkboard menu in a cafe that says "SOUP OF THE DAY", a cat sleeping on the counter below it',
        "RLG: FLUX.1-dev + BoxFlow-GRPO LoRA (fewer artifacts and text-image mismatches). cfg 1, FluxGuidance "
        "3.5.\n\nModels: " + FLUX_FILES + f"; loras/{BOXFLOW} with its adapter_config.json beside it "
        "(P1n3/boxflow-grpo-flux-lora; PEFT format, r 64, lora_alpha 128).\n\nLoad LoRA (PEFT aware) maps its "
        "base_model.model. keys onto ComfyUI's FLUX and applies lora_alpha / r = 2; the stock loader would load none "
        "of them. The ARR-RPO FLUX LoRA (OpenEnvisionLab/Auto-Rubric-as-Reward, ARR-FLUX.1-dev/) loads the same way."
        "\nThe LoRA shares the base's weights: one transformer in memory.")
    # Qwen-Image-Edit + ARR-RPO LoRA (PEFT).
    out["rlg_qwen_image_edit_arr_rpo"] = qwen_image_edit(
        ARR_QWEN, "replace the sky with a starry night sky, keep everything else unchanged",
        "RLG: Qwen-Image-Edit + ARR-RPO LoRA (rubric-rewarded instruction editing). Load your image in Load Image."
        "\n\nModels: diffusion_models/" + QWEN_EDIT + " (Comfy-Org/Qwen-Image-Edit_ComfyUI); "
        "text_encoders/qwen_2.5_vl_7b_"
        "fp8_scaled.safetensors and vae/qwen_image_vae.safetensors (Comfy-Org/Qwen-Image_ComfyUI); loras/" + ARR_QWEN +
        " with its adapter_config.json beside it (OpenEnvisionLab/Auto-Rubric-as-Reward, folder ARR-Qwen-Image-Edit/; "
        "PEFT format, r 32, lora_alpha 64).\n\nThe shift node goes before the RL LoRA loader, so both models carry it. "
        "The LoRA shares the base's 20 B weights: one transformer in memory.")
    # Wan 2.2 A14B (Fun InP) + its two reward LoRAs: RLG on each expert.
    out["rlg_wan22_fun_reward_loras"] = wan22_two_experts(
        "RLG on Wan 2.2: each expert with its reward LoRA, the high-noise expert for steps 0-10, the low-noise "
        "expert for 10-20 (two KSamplerAdvanced stages). Image to video from Load Image's picture.\n\nModels: "
        f"diffusion_models/{WAN_HIGH} and {WAN_LOW} (Comfy-Org/Wan_2.2_ComfyUI_Repackaged, the experts of "
        "alibaba-pai/Wan2.2-Fun-A14B-InP); text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors and vae/wan_2.1_vae."
        f"safetensors (Comfy-Org/Wan_2.1_ComfyUI_repackaged); loras/{WAN_REWARD_HIGH} and {WAN_REWARD_LOW} "
        "(alibaba-pai/Wan2.2-Fun-Reward-LoRAs; the MPS ones work the same; the HPS2.1 one is recommended for the "
        "low-noise expert). Their alpha is in the file: the stock loader applies them as trained.\n\nEach LoRA "
        "shares its expert's weights: no second copy of either 14 B expert.")
    # SamplerCustomAdvanced + RLG Guider.
    nodes, links = sd35_text2img(PICKSCORE, "a watercolor painting of a lighthouse in a storm", "blurry",
                                 "RLG Guider + SamplerCustomAdvanced: the same result as CFGGuider on RLG Apply's "
                                 "output.\n\nModels: " + FILES_SD35 + f"; loras/{PICKSCORE} + adapter_config.json.")
    for key in ("rlg", "sampler"):
        del nodes[key]
    nodes.update({
        "guider": {"type": "RLGGuider", "widgets": {"cfg": 4.5, "rlg_scale": 1.6, "start_percent": 0.0,
                                                    "end_percent": 1.0}},
        "noise": {"type": "RandomNoise", "widgets": {"noise_seed": 42, "control_after_generate": "fixed"}},
        "select": {"type": "KSamplerSelect", "widgets": {"sampler_name": "euler"}},
        "sched": {"type": "BasicScheduler", "widgets": {"scheduler": "sgm_uniform", "steps": 20, "denoise": 1.0}},
        "sampler": {"type": "SamplerCustomAdvanced", "widgets": {}},
    })
    links = [link for link in links if link[2] not in ("rlg", "sampler") and link[0] not in ("rlg", "sampler")]
    links += [("ckpt", 0, "guider", "model"), ("rl", 0, "guider", "rl_model"), ("pos", 0, "guider", "positive"),
              ("neg", 0, "guider", "negative"), ("ckpt", 0, "sched", "model"), ("noise", 0, "sampler", "noise"),
              ("guider", 0, "sampler", "guider"), ("select", 0, "sampler", "sampler"),
              ("sched", 0, "sampler", "sigmas"), ("latent", 0, "sampler", "latent_image"),
              ("sampler", 0, "decode", "samples")]
    out["rlg_guider_sampler_custom_advanced"] = (nodes, links)
    # Inpainting: masked latent.
    nodes, links = sd35_text2img(PICKSCORE, "a bouquet of sunflowers in a glass vase", "blurry",
                                 "RLG inpainting: the masked area is regenerated with RLG, the rest is kept.\n\n"
                                 "Models: " + FILES_SD35 + f"; loras/{PICKSCORE} + adapter_config.json.\nLoad an "
                                 "image and paint the mask in its mask editor.")
    del nodes["latent"]
    nodes.update({
        "image": {"type": "LoadImage", "widgets": {"image": "example.png"}, "size": [300, 330]},
        "encode": {"type": "VAEEncode", "widgets": {}},
        "mask": {"type": "SetLatentNoiseMask", "widgets": {}},
    })
    links = [link for link in links if link[0] != "latent"]
    links += [("image", 0, "encode", "pixels"), ("ckpt", 2, "encode", "vae"), ("encode", 0, "mask", "samples"),
              ("image", 1, "mask", "mask"), ("mask", 0, "sampler", "latent_image")]
    out["rlg_sd35_inpaint"] = (nodes, links)
    # Two Flow-GRPO LoRAs at once: each reward dialled on its own.
    nodes, links = sd35_text2img(
        PICKSCORE, 'a cozy bookshop window at dusk with a hand-painted sign that says "READ MORE", photo',
        "blurry, misspelled text",
        "RLG with two RL models: SD3.5-Medium + the Flow-GRPO PickScore LoRA (image preference) and the Flow-GRPO "
        "Text LoRA (text rendering), each with its own scale and window.\n\nModels: " + FILES_SD35 +
        f"; loras/{PICKSCORE} and loras/{TEXT_LORA}, each with its adapter_config.json beside it "
        "(jieliu/SD3.5M-FlowGRPO-PickScore, jieliu/SD3.5M-FlowGRPO-Text).\n\nEach step is base + w1 (pickscore - "
        "base) + w2 (text - base): it targets the base tilted by both rewards. Chain more RLG RL Model nodes for "
        "more RL models; a large total scale oversaturates like a high CFG.")
    del nodes["rl"], nodes["rlg"]
    nodes.update({
        "rl1": {"type": "RLGLoraLoaderModelOnly", "widgets": {"lora_name": PICKSCORE, "strength_model": 1.0}},
        "rl2": {"type": "RLGLoraLoaderModelOnly", "widgets": {"lora_name": TEXT_LORA, "strength_model": 1.0}},
        "term1": {"type": "RLGRLModel", "widgets": {"rlg_scale": 1.2, "start_percent": 0.0, "end_percent": 1.0}},
        "term2": {"type": "RLGRLModel", "widgets": {"rlg_scale": 1.0, "start_percent": 0.0, "end_percent": 0.8}},
        "rlg": {"type": "RLGApplyMulti", "widgets": {}},
    })
    links = [link for link in links if "rl" not in (link[0], link[2]) and "rlg" not in (link[0], link[2])]
    links += [("ckpt", 0, "rl1", "model"), ("ckpt", 0, "rl2", "model"), ("rl1", 0, "term1", "rl_model"),
              ("rl2", 0, "term2", "rl_model"), ("term1", 0, "term2", "rl_models"), ("ckpt", 0, "rlg", "model"),
              ("term2", 0, "rlg", "rl_models"), ("rlg", 0, "sampler", "model")]
    out["rlg_sd35_flowgrpo_two_loras"] = (nodes, links)
    # A scale that eases from strong alignment early to the RL model at the end.
    nodes, links = sd35_text2img(
        PICKSCORE, "a portrait of an old fisherman, dramatic light, highly detailed",
        "blurry, low quality",
        "RLG with a schedule: SD3.5-Medium + Flow-GRPO PickScore LoRA, rlg_scale 2.5 at the start easing (cosine) "
        "to 1.0 at the end, measured in schedule percent so every sampler sees the same scale at the same noise "
        "level.\n\nModels: " + FILES_SD35 + f"; loras/{PICKSCORE} with its adapter_config.json beside it "
        "(jieliu/SD3.5M-FlowGRPO-PickScore).\n\nschedule constant = one scale throughout; rl_cfg 1 = an RL model "
        "trained without CFG.")
    nodes["rlg"]["widgets"].update({"rlg_scale": 2.5, "schedule": "cosine", "end_scale": 1.0})
    out["rlg_sd35_flowgrpo_schedule"] = (nodes, links)
    # Choose the scale by looking: one queue, one image per scale, one labelled grid.
    nodes, links = sd35_text2img(
        PICKSCORE, "a red fox in a snowy forest at golden hour, detailed fur", "blurry, low quality",
        "RLG Scale Sweep: SD3.5-Medium + Flow-GRPO PickScore LoRA at several rlg_scale values in one queue. Every "
        "image starts from the same noise as a single image with this seed, so each column is exactly what RLG Apply "
        "gives at that scale.\n\nModels: " + FILES_SD35 + f"; loras/{PICKSCORE} with its adapter_config.json beside it "
        "(jieliu/SD3.5M-FlowGRPO-PickScore).\n\nThe scales are typed once, on RLG Scale Sweep: its scales output "
        "labels RLG Sweep Grid. A batch of n images gives n rows per scale.")
    sweep_nodes(nodes, links, scales="0, 1, 1.6, 2.5, 3")
    nodes["save"] = dict(nodes["save"], size=[480, 280])  # five 512-px images side by side
    out["rlg_sd35_flowgrpo_sweep"] = (nodes, links)
    # The demo pair (make demo), with the demo-only prompt and decode nodes.
    out["rlg_demo"] = (
        {
            "base": {"type": "UNETLoader", "widgets": {"unet_name": "rlg_demo_base.safetensors",
                                                       "weight_dtype": "default"}},
            "rl": {"type": "LoraLoaderModelOnly", "widgets": {"lora_name": "rlg_demo_rl_lora.safetensors",
                                                              "strength_model": 1.0}},
            "rlg": {"type": "RLGApply", "widgets": {"rlg_scale": 1.5, "start_percent": 0.0, "end_percent": 1.0}},
            "prompt": {"type": "RLGDemoPrompt", "widgets": {}},
            "latent": {"type": "EmptySD3LatentImage", "widgets": {"width": 64, "height": 64, "batch_size": 16}},
            "sampler": {"type": "KSampler", "widgets": {"seed": 1, "control_after_generate": "fixed", "steps": 20,
                                                        "cfg": 1.0, "sampler_name": "euler", "scheduler": "simple",
                                                        "denoise": 1.0}},
            "decode": {"type": "RLGDemoDecode", "widgets": {"pixels": 128}},
            "preview": {"type": "PreviewImage", "widgets": {}, "size": [420, 450]},  # 16 images of 128 px
            "note": note("RLG demo: a tiny SD3-shaped base model trained on four patterns, and its RL LoRA that "
                         "prefers red discs. Run `make demo` once (it trains the pair into this ComfyUI's models "
                         "folders), then `make demo-server` to load the demo nodes.\n\nTurn rlg_scale: 0 = base "
                         "(about 15% red discs), 1 = RL model, 2-3 = mostly red discs."),
        },
        [("base", 0, "rl", "model"), ("base", 0, "rlg", "model"), ("rl", 0, "rlg", "rl_model"),
         ("rlg", 0, "sampler", "model"), ("prompt", 0, "sampler", "positive"), ("prompt", 1, "sampler", "negative"),
         ("latent", 0, "sampler", "latent_image"), ("sampler", 0, "decode", "samples"),
         ("decode", 0, "preview", "images")],
    )
    nodes, links = out["rlg_demo"]
    nodes = {**nodes, "latent": dict(nodes["latent"], widgets={"width": 64, "height": 64, "batch_size": 1}),
             "note": note("RLG Scale Sweep on the demo pair: one sample per rlg_scale, all from the same noise, "
                          "laid out as one labelled grid. Run `make demo` once (it trains the pair), then `make "
                          "demo-server`.\n\nWith a batch of n the sweep gives n rows per scale: set the latent's "
                          "batch_size to see several samples per scale.")}
    links = list(links)
    sweep_nodes(nodes, links, scales="0, 0.5, 1, 1.5, 2, 3")
    nodes["preview"] = dict(nodes["preview"], size=[440, 280])  # one row of six 64-px images, labelled
    out["rlg_demo_sweep"] = (nodes, links)
    return out


def sweep_nodes(nodes: dict, links: list, scales: str) -> None:
    """Turn a text-to-image graph's RLG Apply into RLG Scale Sweep, and lay the decoded images out in a grid.

    The grid takes its labels from the sweep's scales output: the list is typed once, on the sweep.
    """
    nodes.pop("rlg")
    nodes["rlg"] = {"type": "RLGScaleSweep", "widgets": {"scales": scales, "start_percent": 0.0, "end_percent": 1.0}}
    decoded = next(link for link in links if link[2] in ("save", "preview"))
    viewer = decoded[2]
    nodes["grid"] = {"type": "RLGSweepGrid", "widgets": {"scales": ""}}
    latent_links = [link for link in links if link[2] == "sampler" and link[3] == "latent_image"]
    links[:] = [link for link in links if link not in latent_links and link is not decoded]
    links += [(latent_links[0][0], 0, "rlg", "latent"), ("rlg", 1, "sampler", "latent_image"),
              (decoded[0], 0, "grid", "images"), ("rlg", 2, "grid", "sweep_scales"), ("grid", 0, viewer, "images")]


def family_workflows() -> dict[str, tuple[dict, list]]:
    """One workflow per family added in 0.3 (Z-Image, FLUX.2, HunyuanVideo 1.5, LTX-Video), each on the graph of
    ComfyUI's own template for it, with the RL LoRA on the base and RLG last before the sampler or guider."""
    out = {}
    peft = ("Load LoRA (PEFT aware) reads lora_alpha from adapter_config.json beside a PEFT LoRA and maps "
            "diffusers layer names; any other LoRA loads as with the stock loader.")
    # Z-Image-Turbo (ComfyUI's image_z_image_turbo template): cfg 1 with a zeroed negative, 9 res_multistep steps.
    out["rlg_zimage_turbo_rl_lora"] = ({
        "unet": {"type": "UNETLoader", "widgets": {"unet_name": Z_IMAGE, "weight_dtype": "default"}},
        "shift": {"type": "ModelSamplingAuraFlow", "widgets": {"shift": 3.0}},
        "rl": {"type": "RLGLoraLoaderModelOnly", "widgets": {"lora_name": Z_IMAGE_RL, "strength_model": 1.0}},
        "clip": {"type": "CLIPLoader", "widgets": {"clip_name": QWEN3_4B, "type": "lumina2"}},
        "pos": {"type": "CLIPTextEncode", "widgets": {"text": "a lighthouse keeper's cat asleep on a stack of old "
                                                               "nautical maps, warm lamp light, photo"}},
        "zero": {"type": "ConditioningZeroOut", "widgets": {}},
        "rlg": {"type": "RLGApply", "widgets": {"rlg_scale": 1.5, "start_percent": 0.0, "end_percent": 1.0}},
        "latent": {"type": "EmptySD3LatentImage", "widgets": {"width": 1024, "height": 1024, "batch_size": 1}},
        "sampler": {"type": "KSampler", "widgets": {"seed": 42, "control_after_generate": "fixed", "steps": 9,
                                                    "cfg": 1.0, "sampler_name": "res_multistep", "scheduler": "simple",
                                                    "denoise": 1.0}},
        "vae": {"type": "VAELoader", "widgets": {"vae_name": "ae.safetensors"}},
        "decode": {"type": "VAEDecode", "widgets": {}},
        "save": {"type": "SaveImage", "widgets": {"filename_prefix": "rlg"}, "size": [320, 320]},
        "note": note(f"Models: diffusion_models/{Z_IMAGE}, text_encoders/{QWEN3_4B}, vae/ae.safetensors "
                     f"(Comfy-Org/z_image_turbo); loras/{Z_IMAGE_RL}: your RL LoRA for Z-Image-Turbo, for example "
                     "Flow-GRPO or DiffusionNFT trained with Flow-Factory (PEFT: keep its adapter_config.json "
                     f"beside it).\n\n{peft} The shift goes before the RL LoRA, so both models carry it."),
    }, [("unet", 0, "shift", "model"), ("shift", 0, "rl", "model"), ("shift", 0, "rlg", "model"),
        ("rl", 0, "rlg", "rl_model"), ("clip", 0, "pos", "clip"), ("pos", 0, "zero", "conditioning"),
        ("rlg", 0, "sampler", "model"), ("pos", 0, "sampler", "positive"), ("zero", 0, "sampler", "negative"),
        ("latent", 0, "sampler", "latent_image"), ("sampler", 0, "decode", "samples"), ("vae", 0, "decode", "vae"),
        ("decode", 0, "save", "images")])
    # FLUX.2 dev (ComfyUI's image_flux2 template): guidance-distilled, BasicGuider + SamplerCustomAdvanced.
    out["rlg_flux2_dev_rl_lora"] = ({
        "unet": {"type": "UNETLoader", "widgets": {"unet_name": FLUX2_DEV, "weight_dtype": "default"}},
        "rl": {"type": "RLGLoraLoaderModelOnly", "widgets": {"lora_name": FLUX2_RL, "strength_model": 1.0}},
        "clip": {"type": "CLIPLoader", "widgets": {"clip_name": MISTRAL_FLUX2, "type": "flux2"}},
        "pos": {"type": "CLIPTextEncode", "widgets": {"text": "a hand-painted shop sign that says \"FRESH BREAD\" "
                                                               "above a bakery window at dawn, photo"}},
        "guidance": {"type": "FluxGuidance", "widgets": {"guidance": 4.0}},
        "rlg": {"type": "RLGApply", "widgets": {"rlg_scale": 1.5, "start_percent": 0.0, "end_percent": 1.0}},
        "guider": {"type": "BasicGuider", "widgets": {}},
        "noise": {"type": "RandomNoise", "widgets": {"noise_seed": 42, "control_after_generate": "fixed"}},
        "select": {"type": "KSamplerSelect", "widgets": {"sampler_name": "euler"}},
        "sched": {"type": "Flux2Scheduler", "widgets": {"steps": 20, "width": 1024, "height": 1024}},
        "latent": {"type": "EmptyFlux2LatentImage", "widgets": {"width": 1024, "height": 1024, "batch_size": 1}},
        "sampler": {"type": "SamplerCustomAdvanced", "widgets": {}},
        "vae": {"type": "VAELoader", "widgets": {"vae_name": FLUX2_VAE}},
        "decode": {"type": "VAEDecode", "widgets": {}},
        "save": {"type": "SaveImage", "widgets": {"filename_prefix": "rlg"}, "size": [320, 320]},
        "note": note(f"Models: diffusion_models/{FLUX2_DEV}, text_encoders/{MISTRAL_FLUX2}, vae/{FLUX2_VAE} "
                     f"(Comfy-Org/flux2-dev); loras/{FLUX2_RL}: your RL LoRA for FLUX.2 dev, for example GRPO or "
                     "DiffusionNFT trained with Flow-Factory (PEFT: keep its adapter_config.json beside it).\n\n"
                     f"{peft} FLUX.2 dev is guidance-distilled: BasicGuider (no CFG), FluxGuidance 4."),
    }, [("unet", 0, "rl", "model"), ("unet", 0, "rlg", "model"), ("rl", 0, "rlg", "rl_model"),
        ("clip", 0, "pos", "clip"), ("pos", 0, "guidance", "conditioning"), ("rlg", 0, "guider", "model"),
        ("guidance", 0, "guider", "conditioning"), ("noise", 0, "sampler", "noise"), ("guider", 0, "sampler", "guider"),
        ("select", 0, "sampler", "sampler"), ("sched", 0, "sampler", "sigmas"),
        ("latent", 0, "sampler", "latent_image"), ("sampler", 0, "decode", "samples"), ("vae", 0, "decode", "vae"),
        ("decode", 0, "save", "images")])
    # HunyuanVideo 1.5 text to video (ComfyUI's video_hunyuan_video_1.5_720p_t2v template), RLG Guider at its cfg 6.
    out["rlg_hunyuanvideo15_rl_lora"] = ({
        "unet": {"type": "UNETLoader", "widgets": {"unet_name": HV15, "weight_dtype": "default"}},
        "shift": {"type": "ModelSamplingSD3", "widgets": {"shift": 7.0}},
        "rl": {"type": "RLGLoraLoaderModelOnly", "widgets": {"lora_name": HV15_RL, "strength_model": 1.0}},
        "clip": {"type": "DualCLIPLoader", "widgets": {"clip_name1": QWEN_VL, "clip_name2": BYT5,
                                                       "type": "hunyuan_video_15"}},
        "pos": {"type": "CLIPTextEncode", "widgets": {"text": "a paper boat drifting down a rain-filled street "
                                                               "gutter, the camera follows it, soft evening light"}},
        "neg": {"type": "CLIPTextEncode", "widgets": {"text": ""}},
        "guider": {"type": "RLGGuider", "widgets": {"cfg": 6.0, "rlg_scale": 1.5, "start_percent": 0.0,
                                                    "end_percent": 1.0}},
        "noise": {"type": "RandomNoise", "widgets": {"noise_seed": 42, "control_after_generate": "fixed"}},
        "select": {"type": "KSamplerSelect", "widgets": {"sampler_name": "euler"}},
        "sched": {"type": "BasicScheduler", "widgets": {"scheduler": "simple", "steps": 20, "denoise": 1.0}},
        "latent": {"type": "EmptyHunyuanVideo15Latent", "widgets": {"width": 848, "height": 480, "length": 61,
                                                                    "batch_size": 1}},
        "sampler": {"type": "SamplerCustomAdvanced", "widgets": {}},
        "vae": {"type": "VAELoader", "widgets": {"vae_name": HV15_VAE}},
        "decode": {"type": "VAEDecode", "widgets": {}},
        "video": {"type": "CreateVideo", "widgets": {"fps": 24.0}},
        "save": {"type": "SaveVideo", "widgets": {"filename_prefix": "video/rlg_hunyuanvideo15"}},
        "note": note(f"Models: diffusion_models/{HV15}, text_encoders/{QWEN_VL} and {BYT5}, vae/{HV15_VAE} "
                     f"(Comfy-Org/HunyuanVideo_1.5_repackaged); loras/{HV15_RL}: your RL LoRA for HunyuanVideo 1.5 "
                     "(none is published yet), with ComfyUI's or diffusion-pipe's layer names.\n\nThe shift goes "
                     "before the RL LoRA, so both models carry it; the scheduler reads the shifted base."),
    }, [("unet", 0, "shift", "model"), ("shift", 0, "rl", "model"), ("clip", 0, "pos", "clip"),
        ("clip", 0, "neg", "clip"), ("shift", 0, "guider", "model"), ("rl", 0, "guider", "rl_model"),
        ("pos", 0, "guider", "positive"), ("neg", 0, "guider", "negative"), ("shift", 0, "sched", "model"),
        ("noise", 0, "sampler", "noise"), ("guider", 0, "sampler", "guider"), ("select", 0, "sampler", "sampler"),
        ("sched", 0, "sampler", "sigmas"), ("latent", 0, "sampler", "latent_image"),
        ("sampler", 0, "decode", "samples"), ("vae", 0, "decode", "vae"), ("decode", 0, "video", "images"),
        ("video", 0, "save", "video")])
    # LTX-Video 0.9 text to video (ComfyUI's ltxv_text_to_video template): SamplerCustom, cfg 3.
    out["rlg_ltxv_rl_lora"] = ({
        "ckpt": {"type": "CheckpointLoaderSimple", "widgets": {"ckpt_name": LTXV}},
        "rl": {"type": "RLGLoraLoaderModelOnly", "widgets": {"lora_name": LTXV_RL, "strength_model": 1.0}},
        "clip": {"type": "CLIPLoader", "widgets": {"clip_name": "t5xxl_fp16.safetensors", "type": "ltxv"}},
        "pos": {"type": "CLIPTextEncode", "widgets": {"text": "a hot air balloon rising over misty hills at sunrise, "
                                                               "slow aerial shot"}},
        "neg": {"type": "CLIPTextEncode", "widgets": {"text": "low quality, worst quality, deformed, distorted"}},
        "cond": {"type": "LTXVConditioning", "widgets": {"frame_rate": 25.0}},
        "rlg": {"type": "RLGApply", "widgets": {"rlg_scale": 1.5, "start_percent": 0.0, "end_percent": 1.0}},
        "latent": {"type": "EmptyLTXVLatentVideo", "widgets": {"width": 768, "height": 512, "length": 97,
                                                               "batch_size": 1}},
        "sched": {"type": "LTXVScheduler", "widgets": {"steps": 30, "max_shift": 2.05, "base_shift": 0.95,
                                                       "stretch": True, "terminal": 0.1}},
        "select": {"type": "KSamplerSelect", "widgets": {"sampler_name": "euler"}},
        "sampler": {"type": "SamplerCustom", "widgets": {"add_noise": True, "noise_seed": 42,
                                                         "control_after_generate": "fixed", "cfg": 3.0}},
        "decode": {"type": "VAEDecode", "widgets": {}},
        "video": {"type": "CreateVideo", "widgets": {"fps": 24.0}},
        "save": {"type": "SaveVideo", "widgets": {"filename_prefix": "video/rlg_ltxv"}},
        "note": note(f"Models: checkpoints/{LTXV} (Lightricks/LTX-Video; the VAE is in it), "
                     f"text_encoders/t5xxl_fp16.safetensors (comfyanonymous/flux_text_encoders); loras/{LTXV_RL}: "
                     "your RL LoRA for LTX-Video, with ComfyUI's layer names (diffusion_model.…, as the LTX trainers "
                     f"export for ComfyUI) or as a PEFT folder.\n\n{peft}"),
    }, [("ckpt", 0, "rl", "model"), ("ckpt", 0, "rlg", "model"), ("rl", 0, "rlg", "rl_model"),
        ("clip", 0, "pos", "clip"), ("clip", 0, "neg", "clip"), ("pos", 0, "cond", "positive"),
        ("neg", 0, "cond", "negative"), ("rlg", 0, "sampler", "model"), ("cond", 0, "sampler", "positive"),
        ("cond", 1, "sampler", "negative"), ("select", 0, "sampler", "sampler"), ("sched", 0, "sampler", "sigmas"),
        ("latent", 0, "sched", "latent"), ("latent", 0, "sampler", "latent_image"),
        ("sampler", 0, "decode", "samples"), ("ckpt", 2, "decode", "vae"), ("decode", 0, "video", "images"),
        ("video", 0, "save", "video")])
    return out


# Each workflow's columns, left to right, each top to bottom: the graph reads from the loaders to the result, the
# Note first. Sizes come from the front-end (and the pack's readouts); the builder places the columns so nothing
# overlaps, and tests/test_templates.py checks it in every front-end of the matrix.
_SD35 = [["note", "ckpt", "clip"], ["rl", "pos", "neg"], ["rlg", "latent", "sampler"], ["decode", "save"]]
_CKPT = [["note", "ckpt", "rl"], ["pos", "neg"], ["rlg", "latent", "sampler"], ["decode", "save"]]
_FLUX = [["note", "unet", "rl", "vae"], ["clip", "pos", "neg"], ["guidance", "rlg", "latent"], ["sampler", "decode"],
         ["save"]]
LAYOUTS = {
    "rlg_sd35_flowgrpo_pickscore": _SD35, "rlg_sd35_flowgrpo_text": _SD35, "rlg_sd35_flowgrpo_schedule": _SD35,
    # The sweep grid shows its sweep on the node (js/rlg_scrubber.js): a column of its own, the preview after it,
    # so the graph stays wide and its top right corner (under the front-ends' queue panel after a queue) is empty.
    "rlg_sd35_flowgrpo_sweep": [["note", "ckpt", "clip"], ["rl", "pos", "neg"], ["rlg", "latent", "sampler"],
                                ["decode", "grid"], ["save"]],
    "rlg_sd35_flowgrpo_two_loras": [["note", "ckpt", "clip"], ["rl1", "rl2", "pos", "neg"], ["term1", "term2"],
                                    ["rlg", "latent", "sampler"], ["decode", "save"]],
    "rlg_guider_sampler_custom_advanced": [["note", "ckpt", "clip"], ["rl", "pos", "neg"], ["guider", "latent"],
                                           ["noise", "select", "sched", "sampler"], ["decode", "save"]],
    "rlg_sd35_inpaint": [["note", "ckpt", "clip"], ["rl", "pos", "neg"], ["rlg", "image"],
                         ["encode", "mask", "sampler"], ["decode", "save"]],
    "rlg_sd15_diffusion_dpo": _CKPT, "rlg_sdxl_spo_lora": _CKPT, "rlg_sdxl_diffusion_dpo": _CKPT,
    "rlg_flux_srpo": _FLUX, "rlg_flux_boxflow_grpo_lora": _FLUX,
    "rlg_qwen_image_edit_arr_rpo": [["note", "unet", "shift", "rl"], ["clip", "vae", "image"],
                                    ["scale", "pos", "neg"], ["rlg", "encode", "sampler"], ["decode", "save"]],
    "rlg_wan22_fun_reward_loras": [["note", "high", "low", "clip", "vae"], ["shift_high", "shift_low", "image"],
                                   ["rl_high", "rl_low", "pos", "neg"], ["rlg_high", "rlg_low", "i2v"],
                                   ["stage1", "stage2"], ["decode", "video", "save"]],
    "rlg_demo": [["note", "base", "rl"], ["rlg", "prompt", "latent"], ["sampler", "decode"], ["preview"]],
    "rlg_demo_sweep": [["note", "base", "rl"], ["rlg", "prompt", "latent"], ["sampler", "decode"], ["grid"],
                       ["preview"]],
    "rlg_zimage_turbo_rl_lora": [["note", "unet", "shift", "rl"], ["clip", "pos", "zero", "vae"],
                                 ["rlg", "latent", "sampler"], ["decode", "save"]],
    "rlg_flux2_dev_rl_lora": [["note", "unet", "rl", "clip"], ["pos", "guidance", "vae"], ["rlg", "guider", "latent"],
                              ["noise", "select", "sched", "sampler"], ["decode", "save"]],
    "rlg_hunyuanvideo15_rl_lora": [["note", "unet", "shift", "rl"], ["clip", "pos", "neg"], ["guider", "latent"],
                                   ["noise", "select", "sched", "sampler"], ["vae", "decode", "video", "save"]],
    "rlg_ltxv_rl_lora": [["note", "ckpt", "rl", "clip"], ["pos", "neg", "cond"], ["rlg", "latent", "sched"],
                         ["select", "sampler", "decode"], ["video", "save"]],
}
# Sizes by node type (a node's own "size" comes first), never below what the front-end needs for the node: nodes
# that show pictures get room for them, so a queue does not grow them over their neighbours (RLG Sweep Grid shows
# its sweep one scale at a time, js/rlg_scrubber.js); prompts are kept compact (their text box scrolls).
SIZES = {"SaveImage": [320, 320], "PreviewImage": [320, 320], "CLIPTextEncode": [300, 150],
         "TextEncodeQwenImageEdit": [300, 150], "RLGSweepGrid": [400, 560]}
NOTE_WIDTH = 320
COLUMN_GAP = 48  # between a column's widest node and the next column
ROW_GAP = 24  # between a node's bottom and the next node's badge
ABOVE_BODY = 52  # the title bar (30 px) and the node-source badge above it (20 px, 2 px apart)


BUILD_JS = """
async ([nodes, links, layout, models, geometry]) => {
  app.graph.clear();
  const made = {};
  for (const [name, spec] of Object.entries(nodes)) {
    const node = LiteGraph.createNode(spec.type);
    if (!node) throw new Error("unknown node type " + spec.type);
    app.graph.add(node);
    for (const [wname, value] of Object.entries(spec.widgets)) {
      const w = (node.widgets || []).find(w => w.name === wname);
      if (!w) throw new Error(spec.type + " has no widget " + wname);
      w.value = value;
    }
    // Model metadata: every file a widget selects that has a download, as the front-end's schema wants it.
    const entries = (node.widgets || []).filter(w => typeof w.value === "string" && models[w.value])
      .map(w => ({name: w.value, url: models[w.value][0], directory: models[w.value][1]}));
    if (entries.length) node.properties = {...node.properties, models: entries};
    made[name] = node;
  }
  for (const [src, slot, dst, input] of links) {
    const target = made[dst];
    const index = target.findInputSlot(input);
    if (index < 0) throw new Error(target.type + " has no input " + input);
    made[src].connect(slot, target, index);
  }
  // Loaded back, every node has the size the front-end and the pack's js give it when the file is opened.
  const ids = Object.fromEntries(Object.entries(made).map(([name, node]) => [name, node.id]));
  await app.loadGraphData(JSON.parse(JSON.stringify(app.graph.serialize())));
  const byName = Object.fromEntries(Object.entries(ids).map(([name, id]) => [name, app.graph.getNodeById(id)]));
  for (const [name, spec] of Object.entries(nodes)) {
    const node = byName[name];
    const want = spec.size || geometry.sizes[spec.type];
    const least = node.computeSize();
    if (want) node.setSize([Math.max(least[0], want[0]), Math.max(least[1], want[1])]);
  }
  const placed = new Set(layout.flat());
  for (const name of Object.keys(nodes)) if (!placed.has(name)) throw new Error("no column for " + name);
  let x = 0;
  for (const column of layout) {
    let y = 0, width = 0;
    for (const name of column) {
      const node = byName[name];
      node.pos = [x, y + geometry.aboveBody];
      y = node.pos[1] + node.size[1] + geometry.rowGap;
      width = Math.max(width, node.size[0]);
    }
    x += width + geometry.columnGap;
  }
  // JSON.stringify in the page drops undefined fields; handing the objects over as they are would
  // turn them into nulls, which the front-end's workflow schema rejects when the file is loaded.
  const workflow = JSON.parse(JSON.stringify(app.graph.serialize()));
  delete workflow.extra.ds;  // no stored view: every front-end fits the graph into the window on open
  const prompt = JSON.stringify((await app.graphToPrompt()).output);
  return [JSON.stringify(workflow), prompt];
}
"""


def described(name: str, nodes: dict) -> dict:
    """The workflow's Note, led by its one-line description."""
    text = nodes["note"]["widgets"]["text"]
    return {**nodes, "note": dict(nodes["note"], widgets={"text": f"{DESCRIPTIONS[name]}.\n\n{text}"})}


def template_source(nodes: dict) -> str:
    """Where a template goes: with the demo's nodes if it uses them, else with the pack (harness.templates)."""
    demo = any(node["type"].startswith("RLGDemo") for node in nodes.values())
    return templates.DEMO_PACK.name if demo else templates.PACK_NAME


def all_workflows() -> dict[str, tuple[dict, list]]:
    return {**workflows(), **family_workflows()}


def main(only: list[str] | None = None) -> None:
    """Build every workflow, or the ones named in `only`."""
    from harness import host

    host.use_comfy()
    from harness.frontend import browser_page
    from harness.workflow_host import start_workflow_server
    from scripts.thumbnails import write_thumbnail

    work = Path(tempfile.mkdtemp(prefix="rlg-build-workflows-"))
    server = start_workflow_server(work)  # every model name exists there: no missing-model dialogs while building
    geometry = {"sizes": SIZES, "columnGap": COLUMN_GAP, "rowGap": ROW_GAP, "aboveBody": ABOVE_BODY}
    try:
        with browser_page(server.url) as page:
            for name, (nodes, links) in all_workflows().items():
                if only and name not in only:
                    continue
                text = page.evaluate(BUILD_JS, [described(name, nodes), links, LAYOUTS[name], MODELS, geometry])
                workflow, api = (json.loads(t) for t in text)
                source = template_source(nodes)
                ui, twin = templates.ui_path(name, source), templates.api_path(name, source)
                for path in (ui, twin):
                    path.parent.mkdir(parents=True, exist_ok=True)
                ui.write_text(json.dumps(workflow, indent=1) + "\n")
                twin.write_text(json.dumps(api, indent=1) + "\n")
                write_thumbnail(name, workflow, DESCRIPTIONS[name], ui.with_suffix(".jpg"))
                print(f"wrote {name}: {len(nodes)} nodes, {len(links)} links, {extent(workflow)}")
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


def extent(workflow: dict) -> str:
    """The graph's size with titles and badges (what the front-end fits into the window)."""
    xs = [(n["pos"][0], n["pos"][0] + n["size"][0]) for n in workflow["nodes"]]
    ys = [(n["pos"][1] - ABOVE_BODY, n["pos"][1] + n["size"][1]) for n in workflow["nodes"]]
    return f"{max(b for _, b in xs) - min(a for a, _ in xs):.0f} x {max(b for _, b in ys) - min(a for a, _ in ys):.0f}"


if __name__ == "__main__":
    import sys

    unknown = sorted(set(sys.argv[1:]) - set(all_workflows()))
    if unknown:
        raise SystemExit(f"no such workflow: {', '.join(unknown)}")
    main(sys.argv[1:] or None)
