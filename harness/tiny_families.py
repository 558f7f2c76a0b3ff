"""Tiny instances of ComfyUI's own model classes for the families that RL fine-tunes exist for.

FLUX.1-dev (guidance embedding, fused single-stream linears), Qwen-Image-Edit (reference latents),
Wan 2.1, Wan 2.2 (the A14B experts as Wan2.2-Fun-A14B-InP has them: image concat channels; and
TI2V-5B, ComfyUI's WAN22 class with its 48-channel latent) and SDXL (the pooled ADM vector).
The families users bring next (NEXT_FAMILIES): Z-Image (Lumina-2's NextDiT with padded caption tokens), FLUX.2
dev and klein (128-channel latents, dev's guidance input), HunyuanVideo 1.5 (5-D latents, the ByT5 and image
conditioning) and LTX-Video (LTXV, and LTX-2's audio + video latents on the hosts that have it).

ComfyUI's detector fixes most sizes of these families (FLUX's 24 heads of 128, Qwen-Image's 3072-wide
blocks, SDXL's whole layout), so a file small enough for CI would not be detected. Each model here is
what detection would build, with the sizes made small: the host's own supported_models config class
picked the way model_config_from_unet_config picks it (for SDXL, whose config matching needs its full
layout, the SDXL class itself), its BaseModel subclass, its network class from comfy.ldm, seeded random
weights, and a ModelPatcher as the stock loader returns. Only the sizes are ours.

Wan's detector derives everything but its 128-wide heads from the weights, so a Wan model of one
128-wide head loads by file through UNETLoader: wan_file_state_dict() makes one (the workflow tests'
stand-in files). So do HunyuanVideo 1.5 (one 128-wide head), LTX-Video (any size, through the file's safetensors
metadata 'config') and, on ComfyUI 0.33, FLUX.2 (one 128-wide head): file_state_dict() and file_conds().
"""

from __future__ import annotations

import dataclasses
import functools
import gc
import json

import comfy.model_detection
import comfy.model_management
import comfy.model_patcher
import comfy.sd
import comfy.supported_models
import comfy.utils
import pytest
import torch

from .weights import norm_vectors, perturbed, seeded_state_dict


# Autouse fixtures of the family test files (imported there by name).
@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These models take milliseconds a step; on a busy 2-core machine torch's second thread only waits."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def unload_models() -> None:
    """ComfyUI's unload_all_models, after a garbage collection. A model that the collector frees while free_memory walks
    ComfyUI's loaded list runs ComfyUI's own cleanup, which shortens that list under the walk (IndexError in
    free_memory, at whichever allocation the collector happens to run): collected first, nothing is left to free."""
    gc.collect()
    comfy.model_management.unload_all_models()


@pytest.fixture(autouse=True)
def free_models():
    """Each test's models leave ComfyUI's loaded list after it."""
    yield
    unload_models()

FAMILIES = ("flux", "qwen_image", "wan21", "wan22", "wan22_5b", "sdxl")
NEXT_FAMILIES = ("z_image", "flux2", "flux2_klein", "hunyuan_video15", "ltxv", "ltxav")
FRAMES = 2  # latent frames of the video families: a 5-frame clip

# Published format of each family's RL LoRAs (see lora_for):
#   peft:      PEFT/diffusers names under base_model.model., lora_A / lora_B, alpha in adapter_config.json
#              (BoxFlow-GRPO and ARR-RPO for FLUX.1-dev, ARR-RPO for Qwen-Image-Edit)
#   videox:    VideoX-Fun's kohya-style names, lora_unet__<module path with _>, with alpha (Wan2.2-Fun reward LoRAs)
#   kohya:     lora_unet_<ComfyUI module path with _> with alpha (SDXL LoRAs such as SPO's webui file)
LORA_FORMAT = {"flux": "peft", "qwen_image": "peft", "wan21": "videox", "wan22": "videox", "wan22_5b": "videox",
               "sdxl": "kohya"}


def _flux_config() -> dict:
    from comfy.ldm.flux.model import FluxParams

    cfg = {"image_model": "flux", "in_channels": 16, "out_channels": 16, "vec_in_dim": 32, "context_in_dim": 32,
           "hidden_size": 64, "mlp_ratio": 4.0, "num_heads": 2, "depth": 1, "depth_single_blocks": 2,
           "axes_dim": [8, 12, 12], "theta": 10000, "patch_size": 2, "qkv_bias": True, "guidance_embed": True}
    if "txt_ids_dims" in {f.name for f in dataclasses.fields(FluxParams)}:  # ComfyUI 0.8.0 and newer
        cfg["txt_ids_dims"] = []
    return cfg


