"""Build example_workflows/*.json and their API twins in the real ComfyUI front-end.

    .comfy-host/venv/bin/python -m scripts.build_workflows      (from the checkout)

Each workflow is described below as nodes (type, widget values by name) and links (by input
name). The script starts the host ComfyUI with this pack and the demo nodes, creates each graph in
the front-end (LiteGraph.createNode, widgets set by name, links by input name), and saves the
front-end's own serialisation (the UI workflow) and graphToPrompt()'s output (the API twin, in
tests/workflows_api/). No format is converted by hand. Needs Chromium (apt: chromium) and the
playwright package, which scripts/setup_host.sh installs.
"""

from __future__ import annotations

import json

from harness.host import ROOT, host_dir

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
WAN_HIGH = "wan2.2_fun_inpaint_high_noise_14B_fp8_scaled.safetensors"
WAN_LOW = "wan2.2_fun_inpaint_low_noise_14B_fp8_scaled.safetensors"
WAN_REWARD_HIGH = "Wan2.2-Fun-A14B-InP-high-noise-HPS2.1.safetensors"
WAN_REWARD_LOW = "Wan2.2-Fun-A14B-InP-low-noise-HPS2.1.safetensors"


def note(text: str) -> dict:
    return {"type": "Note", "widgets": {"text": text}, "pos": [40, 560], "size": [420, 260]}


