"""Load LoRA (PEFT aware): the stock LoRA loader, plus the alpha PEFT files keep elsewhere."""

from __future__ import annotations

import logging

import comfy.sd
import comfy.utils
import folder_paths
from comfy_api.latest import io

from .peft_alpha import alpha_keys, find_adapter_config, load_config, needs_alpha

log = logging.getLogger("ComfyUI-RLG")


def load_peft_aware(model, lora_path: str, strength: float):
    """ComfyUI's LoRA loading, with PEFT alphas from adapter_config.json when the file lacks them."""
    lora = comfy.utils.load_torch_file(lora_path, safe_load=True)
    if needs_alpha(lora):
        config_path = find_adapter_config(lora_path)
        if config_path is None:
            log.warning(
                "RLG: %s is a PEFT-format LoRA without alpha values and no adapter_config.json lies beside "
                "it, so it is applied at scale 1 (alpha = rank). Flow-GRPO LoRAs are trained at lora_alpha / r "
                "= 2: put their adapter_config.json next to the file (or name it <file>.json).", lora_path)
        else:
            config = load_config(config_path)
            lora = dict(lora) | alpha_keys(lora, config)
            log.info("RLG: %s: lora_alpha %s from %s applied", lora_path, config.get("lora_alpha"), config_path.name)
    model_lora, _ = comfy.sd.load_lora_for_models(model, None, lora, strength, 0)
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
        path = folder_paths.get_full_path_or_raise("loras", lora_name)
        return io.NodeOutput(load_peft_aware(model, path, strength_model))
