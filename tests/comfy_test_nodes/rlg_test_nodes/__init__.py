"""Test-only nodes for the server tests; never part of the shipped pack.

RLGTestConditioning gives seeded conditioning for the tiny test models, so the server tests need
no text encoder. It makes exactly what tests/tiny_models.tiny_conds makes in-process.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import tiny_models  # noqa: E402


class RLGTestConditioning:
    CATEGORY = "testing"
    RETURN_TYPES = ("CONDITIONING", "CONDITIONING")
    RETURN_NAMES = ("positive", "negative")
    FUNCTION = "make"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "family": (["sd3", "sd15"],),
            "seed": ("INT", {"default": 0, "min": 0, "max": 2**31}),
            "batch_size": ("INT", {"default": 1, "min": 1, "max": 64}),
        }}

    def make(self, family, seed, batch_size):
        return tiny_models.tiny_conds(family, batch_size, seed)


NODE_CLASS_MAPPINGS = {"RLGTestConditioning": RLGTestConditioning}
