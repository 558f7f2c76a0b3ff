"""The pure blend / schedule / settings / patch-diff code, without a model."""

import math

import pytest
import torch

from comfyui_rlg.nodes.errors import RLGInputError
from comfyui_rlg.nodes.patch_diff import DivergentPatchesError, added_entries, extra_weight_patches, merge_entries
from comfyui_rlg.nodes.rlg_math import (
    SigmaWindow,
    blend_many,
    blend_prediction_lists,
    blend_predictions,
    branch_cfg_cond,
    combine,
    plan_step,
    ramp,
    sigma_to_percent,
    term_weight,
    with_branch_cfg,
)
from comfyui_rlg.nodes.settings import (
    OutsideWindow,
    RLBranchCFG,
    RLGSettings,
    Schedule,
    check_scale,
    check_window,
)


@pytest.mark.parametrize("w", [-1.0, 0.0, 0.5, 1.0, 2.0, 3.0])
def test_blend_is_linear_combination(w):
    base, rl = torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3)
    out = blend_predictions(base, rl, w)
    assert torch.allclose(out, (1 - w) * base + w * rl, atol=1e-6)


def test_blend_endpoints():
    # w = 1 is rl only up to rounding (base + (rl - base)); plan_step runs the RL model alone there.
    base, rl = torch.randn(5, 7), torch.randn(5, 7)
    assert torch.equal(blend_predictions(base, rl, 0.0), base)
    assert torch.allclose(blend_predictions(base, rl, 1.0), rl, atol=1e-6)


def test_blend_commutes_with_cfg():
    # Blending cond and uncond before CFG equals the reference code's CFG(base) + w (CFG(rl) - CFG(base)).
    bc, bu, rc, ru = (torch.randn(3, 3) for _ in range(4))
    w, cfg = 1.6, 4.5
    cfg_fn = lambda c, u: u + cfg * (c - u)  # noqa: E731
    before = cfg_fn(*blend_prediction_lists([bc, bu], [rc, ru], w))
    after = cfg_fn(bc, bu) + w * (cfg_fn(rc, ru) - cfg_fn(bc, bu))
    assert torch.allclose(before, after, atol=1e-5)


def test_blend_lists_must_match():
    with pytest.raises(ValueError):
        blend_prediction_lists([torch.zeros(1)], [torch.zeros(1), torch.zeros(1)], 0.5)


def test_plan_inside_and_outside_window():
    window = SigmaWindow(sigma_start=0.8, sigma_end=0.2)
    off = RLGSettings(2.0, 0.2, 0.8)  # outside_window "off", RLG RL Model's default
    weight = lambda sigma, settings=off: term_weight(settings, sigma, window, lambda s: 1 - s)  # noqa: E731
    assert weight(0.9) is None and weight(0.1) is None
    assert weight(0.8) == 2.0 and weight(0.2) == 2.0  # inclusive ends
    # Outside its window an "off" term is off, and with none on the base runs alone.
    assert (plan_step([None]).run_base, plan_step([None]).terms) == (True, ())
    # outside_window "RL model" (RLG Apply's default): scale 1 there, so one RL model runs alone.
    rl_model = RLGSettings(2.0, 0.2, 0.8, outside_window=OutsideWindow.RL_MODEL)
    outside = plan_step([weight(0.9, rl_model)])
    assert (outside.run_base, outside.terms) == (False, ((0, 1.0),))
    inside = plan_step([weight(0.5, rl_model)])
    assert (inside.run_base, inside.terms) == (True, ((0, 2.0),))


def test_plan_skips_the_model_a_weight_of_zero_ignores():
    assert (plan_step([0.0]).run_base, plan_step([0.0]).run_rl) == (True, False)
    assert (plan_step([1.0]).run_base, plan_step([1.0]).run_rl) == (False, True)
    # The base's coefficient is 1 - sum w_i: zero for weights that sum to one.
    assert not plan_step([0.25, 0.75]).run_base
    assert plan_step([0.0, 2.0, None]).terms == ((1, 2.0),)
    rows = torch.tensor([0.0, 1.0, 2.0])  # a scale per batch row (a sweep): each model runs if any row needs it
    plan = plan_step([rows])
    assert plan.run_base and plan.terms[0][1] is rows
    assert not plan_step([torch.ones(3)]).run_base and not plan_step([torch.zeros(3)]).run_rl


