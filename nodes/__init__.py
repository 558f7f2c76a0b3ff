"""ComfyUI-RLG: Reinforcement Learning Guidance for ComfyUI.

Where things are:
  rlg_math.py      the blend base + sum w_i (rl_i - base), windows, ramps, CFG per branch (pure torch)
  patch_diff.py    what the RL model adds to the base: weight patches, options (pure Python)
  model_pair.py    checks a (base, RL) pair and holds the RL model: separate, or base + LoRA
  rlg_sampling.py  the CALC_COND_BATCH wrapper: the per-step blend happens in its __call__
  rl_delta.py      a LoRA RL model's part, layer by layer, run for one forward (hooks, weight functions)
  apply.py         apply_rlg() and apply_rlg_terms(), what the nodes call
  nodes_rlg.py     the RLG Apply and RLG Guider nodes, and the inputs all RLG nodes share
  nodes_multi.py   several RL models: RLG RL Model, RLG Apply / Guider (several RL models)
  nodes_sweep.py   RLG Scale Sweep (a scale per batch row) and RLG Sweep Grid; sweep_grid.py draws the grid
  peft_alpha.py    the alpha PEFT LoRAs keep in adapter_config.json (pure Python)
  nodes_lora.py    Load LoRA (PEFT aware)
"""

from comfy_api.latest import ComfyExtension, io
from typing_extensions import override

from .nodes_lora import RLGLoraLoaderModelOnly
from .nodes_multi import NODES as MULTI_NODES
from .nodes_rlg import NODES
from .nodes_sweep import NODES as SWEEP_NODES


class RLGExtension(ComfyExtension):
    @override
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [*NODES, *MULTI_NODES, *SWEEP_NODES, RLGLoraLoaderModelOnly]


async def comfy_entrypoint() -> RLGExtension:
    return RLGExtension()
