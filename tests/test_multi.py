"""Several RL models at once, scale schedules, and CFG per branch, inside real ComfyUI sampling."""

from __future__ import annotations

import logging
import math

import comfy.patcher_extension
import comfy.samplers
import pytest
import torch

from comfyui_rlg.nodes.apply import attach_rlg
from comfyui_rlg.nodes.errors import RLGInputError, RLGRuntimeError
from comfyui_rlg.nodes.nodes_multi import RLGApplyMulti, RLGGuiderMulti, RLGRLModel
from comfyui_rlg.nodes.nodes_rlg import RLGApply
from comfyui_rlg.nodes.settings import OutsideWindow, RLBranchCFG, RLGSettings, Schedule
from harness import sampling as h

TOL = 1e-5


def _models(kind: str, base):
    """Two RL models of the base: two LoRAs, two separate files, or one of each."""
    if kind == "two LoRAs":
        return h.with_lora(base, lora_seed=7), h.with_lora(base, lora_seed=8, match="mlp")
    if kind == "two files":
        return h.load_model("sd3", rl_seed=1), h.load_model("sd3", rl_seed=2)
    return h.with_lora(base, lora_seed=7), h.load_model("sd3", rl_seed=2)


def _probe_points(base, steps=4, batch=2, seed=3):
    positive, negative = h.conds("sd3", batch=batch)
    sigmas = h.schedule(base, steps=steps)
    gen = torch.Generator().manual_seed(seed)
    xs = [torch.randn(h.latent("sd3", batch).shape, generator=gen) * float(s) for s in sigmas[:-1]]
    return xs, sigmas, positive, negative


@pytest.mark.parametrize("kind", ["two LoRAs", "two files", "one of each"])
@pytest.mark.parametrize("batched", [False, True])
def test_each_step_is_base_plus_the_sum_of_weighted_differences(kind, batched):
    base = h.load_model("sd3")
    rl1, rl2 = _models(kind, base)
    xs, sigmas, positive, negative = _probe_points(base)
    probe = lambda m: h.probe_predictions(m, xs, sigmas, positive, negative, cfg=4.5)  # noqa: E731
    pb, p1, p2 = probe(base), probe(rl1), probe(rl2)
    for w1, w2 in ((0.5, 1.5), (2.0, -0.7), (1.0, 1.0)):
        patched = attach_rlg(base, [(rl1, RLGSettings(w1)), (rl2, RLGSettings(w2))], batched=batched)
        for step, (b, r1, r2, g) in enumerate(zip(pb, p1, p2, probe(patched), strict=True)):
            expected = b + w1 * (r1 - b) + w2 * (r2 - b)
            assert h.max_diff(g, expected) <= 1e-4 * (1 + float(expected.abs().max())), (w1, w2, step)


def test_one_term_equals_rlg_apply_exactly():
    base = h.load_model("sd3")
    for rl in (h.with_lora(base), h.load_model("sd3", rl_seed=1)):
        for w in (0.0, 1.0, 1.6):
            one = RLGApplyMulti.execute(base, RLGRLModel.execute(rl, w, 0.0, 1.0).args[0]).args[0]
            ref = h.ksample(RLGApply.execute(base, rl, w, 0.0, 1.0).args[0], batch=2)
            assert torch.equal(h.ksample(one, batch=2), ref), w


