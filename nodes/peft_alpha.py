"""What trainers keep outside ComfyUI's LoRA conventions: alphas elsewhere, layer names it does not map.

Plain Python and torch, no ComfyUI import.

Alpha. ComfyUI's LoRA loader scales a LoRA by alpha / rank when the file has '<layer>.alpha' keys and by 1
otherwise. A PEFT LoRA (Flow-GRPO's: r 32, lora_alpha 64) has no such keys, so the stock loader applies it at
half its trained strength without a word. PEFT keeps the alpha in adapter_config.json beside the file; diffusers'
save_lora_weights keeps the same config inside the file, as the safetensors metadata 'lora_adapter_metadata'.
This module finds either and writes the alpha keys ComfyUI expects.

Layer names. Trainers name a layer by the module path of the model class they trained: PEFT puts
base_model.model. before it, diffusers transformer., ai-toolkit and the LTX-2 trainer diffusion_model., kohya-style
trainers write lora_unet_<path with underscores>. ComfyUI's key map (comfy.lora.model_lora_keys_unet) knows some
of these per family and host version and drops the rest. extra_key_map() names, for the layers it drops, the
weight (and the rows of a fused weight) they belong to, from ComfyUI's own key map and, for the families whose
diffusers names ComfyUI does not map (HunyuanVideo 1.5, FLUX.2's newer layers, LTX-Video's renamed embedders), the
tables in family_layer_names(). Layers ComfyUI maps are never touched: a LoRA that loads today loads the same.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import torch

_A_SUFFIXES = (".lora_A.weight", ".lora_A.default.weight")
PEFT_MODEL_PREFIX = "base_model.model."  # what PEFT puts before a wrapped model's layer names
ADAPTER_METADATA_KEY = "lora_adapter_metadata"  # diffusers' safetensors metadata entry with the PEFT config


def lora_prefixes(state_dict: Mapping[str, torch.Tensor]) -> dict[str, str]:
    """{layer prefix: its lora_A key} for the PEFT/diffusers-named layers of a LoRA."""
    out = {}
    for key in state_dict:
        for suffix in _A_SUFFIXES:
            if key.endswith(suffix):
                out[key[: -len(suffix)]] = key
    return out


def needs_alpha(state_dict: Mapping[str, torch.Tensor]) -> bool:
    """A PEFT-named LoRA whose layers carry no alpha: the stock loader would use scale 1."""
    prefixes = lora_prefixes(state_dict)
    return bool(prefixes) and not any(f"{p}.alpha" in state_dict for p in prefixes)


def find_adapter_config(lora_path: str | Path) -> Path | None:
    """The PEFT config that belongs to a LoRA file, looked for beside it.

    PEFT saves adapter_model.safetensors with adapter_config.json in one folder; a renamed file
    can bring its config as '<name>.json' or '<name>.adapter_config.json'.
    """
    path = Path(lora_path)
    for candidate in (path.with_name(f"{path.stem}.adapter_config.json"), path.with_name(f"{path.stem}.json"),
                      path.with_name("adapter_config.json")):
        if candidate.is_file():
            return candidate
    return None


def _pattern_value(patterns: Mapping[str, float], layer: str, default: float) -> float:
    # PEFT matches a pattern key against the end of a module's name, or as a regex.
    for pattern, value in patterns.items():
        if layer == pattern or layer.endswith("." + pattern) or re.fullmatch(rf"(.*\.)?{pattern}", layer):
            return float(value)
    return float(default)


def alpha_keys(state_dict: Mapping[str, torch.Tensor], config: Mapping) -> dict[str, torch.Tensor]:
    """The '<layer>.alpha' entries that make ComfyUI apply the LoRA at its trained scale.

    ComfyUI scales by alpha / rank; PEFT by lora_alpha / r, or lora_alpha / sqrt(r) with rsLoRA.
    """
    if "lora_alpha" not in config:
        raise ValueError("the adapter config has no lora_alpha")
    default_alpha = float(config["lora_alpha"])
    patterns = config.get("alpha_pattern") or {}
    rs = bool(config.get("use_rslora", False))
    out = {}
    for prefix, a_key in lora_prefixes(state_dict).items():
        rank = state_dict[a_key].shape[0]
        layer = prefix
        for wrapper in (PEFT_MODEL_PREFIX, "transformer.", "diffusion_model."):
            layer = layer.removeprefix(wrapper)
        alpha = _pattern_value(patterns, layer, default_alpha)
        scale = alpha / math.sqrt(rank) if rs else alpha / rank
        out[f"{prefix}.alpha"] = torch.tensor(scale * rank)
    return out


MAX_CONFIG_BYTES = 1 << 20  # a PEFT adapter_config.json is a few hundred bytes


class AdapterConfigError(ValueError):
    """An adapter config that cannot be used; the message names where it came from."""


def load_config(path: Path | str, max_bytes: int = MAX_CONFIG_BYTES, text: str | None = None) -> dict:
    """The adapter config as a dict, read with a size limit (it is user-supplied JSON, nothing else).

    path: the adapter_config.json file; or, with `text` (a config that came inside the LoRA file's metadata),
    only the name the messages give it.
    """
    path = Path(path)
    if text is None:
        size = path.stat().st_size
        if size > max_bytes:
            raise AdapterConfigError(f"{path.name} is {size} bytes; a PEFT adapter_config.json is a few hundred "
                                     f"bytes, so it is not one (limit {max_bytes} bytes)")
        raw = path.read_bytes()
    else:
        raw = text.encode("utf-8", "replace")
        if len(raw) > max_bytes:
            raise AdapterConfigError(f"{path.name} is {len(raw)} bytes, more than a LoRA config takes "
                                     f"(limit {max_bytes} bytes)")
    try:
        config = json.loads(raw[:max_bytes])
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise AdapterConfigError(f"{path.name} is not valid JSON ({err})") from None
    if not isinstance(config, dict):
        raise AdapterConfigError(f"{path.name} holds a {type(config).__name__}, not a PEFT config object")
    if text is not None:
        config = _transformer_part(config)
    alpha = config.get("lora_alpha")
    numeric = isinstance(alpha, int | float) and not isinstance(alpha, bool)
    if alpha is not None and (not numeric or not math.isfinite(alpha)):
        raise AdapterConfigError(f"{path.name}: lora_alpha is {alpha!r}, not a number")
    patterns = config.get("alpha_pattern") or {}
    if not isinstance(patterns, dict) or not all(isinstance(v, int | float) for v in patterns.values()):
        raise AdapterConfigError(f"{path.name}: alpha_pattern must map layer names to numbers")
    return config


def _transformer_part(config: dict) -> dict:
    """A pipeline's save_lora_weights keys each component's config by its name (transformer.lora_alpha, ...);
    a model's save_lora_adapter writes the config itself. The denoiser's part either way."""
    for component in ("transformer.", "unet."):
        part = {k[len(component):]: v for k, v in config.items() if k.startswith(component)}
        if part:
            return part
    return config


# -- Layer names ComfyUI's key map does not know ------------------------------------------------------

# A key map value, as comfy.lora.model_lora_keys_unet makes them: a weight key, or (weight key, (dim, start,
# length) of a fused weight or None[, a function applied to the LoRA's difference]).
Target = str | tuple

# What trainers put before a layer's module path, most specific first; "" is a bare path (diffusers'
# save_lora_adapter, DiffSynth).
WRAPPER_PREFIXES = (PEFT_MODEL_PREFIX, "model.diffusion_model.", "diffusion_model.", "transformer.", "unet.", "")
# kohya-style names: a prefix, then the module path with its dots turned into underscores.
UNDERSCORE_PREFIXES = ("lora_unet_", "lora_transformer_", "lycoris_")

# The tensor names a LoRA (or LyCORIS) file gives one layer, after the layer's own name.
_LAYER_SUFFIXES = (
    ".lora_A.weight", ".lora_B.weight", ".lora_A.default.weight", ".lora_B.default.weight", ".lora_A", ".lora_B",
    ".lora_down.weight", ".lora_up.weight", ".lora_mid.weight", ".lora.down.weight", ".lora.up.weight",
    "_lora.down.weight", "_lora.up.weight", ".lora_linear_layer.down.weight", ".lora_linear_layer.up.weight",
    ".alpha", ".dora_scale", ".diff", ".diff_b", ".hada_w1_a", ".hada_w1_b", ".hada_w2_a", ".hada_w2_b",
    ".hada_t1", ".hada_t2", ".lokr_w1", ".lokr_w2", ".lokr_w1_a", ".lokr_w1_b", ".lokr_w2_a", ".lokr_w2_b", ".lokr_t2",
)


def layer_names(state_dict: Iterable[str]) -> set[str]:
    """The layer names of a LoRA file: each key without its LoRA tensor suffix."""
    out = set()
    for key in state_dict:
        for suffix in _LAYER_SUFFIXES:
            if key.endswith(suffix):
                out.add(key[: -len(suffix)])
                break
    return out


_AMBIGUOUS = object()


def _underscore_index(key_map: Mapping[str, Target], family_names: Mapping[str, Target]) -> dict[str, object]:
    """{module path with underscores: target} for kohya-style names of layers ComfyUI knows by a dotted path.

    ComfyUI writes lora_unet_ names only for its own module paths; a trainer that names the layers of the
    family's original or diffusers code that way (musubi-tuner: Z-Image's attention_to_q, HunyuanVideo's
    img_mlp_fc1, img_attn_q) is left out. Two paths that underscore alike but mean different weights are never
    guessed between.
    """
    index: dict[str, object] = {}
    paths = [(k[len("diffusion_model."):], v) for k, v in key_map.items() if k.startswith("diffusion_model.")]
    for path, target in [*paths, *family_names.items()]:
        flat = path.replace(".", "_")
        if flat in index and index[flat] is not _AMBIGUOUS and index[flat] != target:
            index[flat] = _AMBIGUOUS
        else:
            index.setdefault(flat, target)
    return index


def _resolve(name: str, key_map: Mapping[str, Target], family_names: Mapping[str, Target],
             underscore: Mapping[str, object]) -> Target | None:
    for prefix in UNDERSCORE_PREFIXES:
        if name.startswith(prefix):
            target = underscore.get(name[len(prefix):])
            return None if target is _AMBIGUOUS else target
    for wrapper in WRAPPER_PREFIXES:
        if not name.startswith(wrapper):
            continue
        path = name[len(wrapper):]
        # ComfyUI's key map knows diffusers layers as transformer.<path> (FLUX, Qwen-Image, Z-Image from 0.8),
        # some as <path> (0.33's DiffSynth names, LTX-Video), its own and Lumina2's under diffusion_model.
        for candidate in (f"transformer.{path}", path, f"diffusion_model.{path}"):
            if candidate in key_map:
                return key_map[candidate]
        return family_names.get(path)
    return None


def extra_key_map(names: Iterable[str], key_map: Mapping[str, Target],
                  family_names: Mapping[str, Target] | None = None) -> dict[str, Target]:
    """{LoRA layer name: key-map target} for the layers of a LoRA that ComfyUI's key map does not name.

    names: the LoRA's layer names (layer_names()); key_map: ComfyUI's, for the model; family_names: the family's
    own table (family_layer_names()). Names the key map has are left to it.
    """
    family_names = family_names or {}
    underscore = _underscore_index(key_map, family_names)
    out = {}
    for name in sorted(names):
        if name in key_map:
            continue
        target = _resolve(name, key_map, family_names, underscore)
        if target is not None:
            out[name] = target
    return out


def swap_scale_shift(weight: torch.Tensor) -> torch.Tensor:
    """Diffusers keeps a final modulation's rows as (scale, shift), the original code as (shift, scale)."""
    shift, scale = weight.chunk(2, dim=0)
    return torch.cat((scale, shift), dim=0)


