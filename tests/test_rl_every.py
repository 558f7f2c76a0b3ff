"""rl_every: the RL model at every n-th step of its window, its correction rl - base estimated in between.

The reference estimate here is written independently of the pack: the RL model is evaluated at the calls whose
sigma is a schedule sigma of an evaluation step (the window's first step, then every n-th); every other call gets
base + w * d, with d the correction extrapolated linearly in sigma from the last two evaluations (held where
there is one). Because CFG and the extrapolation are both linear, the guided prediction of such a call is the
guided base plus w times the extrapolated guided correction, which is what the tests compute from the base and
the RL model evaluated alone at the same (x, sigma). The correction is extrapolated as a correction of the noise
prediction (rlg_math.CorrectionHistory): d / sigma linear in sigma, d = sigma * that.
"""

from __future__ import annotations

import math
import threading

import comfy.k_diffusion.sampling as k_sampling
import comfy.patcher_extension
import comfy.sample
import comfy.samplers
import pytest
import torch

from comfyui_rlg.nodes.nodes_rlg import RLGApply
from comfyui_rlg.nodes.nodes_sweep import RLGScaleSweep
from comfyui_rlg.nodes.rlg_math import CorrectionHistory
from harness import sampling as h
from harness.gaussian import GaussianCase


def _pair(form: str):
    base = h.load_model("sd3")
    return base, (h.with_lora(base) if form == "lora" else h.load_model("sd3", rl_seed=1))


def _guided(model, points, sigmas, cfg=3.0, batch=2):
    """The guided prediction at each (x, sigma) of `points`, in one sampling run over the schedule `sigmas`."""
    positive, negative = h.conds("sd3", batch=batch)
    outputs = []

    def sampler(model_k, noise, sigmas_, extra_args=None, callback=None, disable=None):
        for x, sigma in points:
            outputs.append(model_k(x, sigma * x.new_ones([x.shape[0]]), **(extra_args or {})).clone())
        return noise

    guider = comfy.samplers.CFGGuider(model)
    guider.set_conds(positive, negative)
    guider.set_cfg(cfg)
    x0 = points[0][0]
    guider.sample(torch.zeros_like(x0), torch.zeros_like(x0), comfy.samplers.KSAMPLER(sampler), sigmas,
                  disable_pbar=True, seed=0)
    return outputs


def _reference(base_out, rl_out, points, schedule, weights, every, first=0):
    """The independent reference: exact blends at evaluation steps, extrapolated corrections elsewhere."""
    expected, evals = [], []  # evals: (sigma, guided correction) of the last evaluations
    steps = {round(s, 6): i for i, s in enumerate(schedule)}
    for (_, sigma), b, r, w in zip(points, base_out, rl_out, weights, strict=True):
        step = steps.get(round(sigma, 6))
        if step is not None and step >= first and (step - first) % every == 0:
            evals = [e for e in evals if e[0] != sigma][-1:] + [(sigma, r - b)]
            expected.append(b + w * (r - b))
        else:
            (s1, d1), (s2, d2) = (evals[-2], evals[-1]) if len(evals) > 1 else (evals[-1], evals[-1])
            e1, e2 = d1 / s1, d2 / s2
            e = e2 if s1 == s2 else e2 + (e2 - e1) * (sigma - s2) / (s2 - s1)
            expected.append(b + w * sigma * e)
    return expected


def _points(sigmas, extra_between=False, seed=3, batch=2):
    gen = torch.Generator().manual_seed(seed)
    points = []
    for i, s in enumerate(sigmas[:-1].tolist()):
        points.append((torch.randn(batch, 16, 8, 8, generator=gen) * max(s, 0.05), s))
        if extra_between:  # a second call inside the step, at its own sigma (as heun or dpmpp_2s do)
            mid = math.sqrt(s * max(float(sigmas[i + 1]), 1e-3))
            points.append((torch.randn(batch, 16, 8, 8, generator=gen) * max(mid, 0.05), mid))
    return points


