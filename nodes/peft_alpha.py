"""PEFT-format LoRAs keep their alpha in adapter_config.json, not in the weights.

Plain Python and torch, no ComfyUI import. ComfyUI's LoRA loader scales a LoRA by alpha / rank
when the file has '<layer>.alpha' keys and by 1 otherwise. A PEFT LoRA (Flow-GRPO's: r 32,
lora_alpha 64) has no such keys, so the stock loader applies it at half its trained strength
without a word. This module finds the config and writes the alpha keys ComfyUI expects.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from pathlib import Path

import torch

_A_SUFFIXES = (".lora_A.weight", ".lora_A.default.weight")
PEFT_MODEL_PREFIX = "base_model.model."  # what PEFT puts before a wrapped model's layer names


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
        layer = prefix.removeprefix("base_model.model.").removeprefix("transformer.")
        alpha = _pattern_value(patterns, layer, default_alpha)
        scale = alpha / math.sqrt(rank) if rs else alpha / rank
        out[f"{prefix}.alpha"] = torch.tensor(scale * rank)
    return out


def peft_layer_renames(state_dict: Mapping[str, torch.Tensor], key_map: Mapping) -> dict[str, str]:
    """{PEFT layer prefix: the name ComfyUI's LoRA key map knows that layer by}, for layers it does not map.

    PEFT saves a layer of the wrapped transformer as base_model.model.<diffusers name>. ComfyUI's key map
    takes that prefix for SD3 and a few others, but for FLUX and Qwen-Image it knows the diffusers layer
    only as transformer.<name> (and Qwen-Image's also as <name>), so every key of a FLUX or Qwen-Image PEFT
    LoRA (BoxFlow-GRPO, ARR-RPO) would be left out. Only prefixes the key map lacks, and whose other name
    it has, are renamed: a LoRA that loads today loads the same.
    """
    renames = {}
    for prefix in lora_prefixes(state_dict):
        if prefix in key_map or not prefix.startswith(PEFT_MODEL_PREFIX):
            continue
        layer = prefix[len(PEFT_MODEL_PREFIX):]
        for candidate in (f"transformer.{layer}", layer):
            if candidate in key_map:
                renames[prefix] = candidate
                break
    return renames


def with_renamed_layers(state_dict: Mapping[str, torch.Tensor], renames: Mapping[str, str]) -> dict:
    """The state dict with each key under a renamed layer prefix (weights, alpha, ...) moved to its new name."""
    if not renames:
        return dict(state_dict)
    out = {}
    for key, value in state_dict.items():
        new_key = key
        cut = key.rfind(".")
        while cut > 0:  # the longest layer prefix of this key that is renamed
            if key[:cut] in renames:
                new_key = renames[key[:cut]] + key[cut:]
                break
            cut = key.rfind(".", 0, cut)
        out[new_key] = value
    return out


MAX_CONFIG_BYTES = 1 << 20  # a PEFT adapter_config.json is a few hundred bytes


class AdapterConfigError(ValueError):
    """An adapter_config.json that cannot be used; the message names the file."""


def load_config(path: Path, max_bytes: int = MAX_CONFIG_BYTES) -> dict:
    """The adapter config as a dict, read with a size limit (it is user-supplied JSON, nothing else)."""
    path = Path(path)
    size = path.stat().st_size
    if size > max_bytes:
        raise AdapterConfigError(f"{path.name} is {size} bytes; a PEFT adapter_config.json is a few hundred bytes, "
                                 f"so it is not one (limit {max_bytes} bytes)")
    try:
        config = json.loads(path.read_bytes()[:max_bytes])
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise AdapterConfigError(f"{path.name} is not valid JSON ({err})") from None
    if not isinstance(config, dict):
        raise AdapterConfigError(f"{path.name} holds a {type(config).__name__}, not a PEFT config object")
    alpha = config.get("lora_alpha")
    numeric = isinstance(alpha, int | float) and not isinstance(alpha, bool)
    if alpha is not None and (not numeric or not math.isfinite(alpha)):
        raise AdapterConfigError(f"{path.name}: lora_alpha is {alpha!r}, not a number")
    patterns = config.get("alpha_pattern") or {}
    if not isinstance(patterns, dict) or not all(isinstance(v, int | float) for v in patterns.values()):
        raise AdapterConfigError(f"{path.name}: alpha_pattern must map layer names to numbers")
    return config
