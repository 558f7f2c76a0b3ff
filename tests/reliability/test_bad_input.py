"""Bad input over HTTP: every value, link and file a client or a workflow can get wrong is refused with an error
that names the node and the input (by ComfyUI's validation when the prompt is queued, or by the RLG node when it
runs), the server keeps serving, and the next good prompt equals a fresh process. And the nodes' own refusals,
in-process."""

from __future__ import annotations

import json
import math
import re

import pytest

from harness import reliability as rel
from harness.host import ROOT
from harness.server import messages


def _scale(value):
    return {"3": {"rlg_scale": value}}


V, X = "validation", "execution"
# A combo value not in the list: ComfyUI 0.8.0 refuses it when the prompt is queued; 0.3.75 checks no combo of a
# V3 node (RLG's), so there the node itself refuses it, by name.
C = "combo"
# (id, form, {node: {input: value, or DROP}}, kind, node id, node type, words the message must hold)
DROP = object()
BAD_INPUTS = [
    ("rlg_scale NaN", "separate", _scale(math.nan), X, "3", "RLGApply", ["rlg_scale", "finite"]),
    ("rlg_scale 'nan' as text", "lora", _scale("nan"), X, "3", "RLGApply", ["rlg_scale", "finite"]),
    ("rlg_scale +Infinity", "separate", _scale(math.inf), V, "3", "RLGApply", ["rlg_scale"]),
    ("rlg_scale -Infinity", "lora", _scale(-math.inf), V, "3", "RLGApply", ["rlg_scale"]),
    ("rlg_scale 11", "separate", _scale(11), V, "3", "RLGApply", ["rlg_scale"]),
    ("rlg_scale -10.5", "peft", _scale(-10.5), V, "3", "RLGApply", ["rlg_scale"]),
    ("rlg_scale a word", "separate", _scale("strong"), V, "3", "RLGApply", ["rlg_scale"]),
    ("rlg_scale null", "lora", _scale(None), V, "3", "RLGApply", ["rlg_scale"]),
    ("start_percent text", "separate", {"3": {"start_percent": "0.2x"}}, V, "3", "RLGApply", ["start_percent"]),
    ("end_percent an object", "lora", {"3": {"end_percent": {"v": 1}}}, V, "3", "RLGApply", ["end_percent"]),
    ("end_percent 1.5", "separate", {"3": {"end_percent": 1.5}}, V, "3", "RLGApply", ["end_percent"]),
    ("start_percent after end_percent", "lora", {"3": {"start_percent": 0.8, "end_percent": 0.2}}, V, "3",
     "RLGApply", ["start_percent", "end_percent"]),
    ("end_scale NaN", "separate", {"3": {"schedule": "linear", "end_scale": math.nan}}, X, "3", "RLGApply",
     ["end_scale", "finite"]),
    ("schedule not in the list", "separate", {"3": {"schedule": "exponential"}}, C, "3", "RLGApply", ["schedule"]),
    ("rl_cfg -1", "lora", {"3": {"rl_cfg": -1}}, V, "3", "RLGApply", ["rl_cfg"]),
    ("rl_model link missing", "separate", {"3": {"rl_model": DROP}}, V, "3", "RLGApply", ["rl_model"]),
    # ComfyUI's own wording: the node holding the dangling link, and the missing node's id.
    ("rl_model linked to no node", "separate", {"3": {"rl_model": ["99", 0]}}, V, "3", "RLGApply", ["'99'"]),
    ("rl_model linked to conditioning", "separate", {"3": {"rl_model": ["4", 0]}}, V, "3", "RLGApply", ["rl_model"]),
    ("RL model of another family", "separate", {"2": {"unet_name": rel.SD15}}, X, "3", "RLGApply",
     ["rl_model", "SD15", "SD3"]),
    ("rlg_scale NaN on an RLG RL Model", "multi", {"9": {"rlg_scale": math.nan}}, X, "9", "RLGRLModel",
     ["rlg_scale", "finite"]),
    ("start_percent after end_percent on an RLG RL Model", "multi", {"9": {"start_percent": 0.9, "end_percent": 0.1}},
     V, "9", "RLGRLModel", ["start_percent", "end_percent"]),
    ("LoRA matching no key (PEFT-aware loader)", "peft", {"2": {"lora_name": rel.LORA_SD15}}, X, "2",
     "RLGLoraLoaderModelOnly", ["lora_name", rel.LORA_SD15]),
    ("LoRA matching no key (stock loader)", "lora", {"2": {"lora_name": rel.LORA_SD15}}, X, "3", "RLGApply",
     ["rl_model", "adds nothing"]),
    ("truncated LoRA", "peft", {"2": {"lora_name": rel.LORA_TRUNCATED}}, X, "2", "RLGLoraLoaderModelOnly",
     ["lora_name", rel.LORA_TRUNCATED, "truncated"]),
    ("LoRA not a safetensors file", "peft", {"2": {"lora_name": rel.LORA_NOT_SAFETENSORS}}, X, "2",
     "RLGLoraLoaderModelOnly", ["lora_name", rel.LORA_NOT_SAFETENSORS]),
    ("LoRA a pickle that runs code", "peft", {"2": {"lora_name": rel.LORA_PICKLE}}, X, "2",
     "RLGLoraLoaderModelOnly", ["lora_name", rel.LORA_PICKLE]),
    ("adapter_config.json malformed", "peft", {"2": {"lora_name": rel.PEFT_BAD_JSON}}, X, "2",
     "RLGLoraLoaderModelOnly", ["lora_name", "adapter_config.json", "not valid JSON"]),
    ("adapter_config.json huge", "peft", {"2": {"lora_name": rel.PEFT_HUGE_JSON}}, X, "2",
     "RLGLoraLoaderModelOnly", ["lora_name", "adapter_config.json", "limit"]),
    ("lora_name leaving the folder (PEFT-aware loader)", "peft",
     {"2": {"lora_name": f"../diffusion_models/{rel.BASE}"}}, C, "2", "RLGLoraLoaderModelOnly", ["lora_name"]),
    ("lora_name leaving the folder (stock loader)", "lora", {"2": {"lora_name": "../../../../../../etc/passwd"}}, V,
     "2", "LoraLoaderModelOnly", ["lora_name"]),
    ("lora_name an absolute path", "peft", {"2": {"lora_name": str(ROOT / "README.md")}}, C, "2",
     "RLGLoraLoaderModelOnly", ["lora_name"]),
]


