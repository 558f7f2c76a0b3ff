"""ComfyUI-RLG: registration only. The code is in nodes/ (start at nodes/__init__.py)."""

# Only the V3 entrypoint is exported: ComfyUI ignores comfy_entrypoint when a module also
# exports NODE_CLASS_MAPPINGS.
from .nodes import comfy_entrypoint

# Served at /extensions/ComfyUI-RLG/: js/rlg_dial.js reads the RLG dial back in the graph editor, js/rlg_scrubber.js
# shows a sweep one scale at a time on RLG Sweep Grid.
WEB_DIRECTORY = "./js"

__all__ = ["comfy_entrypoint", "WEB_DIRECTORY"]