def _linear_layers(shapes: Mapping[str, tuple]):
    """(key, shape, module name) of each linear weight of the model's key map: `diffusion_model.<module>.weight`."""
    for key, shape in shapes.items():
        if key.endswith(".weight") and len(shape) == 2:
            yield key, shape, key[len("diffusion_model."):-len(".weight")]


def _fused(key: str, shape: tuple, index: int, parts: int = 3) -> tuple:
    rows = shape[0] // parts
    return (key, (0, index * rows, rows))


_HV15_BLOCK = {  # HunyuanVideo 1.5, per double block: ComfyUI's module -> diffusers' modules (q, k, v: its rows)
    "img_attn.qkv": ("attn.to_q", "attn.to_k", "attn.to_v"),
    "txt_attn.qkv": ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"),
    "img_attn.proj": ("attn.to_out.0",), "txt_attn.proj": ("attn.to_add_out",),
    "img_mlp.0": ("ff.net.0.proj",), "img_mlp.2": ("ff.net.2",),
    "txt_mlp.0": ("ff_context.net.0.proj",), "txt_mlp.2": ("ff_context.net.2",),
    "img_mod.lin": ("norm1.linear",), "txt_mod.lin": ("norm1_context.linear",),
}
_HV15_REFINER = {
    "self_attn.qkv": ("attn.to_q", "attn.to_k", "attn.to_v"), "self_attn.proj": ("attn.to_out.0",),
    "mlp.0": ("ff.net.0.proj",), "mlp.2": ("ff.net.2",), "adaLN_modulation.1": ("norm_out.linear",),
}
_HV15_TOP = {
    "txt_in.input_embedder": "context_embedder.proj_in",
    "txt_in.t_embedder.in_layer": "context_embedder.time_text_embed.timestep_embedder.linear_1",
    "txt_in.t_embedder.out_layer": "context_embedder.time_text_embed.timestep_embedder.linear_2",
    "txt_in.c_embedder.in_layer": "context_embedder.time_text_embed.text_embedder.linear_1",
    "txt_in.c_embedder.out_layer": "context_embedder.time_text_embed.text_embedder.linear_2",
    "byt5_in.fc1": "context_embedder_2.linear_1", "byt5_in.fc2": "context_embedder_2.linear_2",
    "byt5_in.fc3": "context_embedder_2.linear_3", "vision_in.proj.1": "image_embedder.linear_1",
    "vision_in.proj.3": "image_embedder.linear_2", "time_in.in_layer": "time_embed.timestep_embedder.linear_1",
    "time_in.out_layer": "time_embed.timestep_embedder.linear_2", "final_layer.linear": "proj_out",
}


