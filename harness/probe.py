"""What a running ComfyUI holds: models, hooks on a model, live tensors and patchers, RLG's own objects, the
executor's cache, resident memory.

Shared by the test-only probe node (tests/comfy_test_nodes/rlg_test_nodes, run inside the server) and the
reliability tests (tests/reliability/, which compute the same digests from the model files). Plain torch, gc and
hashlib; ComfyUI is imported only inside the functions that need it.
"""

from __future__ import annotations

import gc
import hashlib
import os
import sys
import types
import weakref
from collections import Counter

import torch

from .host import ROOT

# label -> weak reference, filled by the probe node's `track` input (models that must die after /free).
TRACKED: dict[str, weakref.ref] = {}


def weights_digest(state_dict: dict) -> str:
    """sha256 over the float32 bytes of every tensor, in key order (16 hex digits)."""
    h = hashlib.sha256()
    for key in sorted(state_dict):
        value = state_dict[key]
        if not isinstance(value, torch.Tensor):
            continue
        h.update(key.encode())
        h.update(value.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def rss_kb() -> int:
    """This process's resident set size (Linux; 0 elsewhere)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def model_state(patcher) -> dict:
    """What is on a ModelPatcher's module now: hooks, weight functions, patches, wrappers, the weights."""
    net = patcher.model.diffusion_model
    hooks = functions = 0
    for module in net.modules():
        hooks += len(module._forward_hooks) + len(module._forward_pre_hooks) + len(module._backward_hooks)
        for attr in ("weight_function", "bias_function"):
            if module.__dict__.get(attr):
                functions += 1
    return {
        "hooks": hooks,
        "weight_functions": functions,
        "patches": sum(len(v) for v in patcher.patches.values()),
        "wrappers": sorted(str(k) for k, v in patcher.wrappers.items() if v),
        "callbacks": sorted(str(k) for k, v in patcher.callbacks.items() if v),
        "additional_models": sorted(k for k, v in patcher.additional_models.items() if v),
        "model_options": sorted(k for k in patcher.model_options if k != "transformer_options"),
        "transformer_options": sorted(patcher.model_options.get("transformer_options", {})),
        "digest": weights_digest(net.state_dict()),
    }


def loaded_models() -> list[dict]:
    """ComfyUI's loaded models (model_management.current_loaded_models), by weight digest."""
    import comfy.model_management

    out = []
    for loaded in list(comfy.model_management.current_loaded_models):
        patcher = loaded.model
        if patcher is None:
            out.append({"digest": None, "class": None})
            continue
        out.append({"digest": weights_digest(patcher.model.diffusion_model.state_dict()),
                    "class": type(patcher.model).__name__})
    return out


def live_census() -> dict:
    """After a full collection: live ModelPatchers and BaseModels, and the bytes of live tensors' storages."""
    import comfy.model_base
    import comfy.model_patcher

    gc.collect()
    patchers = models = tensors = 0
    storages: dict[int, int] = {}
    pack = _PackObjects()
    for obj in gc.get_objects():
        pack.add(obj)
        if isinstance(obj, comfy.model_patcher.ModelPatcher):
            patchers += 1
        elif isinstance(obj, comfy.model_base.BaseModel):
            models += 1
        elif isinstance(obj, torch.Tensor):
            tensors += 1
            try:
                storage = obj.untyped_storage()
                storages[storage.data_ptr()] = storage.nbytes()
            except (RuntimeError, NotImplementedError):  # meta / sparse tensors
                pass
    objects = len(gc.get_objects())
    rss_before = rss_kb()
    trimmed = trim_heap()
    return {"patchers": patchers, "base_models": models, "tensors": tensors, "tensor_bytes": sum(storages.values()),
            "pack_objects": dict(pack.counts), "gc_objects": objects, "rss_kb": rss_before,
            "rss_trimmed_kb": rss_kb() if trimmed else None}


class _PackObjects:
    """Counts live objects of the pack (RLG): instances of classes defined in its code, and functions made from its
    code (module functions, and the closures it creates while it runs). Everything ComfyUI loads of the pack is its
    __init__.py and nodes/; the server's custom_nodes/ComfyUI-RLG is a link to this checkout (harness.server)."""

    def __init__(self):
        self.counts: Counter[str] = Counter()
        self._files: dict[str, bool] = {}
        self._modules: dict[str, bool] = {}
        self._nodes = os.path.realpath(ROOT / "nodes") + os.sep
        self._init = os.path.realpath(ROOT / "__init__.py")

    def _is_pack_file(self, filename: str) -> bool:
        known = self._files.get(filename)
        if known is None:
            real = os.path.realpath(filename)
            known = self._files[filename] = real.startswith(self._nodes) or real == self._init
        return known

    def _is_pack_module(self, name: str) -> bool:
        known = self._modules.get(name)
        if known is None:
            file = getattr(sys.modules.get(name), "__file__", None)
            known = self._modules[name] = bool(file) and self._is_pack_file(file)
        return known

    def add(self, obj) -> None:
        cls = type(obj)
        if cls is types.FunctionType:
            if self._is_pack_file(obj.__code__.co_filename):
                self.counts[f"function {obj.__module__.rpartition('.')[2]}.{obj.__qualname__}"] += 1
        elif self._is_pack_module(cls.__module__):
            self.counts[f"{cls.__module__.rpartition('.')[2]}.{cls.__qualname__}"] += 1


def pack_objects() -> dict[str, int]:
    """{what: how many} live objects of the pack, after a full collection (see _PackObjects)."""
    gc.collect()
    pack = _PackObjects()
    for obj in gc.get_objects():
        pack.add(obj)
    return dict(pack.counts)


def executor_cache() -> dict | None:
    """The cache of ComfyUI's PromptExecutor in this process: its type (CLASSIC, RAM_PRESSURE...), its settings, its
    output entries, and how many of those no node of the current prompt used (None for caches without generations:
    CLASSIC drops them when a prompt starts). None without an executor."""
    import execution

    for obj in gc.get_objects():
        if isinstance(obj, execution.PromptExecutor):
            outputs = obj.caches.outputs
            used = getattr(outputs, "used_generation", None)
            generation = getattr(outputs, "generation", None)
            entries = getattr(outputs, "cache", {})
            older = (None if used is None or generation is None
                     else sum(1 for key in entries if used.get(key, generation) < generation))
            kind = obj.cache_type
            return {"type": getattr(kind, "name", str(kind)), "args": dict(obj.cache_args or {}),
                    "entries": len(entries), "older_entries": older}
    return None


def trim_heap() -> bool:
    """Hand the C heap's free pages back to the system (glibc malloc_trim), so RSS counts memory in use."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        return bool(ctypes.CDLL(name).malloc_trim(0))
    except (OSError, AttributeError):
        return False


def track(label: str, patcher) -> None:
    """Watch a ModelPatcher and its model (weakly): tracked_alive() says whether they are still alive."""
    TRACKED[f"{label}"] = weakref.ref(patcher)
    TRACKED[f"{label}.model"] = weakref.ref(patcher.model)


def tracked_alive() -> list[str]:
    gc.collect()
    return sorted(label for label, ref in TRACKED.items() if ref() is not None)
