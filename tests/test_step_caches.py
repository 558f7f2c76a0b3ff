"""RLG under the step caches users stack on it: EasyCache, LazyCache (ComfyUI), TeaCache, FBCache (WaveSpeed).

A tiny FLUX.1 (the caches engage on FLUX), a LoRA RL model on the base's module and a separate RL model, the cache
node wherever users put it: after RLG Apply, on the base before the RL LoRA loader, on the RL model, on each model.
What must hold (nodes/step_caches.py):
* nothing reused (threshold 0, or a tiny one where the node hands 0 back untouched): exact RLG;
* w = 0 is the base with that cache, w = 1 the RL model with that cache (or without, where the graph puts none on it);
* past w = 1, each model is cached from its own history: RLG with one cache node on the shared module equals RLG with
  two separately loaded models, each under its own cache node, and both models did reuse steps;
* what cannot hold (TeaCache / FBCache after RLG Apply with a separate RL model, LazyCache on the RL model alone) is
  refused before any forward, by name.
The third-party caches are skipped, with their own error, on hosts where they fail without RLG.
"""

from __future__ import annotations

import functools
import logging
import re

import comfy.sample
import pytest
import torch

from comfyui_rlg.nodes.errors import RLGInputError, RLGRuntimeError
from harness import sampling as h
from harness import step_cache_nodes as scn
from harness import tiny_families as tf
from harness.tiny_families import free_models, one_thread  # noqa: F401 (autouse fixtures)

STEPS = 12
CACHES = ("EasyCache", "LazyCache", "TeaCache", "ApplyFBCacheOnModel")
LORA_SEED, RL_SEED = 7, 3


def ksample(model, steps: int = STEPS, seed: int = 42, batch: int = 1):
    positive, negative = tf.conds("flux", batch)
    latent = tf.latent("flux", batch)
    return comfy.sample.sample(model, comfy.sample.prepare_noise(latent, seed), steps, 3.0, "euler", "simple",
                               positive, negative, latent, denoise=1.0, disable_pbar=True, seed=seed)


@functools.cache
def _lora() -> dict:
    return tf.module_lora(tf.load("flux"), LORA_SEED, "kohya", scale=2.0)


def base_model():
    return tf.load("flux")


def with_rl_lora(model):
    """model -> LoraLoaderModelOnly with the RL LoRA: a clone sharing model's module."""
    return tf.load_lora(model, _lora())


def separate_rl():
    return tf.load("flux", rl_seed=RL_SEED)


def exact_pair(form: str):
    """(base, RL model) of the form, without any cache: exact RLG's inputs."""
    base = base_model()
    return base, with_rl_lora(base) if form == "lora" else separate_rl()


class Forwards:
    """Forwards a network computed in full: its last single block runs only where no cache served the step."""

    def __init__(self, patcher):
        self.module = patcher.model.diffusion_model.single_blocks[-1]
        self.calls = 0

    def __enter__(self):
        self.handle = self.module.register_forward_pre_hook(lambda *a: setattr(self, "calls", self.calls + 1))
        return self

    def __exit__(self, *exc):
        self.handle.remove()


@functools.cache
def _runs_alone(name: str) -> None:
    """The cache on the tiny FLUX without RLG: raises what the pack raises on this host by itself."""
    node = scn.FACTORIES[name]()
    ksample(node.apply(base_model(), node.reusing), steps=3)


@pytest.fixture(params=CACHES)
def cache(request) -> scn.CacheNode:
    return scn.get(request.param, probe=lambda node: _runs_alone(node.name))


def graph(cache: scn.CacheNode, form: str, place: str, w: float, threshold: float, rl_every: int = 1, **kw):
    """(RLG's model, whether the base is cached, whether the RL model is cached) for the cache at `place`.

    form: "lora" (base -> LoRA loader -> rl_model, one module) or "separate" (another file).
    place: "after" RLG Apply, on the "base" before the LoRA loader, on the "rl" model, on "each" model.
    """
    def apply(model):
        return cache.apply(model, threshold)

    base = base_model()
    if place == "base":
        base = apply(base)
    rl = with_rl_lora(base) if form == "lora" else separate_rl()
    if place in ("rl", "each"):
        rl = apply(rl)
    if place == "each":
        base = apply(base)
    model = h.rlg(base, rl, w, rl_every=rl_every, **kw)
    if place == "after":
        model = apply(model)
    whole = cache.name == "LazyCache"  # it caches the sampled model's whole guided step: RLG's, whatever is inside
    base_cached = place in ("after", "base", "each")
    rl_cached = place in ("after", "rl", "each") or (place == "base" and (form == "lora" or whole))
    return model, base_cached, rl_cached


PLACES = [("lora", "after"), ("lora", "base"), ("lora", "rl"), ("separate", "after"), ("separate", "base"),
          ("separate", "rl"), ("separate", "each")]