def _wan_config(in_dim: int = 16, out_dim: int = 16, dim: int = 64, text_dim: int = 32) -> dict:
    # What ComfyUI's Wan detector returns, at another size (it reads dim, ffn_dim, layers, in/out dims).
    return {"image_model": "wan2.1", "model_type": "t2v", "dim": dim, "out_dim": out_dim, "num_heads": dim // 32,
            "ffn_dim": 2 * dim, "num_layers": 1, "patch_size": (1, 2, 2), "freq_dim": 32, "text_dim": text_dim,
            "window_size": (-1, -1), "qk_norm": True, "cross_attn_norm": True, "eps": 1e-6, "in_dim": in_dim}


def _host_fields(cfg: dict, params, defaults: dict) -> dict:
    """cfg plus the fields newer hosts require of params (a dataclass) that older ones lack, with their values."""
    names = {f.name for f in dataclasses.fields(params)}
    return cfg | {k: v for k, v in defaults.items() if k in names}


def _flux2_config(guidance: bool = True, hidden: int = 64, heads: int = 2, axes=(8, 8, 8, 8)) -> dict:
    # What the detector returns for a FLUX.2 file (dev: guidance_in; klein: none), at another size.
    from comfy.ldm.flux.model import FluxParams

    cfg = {"image_model": "flux2", "axes_dim": list(axes), "num_heads": heads, "mlp_ratio": 3.0, "theta": 2000,
           "out_channels": 128, "global_modulation": True, "vec_in_dim": None, "mlp_silu_act": True,
           "qkv_bias": False, "ops_bias": False, "default_ref_method": "index", "ref_index_scale": 10.0,
           "in_channels": 128, "hidden_size": hidden, "context_in_dim": 32, "patch_size": 1, "depth": 1,
           "depth_single_blocks": 1, "guidance_embed": guidance}
    return _host_fields(cfg, FluxParams, {"txt_ids_dims": [3], "yak_mlp": False, "txt_norm": False})


def _hunyuan_video15_config(hidden: int = 64, heads: int = 2, axes=(8, 12, 12), byt5: bool = True) -> dict:
    # HunyuanVideo 1.5 (vision_in_dim 1152 picks the class): 32 latent + 32 image + 1 mask channels, no single
    # blocks, ByT5 glyph input, the cond-type embedding. byt5_in's 1472 -> 2048 sizes are fixed in ComfyUI.
    from comfy.ldm.hunyuan_video.model import HunyuanVideoParams

    cfg = {"image_model": "hunyuan_video", "in_channels": 65, "patch_size": [1, 1, 1], "out_channels": 32,
           "vec_in_dim": None, "axes_dim": list(axes), "meanflow": False, "context_in_dim": 32, "hidden_size": hidden,
           "mlp_ratio": 4.0, "num_heads": heads, "depth": 1, "depth_single_blocks": 0, "theta": 256,
           "qkv_bias": True, "byt5": byt5, "guidance_embed": False, "use_cond_type_embedding": True,
           "vision_in_dim": 1152}
    return _host_fields(cfg, HunyuanVideoParams, {"meanflow_sum": True})  # required from ComfyUI 0.8


LTXV_TINY = {"image_model": "ltxv", "num_layers": 1, "attention_head_dim": 2, "cross_attention_dim": 64,
             "caption_channels": 32}  # the fixed 32 heads, 2 wide
LTXAV_TINY = {"image_model": "ltxav", "num_layers": 1, "attention_head_dim": 8, "num_attention_heads": 8,
              "cross_attention_dim": 64, "caption_channels": 32, "audio_attention_head_dim": 4,
              "audio_num_attention_heads": 8, "audio_cross_attention_dim": 32,
              # ComfyUI 0.33 holds LTX-2's text connectors in the diffusion model (default 2 x 354 M parameters);
              # 0.8 keeps them in the text encoder and ignores these
              "connector_attention_head_dim": 8, "connector_num_attention_heads": 4, "connector_num_layers": 1}


SDXL_POOLED_DIM = 32
SDXL_ADM = SDXL_POOLED_DIM + 6 * 256  # the pooled CLIP-G vector + six size/crop embeddings (model_base.SDXL.encode_adm)