def _bad_prompt(form: str, changes: dict, seed: int) -> dict:
    prompt = rel.graph(form, seed=seed, prefix="rel/bad")
    for node, inputs in changes.items():
        for name, value in inputs.items():
            if value is DROP:
                del prompt[node]["inputs"][name]
            else:
                prompt[node]["inputs"][name] = value
    return prompt


def _check_refusal(srv, prompt, kind, node_id, node_type, words) -> tuple[str, str]:
    """(who refused: validation or execution, the error); asserts it names the node and the input."""
    status, body = srv.queue(prompt)
    if kind == C:
        kind = V if status == 400 else X
    if kind == V:
        assert status == 400, (status, body)
        errors = body.get("node_errors", {}).get(node_id)
        assert errors and errors["class_type"] == node_type, body
        text = json.dumps(errors["errors"])
        assert all(w in text for w in words), (words, errors)
        return V, f"{node_type} #{node_id}: {errors['errors'][0]['message']}: {errors['errors'][0]['details']}"
    assert status == 200, (status, body)
    entry = srv.wait(forget=True, prompt_id=body["prompt_id"])
    err = messages(entry, "execution_error")
    assert entry["status"]["status_str"] == "error" and err, entry["status"]
    err = err[0]
    assert (err["node_id"], err["node_type"]) == (node_id, node_type), err
    assert err["exception_type"].endswith("RLGInputError"), err["exception_type"]
    assert all(w in err["exception_message"] for w in words), (words, err["exception_message"])
    # Raised by RLG's own check, not from deep inside ComfyUI.
    last_frame = err["traceback"][-1]
    assert "/nodes/" in last_frame and ("ComfyUI-RLG" in last_frame or str(ROOT) in last_frame), last_frame
    return X, f"{node_type} #{node_id}: {err['exception_message']}"


