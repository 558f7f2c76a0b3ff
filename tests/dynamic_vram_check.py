"""RLG on newest ComfyUI's dynamic VRAM patcher, forced on the CPU (tests/test_newest_host.py runs this).

    python tests/dynamic_vram_check.py      (in a process of a test leg: RLG_COMFY_DIR and PYTHONPATH as the leg's)

ModelPatcherDynamic runs only with CUDA (comfy-aimdo's devices). Here comfy-aimdo is initialised before ComfyUI is
imported and the constructor's reroute to a plain ModelPatcher for CPU load devices is removed, so the real class
samples on the CPU. On the CPU it cannot stage weight patches (no VRAM pages), so the base here carries none and the
RL model is the base plus a LoRA, which RLG runs itself. Checked: RLG at w = 0 and 1 on the dynamic patcher, and on
the non-dynamic delegate CFGGuider swaps in when a cond carries hooks (a freshly loaded module), against a plain
ModelPatcher's base and RL model; and under EasyCache, where the LoRA takes the weight-function way. Prints one
JSON line: {"dynamic", "delegate", "diffs", "tolerance"}.
"""

from __future__ import annotations

import json

import comfy_aimdo.control  # before ComfyUI: its host buffers bind the library when they are imported

comfy_aimdo.control.init()

from harness import host  # noqa: E402

host.use_comfy(cpu=True)

import comfy.hooks  # noqa: E402
import comfy.memory_management  # noqa: E402
import comfy.model_patcher  # noqa: E402
import comfy.samplers  # noqa: E402
import comfy.sd  # noqa: E402
import torch  # noqa: E402

from harness import sampling as h  # noqa: E402
from harness import step_cache_nodes as scn  # noqa: E402
from harness import tiny_models as tm  # noqa: E402
from harness.pack import load_pack  # noqa: E402


def main() -> None:
    load_pack()
    dynamic_cls = comfy.model_patcher.ModelPatcherDynamic
    sd = tm.tiny_sd3_state_dict(0)

    def loader(disable_dynamic=False):
        return comfy.sd.load_diffusion_model_state_dict(dict(sd), disable_dynamic=disable_dynamic)

    plain = loader(disable_dynamic=True)
    plain_rl = h.with_lora(plain)
    comfy.memory_management.aimdo_enabled = True
    dynamic_cls.__new__ = lambda cls, *args, **kwargs: object.__new__(cls)  # no CPU reroute, clones included
    base = dynamic_cls(loader(disable_dynamic=True).model, torch.device("cpu"), torch.device("cpu"))
    base.cached_patcher_init = (loader, ())
    rl = h.with_lora(base)
    positive, negative = h.conds("sd3")
    hooked = [[positive[0][0], dict(positive[0][1], hooks=comfy.hooks.HookGroup())]]
    latent = h.latent("sd3")
    noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(4))
    sigmas = h.schedule(plain, steps=3)
    seen = []

    def guided(model, cond):
        guider = comfy.samplers.CFGGuider(model)
        guider.set_conds(cond, negative)
        guider.set_cfg(3.0)
        seen.append(guider.model_patcher)
        with torch.inference_mode():
            return guider.sample(noise, latent, comfy.samplers.sampler_object("euler"), sigmas, disable_pbar=True,
                                 seed=4)

    ref = {0.0: guided(plain, positive), 1.0: guided(plain_rl, positive)}
    diffs = {}
    for label, cond in (("dynamic", positive), ("delegate", hooked)):
        for w in (0.0, 1.0):
            diffs[f"{label} w={w:g}"] = h.max_diff(guided(h.rlg(base, rl, w, 0.0, 1.0), cond), ref[w])
    delegate = seen[-1]
    # Under a step cache the LoRA RL pass takes its weight functions (step_caches.py): on the dynamic patcher too.
    easy = scn.easycache()
    for w in (0.0, 1.0):
        cached = easy.apply(h.rlg(base, rl, w), 0.0)
        diffs[f"dynamic + EasyCache w={w:g}"] = h.max_diff(guided(cached, positive), ref[w])
    print(json.dumps({"dynamic": isinstance(base, dynamic_cls) and base.is_dynamic(),
                      "delegate": delegate.model is not base.model and not delegate.is_dynamic(),
                      "diffs": diffs, "tolerance": h.tolerance(ref[1.0]),
                      "effect": h.max_diff(ref[0.0], ref[1.0])}))


if __name__ == "__main__":
    main()
