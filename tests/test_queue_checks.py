"""Mistakes refused when the prompt is queued (POST /prompt), before any node runs, with the reason first.

Over HTTP, as a script queueing API graphs meets them; tests/test_frontend_queue.py shows the same refusals in
the front-end. The sweep grid's list is compared with its sweep's at queue time by the pack's on-prompt handler
(nodes/server_hooks.py), on every host of the matrix.
"""

from __future__ import annotations

import pytest

from harness.server import execution_error

pytestmark = pytest.mark.server

PICKSCORE = "sd3.5m_flow_grpo_pickscore/adapter_model.safetensors"


def graph(rlg: str = "RLGApply", **settings) -> dict:
    """A tiny SD3 text-to-image graph on the workflow host's stand-in files: base + RL LoRA -> RLG -> KSampler."""
    rlg_node = {"class_type": rlg, "inputs": {"rl_model": ["4", 0], "rlg_scale": 1.5, "start_percent": 0.0,
                                              "end_percent": 1.0, **settings}}
    if rlg == "RLGApply":
        rlg_node["inputs"]["model"] = ["1", 0]
        model = ["3", 0]
    else:  # RLG RL Model -> RLG Apply (several RL models)
        model = ["8", 0]
    out = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd3.5_medium.safetensors"}},
        "2": {"class_type": "RLGTestConditioning", "inputs": {"family": "sd3", "seed": 0, "batch_size": 1}},
        "3": rlg_node,
        "4": {"class_type": "RLGLoraLoaderModelOnly", "inputs": {"model": ["1", 0], "lora_name": PICKSCORE,
                                                                 "strength_model": 1.0}},
        "5": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "6": {"class_type": "KSampler", "inputs": {"model": model, "seed": 0, "steps": 2, "cfg": 1.0,
                                                   "sampler_name": "euler", "scheduler": "simple",
                                                   "positive": ["2", 0], "negative": ["2", 1],
                                                   "latent_image": ["5", 0], "denoise": 1.0}},
        "7": {"class_type": "SaveLatent", "inputs": {"samples": ["6", 0], "filename_prefix": "queue_checks/x"}},
    }
    if rlg != "RLGApply":
        out["8"] = {"class_type": "RLGApplyMulti", "inputs": {"model": ["1", 0], "rl_models": ["3", 0]}}
    return out


def sweep_graph(sweep_scales: str, grid_scales: str, linked: bool) -> dict:
    """The sweep on the tiny SD3 pair, its images drawn by the demo's decode node and laid out by the grid."""
    out = graph()
    out["3"] = {"class_type": "RLGScaleSweep", "inputs": {"model": ["1", 0], "rl_model": ["4", 0], "latent": ["5", 0],
                                                          "scales": sweep_scales, "start_percent": 0.0,
                                                          "end_percent": 1.0}}
    out["6"]["inputs"]["latent_image"] = ["3", 1]
    out["7"] = {"class_type": "RLGDemoDecode", "inputs": {"samples": ["6", 0], "pixels": 16}}
    out["9"] = {"class_type": "RLGSweepGrid", "inputs": {"images": ["7", 0], "scales": grid_scales}}
    if linked:
        out["9"]["inputs"]["sweep_scales"] = ["3", 2]
    out["10"] = {"class_type": "PreviewImage", "inputs": {"images": ["9", 0]}}
    return out


def refusal(server, prompt: dict) -> str:
    """Queue a graph that must be refused: the messages of its node errors, all of them."""
    status, body = server.queue(prompt)
    assert status == 400, (status, body)
    assert body["error"]["type"] == "prompt_outputs_failed_validation", body
    return " | ".join(e.get("details", "") for node in body["node_errors"].values() for e in node["errors"])


@pytest.mark.parametrize("rlg", ["RLGApply", "RLGRLModel"])
def test_window_after_its_end_is_refused_when_queued(workflow_server, rlg):
    details = refusal(workflow_server, graph(rlg, start_percent=0.8, end_percent=0.2))
    assert "start_percent (0.8) is after end_percent (0.2)" in details
    assert details.startswith("start_percent - start_percent (0.8) is after")  # the input, then the plain reason


