"""ComfyUI-RLG: Reinforcement Learning Guidance for ComfyUI.

Where things are:
  rlg_math.py      the blend base + w * (rl - base), the step window, input checks (pure torch)
  patch_diff.py    what the RL model adds to the base: weight patches, options (pure Python)
  model_pair.py    checks a (base, RL) pair and holds the RL model: separate, or base + LoRA
  rlg_sampling.py  the CALC_COND_BATCH wrapper: the per-step blend happens in its __call__
  apply.py         apply_rlg(), used by both nodes
  nodes_rlg.py     the RLG Apply and RLG Guider nodes
  peft_alpha.py    the alpha PEFT LoRAs keep in adapter_config.json (pure Python)
  nodes_lora.py    Load LoRA (PEFT aware)
"""

from comfy_api.latest import ComfyExtension, io
from typing_extensions import override

from .nodes_lora import RLGLoraLoaderModelOnly
from .nodes_rlg import NODES


class RLGExtension(ComfyExtension):
    @override
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [*NODES, RLGLoraLoaderModelOnly]


async def comfy_entrypoint() -> RLGExtension:
    return RLGExtension()
