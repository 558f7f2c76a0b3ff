"""The third-party packs users stack on RLG, for tests: ComfyUI-GGUF, TeaCache, WaveSpeed's first-block cache.

scripts/setup_host.sh unpacks the pinned, unmodified snapshots of ../shared/packs into .comfy-host/thirdparty/<pack>
(never into a ComfyUI tree, never into this repository). In-process tests import a pack from there the way ComfyUI
imports a custom node package (a package of its own name, its relative imports working), without touching sys.path;
server tests link the same folders into the server's custom_nodes (harness.server.ComfyServer's `packs`).

Some packs fail on some hosts by themselves (TeaCache's copies of ComfyUI's forward functions are older than
ComfyUI 0.33.0, say). Such a pack is skipped with the reason its own import or its own run gave, so a failure of the
pack alone is never counted as RLG's.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import ModuleType

import pytest

from .host import host_dir
from .pack import import_folder

GGUF = "ComfyUI-GGUF"
TEACACHE = "ComfyUI-TeaCache"
WAVESPEED = "Comfy-WaveSpeed"
PACKS = (GGUF, TEACACHE, WAVESPEED)


def pack_dir(name: str) -> Path:
    return host_dir() / "thirdparty" / name


def missing(name: str) -> str | None:
    """Why pack `name` is not there to test, or None."""
    if not (pack_dir(name) / "__init__.py").is_file():
        return f"{name} is not unpacked in {pack_dir(name).parent} (scripts/setup_host.sh does it from ../shared/packs)"
    return None


def _module_name(name: str) -> str:
    return "thirdparty_" + name.replace("-", "_").lower()


def load(name: str) -> ModuleType:
    """The pack as a package (idempotent). Raises what its own import raises."""
    module_name = _module_name(name)
    if module_name not in sys.modules and missing(name):
        raise FileNotFoundError(missing(name))
    return import_folder(module_name, pack_dir(name))


def load_or_skip(name: str) -> ModuleType:
    """The pack, or a skip that says why it does not load on this host (its own import error)."""
    reason = missing(name)
    if reason:
        pytest.skip(reason)
    try:
        return load(name)
    except Exception as err:  # noqa: BLE001  (the pack's own failure on this host, whatever it is)
        pytest.skip(f"{name} does not import on this ComfyUI by itself: {type(err).__name__}: {err}")


def submodule(name: str, sub: str) -> ModuleType:
    """One module of a loaded pack (its nodes or ops module, say)."""
    load(name)
    return sys.modules[f"{_module_name(name)}.{sub}"]
