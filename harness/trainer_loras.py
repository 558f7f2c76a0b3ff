"""LoRA files as the trainers of Z-Image, FLUX.2, HunyuanVideo 1.5 and LTX-Video write them.

A trainer names a layer by the module path of the model class it trained, with its own prefix and tensor names, and
keeps the alpha where it keeps it. Each naming here is written from that trainer's model class and save code, not
from ComfyUI's key map or the pack's tables, so the tests can hold the loaders to it:

  comfy      ComfyUI's module paths: BFL's FLUX.2 code, Lightricks' LTX code, ComfyUI's Z-Image and HunyuanVideo
  diffusers  diffusers' ZImageTransformer2DModel, Flux2Transformer2DModel, HunyuanVideo15Transformer3DModel,
             LTXVideoTransformer3DModel, LTX2VideoTransformer3DModel (0.37): q, k, v apart where ComfyUI fuses them
  original   Tencent's HunyuanVideo-1.5 code (and musubi-tuner's copy): a double block's q, k, v apart,
             img_mlp.fc1, img_mod.linear

FORMATS: what each trainer writes, per family. layers() lists a model's layers in a naming with the ComfyUI weight
(and rows of a fused weight) each one changes; trainer_lora() makes the file; expected_delta() is what it must add
to each ComfyUI weight at its trained strength.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Layer:
    path: str  # the module path in the trainer's naming
    key: str  # the ComfyUI weight it changes (diffusion_model....weight)
    rows: tuple[int, int] | None  # (start, length) in that weight, where ComfyUI fuses several layers
    swap: bool  # the layer keeps a final modulation as (scale, shift), ComfyUI as (shift, scale)
    shape: tuple[int, int]  # (out, in) of the layer


@dataclass(frozen=True)
class Format:
    naming: str  # comfy, diffusers or original
    prefix: str  # what the file puts before a layer's path
    tensors: str  # "A/B": .lora_A.weight / .lora_B.weight; "down/up": .lora_down.weight / .lora_up.weight
    alpha: str  # "config": adapter_config.json; "metadata": the file's lora_adapter_metadata; "keys": <layer>.alpha;
    # "none": nowhere (trained at alpha = rank)
    targets: str = "all"  # "all" linear layers (all-linear, the superset of the default targets), or a trainer's
    # default set (see _TARGETS)


PEFT = Format("diffusers", "base_model.model.", "A/B", "config")  # PEFT save_pretrained (Flow-Factory's RL)
DIFFUSERS = Format("diffusers", "transformer.", "A/B", "metadata")  # diffusers' save_lora_weights (dreambooth)
FORMATS: dict[str, dict[str, Format]] = {
    "z_image": {
        "ai-toolkit": Format("diffusers", "diffusion_model.", "A/B", "none"),  # trains diffusers' class
        "diffusers": DIFFUSERS, "peft": PEFT,
        "musubi": Format("diffusers", "lora_unet_", "down/up", "keys", "musubi"),
    },
    "flux2": {
        "ai-toolkit": Format("comfy", "diffusion_model.", "A/B", "none"),  # trains BFL's Flux2 class
        "musubi": Format("comfy", "lora_unet_", "down/up", "keys", "musubi"),
        "diffusers": DIFFUSERS, "peft": PEFT,
    },
    "hunyuan_video15": {
        "diffusers": DIFFUSERS, "peft": PEFT,
        "musubi": Format("original", "lora_unet_", "down/up", "keys", "musubi"),
        "comfy": Format("comfy", "diffusion_model.", "down/up", "keys"),  # ComfyUI-format (LoraSave, repacks)
    },
    "ltxv": {
        # LTX-Video-Trainer saves through LTXPipeline.save_lora_weights; default target_modules: the attentions
        "diffusers": Format("diffusers", "transformer.", "A/B", "metadata", "attention"),
        "peft": PEFT,
        "comfy": Format("comfy", "diffusion_model.", "down/up", "keys"),
    },
    "ltxav": {
        "ltx-trainer": Format("comfy", "diffusion_model.", "A/B", "none", "attention"),  # Lightricks' LTX-2 trainer
        "peft": PEFT, "diffusers": DIFFUSERS,
    },
}
FORMATS["flux2_klein"] = FORMATS["flux2"]

# Layer counts of diffusers 0.37's classes at the published sizes (their Linear modules, read on the meta device):
# what a diffusers-named all-linear LoRA of the full-size model holds.
DIFFUSERS_LINEARS = {"z_image": 276, "flux2": 203, "flux2_klein": 109, "hunyuan_video15": 784, "ltxv": 287,
                     "ltxav": 1370}


# -- ComfyUI's layers in each naming ------------------------------------------------------------------------

def _z_image_diffusers(module: str) -> list[tuple[str, int, bool]]:
    if match := re.fullmatch(r"((?:layers|noise_refiner|context_refiner)\.\d+)\.attention\.qkv", module):
        return [(f"{match[1]}.attention.to_{x}", i, False) for i, x in enumerate("qkv")]
    if match := re.fullmatch(r"((?:layers|noise_refiner|context_refiner)\.\d+)\.attention\.out", module):
        return [(f"{match[1]}.attention.to_out.0", -1, False)]
    if module == "x_embedder":  # one embedder per (patch, frame patch) size; Z-Image has 2-1
        return [("all_x_embedder.2-1", -1, False)]
    if module.startswith("final_layer."):
        return [("all_final_layer.2-1." + module[len("final_layer."):], -1, False)]
    return [(module, -1, False)]


_FLUX2_DOUBLE = {"img_attn.qkv": ("attn.to_q", "attn.to_k", "attn.to_v"),
                 "txt_attn.qkv": ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"),
                 "img_attn.proj": ("attn.to_out.0",), "txt_attn.proj": ("attn.to_add_out",),
                 "img_mlp.0": ("ff.linear_in",), "img_mlp.2": ("ff.linear_out",),
                 "txt_mlp.0": ("ff_context.linear_in",), "txt_mlp.2": ("ff_context.linear_out",)}
_FLUX2_TOP = {"img_in": "x_embedder", "txt_in": "context_embedder", "final_layer.linear": "proj_out",
              "time_in.in_layer": "time_guidance_embed.timestep_embedder.linear_1",
              "time_in.out_layer": "time_guidance_embed.timestep_embedder.linear_2",
              "guidance_in.in_layer": "time_guidance_embed.guidance_embedder.linear_1",
              "guidance_in.out_layer": "time_guidance_embed.guidance_embedder.linear_2",
              "double_stream_modulation_img.lin": "double_stream_modulation_img.linear",
              "double_stream_modulation_txt.lin": "double_stream_modulation_txt.linear",
              "single_stream_modulation.lin": "single_stream_modulation.linear"}


def _flux2_diffusers(module: str) -> list[tuple[str, int, bool]]:
    if match := re.fullmatch(r"double_blocks\.(\d+)\.(.+)", module):
        names = _FLUX2_DOUBLE[match[2]]
        return [(f"transformer_blocks.{match[1]}.{n}", i if len(names) == 3 else -1, False)
                for i, n in enumerate(names)]
    if match := re.fullmatch(r"single_blocks\.(\d+)\.linear([12])", module):
        return [(f"single_transformer_blocks.{match[1]}.attn.{'to_qkv_mlp_proj' if match[2] == '1' else 'to_out'}",
                 -1, False)]
    if module == "final_layer.adaLN_modulation.1":  # diffusers' AdaLayerNormContinuous: scale, then shift
        return [("norm_out.linear", -1, True)]
    return [(_FLUX2_TOP[module], -1, False)]


# Stated here again, not imported from nodes/peft_alpha.py: these tables say what the trainers write (diffusers'
# HunyuanVideo15Transformer3DModel names), so that the pack's own mapping of them is tested against an independent
# statement rather than against itself.
_HV15_DOUBLE = {"img_attn.qkv": ("attn.to_q", "attn.to_k", "attn.to_v"),
                "txt_attn.qkv": ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"),
                "img_attn.proj": ("attn.to_out.0",), "txt_attn.proj": ("attn.to_add_out",),
                "img_mlp.0": ("ff.net.0.proj",), "img_mlp.2": ("ff.net.2",),
                "txt_mlp.0": ("ff_context.net.0.proj",), "txt_mlp.2": ("ff_context.net.2",),
                "img_mod.lin": ("norm1.linear",), "txt_mod.lin": ("norm1_context.linear",)}
_HV15_REFINER = {"self_attn.qkv": ("attn.to_q", "attn.to_k", "attn.to_v"), "self_attn.proj": ("attn.to_out.0",),
                 "mlp.0": ("ff.net.0.proj",), "mlp.2": ("ff.net.2",), "adaLN_modulation.1": ("norm_out.linear",)}
_HV15_TOP = {"txt_in.input_embedder": "context_embedder.proj_in",
             "txt_in.t_embedder.in_layer": "context_embedder.time_text_embed.timestep_embedder.linear_1",
             "txt_in.t_embedder.out_layer": "context_embedder.time_text_embed.timestep_embedder.linear_2",
             "txt_in.c_embedder.in_layer": "context_embedder.time_text_embed.text_embedder.linear_1",
             "txt_in.c_embedder.out_layer": "context_embedder.time_text_embed.text_embedder.linear_2",
             "byt5_in.fc1": "context_embedder_2.linear_1", "byt5_in.fc2": "context_embedder_2.linear_2",
             "byt5_in.fc3": "context_embedder_2.linear_3", "vision_in.proj.1": "image_embedder.linear_1",
             "vision_in.proj.3": "image_embedder.linear_2", "time_in.in_layer": "time_embed.timestep_embedder.linear_1",
             "time_in.out_layer": "time_embed.timestep_embedder.linear_2", "final_layer.linear": "proj_out"}


def _hunyuan_video15_diffusers(module: str) -> list[tuple[str, int, bool]]:
    for pattern, table, block in ((r"double_blocks\.(\d+)\.(.+)", _HV15_DOUBLE, "transformer_blocks"),
                                  (r"txt_in\.individual_token_refiner\.blocks\.(\d+)\.(.+)", _HV15_REFINER,
                                   "context_embedder.token_refiner.refiner_blocks")):
        if match := re.fullmatch(pattern, module):
            names = table[match[2]]
            return [(f"{block}.{match[1]}.{n}", i if len(names) == 3 else -1, False) for i, n in enumerate(names)]
    if module == "final_layer.adaLN_modulation.1":  # AdaLayerNormContinuous, as FLUX's
        return [("norm_out.linear", -1, True)]
    return [(_HV15_TOP[module], -1, False)]


def _hunyuan_video15_original(module: str) -> list[tuple[str, int, bool]]:
    # Tencent's MMDoubleStreamBlock: img_attn_q / _k / _v, img_attn_proj, img_mlp (fc1, fc2), img_mod (linear)
    if match := re.fullmatch(r"(double_blocks\.\d+)\.(img|txt)_attn\.qkv", module):
        return [(f"{match[1]}.{match[2]}_attn_{x}", i, False) for i, x in enumerate("qkv")]
    renamed = module.replace("_attn.proj", "_attn_proj").replace("_mlp.0", "_mlp.fc1").replace("_mlp.2", "_mlp.fc2")
    return [(renamed.replace("_mod.lin", "_mod.linear"), -1, False)]


_LTX_DIFFUSERS = (("patchify_proj", "proj_in"), ("adaln_single.", "time_embed."),
                  ("audio_patchify_proj", "audio_proj_in"), ("audio_adaln_single.", "audio_time_embed."),
                  ("av_ca_video_scale_shift_adaln_single.", "av_cross_attn_video_scale_shift."),
                  ("av_ca_a2v_gate_adaln_single.", "av_cross_attn_video_a2v_gate."),
                  ("av_ca_audio_scale_shift_adaln_single.", "av_cross_attn_audio_scale_shift."),
                  ("av_ca_v2a_gate_adaln_single.", "av_cross_attn_audio_v2a_gate."))


def _ltx_diffusers(module: str) -> list[tuple[str, int, bool]]:
    for comfy, diffusers in _LTX_DIFFUSERS:
        if module == comfy or (comfy.endswith(".") and module.startswith(comfy)):
            return [(diffusers + module[len(comfy):], -1, False)]
    return [(module, -1, False)]


_NAMINGS = {("z_image", "diffusers"): _z_image_diffusers, ("flux2", "diffusers"): _flux2_diffusers,
            ("hunyuan_video15", "diffusers"): _hunyuan_video15_diffusers,
            ("hunyuan_video15", "original"): _hunyuan_video15_original,
            ("ltxv", "diffusers"): _ltx_diffusers, ("ltxav", "diffusers"): _ltx_diffusers}

# The modules each trainer's defaults target, by ComfyUI module path (the others: every linear layer).
_TARGETS = {
    # musubi-tuner: the transformer blocks' linears without modulation (Z-Image: no refiners either)
    ("z_image", "musubi"): r"layers\.\d+\.(attention|feed_forward)\..+",
    ("flux2", "musubi"): r"(double_blocks\.\d+\.(img|txt)_(attn|mlp)\..+|single_blocks\.\d+\.linear[12])",
    ("hunyuan_video15", "musubi"): r"double_blocks\.\d+\..+",
    # the LTX trainers' default target_modules to_k, to_q, to_v, to_out.0: every attention of the blocks
    ("ltxav", "attention"): r"transformer_blocks\.\d+\.\w*attn\w*\.to_(q|k|v|out\.0)",
    ("ltxv", "attention"): r"transformer_blocks\.\d+\.attn[12]\.to_(q|k|v|out\.0)",
}


def layers(model, family: str, naming: str, targets: str = "all") -> list[Layer]:
    """The model's linear layers in a naming, each with the ComfyUI weight (and rows) it changes."""
    base = "flux2" if family == "flux2_klein" else family
    rename = _NAMINGS.get((base, naming), lambda module: [(module, -1, False)])
    pattern = _TARGETS.get((base, targets)) if targets != "all" else None
    out = []
    for module, layer in model.model.diffusion_model.named_modules():
        weight = getattr(layer, "weight", None)
        if not isinstance(layer, torch.nn.Linear) or weight is None or weight.ndim != 2:
            continue
        if "embeddings_connector." in module:  # LTX-2's text connectors (ComfyUI 0.33): no trainer's transformer
            continue
        if pattern is not None and not re.fullmatch(pattern, module):
            continue
        n_out, n_in = weight.shape
        for path, part, swap in rename(module):
            rows = None if part < 0 else (part * n_out // 3, n_out // 3)
            out.append(Layer(path, f"diffusion_model.{module}.weight", rows, swap,
                             (rows[1] if rows else n_out, n_in)))
    return out


# -- The files ------------------------------------------------------------------------------------------------

SCALE = {"config": 2.0, "metadata": 2.0, "keys": 0.5, "none": 1.0}  # alpha / rank each format is trained at here


@dataclass
class TrainerLoRA:
    state_dict: dict[str, torch.Tensor]
    adapter_config: dict | None  # for adapter_config.json beside the file
    metadata: dict[str, str] | None  # the safetensors metadata to save with it
    layers: list[tuple[Layer, torch.Tensor, torch.Tensor, float]]  # (layer, up, down, scale) as trained

    @property
    def targets(self) -> list[Layer]:
        return [layer for layer, *_ in self.layers]


def trainer_lora(model, family: str, fmt: str, rank: int = 2, seed: int = 7, meta: bool = False) -> TrainerLoRA:
    """A LoRA as the trainer `fmt` saves one for the family, on every layer its format targets.

    meta: the factors on the meta device (full-size models: names and shapes only, no memory).
    """
    spec = FORMATS[family][fmt]
    gen = torch.Generator().manual_seed(seed)
    scale = SCALE[spec.alpha]
    alpha = scale * rank
    out, trained = {}, []
    for layer in layers(model, family, spec.naming, spec.targets):
        n_out, n_in = layer.shape
        if meta:
            down, up = torch.empty(rank, n_in, device="meta"), torch.empty(n_out, rank, device="meta")
        else:
            down = torch.randn(rank, n_in, generator=gen) / n_in**0.5
            up = torch.randn(n_out, rank, generator=gen) * 0.2 / rank**0.5
        name = spec.prefix + (layer.path.replace(".", "_") if spec.prefix.startswith("lora_") else layer.path)
        if spec.tensors == "A/B":
            out[f"{name}.lora_A.weight"], out[f"{name}.lora_B.weight"] = down, up
        else:
            out[f"{name}.lora_down.weight"], out[f"{name}.lora_up.weight"] = down, up
        if spec.alpha == "keys":
            out[f"{name}.alpha"] = torch.tensor(alpha)
        trained.append((layer, up, down, scale))
    config = {"r": rank, "lora_alpha": alpha, "peft_type": "LORA", "target_modules": ["all-linear"]}
    metadata = None
    if spec.alpha == "metadata":  # diffusers' pipeline save: the transformer's LoraConfig, keys prefixed
        metadata = {"format": "pt", "lora_adapter_metadata": json.dumps({f"transformer.{k}": v
                                                                         for k, v in config.items()})}
    return TrainerLoRA(out, config if spec.alpha == "config" else None, metadata, trained)


def expected_delta(lora: TrainerLoRA, shapes: dict[str, torch.Size]) -> dict[str, torch.Tensor]:
    """{ComfyUI weight key: what the LoRA adds to it at its trained strength}, written out from the layers."""
    out: dict[str, torch.Tensor] = {}
    for layer, up, down, scale in lora.layers:
        part = scale * (up @ down)
        if layer.swap:  # the trainer's (scale, shift) rows are ComfyUI's (shift, scale)
            first, second = part.chunk(2, dim=0)
            part = torch.cat((second, first))
        delta = out.setdefault(layer.key, torch.zeros(shapes[layer.key]))
        if layer.rows is None:
            delta += part
        else:
            delta[layer.rows[0]:layer.rows[0] + layer.rows[1]] += part
    return out
