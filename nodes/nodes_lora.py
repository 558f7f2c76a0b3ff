"""Load LoRA (PEFT aware): the stock LoRA loader, plus the alpha PEFT files keep elsewhere."""

from __future__ import annotations

import logging
from pathlib import Path

import comfy.lora
import comfy.sd
import comfy.utils
import folder_paths
from comfy_api.latest import io

from .errors import RLGInputError
from .model_pair import describe_model
from .peft_alpha import (
    PEFT_MODEL_PREFIX,
    AdapterConfigError,
    alpha_keys,
    find_adapter_config,
    load_config,
    lora_prefixes,
    needs_alpha,
    peft_layer_renames,
    with_renamed_layers,
)

log = logging.getLogger("ComfyUI-RLG")


def load_peft_aware(model, lora_path: str, strength: float, name: str | None = None):
    """ComfyUI's LoRA loading, with PEFT alphas from adapter_config.json when the file lacks them.

    Raises RLGInputError naming lora_name for a file that is not a readable LoRA, a broken adapter
    config, or a LoRA none of whose keys fit the model.
    """
    label = name or Path(lora_path).name
    try:
        lora = comfy.utils.load_torch_file(lora_path, safe_load=True)
    except Exception as err:  # noqa: BLE001  (safetensors, torch and OS errors alike: the file is unusable)
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise RLGInputError(f"lora_name {label!r} cannot be read as a LoRA ({reason}). The file is truncated or not "
                            "a LoRA file: download it again, or pick another file.") from None
    if not lora:
        raise RLGInputError(f"lora_name {label!r} holds no tensors; it is not a LoRA file.")
    if needs_alpha(lora):
        config_path = find_adapter_config(lora_path)
        if config_path is None:
            log.warning(
                "RLG: %s is a PEFT-format LoRA without alpha values and no adapter_config.json lies beside "
                "it, so it is applied at scale 1 (alpha = rank). Flow-GRPO LoRAs are trained at lora_alpha / r "
                "= 2: put their adapter_config.json next to the file (or name it <file>.json).", lora_path)
        else:
            try:
                config = load_config(config_path)
                lora = dict(lora) | alpha_keys(lora, config)
            except (AdapterConfigError, ValueError) as err:
                raise RLGInputError(f"lora_name {label!r}: its PEFT config {config_path.name} cannot be used: {err}. "
                                    "Put the adapter_config.json that came with the LoRA beside it.") from None
            log.info("RLG: %s: lora_alpha %s from %s applied", lora_path, config.get("lora_alpha"), config_path.name)
    if any(prefix.startswith(PEFT_MODEL_PREFIX) for prefix in lora_prefixes(lora)):
        renames = peft_layer_renames(lora, comfy.lora.model_lora_keys_unet(model.model, {}))
        if renames:
            lora = with_renamed_layers(lora, renames)
            log.info("RLG: %s: %d PEFT layers (%s...) mapped to ComfyUI's names for this model", label, len(renames),
                     next(iter(renames)))
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
                "alpha_pattern, rsLoRA), so Flow-GRPO / DiffusionNFT LoRAs load at the strength they were "
                "trained at. Other LoRAs load exactly as with the stock node."
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
