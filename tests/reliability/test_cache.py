"""The cache: what ComfyUI's cache reuses of an RLG prompt, and that nothing of RLG's outlives the prompt once the
cache has dropped it, or once POST /free has emptied it, under each cache the host has.

CLASSIC (the default before ComfyUI 0.22, --cache-classic after) drops a prompt's outputs when the next prompt
starts. RAM_PRESSURE (the default since 0.22) keeps them until a node of a later prompt has executed and memory is
short of its thresholds; the tests start that server with --cache-ram 0 100000 so that it always drops them then.
"""

from __future__ import annotations

import time

import pytest

from harness import reliability as rel
from harness.server import messages
from harness.weights import max_diff, tolerance

server_test = pytest.mark.server


@server_test
@pytest.mark.parametrize("form", ["separate", "lora", "peft"])
def test_changing_only_rlg_scale_reruns_sampling_but_not_the_loaders(server, form):
    seed = server.seed()
    first = server.exact(rel.graph(form, scale=1.5, seed=seed, prefix="rel/cache"), "first")
    prompt = rel.graph(form, scale=2.5, seed=seed, prefix="rel/cache")
    ticket = server.refs.submit(prompt)
    entry = rel.run_ok(server.srv, prompt)
    (cached,) = messages(entry, "execution_cached")
    assert {"1", "2", "4", "5"} <= set(cached["nodes"]), cached
    assert not {"3", "6", "7"} & set(cached["nodes"]), cached
    second = server.srv.latents(entry)
    want = server.refs.result(ticket)
    assert max_diff(second, want) <= tolerance(want)
    assert max_diff(second, first) > 1e-3  # it did sample again, at the new scale


def _rlg_prompt(server, prefix: str) -> tuple[dict, dict[str, str]]:
    """Two RLG nodes in one prompt, every form of RL model: RLG Apply (several RL models) with the separate model and
    the stock loader's LoRA, and RLG Apply with a PEFT LoRA. Returns (the prompt, {label: the node whose model to
    track})."""
    seed = server.seed()
    prompt = rel.two_rlg_graph(rel.graph("multi", scale=1.3, seed=seed, prefix=prefix),
                               rel.graph("peft", scale=1.6, seed=seed, prefix=prefix))
    return prompt, {"base": "1", "rl_separate": "2a", "rl_lora": "8a", "rlg_multi": "3a", "rl_peft": "2b",
                    "rlg_peft": "3b"}


def _with_probes(prompt: dict, tracked: dict[str, str], prefix: str, census: bool = False) -> dict:
    """The prompt and probes tracking each model, one after the other, then one that reports (and takes a census)."""
    out, after = dict(prompt), None
    for label, node in tracked.items():
        out[f"p_{label}"] = rel.probe_node([node, 0], track=f"{prefix}.{label}", after=after, report=False)
        after = f"p_{label}"
    out["p_census"] = rel.probe_node(census=census, after=after)
    return out


def _alive(report: dict, prefix: str) -> list[str]:
    return [label for label in report["tracked_alive"] if label.startswith(prefix + ".")]


# Which server measures a cache: CLASSIC is the default before 0.22 (the shared server), --cache-classic after;
# RAM_PRESSURE is measured where it is the default, with the deterministic thresholds.
DROP_SERVERS = {"CLASSIC": ("default", "classic"), "RAM_PRESSURE": ("ram_pressure",)}


