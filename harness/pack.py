"""Load this pack the way ComfyUI loads a custom node pack: a package from the checkout's __init__.py."""

from __future__ import annotations

import ast
import asyncio
import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

from .host import ROOT

PACK_NAME = "comfyui_rlg"


def import_folder(module_name: str, folder: Path) -> ModuleType:
    """The package in `folder` (its __init__.py) as `module_name`, its relative imports working, as ComfyUI imports a
    custom node package, without touching sys.path. Idempotent; a failed import leaves nothing of it behind."""
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, folder / "__init__.py",
                                                  submodule_search_locations=[str(folder)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        for key in [k for k in sys.modules if k == module_name or k.startswith(module_name + ".")]:
            del sys.modules[key]
        raise
    return module


def load_pack() -> ModuleType:
    """The pack as the package comfyui_rlg (its modules import as comfyui_rlg.nodes.*). Idempotent."""
    return import_folder(PACK_NAME, ROOT)


def node_classes() -> dict[str, type]:
    """{node id: class} of the pack's nodes, from its V3 entrypoint as ComfyUI reads it."""
    extension = asyncio.run(load_pack().comfy_entrypoint())
    return {cls.define_schema().node_id: cls for cls in asyncio.run(extension.get_node_list())}


def listed_nodes(classes: dict[str, type] | None = None) -> dict[str, type]:
    """node_classes() (or `classes`) less the deprecated ones (V3 schema is_deprecated): the nodes the node library
    lists and a user adds, each with a help page in js/docs/ and a table in docs/api.md. A deprecated node is hidden
    from the library; the pack keeps one only for the server's own use (a stand-in a queue-time refusal is reported
    on), so it needs neither."""
    classes = node_classes() if classes is None else classes
    return {node_id: cls for node_id, cls in classes.items() if not cls.define_schema().is_deprecated}


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


def registry_files(root: Path = ROOT) -> list[str]:
    """The files `comfy node pack` (comfy-cli, the Comfy Registry's packer) puts in the pack's zip, as paths relative
    to the checkout, by the rule it applies: the files git tracks, less those .comfyignore's patterns match (gitignore
    rules; git's own matcher here), except under the folders pyproject's [tool.comfy] `includes` names, which it
    adds from disk. Needs git and a git checkout (and Python 3.11, for tomllib)."""
    import tomllib

    def git(*args: str) -> list[str]:
        out = subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True, text=True).stdout
        return [line for line in out.splitlines() if line.strip()]

    tracked = git("ls-files")
    ignore = root / ".comfyignore"
    ignored = set(git("ls-files", "-c", "-i", f"--exclude-from={ignore}")) if ignore.is_file() else set()
    includes = [p.strip("/") for p in tomllib.loads((root / "pyproject.toml").read_text())
                .get("tool", {}).get("comfy", {}).get("includes", [])]

    def forced(path: str) -> bool:
        return any(path == p or path.startswith(p + "/") for p in includes if p)

    files = {path for path in tracked if path not in ignored or forced(path)}
    for include in includes:
        where = root / include
        files |= {str(p.relative_to(root)) for p in ([where] if where.is_file() else where.rglob("*")) if p.is_file()}
    return sorted(files)