@pytest.mark.parametrize("form", ["lora", "full"])
@pytest.mark.parametrize("window", [(0.0, 1.0), (0.2, 0.7), (0.0, 0.4), (0.6, 1.0), (0.5, 0.5)])
def test_rlg_apply_is_one_rlg_rl_model_bit_for_bit_for_every_window_schedule_and_rl_cfg(form, window):
    """One engine: RLG Apply equals RLG RL Model (outside_window "RL model") -> RLG Apply (several RL models), and
    with outside_window "off" on both they agree too, for every window, ramp and RL branch CFG."""
    base = h.load_model("sd3")
    rl = h.with_lora(base) if form == "lora" else h.load_model("sd3", rl_seed=1)
    start, end = window
    for schedule, end_scale in (("constant", 1.0), ("linear", 0.4), ("cosine", 2.5)):
        for rl_cfg in (0.0, 1.0, 2.5):
            for outside in ("RL model", "off"):
                widgets = (1.6, start, end, schedule, end_scale, rl_cfg)
                chain = RLGRLModel.execute(rl, *widgets, outside_window=outside).args[0]
                several = RLGApplyMulti.execute(base, chain).args[0]
                one = RLGApply.execute(base, rl, *widgets, outside_window=outside).args[0]
                got, ref = (h.ksample(m, batch=2, steps=5) for m in (several, one))
                assert torch.equal(got, ref), (schedule, rl_cfg, outside)
    # outside_window is what RLG Apply did before it existed: "RL model", and "off" is another image
    assert torch.equal(h.ksample(RLGApply.execute(base, rl, 1.6, 0.2, 0.7).args[0], steps=5),
                       h.ksample(RLGApply.execute(base, rl, 1.6, 0.2, 0.7, outside_window="RL model").args[0], steps=5))
    assert h.max_diff(h.ksample(RLGApply.execute(base, rl, 1.6, 0.2, 0.7, outside_window="off").args[0], steps=5),
                      h.ksample(RLGApply.execute(base, rl, 1.6, 0.2, 0.7).args[0], steps=5)) > 1e-3


def test_forwards_per_window_and_zero_terms_cost_nothing():
    base = h.load_model("sd3")
    rl1, rl2, rl3 = (h.load_model("sd3", rl_seed=s) for s in (1, 2, 3))
    counts = [h.ForwardCounter() for _ in range(4)]
    for counter, model in zip(counts, (base, rl1, rl2, rl3), strict=True):
        counter.attach(model)
    steps = 6
    sampling = base.get_model_object("model_sampling")
    sigmas = h.schedule(base, steps=steps)[:-1]
    first_half = int((sigmas >= float(sampling.percent_to_sigma(0.5))).sum())
    second_half = int((sigmas <= float(sampling.percent_to_sigma(0.5))).sum())
    terms = [(rl1, RLGSettings(1.5, 0.0, 0.5)), (rl2, RLGSettings(0.8, 0.5, 1.0)), (rl3, RLGSettings(0.0))]
    h.ksample(attach_rlg(base, terms), steps=steps)
    assert counts[1].calls == first_half and counts[2].calls == second_half
    assert counts[3].calls == 0  # weight 0: never evaluated
    assert counts[0].calls == steps  # the base runs wherever a blend or nothing happens


def test_outside_every_window_the_base_runs_alone():
    base = h.load_model("sd3")
    rl = h.load_model("sd3", rl_seed=1)
    out = h.ksample(attach_rlg(base, [(rl, RLGSettings(2.0, 1.0, 1.0))]))
    assert h.max_diff(out, h.ksample(base)) == 0.0


def test_refusals_name_the_term():
    base = h.load_model("sd3")
    with pytest.raises(RLGInputError, match="rl_models is empty"):
        RLGApplyMulti.execute(base, ())
    terms = RLGRLModel.execute(h.load_model("sd3", rl_seed=1), 1.5, 0.0, 1.0).args[0]
    terms = RLGRLModel.execute(h.load_model("sd15"), 1.5, 0.0, 1.0, rl_models=terms).args[0]
    with pytest.raises(RLGInputError, match=r"rl_models \(RL model 2\)") as err:
        RLGApplyMulti.execute(base, terms)
    assert "SD15" in str(err.value)
    # A window that ends before it starts cannot even become settings: RLG RL Model refuses it, by input name.
    with pytest.raises(RLGInputError, match="start_percent .*0.9.* is after end_percent"):
        RLGRLModel.execute(h.load_model("sd3", rl_seed=1), 1.0, 0.9, 0.1)
    with pytest.raises(RLGInputError, match="start_percent"):
        RLGSettings(1.0, 0.9, 0.1)


def test_same_rl_model_twice_adds_the_scales_and_warns_once(caplog):
    base = h.load_model("sd3")
    rl = h.with_lora(base)
    with caplog.at_level(logging.WARNING):
        twice = attach_rlg(base, [(rl, RLGSettings(0.5)), (rl, RLGSettings(1.0))])
    assert caplog.text.count("same RL model") == 1
    ref = h.ksample(h.rlg(base, rl, 1.5, 0, 1), batch=2)
    assert h.max_diff(h.ksample(twice, batch=2), ref) <= h.tolerance(ref)


