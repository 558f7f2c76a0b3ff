"""Which ComfyUI tree a process of this project runs on: the one place that decides.

RLG_COMFY_DIR names the tree; without it, the default host .comfy-host/ComfyUI (scripts/setup_host.sh;
RLG_HOST_DIR moves .comfy-host). Every process of a test leg asks here: pytest (tests/conftest.py), the
servers it starts (ComfyServer runs main.py of this tree), the fresh reference process, the demo and
the benchmarks.

Nothing here runs on import. An entry point calls use_comfy() once, before it imports anything of
ComfyUI. `comfy` has no __init__.py: Python looks each comfy.* submodule up on sys.path again when it is
first imported, so a second tree anywhere on sys.path silently mixes two ComfyUIs in one process.
use_comfy() refuses to start in such a process, and foreign_modules() lets a test prove that nothing
mixed later.
"""

from __future__ import annotations

import os
import runpy
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HOST_DIR_ENV = "RLG_HOST_DIR"
COMFY_DIR_ENV = "RLG_COMFY_DIR"

# The top-level modules a ComfyUI tree provides (packages and single files). A module of one of these names
# loaded from anywhere else means two trees were mixed.
HOST_MODULES = frozenset({
    "comfy", "comfy_api", "comfy_api_nodes", "comfy_extras", "comfy_execution", "comfy_config", "app", "api_server",
    "middleware", "utils", "alembic_db", "folder_paths", "execution", "nodes", "server", "node_helpers",
    "latent_preview", "comfyui_version", "protocol", "cuda_malloc", "hook_breaker_ac10a0", "new_updater",
})


class HostError(RuntimeError):
    """The ComfyUI tree cannot be used by this process; the message says why and what to do."""


def host_dir() -> Path:
    return Path(os.environ.get(HOST_DIR_ENV) or ROOT / ".comfy-host").resolve()


def comfy_dir() -> Path:
    """The ComfyUI tree of this process (RLG_COMFY_DIR, else the default host)."""
    return Path(os.environ.get(COMFY_DIR_ENV) or host_dir() / "ComfyUI").resolve()


def comfy_version(tree: Path | None = None) -> str:
    """The version the tree says it is (its comfyui_version.py)."""
    return runpy.run_path(str((tree or comfy_dir()) / "comfyui_version.py"))["__version__"]


def version_tuple(tree: Path | None = None) -> tuple[int, ...]:
    return tuple(int(p) for p in comfy_version(tree).split(".")[:3])


def _is_tree(path: Path) -> bool:
    return (path / "comfy" / "sd.py").is_file() and (path / "main.py").is_file()


def use_comfy(cpu: bool = True) -> Path:
    """Make this process run on comfy_dir(): first on sys.path, ComfyUI's device flags set. Idempotent.

    Refuses (HostError) when another ComfyUI tree is on sys.path or already imported. cpu=False leaves
    the device to ComfyUI (a GPU where there is one).
    """
    tree = comfy_dir()
    if not _is_tree(tree):
        raise HostError(f"No ComfyUI tree at {tree}: run `make setup` (scripts/setup_host.sh) first, or set "
                        f"{COMFY_DIR_ENV} to a ComfyUI checkout.")
    others = [p for p in sys.path if p and Path(p).resolve() != tree and _is_tree(Path(p).resolve())]
    if others:
        raise HostError(f"Another ComfyUI tree is on sys.path ({others[0]}) beside {tree}; its modules would mix "
                        "with this one's. Remove it (PYTHONPATH?) or point RLG_COMFY_DIR at it.")
    if str(tree) not in sys.path:
        sys.path.insert(0, str(tree))
    foreign = foreign_modules(tree)
    if foreign:
        name, where = next(iter(foreign.items()))
        raise HostError(f"{name} was already imported from {where}, not from {tree}; call use_comfy() before "
                        "anything imports ComfyUI.")
    import comfy.cli_args

    comfy.cli_args.args.cpu = cpu
    comfy.cli_args.args.deterministic = True
    import comfy.model_management  # noqa: F401  (reads args.cpu when it is first imported)

    return tree


def _module_paths(module) -> list[str]:
    """Where a module was loaded from: its file, or every folder of a namespace package (comfy has no
    __init__.py, so its __path__ lists each tree on sys.path that has a comfy folder)."""
    file = getattr(module, "__file__", None)
    if file:
        return [file]
    return [str(p) for p in getattr(module, "__path__", [])]


def foreign_modules(tree: Path | None = None) -> dict[str, str]:
    """{module name: where it came from} for host modules of this process that are not from `tree`."""
    tree = (tree or comfy_dir()).resolve()
    out = {}
    for name, module in list(sys.modules.items()):
        if name.partition(".")[0] not in HOST_MODULES or module is None:
            continue
        for path in _module_paths(module):
            resolved = Path(path).resolve()
            if tree not in resolved.parents and resolved != tree:
                out[name] = str(resolved)
                break
    return out


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a process this one starts (a server, the reference process): the same tree.

    RLG_COMFY_DIR is fixed to this process's tree, and the checkout goes on PYTHONPATH after the leg's own
    entries (its package overlay, made absolute), so the harness and the test nodes import in the child; a ComfyUI
    main.py puts its own folder first, ahead of both.
    """
    env = dict(os.environ)
    env[COMFY_DIR_ENV] = str(comfy_dir())
    # Absolute: a server runs in its ComfyUI folder, where a PYTHONPATH relative to the checkout finds nothing.
    paths = [str(Path(p).resolve()) for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if str(ROOT) not in paths:
        paths.append(str(ROOT))
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env
