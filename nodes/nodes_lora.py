"""Load LoRA (PEFT aware): the stock LoRA loader, plus the alphas and layer names trainers keep outside ComfyUI's
conventions (nodes/peft_alpha.py)."""

from __future__ import annotations

import logging
from pathlib import Path

import comfy.lora
import comfy.lora_convert
import comfy.sd
import comfy.utils
import folder_paths
from comfy_api.latest import io

from .errors import RLGInputError
from .model_pair import describe_model
from .peft_alpha import (
    ADAPTER_METADATA_KEY,
    PEFT_MODEL_PREFIX,
    AdapterConfigError,
    alpha_keys,
    extra_key_map,
    family_layer_names,
    find_adapter_config,
    layer_names,
    load_config,
    lora_prefixes,
    needs_alpha,
)

log = logging.getLogger("ComfyUI-RLG")


def _with_alpha(lora: dict, metadata: dict | None, lora_path: str, label: str) -> dict:
    """The LoRA with the '<layer>.alpha' keys of its trained scale, where the file keeps that scale elsewhere:
    diffusers' config in the file's metadata, or PEFT's adapter_config.json beside it."""
    if not needs_alpha(lora):
        return lora
    text = (metadata or {}).get(ADAPTER_METADATA_KEY)
    config_path = None if text else find_adapter_config(lora_path)
    source = f"its metadata '{ADAPTER_METADATA_KEY}'" if text else config_path.name if config_path else None
    if source is None:
        if any(prefix.startswith(PEFT_MODEL_PREFIX) for prefix in lora_prefixes(lora)):
            log.warning(
                "RLG: %s is a PEFT-format LoRA without alpha values and no adapter_config.json lies beside "
                "it, so it is applied at scale 1 (alpha = rank). Flow-GRPO LoRAs are trained at lora_alpha / r "
                "= 2: put their adapter_config.json next to the file (or name it <file>.json).", lora_path)
        else:  # ai-toolkit and the LTX-2 trainer save this way, trained at alpha = rank by default
            log.info("RLG: %s has no alpha values and no adapter config: applied at scale 1 (alpha = rank), the "
                     "scale ai-toolkit and the LTX-2 trainer train at by default.", label)
        return lora
    try:
        config = load_config(config_path or Path(lora_path), text=text)
        lora = dict(lora) | alpha_keys(lora, config)
    except (AdapterConfigError, ValueError) as err:
        fix = ("The file carries a broken config: save the LoRA again, or load it with the stock loader and set "
               "its strength yourself." if text else "Put the adapter_config.json that came with the LoRA beside it.")
        raise RLGInputError(f"lora_name {label!r}: its PEFT config {source} cannot be used: {err}. {fix}") from None
    log.info("RLG: %s: lora_alpha %s from %s applied", label, config.get("lora_alpha"), source)
    return lora


def _key_map_additions(model, lora: dict) -> tuple[dict, dict]:
    """(ComfyUI's key map for the model, the entries RLG adds for this LoRA's layers that it does not name)."""
    key_map = comfy.lora.model_lora_keys_unet(model.model, {})
    base_model = model.model
    shapes = {k: tuple(v.shape) for k, v in base_model.state_dict().items()}
    classes = [cls.__name__ for cls in type(base_model).__mro__]
    return key_map, extra_key_map(layer_names(lora), key_map, family_layer_names(classes, shapes))


def _load_with_key_map(model, lora: dict, key_map: dict, strength: float):
    """comfy.sd.load_lora_for_models for the model alone, with a key map that names more layers."""
    loaded = comfy.lora.load_lora(lora, key_map)
    patched = model.clone()
    added = set(patched.add_patches(loaded, strength))
    for key in loaded:
        if key not in added:
            log.warning("NOT LOADED %s", key)
    return patched