def test_window_from_percents_maps_start_to_larger_sigma():
    window = SigmaWindow.from_percents(0.25, 0.75, lambda p: 1.0 - p)
    assert window.sigma_start == 0.75 and window.sigma_end == 0.25


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, 10.5, -11, "2x", None])
def test_bad_scale_is_refused_by_name(bad):
    with pytest.raises(RLGInputError, match="rlg_scale"):
        check_scale(bad)


def test_several_models_blend_as_the_sum_of_weighted_differences():
    base, r1, r2 = (torch.randn(2, 3, 4) for _ in range(3))
    out = blend_many(base, [r1, r2], [0.5, 2.0])
    assert torch.allclose(out, base + 0.5 * (r1 - base) + 2.0 * (r2 - base), atol=1e-6)
    assert torch.equal(blend_many(base, [r1], [1.7]), blend_predictions(base, r1, 1.7))  # one term: the same op
    # weights summing to one need no base; a single weight of one is that model, bit for bit
    assert torch.allclose(combine(None, [r1, r2], [0.25, 0.75]), 0.25 * r1 + 0.75 * r2)
    assert combine(None, [r1], [1.0]) is r1
    rows = torch.tensor([0.0, 2.0])  # a scale per batch row
    out = blend_predictions(base, r1, rows)
    assert torch.equal(out[0], base[0]) and torch.allclose(out[1], base[1] + 2 * (r1[1] - base[1]))


def test_sigma_to_percent_inverts_percent_to_sigma():
    shift = 3.0
    to_sigma = lambda p: shift * (1 - p) / (1 + (shift - 1) * (1 - p))  # noqa: E731  (SD3's flow)
    for p in (0.0, 0.1, 0.37, 0.5, 0.99, 1.0):
        assert sigma_to_percent(to_sigma(p), to_sigma) == pytest.approx(p, abs=1e-6)
    assert sigma_to_percent(5.0, to_sigma) == 0.0 and sigma_to_percent(-1.0, to_sigma) == 1.0


def test_schedules_go_from_the_scale_to_the_end_scale():
    for shape in (Schedule.LINEAR, Schedule.COSINE):
        at = lambda u, shape=shape: ramp(shape, 2.0, 0.5, u)  # noqa: E731
        assert at(0.0) == pytest.approx(2.0) and at(1.0) == pytest.approx(0.5)
        assert at(-1.0) == pytest.approx(2.0) and at(2.0) == pytest.approx(0.5)
        assert at(0.5) == pytest.approx(1.25)
    assert ramp(Schedule.LINEAR, 2.0, 0.5, 0.25) == pytest.approx(1.625)
    assert ramp(Schedule.COSINE, 2.0, 0.5, 0.25) == pytest.approx(0.5 + 1.5 * 0.5 * (1 + math.cos(math.pi / 4)))
    assert ramp(Schedule.CONSTANT, 2.0, 0.5, 0.7) == 2.0
    with pytest.raises(RLGInputError, match="schedule is 'exp'"):
        RLGSettings(1.0, schedule="exp")
    settings = RLGSettings(3.0, 0.2, 0.6, "linear", 1.0)
    window = SigmaWindow(0.8, 0.4)
    assert term_weight(settings, 0.6, window, lambda s: 1 - s) == pytest.approx(2.0)  # percent 0.4, half way
    # a constant schedule never ramps, whatever end_scale says; neither does a sweep's scale per row
    assert not RLGSettings(3.0, schedule="constant", end_scale=1.0).ramps
    assert not RLGSettings(torch.tensor([1.0, 2.0])).ramps


