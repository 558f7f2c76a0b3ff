"""The queue-time walk over API graphs (nodes/graph_checks.py): what it refuses, and what it must leave to run time.

Pure Python on API-format prompts; tests/test_stacked_server.py shows the same refusals through POST /prompt.
"""

from __future__ import annotations

from comfyui_rlg.nodes.graph_checks import refusals


def _graph(rl_loader: dict, cache: str | None = "ApplyFBCacheOnModel", rlg: str = "RLGApply") -> dict:
    g = {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": "base.safetensors", "weight_dtype": "default"}},
        "2": rl_loader,
        "6": {"class_type": "KSampler", "inputs": {"model": ["3", 0]}},
    }
    if rlg == "RLGApply":
        g["3"] = {"class_type": "RLGApply", "inputs": {"model": ["1", 0], "rl_model": ["2", 0], "rlg_scale": 1.5}}
    else:  # two RLG RL Model nodes chained into RLG Apply (several RL models); the second is the separate one
        g["8"] = {"class_type": "LoraLoaderModelOnly", "inputs": {"model": ["1", 0], "lora_name": "a.safetensors"}}
        g["9"] = {"class_type": "RLGRLModel", "inputs": {"rl_model": ["8", 0], "rlg_scale": 1.0}}
        g["10"] = {"class_type": "RLGRLModel", "inputs": {"rl_model": ["2", 0], "rlg_scale": 1.0,
                                                          "rl_models": ["9", 0]}}
        g["3"] = {"class_type": "RLGApplyMulti", "inputs": {"model": ["1", 0], "rl_models": ["10", 0]}}
    if cache:
        g["11"] = {"class_type": cache, "inputs": {"model": ["3", 0]}}
        g["12"] = {"class_type": "ModelSamplingFlux", "inputs": {"model": ["11", 0]}}  # another node in between
        g["6"]["inputs"]["model"] = ["12", 0]
    return g


SEPARATE = {"class_type": "UNETLoader", "inputs": {"unet_name": "rl.safetensors", "weight_dtype": "default"}}
LORA = {"class_type": "LoraLoaderModelOnly", "inputs": {"model": ["1", 0], "lora_name": "rl.safetensors"}}


def test_module_bound_cache_after_rlg_with_a_separate_model_is_refused_on_the_rlg_node():
    for cache in ("TeaCache", "ApplyFBCacheOnModel"):
        out = refusals(_graph(SEPARATE, cache))
        assert list(out) == ["3"] and f"{cache} is connected after RLG Apply, but rl_model is a separate" in out["3"]


def test_the_rl_model_named_as_the_multi_node_names_it():
    out = refusals(_graph(SEPARATE, "TeaCache", rlg="RLGApplyMulti"))
    assert "rl_models (RL model 2) is a separate model" in out["3"]
    assert "after RLG Apply (several RL models)" in out["3"]


def test_left_to_run_time_where_the_walk_cannot_tell():
    assert refusals(_graph(LORA)) == {}  # the LoRA RL model: cached per model
    assert refusals(_graph(SEPARATE, cache=None)) == {}
    assert refusals(_graph(SEPARATE, cache="EasyCache")) == {}  # EasyCache after RLG caches a separate model too
    merged = {"class_type": "ModelMergeSimple", "inputs": {"model1": ["1", 0], "model2": ["1", 0], "ratio": 0.5}}
    assert refusals(_graph(merged)) == {}  # not a loader of its own: the run-time check decides


def test_lazycache_on_the_rl_model_alone():
    g = _graph(LORA, cache=None)
    g["13"] = {"class_type": "LazyCache", "inputs": {"model": ["2", 0]}}
    g["3"]["inputs"]["rl_model"] = ["13", 0]
    assert "LazyCache is on rl_model only" in refusals(g)["3"]
    g["14"] = {"class_type": "LazyCache", "inputs": {"model": ["1", 0]}}  # on the base too: not refused
    g["3"]["inputs"]["model"] = ["14", 0]
    g["2"]["inputs"]["model"] = ["14", 0]
    assert refusals(g) == {}


def test_broken_prompts_are_left_to_comfyui():
    assert refusals({"3": {"class_type": "RLGApply", "inputs": {"model": ["99", 0], "rl_model": "x"}}}) == {}
    assert refusals({"3": {"class_type": "RLGApply"}, "4": "not a node"}) == {}