@server_test
@pytest.mark.parametrize("kind", ["CLASSIC", "RAM_PRESSURE"])
def test_nothing_of_an_rlg_prompt_stays_alive_once_the_cache_drops_the_prompt(servers, kind):
    """The patched models, the RL models (separate, LoRA, PEFT), the base, RLG's wrappers and per-run state: once the
    cache has dropped the prompt (a different prompt has executed a node), all of it is collected, and the live RLG
    objects are what they were before the prompt."""
    server = servers.first_of(DROP_SERVERS[kind], kind)
    before = rel.probe(server.srv, census=True)[""]["census"]["pack_objects"]
    prompt, tracked = _rlg_prompt(server, "rel/drop")
    server.exact(prompt, f"two RLG nodes ({kind})")
    # The same prompt again with the probes: everything else is cached, so they see the models that sampled.
    prefix = f"drop_{kind}"
    entry = rel.run_ok(server.srv, _with_probes(prompt, tracked, prefix, census=True))
    during = entry["outputs"]["p_census"]["probe"][0]
    assert sorted(_alive(during, prefix)) == sorted(f"{prefix}.{k}{m}" for k in tracked for m in ("", ".model"))
    held = sum(during["census"]["pack_objects"].values()) - sum(before.values())
    assert held > 0, ("the census sees no RLG object while the prompt is cached: it would see no leak either",
                      during["census"]["pack_objects"], before)

    reports = rel.probe(server.srv, census=True, first=True)  # another prompt: probe `a` runs, then the census
    first, after = reports["first"], reports[""]
    if kind == "RAM_PRESSURE":  # the cache kept the prompt until a node of this one executed
        assert len(_alive(first, prefix)) == 2 * len(tracked), first["tracked_alive"]
    else:  # CLASSIC dropped it when this prompt started
        assert _alive(first, prefix) == [], first["tracked_alive"]
    assert _alive(after, prefix) == [], f"alive once the {kind} cache dropped the prompt: {after['tracked_alive']}"
    assert after["census"]["pack_objects"] == before, (after["census"]["pack_objects"], before)
    rel.FIGURES[f"cache drop, {server.cache.label}"] = (
        f"{held} RLG objects and {len(tracked)} models (patched, RL: separate, LoRA, PEFT; base) held while cached; "
        f"0 left once a node of another prompt ran{'' if kind == 'RAM_PRESSURE' else ' (dropped as it started)'}")


@server_test
@pytest.mark.parametrize("cache_name", ["default", "classic"])
def test_free_unloads_the_rl_model_like_any_model_and_empties_the_cache(servers, models, cache_name):
    """POST /free: with unload_models the RL models leave ComfyUI's loaded models with the base, and nothing (RLG
    included) keeps either alive once the cache drops the prompt; with free_memory the cache is emptied at once and
    everything of the prompt is collected before any other node runs."""
    server = servers.get(cache_name)
    label = server.cache.label
    prompt, tracked = _rlg_prompt(server, "rel/free")
    server.exact(prompt, f"two RLG nodes ({label})")
    prefix = f"unload_{cache_name}"
    entry = rel.run_ok(server.srv, _with_probes(prompt, tracked, prefix))
    loaded = {m["digest"] for m in entry["outputs"]["p_census"]["probe"][0]["loaded"]}
    assert {models.digests["base"], models.digests["rl"]} <= loaded, "both models were loaded for sampling"

    assert server.srv.post("/free", {"unload_models": True})[0] == 200
    deadline = time.time() + 30
    while True:  # the worker handles /free between prompts: a probe queued first may still see them loaded
        reports = rel.probe(server.srv, first=True)
        if not reports["first"]["loaded"] or time.time() > deadline:
            break
        time.sleep(0.2)
    assert reports["first"]["loaded"] == [], f"still loaded after /free: {reports['first']['loaded']}"
    assert _alive(reports[""], prefix) == [], f"alive once the prompt was dropped: {reports['']['tracked_alive']}"

    prompt, tracked = _rlg_prompt(server, "rel/free")
    prefix = f"free_{cache_name}"
    rel.run_ok(server.srv, _with_probes(prompt, tracked, prefix))
    assert server.srv.post("/free", {"free_memory": True})[0] == 200
    time.sleep(1.0)  # an idle worker handles the flags at once; no prompt may run before (it would drop the cache)
    first = rel.probe(server.srv, first=True)["first"]  # before any node of another prompt ran
    assert first["loaded"] == [] and _alive(first, prefix) == [], (first["loaded"], first["tracked_alive"])
    server.exact(rel.graph("separate", scale=1.2, seed=server.seed(), prefix="rel/free"), f"after /free ({label})")
    server.next_prompts_are_right("lora", f"after /free ({label})")
    rel.RESULTS["faults"].append(f"POST /free, {label}: unload_models (RL model unloaded with the base, then "
                                 "collected), free_memory (everything collected at once)")