def _refused(cache: scn.CacheNode, form: str, place: str) -> bool:
    return (place == "after" and form == "separate" and cache.module_bound) or \
        (place == "rl" and cache.name == "LazyCache")


@pytest.mark.parametrize(("form", "place"), PLACES)
def test_nothing_reused_is_exact_rlg(cache, form, place):
    if _refused(cache, form, place):
        pytest.skip("refused (test_refusals_name_the_cache_and_the_fix)")
    exact = ksample(h.rlg(*exact_pair(form), 2.0))
    model, _, _ = graph(cache, form, place, 2.0, cache.nothing_reused)
    out = ksample(model)
    assert h.max_diff(out, exact) <= h.tolerance(exact, 1e-5), (cache.name, form, place)


@pytest.mark.parametrize(("form", "place"), PLACES)
def test_scale_0_is_the_base_and_scale_1_the_rl_model_with_their_caches(cache, form, place):
    if _refused(cache, form, place):
        pytest.skip("refused (test_refusals_name_the_cache_and_the_fix)")
    model0, base_cached, rl_cached = graph(cache, form, place, 0.0, cache.reusing)
    model1, _, _ = graph(cache, form, place, 1.0, cache.reusing)
    base_alone = base_model()
    rl_alone = with_rl_lora(base_model()) if form == "lora" else separate_rl()
    ref0 = ksample(cache.apply(base_alone, cache.reusing) if base_cached else base_alone)
    ref1 = ksample(cache.apply(rl_alone, cache.reusing) if rl_cached else rl_alone)
    out0, out1 = ksample(model0), ksample(model1)
    assert h.max_diff(out0, ref0) == 0.0, (cache.name, form, place)
    # A LoRA RL pass under a cache adds the LoRA by weight function, as ComfyUI merges it: the RL model itself.
    assert h.max_diff(out1, ref1) <= h.tolerance(ref1, 1e-5), (cache.name, form, place)
    assert h.max_diff(ref0, ksample(base_model())) > 1e-3 or not base_cached, "the cache reused nothing: no test"


@pytest.mark.parametrize("place", ["after", "base"])
def test_each_model_is_cached_from_its_own_history(cache, place, caplog):
    """Past w = 1, one cache node on the shared module equals two separately loaded models under a cache node each.

    The reference: the same LoRA on a second copy of the base (its own module: a separate RL model, bit for bit the
    LoRA RL model's weights), and the cache on each model before RLG (the one placement every cache supports)."""
    if cache.name == "LazyCache":
        pytest.skip("LazyCache caches RLG's whole step, never one model's pass")
    base_ref = cache.apply(base_model(), cache.reusing)
    rl_ref = cache.apply(with_rl_lora(base_model()), cache.reusing)
    with Forwards(base_ref) as base_forwards, Forwards(rl_ref) as rl_forwards:
        with caplog.at_level(logging.INFO):
            ref = ksample(h.rlg(base_ref, rl_ref, 2.0))
    ref_counts = _logged_skips(caplog.text)
    caplog.clear()
    assert 0 < base_forwards.calls < STEPS and 0 < rl_forwards.calls < STEPS, "each model must reuse some steps"

    model, _, _ = graph(cache, "lora", place, 2.0, cache.reusing)
    with caplog.at_level(logging.INFO):
        out = ksample(model)
    assert h.max_diff(out, ref) <= h.tolerance(ref, 1e-5), (cache.name, place)
    assert h.max_diff(out, ksample(h.rlg(*exact_pair("lora"), 2.0))) > 1e-3  # it did cache
    if cache.name == "EasyCache":  # its own log for the base, RLG's for the RL model: each step counted once
        assert _logged_skips(caplog.text) == ref_counts
        assert ref_counts["base"] == STEPS - base_forwards.calls and ref_counts["rl_model"] == STEPS - rl_forwards.calls


def _logged_skips(text: str) -> dict[str, int]:
    """{"base": EasyCache's own count, "rl_model": RLG's line for the RL model's holder} from the log.

    With two cache nodes (the reference), EasyCache logs both models itself: the first line is the base's."""
    rl = re.findall(r"EasyCache \(rl_model, the RL model's own\) - skipped (\d+)/(\d+) steps", text)
    own = re.findall(r"EasyCache - skipped (\d+)/(\d+) steps", text)
    for _, total in rl + own:
        assert int(total) == STEPS
    counts = [int(n) for n, _ in own] + [int(n) for n, _ in rl]
    return {"base": counts[0], "rl_model": counts[1]} if len(counts) == 2 else {"lines": len(counts)}


