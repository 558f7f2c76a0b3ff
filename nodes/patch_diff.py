"""What the RL model adds to the base: weight-patch and option differences.

Plain Python, no ComfyUI import. ComfyUI describes a model as a shared torch module plus
per-patcher lists of weight patches (LoRAs, diffs) and a model_options dict. An RL model built
as "base + LoRA" is a clone whose patch lists extend the base's. Only that extension is the RL
part; everything the two share must be applied once, to both passes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


class DivergentPatchesError(ValueError):
    """The RL model's weight patches do not extend the base's."""

    def __init__(self, missing_in_rl: list[str], changed: list[str]):
        self.missing_in_rl = missing_in_rl
        self.changed = changed
        super().__init__(f"{len(missing_in_rl)} patched keys missing in the RL model, {len(changed)} changed")


def _is_prefix(prefix: Sequence[Any], seq: Sequence[Any]) -> bool:
    # Clones copy the lists but keep the very same patch tuples, so identity is the test;
    # comparing tuples by value would compare tensors.
    return len(prefix) <= len(seq) and all(a is b for a, b in zip(prefix, seq, strict=False))


def extra_weight_patches(
    base_patches: Mapping[str, Sequence[Any]], rl_patches: Mapping[str, Sequence[Any]]
) -> dict[str, list[Any]]:
    """The patches the RL model applies on top of the base's, per weight key.

    Raises DivergentPatchesError when the base has patches the RL model lacks or replaced: then
    the RL model is not "base plus something", and no per-key extension describes it.
    """
    missing = [k for k in base_patches if base_patches[k] and k not in rl_patches]
    changed = [k for k in base_patches if k in rl_patches and not _is_prefix(base_patches[k], rl_patches[k])]
    if missing or changed:
        raise DivergentPatchesError(sorted(missing), sorted(changed))
    extra: dict[str, list[Any]] = {}
    for key, patches in rl_patches.items():
        added = list(patches[len(base_patches.get(key, ())):])
        if added:
            extra[key] = added
    return extra


def added_entries(current: Mapping[str, Any], reference: Mapping[str, Any], skip: tuple[str, ...] = ()) -> dict:
    """Entries of a nested options dict that `reference` does not have.

    Used on transformer_options: what a sampling run or a single call added on top of the base's
    own options (sample_sigmas, a PAG or SLG replacement for one extra pass, patches connected
    after RLG). Compared by path, not by identity, because ComfyUI 0.3.75 deep-copies options
    when it clones a patcher: a key the reference lacks is added, and so are list items past the
    reference list's length (patch lists only grow); a value at a path the reference has is the
    reference's own.
    """
    out: dict = {}
    for key, value in current.items():
        if key in skip:
            continue
        if key not in reference:
            out[key] = value
            continue
        ref = reference[key]
        if isinstance(value, Mapping) and isinstance(ref, Mapping):
            sub = added_entries(value, ref)
            if sub:
                out[key] = sub
        elif isinstance(value, list) and isinstance(ref, list) and len(value) > len(ref):
            out[key] = value[len(ref):]
    return out


def merge_entries(target: dict, additions: Mapping[str, Any]) -> dict:
    """Merge `additions` into `target` in place: dicts recursively, lists extended, leaves replaced.

    Nested dicts and lists of `target` are copied before they change, so a dict shared with a
    patcher's own options is never modified.
    """
    for key, value in additions.items():
        current = target.get(key)
        if isinstance(value, Mapping) and isinstance(current, Mapping):
            target[key] = merge_entries(dict(current), value)
        elif isinstance(value, list) and isinstance(current, list):
            target[key] = current + value
        else:
            target[key] = value
    return target