@pytest.mark.parametrize("form", ["full", "lora"])
@pytest.mark.parametrize("every", [2, 3])
@pytest.mark.parametrize("extra_between", [False, True])
def test_each_skipped_call_is_base_plus_the_extrapolated_correction(form, every, extra_between):
    base, rl = _pair(form)
    sigmas = h.schedule(base, steps=8)
    points = _points(sigmas, extra_between)
    schedule = sigmas.tolist()
    base_out, rl_out = _guided(base, points, sigmas), _guided(rl, points, sigmas)
    got = _guided(h.rlg(base, rl, 1.7, 0.0, 1.0, rl_every=every), points, sigmas)
    expected = _reference(base_out, rl_out, points, schedule, [1.7] * len(points), every)
    skipped = 0
    for i, (g, e, (_, sigma)) in enumerate(zip(got, expected, points, strict=True)):
        assert h.max_diff(g, e) <= 1e-4 * (1 + float(e.abs().max())), (i, sigma)
        skipped += round(sigma, 6) not in {round(s, 6) for s in schedule[::every]}
    assert skipped >= len(points) // 2  # the test exercises estimates, not only exact steps
    # and the estimates are estimates: they differ from exact RLG at the skipped calls
    exact = _guided(h.rlg(base, rl, 1.7, 0.0, 1.0), points, sigmas)
    assert max(h.max_diff(a, b) for a, b in zip(got, exact, strict=True)) > 1e-5


def test_a_schedule_scales_the_estimated_correction_and_the_window_starts_the_count():
    base, rl = _pair("full")
    sigmas = h.schedule(base, steps=10)
    schedule = sigmas.tolist()
    points = _points(sigmas)
    start, end = 0.2, 0.9
    patched = h.rlg(base, rl, 2.0, start, end, schedule="linear", end_scale=0.5, rl_every=2, outside_window="off")
    got = _guided(patched, points, sigmas)
    base_out, rl_out = _guided(base, points, sigmas), _guided(rl, points, sigmas)
    sampling = base.get_model_object("model_sampling")
    hi, lo = float(sampling.percent_to_sigma(start)), float(sampling.percent_to_sigma(end))
    inside = [i for i, (_, s) in enumerate(points) if lo <= s <= hi]
    first = inside[0]
    from comfyui_rlg.nodes.rlg_math import sigma_to_percent

    weights = [2.0 + (0.5 - 2.0) * (sigma_to_percent(s, sampling.percent_to_sigma) - start) / (end - start)
               for _, s in points]
    expected = _reference([base_out[i] for i in inside], [rl_out[i] for i in inside], [points[i] for i in inside],
                          schedule, [weights[i] for i in inside], 2, first=first)
    for j, i in enumerate(inside):
        assert h.max_diff(got[i], expected[j]) <= 1e-4 * (1 + float(expected[j].abs().max())), i
    for i, (b, g) in enumerate(zip(base_out, got, strict=True)):
        if i not in inside:  # outside_window "off": the base alone there
            assert torch.equal(b, g), i


def _counted(patcher) -> h.ForwardCounter:
    counter = h.ForwardCounter()
    counter.attach(patcher)
    return counter


@pytest.mark.parametrize("sampler", ["euler", "heun", "dpmpp_2s_ancestral", "uni_pc", "dpmpp_2m"])
@pytest.mark.parametrize("every", [1, 2, 3])
def test_rl_forwards_are_the_calls_at_evaluation_step_sigmas_for_every_sampler(sampler, every):
    base, rl = _pair("full")
    rl_calls, base_calls = _counted(rl), _counted(base)
    steps = 10
    out = h.ksample(h.rlg(base, rl, 1.5, 0.0, 1.0, rl_every=every), steps=steps, sampler=sampler)
    schedule = base_calls.schedule  # the sampler's own (uni_pc, dpm_2 drop the penultimate sigma of `steps + 1`)
    evaluation = [schedule[i] for i in range(0, len(schedule) - 1, every)]
    at_evaluation = [s for s in base_calls.sigmas if any(math.isclose(s, e, rel_tol=1e-5) for e in evaluation)]
    # the base runs at every call; the RL model exactly at the calls made at an evaluation step's sigma (samplers'
    # extra calls in between, at their own sigmas, are estimated), and at every call for rl_every 1
    assert rl_calls.sigmas == (base_calls.sigmas if every == 1 else at_evaluation)
    assert every == 1 or len(rl_calls.sigmas) < len(base_calls.sigmas)
    assert torch.isfinite(out).all()