def test_cfg_per_branch_is_cfg_of_each_branch_blended():
    bc, bu, rc, ru = (torch.randn(3, 3) for _ in range(4))
    cfg_fn = lambda c, u, scale: u + scale * (c - u)  # noqa: E731
    w, cfg = 1.6, 4.5
    for rl_cfg, rl_uncond in ((1.0, None), (2.5, ru), (4.5, ru)):
        cond = blend_predictions(bc, rc, w)
        uncond = bu if rl_uncond is None else blend_predictions(bu, ru, w)
        cond = with_branch_cfg(cond, bu, [(w, rc, rl_uncond, rl_cfg)], cfg)
        target_rl = rc if rl_uncond is None else cfg_fn(rc, ru, rl_cfg)
        expected = cfg_fn(bc, bu, cfg) + w * (target_rl - cfg_fn(bc, bu, cfg))
        assert torch.allclose(cfg_fn(cond, uncond, cfg), expected, atol=1e-4)
    assert torch.allclose(branch_cfg_cond(bu, rc, ru, cfg, cfg), rc, atol=1e-6)  # its own cfg = the sampler's


def test_window_order_and_range_are_checked_by_name():
    assert check_window(0.2, 0.2) == (0.2, 0.2)
    with pytest.raises(RLGInputError, match="start_percent .* end_percent"):
        check_window(0.7, 0.3)
    with pytest.raises(RLGInputError, match="end_percent"):
        check_window(0.0, 1.5)
    with pytest.raises(RLGInputError, match="start_percent"):
        check_window(math.nan, 1.0)


def test_extra_weight_patches_is_the_extension():
    a, b, c = object(), object(), object()
    base = {"k1": [a], "k2": [b]}
    rl = {"k1": [a, c], "k2": [b], "k3": [c]}
    assert extra_weight_patches(base, rl) == {"k1": [c], "k3": [c]}
    assert extra_weight_patches(base, dict(base)) == {}


def test_divergent_patches_are_reported():
    a, b = object(), object()
    with pytest.raises(DivergentPatchesError) as err:
        extra_weight_patches({"k1": [a], "k2": [a]}, {"k1": [b]})
    assert err.value.missing_in_rl == ["k2"] and err.value.changed == ["k1"]


def test_added_entries_by_path():
    f, g, h = object(), object(), object()
    reference = {"patches": {"attn1_patch": [f]}, "rope": {"x": 1}}
    current = {
        "patches": {"attn1_patch": [f, g]},
        "patches_replace": {"attn1": {("middle", 0): h}},
        "rope": {"x": 2},
        "sample_sigmas": 3,
        "wrappers": {"w": 1},
    }
    assert added_entries(current, reference, skip=("wrappers",)) == {
        "patches": {"attn1_patch": [g]},
        "patches_replace": {"attn1": {("middle", 0): h}},
        "sample_sigmas": 3,
    }


def test_merge_entries_does_not_touch_shared_dicts():
    shared = {"a": [1]}
    target = {"patches": shared}
    merge_entries(target, {"patches": {"a": [2], "b": [3]}, "x": 1})
    assert target == {"patches": {"a": [1, 2], "b": [3]}, "x": 1}
    assert shared == {"a": [1]}


def test_settings_are_checked_where_they_are_made():
    """Every limit, once: an RLGSettings that exists is usable, and a bad value names its input."""
    assert RLGSettings.from_widgets(1.5, 0.0, 1.0, "constant", 3.0, 0.0) == RLGSettings(1.5)  # end_scale unused
    assert RLGSettings.from_widgets(1.5, 0, 1, rl_cfg=1.0).rl_cfg == RLBranchCFG(1.0)
    assert not RLBranchCFG.from_widget(0).own and RLBranchCFG.from_widget(2.5).needs_uncond
    assert not RLBranchCFG.from_widget(1).needs_uncond
    for kwargs, name in ((dict(rlg_scale=11), "rlg_scale"), (dict(end_scale=-12, schedule="linear"), "end_scale"),
                         (dict(rl_cfg=101), "rl_cfg"), (dict(rl_cfg=-1), "rl_cfg"), (dict(rl_every=0), "rl_every"),
                         (dict(rl_every=9), "rl_every"), (dict(rl_every=2.5), "rl_every"),
                         (dict(outside_window="sometimes"), "outside_window"), (dict(schedule="exp"), "schedule"),
                         (dict(start_percent=0.8, end_percent=0.2), "start_percent")):
        widgets = dict(rlg_scale=1.0, start_percent=0.0, end_percent=1.0) | kwargs
        with pytest.raises(RLGInputError, match=name):
            RLGSettings.from_widgets(**widgets)
    with pytest.raises(RLGInputError, match="rlg_scale"):
        RLGSettings(torch.tensor([1.0, 12.0]))
