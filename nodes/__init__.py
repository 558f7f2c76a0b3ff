"""ComfyUI-RLG: Reinforcement Learning Guidance for ComfyUI.

Where things are, top down (each layer imports only the ones below it):

  nodes            nodes_rlg.py     RLG Apply, RLG Guider (one RL model)
                   nodes_multi.py   RLG RL Model, RLG Apply / Guider (several RL models)
                   nodes_sweep.py   RLG Scale Sweep, RLG Sweep Grid (sweep_grid.py draws the grid, sweep_run.py
                                    records what the run used, for the front-end's scrubber)
                   server_hooks.py  the running server: the sweep grid's queue-time list, queue-time refusals,
                                    warnings to the front-end
                   nodes_queue_refusal.py  the stand-in node a queue-time refusal is reported on
                   nodes_lora.py    Load LoRA (PEFT aware)
                   widgets.py       the widgets the nodes share, with their limits and tooltips
  apply            apply.py         attach_rlg(): puts RLG on a model; every node, test and benchmark uses it
  the step         step.py          RLGCondBatchWrapper.__call__: where each step's blend happens
                   branch_cfg.py    CFG per branch (rl_cfg), the pre-CFG half
                   rl_passes.py     runs the base and each RL model for a step
                   rl_options.py    an RL pass's options; the newest host's plumbing (multi-GPU, caches)
                   step_caches.py   step caches (EasyCache, TeaCache, FBCache...) with a state per model
  RL-model forms   model_pair.py    checks a (base, RL) pair: separate file, base + LoRA (shared), identical
                   rl_delta.py      a LoRA RL model's part, layer by layer, run for one forward and proven
                   gguf_layers.py   that part on ComfyUI-GGUF's quantized layers (applied at dequantization)
  pure             rlg_math.py      the blend, windows, ramps, CFG per branch, the correction between
                                    evaluations (torch only)
                   settings.py      one RL model's settings, checked, and every limit
                   patch_diff.py    what the RL model adds to the base's patches and options
                   peft_alpha.py    the alpha PEFT LoRAs keep in adapter_config.json
                   graph_checks.py  graphs refused when queued (a step cache where it cannot hold per model)
                   errors.py        RLGInputError, RLGRuntimeError
"""

from comfy_api.latest import ComfyExtension, io
from typing_extensions import override

from .nodes_lora import RLGLoraLoaderModelOnly
from .nodes_multi import NODES as MULTI_NODES
from .nodes_queue_refusal import NODES as REFUSAL_NODES
from .nodes_rlg import NODES
from .nodes_sweep import NODES as SWEEP_NODES
from .server_hooks import register


class RLGExtension(ComfyExtension):
    @override
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        register()  # on every host (0.3.75 and 0.8.0 never call on_load); a no-op without a running server
        return [*NODES, *MULTI_NODES, *SWEEP_NODES, RLGLoraLoaderModelOnly, *REFUSAL_NODES]


async def comfy_entrypoint() -> RLGExtension:
    return RLGExtension()