def _hunyuan_video15_names(shapes: Mapping[str, tuple]) -> dict[str, Target]:
    """diffusers' HunyuanVideo15Transformer3DModel names, and the separate q, k, v of the original code
    (double_blocks.N.img_attn_q: Tencent's HunyuanVideo-1.5 and musubi-tuner), onto ComfyUI's fused layers."""
    out: dict[str, Target] = {}
    for key, shape, module in _linear_layers(shapes):
        if match := re.fullmatch(r"double_blocks\.(\d+)\.(.+)", module):
            index, part = match.groups()
            names = _HV15_BLOCK.get(part, ())
            for i, name in enumerate(names):
                out[f"transformer_blocks.{index}.{name}"] = _fused(key, shape, i) if len(names) == 3 else key
            if part.endswith("attn.qkv"):
                for i, qkv in enumerate("qkv"):
                    out[f"double_blocks.{index}.{part[:3]}_attn_{qkv}"] = _fused(key, shape, i)
        elif match := re.fullmatch(r"txt_in\.individual_token_refiner\.blocks\.(\d+)\.(.+)", module):
            index, part = match.groups()
            names = _HV15_REFINER.get(part, ())
            for i, name in enumerate(names):
                out[f"context_embedder.token_refiner.refiner_blocks.{index}.{name}"] = \
                    _fused(key, shape, i) if len(names) == 3 else key
        elif module in _HV15_TOP:
            out[_HV15_TOP[module]] = key
        elif module == "final_layer.adaLN_modulation.1":
            out["norm_out.linear"] = (key, None, swap_scale_shift)
    return out