def test_chaining_builds_the_list_and_leaves_the_input_unchanged():
    base = h.load_model("sd3")
    first = RLGRLModel.execute(h.with_lora(base), 1.2, 0.1, 0.9, "linear", 0.5, 1.0).args[0]
    second = RLGRLModel.execute(h.load_model("sd3", rl_seed=1), -0.5, 0.0, 1.0, rl_models=first).args[0]
    assert len(first) == 1 and len(second) == 2 and second[0] is first[0]
    settings = first[0][1]
    assert settings == RLGSettings(1.2, 0.1, 0.9, Schedule.LINEAR, 0.5, RLBranchCFG(1.0), OutsideWindow.OFF, 1)
    # defaults: the sampler's cfg, no ramp, off outside the window, the RL model at every step
    assert second[1][1] == RLGSettings(-0.5)


def test_guider_form_equals_ksampler_form():
    import nodes as comfy_nodes
    from comfy_extras.nodes_custom_sampler import Noise_RandomNoise, SamplerCustomAdvanced

    base = h.load_model("sd3")
    terms = RLGRLModel.execute(h.with_lora(base), 1.3, 0.0, 1.0).args[0]
    terms = RLGRLModel.execute(h.load_model("sd3", rl_seed=2), 0.6, 0.2, 1.0, rl_models=terms).args[0]
    positive, negative = h.conds("sd3", batch=2)
    latent = {"samples": h.latent("sd3", 2)}
    (ks,) = comfy_nodes.common_ksampler(RLGApplyMulti.execute(base, terms).args[0], 5, 4, 3.0, "euler", "simple",
                                        positive, negative, latent)
    guider = RLGGuiderMulti.execute(base, terms, positive, negative, 3.0).args[0]
    out = SamplerCustomAdvanced.execute(Noise_RandomNoise(5), guider, comfy.samplers.sampler_object("euler"),
                                        h.schedule(base, steps=4), latent).args[0]
    assert h.max_diff(ks["samples"], out["samples"]) <= TOL


# -- schedules ------------------------------------------------------------------------------------------

def _flow_percent(sigma: float, shift: float = 3.0) -> float:
    """SD3's schedule percent at a sigma, in closed form (ComfyUI: sigma = shift t / (1 + (shift - 1) t))."""
    t = sigma / (shift - (shift - 1.0) * sigma)
    return 1.0 - t


def _expected_scale(shape: str, start: float, end: float, w0: float, w1: float, sigma: float) -> float | None:
    p = _flow_percent(sigma)
    if not start - 1e-6 <= p <= end + 1e-6:
        return None
    u = min(max((p - start) / (end - start), 0.0), 1.0)
    if shape == "linear":
        return w0 + (w1 - w0) * u
    return w1 + (w0 - w1) * 0.5 * (1 + math.cos(math.pi * u))


class _Recorder:
    """Post-CFG function and APPLY_MODEL wrappers that record, model call by model call, the blended and the
    raw cond predictions (a second-order sampler evaluates the same sigma twice, on different x)."""

    def __init__(self):
        self.blended, self._since = [], {"base": None, "rl": None}

    def post_cfg(self, args):
        b, r = self._since["base"], self._since["rl"]
        self.blended.append((float(args["sigma"].flatten()[0]), args["cond_denoised"].clone(), b, r))
        self._since = {"base": None, "rl": None}
        return args["denoised"]

    def model_wrapper(self, name):
        def wrapper(executor, x, t, *args, **kwargs):
            out = executor(x, t, *args, **kwargs)
            to = kwargs["transformer_options"] if "transformer_options" in kwargs else args[3]
            chunks = to["cond_or_uncond"]
            per = out.shape[0] // len(chunks)
            cond = torch.cat([out[i * per:(i + 1) * per] for i, c in enumerate(chunks) if c == 0])
            self._since[name] = cond.clone()  # this step's call of that model
            return out
        return wrapper


