"""End to end: ComfyUI's own server with the pack, driven over HTTP like the API users do.

Marked `server`: these start main.py (about 10-20 s once per session). Quick subset: -m "not server".
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import safetensors.torch
import torch

from harness import sampling as h
from harness import tiny_models as tm
from harness.server import ComfyServer

pytestmark = pytest.mark.server

BASE_FILE = "rlg_tiny_sd3_base.safetensors"
RL_FILE = "rlg_tiny_sd3_rl.safetensors"
LORA_FILE = "rlg_tiny_sd3_rl_lora.safetensors"
LORA2_FILE = "rlg_tiny_sd3_rl2_lora.safetensors"
TEST_NODES = Path(__file__).resolve().parent / "comfy_test_nodes"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    work = tmp_path_factory.mktemp("comfy")
    models = work / "models"
    (models / "diffusion_models").mkdir(parents=True)
    (models / "loras").mkdir()
    base_sd = tm.tiny_sd3_state_dict(0)
    safetensors.torch.save_file(base_sd, models / "diffusion_models" / BASE_FILE)
    safetensors.torch.save_file(tm.perturbed(base_sd, 1), models / "diffusion_models" / RL_FILE)
    safetensors.torch.save_file(tm.lora_for(base_sd, 7), models / "loras" / LORA_FILE)
    safetensors.torch.save_file(tm.lora_for(base_sd, 8, match="mlp"), models / "loras" / LORA2_FILE)
    config = work / "extra_model_paths.yaml"
    config.write_text(
        "rlg_tests:\n"
        f"  base_path: {models}\n"
        "  diffusion_models: diffusion_models\n"
        "  loras: loras\n"
        f"  custom_nodes: {TEST_NODES}\n"
    )
    srv = ComfyServer(work, config, ["ComfyUI-RLG", "rlg_test_nodes"]).start()
    yield srv
    srv.stop()


def rlg_graph(rl_loader: dict, rlg_scale=1.5, start=0.0, end=1.0, prefix="latents/rlg") -> dict:
    """UNETLoader(s) -> RLG Apply -> KSampler -> SaveLatent, in API format."""
    return {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": BASE_FILE, "weight_dtype": "default"}},
        "2": rl_loader,
        "3": {"class_type": "RLGApply", "inputs": {"model": ["1", 0], "rl_model": ["2", 0], "rlg_scale": rlg_scale,
                                                   "start_percent": start, "end_percent": end}},
        "4": {"class_type": "RLGTestConditioning", "inputs": {"family": "sd3", "seed": 0, "batch_size": 1}},
        "5": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "6": {"class_type": "KSampler", "inputs": {
            "model": ["3", 0], "seed": 42, "steps": 4, "cfg": 3.0, "sampler_name": "euler", "scheduler": "simple",
            "positive": ["4", 0], "negative": ["4", 1], "latent_image": ["5", 0], "denoise": 1.0}},
        "7": {"class_type": "SaveLatent", "inputs": {"samples": ["6", 0], "filename_prefix": prefix}},
    }


FULL_RL = {"class_type": "UNETLoader", "inputs": {"unet_name": RL_FILE, "weight_dtype": "default"}}
LORA_RL = {"class_type": "LoraLoaderModelOnly", "inputs": {"model": ["1", 0], "lora_name": LORA_FILE,
                                                           "strength_model": 1.0}}


def base_only_graph(prefix: str) -> dict:
    graph = rlg_graph(FULL_RL, prefix=prefix)
    del graph["2"], graph["3"]
    graph["6"]["inputs"]["model"] = ["1", 0]
    return graph


def saved_latent(srv: ComfyServer, entry: dict) -> torch.Tensor:
    (info,) = entry["outputs"]["7"]["latents"]
    path = srv.output_dir / info["subfolder"] / info["filename"]
    return safetensors.torch.load_file(path)["latent_tensor"]


def test_object_info_lists_the_nodes_with_tooltips(server):
    info = server.get("/object_info")
    nodes = (("RLGApply", "RLG Apply"), ("RLGGuider", "RLG Guider"), ("RLGRLModel", "RLG RL Model"),
             ("RLGApplyMulti", "RLG Apply (several RL models)"), ("RLGGuiderMulti", "RLG Guider (several RL models)"),
             ("RLGLoraLoaderModelOnly", "Load LoRA (PEFT aware)"))
    for node, display in nodes:
        assert node in info, f"{node} missing from /object_info; server log:\n{server.log()}"
        assert info[node]["display_name"] == display
        for section in ("required", "optional"):
            for name, spec in info[node]["input"].get(section, {}).items():
                assert spec[1].get("tooltip"), f"{node}.{name} has no tooltip"
    apply_inputs = info["RLGApply"]["input"]["required"]
    assert list(apply_inputs) == ["model", "rl_model", "rlg_scale", "start_percent", "end_percent"]
    for node in ("RLGApply", "RLGGuider", "RLGRLModel"):  # new widgets are optional and come last
        assert list(info[node]["input"]["optional"])[:3] == ["schedule", "end_scale", "rl_cfg"], node
    assert info["RLGRLModel"]["output"] == ["RLG_RL_MODELS"]
    assert info["RLGApplyMulti"]["input"]["required"]["rl_models"][0] == "RLG_RL_MODELS"
    scale = apply_inputs["rlg_scale"][1]
    assert scale["default"] == 1.5 and scale["min"] <= -10 and scale["max"] >= 10
    assert "0 = base model" in scale["tooltip"] and "1 = RL model" in scale["tooltip"]
    assert info["RLGApply"]["output"] == ["MODEL"] and info["RLGGuider"]["output"] == ["GUIDER"]
    # Some built-in extras fail without kornia/spandrel; only this pack's lines matter.
    failed = [line for line in server.log().splitlines() if "IMPORT FAILED" in line and "RLG" in line]
    assert not failed, failed


def test_rlg_prompt_over_http_matches_in_process_sampling(server):
    entry = server.run(rlg_graph(FULL_RL, rlg_scale=1.5, prefix="latents/full"))
    assert entry["status"]["status_str"] == "success", entry["status"]
    out = saved_latent(server, entry)
    base = h.load_model("sd3")
    rl = h.load_model("sd3", rl_seed=1)
    expected = h.ksample(h.rlg(base, rl, 1.5, 0.0, 1.0), cfg=3.0, steps=4, seed=42)
    assert out.shape == expected.shape
    assert h.max_diff(out, expected) <= 1e-4
    assert h.max_diff(out, h.ksample(base, cfg=3.0, steps=4, seed=42)) > 1e-3


def test_base_prompt_after_lora_rlg_prompt_is_untouched(server):
    first = saved_latent(server, server.run(base_only_graph("latents/base_a")))
    rlg = server.run(rlg_graph(LORA_RL, rlg_scale=2.0, prefix="latents/lora"))
    assert rlg["status"]["status_str"] == "success", rlg["status"]
    again = saved_latent(server, server.run(base_only_graph("latents/base_b")))
    assert torch.equal(first, again)
    assert h.max_diff(saved_latent(server, rlg), first) > 1e-3


def test_bad_window_is_refused_with_a_message_naming_the_inputs(server):
    """Refused when queued (the node's validate_inputs), before any loader runs; tests/test_queue_checks.py has the
    wording on every RLG node."""
    graph = rlg_graph(FULL_RL, start=0.8, end=0.2, prefix="latents/bad")
    status, body = server.queue(graph)
    assert status == 400, body
    errors = body["node_errors"]["3"]
    assert errors["class_type"] == "RLGApply"
    details = " ".join(e["details"] for e in errors["errors"])
    assert "start_percent (0.8) is after end_percent (0.2)" in details
    assert {e["extra_info"]["input_name"] for e in errors["errors"]} == {"start_percent", "end_percent"}


def test_rlg_guider_through_sampler_custom_advanced(server):
    graph = copy.deepcopy(rlg_graph(LORA_RL, prefix="latents/unused"))
    del graph["3"], graph["6"], graph["7"]
    graph.update({
        "10": {"class_type": "RLGGuider", "inputs": {"model": ["1", 0], "rl_model": ["2", 0], "positive": ["4", 0],
                                                     "negative": ["4", 1], "cfg": 3.0, "rlg_scale": 1.5,
                                                     "start_percent": 0.0, "end_percent": 1.0}},
        "11": {"class_type": "RandomNoise", "inputs": {"noise_seed": 42}},
        "12": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
        "13": {"class_type": "BasicScheduler", "inputs": {"model": ["1", 0], "scheduler": "simple", "steps": 4,
                                                          "denoise": 1.0}},
        "14": {"class_type": "SamplerCustomAdvanced", "inputs": {"noise": ["11", 0], "guider": ["10", 0],
                                                                 "sampler": ["12", 0], "sigmas": ["13", 0],
                                                                 "latent_image": ["5", 0]}},
        "7": {"class_type": "SaveLatent", "inputs": {"samples": ["14", 0], "filename_prefix": "latents/guider"}},
    })
    entry = server.run(graph)
    assert entry["status"]["status_str"] == "success", entry["status"]
    via_guider = saved_latent(server, entry)
    via_ksampler = saved_latent(server, server.run(rlg_graph(LORA_RL, rlg_scale=1.5, prefix="latents/ks")))
    assert h.max_diff(via_guider, via_ksampler) <= 1e-5


def test_two_rl_loras_over_http(server):
    graph = rlg_graph(LORA_RL, prefix="latents/unused")
    del graph["3"]
    graph.update({
        "20": {"class_type": "LoraLoaderModelOnly", "inputs": {"model": ["1", 0], "lora_name": LORA2_FILE,
                                                               "strength_model": 1.0}},
        "21": {"class_type": "RLGRLModel", "inputs": {"rl_model": ["2", 0], "rlg_scale": 1.2, "start_percent": 0.0,
                                                      "end_percent": 1.0}},
        "22": {"class_type": "RLGRLModel", "inputs": {"rl_model": ["20", 0], "rlg_scale": 0.7, "start_percent": 0.0,
                                                      "end_percent": 0.6, "schedule": "linear", "end_scale": 0.2,
                                                      "rl_models": ["21", 0]}},
        "23": {"class_type": "RLGApplyMulti", "inputs": {"model": ["1", 0], "rl_models": ["22", 0]}},
    })
    graph["6"]["inputs"]["model"] = ["23", 0]
    graph["7"]["inputs"]["filename_prefix"] = "latents/two_loras"
    entry = server.run(graph)
    assert entry["status"]["status_str"] == "success", entry["status"]
    out = saved_latent(server, entry)

    from comfyui_rlg.nodes.apply import attach_rlg
    from comfyui_rlg.nodes.settings import RLGSettings

    base = h.load_model("sd3")
    rl1, rl2 = h.with_lora(base, lora_seed=7), h.with_lora(base, lora_seed=8, match="mlp")
    terms = [(rl1, RLGSettings(1.2)), (rl2, RLGSettings(0.7, 0.0, 0.6, "linear", 0.2))]
    expected = h.ksample(attach_rlg(base, terms), cfg=3.0, steps=4, seed=42)
    assert h.max_diff(out, expected) <= 1e-4
    assert h.max_diff(out, h.ksample(rl1, cfg=3.0, steps=4, seed=42)) > 1e-3