_FLUX2_BLOCK = {  # FLUX.2 layers whose diffusers names ComfyUI before 0.33 does not map (FLUX.1 has no twin)
    "img_mlp.0": "ff.linear_in", "img_mlp.2": "ff.linear_out",
    "txt_mlp.0": "ff_context.linear_in", "txt_mlp.2": "ff_context.linear_out",
}
_FLUX2_TOP = {
    "double_stream_modulation_img.lin": "double_stream_modulation_img.linear",
    "double_stream_modulation_txt.lin": "double_stream_modulation_txt.linear",
    "single_stream_modulation.lin": "single_stream_modulation.linear",
    "time_in.in_layer": "time_guidance_embed.timestep_embedder.linear_1",
    "time_in.out_layer": "time_guidance_embed.timestep_embedder.linear_2",
    "guidance_in.in_layer": "time_guidance_embed.guidance_embedder.linear_1",
    "guidance_in.out_layer": "time_guidance_embed.guidance_embedder.linear_2",
}


def _flux2_names(shapes: Mapping[str, tuple]) -> dict[str, Target]:
    """diffusers' Flux2Transformer2DModel names that ComfyUI's FLUX.1 map lacks. A single block's
    to_qkv_mlp_proj is the whole of its linear1 (3 x hidden of q, k, v and 2 x 3 x hidden of the gated MLP)."""
    out: dict[str, Target] = {}
    for key, _shape, module in _linear_layers(shapes):
        if match := re.fullmatch(r"double_blocks\.(\d+)\.(.+)", module):
            index, part = match.groups()
            if part in _FLUX2_BLOCK:
                out[f"transformer_blocks.{index}.{_FLUX2_BLOCK[part]}"] = key
        elif match := re.fullmatch(r"single_blocks\.(\d+)\.linear([12])", module):
            index, which = match.groups()
            out[f"single_transformer_blocks.{index}.attn.{'to_qkv_mlp_proj' if which == '1' else 'to_out'}"] = key
        elif module in _FLUX2_TOP:
            out[_FLUX2_TOP[module]] = key
    return out


