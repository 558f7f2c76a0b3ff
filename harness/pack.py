"""Load this pack the way ComfyUI loads a custom node pack: a package from the checkout's __init__.py."""

from __future__ import annotations

import ast
import asyncio
import importlib.util
import sys
from pathlib import Path
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


def _relative_imports(path: Path) -> list[Path]:
    """The pack's own modules a source imports (relative imports, at any depth of the file: top level or inside
    functions), as files: a module's .py, or a package's __init__.py."""
    tree = ast.parse(path.read_text(), filename=str(path))
    here = path.parent
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom) or not node.level:
            continue
        base = here
        for _ in range(node.level - 1):
            base = base.parent
        parts = node.module.split(".") if node.module else []
        target = base.joinpath(*parts)
        names = [target] if parts else []
        if not parts or (target / "__init__.py").is_file():  # `from . import x`, `from .pkg import x`: x a module?
            names += [target / alias.name for alias in node.names]
        for name in names:
            for candidate in (name.with_suffix(".py"), name / "__init__.py"):
                if candidate.is_file():
                    found.append(candidate)
    return found


def web_directory(root: Path = ROOT) -> Path | None:
    """The folder the pack's __init__.py names as WEB_DIRECTORY (ComfyUI serves it to the front-end), read from its
    source."""
    tree = ast.parse((root / "__init__.py").read_text())
    for node in tree.body:
        named = any(isinstance(t, ast.Name) and t.id == "WEB_DIRECTORY" for t in getattr(node, "targets", []))
        if named and isinstance(node.value, ast.Constant):
            return (root / node.value.value).resolve()
    return None


def pack_sources(root: Path = ROOT) -> list[Path]:
    """Every source of the pack that ComfyUI loads, found by walking it, not by name: the package's __init__.py, the
    modules it imports and, from each of them, the modules they import (relative imports, wherever they are in the
    file), with every other module of the packages those are in and below (a module not imported yet is still the
    pack's); and every file of its WEB_DIRECTORY. Sorted; nothing is imported."""
    todo, seen = [root / "__init__.py"], set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        todo += _relative_imports(path)
        if path.parent != root:  # the root holds the checkout's other folders too; its one module is __init__.py
            todo += sorted(path.parent.rglob("*.py"))
    web = web_directory(root)
    files = set(seen) | ({p for p in web.rglob("*") if p.is_file()} if web else set())
    return sorted(files)