def unet_config(family: str) -> dict:
    if family == "flux":
        return _flux_config()
    if family == "qwen_image":
        return {"image_model": "qwen_image", "in_channels": 64, "out_channels": 16, "num_layers": 1,
                "attention_head_dim": 32, "num_attention_heads": 2, "joint_attention_dim": 32,
                "axes_dims_rope": (8, 12, 12)}
    if family == "wan21":
        return _wan_config()
    if family == "wan22":  # Wan2.2-Fun-A14B-InP experts: 16 latent channels + 20 of image and mask
        return _wan_config(in_dim=36)
    if family == "wan22_5b":
        return _wan_config(in_dim=48, out_dim=48)
    if family == "z_image":  # the detector's Z-Image config (it sets these only for dim 3840), 256 wide: the
        # time embedding is 256 wide and adaLN takes min(dim, 256), so 256 is the least; heads stay 128 wide
        return {"image_model": "lumina2", "patch_size": 2, "in_channels": 16, "dim": 256, "cap_feat_dim": 32,
                "n_layers": 1, "qk_norm": True, "n_heads": 2, "n_kv_heads": 2, "axes_dims": [32, 48, 48],
                "axes_lens": [1536, 512, 512], "rope_theta": 256.0, "ffn_dim_multiplier": 8.0 / 3.0,
                "z_image_modulation": True, "time_scale": 1000.0, "pad_tokens_multiple": 32, "n_refiner_layers": 1}
    if family == "flux2":
        return _flux2_config(guidance=True)
    if family == "flux2_klein":
        return _flux2_config(guidance=False)
    if family == "hunyuan_video15":
        return _hunyuan_video15_config()
    if family == "ltxv":
        return dict(LTXV_TINY)
    if family == "ltxav":
        return dict(LTXAV_TINY)
    if family == "sdxl":
        return {"use_checkpoint": False, "image_size": 32, "use_spatial_transformer": True, "legacy": False,
                "num_classes": "sequential", "adm_in_channels": SDXL_ADM, "in_channels": 4, "out_channels": 4,
                "model_channels": 32, "num_res_blocks": [1, 1], "transformer_depth": [0, 1], "channel_mult": [1, 2],
                "transformer_depth_middle": 1, "use_linear_in_transformer": True, "context_dim": 32,
                "transformer_depth_output": [0, 0, 1, 1], "use_temporal_attention": False,
                "use_temporal_resblock": False}
    raise ValueError(family)


def model_config(family: str):
    """The host's supported_models config for the tiny unet config, as detection would pick it."""
    cfg = unet_config(family)
    if family == "sdxl":  # SDXL's class matches only its full layout; detection's pick for the real file
        return comfy.supported_models.SDXL(cfg)
    if family == "z_image":  # ZImage matches dim 3840 only (other dims read as Lumina 2); the real file's pick
        return comfy.supported_models.ZImage(cfg)
    config = comfy.model_detection.model_config_from_unet_config(cfg)
    assert config is not None, f"no ComfyUI model class for {family}"
    return config


EXPECTED_CLASS = {"flux": "Flux", "qwen_image": "QwenImage", "wan21": "WAN21_T2V", "wan22": "WAN21_T2V",
                  "wan22_5b": "WAN22_T2V", "sdxl": "SDXL", "z_image": "ZImage", "flux2": "Flux2",
                  "flux2_klein": "Flux2", "hunyuan_video15": "HunyuanVideo15", "ltxv": "LTXV", "ltxav": "LTXAV"}


STD = {"flux": 0.08, "qwen_image": 0.08, "wan21": 0.08, "wan22": 0.08, "wan22_5b": 0.08, "sdxl": 0.05,
       "z_image": 0.05, "flux2": 0.08, "flux2_klein": 0.08, "hunyuan_video15": 0.05, "ltxv": 0.08, "ltxav": 0.08}


@functools.cache
def missing(family: str) -> str | None:
    """Why this host cannot have the family, or None where it can."""
    if family == "ltxav" and not hasattr(comfy.supported_models, "LTXAV"):
        return "LTX-2 (LTXAV) arrived after this ComfyUI version"
    if family == "flux2_klein":
        # FLUX.2 klein's files load only where the detector derives the heads from the width (ComfyUI 0.33); older
        # hosts fix 48 heads of FLUX.2 dev and fail to build klein's 24 (4B) or 32 (9B).
        detected = comfy.model_detection.detect_unet_config(
            _meta_model(full_size_config("flux2_klein")).diffusion_model.state_dict(), "")
        if detected.get("num_heads") != 24:
            return f"this ComfyUI reads FLUX.2 klein 4B's file with {detected.get('num_heads')} heads, not 24"
    return None


def build(family: str, state_dict: dict[str, torch.Tensor] | None = None, device=None):
    """A ModelPatcher of the family's BaseModel: what comfy.sd.load_diffusion_model_state_dict returns."""
    config = model_config(family)
    config.set_inference_dtype(torch.float32, None)
    model = config.get_model({}, "", device=device)
    if state_dict is not None:
        model.load_model_weights(dict(state_dict), "")
    offload = comfy.model_management.unet_offload_device()
    return comfy.model_patcher.ModelPatcher(model, load_device=comfy.model_management.get_torch_device(),
                                            offload_device=offload)


