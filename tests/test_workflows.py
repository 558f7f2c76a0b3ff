"""The example workflows: well-formed, agreeing with their API twins in the real front-end, valid
for the host's nodes, and (where the model family can be made tiny) running end to end.

The API twins (example_workflows_api/, shipped for people who queue over HTTP; the demo's beside its templates,
harness/templates.py) were made by scripts/build_workflows.py through the front-end's own graphToPrompt; these
tests check that the committed UI workflows still convert to them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import safetensors.torch
import torch

from harness import templates
from harness.workflow_host import FILE_STAND_INS

# The example workflows as committed before the optional widgets (schedule, end_scale, rl_cfg) existed.
LEGACY_DIR = Path(__file__).resolve().parent / "legacy_workflows"
LEGACY = sorted(p.name.removesuffix(".ui.json") for p in LEGACY_DIR.glob("*.ui.json"))
WORKFLOWS = list(templates.templates())
# Workflows whose model families can be made tiny, with the family the stand-ins have.
RUNNABLE = {"rlg_sd35_flowgrpo_pickscore": "sd3", "rlg_sd35_flowgrpo_text": "sd3",
            "rlg_guider_sampler_custom_advanced": "sd3", "rlg_sd35_inpaint": "sd3", "rlg_sd15_diffusion_dpo": "sd15",
            "rlg_sd35_flowgrpo_two_loras": "sd3", "rlg_sd35_flowgrpo_schedule": "sd3", "rlg_sd35_flowgrpo_sweep": "sd3",
            "rlg_wan22_fun_reward_loras": "wan"}
# The others are checked against /object_info only, each for its reason:
NOT_TINY = {
    # ComfyUI's detector fixes FLUX's 24 heads of 128 and Qwen-Image's 3072-wide blocks, and matches SDXL only in
    # its full 2.6 B layout: no stand-in file of those families is small enough for CI (tests/test_families.py
    # runs tiny instances of them in-process). Z-Image is detected only at its full width (dim 3840).
    "rlg_sdxl_spo_lora": "SDXL", "rlg_sdxl_diffusion_dpo": "SDXL", "rlg_flux_srpo": "FLUX.1",
    "rlg_flux_boxflow_grpo_lora": "FLUX.1", "rlg_qwen_image_edit_arr_rpo": "Qwen-Image",
    "rlg_zimage_turbo_rl_lora": "Z-Image",
    # The demo pair is trained by `make demo` (tests/test_demo.py runs these two with it).
    "rlg_demo": "demo", "rlg_demo_sweep": "demo",
}
# Small files of these families load through UNETLoader (HunyuanVideo 1.5 and LTX-Video on every host, FLUX.2 on
# 0.33.0): they run with tiny files where the harness has them (harness.workflow_host.file_stand_in_missing says
# why not elsewhere).
BY_FILE = {workflow: family for family, (workflow, _, _) in FILE_STAND_INS.items()}
RLG_NODES = {"RLGApply", "RLGGuider", "RLGApplyMulti", "RLGGuiderMulti", "RLGScaleSweep"}
# Nodes that sample with the MODEL they are given: it must come from RLG.
SAMPLING = {"KSampler", "KSamplerAdvanced", "SamplerCustom", "CFGGuider", "BasicGuider", "DualCFGGuider"}


def api(name: str) -> dict:
    return json.loads(templates.api_path(name).read_text())


def test_every_workflow_parses_and_has_an_api_twin():
    assert len(WORKFLOWS) >= 7
    for name in WORKFLOWS:
        ui = json.loads(templates.ui_path(name).read_text())
        assert ui["nodes"] and "links" in ui, name
        assert templates.api_path(name).exists(), f"{name} has no API twin at {templates.api_path(name)}"
        types = {n["type"] for n in ui["nodes"]}
        assert "Note" in types or name == "rlg_demo", f"{name} names no model files in a Note"
        assert types & RLG_NODES, name
    assert templates.ui_path("rlg_demo").with_suffix(".jpg").exists()


def test_rlg_is_last_before_the_sampler():
    for name in WORKFLOWS:
        graph = api(name)
        bases = {tuple(n["inputs"]["model"]) for n in graph.values() if n["class_type"] in RLG_NODES}
        for node in graph.values():
            model = node["inputs"].get("model")
            if node["class_type"] in SAMPLING:
                assert graph[model[0]]["class_type"] in RLG_NODES, (name, node["class_type"])
            elif node["class_type"] == "BasicScheduler":  # it reads the sigmas only: RLG's base or RLG itself
                assert tuple(model) in bases or graph[model[0]]["class_type"] in RLG_NODES, (name, model)


LOAD_AND_CONVERT = ("async (wf) => { await app.loadGraphData(wf); return (await app.graphToPrompt()).output; }")
# A workflow the front-end's schema refuses (a model url that is no URL): what "Invalid workflow" looks like.
BAD_URL = {"nodes": [{"id": 1, "type": "Note", "pos": [0, 0], "size": [200, 100], "flags": {}, "order": 0, "mode": 0,
                      "properties": {"models": [{"name": "x.safetensors", "url": "not a url",
                                                 "directory": "checkpoints"}]},
                      "widgets_values": [""]}],
           "links": [], "groups": [], "config": {}, "extra": {}, "version": 0.4, "last_node_id": 1, "last_link_id": 0}


# The front-ends say so in a toast (kept a while): count them, before and after a file is loaded.
INVALID_TOASTS = ("() => [...document.querySelectorAll('body *')].filter(e => e.children.length === 0 && "
                  "(e.textContent || '').includes('Invalid workflow')).length")


def _load(page, workflow: dict) -> tuple[dict, bool]:
    """Load a UI workflow in the front-end: (its API conversion, whether the front-end refused the file)."""
    before = page.evaluate(INVALID_TOASTS)
    output = page.evaluate(LOAD_AND_CONVERT, workflow)
    for _ in range(6):
        page.wait_for_timeout(100)
        if page.evaluate(INVALID_TOASTS) > before:
            return output, True
    return output, False


def _schema_check_is_on(page) -> None:
    """The front-end checks loaded files against its workflow schema, so "no Invalid workflow" means something.

    1.49 and later do not by default (Comfy.Validation.Workflows); the test host turns it on
    (harness.frontend.SETTINGS), and a file with a bad model url must be refused.
    """
    assert page.evaluate("app.extensionManager.setting.get('Comfy.Validation.Workflows')") is True
    assert _load(page, BAD_URL)[1], "the front-end does not check workflows against its schema"


@pytest.mark.server
@pytest.mark.frontend
def test_ui_workflows_convert_to_their_api_twins_in_the_front_end(workflow_server):
    from harness.frontend import browser_page, reset_settings

    reset_settings(workflow_server)

    info = workflow_server.get("/object_info")
    with browser_page(workflow_server.url) as page:
        _schema_check_is_on(page)
        for name in WORKFLOWS:
            ui = json.loads(templates.ui_path(name).read_text())
            output, rejected = _load(page, ui)
            assert not rejected, f"{name}: the front-end rejects the file"
            problems = _disagreements(output, api(name), info)
            assert not problems, f"{name}: UI workflow and API twin disagree: {problems}"


def _disagreements(output: dict, twin: dict, info: dict) -> list[str]:
    """Where the front-end's conversion and the API twin differ, beyond optional inputs at their defaults.

    A newer front-end adds optional inputs the twin (built on the oldest front-end of the matrix) lacks: the
    newer host's CreateVideo.bit_depth, SaveVideo's nested format.codec. Those agree when they equal their
    defaults; any other difference, a missing input or another value, is a disagreement.
    """
    problems = []
    if set(output) != set(twin):
        return [f"nodes {sorted(set(output) ^ set(twin))}"]
    for node_id, node in twin.items():
        got = output[node_id]
        if got["class_type"] != node["class_type"]:
            problems.append(f"{node_id}: {got['class_type']} instead of {node['class_type']}")
            continue
        for key, value in node["inputs"].items():
            if key not in got["inputs"] or got["inputs"][key] != value:
                problems.append(f"{node['class_type']}.{key}: {got['inputs'].get(key, '(missing)')!r} != {value!r}")
        for key in set(got["inputs"]) - set(node["inputs"]):
            default = _default(info, node["class_type"], key, got["inputs"])
            if default is _NO_DEFAULT or got["inputs"][key] != default:
                problems.append(f"{node['class_type']}.{key}={got['inputs'][key]!r} (not in the twin, not its default)")
    return problems


_NO_DEFAULT = object()


def _default(info: dict, node_type: str, key: str, inputs: dict):
    """The default of an optional input, also of one nested in a dynamic combo ("format.codec")."""
    path = key.split(".")
    spec = _input_spec(info, node_type, path[0])
    for depth, part in enumerate(path[1:], start=1):
        if spec is None or "DYNAMICCOMBO" not in str(spec[0]):
            return _NO_DEFAULT
        chosen = inputs.get(".".join(path[:depth]))
        option = next((o for o in spec[1].get("options", []) if o.get("key") == chosen), None)
        if option is None:
            return _NO_DEFAULT
        sections = option.get("inputs", {})
        spec = next((sections[s][part] for s in ("required", "optional") if part in sections.get(s, {})), None)
    if spec is None:
        return _NO_DEFAULT
    options = spec[1] if len(spec) > 1 else {}
    if "default" in options:
        return options["default"]
    if "DYNAMICCOMBO" in str(spec[0]) and options.get("options"):
        return options["options"][0]["key"]
    return _NO_DEFAULT


@pytest.mark.server
@pytest.mark.frontend
def test_workflows_saved_before_the_new_widgets_load_with_their_values(workflow_server):
    from harness.frontend import browser_page, reset_settings

    reset_settings(workflow_server)

    assert LEGACY
    info = workflow_server.get("/object_info")
    with browser_page(workflow_server.url) as page:
        _schema_check_is_on(page)
        for name in LEGACY:
            ui = json.loads((LEGACY_DIR / f"{name}.ui.json").read_text())
            old = json.loads((LEGACY_DIR / f"{name}.api.json").read_text())
            output, rejected = _load(page, ui)
            assert not rejected, f"{name}: the front-end rejects the file"
            assert set(output) == set(old), name
            for node_id, node in old.items():
                got = output[node_id]["inputs"]
                for key, value in node["inputs"].items():  # every old value where it was, none shifted
                    assert got[key] == value, (name, node["class_type"], key)
                for key in set(got) - set(node["inputs"]):  # the new widgets at their defaults
                    assert got[key] == _input_spec(info, node["class_type"], key)[1]["default"], (name, key)
            problems = _disagreements(output, api(name), info)
            assert not problems, f"{name}: does not load as today's workflow: {problems}"


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
    assert set(WORKFLOWS) == set(RUNNABLE) | set(NOT_TINY) | set(BY_FILE)


# The test node that stands in for a family's text encoder, and the family it is given.
CONDITIONING = {"sd3": ("RLGTestConditioning", "sd3"), "sd15": ("RLGTestConditioning", "sd15"),
                "wan": ("RLGTestConditioning", "wan_file"),
                **{family: ("RLGTestConditioning", f"{family}_file") for family in FILE_STAND_INS}}
# The next families' empty latents, at their smallest (the video ones with a few frames).
SMALL_LATENTS = {"EmptyHunyuanVideo15Latent": {"width": 64, "height": 64, "length": 5, "batch_size": 1},
                 "EmptyLTXVLatentVideo": {"width": 64, "height": 64, "length": 9, "batch_size": 1},
                 "EmptyFlux2LatentImage": {"width": 64, "height": 64, "batch_size": 1}}


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
                kind in ("CreateVideo", "SaveVideo", "VAELoader", "LoadImage") and family not in ("sd3", "sd15")):
            del graph[node_id]
        elif kind == "CheckpointLoaderSimple" and family in FILE_STAND_INS:  # the VAE inside is never used here
            graph[node_id] = {"class_type": "UNETLoader",
                              "inputs": {"unet_name": node["inputs"]["ckpt_name"], "weight_dtype": "default"}}
        elif kind in SMALL_LATENTS:
            node["inputs"].update(SMALL_LATENTS[kind])
        elif kind == "Flux2Scheduler":
            node["inputs"].update(steps=3, width=64, height=64)
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


@pytest.mark.server
@pytest.mark.parametrize("name", sorted(BY_FILE))
def test_next_family_workflow_runs_end_to_end_with_tiny_files(workflow_server, name):
    from harness.workflow_host import file_stand_in_missing

    why = file_stand_in_missing(BY_FILE[name])
    if why:
        pytest.skip(why)
    latent = _run_stand_in(workflow_server, api(name), name, f"standin/{name}")
    assert torch.isfinite(latent).all() and latent.abs().max() > 0


def _run_stand_in(server, api_graph: dict, name: str, prefix: str) -> torch.Tensor:
    graph = stand_in_graph(api_graph, {**RUNNABLE, **BY_FILE}[name], prefix)
    entry = server.run(graph)
    assert entry["status"]["status_str"] == "success", (entry["status"], server.log())
    (save_id,) = [k for k, v in graph.items() if v["class_type"] == "SaveLatent"]
    (info,) = entry["outputs"][save_id]["latents"]
    return safetensors.torch.load_file(server.output_dir / info["subfolder"] / info["filename"])["latent_tensor"]


# The sweep workflows as saved before the sweep's list was typed once (the grid had its own list, required).
LEGACY_SWEEP_DIR = Path(__file__).resolve().parent / "legacy_sweep_workflows"
LEGACY_SWEEPS = sorted(p.name.removesuffix(".ui.json") for p in LEGACY_SWEEP_DIR.glob("*.ui.json"))


@pytest.mark.server
@pytest.mark.frontend
def test_sweep_workflows_saved_before_load_with_the_grids_own_list(workflow_server):
    """They load as they were: the grid keeps its typed list, nothing is connected to its new sweep_scales input
    (the server compares the two lists when the prompt is queued)."""
    from harness.frontend import browser_page, reset_settings

    reset_settings(workflow_server)
    assert LEGACY_SWEEPS
    with browser_page(workflow_server.url) as page:
        for name in LEGACY_SWEEPS:
            old = json.loads((LEGACY_SWEEP_DIR / f"{name}.api.json").read_text())
            output, rejected = _load(page, json.loads((LEGACY_SWEEP_DIR / f"{name}.ui.json").read_text()))
            assert not rejected, name
            assert set(output) == set(old), name
            for node_id, node in old.items():
                for key, value in node["inputs"].items():
                    assert output[node_id]["inputs"][key] == value, (name, node["class_type"], key)
            (grid,) = [n for n in output.values() if n["class_type"] == "RLGSweepGrid"]
            assert "sweep_scales" not in grid["inputs"] and grid["inputs"]["scales"], grid


@pytest.mark.server
def test_sweep_workflow_saved_before_runs_with_its_own_list(workflow_server):
    old = json.loads((LEGACY_SWEEP_DIR / "rlg_sd35_flowgrpo_sweep.api.json").read_text())
    latent = _run_stand_in(workflow_server, old, "rlg_sd35_flowgrpo_sweep", "legacy_sweep/old")
    assert latent.shape[0] == 5  # one row per scale of its list
