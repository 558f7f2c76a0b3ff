"""Stacked graphs through a real server with the third-party packs installed: what is refused when queued, what runs.

A server with ComfyUI-GGUF, TeaCache and WaveSpeed linked into its custom_nodes (the pinned snapshots, installed by
scripts/setup_host.sh into .comfy-host/thirdparty), the tiny SD3 files of the reliability suite and a GGUF copy of
the base. Refusals come back from POST /prompt as validation errors on the RLG node, before anything runs, as an
HTTP client or the front-end meets them; a GGUF base with a stock LoRA, loaded by ComfyUI-GGUF's own node, runs.
"""

from __future__ import annotations

import pytest

from harness import gguf_files as gf
from harness import reliability as rel
from harness import thirdparty
from harness import tiny_models as tm
from harness.server import ComfyServer

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def stacked_server(tmp_path_factory):
    missing = [reason for name in thirdparty.PACKS if (reason := thirdparty.missing(name))]
    if missing:
        pytest.skip("; ".join(missing))
    work = tmp_path_factory.mktemp("stacked")
    models = work / "models"
    rel.write_model_files(models, other_family=False)
    gf.write(models / "diffusion_models" / "base_q8.gguf", tm.tiny_sd3_state_dict(0), "Q8_0")
    server = ComfyServer(work, rel.model_paths_config(work, models), [rel.PACK_DIR_NAME, rel.TEST_NODES_PACK],
                         env=rel.ONE_TORCH_THREAD, packs=tuple(thirdparty.pack_dir(p) for p in thirdparty.PACKS))
    server.start()
    yield server
    server.stop()


def _node_classes(server) -> set[str]:
    return set(server.get("/object_info"))


def refusal(server, prompt: dict) -> tuple[str, str]:
    """(the node id the refusal is on, its details): the graph must be refused when queued."""
    status, body = server.queue(prompt)
    assert status == 400, (status, body)
    ((node_id, node),) = body["node_errors"].items()
    return node_id, " | ".join(e.get("details", "") for e in node["errors"])


@pytest.mark.parametrize("cache", ["TeaCache", "ApplyFBCacheOnModel"])
def test_module_bound_cache_after_rlg_with_a_separate_rl_model_is_refused_when_queued(stacked_server, cache):
    if cache not in _node_classes(stacked_server):
        pytest.skip(f"{cache} does not import on ComfyUI {stacked_server.version} by itself")
    prompt = rel.graph("separate")
    inputs = ({"model": ["3", 0], "model_type": "flux", "rel_l1_thresh": 0.4, "start_percent": 0.0, "end_percent": 1.0,
               "cache_device": "cpu"} if cache == "TeaCache" else
              {"model": ["3", 0], "object_to_patch": "diffusion_model", "residual_diff_threshold": 0.1, "start": 0.0,
               "end": 1.0, "max_consecutive_cache_hits": -1})
    prompt["11"] = {"class_type": cache, "inputs": inputs}
    prompt["6"]["inputs"]["model"] = ["11", 0]
    node_id, details = refusal(stacked_server, prompt)
    assert node_id == "3"  # the RLG Apply node: the front-end marks it
    assert f"{cache} is connected after RLG Apply, but rl_model is a separate model" in details
    assert f"Put one {cache} on model and another on rl_model" in details

    # The same cache after RLG Apply with the LoRA RL model is not refused (it is cached per model).
    prompt["2"] = rel._loader("lora")
    status, body = stacked_server.queue(prompt)
    assert status == 200, body
    stacked_server.wait(body["prompt_id"])


def test_lazycache_on_the_rl_model_alone_is_refused_when_queued(stacked_server):
    prompt = rel.graph("lora")
    prompt["11"] = {"class_type": "LazyCache", "inputs": {"model": ["2", 0], "reuse_threshold": 0.2,
                                                          "start_percent": 0.15, "end_percent": 0.95,
                                                          "verbose": False}}
    prompt["3"]["inputs"]["rl_model"] = ["11", 0]
    node_id, details = refusal(stacked_server, prompt)
    assert node_id == "3" and "LazyCache is on rl_model only" in details and "after RLG Apply" in details


def test_lazycache_after_rlg_runs(stacked_server):
    prompt = rel.graph("lora")
    prompt["11"] = {"class_type": "LazyCache", "inputs": {"model": ["3", 0], "reuse_threshold": 0.2,
                                                          "start_percent": 0.15, "end_percent": 0.95,
                                                          "verbose": False}}
    prompt["6"]["inputs"]["model"] = ["11", 0]
    stacked_server.run_ok(prompt)


def test_gguf_base_with_a_stock_lora_through_the_packs_own_loader(stacked_server):
    """UnetLoaderGGUF -> LoraLoaderModelOnly -> RLG Apply -> KSampler, in the server: at w = 1 the RL model alone
    (the same graph without RLG), and RLG far from the base."""
    def gguf_graph(scale: float | None) -> dict:
        prompt = rel.graph("lora", scale=1.0 if scale is None else scale, prefix=f"gguf/{scale}")
        prompt["1"] = {"class_type": "UnetLoaderGGUF", "inputs": {"unet_name": "base_q8.gguf"}}
        if scale is None:  # the RL model alone
            prompt["6"]["inputs"]["model"] = ["2", 0]
        return prompt

    out = {s: stacked_server.latents(stacked_server.run_ok(gguf_graph(s)))["7"] for s in (None, 0.0, 1.0)}
    assert float((out[1.0] - out[None]).abs().max()) <= 1e-4
    assert float((out[1.0] - out[0.0]).abs().max()) > 1e-3