def sd35_text2img(rl_lora: str, prompt: str, negative: str, extra_note: str) -> tuple[dict, list]:
    nodes = {
        "ckpt": {"type": "CheckpointLoaderSimple", "widgets": {"ckpt_name": SD35}, "pos": [40, 80]},
        "clip": {"type": "TripleCLIPLoader", "widgets": CLIPS_SD35, "pos": [40, 260]},
        "rl": {"type": "RLGLoraLoaderModelOnly", "widgets": {"lora_name": rl_lora, "strength_model": 1.0},
               "pos": [480, 40]},
        "pos": {"type": "CLIPTextEncode", "widgets": {"text": prompt}, "pos": [480, 220]},
        "neg": {"type": "CLIPTextEncode", "widgets": {"text": negative}, "pos": [480, 420]},
        "rlg": {"type": "RLGApply", "widgets": {"rlg_scale": 1.6, "start_percent": 0.0, "end_percent": 1.0},
                "pos": [900, 40]},
        "latent": {"type": "EmptySD3LatentImage", "widgets": {"width": 512, "height": 512, "batch_size": 1},
                   "pos": [900, 260]},
        "sampler": {"type": "KSampler", "widgets": {"seed": 42, "control_after_generate": "fixed", "steps": 20,
                                                    "cfg": 4.5, "sampler_name": "euler", "scheduler": "sgm_uniform",
                                                    "denoise": 1.0}, "pos": [1260, 40]},
        "decode": {"type": "VAEDecode", "widgets": {}, "pos": [1620, 40]},
        "save": {"type": "SaveImage", "widgets": {"filename_prefix": "rlg"}, "pos": [1620, 160]},
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
        "ckpt": {"type": "CheckpointLoaderSimple", "widgets": {"ckpt_name": ckpt}, "pos": [40, 80]},
        "rl": dict(rl_node, pos=[40, 260]),
        "pos": {"type": "CLIPTextEncode", "widgets": {"text": prompt}, "pos": [480, 200]},
        "neg": {"type": "CLIPTextEncode", "widgets": {"text": negative}, "pos": [480, 400]},
        "rlg": {"type": "RLGApply", "widgets": {"rlg_scale": 1.5, "start_percent": 0.0, "end_percent": 1.0},
                "pos": [480, 40]},
        "latent": {"type": "EmptyLatentImage", "widgets": {"width": size, "height": size, "batch_size": 1},
                   "pos": [900, 300]},
        "sampler": {"type": "KSampler", "widgets": {"seed": 42, "control_after_generate": "fixed", "steps": steps,
                                                    "cfg": cfg, "sampler_name": "dpmpp_2m", "scheduler": "karras",
                                                    "denoise": 1.0}, "pos": [900, 40]},
        "decode": {"type": "VAEDecode", "widgets": {}, "pos": [1260, 40]},
        "save": {"type": "SaveImage", "widgets": {"filename_prefix": "rlg"}, "pos": [1260, 160]},
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
        "unet": {"type": "UNETLoader", "widgets": {"unet_name": FLUX_DEV, "weight_dtype": "default"}, "pos": [40, 80]},
        "rl": dict(rl_node, pos=[40, 240]),
        "clip": {"type": "DualCLIPLoader", "widgets": {"clip_name1": "clip_l.safetensors",
                                                       "clip_name2": "t5xxl_fp16.safetensors", "type": "flux"},
                 "pos": [40, 400]},
        "vae": {"type": "VAELoader", "widgets": {"vae_name": "ae.safetensors"}, "pos": [40, 560]},
        "pos": {"type": "CLIPTextEncode", "widgets": {"text": prompt}, "pos": [480, 220]},
        "neg": {"type": "CLIPTextEncode", "widgets": {"text": ""}, "pos": [480, 460]},
        "guidance": {"type": "FluxGuidance", "widgets": {"guidance": 3.5}, "pos": [900, 220]},
        "rlg": {"type": "RLGApply", "widgets": {"rlg_scale": 1.5, "start_percent": 0.0, "end_percent": 1.0},
                "pos": [480, 40]},
        "latent": {"type": "EmptySD3LatentImage", "widgets": {"width": 1024, "height": 1024, "batch_size": 1},
                   "pos": [900, 360]},
        "sampler": {"type": "KSampler", "widgets": {"seed": 42, "control_after_generate": "fixed", "steps": 28,
                                                    "cfg": 1.0, "sampler_name": "euler", "scheduler": "simple",
                                                    "denoise": 1.0}, "pos": [1260, 40]},
        "decode": {"type": "VAEDecode", "widgets": {}, "pos": [1620, 40]},
        "save": {"type": "SaveImage", "widgets": {"filename_prefix": "rlg"}, "pos": [1620, 160]},
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
        "unet": {"type": "UNETLoader", "widgets": {"unet_name": QWEN_EDIT, "weight_dtype": "default"}, "pos": [40, 80]},
        "shift": {"type": "ModelSamplingAuraFlow", "widgets": {"shift": 3.0}, "pos": [40, 240]},
        "rl": {"type": "RLGLoraLoaderModelOnly", "widgets": {"lora_name": rl_lora, "strength_model": 1.0},
               "pos": [40, 360]},
        "clip": {"type": "CLIPLoader", "widgets": {"clip_name": "qwen_2.5_vl_7b_fp8_scaled.safetensors",
                                                   "type": "qwen_image"}, "pos": [40, 520]},
        "vae": {"type": "VAELoader", "widgets": {"vae_name": "qwen_image_vae.safetensors"}, "pos": [40, 660]},
        "image": {"type": "LoadImage", "widgets": {"image": "example.png"}, "pos": [480, 560]},
        "scale": {"type": "ImageScale", "widgets": {"upscale_method": "lanczos", "width": 1024, "height": 1024,
                                                    "crop": "center"}, "pos": [480, 900]},
        "pos": {"type": "TextEncodeQwenImageEdit", "widgets": {"prompt": prompt}, "pos": [900, 220]},
        "neg": {"type": "TextEncodeQwenImageEdit", "widgets": {"prompt": ""}, "pos": [900, 460]},
        "encode": {"type": "VAEEncode", "widgets": {}, "pos": [900, 700]},
        "rlg": {"type": "RLGApply", "widgets": {"rlg_scale": 1.5, "start_percent": 0.0, "end_percent": 1.0},
                "pos": [480, 40]},
        "sampler": {"type": "KSampler", "widgets": {"seed": 42, "control_after_generate": "fixed", "steps": 20,
                                                    "cfg": 2.5, "sampler_name": "euler", "scheduler": "simple",
                                                    "denoise": 1.0}, "pos": [1260, 40]},
        "decode": {"type": "VAEDecode", "widgets": {}, "pos": [1620, 40]},
        "save": {"type": "SaveImage", "widgets": {"filename_prefix": "rlg"}, "pos": [1620, 160]},
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
        "high": {"type": "UNETLoader", "widgets": {"unet_name": WAN_HIGH, "weight_dtype": "default"}, "pos": [40, 40]},
        "low": {"type": "UNETLoader", "widgets": {"unet_name": WAN_LOW, "weight_dtype": "default"}, "pos": [40, 200]},
        "shift_high": {"type": "ModelSamplingSD3", "widgets": {"shift": 8.0}, "pos": [420, 40]},
        "shift_low": {"type": "ModelSamplingSD3", "widgets": {"shift": 8.0}, "pos": [420, 200]},
        "rl_high": {"type": "LoraLoaderModelOnly", "widgets": {"lora_name": WAN_REWARD_HIGH, "strength_model": 1.0},
                    "pos": [760, -120]},
        "rl_low": {"type": "LoraLoaderModelOnly", "widgets": {"lora_name": WAN_REWARD_LOW, "strength_model": 1.0},
                   "pos": [760, 360]},
        "rlg_high": {"type": "RLGApply", "widgets": {"rlg_scale": 1.5, "start_percent": 0.0, "end_percent": 1.0},
                     "pos": [1120, 40]},
        "rlg_low": {"type": "RLGApply", "widgets": {"rlg_scale": 1.5, "start_percent": 0.0, "end_percent": 1.0},
                    "pos": [1120, 240]},
        "clip": {"type": "CLIPLoader", "widgets": {"clip_name": "umt5_xxl_fp8_e4m3fn_scaled.safetensors",
                                                   "type": "wan"}, "pos": [40, 420]},
        "vae": {"type": "VAELoader", "widgets": {"vae_name": "wan_2.1_vae.safetensors"}, "pos": [40, 560]},
        "image": {"type": "LoadImage", "widgets": {"image": "example.png"}, "pos": [40, 680]},
        "pos": {"type": "CLIPTextEncode", "widgets": {"text": "a red fox trotting through fresh snow, the camera "
                                                                "follows it, soft morning light"}, "pos": [420, 420]},
        "neg": {"type": "CLIPTextEncode", "widgets": {"text": "blurry, static, distorted, low quality"},
                "pos": [420, 620]},
        "i2v": {"type": "WanFunInpaintToVideo", "widgets": {"width": 640, "height": 640, "length": 81,
                                                             "batch_size": 1}, "pos": [760, 560]},
        "stage1": {"type": "KSamplerAdvanced", "widgets": {"add_noise": "enable", "noise_seed": 42, **sampler,
                                                           "start_at_step": 0, "end_at_step": 10,
                                                           "return_with_leftover_noise": "enable"},
                   "pos": [1480, 40]},
        "stage2": {"type": "KSamplerAdvanced", "widgets": {"add_noise": "disable", "noise_seed": 42, **sampler,
                                                           "start_at_step": 10, "end_at_step": 10000,
                                                           "return_with_leftover_noise": "disable"},
                   "pos": [1840, 40]},
        "decode": {"type": "VAEDecode", "widgets": {}, "pos": [2200, 40]},
        "video": {"type": "CreateVideo", "widgets": {"fps": 16.0}, "pos": [2200, 160]},
        "save": {"type": "SaveVideo", "widgets": {"filename_prefix": "video/rlg_wan22"}, "pos": [2200, 300]},
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


FLUX_FILES = (f"diffusion_models/{FLUX_DEV} (black-forest-labs/FLUX.1-dev); clip/clip_l.safetensors and "
              "clip/t5xxl_fp16.safetensors (comfyanonymous/flux_text_encoders); vae/ae.safetensors "
              "(black-forest-labs/FLUX.1-dev)")


FILES_SD35 = (f"checkpoints/{SD35} (stabilityai/stable-diffusion-3.5-medium); clip/clip_g.safetensors, "
              "clip/clip_l.safetensors, clip/t5xxl_fp16.safetensors (its text_encoders folder)")


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
        "\n\nModels: diffusion_models/" + QWEN_EDIT + " (Comfy-Org/Qwen-Image-Edit_ComfyUI); clip/qwen_2.5_vl_7b_"
        "fp8_scaled.safetensors and vae/qwen_image_vae.safetensors (Comfy-Org/Qwen-Image_ComfyUI); loras/" + ARR_QWEN +
        " with its adapter_config.json beside it (OpenEnvisionLab/Auto-Rubric-as-Reward, folder ARR-Qwen-Image-Edit/; "
        "PEFT format, r 32, lora_alpha 64).\n\nThe shift node goes before the RL LoRA loader, so both models carry it. "
        "The LoRA shares the base's 20 B weights: one transformer in memory.")
    # Wan 2.2 A14B (Fun InP) + its two reward LoRAs: RLG on each expert.
    out["rlg_wan22_fun_reward_loras"] = wan22_two_experts(
        "RLG on Wan 2.2: each expert with its reward LoRA, the high-noise expert for steps 0-10, the low-noise "
        "expert for 10-20 (two KSamplerAdvanced stages). Image to video from Load Image's picture.\n\nModels: "
        f"diffusion_models/{WAN_HIGH} and {WAN_LOW} (Comfy-Org/Wan_2.2_ComfyUI_Repackaged, the experts of "
        "alibaba-pai/Wan2.2-Fun-A14B-InP); clip/umt5_xxl_fp8_e4m3fn_scaled.safetensors and vae/wan_2.1_vae."
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
                                                    "end_percent": 1.0}, "pos": [900, 40]},
        "noise": {"type": "RandomNoise", "widgets": {"noise_seed": 42, "control_after_generate": "fixed"},
                  "pos": [1260, 40]},
        "select": {"type": "KSamplerSelect", "widgets": {"sampler_name": "euler"}, "pos": [1260, 160]},
        "sched": {"type": "BasicScheduler", "widgets": {"scheduler": "sgm_uniform", "steps": 20, "denoise": 1.0},
                  "pos": [1260, 260]},
        "sampler": {"type": "SamplerCustomAdvanced", "widgets": {}, "pos": [1260, 420]},
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
        "image": {"type": "LoadImage", "widgets": {"image": "example.png"}, "pos": [900, 300]},
        "encode": {"type": "VAEEncode", "widgets": {}, "pos": [900, 560]},
        "mask": {"type": "SetLatentNoiseMask", "widgets": {}, "pos": [1260, 560]},
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
        "rl1": {"type": "RLGLoraLoaderModelOnly", "widgets": {"lora_name": PICKSCORE, "strength_model": 1.0},
                "pos": [480, -160]},
        "rl2": {"type": "RLGLoraLoaderModelOnly", "widgets": {"lora_name": TEXT_LORA, "strength_model": 1.0},
                "pos": [480, 40]},
        "term1": {"type": "RLGRLModel", "widgets": {"rlg_scale": 1.2, "start_percent": 0.0, "end_percent": 1.0},
                  "pos": [900, -240]},
        "term2": {"type": "RLGRLModel", "widgets": {"rlg_scale": 1.0, "start_percent": 0.0, "end_percent": 0.8},
                  "pos": [900, -20]},
        "rlg": {"type": "RLGApplyMulti", "widgets": {}, "pos": [900, 200]},
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
        "(jieliu/SD3.5M-FlowGRPO-PickScore).\n\nKeep the same scales list on RLG Sweep Grid. A batch of n images "
        "gives n rows per scale.")
    sweep_nodes(nodes, links, scales="0, 1, 1.6, 2.5, 3")
    out["rlg_sd35_flowgrpo_sweep"] = (nodes, links)
    # The demo pair (make demo), with the demo-only prompt and decode nodes.
    out["rlg_demo"] = (
        {
            "base": {"type": "UNETLoader", "widgets": {"unet_name": "rlg_demo_base.safetensors",
                                                       "weight_dtype": "default"}, "pos": [40, 80]},
            "rl": {"type": "LoraLoaderModelOnly", "widgets": {"lora_name": "rlg_demo_rl_lora.safetensors",
                                                              "strength_model": 1.0}, "pos": [40, 240]},
            "rlg": {"type": "RLGApply", "widgets": {"rlg_scale": 1.5, "start_percent": 0.0, "end_percent": 1.0},
                    "pos": [400, 80]},
            "prompt": {"type": "RLGDemoPrompt", "widgets": {}, "pos": [400, 300]},
            "latent": {"type": "EmptySD3LatentImage", "widgets": {"width": 64, "height": 64, "batch_size": 16},
                       "pos": [400, 420]},
            "sampler": {"type": "KSampler", "widgets": {"seed": 1, "control_after_generate": "fixed", "steps": 20,
                                                        "cfg": 1.0, "sampler_name": "euler", "scheduler": "simple",
                                                        "denoise": 1.0}, "pos": [760, 80]},
            "decode": {"type": "RLGDemoDecode", "widgets": {"pixels": 128}, "pos": [1120, 80]},
            "preview": {"type": "PreviewImage", "widgets": {}, "pos": [1120, 200]},
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
    out["rlg_demo_sweep"] = (nodes, links)
    return out


def sweep_nodes(nodes: dict, links: list, scales: str) -> None:
    """Turn a text-to-image graph's RLG Apply into RLG Scale Sweep, and lay the decoded images out in a grid."""
    rlg = nodes.pop("rlg")
    nodes["rlg"] = {"type": "RLGScaleSweep", "widgets": {"scales": scales, "start_percent": 0.0, "end_percent": 1.0},
                    "pos": rlg["pos"]}
    decoded = next(link for link in links if link[2] in ("save", "preview"))
    viewer = decoded[2]
    nodes["grid"] = {"type": "RLGSweepGrid", "widgets": {"scales": scales}, "pos": [nodes[viewer]["pos"][0],
                                                                                   nodes[viewer]["pos"][1] + 120]}
    latent_links = [link for link in links if link[2] == "sampler" and link[3] == "latent_image"]
    links[:] = [link for link in links if link not in latent_links and link is not decoded]
    links += [(latent_links[0][0], 0, "rlg", "latent"), ("rlg", 1, "sampler", "latent_image"),
              (decoded[0], 0, "grid", "images"), ("grid", 0, viewer, "images")]


BUILD_JS = """
async ([nodes, links]) => {
  app.graph.clear();
  const made = {};
  for (const [name, spec] of Object.entries(nodes)) {
    const node = LiteGraph.createNode(spec.type);
    if (!node) throw new Error("unknown node type " + spec.type);
    node.pos = spec.pos;
    if (spec.size) node.size = spec.size;
    app.graph.add(node);
    for (const [wname, value] of Object.entries(spec.widgets)) {
      const w = (node.widgets || []).find(w => w.name === wname);
      if (!w) throw new Error(spec.type + " has no widget " + wname);
      w.value = value;
    }
    made[name] = node;
  }
  for (const [src, slot, dst, input] of links) {
    const target = made[dst];
    const index = target.findInputSlot(input);
    if (index < 0) throw new Error(target.type + " has no input " + input);
    made[src].connect(slot, target, index);
  }
  // JSON.stringify in the page drops undefined fields; handing the objects over as they are would
  // turn them into nulls, which the front-end's workflow schema rejects when the file is loaded.
  const workflow = JSON.stringify(app.graph.serialize());
  const prompt = JSON.stringify((await app.graphToPrompt()).output);
  return [workflow, prompt];
}
"""


def main() -> None:
    from harness.frontend import browser_page
    from harness.server import ComfyServer

    out_ui = ROOT / "example_workflows"
    out_api = ROOT / "tests" / "workflows_api"
    out_api.mkdir(parents=True, exist_ok=True)
    work = host_dir() / "build-workflows"
    work.mkdir(parents=True, exist_ok=True)
    paths = work / "extra_model_paths.yaml"
    paths.write_text(f"rlg:\n  custom_nodes: {ROOT / 'demo' / 'comfy_nodes'}\n")
    server = ComfyServer(work, paths, ["ComfyUI-RLG", "rlg_demo_nodes"]).start()
    try:
        with browser_page(server.url) as page:
            for name, (nodes, links) in workflows().items():
                workflow, api = (json.loads(text) for text in page.evaluate(BUILD_JS, [nodes, links]))
                (out_ui / f"{name}.json").write_text(json.dumps(workflow, indent=1) + "\n")
                (out_api / f"{name}.json").write_text(json.dumps(api, indent=1) + "\n")
                print(f"wrote {name}: {len(nodes)} nodes, {len(links)} links")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