def load_peft_aware(model, lora_path: str, strength: float, name: str | None = None):
    """ComfyUI's LoRA loading, plus what trainers keep outside ComfyUI's conventions (nodes/peft_alpha.py): the
    alpha in adapter_config.json or in the file's metadata, and layer names ComfyUI's key map lacks.

    Raises RLGInputError naming lora_name for a file that is not a readable LoRA, a broken adapter
    config, or a LoRA none of whose keys fit the model.
    """
    label = name or Path(lora_path).name
    try:
        lora, metadata = comfy.utils.load_torch_file(lora_path, safe_load=True, return_metadata=True)
    except Exception as err:  # noqa: BLE001  (safetensors, torch and OS errors alike: the file is unusable)
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise RLGInputError(f"lora_name {label!r} cannot be read as a LoRA ({reason}). The file is truncated or not "
                            "a LoRA file: download it again, or pick another file.") from None
    if not lora:
        raise RLGInputError(f"lora_name {label!r} holds no tensors; it is not a LoRA file.")
    return load_lora_tensors(model, lora, metadata, strength, lora_path, label)


def load_lora_tensors(model, lora: dict, metadata: dict | None, strength: float, lora_path: str, label: str):
    """load_peft_aware once the file is read: lora and metadata are its tensors and safetensors metadata;
    lora_path is where an adapter_config.json is looked for."""
    lora = _with_alpha(lora, metadata, lora_path, label)
    converted = comfy.lora_convert.convert_lora(dict(lora))
    key_map, extra = _key_map_additions(model, converted)
    if extra:
        known = len(layer_names(converted)) - len(extra)
        log.info("RLG: %s: ComfyUI's key map names %d of its layers; RLG mapped the other %d (%s...) onto this "
                 "model's layers", label, known, len(extra), next(iter(extra)))
        model_lora = _load_with_key_map(model, converted, key_map | extra, strength)
    else:
        model_lora, _ = comfy.sd.load_lora_for_models(model, None, lora, strength, 0)
    if not any(len(v) > len(model.patches.get(k, ())) for k, v in model_lora.patches.items()):
        raise RLGInputError(
            f"lora_name {label!r}: none of its {len(lora)} tensors fits {describe_model(model)}. It is a LoRA for "
            "another model family, or not a LoRA; pick the LoRA made for this base model.")
    return model_lora


class RLGLoraLoaderModelOnly(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="RLGLoraLoaderModelOnly",
            display_name="Load LoRA (PEFT aware)",
            category="loaders",
            description=(
                "LoraLoaderModelOnly that also reads a PEFT LoRA's adapter_config.json (lora_alpha, "
                "alpha_pattern, rsLoRA) or a diffusers LoRA's alpha in its metadata, so Flow-GRPO / DiffusionNFT "
                "LoRAs load at the strength they were trained at, and maps the PEFT, diffusers and musubi-tuner "
                "layer names ComfyUI does not (FLUX, Qwen-Image, Z-Image, FLUX.2, HunyuanVideo 1.5, LTX-Video). "
                "Other LoRAs load exactly as with the stock node."
            ),
            inputs=[
                io.Model.Input("model", tooltip="The model to apply the LoRA to (for RLG: the base model)."),
                io.Combo.Input("lora_name", options=folder_paths.get_filename_list("loras"),
                               tooltip="A LoRA in the loras folder. For a PEFT LoRA keep its adapter_config.json "
                                       "beside it (or save it as <file name>.json)."),
                io.Float.Input("strength_model", default=1.0, min=-100.0, max=100.0, step=0.01,
                               tooltip="1 = the strength the LoRA was trained at (alpha / rank from its config)."),
            ],
            outputs=[io.Model.Output(tooltip="The model with the LoRA; for RLG, connect it to rl_model.")],
        )

    @classmethod
    def execute(cls, model, lora_name, strength_model) -> io.NodeOutput:
        # ComfyUI before 0.8 does not check a V3 node's combo values itself: a name from the API that is not
        # in the list (a path out of the loras folder, say) reaches the node.
        if lora_name not in folder_paths.get_filename_list("loras"):
            raise RLGInputError(f"lora_name {lora_name!r} is not a LoRA in the loras folder; pick one from the list "
                                "(names are relative to the loras folder).")
        path = folder_paths.get_full_path_or_raise("loras", lora_name)
        return io.NodeOutput(load_peft_aware(model, path, strength_model, name=lora_name))