@pytest.mark.parametrize("start, end", [(-0.5, 1.0), (0.0, 1.5)])
def test_window_out_of_range_is_refused_although_validate_inputs_names_it(workflow_server, start, end):
    """Naming an input in validate_inputs switches off ComfyUI's own min / max check: the pack checks the range."""
    details = refusal(workflow_server, graph(start_percent=start, end_percent=end))
    assert "must lie between 0 and 1" in details


def test_sweep_window_and_list_are_refused_when_queued(workflow_server):
    prompt = sweep_graph("0, 1", "", linked=True)
    prompt["3"]["inputs"].update(start_percent=0.9, end_percent=0.1)
    assert "start_percent (0.9) is after end_percent (0.1)" in refusal(workflow_server, prompt)
    assert "'x' is not a number" in refusal(workflow_server, sweep_graph("0, x", "", linked=True))


@pytest.mark.parametrize("linked", [True, False], ids=["scales linked", "saved before: no link"])
def test_grid_list_that_differs_from_the_sweep_is_refused_before_sampling(workflow_server, linked):
    details = refusal(workflow_server, sweep_graph("0, 1, 2", "0, 0.5, 1, 1.5, 2, 3", linked))
    assert "the grid's scales (0, 0.5, 1, 1.5, 2, 3) differ from the scales the RLG Scale Sweep samples (0, 1, 2)" \
        in details
    assert "clear the grid's scales box" in details


@pytest.mark.parametrize("grid_scales, linked", [("", True), ("0; 1 2", True), ("0, 1, 2", False)],
                         ids=["typed once", "typed twice, the same", "saved before"])
def test_grid_labelled_from_its_sweep_runs(workflow_server, grid_scales, linked):
    entry = workflow_server.run(sweep_graph("0, 1, 2", grid_scales, linked))
    assert entry["status"]["status_str"] == "success", (entry["status"], workflow_server.log(3000))
    (picture,) = entry["outputs"]["10"]["images"]
    assert picture["filename"]


def test_sweep_list_known_only_when_it_runs_is_compared_then(workflow_server):
    """A sweep whose list comes from another node: the queue-time step cannot read it, so the grid compares the
    lists when it runs (after the sampling: the one case the queue cannot catch)."""
    prompt = sweep_graph("", "0, 1", linked=True)
    prompt["11"] = {"class_type": "PrimitiveString", "inputs": {"value": "0, 1, 2"}}
    prompt["3"]["inputs"]["scales"] = ["11", 0]
    entry = workflow_server.run(prompt)
    error = execution_error(entry)
    assert error and "differ from the scales the RLG Scale Sweep samples (0, 1, 2)" in error["exception_message"]


def test_grid_with_no_labels_at_all_is_refused(workflow_server):
    prompt = sweep_graph("0, 1", "", linked=False)
    prompt["9"]["inputs"]["images"] = ["12", 0]  # images that do not come from a sweep
    prompt["12"] = {"class_type": "RLGDemoDecode", "inputs": {"samples": ["5", 0], "pixels": 16}}
    assert "nothing gives the grid its labels" in refusal(workflow_server, prompt)


def test_same_model_in_both_inputs_runs_and_warns(workflow_server):
    prompt = graph()
    prompt["3"]["inputs"]["rl_model"] = ["1", 0]
    entry = workflow_server.run(prompt)
    assert entry["status"]["status_str"] == "success"
    assert "rl_model is model: RLG has no effect" in workflow_server.log(20000)


def test_swapped_inputs_are_refused_with_the_fix_first(workflow_server):
    prompt = graph()
    prompt["3"]["inputs"].update(model=["4", 0], rl_model=["1", 0])  # the RL LoRA on model, the base on rl_model
    error = execution_error(workflow_server.run(prompt))
    message = error["exception_message"]
    assert message.startswith("model and rl_model look swapped"), message
    assert message.index("the RL LoRA goes to rl_model") < message.index("Details")  # key names last