@pytest.mark.server
@pytest.mark.parametrize("case", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_is_refused_by_name_and_the_server_keeps_serving(server, models, case):
    name, form, changes, kind, node_id, node_type, words = case
    kind, message = _check_refusal(server.srv, _bad_prompt(form, changes, server.seed()), kind, node_id, node_type,
                                   words)
    assert server.srv.proc.poll() is None
    assert not (models.path / rel.PICKLE_MARKER).exists(), "loading the LoRA file ran code"
    good = "peft" if form == "multi" else form
    server.exact(rel.graph(good, scale=0.8, seed=server.seed(), prefix="rel/good"), f"after {name}")
    rel.RESULTS["bad_inputs"].append((name, kind, message))


def test_an_rlg_rl_model_node_refuses_its_own_bad_inputs():
    """With several RL models, a bad value was refused only by the Apply node, as 'RL model <i>': the user had to
    count the chain to find it. The RLG RL Model node that holds it now refuses it."""
    from comfyui_rlg.nodes.errors import RLGInputError
    from comfyui_rlg.nodes.nodes_multi import RLGRLModel
    from harness import sampling as h

    rl = h.load_model("sd3", rl_seed=1)
    for args, words in (((math.nan, 0.0, 1.0), "rlg_scale is nan"), ((1.5, 0.8, 0.2), "start_percent"),
                        ((1.5, 0.0, 1.0, "linear", math.inf), "end_scale"), ((1.5, 0.0, 1.0, "constant", 1.0, -1.0),
                                                                              "rl_cfg")):
        with pytest.raises(RLGInputError, match=words):
            RLGRLModel.execute(rl, *args)
    assert len(RLGRLModel.execute(rl, 1.5, 0.0, 1.0).args[0]) == 1


def test_combo_values_not_in_the_list_are_refused_by_the_rlg_node_itself(tmp_path):
    """ComfyUI 0.3.75 checks no combo value of a V3 node: an API prompt's unknown schedule reached sampling and
    failed in the KSampler, a lora_name out of the loras folder failed deep in folder_paths. The nodes refuse
    both themselves, by name (0.8.0 refuses them before, in its validation)."""
    from comfyui_rlg.nodes.errors import RLGInputError
    from comfyui_rlg.nodes.nodes_lora import RLGLoraLoaderModelOnly
    from comfyui_rlg.nodes.nodes_multi import RLGRLModel
    from comfyui_rlg.nodes.nodes_rlg import RLGApply, RLGGuider
    from harness import sampling as h

    base, rl = h.load_model("sd3"), h.load_model("sd3", rl_seed=1)
    with pytest.raises(RLGInputError, match="schedule is 'exponential'; it must be one of constant, linear, cosine"):
        RLGApply.execute(base, rl, 1.5, 0.0, 1.0, schedule="exponential")
    positive, negative = h.conds()
    with pytest.raises(RLGInputError, match="schedule"):
        RLGGuider.execute(base, rl, positive, negative, 3.0, 1.5, 0.0, 1.0, schedule="Linear")
    with pytest.raises(RLGInputError, match="schedule"):
        RLGRLModel.execute(rl, 1.5, 0.0, 1.0, schedule="")
    (tmp_path / "in_folder.safetensors").write_bytes(b"")
    (tmp_path.parent / "outside.safetensors").write_bytes(b"")
    with rel.loras_folder(tmp_path):
        for name in ("../outside.safetensors", str(tmp_path.parent / "outside.safetensors"), "missing.safetensors"):
            with pytest.raises(RLGInputError, match=f"lora_name '{re.escape(name)}' is not a LoRA in the loras folder"):
                RLGLoraLoaderModelOnly.execute(base, name, 1.0)
        with pytest.raises(RLGInputError, match="lora_name 'in_folder.safetensors' cannot be read"):
            RLGLoraLoaderModelOnly.execute(base, "in_folder.safetensors", 1.0)


@pytest.mark.server
def test_base_is_untouched_after_the_bad_inputs(server):
    """The last test of this file: the base the server caches is still the file's after every refusal."""
    server.base_untouched("after the bad inputs")
