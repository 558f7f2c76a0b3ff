"""Test-only nodes for the server tests; never part of the shipped pack.

RLGTestConditioning gives seeded conditioning for the tiny test models, so the server tests need
no text encoder. It makes exactly what harness/tiny_models.tiny_conds makes in-process, and for the by-file
stand-ins ("<family>_file") what harness/tiny_families makes for them.

RLGTestProbe and RLGTestFailingModel serve the reliability tests (tests/reliability/): the first reports
what the server holds (loaded models, hooks and weights of a model, live tensors and RLG objects, the cache,
resident memory), the second returns a model whose forward raises after a given number of calls.
"""

from harness import probe as reliability_probe  # the checkout is on the server's PYTHONPATH (harness.host.child_env)
from harness import tiny_models


class RLGTestConditioning:
    CATEGORY = "testing"
    RETURN_TYPES = ("CONDITIONING", "CONDITIONING")
    RETURN_NAMES = ("positive", "negative")
    FUNCTION = "make"

    @classmethod
    def INPUT_TYPES(cls):
        from harness import tiny_families  # as in make(): ComfyUI's model modules only once the node is used

        return {"required": {
            "family": (["sd3", "sd15", "wan_file", *(f"{f}_file" for f in tiny_families.FILE_FAMILIES)],),
            "seed": ("INT", {"default": 0, "min": 0, "max": 2**31}),
            "batch_size": ("INT", {"default": 1, "min": 1, "max": 64}),
        }}

    def make(self, family, seed, batch_size):
        if family == "wan_file":  # the by-file Wan stand-ins of the workflow tests (harness/tiny_families.py)
            from harness import tiny_families

            return tiny_families.wan_conds(batch_size, seed)
        if family.endswith("_file"):  # the next families' by-file stand-ins (tiny_families.file_state_dict)
            from harness import tiny_families

            return tiny_families.file_conds(family.removesuffix("_file"), batch_size, seed)
        return tiny_models.tiny_conds(family, batch_size, seed)


class RLGTestProbe:
    """Reports, in the prompt's /history outputs, what the server holds right now (runs every time).

    Its output links to another probe's `after`, to order two probes: under the RAM_PRESSURE cache the outputs of
    earlier prompts go only once a node of the current prompt has executed, so a census that must see them gone runs
    after a first probe.
    """

    CATEGORY = "testing"
    RETURN_TYPES = ("INT",)
    RETURN_NAMES = ("done",)
    FUNCTION = "probe"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {"census": ("BOOLEAN", {"default": False})},
            "optional": {"model": ("MODEL",), "track": ("STRING", {"default": ""}),
                         "cache": ("BOOLEAN", {"default": False}), "after": ("INT", {"forceInput": True}),
                         "report": ("BOOLEAN", {"default": True})},
        }

    @classmethod
    def IS_CHANGED(cls, **kwargs):
        return float("nan")

    def probe(self, census, model=None, track="", cache=False, after=None, report=True):
        if model is not None and track:
            reliability_probe.track(track, model)
        if not report:  # only tracking, or only here to run first (a cache may drop older prompts after it)
            return {"ui": {"probe": [{}]}, "result": (0,)}
        report = {"rss_kb": reliability_probe.rss_kb(), "loaded": reliability_probe.loaded_models()}
        if model is not None:
            report["model"] = reliability_probe.model_state(model)
        report["tracked_alive"] = reliability_probe.tracked_alive()
        if cache:
            report["cache"] = reliability_probe.executor_cache()
        if census:
            report["census"] = reliability_probe.live_census()
        return {"ui": {"probe": [report]}, "result": (0,)}


class RLGTestFailingModel:
    """The model, whose forward raises (inside its second transformer block) from call `fail_at` on."""

    CATEGORY = "testing"
    RETURN_TYPES = ("MODEL",)
    FUNCTION = "patch"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "fail_at": ("INT", {"default": 1, "min": 1, "max": 10000})}}

    @classmethod
    def IS_CHANGED(cls, **kwargs):
        return float("nan")  # a fresh call counter for every prompt

    def patch(self, model, fail_at):
        calls = [0]

        def block(args, extra):
            calls[0] += 1
            if calls[0] >= fail_at:
                raise RuntimeError(f"RLG test: this model's forward fails on purpose (call {calls[0]})")
            return extra["original_block"](args)

        patched = model.clone()
        patched.set_model_patch_replace(block, "dit", "double_block", 1)
        return (patched,)


NODE_CLASS_MAPPINGS = {
    "RLGTestConditioning": RLGTestConditioning,
    "RLGTestProbe": RLGTestProbe,
    "RLGTestFailingModel": RLGTestFailingModel,
}