_LTX_RENAMES = (  # LTX-Video / LTX-2: diffusers' name -> ComfyUI's (the original code's) for the embedders
    ("proj_in", "patchify_proj"), ("time_embed.", "adaln_single."),
    ("audio_proj_in", "audio_patchify_proj"), ("audio_time_embed.", "audio_adaln_single."),
    ("av_cross_attn_video_scale_shift.", "av_ca_video_scale_shift_adaln_single."),
    ("av_cross_attn_video_a2v_gate.", "av_ca_a2v_gate_adaln_single."),
    ("av_cross_attn_audio_scale_shift.", "av_ca_audio_scale_shift_adaln_single."),
    ("av_cross_attn_audio_v2a_gate.", "av_ca_v2a_gate_adaln_single."),
)


def _ltx_names(shapes: Mapping[str, tuple]) -> dict[str, Target]:
    """diffusers' LTXVideoTransformer3DModel / LTX2VideoTransformer3DModel names of the embedders that ComfyUI
    (and Lightricks' own code) names otherwise; every other layer has the same name in both."""
    out: dict[str, Target] = {}
    for key, _shape, module in _linear_layers(shapes):
        for diffusers, comfy in _LTX_RENAMES:
            if module == comfy or (comfy.endswith(".") and module.startswith(comfy)):
                out[diffusers + module[len(comfy):]] = key
    return out


_FAMILY_TABLES: dict[str, Callable[[Mapping[str, tuple]], dict[str, Target]]] = {
    "HunyuanVideo15": _hunyuan_video15_names, "Flux2": _flux2_names, "LTXV": _ltx_names, "LTXAV": _ltx_names,
}


def family_layer_names(model_classes: Iterable[str], shapes: Mapping[str, tuple]) -> dict[str, Target]:
    """{layer path a trainer writes: target} for a model family whose names ComfyUI's key map lacks.

    model_classes: the names of the model's ComfyUI BaseModel class and its bases (most derived first);
    shapes: its state dict's shapes, keys under diffusion_model.
    """
    for name in model_classes:
        if name in _FAMILY_TABLES:
            return _FAMILY_TABLES[name](shapes)
    return {}
