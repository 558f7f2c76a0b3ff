"""The demo's prompt, as a node: the one conditioning the demo models were trained on.

Demo-only (loaded by `make demo` / `make demo-server`), not part of the shipped pack: it stands in
for a text encoder, which the tiny demo models do not have. The demo's two templates live in this node pack's
example_workflows/ (ComfyUI lists them under rlg_demo_nodes), so the pack's own templates need nothing but the pack.
"""

import torch

from demo import synthetic  # the checkout is on the server's PYTHONPATH (harness.host.child_env, make demo-server)


class RLGDemoPrompt:
    CATEGORY = "rlg/demo"
    DESCRIPTION = "The prompt the RLG demo models were trained on (no text encoder needed)."
    RETURN_TYPES = ("CONDITIONING", "CONDITIONING")
    RETURN_NAMES = ("positive", "negative")
    OUTPUT_TOOLTIPS = ("The demo prompt.", "An empty prompt (zeros); unused at cfg 1.")
    FUNCTION = "make"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}

    def make(self):
        context, pooled = synthetic.prompt_conditioning()
        positive = [[context, {"pooled_output": pooled}]]
        negative = [[torch.zeros_like(context), {"pooled_output": torch.zeros_like(pooled)}]]
        return positive, negative


class RLGDemoDecode:
    """Shows demo latents as pictures (the tiny demo model has no VAE): channels 0-2 as RGB."""

    CATEGORY = "rlg/demo"
    DESCRIPTION = "Draws RLG demo latents as pictures, so the patterns can be seen (no VAE needed)."
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "decode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"samples": ("LATENT", {"tooltip": "Latents sampled from the RLG demo models."}),
                             "pixels": ("INT", {"default": 128, "min": 8, "max": 1024, "step": 8,
                                                "tooltip": "Size of each picture."})}}

    def decode(self, samples, pixels):
        import comfy.latent_formats

        latent = comfy.latent_formats.SD3().process_in(samples["samples"].float())
        return (synthetic.to_rgb(latent, pixels).permute(0, 2, 3, 1).contiguous(),)


NODE_CLASS_MAPPINGS = {"RLGDemoPrompt": RLGDemoPrompt, "RLGDemoDecode": RLGDemoDecode}
NODE_DISPLAY_NAME_MAPPINGS = {"RLGDemoPrompt": "RLG Demo Prompt", "RLGDemoDecode": "RLG Demo Decode"}
