"""ComfyUI-RLG: registration only. The code is in nodes/ (see nodes/__init__.py)."""

from .nodes import comfy_entrypoint

# Only the V3 entrypoint is exported: ComfyUI ignores comfy_entrypoint when a module also
# exports NODE_CLASS_MAPPINGS.
WEB_DIRECTORY = "./js"

__all__ = ["comfy_entrypoint", "WEB_DIRECTORY"]