@pytest.mark.parametrize("sampler", ["euler", "dpmpp_2m", "euler_ancestral", "heun"])
@pytest.mark.parametrize("shape", ["linear", "cosine"])
def test_scale_seen_at_each_sigma_follows_the_schedule(sampler, shape):
    base = h.load_model("sd3")
    rl = h.load_model("sd3", rl_seed=1)
    record = _Recorder()
    for name, model in (("base", base), ("rl", rl)):
        model.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL, "rec", record.model_wrapper(name))
    start, end, w0, w1 = 0.1, 0.9, 2.5, 0.5
    patched = RLGApply.execute(base, rl, w0, start, end, shape, w1).args[0]
    patched.set_model_sampler_post_cfg_function(record.post_cfg)
    h.ksample(patched, steps=8, sampler=sampler, cfg=3.0)
    checked = 0
    for sigma, blended, b, r in record.blended:
        expected = _expected_scale(shape, start, end, w0, w1, sigma)
        if expected is None:  # outside the window: the RL model alone
            assert b is None and h.max_diff(blended, r) <= TOL
            continue
        seen = float(((blended - b) * (r - b)).sum() / ((r - b) ** 2).sum())
        assert seen == pytest.approx(expected, abs=1e-4), (sigma, seen, expected)
        checked += 1
    assert checked >= 4


def test_constant_schedule_is_todays_result_bit_for_bit():
    base = h.load_model("sd3")
    for rl in (h.with_lora(base), h.load_model("sd3", rl_seed=1)):
        ref = h.ksample(h.rlg(base, rl, 1.7, 0.2, 0.9), batch=2)
        # schedule constant (the default): end_scale is ignored
        node = RLGApply.execute(base, rl, 1.7, 0.2, 0.9, "constant", -3.0, 0.0).args[0]
        assert torch.equal(h.ksample(node, batch=2), ref)
        assert torch.equal(h.ksample(RLGApply.execute(base, rl, 1.7, 0.2, 0.9).args[0], batch=2), ref)


# -- CFG per branch --------------------------------------------------------------------------------------

@pytest.mark.parametrize("form", ["full", "lora"])
@pytest.mark.parametrize("rl_cfg", [1.0, 2.5])
def test_rl_branch_with_its_own_cfg(form, rl_cfg):
    base = h.load_model("sd3")
    rl = h.load_model("sd3", rl_seed=1) if form == "full" else h.with_lora(base)
    xs, sigmas, positive, negative = _probe_points(base, steps=3)
    cfg, w = 4.5, 1.6
    probe = lambda m, c: h.probe_predictions(m, xs, sigmas, positive, negative, cfg=c)  # noqa: E731
    cfg_base, cfg_rl = probe(base, cfg), probe(rl, rl_cfg)
    got = probe(RLGApply.execute(base, rl, w, 0.0, 1.0, "constant", 1.0, rl_cfg).args[0], cfg)
    for b, r, g in zip(cfg_base, cfg_rl, got, strict=True):
        expected = b + w * (r - b)
        assert h.max_diff(g, expected) <= 1e-4 * (1 + float(expected.abs().max()))
    # The default (rl_cfg 0) keeps the single-CFG blend, and rl_cfg equal to cfg gives the same.
    default = probe(RLGApply.execute(base, rl, w, 0.0, 1.0).args[0], cfg)
    same = probe(RLGApply.execute(base, rl, w, 0.0, 1.0, "constant", 1.0, cfg).args[0], cfg)
    for d, s in zip(default, same, strict=True):
        assert h.max_diff(d, s) <= 1e-4 * (1 + float(d.abs().max()))
    assert h.max_diff(got[0], default[0]) > 1e-3


def test_cfg_free_rl_model_runs_without_its_uncond():
    base = h.load_model("sd3")
    rl = h.load_model("sd3", rl_seed=1)
    counter = h.ForwardCounter()
    counter.attach(rl)
    h.ksample(RLGApply.execute(base, rl, 1.5, 0.0, 1.0, "constant", 1.0, 1.0).args[0], batch=2, steps=3, cfg=4.0)
    assert counter.rows == 3 * 2  # the cond rows only: CFG(rl; 1) never needs the RL model's uncond


