"""The example workflows: well-formed, agreeing with their API twins in the real front-end, valid
for the host's nodes, and (where the model family can be made tiny) running end to end.

The API twins in tests/workflows_api were made by scripts/build_workflows.py through the front-end's
own graphToPrompt; these tests check that the committed UI workflows still convert to them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import safetensors.torch
import torch

from harness.host import ROOT

UI_DIR = ROOT / "example_workflows"
API_DIR = Path(__file__).resolve().parent / "workflows_api"
# The example workflows as committed before the optional widgets (schedule, end_scale, rl_cfg) existed.
LEGACY_DIR = Path(__file__).resolve().parent / "legacy_workflows"
LEGACY = sorted(p.name.removesuffix(".ui.json") for p in LEGACY_DIR.glob("*.ui.json"))
WORKFLOWS = sorted(p.stem for p in UI_DIR.glob("*.json"))
# Workflows whose model families can be made tiny, with the family the stand-ins have.
RUNNABLE = {"rlg_sd35_flowgrpo_pickscore": "sd3", "rlg_sd35_flowgrpo_text": "sd3",
            "rlg_guider_sampler_custom_advanced": "sd3", "rlg_sd35_inpaint": "sd3", "rlg_sd15_diffusion_dpo": "sd15",
            "rlg_sd35_flowgrpo_two_loras": "sd3", "rlg_sd35_flowgrpo_schedule": "sd3", "rlg_sd35_flowgrpo_sweep": "sd3",
            "rlg_wan22_fun_reward_loras": "wan"}
# The others are checked against /object_info only: ComfyUI's detector fixes FLUX's 24 heads of 128 and
# Qwen-Image's 3072-wide blocks, and matches SDXL only in its full 2.6 B layout, so no stand-in file of
# those families is small enough for CI (tests/test_families.py runs tiny instances of them in-process).
NOT_TINY = {"rlg_sdxl_spo_lora", "rlg_sdxl_diffusion_dpo", "rlg_flux_srpo", "rlg_flux_boxflow_grpo_lora",
            "rlg_qwen_image_edit_arr_rpo", "rlg_demo", "rlg_demo_sweep"}
RLG_NODES = {"RLGApply", "RLGGuider", "RLGApplyMulti", "RLGGuiderMulti", "RLGScaleSweep"}


def api(name: str) -> dict:
    return json.loads((API_DIR / f"{name}.json").read_text())


def test_every_workflow_parses_and_has_an_api_twin():
    assert len(WORKFLOWS) >= 7
    for name in WORKFLOWS:
        ui = json.loads((UI_DIR / f"{name}.json").read_text())
        assert ui["nodes"] and "links" in ui, name
        assert (API_DIR / f"{name}.json").exists(), f"{name} has no API twin in {API_DIR}"
        types = {n["type"] for n in ui["nodes"]}
        assert "Note" in types or name == "rlg_demo", f"{name} names no model files in a Note"
        assert types & RLG_NODES, name
    assert (UI_DIR / "rlg_demo.jpg").exists()


def test_rlg_is_last_before_the_sampler():
    for name in WORKFLOWS:
        graph = api(name)
        for node in graph.values():
            if node["class_type"] in ("KSampler", "KSamplerAdvanced", "BasicScheduler"):
                source = graph[node["inputs"]["model"][0]]["class_type"]
                assert source in RLG_NODES | {"CheckpointLoaderSimple"}, (name, source)


@pytest.mark.server
@pytest.mark.frontend
def test_ui_workflows_convert_to_their_api_twins_in_the_front_end(workflow_server):
    from harness.frontend import browser_page

    with browser_page(workflow_server.url) as page:
        for name in WORKFLOWS:
            ui = json.loads((UI_DIR / f"{name}.json").read_text())
            output = page.evaluate("async (wf) => { await app.loadGraphData(wf); return (await app.graphToPrompt())"
                                   ".output; }", ui)
            # The front-end validates a loaded workflow against its schema and alerts on a mismatch.
            page.wait_for_timeout(300)
            assert page.get_by_text("Invalid workflow").count() == 0, f"{name}: the front-end rejects the file"
            assert _strip(output) == _strip(api(name)), f"{name}: UI workflow and API twin disagree"


def _strip(graph: dict) -> dict:
    return {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in graph.items()}


@pytest.mark.server
@pytest.mark.frontend
def test_workflows_saved_before_the_new_widgets_load_with_their_values(workflow_server):
    from harness.frontend import browser_page

    assert LEGACY
    info = workflow_server.get("/object_info")
    with browser_page(workflow_server.url) as page:
        for name in LEGACY:
            ui = json.loads((LEGACY_DIR / f"{name}.ui.json").read_text())
            old = json.loads((LEGACY_DIR / f"{name}.api.json").read_text())
            output = page.evaluate("async (wf) => { await app.loadGraphData(wf); return (await app.graphToPrompt())"
                                   ".output; }", ui)
            page.wait_for_timeout(300)
            assert page.get_by_text("Invalid workflow").count() == 0, f"{name}: the front-end rejects the file"
            assert set(output) == set(old), name
            for node_id, node in old.items():
                got = output[node_id]["inputs"]
                for key, value in node["inputs"].items():  # every old value where it was, none shifted
                    assert got[key] == value, (name, node["class_type"], key)
                for key in set(got) - set(node["inputs"]):  # the new widgets at their defaults
                    assert got[key] == _input_spec(info, node["class_type"], key)[1]["default"], (name, key)
            assert _strip(output) == _strip(api(name)), f"{name}: loads as today's workflow"


@pytest.mark.server
@pytest.mark.parametrize("name", sorted(set(RUNNABLE) & set(LEGACY)))
def test_workflows_saved_before_the_new_widgets_give_the_same_result(workflow_server, name):
    old = json.loads((LEGACY_DIR / f"{name}.api.json").read_text())  # an API graph from before: no new inputs
    latents = [_run_stand_in(workflow_server, graph, name, f"legacy/{tag}") for tag, graph in
               (("old", old), ("new", api(name)))]
    assert torch.equal(*latents)


def _input_spec(info: dict, node_type: str, name: str):
    inputs = info[node_type]["input"]
    for section in ("required", "optional"):
        if name in inputs.get(section, {}):
            return inputs[section][name]
    return None


@pytest.mark.server
def test_every_node_and_input_value_is_valid_for_the_host(workflow_server):
    info = workflow_server.get("/object_info")
    for name in WORKFLOWS:
        graph = api(name)
        for node in graph.values():
            kind = node["class_type"]
            assert kind in info, f"{name}: node type {kind} is not on the host"
            for required in info[kind]["input"].get("required", {}):
                assert required in node["inputs"], f"{name}: {kind}.{required} missing"
            for key, value in node["inputs"].items():
                spec = _input_spec(info, kind, key)
                assert spec is not None, f"{name}: {kind} has no input {key}"
                kind_of_input, options = spec[0], (spec[1] if len(spec) > 1 else {})
                where = f"{name}: {kind}.{key}={value!r}"
                if isinstance(value, list):  # a link: the source's output type must fit
                    out_type = info[graph[value[0]]["class_type"]]["output"][value[1]]
                    assert out_type == kind_of_input or kind_of_input == "*", where
                elif isinstance(kind_of_input, list) or kind_of_input == "COMBO":
                    choices = kind_of_input if isinstance(kind_of_input, list) else options.get("options", [])
                    assert value in choices, where
                elif kind_of_input in ("INT", "FLOAT"):
                    assert options.get("min", -float("inf")) <= value <= options.get("max", float("inf")), where


def test_every_workflow_runs_here_or_says_why_not():
    assert set(WORKFLOWS) == set(RUNNABLE) | NOT_TINY


# The test node that stands in for a family's text encoder, and the family it is given.
CONDITIONING = {"sd3": ("RLGTestConditioning", "sd3"), "sd15": ("RLGTestConditioning", "sd15"),
                "wan": ("RLGTestConditioning", "wan_file")}


def stand_in_graph(graph: dict, family: str, prefix: str) -> dict:
    """The workflow with text encoders and VAE swapped for test nodes (those models cannot be made tiny).

    Loaders, LoRA loaders, RLG and the samplers stay as they are, with their own inputs. The sampled latent
    is saved (SaveLatent); SD3-family latents are also drawn by the demo's decode node, so nodes that take
    images (RLG Sweep Grid, SaveImage) run too. Wan's image-to-video node (it encodes the start image with
    the VAE) gives way to an empty video latent, its conditioning passed straight through.
    """
    graph = json.loads(json.dumps(graph))
    negative_sources = {str(n["inputs"]["negative"][0]) for n in graph.values() if "negative" in n["inputs"]}
    for node_id, node in list(graph.items()):
        kind = node["class_type"]
        if kind in ("TripleCLIPLoader", "CLIPLoader", "DualCLIPLoader") or (
                kind in ("SaveImage", "PreviewImage") and family != "sd3") or (
                kind in ("CreateVideo", "SaveVideo", "VAELoader", "LoadImage") and family == "wan"):
            del graph[node_id]
        elif kind == "CLIPTextEncode":
            node_type, node_family = CONDITIONING[family]
            graph[node_id] = {"class_type": node_type, "inputs": {"family": node_family, "seed": 0, "batch_size": 1}}
            if node_id in negative_sources:
                for other in graph.values():
                    if other["inputs"].get("negative") == [node_id, 0]:
                        other["inputs"]["negative"] = [node_id, 1]
        elif kind == "VAEDecode":
            save = {"class_type": "SaveLatent",
                    "inputs": {"samples": node["inputs"]["samples"], "filename_prefix": prefix}}
            if family == "sd3":
                graph[node_id] = {"class_type": "RLGDemoDecode", "inputs": {"samples": node["inputs"]["samples"],
                                                                            "pixels": 64}}
                graph["stand_in_save"] = save
            else:
                graph[node_id] = save
        elif kind == "VAEEncode" or kind.startswith("Empty"):
            empty = "EmptySD3LatentImage" if family == "sd3" else "EmptyLatentImage"
            graph[node_id] = {"class_type": empty, "inputs": {"width": 64, "height": 64, "batch_size": 1}}
        elif kind == "WanFunInpaintToVideo":
            graph[node_id] = {"class_type": "EmptyHunyuanLatentVideo",
                              "inputs": {"width": 64, "height": 64, "length": 5, "batch_size": 1}}
            outputs = {0: node["inputs"]["positive"], 1: node["inputs"]["negative"], 2: [node_id, 0]}
            for other in graph.values():
                for key, value in other["inputs"].items():
                    if isinstance(value, list) and value[0] == node_id:
                        other["inputs"][key] = outputs[value[1]]
        elif "start_at_step" in node["inputs"]:  # a KSamplerAdvanced stage: the same share of 4 steps
            steps = node["inputs"]["steps"]
            node["inputs"].update(steps=4, start_at_step=min(node["inputs"]["start_at_step"], steps) * 4 // steps,
                                  end_at_step=min(node["inputs"]["end_at_step"], steps) * 4 // steps)
        elif "steps" in node["inputs"]:
            node["inputs"]["steps"] = 3
    return graph


@pytest.mark.server
@pytest.mark.parametrize("name", sorted(RUNNABLE))
def test_workflow_runs_end_to_end_with_stand_in_models(workflow_server, name):
    latent = _run_stand_in(workflow_server, api(name), name, f"standin/{name}")
    assert torch.isfinite(latent).all() and latent.abs().max() > 0


def _run_stand_in(server, api_graph: dict, name: str, prefix: str) -> torch.Tensor:
    graph = stand_in_graph(api_graph, RUNNABLE[name], prefix)
    entry = server.run(graph)
    assert entry["status"]["status_str"] == "success", (entry["status"], server.log())
    (save_id,) = [k for k, v in graph.items() if v["class_type"] == "SaveLatent"]
    (info,) = entry["outputs"][save_id]["latents"]
    return safetensors.torch.load_file(server.output_dir / info["subfolder"] / info["filename"])["latent_tensor"]
