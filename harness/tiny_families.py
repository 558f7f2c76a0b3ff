"""Tiny instances of ComfyUI's own model classes for the families that RL fine-tunes exist for.

FLUX.1-dev (guidance embedding, fused single-stream linears), Qwen-Image-Edit (reference latents),
Wan 2.1, Wan 2.2 (the A14B experts as Wan2.2-Fun-A14B-InP has them: image concat channels; and
TI2V-5B, ComfyUI's WAN22 class with its 48-channel latent) and SDXL (the pooled ADM vector).

ComfyUI's detector fixes most sizes of these families (FLUX's 24 heads of 128, Qwen-Image's 3072-wide
blocks, SDXL's whole layout), so a file small enough for CI would not be detected. Each model here is
what detection would build, with the sizes made small: the host's own supported_models config class
picked the way model_config_from_unet_config picks it (for SDXL, whose config matching needs its full
layout, the SDXL class itself), its BaseModel subclass, its network class from comfy.ldm, seeded random
weights, and a ModelPatcher as the stock loader returns. Only the sizes are ours.

Wan's detector derives everything but its 128-wide heads from the weights, so a Wan model of one
128-wide head loads by file through UNETLoader: wan_file_state_dict() makes one (the workflow tests'
stand-in files).
"""

from __future__ import annotations

import dataclasses
import functools

import comfy.model_detection
import comfy.model_management
import comfy.model_patcher
import comfy.sd
import comfy.supported_models
import comfy.utils
import torch

from .weights import norm_vectors, perturbed, seeded_state_dict

FAMILIES = ("flux", "qwen_image", "wan21", "wan22", "wan22_5b", "sdxl")
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
    config = comfy.model_detection.model_config_from_unet_config(cfg)
    assert config is not None, f"no ComfyUI model class for {family}"
    return config


EXPECTED_CLASS = {"flux": "Flux", "qwen_image": "QwenImage", "wan21": "WAN21_T2V", "wan22": "WAN21_T2V",
                  "wan22_5b": "WAN22_T2V", "sdxl": "SDXL"}


STD = {"flux": 0.08, "qwen_image": 0.08, "wan21": 0.08, "wan22": 0.08, "wan22_5b": 0.08, "sdxl": 0.05}


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


def latent(family: str, batch: int = 1, size: int = 8) -> torch.Tensor:
    """An empty latent as the family's Empty*Latent node makes it (5-D with FRAMES frames for video)."""
    if family in ("wan21", "wan22"):
        return torch.zeros(batch, 16, FRAMES, size, size)
    if family == "wan22_5b":
        return torch.zeros(batch, 48, FRAMES, size, size)
    if family == "qwen_image":  # its Wan latent space is 3-D: KSampler adds the frame axis to an empty image latent
        return torch.zeros(batch, 16, 1, size, size)
    return torch.zeros(batch, 4 if family == "sdxl" else 16, size, size)


def conds(family: str, batch: int = 1, seed: int = 0, size: int = 8):
    """(positive, negative) in CONDITIONING format, with what each family's extra_conds reads.

    flux: context, pooled_output (vector_in) and guidance (FluxGuidance's value, embedded by FLUX.1-dev);
    qwen_image: context and reference_latents (Qwen-Image-Edit's TextEncodeQwenImageEdit adds the image);
    wan22: context plus the image concat of WanFunInpaintToVideo (concat_latent_image, concat_mask);
    sdxl: context, pooled_output and the size / crop values of the ADM vector.
    """
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
