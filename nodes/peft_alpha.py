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


def load_config(path: Path) -> dict:
    return json.loads(Path(path).read_text())