def test_cfg_per_branch_at_cfg_1_and_per_term():
    base = h.load_model("sd3")
    rl1, rl2 = h.load_model("sd3", rl_seed=1), h.with_lora(base)
    xs, sigmas, positive, negative = _probe_points(base, steps=3)
    probe = lambda m, c: h.probe_predictions(m, xs, sigmas, positive, negative, cfg=c)  # noqa: E731
    # At the sampler's cfg 1 ComfyUI skips the uncond; an RL branch at cfg 3 still gets its own.
    b1, r3 = probe(base, 1.0), probe(rl1, 3.0)
    got = probe(RLGApply.execute(base, rl1, 0.7, 0.0, 1.0, "constant", 1.0, 3.0).args[0], 1.0)
    for b, r, g in zip(b1, r3, got, strict=True):
        assert h.max_diff(g, b + 0.7 * (r - b)) <= 1e-4 * (1 + float(r.abs().max()))
    # Several RL models, each with its own CFG.
    cb, c1, c2 = probe(base, 4.0), probe(rl1, 1.0), probe(rl2, 4.0)
    terms = RLGRLModel.execute(rl1, 0.8, 0.0, 1.0, "constant", 1.0, 1.0).args[0]
    terms = RLGRLModel.execute(rl2, 0.5, 0.0, 1.0, rl_models=terms).args[0]
    got = probe(RLGApplyMulti.execute(base, terms).args[0], 4.0)
    for b, r1, r2, g in zip(cb, c1, c2, got, strict=True):
        expected = b + 0.8 * (r1 - b) + 0.5 * (r2 - b)
        assert h.max_diff(g, expected) <= 1e-4 * (1 + float(expected.abs().max()))


def test_other_cfg_patches_keep_working_with_cfg_per_branch():
    from comfy_extras.nodes_cfg import CFGZeroStar
    from comfy_extras.nodes_model_advanced import RescaleCFG
    from comfy_extras.nodes_pag import PerturbedAttentionGuidance as PAG

    base = h.load_model("sd15")
    rl = h.with_lora(base)
    kw = dict(family="sd15", cfg=4.0, steps=3)
    patches = {"RescaleCFG": lambda m: RescaleCFG().patch(m, 0.7)[0], "PAG": lambda m: PAG.execute(m, 2.0).args[0],
               "CFGZeroStar": lambda m: CFGZeroStar.execute(m).args[0]}
    for name, patch in patches.items():
        # rl_cfg equal to the sampler's cfg is the default blend, under every CFG patch placed after RLG
        default = h.ksample(patch(RLGApply.execute(base, rl, 1.5, 0.0, 1.0).args[0]), **kw)
        same = h.ksample(patch(RLGApply.execute(base, rl, 1.5, 0.0, 1.0, "constant", 1.0, 4.0).args[0]), **kw)
        assert h.max_diff(default, same) <= 1e-3 * (1 + float(default.abs().max())), name
        free = h.ksample(patch(RLGApply.execute(base, rl, 1.5, 0.0, 1.0, "constant", 1.0, 1.0).args[0]), **kw)
        assert torch.isfinite(free).all() and h.max_diff(free, default) > 1e-4, name


def test_cfg_per_branch_refuses_guiders_without_standard_cfg():
    from comfy_extras.nodes_custom_sampler import DualCFGGuider, Noise_RandomNoise, SamplerCustomAdvanced

    base = h.load_model("sd3")
    rl = h.load_model("sd3", rl_seed=1)
    positive, negative = h.conds("sd3")
    patched = RLGApply.execute(base, rl, 1.5, 0.0, 1.0, "constant", 1.0, 1.0).args[0]
    guider = DualCFGGuider.execute(patched, positive, positive, negative, 4.0, 2.0, "regular").args[0]
    with pytest.raises(RLGRuntimeError, match="rl_cfg"):
        SamplerCustomAdvanced.execute(Noise_RandomNoise(1), guider, comfy.samplers.sampler_object("euler"),
                                      h.schedule(base, steps=2), {"samples": h.latent("sd3")})