def test_rl_every_1_is_exact_rlg_bit_for_bit_and_keeps_no_correction():
    base, rl = _pair("lora")
    patched = h.rlg(base, rl, 1.6, 0.1, 0.9)
    assert torch.equal(h.ksample(h.rlg(base, rl, 1.6, 0.1, 0.9, rl_every=1), steps=6, batch=2),
                       h.ksample(patched, steps=6, batch=2))
    assert torch.equal(h.ksample(RLGApply.execute(base, rl, 1.6, 0.1, 0.9, rl_every=1).args[0], steps=6, batch=2),
                       h.ksample(RLGApply.execute(base, rl, 1.6, 0.1, 0.9).args[0], steps=6, batch=2))


def test_batched_lora_path_runs_the_base_alone_at_skipped_steps():
    base = h.load_model("sd3")
    counter = _counted(base)  # before the LoRA clone, so both carry it and share forwards
    rl = h.with_lora(base)
    h.ksample(h.rlg(base, rl, 1.5, 0.0, 1.0, batched=True, rl_every=2), steps=8, batch=2)
    rows_per_pass = 2 * 2  # cond and uncond, batch 2
    # 4 evaluation steps with base and RL rows in one forward of twice the rows, 4 steps of the base alone
    assert counter.calls == 8 and counter.rows == 4 * 2 * rows_per_pass + 4 * rows_per_pass


def test_two_runs_share_nothing_and_an_interrupted_run_leaves_nothing():
    base, rl = _pair("full")
    patched = h.rlg(base, rl, 2.0, 0.0, 1.0, rl_every=3)
    first = h.ksample(patched, steps=7, seed=1)
    other = h.ksample(patched, steps=5, seed=2, batch=2)  # another run: other schedule, other batch
    again = h.ksample(patched, steps=7, seed=1)
    assert torch.equal(first, again)
    assert torch.equal(other, h.ksample(h.rlg(base, rl, 2.0, 0.0, 1.0, rl_every=3), steps=5, seed=2, batch=2))
    wrapper = h.rlg_wrapper(patched)
    assert getattr(wrapper._local, "run", None) is None  # the run's state went with the run (its cleanup)

    def interrupt(step, *args):
        if step == 3:
            raise InterruptedError("stop")

    positive, negative = h.conds("sd3")
    latent = h.latent("sd3")
    noise = comfy.sample.prepare_noise(latent, 1)
    with pytest.raises(InterruptedError):
        comfy.sample.sample(patched, noise, 7, 3.0, "euler", "simple", positive, negative, latent,
                            callback=interrupt, disable_pbar=True, seed=1)
    assert getattr(wrapper._local, "run", None) is None
    assert torch.equal(h.ksample(patched, steps=7, seed=1), first)


def test_two_threads_sampling_at_once_keep_their_own_estimates():
    """One RLG wrapper (one node's output) sampled by two threads at once, step for step: each run keeps its own
    estimates. Each thread samples its own loaded copy of the base: ComfyUI keeps per-model state of its own
    (model.current_patcher, which a run's cleanup resets) that is not made for two runs of one model at once."""
    patched = h.rlg(*_pair("lora"), 2.0, 0.0, 1.0, rl_every=2)
    wrapper = h.rlg_wrapper(patched)
    barrier = threading.Barrier(2, timeout=60)

    def meet(executor, *args, **kwargs):  # both threads inside a step before either goes on, every step
        barrier.wait()
        return executor(*args, **kwargs)

    models = {4: patched.clone(), 5: h.load_model("sd3")}
    # the second copy: another module, the same wrapper (its LoRA layers are looked up on the running module)
    models[5].add_wrapper_with_key(comfy.patcher_extension.WrappersMP.CALC_COND_BATCH, "rlg", wrapper)
    alone = {seed: h.ksample(model, steps=6, seed=seed, batch=1 + seed % 2) for seed, model in models.items()}
    results, errors = {}, []

    def run(seed):
        try:
            with torch.inference_mode():
                results[seed] = h.ksample(models[seed], steps=6, seed=seed, batch=1 + seed % 2)
        except Exception as err:  # noqa: BLE001  (reported by the assertion below)
            errors.append(err)

    for model in models.values():
        model.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.CALC_COND_BATCH, "test_barrier", meet)
    threads = [threading.Thread(target=run, args=(seed,)) for seed in models]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors and set(results) == {4, 5}, errors
    for seed in models:
        assert h.max_diff(results[seed], alone[seed]) <= 1e-5, seed
    assert h.max_diff(alone[4][:1], alone[5][:1]) > 1e-3  # two different runs, not one result twice