def test_separate_rl_model_under_easycache_after_rlg_gets_its_own_holder(caplog):
    """EasyCache after RLG Apply caches a separate RL model's pass too, as one EasyCache on each model would."""
    cache = scn.get("EasyCache")
    reference = ksample(h.rlg(cache.apply(base_model(), cache.reusing), cache.apply(separate_rl(), cache.reusing), 2.0))
    model, _, _ = graph(cache, "separate", "after", 2.0, cache.reusing)
    rl = h.rlg_wrapper(model).terms[0].pair.rl_patcher
    with Forwards(rl) as rl_forwards, caplog.at_level(logging.INFO):
        out = ksample(model)
    assert h.max_diff(out, reference) == 0.0
    assert 0 < rl_forwards.calls < STEPS
    skipped = STEPS - rl_forwards.calls
    assert f"EasyCache (rl_model, the RL model's own) - skipped {skipped}/{STEPS} steps" in caplog.text


@pytest.mark.parametrize("name", ["TeaCache", "ApplyFBCacheOnModel"])
def test_refusals_name_the_cache_and_the_fix(name):
    """A cache bound to the base's network after RLG Apply cannot cache a separate RL model: refused before any
    forward, naming the node and saying where to put it instead."""
    cache = scn.get(name, probe=lambda node: _runs_alone(node.name))
    model, _, _ = graph(cache, "separate", "after", 2.0, cache.reusing)
    with Forwards(model) as forwards, pytest.raises(RLGRuntimeError) as err:
        ksample(model)
    assert forwards.calls == 0
    text = str(err.value)
    assert name in text and "separate model" in text and f"one {name} on model and another on rl_model" in text


def test_lazycache_on_the_rl_model_alone_is_refused():
    cache = scn.get("LazyCache")
    with pytest.raises(RLGInputError, match="LazyCache is on rl_model only.*after RLG Apply"):
        h.rlg(base_model(), cache.apply(with_rl_lora(base_model()), cache.reusing), 2.0)


@pytest.mark.parametrize("form", ["lora", "separate"])
def test_rl_every_under_a_cache(cache, form):
    """rl_every 2 under a cache: the RL model's cache sees the steps it runs at. Nothing reused: rl_every's own
    result; reusing: the same as two separately loaded models under a cache node each, with rl_every 2."""
    if cache.name == "LazyCache" or (form == "separate" and cache.module_bound):
        place = "after" if cache.name == "LazyCache" else "each"
    else:
        place = "after"
    exact = ksample(h.rlg(*exact_pair(form), 2.0, rl_every=2))
    model, _, _ = graph(cache, form, place, 2.0, cache.nothing_reused, rl_every=2)
    assert h.max_diff(ksample(model), exact) <= h.tolerance(exact, 1e-5)
    if cache.name == "LazyCache":
        return
    rl_ref = with_rl_lora(base_model()) if form == "lora" else separate_rl()
    ref = ksample(h.rlg(cache.apply(base_model(), cache.reusing), cache.apply(rl_ref, cache.reusing), 2.0, rl_every=2))
    model, _, _ = graph(cache, form, place, 2.0, cache.reusing, rl_every=2)
    assert h.max_diff(ksample(model), ref) <= h.tolerance(ref, 1e-5)


def test_batched_forwards_never_mix_two_models_under_a_cache(cache):
    """Off the CPU, RLG runs the base's and a LoRA RL model's rows in one forward; under a step cache that would be one
    reuse decision for both models, so each model's rows get a forward of their own there."""
    model, _, _ = graph(cache, "lora", "after", 2.0, cache.reusing, batched=True)
    rows = []
    network = model.model.diffusion_model
    handle = network.register_forward_pre_hook(lambda m, args, kwargs: rows.append((args[0] if args else kwargs["x"])
                                                                                 .shape[0]), with_kwargs=True)
    try:
        ksample(model, batch=2)
    finally:
        handle.remove()
    assert rows and set(rows) == {4}  # cond and uncond of a batch of 2: one model's rows, never 8


def test_batched_forwards_still_share_without_a_cache():
    """The counterpart: without a cache, batched=True does put both models' rows in one forward (the test above
    would pass for nothing otherwise)."""
    model = h.rlg(*exact_pair("lora"), 2.0, batched=True)
    rows = []
    handle = model.model.diffusion_model.register_forward_pre_hook(
        lambda m, args, kwargs: rows.append((args[0] if args else kwargs["x"]).shape[0]), with_kwargs=True)
    try:
        ksample(model, batch=2)
    finally:
        handle.remove()
    assert 8 in rows


class ApplyFBCacheOnModel:
    """A stand-in of WaveSpeed's node with the same names and none of its closure state (another version of it)."""

    @staticmethod
    def patch():
        def model_unet_function_wrapper(model_function, kwargs):
            return model_function(kwargs["input"], kwargs["timestep"], **kwargs["c"])
        return model_unet_function_wrapper


