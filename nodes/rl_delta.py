"""The RL part of an RL model that shares the base's module, and how one forward runs it.

ComfyUI glue. An RL model made as base -> LoRA loader -> rl_model is the base's very module plus
extra weight patches; only one set of weights can live in that module, so the RL pass adds the
extra patches on the fly, for one forward at a time, in one of three ways per layer:

* hook: a plain LoRA on a linear layer (any layer that computes x @ W.T + b, nn.Linear or ComfyUI's
  quantized and mixed-precision linears alike) adds scale * up @ (down @ x) to its output in a
  forward hook, for the rows of the batch that belong to this RL model. No weight is copied, and
  the base rows of a shared forward stay the base's.
* function: any other patch on the weight or bias of a ComfyUI op (LoHa, LoKr, DoRA, diff...) is
  applied by a weight function, the mechanism ComfyUI itself uses for low-VRAM LoRAs, installed on
  the layer only for this forward (so quantized kernels stay on for the base pass).
* swap: a patch on a plain parameter of a leaf module (SD3.5's RMSNorm scales) is swapped into
  the parameter for this forward and restored after.
Parameters of non-leaf modules (MMDiT's pos_embed) are skipped, as ComfyUI's loader skips them.

The layers are looked up by name on the model that is actually running the forward (the APPLY_MODEL
wrapper's model), never kept from when the node ran: newer ComfyUI rebuilds modules (a non-dynamic
delegate, one copy per GPU for a multi-GPU split). And every forward proves it ran the RL model:
each hook must fire and each weight function must be called wherever its layer ran. A layer that
did not (a module rebuilt behind our back, a layer computed without calling its module) is
recomputed the exact way, function and then swap, in a second forward of the same inputs, and the
console says so once. What cannot be made exact stops sampling with an RLGRuntimeError; a
prediction silently lacking the RL part is never returned.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import comfy.lora
import comfy.utils
import torch

from . import gguf_layers
from .errors import RLGRuntimeError

log = logging.getLogger("ComfyUI-RLG")


class LayerPath(str, Enum):
    """How one layer's RL part is run in a forward (see the module's docstring)."""

    HOOK = "hook"
    FUNCTION = "function"
    SWAP = "swap"
    SKIP = "skip"


# Swapping parameters changes a module for every thread that runs it; swaps are rare (a fallback,
# and patches on plain parameters), so they simply run one forward at a time.
_SWAP_LOCK = threading.Lock()


@dataclass(frozen=True)
class LowRank:
    """One plain LoRA patch: out[..., rows of the slice] += scale * up @ (down @ x)."""

    up: torch.Tensor
    down: torch.Tensor
    scale: float
    out_slice: tuple[int, int] | None  # (start, length) on the output features, for fused weights


def plain_lora(patch: tuple) -> LowRank | None:
    """The low-rank form of a ComfyUI patch entry when it is a plain LoRA, else None.

    Entry: (strength, adapter, strength_model, offset, function). Offsets on dim 0 (the output
    features: Flux's fused qkv + mlp, Qwen's gate_up) are kept as an output slice.
    """
    strength, value, strength_model, offset, function = (tuple(patch) + (None,) * 5)[:5]
    if function is not None or strength_model != 1.0:
        return None
    if offset is not None and (len(offset) != 3 or offset[0] != 0):
        return None
    if getattr(value, "name", None) == "lora" and hasattr(value, "weights"):
        weights = value.weights
    elif isinstance(value, tuple) and len(value) == 2 and value[0] == "lora":
        weights = value[1]
    else:
        return None
    up, down, alpha, mid, dora_scale, reshape = (tuple(weights) + (None,) * 6)[:6]
    if mid is not None or dora_scale is not None or reshape is not None or up.ndim != 2 or down.ndim != 2:
        return None
    rank = down.shape[0]
    scale = float(strength) * (float(alpha) / rank if alpha is not None else 1.0)
    return LowRank(up, down, scale, None if offset is None else (int(offset[1]), int(offset[2])))


def _linear_shape(module: torch.nn.Module) -> tuple[int, int] | None:
    """(out_features, in_features) of a layer that computes x @ W.T + b, judged by what it holds."""
    out_f, in_f = getattr(module, "out_features", None), getattr(module, "in_features", None)
    if isinstance(out_f, int) and isinstance(in_f, int):
        return out_f, in_f
    weight = getattr(module, "weight", None)
    if isinstance(module, torch.nn.Linear) and weight is not None and weight.ndim == 2:
        return tuple(weight.shape)
    return None


def _owns_all_its_parameters(module: torch.nn.Module) -> bool:
    own = {name for name, _ in module.named_parameters(recurse=False)}
    return all(name in own for name, _ in module.named_parameters())


@dataclass
class LayerDelta:
    """What the RL model adds to one parameter, and the ways to run it."""

    key: str  # parameter key under the BaseModel, e.g. diffusion_model.joint_blocks.0.x_block.attn.qkv.weight
    module_name: str
    param: str
    patches: list  # ComfyUI patch entries, applied by calculate_weight for the function and swap paths
    exact: LayerPath  # FUNCTION, SWAP or SKIP: the way that works without hooks
    lowrank: list[LowRank] | None = None  # set when a forward hook reproduces the patches
    _cast: dict = field(default_factory=dict, repr=False)

    @property
    def fast(self) -> LayerPath:
        return LayerPath.HOOK if self.lowrank is not None else self.exact

    def add_delta(self, out: torch.Tensor, x: torch.Tensor, rows: torch.Tensor | None) -> None:
        """out += scale * up @ (down @ x) for each patch, on its output features, in the given rows."""
        key = (x.device, x.dtype)
        terms = self._cast.get(key)
        if terms is None:  # one copy per device and dtype, the scale folded into up; threads may race, harmlessly
            terms = [((p.up * p.scale).to(x.device, x.dtype), p.down.to(x.device, x.dtype), p.out_slice)
                     for p in self.lowrank]
            self._cast[key] = terms
        if rows is not None:
            x = x[rows]
        for up, down, out_slice in terms:
            hidden = torch.nn.functional.linear(x, down)
            view = out if out_slice is None else out[..., out_slice[0]:out_slice[0] + out_slice[1]]
            if rows is None and view.is_contiguous():  # out += hidden @ up.T in one fused kernel, no temporary
                view.view(-1, view.shape[-1]).addmm_(hidden.reshape(-1, hidden.shape[-1]), up.t())
            elif rows is None:
                view.add_(torch.nn.functional.linear(hidden, up))
            else:
                view[rows] += torch.nn.functional.linear(hidden, up)

    def patched(self, weight: torch.Tensor) -> torch.Tensor:
        """weight with the RL patches applied, as ComfyUI applies them (in float32, back to its dtype).

        A tensor subclass of plain float values (ComfyUI-GGUF's F16 / F32 tensors) is patched as its values; one that
        holds quantized blocks cannot be patched here (its own layer applies patches at dequantization).
        """
        quantized = gguf_layers.quantized_format(weight)
        if quantized is not None:
            raise RLGRuntimeError(
                f"RLG cannot add the RL LoRA to {self.key}: its weight is stored quantized ({quantized}, a "
                f"{type(weight).__name__}), and this layer applied neither ComfyUI's weight functions nor its own "
                "patches for it. Load the RL model as a separate file (quantized or merged) instead.")
        weight = gguf_layers.plain(weight)
        out = comfy.lora.calculate_weight(self.patches, weight.to(torch.float32, copy=True), self.key)
        return out.to(weight.dtype)


def build_layer_deltas(extra_patches: dict[str, list], module: torch.nn.Module) -> list[LayerDelta]:
    """Classify the RL model's extra patches on `module` (the base's BaseModel, only for their kinds)."""
    layers = []
    for key, patches in extra_patches.items():
        owner_name, _, param = key.rpartition(".")
        owner = comfy.utils.get_attr(module, owner_name) if owner_name else module
        _remember(module, owner_name, owner)
        if param in ("weight", "bias") and hasattr(owner, "comfy_cast_weights"):
            exact = LayerPath.FUNCTION
        elif _owns_all_its_parameters(owner):
            exact = LayerPath.SWAP
        else:
            exact = LayerPath.SKIP
        layer = LayerDelta(key, owner_name, param, list(patches), exact)
        shape = _linear_shape(owner)
        if param == "weight" and exact != LayerPath.SKIP and shape is not None:
            lowrank = [plain_lora(p) for p in patches]
            if all(lr is not None and _fits(lr, shape) for lr in lowrank):
                layer.lowrank = lowrank
        layers.append(layer)
    return layers


def _fits(lowrank: LowRank, shape: tuple[int, int]) -> bool:
    out_f, in_f = shape
    rows = lowrank.out_slice[1] if lowrank.out_slice else out_f
    if lowrank.out_slice and lowrank.out_slice[0] + lowrank.out_slice[1] > out_f:
        return False
    return lowrank.up.shape[0] == rows and lowrank.down.shape[1] == in_f


@dataclass
class RLDelta:
    """Everything one shared-module RL model adds to the base, layer by layer."""

    layers: list[LayerDelta]
    label: str = "rl_model"

    @property
    def runnable(self) -> list[LayerDelta]:
        return [layer for layer in self.layers if layer.exact != LayerPath.SKIP]

    @property
    def skipped(self) -> list[LayerDelta]:
        return [layer for layer in self.layers if layer.exact == LayerPath.SKIP]

    @property
    def hooks_only(self) -> bool:
        """True when hooks alone run this delta: then its rows can share a forward with others."""
        return bool(self.runnable) and all(layer.fast == LayerPath.HOOK for layer in self.runnable)

    @property
    def is_empty(self) -> bool:
        return not self.runnable


class _Tally:
    """What happened to each layer during one forward."""

    def __init__(self):
        # False once the forward is over: a hook or weight function of this forward that still gets called (from a
        # graph torch.compile traced while it was installed) must do nothing then.
        self.active = True
        self.fired: dict[str, int] = {}  # hook fired with RL rows
        self.misfit: set[str] = set()  # hook fired but the input did not fit (rows not first, other shape)
        self.called: dict[str, int] = {}  # module called (for function-path layers)
        self.functions: dict[str, int] = {}  # weight function applied

    @staticmethod
    def bump(counter: dict, key: str) -> None:
        counter[key] = counter.get(key, 0) + 1


# The layers of each network an RL LoRA patches, by name, as found when the pair was built (outside any forward). A
# cache that puts a wrapper of a block list in the list's place for the length of its forward (WaveSpeed's
# first-block cache on SD3, Qwen-Image, HunyuanVideo, LTX) moves every layer's path while it runs, though the layers
# are the same modules. Only a layer still inside the running network is taken from here; the RL-pass proof (the
# tally) then shows it ran with its RL part.
_KNOWN_LAYERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _remember(model: Any, name: str, layer: torch.nn.Module) -> None:
    try:
        _KNOWN_LAYERS.setdefault(model, {})[name] = layer
    except TypeError:  # a model that takes no weak reference: resolved by name only
        pass


def _resolve(model: Any, name: str, label: str, inside: Callable[[], set[int]] | None = None) -> torch.nn.Module:
    """The layer `name` of the running model; inside() gives the ids of the modules the running network holds."""
    try:
        return comfy.utils.get_attr(model, name) if name else model
    except AttributeError:
        try:
            known = _KNOWN_LAYERS.get(model, {}).get(name)
        except TypeError:
            known = None
        if known is not None and inside is not None and id(known) in inside():
            return known
        raise RLGRuntimeError(
            f"RLG: the running model has no layer {name!r}, which {label} patches; the model being sampled is "
            "not the one the RL LoRA was loaded on. Connect rl_model from the same base model.") from None


def _module_ids(model: Any) -> Callable[[], set[int]]:
    """The ids of the modules the model holds now, walked once, when first asked for."""
    ids: set[int] = set()

    def get() -> set[int]:
        if not ids and isinstance(model, torch.nn.Module):
            ids.update(id(m) for m in model.modules())
        return ids
    return get


def _hook(layer: LayerDelta, module: torch.nn.Module, rows: torch.Tensor | None, tally: _Tally,
          thread: int) -> Callable:
    shape = _linear_shape(module)

    def hook(module, inputs, output):
        if not tally.active or threading.get_ident() != thread:  # a stale copy, or another thread's forward
            return None
        x = inputs[0] if inputs else None
        fits = (shape is not None and isinstance(x, torch.Tensor) and isinstance(output, torch.Tensor)
                and x.shape[-1] == shape[1] and output.shape[-1] == shape[0]
                and (rows is None or (x.shape[0] == rows.shape[0] and output.shape[0] == rows.shape[0])))
        if not fits:  # the batch is not first, or the layer is not what it looked like: the exact way then
            tally.misfit.add(layer.key)
            return None
        tally.bump(tally.fired, layer.key)
        out = output if not torch.is_grad_enabled() else output.clone()  # sampling: the output is ours
        layer.add_delta(out, x, rows)
        return out

    # Not wrapped in torch.compiler.disable: that wrapper is not safe for two threads sampling at once (it changed
    # results of tests/test_rl_every.py's two-thread run, 2 runs in 40). Under a compiled network no hook is installed
    # at all (runs_compiled); a hook called once its forward is over does nothing (tally.active).
    return hook


@contextmanager
def _weight_function(module: torch.nn.Module, layer: LayerDelta, tally: _Tally, thread: int) -> Iterator[None]:
    """Add a weight (or bias) function to this one module for the duration of a forward."""
    attr = f"{layer.param}_function"
    had_own = attr in module.__dict__
    previous = getattr(module, attr)  # ComfyUI's class-level default is a shared [], never appended to

    def function(weight):
        if not tally.active or threading.get_ident() != thread:
            return weight
        tally.bump(tally.functions, layer.key)
        return layer.patched(weight)

    def count_call(mod, args):
        if threading.get_ident() == thread:
            tally.bump(tally.called, layer.key)

    def applied_by_layer():  # ComfyUI-GGUF's quantized layers apply patches at dequantization, not weight functions
        if threading.get_ident() == thread:
            tally.bump(tally.functions, layer.key)

    setattr(module, attr, [*previous, function])
    handle = module.register_forward_pre_hook(count_call)
    try:
        with gguf_layers.rl_patches_on(module, layer.param, layer.key, layer.patches, applied_by_layer):
            yield
    finally:
        handle.remove()
        if had_own:
            setattr(module, attr, previous)
        else:
            delattr(module, attr)


@contextmanager
def _swapped(module: torch.nn.Module, layer: LayerDelta) -> Iterator[None]:
    if getattr(module, "_v", None) is not None:
        # Newest ComfyUI's dynamic VRAM casts this layer from a copy of its own (a VRAM page or a pinned buffer),
        # never from the parameter: a swapped parameter would be silently ignored.
        raise RLGRuntimeError(
            f"RLG cannot add the RL LoRA to {layer.key} on this ComfyUI: the layer is managed by dynamic VRAM and did "
            "not call its weight functions. Load the RL model as a separate merged file, or start ComfyUI with "
            "--disable-dynamic-vram, and report this with your ComfyUI version.")
    param = getattr(module, layer.param)
    saved = param.data
    param.data = layer.patched(param)  # the parameter itself: a quantized one says its format
    try:
        yield
    finally:
        param.data = saved


@dataclass
class Assignment:
    """One RL model in one forward: its rows (None = all rows) and the way each layer runs."""

    term: int
    delta: RLDelta
    rows: torch.Tensor | None
    ways: dict[str, LayerPath]


def _run(executor: Callable, args: tuple, kwargs: dict, model: Any, assignments: list[Assignment]) -> tuple:
    tally = _Tally()
    thread = threading.get_ident()
    handles = []
    inside = _module_ids(model)
    layers = [(a, layer, _resolve(model, layer.module_name, a.delta.label, inside), a.ways[layer.key])
              for a in assignments for layer in a.delta.runnable]
    # Swaps, and patches put on a quantized GGUF tensor itself, change the module for every thread that runs it.
    needs_lock = any(way == LayerPath.SWAP or (way == LayerPath.FUNCTION and gguf_layers.is_ggml_layer(module))
                     for _, _, module, way in layers)
    with contextlib.ExitStack() as stack:
        if needs_lock:
            stack.enter_context(_SWAP_LOCK)
        for a, layer, module, way in layers:
            if way == LayerPath.HOOK:
                handles.append(module.register_forward_hook(_hook(layer, module, a.rows, tally, thread)))
            elif way == LayerPath.FUNCTION:
                stack.enter_context(_weight_function(module, layer, tally, thread))
            else:
                stack.enter_context(_swapped(module, layer))
        try:
            out = executor(*args, **kwargs)
        finally:
            tally.active = False
            for handle in handles:
                handle.remove()
    return out, tally


def _escalate(delta: RLDelta, ways: dict[str, LayerPath], tally: _Tally) -> tuple[dict[str, LayerPath], list[str]]:
    """The ways for a re-run after a forward whose tally shows layers that did not take the RL part.

    Returns (new ways, the layers that need the re-run). A hook that did not fire, or fired on an
    input it did not fit, moves to the exact way (function, else swap); a weight function that was
    not applied although its module ran moves to a swap. A function neither applied nor called did
    not take part in the forward at all (a block skipped by SkipLayerGuidance, say), which is right.
    A function applied without its module being called is right too: ComfyUI computed the layer
    through its weight cast (newest ComfyUI's linear_input_act does), which applies it.
    """
    new = dict(ways)
    redo = []
    for layer in delta.runnable:
        way = ways[layer.key]
        missed = (way == LayerPath.HOOK and (layer.key in tally.misfit or not tally.fired.get(layer.key))) or (
            way == LayerPath.FUNCTION and tally.called.get(layer.key) and not tally.functions.get(layer.key))
        if missed:
            new[layer.key] = layer.exact if way == LayerPath.HOOK else LayerPath.SWAP
            redo.append(layer.key)
    return new, redo


class RLRowsForward:
    """APPLY_MODEL wrapper for one RL forward: adds each RL model's part to its rows, and checks it did.

    term_of_cond maps an index into the conds list of the calc_cond_batch call (what ComfyUI puts in
    transformer_options["cond_or_uncond"]) to a term: 0 for the base's rows, k for deltas[k]. It is
    stateless per call, so the same wrapper can run in several threads at once, each on its own copy
    of the model and its own share of the rows (newest ComfyUI's multi-GPU split).
    """

    def __init__(self, deltas: dict[int, RLDelta], term_of_cond: Callable[[int], int], notify: Callable[[str], None],
                 on_shared_misfit: Callable[[int], None] | None = None, single_forward: str | None = None):
        self.deltas = deltas
        self.term_of_cond = term_of_cond
        self.notify = notify
        # Told when a hook could not pick this term's rows out of a shared forward (the layer does not keep
        # the batch first): its rows are better off in a forward of their own from then on.
        self.on_shared_misfit = on_shared_misfit
        # Set (to what forbids it, e.g. "TeaCache") when the forward must not run twice: a step cache advances its
        # state at every forward and may skip layers. Then every layer takes its exact way from the start (a weight
        # function tells a layer the forward skipped from one computed without it, a hook cannot), and what would
        # need a second forward stops instead.
        self.single_forward = single_forward

    def __call__(self, executor, x, t, c_concat=None, c_crossattn=None, control=None, transformer_options=None,
                 **kwargs):
        args = (x, t, c_concat, c_crossattn, control, transformer_options)
        model = executor.class_obj
        chunks = (transformer_options or {}).get("cond_or_uncond") or []
        if not chunks or x.shape[0] % len(chunks):
            raise RLGRuntimeError("RLG: cannot tell which rows of this forward belong to the RL model "
                                  f"(cond_or_uncond {chunks!r} for {x.shape[0]} rows); please report this.")
        per_chunk = x.shape[0] // len(chunks)
        chunk_terms = [self.term_of_cond(c) for c in chunks]
        row_terms = torch.tensor(chunk_terms, device=x.device).repeat_interleave(per_chunk)
        assignments = []
        for term in sorted(set(chunk_terms) - {0}):
            delta = self.deltas[term]
            rows = None if all(c == term for c in chunk_terms) else row_terms == term
            exact = self.single_forward or runs_compiled(model)
            ways = {layer.key: layer.exact if exact else layer.fast for layer in delta.runnable}
            assignments.append(Assignment(term, delta, rows, ways))
        if not assignments:
            return executor(*args, **kwargs)

        out, tally = _run(executor, args, kwargs, model, assignments)
        for a in assignments:
            out = self._make_exact(executor, args, kwargs, model, a, out, tally)
        return out

    def _make_exact(self, executor, args, kwargs, model, a: Assignment, out: torch.Tensor,
                    tally: _Tally) -> torch.Tensor:
        """Re-run this RL model's rows the exact way where the forward's tally shows a layer missed."""
        if a.rows is not None and self.on_shared_misfit is not None and \
                any(layer.key in tally.misfit for layer in a.delta.runnable):
            self.on_shared_misfit(a.term)
        ways, redo = _escalate(a.delta, a.ways, tally)
        if redo and self.single_forward:
            raise RLGRuntimeError(
                f"RLG could not add the RL LoRA of {a.delta.label} to every layer in one forward (for example "
                f"{redo[0]}: its weight function was not applied), and {self.single_forward} on this model forbids "
                f"running the forward again. Load the RL model as a separate merged file, or remove "
                f"{self.single_forward}, and report this with your ComfyUI version.")
        for _ in range(2):  # hook -> function -> swap, at most two re-runs
            if not redo:
                return out
            exact, tally = _run(executor, args, kwargs, model, [Assignment(a.term, a.delta, None, ways)])
            out = exact if a.rows is None else torch.where(_rows_like(a.rows, out), exact, out)
            took_part = [k for k in redo if tally.functions.get(k) or tally.fired.get(k) or ways[k] == LayerPath.SWAP]
            if took_part:  # not just layers that took no part in this forward (a block skipped by SLG, say)
                self.notify(
                    f"RLG: {len(took_part)} RL LoRA layers of {a.delta.label} did not take the fast path on this "
                    f"ComfyUI (for example {took_part[0]}: computed without calling the module, or a rebuilt "
                    "copy); RLG recomputed them the exact way, which costs one more forward where it happens.")
            ways, redo = _escalate(a.delta, ways, tally)
        raise RLGRuntimeError(
            f"RLG could not add the RL LoRA of {a.delta.label} to every layer on this ComfyUI (for example {redo[0]}). "
            "Load the RL model as a separate merged file instead (ComfyUI's model merging and save nodes make one), "
            "or report this with your ComfyUI version.")


_COMPILED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def runs_compiled(model: Any) -> bool:
    """Whether the network being run holds a torch.compile'd module (the whole network, or some of its blocks).

    There a forward hook may not run (dynamo does not guard on hooks added after it traced a graph), so the RL part
    takes the exact way, which dynamo guards (a layer's weight functions), in one forward instead of two. Cached per
    network object: TorchCompileModel swaps its compiled copy in for each forward.
    """
    network = getattr(model, "diffusion_model", None)
    if not isinstance(network, torch.nn.Module):
        return False
    if network not in _COMPILED:
        _COMPILED[network] = any(hasattr(m, "_orig_mod") for m in network.modules())
    return _COMPILED[network]


def _rows_like(rows: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    return rows.to(out.device).reshape(rows.shape[0], *([1] * (out.ndim - 1)))


def layers_called(model: Any, delta: RLDelta, call: Callable[[], Any]) -> tuple[Any, list[LayerDelta]]:
    """call()'s result, and the layers of `delta` whose module ran during it (an encoding step, say)."""
    seen: dict[int, LayerDelta] = {}
    handles = []

    def noting(layer: LayerDelta) -> Callable:
        def note(module, args) -> None:  # a pre-hook: returns nothing, so the inputs stay as they are
            seen.setdefault(id(layer), layer)
        return note

    for layer in delta.runnable:
        handles.append(_resolve(model, layer.module_name, delta.label).register_forward_pre_hook(noting(layer)))
    try:
        result = call()
    finally:
        for handle in handles:
            handle.remove()
    return result, list(seen.values())


def call_with(model: Any, layers: list[LayerDelta], label: str, call: Callable[[], Any]) -> Any:
    """call() with the RL part of these layers applied the exact way (weight function, else swap), for all rows.

    For work outside the sampled forward that runs RL layers, such as newest ComfyUI's text connectors in extra_conds:
    few layers, each patched once for the call. A weight function that a layer which ran did not apply is an error.
    """
    tally = _Tally()
    thread = threading.get_ident()
    with contextlib.ExitStack() as stack:
        if any(layer.exact != LayerPath.FUNCTION for layer in layers):
            stack.enter_context(_SWAP_LOCK)
        for layer in layers:
            module = _resolve(model, layer.module_name, label)
            if layer.exact == LayerPath.FUNCTION:
                stack.enter_context(_weight_function(module, layer, tally, thread))
            else:
                stack.enter_context(_swapped(module, layer))
        result = call()
    missed = [layer.key for layer in layers if layer.exact == LayerPath.FUNCTION and tally.called.get(layer.key)
              and not tally.functions.get(layer.key)]
    if missed:
        raise RLGRuntimeError(
            f"RLG could not add the RL LoRA of {label} to {missed[0]}, which this model runs while encoding the "
            "prompt. Load the RL model as a separate merged file instead, or report this with your ComfyUI version.")
    return result