def test_sweep_rows_with_rl_every_are_each_scale_with_rl_every():
    """Each row is RLG Apply at its scale with the same rl_every: the rows share the evaluations and each keeps its
    own correction. The one exception is a row at scale 1: alone, that is the RL model (one forward a step, which
    rl_every cannot make cheaper, so it stays exact); in a sweep it shares the other rows' evaluation steps."""
    import nodes as comfy_nodes

    base, rl = _pair("full")
    positive, negative = h.conds("sd3")
    latent = {"samples": h.latent("sd3", 1)}
    scales = (0.0, 0.5, 1.0, 2.5)
    model, swept, _ = RLGScaleSweep.execute(base, rl, latent, ", ".join(map(str, scales)), 0.0, 1.0, rl_every=2).args

    def ksampler(m, lat):
        return comfy_nodes.common_ksampler(m, 11, 6, 3.5, "euler", "simple", positive, negative, lat)[0]["samples"]

    rows = ksampler(model, swept)
    for i, scale in enumerate(scales):
        single = ksampler(RLGApply.execute(base, rl, scale, 0.0, 1.0, rl_every=2).args[0], latent)
        close = h.max_diff(rows[i:i + 1], single) <= 1e-5 * (1 + float(single.abs().max()))
        assert close == (scale != 1.0), scale
    exact_rl = ksampler(RLGApply.execute(base, rl, 1.0, 0.0, 1.0).args[0], latent)
    assert torch.equal(ksampler(RLGApply.execute(base, rl, 1.0, 0.0, 1.0, rl_every=2).args[0], latent), exact_rl)


def test_pag_passes_evaluate_the_rl_model_each_time():
    from comfy_extras.nodes_pag import PerturbedAttentionGuidance as PAG

    base = h.load_model("sd15")
    rl = h.load_model("sd15", rl_seed=1)
    counter = _counted(rl)
    steps = 6
    h.ksample(PAG.execute(h.rlg(base, rl, 1.5, 0.0, 1.0, rl_every=2), 2.0).args[0], family="sd15", steps=steps)
    # the main pass: every 2nd step (cond and uncond in one forward); PAG's perturbed pass: every step
    assert counter.calls == len(range(0, steps, 2)) + steps


def test_correction_history_refuses_other_shapes_and_restarts():
    history = CorrectionHistory()
    d = [torch.ones(2, 3), torch.zeros(2, 3)]
    assert not history.fits(0.5, [torch.ones(2, 3), torch.ones(2, 3)])  # nothing evaluated yet
    history.record(0.9, d)
    history.record(0.7, [2 * t for t in d])
    assert history.fits(0.6, [torch.ones(2, 3), torch.ones(2, 3)])
    assert not history.fits(0.6, [torch.ones(4, 3), torch.ones(4, 3)])  # another batch
    assert not history.fits(0.6, [torch.ones(2, 3), None])  # another set of conds
    assert not history.fits(0.8, [torch.ones(2, 3), torch.ones(2, 3)])  # the sampler went up: a restart
    est = history.estimate(0.6)
    # d / sigma is 1 / 0.9 at 0.9 and 2 / 0.7 at 0.7: linear in sigma, then times sigma
    e1, e2 = 1 / 0.9, 2 / 0.7
    assert torch.allclose(est[0], torch.full((2, 3), 0.6 * (e2 + (e2 - e1) * (0.6 - 0.7) / (0.7 - 0.9))))
    assert torch.equal(est[1], torch.zeros(2, 3))
    history.record(0.5, [torch.ones(5), torch.ones(5)])  # another shape: the older points go
    assert len(history.points) == 1