@functools.cache
def state_dict(family: str, seed: int = 0, rl_seed: int | None = None) -> dict[str, torch.Tensor]:
    base = seeded_state_dict(build(family).model.diffusion_model, seed, STD[family], unit=norm_vectors)
    return perturbed(base, rl_seed) if rl_seed is not None else base


def load(family: str, seed: int = 0, rl_seed: int | None = None):
    """A freshly built model of its own module, as UNETLoader would give; rl_seed: a 'fine-tuned' copy."""
    return build(family, state_dict(family, seed, rl_seed))


AUDIO_FRAMES = 5  # LTX-2's audio latent frames (LTXVEmptyLatentAudio: batch, 8, frames, 16)


def latent(family: str, batch: int = 1, size: int = 8) -> torch.Tensor:
    """An empty latent as the family's Empty*Latent node makes it (5-D with FRAMES frames for video).

    FLUX.2, HunyuanVideo 1.5 and LTX-Video patchify by 1: their latents are size // 2 wide, so as few tokens.
    LTX-2's is a NestedTensor of its video and audio latents (LTXVConcatAVLatent).
    """
    if family in ("flux2", "flux2_klein"):
        return torch.zeros(batch, 128, size // 2, size // 2)
    if family == "hunyuan_video15":
        return torch.zeros(batch, 32, FRAMES, size // 2, size // 2)
    if family == "ltxv":
        return torch.zeros(batch, 128, FRAMES, size // 2, size // 2)
    if family == "ltxav":
        import comfy.nested_tensor

        return comfy.nested_tensor.NestedTensor((torch.zeros(batch, 128, FRAMES, size // 2, size // 2),
                                                 torch.zeros(batch, 8, AUDIO_FRAMES, 16)))
    if family in ("wan21", "wan22"):
        return torch.zeros(batch, 16, FRAMES, size, size)
    if family == "wan22_5b":
        return torch.zeros(batch, 48, FRAMES, size, size)
    if family == "qwen_image":  # its Wan latent space is 3-D: KSampler adds the frame axis to an empty image latent
        return torch.zeros(batch, 16, 1, size, size)
    return torch.zeros(batch, 4 if family == "sdxl" else 16, size, size)  # z_image: FLUX.1's latent space


def conds(family: str, batch: int = 1, seed: int = 0, size: int = 8):
    """(positive, negative) in CONDITIONING format, with what each family's extra_conds reads.

    flux: context, pooled_output (vector_in) and guidance (FluxGuidance's value, embedded by FLUX.1-dev);
    qwen_image: context and reference_latents (Qwen-Image-Edit's TextEncodeQwenImageEdit adds the image);
    wan22: context plus the image concat of WanFunInpaintToVideo (concat_latent_image, concat_mask);
    sdxl: context, pooled_output and the size / crop values of the ADM vector.
    """
    if family in NEXT_FAMILIES:
        return _next_conds(family, batch, seed)
    gen = torch.Generator().manual_seed(seed)
    ctx_dim = unet_config(family).get("joint_attention_dim") or unet_config(family).get("context_in_dim") or \
        unet_config(family).get("text_dim") or unet_config(family).get("context_dim")
    out = []
    for i in range(2):
        ctx = torch.randn(batch, 8, ctx_dim, generator=gen)
        extra = {}
        if family == "flux":
            extra = {"pooled_output": torch.randn(batch, 32, generator=gen), "guidance": 3.5 if i == 0 else 2.0}
        elif family == "qwen_image":
            extra = {"reference_latents": [torch.randn(1, 16, 1, size, size, generator=gen)]}
        elif family == "wan22":
            image = torch.randn(1, 16, FRAMES, size, size, generator=gen)
            mask = torch.ones(1, 1, FRAMES, size, size)
            mask[:, :, 0] = 0.0  # the first frame is given
            extra = {"concat_latent_image": image, "concat_mask": mask}
        elif family == "sdxl":
            extra = {"pooled_output": torch.randn(batch, SDXL_POOLED_DIM, generator=gen), "width": 8 * size,
                     "height": 8 * size, "crop_w": 0, "crop_h": 0, "target_width": 8 * size,
                     "target_height": 8 * size}
        out.append([[ctx, extra]])
    return out[0], out[1]


Z_IMAGE_TOKENS = 7  # a caption that NextDiT pads to its multiple of 32 with its learned cap_pad_token
BYT5_TOKENS, BYT5_DIM = 5, 1472  # ByT5-small glyph embeddings (DualCLIPLoader hunyuan_video_15)


def _context_dim(family: str) -> int:
    cfg = unet_config(family)
    if family == "ltxav":  # the text connectors' output: the video half and the audio half
        return 2 * cfg["caption_channels"]
    return cfg.get("cap_feat_dim") or cfg.get("context_in_dim") or cfg.get("caption_channels")


def _next_conds(family: str, batch: int, seed: int):
    """The next families' conditioning, as their text encoders and conditioning nodes give it.

    z_image: the Qwen3 caption, Z_IMAGE_TOKENS long (CLIPTextEncode's all-ones mask is dropped by extra_conds);
    flux2 / flux2_klein: the caption and FluxGuidance's value (dev embeds it, klein ignores it), and pooled_output
    (None, as CLIPTextEncode leaves it), a key Flux.encode_adm reads;
    hunyuan_video15: the caption, the ByT5 glyph embeddings (conditioning_byt5small) and pooled_output, a key
    HunyuanVideo.encode_adm reads (None, as CLIPTextEncode leaves it for this family);
    ltxv / ltxav: the caption with its T5 attention_mask (LTXVModel.forward takes it) and LTXVConditioning's
    frame_rate; LTX-2's caption as its text connectors return it.
    """
    gen = torch.Generator().manual_seed(seed)
    tokens = Z_IMAGE_TOKENS if family == "z_image" else 8
    out = []
    for i in range(2):
        ctx = torch.randn(batch, tokens, _context_dim(family), generator=gen)
        if family in ("flux2", "flux2_klein"):
            extra = {"pooled_output": None, "guidance": 4.0 if i == 0 else 2.5}
        elif family == "hunyuan_video15":
            extra = {"pooled_output": None,
                     "conditioning_byt5small": torch.randn(batch, BYT5_TOKENS, BYT5_DIM, generator=gen)}
        elif family in ("ltxv", "ltxav"):
            extra = {"attention_mask": torch.ones(batch, tokens, dtype=torch.long), "frame_rate": 24.0}
        else:
            extra = {}
        out.append([[ctx, extra]])
    return out[0], out[1]


def hunyuan_video15_image_conds(positive, negative, seed: int = 5, size: int = 8, vision_tokens: int = 9):
    """What HunyuanVideo15ImageToVideo and CLIPVisionEncode add for image to video: the start image's latent in
    the first frame with a mask that keeps it (both conds), and the SigLIP image embedding (the positive only)."""
    import comfy.clip_vision

    gen = torch.Generator().manual_seed(seed)
    image = torch.zeros(1, 32, FRAMES, size // 2, size // 2)
    image[:, :, :1] = torch.randn(1, 32, 1, size // 2, size // 2, generator=gen)
    mask = torch.ones(1, 1, FRAMES, size // 2, size // 2)
    mask[:, :, :1] = 0.0
    vision = comfy.clip_vision.Output()
    vision["last_hidden_state"] = torch.randn(1, vision_tokens, 1152, generator=gen)

    def with_image(cond, clip_vision):
        extra = dict(cond[0][1], concat_latent_image=image, concat_mask=mask)
        if clip_vision:
            extra["clip_vision_output"] = vision
        return [[cond[0][0], extra]]
    return with_image(positive, True), with_image(negative, False)


def image_to_video_latent(family: str, batch: int = 1, seed: int = 11, size: int = 8):
    """(latent, noise_mask) of image to video for LTX-Video (LTXVImgToVideo, strength 1) and Wan 2.2 TI2V-5B
    (Wan22ImageToVideoLatent): the image's latent in the first frame and a noise mask that keeps it. With the mask,
    both models give every token (LTX-Video) or frame (Wan) its own timestep."""
    gen = torch.Generator().manual_seed(seed)
    latent_image = latent(family, batch, size)
    latent_image[:, :, :1] = torch.randn(latent_image[:, :, :1].shape, generator=gen)
    mask = torch.ones(batch, 1, *latent_image.shape[2:])
    mask[:, :, :1] = 0.0
    return latent_image, mask


# -- LoRAs in each family's published format -------------------------------------------------------

# The layers the published RL LoRAs train, in diffusers names (PEFT target_modules): BoxFlow-GRPO's and ARR-RPO's
# attention and feed-forward layers (PEFT matches to_q, to_k, to_v in the single-stream blocks too), plus the
# single-stream MLP layers that all-linear LoRAs add (proj_mlp is a slice of linear1 as well).
FLUX_PEFT_TARGETS = ("attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0", "attn.add_q_proj", "attn.add_k_proj",
                     "attn.add_v_proj", "attn.to_add_out", "ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj",
                     "ff_context.net.2", "proj_mlp", "proj_out")
QWEN_PEFT_TARGETS = ("attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0", "attn.add_q_proj", "attn.add_k_proj",
                     "attn.add_v_proj", "attn.to_add_out", "img_mlp.net.0.proj", "img_mlp.net.2")


def diffusers_layers(model, family: str) -> dict[str, tuple[str, tuple | None]]:
    """{diffusers layer name: (ComfyUI weight key, dim-0 slice or None)} for the layers RL LoRAs train.

    FLUX: ComfyUI's own diffusers map (comfy.utils.flux_to_diffusers): q, k, v and the MLP input of a
    single-stream block are slices of its fused linear1, a double block's q, k, v slices of its qkv.
    Qwen-Image: ComfyUI's module names are the diffusers names.
    """
    out = {}
    if family == "flux":
        mapping = comfy.utils.flux_to_diffusers(model.model.model_config.unet_config, output_prefix="diffusion_model.")
        for name, target in mapping.items():
            if not name.endswith(".weight") or not name.startswith(("transformer_blocks", "single_transformer_blocks")):
                continue
            layer = name[: -len(".weight")]
            if not any(layer.endswith("." + t) for t in FLUX_PEFT_TARGETS):
                continue
            out[layer] = (target, None) if isinstance(target, str) else (target[0], target[1])
    elif family == "qwen_image":
        for key in model.model.state_dict():
            layer = key.removeprefix("diffusion_model.").removesuffix(".weight")
            if key.endswith(".weight") and layer.startswith("transformer_blocks") and \
                    any(layer.endswith("." + t) for t in QWEN_PEFT_TARGETS):
                out[layer] = (key, None)
    else:
        raise ValueError(family)
    return out


def peft_lora(model, family: str, seed: int, rank: int = 4, scale: float = 0.5,
              shapes: dict | None = None) -> dict[str, torch.Tensor]:
    """A LoRA as PEFT saves it (BoxFlow-GRPO, ARR-RPO): base_model.model.<diffusers layer>.lora_A / lora_B."""
    gen = torch.Generator().manual_seed(seed)
    sd = shapes if shapes is not None else model.model.state_dict()
    out = {}
    for layer, (key, offset) in sorted(diffusers_layers(model, family).items()):
        n_out, n_in = sd[key].shape
        if offset is not None:
            n_out = offset[2]
        prefix = "base_model.model." + layer
        out[prefix + ".lora_A.weight"] = torch.randn(rank, n_in, generator=gen) / n_in**0.5
        out[prefix + ".lora_B.weight"] = torch.randn(n_out, rank, generator=gen) * scale / rank**0.5
    return out


def module_lora(model, seed: int, fmt: str, rank: int = 4, scale: float = 0.5, alpha: float | None = None,
                match=lambda name: True) -> dict[str, torch.Tensor]:
    """A LoRA on every linear layer of the network whose ComfyUI module path passes `match`, with alpha.

    fmt "videox": VideoX-Fun's names (lora_unet__blocks_0_self_attn_q: its LoRANetwork prefixes the module
    path, which for Wan is ComfyUI's own, with 'lora_unet.' and the empty root name, then turns dots into
    underscores). fmt "kohya": lora_unet_<path with underscores>, as SDXL webui LoRAs have it.
    """
    gen = torch.Generator().manual_seed(seed)
    prefix = {"videox": "lora_unet__", "kohya": "lora_unet_"}[fmt]
    out = {}
    for name, module in sorted(model.model.diffusion_model.named_modules()):
        weight = getattr(module, "weight", None)
        if not isinstance(module, torch.nn.Linear) or weight is None or weight.ndim != 2 or not match(name):
            continue
        n_out, n_in = weight.shape
        base = prefix + name.replace(".", "_")
        std = float(weight.detach().float().std()) if weight.device.type != "meta" else 0.05
        out[base + ".lora_down.weight"] = torch.randn(rank, n_in, generator=gen)
        out[base + ".lora_up.weight"] = torch.randn(n_out, rank, generator=gen) * scale * std / rank
        out[base + ".alpha"] = torch.tensor(float(rank if alpha is None else alpha))
    return out


def lora_for(model, family: str, seed: int = 7) -> tuple[dict[str, torch.Tensor], dict | None]:
    """(LoRA state dict in the family's published format, PEFT adapter config or None)."""
    fmt = LORA_FORMAT[family]
    if fmt == "peft":
        return peft_lora(model, family, seed), {"r": 4, "lora_alpha": 8, "peft_type": "LORA"}
    if family == "sdxl":  # attention, projections and the pooled ADM embedding
        return module_lora(model, seed, "kohya", match=lambda n: "attn" in n or "proj" in n or "label_emb" in n), None
    return module_lora(model, seed, "videox", alpha=2.0), None  # rank 4, alpha 2: scale 1/2 (Wan-Fun: 128 / 64)


def load_lora(model, lora: dict[str, torch.Tensor], strength: float = 1.0):
    """The stock LoraLoaderModelOnly: comfy.sd.load_lora_for_models, a clone that shares the module."""
    patched, _ = comfy.sd.load_lora_for_models(model, None, dict(lora), strength, 0)
    assert len(patched.patches) > len(model.patches), "the LoRA matched no layer"
    return patched


# -- Full size, without weights (key names and detection) ------------------------------------------

def full_size_config(family: str) -> dict:
    """The unet config ComfyUI's detector gives the published base model's file."""
    if family == "flux":  # FLUX.1-dev
        return _flux_config() | {"vec_in_dim": 768, "context_in_dim": 4096, "hidden_size": 3072, "num_heads": 24,
                                 "depth": 19, "depth_single_blocks": 38, "axes_dim": [16, 56, 56]}
    if family == "qwen_image":  # Qwen-Image and Qwen-Image-Edit (the edit model adds reference latents only)
        return {"image_model": "qwen_image", "in_channels": 64, "num_layers": 60}
    if family == "wan22":  # each expert of Wan2.2-Fun-A14B-InP (and of Wan2.2 A14B, which has in_dim 16 or 36)
        cfg = _wan_config(in_dim=36, dim=5120, text_dim=4096)
        return cfg | {"num_heads": 40, "ffn_dim": 13824, "num_layers": 40, "freq_dim": 256}
    if family == "z_image":  # Z-Image (Turbo and Base): 6.2 B
        return unet_config("z_image") | {"dim": 3840, "cap_feat_dim": 2560, "n_layers": 30, "n_heads": 30,
                                         "n_kv_heads": 30, "n_refiner_layers": 2}
    if family == "flux2":  # FLUX.2 dev: 32 B, Mistral-Small-3.1 context (3 layers x 5120)
        return _flux2_config(True, 6144, 48, (32, 32, 32, 32)) | {"context_in_dim": 15360, "depth": 8,
                                                                   "depth_single_blocks": 48}
    if family == "flux2_klein":  # FLUX.2 klein 4B: Qwen3-4B context (3 layers x 2560), no guidance input
        return _flux2_config(False, 3072, 24, (32, 32, 32, 32)) | {"context_in_dim": 7680, "depth": 5,
                                                                    "depth_single_blocks": 20}
    if family == "hunyuan_video15":  # HunyuanVideo 1.5 (480p / 720p, t2v and i2v): 8.3 B, Qwen2.5-VL context
        return _hunyuan_video15_config(2048, 16, (16, 56, 56)) | {"context_in_dim": 3584, "depth": 54}
    if family == "ltxv":  # LTX-Video 0.9 2B
        return {"image_model": "ltxv", "num_layers": 28, "attention_head_dim": 64, "cross_attention_dim": 2048}
    if family == "ltxav":  # LTX-2 19B (ComfyUI 0.33 adds its two text connectors to the diffusion model)
        return {"image_model": "ltxav", "num_layers": 48, "attention_head_dim": 128, "cross_attention_dim": 4096}
    raise ValueError(family)


def _meta_model(unet_cfg: dict):
    config = comfy.model_detection.model_config_from_unet_config(unet_cfg)
    config.set_inference_dtype(torch.bfloat16, None)
    with torch.device("meta"):
        return config.get_model({}, "", device="meta")


def build_full_size(family: str, unet_cfg: dict | None = None):
    """The full-size model on the meta device (real key names and shapes, no memory, no compute), with the
    config the host's detector reads from those keys: what UNETLoader builds from the published file."""
    if unet_cfg is None:
        keys = _meta_model(full_size_config(family)).diffusion_model.state_dict()
        unet_cfg = comfy.model_detection.detect_unet_config(keys, "")
    cpu = torch.device("cpu")
    return comfy.model_patcher.ModelPatcher(_meta_model(unet_cfg), load_device=cpu, offload_device=cpu)


def to_diffusers_flux(model, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A FLUX transformer as diffusers saves it (SRPO's, MixGRPO's file), from a ComfyUI-format state dict.

    The inverse of ComfyUI's own map (comfy.utils.flux_to_diffusers): fused qkv / linear1 split into their
    slices, the final modulation's scale and shift swapped back.
    """
    out = {}
    for name, target in comfy.utils.flux_to_diffusers(model.model.model_config.unet_config).items():
        key = target if isinstance(target, str) else target[0]
        if key not in state_dict:
            continue
        weight = state_dict[key]
        if not isinstance(target, str):
            if target[1] is not None:
                weight = weight.narrow(*target[1])
            if len(target) > 2:
                weight = target[2](weight)  # swap_scale_shift is its own inverse
        out[name] = weight.clone()
    return out


# -- Wan by file -------------------------------------------------------------------------------------

def wan_file_state_dict(seed: int, in_dim: int = 36) -> dict[str, torch.Tensor]:
    """A Wan model that ComfyUI's detector reads back as itself: one 128-wide head, one block, 4096-wide text
    (the detector's fixed text width), 256 frequencies. in_dim 36 is Wan2.2-Fun-A14B-InP's."""
    cfg = _wan_config(in_dim=in_dim, dim=128, text_dim=4096)
    cfg["num_heads"], cfg["freq_dim"] = 1, 256
    config = comfy.model_detection.model_config_from_unet_config(cfg)
    config.set_inference_dtype(torch.float32, None)
    return seeded_state_dict(config.get_model({}, "").diffusion_model, seed, 0.05, unit=norm_vectors)


def wan_conds(batch: int = 1, seed: int = 0, context: int = 4096):
    """Conditioning for the by-file Wan stand-ins (4096-wide umT5 context)."""
    gen = torch.Generator().manual_seed(seed)
    return tuple([[torch.randn(batch, 8, context, generator=gen), {}]] for _ in range(2))


# -- The next families by file (the workflow tests' stand-ins) ------------------------------------------

FILE_FAMILIES = ("hunyuan_video15", "ltxv", "ltxav", "flux2")


def _file_config(family: str) -> tuple[dict, dict | None]:
    """(unet config, safetensors metadata) of the smallest file the host's detector reads back as the family."""
    if family == "hunyuan_video15":  # heads = hidden // 128; without byt5_in (its 7 M fixed parameters)
        return _hunyuan_video15_config(128, 1, (16, 56, 56), byt5=False), None
    if family == "flux2":  # ComfyUI 0.33 derives heads = hidden // 128; older hosts fix 48 (FLUX.2 dev's)
        return _flux2_config(True, 128, 1, (32, 32, 32, 32)), None
    if family == "ltxv":  # the detector takes the file's metadata config over its fixed 32 heads and T5 width
        transformer = {"num_attention_heads": 4, "attention_head_dim": 16, "caption_channels": 32}
        metadata = {"config": json.dumps({"transformer": transformer})}
        return LTXV_TINY | transformer | {"cross_attention_dim": 64}, metadata
    if family == "ltxav":
        transformer = {k: v for k, v in LTXAV_TINY.items() if k != "image_model"}
        return dict(LTXAV_TINY), {"config": json.dumps({"transformer": transformer})}
    raise ValueError(family)


def file_state_dict(family: str, seed: int) -> tuple[dict[str, torch.Tensor], dict[str, str] | None]:
    """(state dict, safetensors metadata to save with it) of a tiny file that UNETLoader detects as the family:
    save both with safetensors.torch.save_file(sd, path, metadata=metadata). See file_missing() for the hosts."""
    cfg, metadata = _file_config(family)
    config = comfy.model_detection.model_config_from_unet_config(cfg)
    config.set_inference_dtype(torch.float32, None)
    with torch.device("meta"):
        shapes = config.get_model({}, "", device="meta").diffusion_model
    return seeded_state_dict(shapes, seed, 0.05, unit=norm_vectors), metadata


@functools.cache
def file_missing(family: str) -> str | None:
    """Why UNETLoader on this host cannot load the family's tiny file, or None where it does."""
    if missing(family):
        return missing(family)
    cfg, metadata = _file_config(family)
    config = comfy.model_detection.model_config_from_unet_config(cfg)
    with torch.device("meta"):
        keys = config.get_model({}, "", device="meta").diffusion_model.state_dict()
    detected = comfy.model_detection.detect_unet_config(keys, "", metadata=metadata)
    differing = {k: (detected.get(k), v) for k, v in cfg.items() if k in ("num_heads", "attention_head_dim",
                                                                           "num_attention_heads", "hidden_size")
                 and detected.get(k, v) != v}
    if differing:
        return f"this ComfyUI's detector reads the tiny {family} file otherwise (read, written): {differing}"
    return None


def file_conds(family: str, batch: int = 1, seed: int = 0):
    """Conditioning for the tiny files of file_state_dict(): the in-process families' conds at the files' widths."""
    cfg, _ = _file_config(family)
    positive, negative = _next_conds(family, batch, seed)
    width = 2 * cfg["caption_channels"] if family == "ltxav" else cfg.get("caption_channels") or cfg["context_in_dim"]
    gen = torch.Generator().manual_seed(seed + 1)
    out = []
    for cond in (positive, negative):
        extra = dict(cond[0][1])
        if family == "hunyuan_video15" and not cfg["byt5"]:
            extra.pop("conditioning_byt5small", None)
        out.append([[torch.randn(*cond[0][0].shape[:2], width, generator=gen), extra]])
    return out[0], out[1]
