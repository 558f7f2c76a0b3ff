"""What a running ComfyUI holds: models, hooks on a model, live tensors and patchers, resident memory.

Shared by the test-only probe node (tests/comfy_test_nodes/rlg_test_nodes, run inside the server) and
tests/test_reliability.py (which computes the same digests from the model files). Plain torch, gc and
hashlib; ComfyUI is imported only inside the functions that need it.
"""

from __future__ import annotations

import gc
import hashlib
import weakref

import torch

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
    for obj in gc.get_objects():
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
            "gc_objects": objects, "rss_kb": rss_before, "rss_trimmed_kb": rss_kb() if trimmed else None}


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
    TRACKED[f"{label}"] = weakref.ref(patcher)
    TRACKED[f"{label}.model"] = weakref.ref(patcher.model)


def tracked_alive() -> list[str]:
    gc.collect()
    return sorted(label for label, ref in TRACKED.items() if ref() is not None)