def test_a_cache_rlg_does_not_know_stops_instead_of_being_shared():
    """A first-block cache whose wrapper keeps none of the state RLG knows (another version of the pack, say) stops
    sampling with the reason, rather than serving one model from the other's cache."""
    from comfyui_rlg.nodes import step_caches

    wrapper = ApplyFBCacheOnModel.patch()
    (found,) = step_caches.found({"model_function_wrapper": wrapper})
    with pytest.raises(RLGRuntimeError, match="ApplyFBCacheOnModel state.*not the ApplyFBCacheOnModel RLG knows"):
        with found.own_state({}, {}, None):
            pass
    base = base_model()
    base.set_model_unet_function_wrapper(wrapper)
    with pytest.raises(RLGRuntimeError, match="ApplyFBCacheOnModel"):
        ksample(h.rlg(base, with_rl_lora(base), 2.0), steps=2)


def test_the_cache_state_of_a_run_ends_with_it():
    """Nothing of a run's caches outlives it: the next run starts from fresh states (the same result again)."""
    cache = scn.get("EasyCache")
    model, _, _ = graph(cache, "lora", "after", 2.0, cache.reusing)
    first = ksample(model)
    assert torch.equal(ksample(model), first)


def test_rl_every_evaluates_again_after_steps_a_whole_step_cache_served():
    """LazyCache serves RLG's whole step, RL model included, so an rl_every evaluation step can pass with no call at
    all. The next call then evaluates the RL model instead of stretching its estimate over the gap: at every step
    RLG computes, the RL model's last evaluation is less than rl_every steps back."""
    import comfy.samplers

    cache = scn.get("LazyCache")
    base, rl = base_model(), separate_rl()
    model = cache.apply(h.rlg(base, rl, 2.0, rl_every=2), cache.reusing)
    schedule = [float(s) for s in comfy.samplers.calculate_sigmas(base.get_model_object("model_sampling"), "simple",
                                                                    STEPS)]
    steps = {"base": [], "rl": []}

    def record(who):
        def hook(module, args, kwargs):
            t = float((args[1] if len(args) > 1 else kwargs["timesteps"]).flatten()[0])
            steps[who].append(min(range(STEPS), key=lambda i: abs(schedule[i] - t)))
        return hook

    hooks = [p.model.diffusion_model.register_forward_pre_hook(record(who), with_kwargs=True)
             for who, p in (("base", base), ("rl", rl))]
    try:
        ksample(model)
    finally:
        for handle in hooks:
            handle.remove()
    assert len(steps["base"]) < STEPS  # LazyCache served some steps whole
    assert any(s % 2 for s in steps["rl"]), steps  # an evaluation off the every-2nd pattern: after a served step
    for s in steps["base"]:
        assert max(e for e in steps["rl"] if e <= s) >= s - 1, (s, steps)


def test_first_block_cache_that_wraps_the_block_list_while_it_runs():
    """On SD3 (and Qwen-Image, HunyuanVideo, LTX) the first-block cache puts a wrapper of the network's block list in
    the list's place for the length of its forward, so every layer's path changes while it runs; the layers are the
    same modules. The LoRA RL pass still finds and runs each of them: nothing reused is exact RLG, and with steps
    reused each model is cached from its own history (equal to two separately loaded models, a cache on each)."""
    steps, threshold = 12, 0.8  # 0.8: the tiny SD3 computes a few of its 12 steps in full

    def sample(model):
        return h.ksample(model, "sd3", steps=steps)

    def forwards(patcher) -> Forwards:
        counter = Forwards.__new__(Forwards)
        counter.module, counter.calls = patcher.model.diffusion_model.joint_blocks[-1], 0
        return counter

    cache = scn.get("ApplyFBCacheOnModel", probe=lambda node: sample(node.apply(h.load_model("sd3"), 0.8)))
    base = h.load_model("sd3")
    exact = sample(h.rlg(base, h.with_lora(base), 2.0))
    base = h.load_model("sd3")
    out = sample(cache.apply(h.rlg(base, h.with_lora(base), 2.0), cache.nothing_reused))
    assert h.max_diff(out, exact) <= h.tolerance(exact, 1e-5)

    base_ref = cache.apply(h.load_model("sd3"), threshold)
    rl_ref = cache.apply(h.with_lora(h.load_model("sd3")), threshold)
    with forwards(base_ref) as base_forwards, forwards(rl_ref) as rl_forwards:
        ref = sample(h.rlg(base_ref, rl_ref, 2.0))
    assert 0 < base_forwards.calls < steps and 0 < rl_forwards.calls < steps, "each model must reuse some steps"
    base = h.load_model("sd3")
    out = sample(cache.apply(h.rlg(base, h.with_lora(base), 2.0), threshold))
    assert h.max_diff(out, ref) <= h.tolerance(ref, 1e-5)
    assert h.max_diff(out, exact) > 1e-3  # it did cache