def test_gaussian_case_mean_and_spread_at_rl_every_2(capsys):
    """Exact scores: the sampled mean and spread of exact RLG and of rl_every 2 and 3, against the closed form.

    The target is N(mean + w s^2 b / beta, s^2). Euler's own error shrinks the spread alike for every model
    (measured on the base itself), so the spread is compared with the base's sampled spread.
    """
    case = GaussianCase(mean=0.0, std=1.0, reward=0.8, beta=1.0)
    base, rl = case.models()
    kw = dict(batch=64, steps=20, cfg=1.0, seed=7)

    def stats(model):
        x = base.model.process_latent_in(h.ksample(model, **kw))
        return float(x.mean()), float(x.std())

    base_mean, solver_std = stats(base)
    lines = [f"base: target mean {case.mean:.3f} std {case.std:.3f}, sampled {base_mean:.3f} {solver_std:.3f}"]
    for w in (1.0, 2.0, 3.0):
        got = {every: stats(h.rlg(base, rl, w, 0.0, 1.0, rl_every=every)) for every in (1, 2, 3)}
        target = case.target_mean(w)
        lines.append(f"w={w:g}: target mean {target:.3f} | exact {got[1][0]:.3f} std {got[1][1]:.3f} | every 2nd "
                     f"{got[2][0]:.3f} {got[2][1]:.3f} | every 3rd {got[3][0]:.3f} {got[3][1]:.3f}")
        assert abs(got[1][0] - target) < 0.03 and abs(got[1][1] - solver_std) < 0.01, lines[-1]
        assert abs(got[2][0] - got[1][0]) < 0.02 and abs(got[2][1] - got[1][1]) < 0.02, lines[-1]
    with capsys.disabled():
        print(f"\nRLG on a Gaussian base with exact scores (euler, 20 steps, {64 * 16 * 64:,} samples per setting):")
        for line in lines:
            print("  " + line)


def test_heun_trajectory_calls_each_get_the_estimate_at_their_own_sigma():
    """A whole heun run: every call's prediction is the reference estimate from exact base and RL predictions at
    that call's (x, sigma), recorded while the run went."""
    base, rl = _pair("full")
    steps, every, w = 6, 2, 1.8
    model = h.rlg(base, rl, w, 0.0, 1.0, rl_every=every)
    recorded = []

    def heun(model_k, x, sigmas, extra_args=None, callback=None, disable=None):
        def recording(xx, ss, **kw):
            out = model_k(xx, ss, **kw)
            recorded.append((xx.clone(), float(ss.flatten()[0]), out.clone()))
            return out

        return k_sampling.sample_heun(recording, x, sigmas, extra_args=extra_args, disable=True)

    positive, negative = h.conds("sd3")
    guider = comfy.samplers.CFGGuider(model)
    guider.set_conds(positive, negative)
    guider.set_cfg(3.0)
    sigmas = h.schedule(base, steps=steps)
    noise = torch.randn(1, 16, 8, 8, generator=torch.Generator().manual_seed(9))
    guider.sample(noise, torch.zeros_like(noise), comfy.samplers.KSAMPLER(heun), sigmas, disable_pbar=True, seed=9)
    points = [(x, s) for x, s, _ in recorded]
    expected = _reference(_guided(base, points, sigmas, batch=1), _guided(rl, points, sigmas, batch=1), points,
                          sigmas.tolist(), [w] * len(points), every)
    assert len(recorded) == 2 * steps - 1
    for i, ((_, sigma, got), exp) in enumerate(zip(recorded, expected, strict=True)):
        assert h.max_diff(got, exp) <= 1e-4 * (1 + float(exp.abs().max())), (i, sigma)
