"""RLG under ComfyUI's TorchCompileModel, before and after RLG Apply, with a LoRA RL model and a separate one.

torch.compile does not guard on forward hooks added after it traced a graph, so under a compiled network RLG's LoRA
layers take the exact way (weight functions, which it does guard), in one forward; a separate RL model under a
TorchCompileModel after RLG Apply is compiled too, its own network. What must hold: the result is exact RLG, the
base pass never runs RL layers (w = 0 is the compiled base), and once warm no step compiles anything: the compiles
are counted with dynamo's own counter of graphs.

The "eager" backend compiles nothing to machine code: dynamo traces and guards exactly as for inductor (what
recompiles, and when, is dynamo's), in a fraction of the time.
"""

from __future__ import annotations

import comfy.sample
import pytest
import torch
from comfy_extras.nodes_torch_compile import TorchCompileModel

from harness import sampling as h

BACKEND = "eager"
STEPS = 6


@pytest.fixture(autouse=True)
def fresh_dynamo():
    import torch._dynamo

    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def compiled(model):
    out = TorchCompileModel.execute(model, BACKEND)
    return out.args[0] if hasattr(out, "args") else out[0]


def graphs() -> int:
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def sample_counting(model, steps: int = STEPS):
    """(the latent, dynamo's graph count after each step)."""
    positive, negative = h.conds("sd3", 1)
    latent = h.latent("sd3", 1)
    counts = []
    out = comfy.sample.sample(model, comfy.sample.prepare_noise(latent, 42), steps, 3.0, "euler", "simple",
                              positive, negative, latent, denoise=1.0, disable_pbar=True, seed=42,
                              callback=lambda *a: counts.append(graphs()))
    return out, counts


def graph(form: str, place: str, w: float):
    """(RLG's model, the base alone as sampled there): TorchCompileModel "after" RLG Apply, or "before" it (on the
    base, and on the RL model: the LoRA loader after the compiled base, a separate model compiled itself)."""
    base = h.load_model("sd3")
    if place == "before":
        base = compiled(base)
    rl = h.with_lora(base) if form == "lora" else h.load_model("sd3", rl_seed=3)
    if place == "before" and form == "separate":
        rl = compiled(rl)
    model = h.rlg(base, rl, w)
    return (compiled(model) if place == "after" else model), base


@pytest.mark.parametrize("place", ["after", "before"])
@pytest.mark.parametrize("form", ["lora", "separate"])
def test_exact_and_no_compile_once_warm(form, place):
    base = h.load_model("sd3")
    exact = h.ksample(h.rlg(base, h.with_lora(base) if form == "lora" else h.load_model("sd3", rl_seed=3), 2.0),
                      steps=STEPS)
    model, _ = graph(form, place, 2.0)
    out, first = sample_counting(model)
    again, second = sample_counting(model)
    assert h.max_diff(out, exact) <= h.tolerance(exact, 1e-5)
    assert torch.equal(again, out)
    # Warm after the first steps of the first run (the base's graphs, then the RL pass's): then nothing compiles.
    assert first[2:] == [first[2]] * (STEPS - 2), first
    assert second == [first[-1]] * STEPS, (first, second)


@pytest.mark.parametrize("place", ["after", "before"])
@pytest.mark.parametrize("form", ["lora", "separate"])
def test_scale_0_is_the_compiled_base_and_scale_1_the_rl_model(form, place):
    """w = 1 first compiles the RL pass alone; w = 0 after it on the same graphs must still be the base (a hook traced
    into a graph would have stayed there)."""
    model1, _ = graph(form, place, 1.0)
    base = h.load_model("sd3")
    rl_alone = h.with_lora(base) if form == "lora" else h.load_model("sd3", rl_seed=3)
    out1, _ = sample_counting(model1)
    assert h.max_diff(out1, h.ksample(rl_alone, steps=STEPS)) <= h.tolerance(out1, 1e-5)
    model0, compiled_base = graph(form, place, 0.0)
    out0, _ = sample_counting(model0)
    reference = h.ksample(compiled_base if place == "before" else compiled(h.load_model("sd3")), steps=STEPS)
    assert h.max_diff(out0, reference) == 0.0


def test_a_separate_rl_model_is_compiled_too_when_the_compile_comes_after_rlg():
    """The RL pass runs its own compiled network (never the base's compiled copy), compiled once."""
    model, _ = graph("separate", "after", 2.0)
    rl = h.rlg_wrapper(model).terms[0].pair.rl_patcher
    network = rl.get_model_object("diffusion_model")
    seen = []
    handle = network.register_forward_pre_hook(lambda m, args: seen.append(torch.compiler.is_compiling()))
    try:
        sample_counting(model)
    finally:
        handle.remove()
    assert seen and all(seen)  # every RL forward ran inside a compiled frame
