"""Load this pack the way ComfyUI loads a custom node pack: a package from the checkout's __init__.py."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from types import ModuleType

from .host import ROOT

PACK_NAME = "comfyui_rlg"


def load_pack() -> ModuleType:
    """The pack as the package comfyui_rlg (its modules import as comfyui_rlg.nodes.*). Idempotent."""
    if PACK_NAME in sys.modules:
        return sys.modules[PACK_NAME]
    spec = importlib.util.spec_from_file_location(PACK_NAME, ROOT / "__init__.py",
                                                  submodule_search_locations=[str(ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACK_NAME] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[PACK_NAME]
        raise
    return module


def node_classes() -> dict[str, type]:
    """{node id: class} of the pack's nodes, from its V3 entrypoint as ComfyUI reads it."""
    extension = asyncio.run(load_pack().comfy_entrypoint())
    return {cls.define_schema().node_id: cls for cls in asyncio.run(extension.get_node_list())}
