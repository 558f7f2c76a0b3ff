"""The reliability suite's host: model files (good and broken), API graphs, a fast HTTP driver, and the
fresh process that samples the graphs a server's results are checked against (reliability_reference.py).

FIGURES collects what a run measured; conftest's terminal summary prints it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import safetensors.torch
import torch

from harness import host
from harness import sampling as h
from harness import tiny_models as tm
from harness.probe import weights_digest
from harness.server import ComfyServer

TESTS = Path(__file__).resolve().parent
TEST_NODES = TESTS / "comfy_test_nodes"

# What a run measured, in order: {label: value}. Printed at the end by conftest.pytest_terminal_summary.
FIGURES: dict[str, str] = {}

BASE = "rel_base.safetensors"
RL = "rel_rl.safetensors"
SD15 = "rel_sd15.safetensors"  # an RL model of another family
LORA = "rel_lora.safetensors"  # plain LoRA, ComfyUI key format, attention layers
LORA2 = "rel_lora_mlp.safetensors"  # plain LoRA on the MLPs
PEFT = "rel_peft/adapter_model.safetensors"  # PEFT LoRA with its adapter_config.json beside it
PEFT_ALPHA = 8  # lora_alpha for rank 4: the trained scale is 2

# Broken LoRA files, refused by Load LoRA (PEFT aware).
LORA_SD15 = "bad_sd15_lora.safetensors"  # keys for another family: none fits SD3
LORA_TRUNCATED = "bad_truncated.safetensors"
LORA_NOT_SAFETENSORS = "bad_text.safetensors"
LORA_PICKLE = "bad_pickle.pt"  # a pickle whose loading would run code
PEFT_BAD_JSON = "bad_json/adapter_model.safetensors"
PEFT_HUGE_JSON = "bad_huge/adapter_model.safetensors"


class _RunsCode:
    """Unpickling this creates `marker`: proof that code ran. A safe loader refuses it."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (self.marker,)


def write_model_files(models: Path, other_family: bool = True) -> dict[str, str]:
    """Every model file the suite loads, in ComfyUI's folder layout. Returns {name: weights digest}.

    other_family=False leaves out the SD1.5 model and LoRA (26 M parameters, the slow part).
    """
    (models / "diffusion_models").mkdir(parents=True)
    (models / "loras").mkdir()

    def save(sd, rel):
        path = models / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        safetensors.torch.save_file(sd, path)
        return path

    base_sd = tm.tiny_sd3_state_dict(0)
    rl_sd = tm.perturbed(base_sd, 1)
    save(base_sd, f"diffusion_models/{BASE}")
    save(rl_sd, f"diffusion_models/{RL}")
    if other_family:
        sd15 = tm.tiny_sd15_state_dict(0)
        save({k: v.half() for k, v in sd15.items()}, f"diffusion_models/{SD15}")
        save(tm.lora_for(sd15, 7), f"loras/{LORA_SD15}")
    save(tm.lora_for(base_sd, 7), f"loras/{LORA}")
    save(tm.lora_for(base_sd, 8, match="mlp"), f"loras/{LORA2}")
    peft = tm.peft_lora_for_sd3(h.load_model("sd3"), 3)
    config = json.dumps({"r": 4, "lora_alpha": PEFT_ALPHA, "peft_type": "LORA"})
    for rel, text in ((PEFT, config), (PEFT_BAD_JSON, '{"r": 4, "lora_alpha": 8,'),
                      (PEFT_HUGE_JSON, '{"r": 4, "lora_alpha": 8, "pad": "' + "x" * (3 << 20) + '"}')):
        save(peft, f"loras/{rel}").with_name("adapter_config.json").write_text(text)

    good = (models / "loras" / LORA).read_bytes()
    (models / "loras" / LORA_TRUNCATED).write_bytes(good[: len(good) // 2])
    (models / "loras" / LORA_NOT_SAFETENSORS).write_text("this is not a LoRA, just text named like one\n")
    torch.save({"lora": _RunsCode(str(models / "PICKLE_RAN"))}, models / "loras" / LORA_PICKLE)
    return {"base": weights_digest(base_sd), "rl": weights_digest(rl_sd)}


def start_server(work: Path, models: Path) -> ComfyServer:
    work.mkdir(parents=True, exist_ok=True)
    config = work / "extra_model_paths.yaml"
    config.write_text(f"rlg_reliability:\n  base_path: {models}\n  diffusion_models: diffusion_models\n"
                      f"  loras: loras\n  custom_nodes: {TEST_NODES}\n")
    return ComfyServer(work, config, ["ComfyUI-RLG", "rlg_test_nodes"], env=ONE_TORCH_THREAD).start()


# Processes started here run torch on one thread. The tiny models gain nothing from more. The server, the
# fresh process and pytest share CI's two cores, and OpenMP threads that spin-wait for a busy core slow a tiny
# prompt from 0.05 s to 3 s (measured here with another job running).
ONE_TORCH_THREAD = {"OMP_NUM_THREADS": "1"}


# -- graphs ----------------------------------------------------------------------------------------

def _loader(kind: str, strength: float = 1.0) -> dict:
    if kind == "separate":
        return {"class_type": "UNETLoader", "inputs": {"unet_name": RL, "weight_dtype": "default"}}
    node, name = {"lora": ("LoraLoaderModelOnly", LORA), "lora_rlg": ("RLGLoraLoaderModelOnly", LORA),
                  "lora2": ("LoraLoaderModelOnly", LORA2), "peft": ("RLGLoraLoaderModelOnly", PEFT)}[kind]
    return {"class_type": node, "inputs": {"model": ["1", 0], "lora_name": name, "strength_model": strength}}


def graph(rl: str | None = "separate", *, scale=1.5, start=0.0, end=1.0, schedule="constant", end_scale=1.0,
          rl_cfg=0.0, sampler="euler", scheduler="simple", steps=4, cfg=3.0, seed=42, batch=1,
          prefix="rel/x") -> dict:
    """base UNETLoader -> [RL loader -> RLG Apply] -> KSampler -> SaveLatent, in API format.

    rl: None (the base alone), separate, lora (stock loader), lora_rlg (plain LoRA through Load LoRA
    (PEFT aware)), peft, or multi (RLG Apply (several RL models): the separate model at `scale` and the
    MLP LoRA at 1 - scale / 2).
    """
    g = {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": BASE, "weight_dtype": "default"}},
        "4": {"class_type": "RLGTestConditioning", "inputs": {"family": "sd3", "seed": 0, "batch_size": batch}},
        "5": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 64, "height": 64, "batch_size": batch}},
        "6": {"class_type": "KSampler", "inputs": {
            "model": ["1", 0], "seed": seed, "steps": steps, "cfg": cfg, "sampler_name": sampler,
            "scheduler": scheduler, "positive": ["4", 0], "negative": ["4", 1], "latent_image": ["5", 0],
            "denoise": 1.0}},
        "7": {"class_type": "SaveLatent", "inputs": {"samples": ["6", 0], "filename_prefix": prefix}},
    }
    if rl is None:
        return g
    term = {"rlg_scale": scale, "start_percent": start, "end_percent": end, "schedule": schedule,
            "end_scale": end_scale, "rl_cfg": rl_cfg}
    if rl == "multi":
        g["2"] = _loader("separate")
        g["8"] = _loader("lora2")
        g["9"] = {"class_type": "RLGRLModel", "inputs": {"rl_model": ["2", 0], **term}}
        g["10"] = {"class_type": "RLGRLModel", "inputs": {
            "rl_model": ["8", 0], "rlg_scale": round(1.0 - scale / 2, 3), "start_percent": 0.0, "end_percent": 1.0,
            "rl_models": ["9", 0]}}
        g["3"] = {"class_type": "RLGApplyMulti", "inputs": {"model": ["1", 0], "rl_models": ["10", 0]}}
    else:
        g["2"] = _loader(rl)
        g["3"] = {"class_type": "RLGApply", "inputs": {"model": ["1", 0], "rl_model": ["2", 0], **term}}
    g["6"]["inputs"]["model"] = ["3", 0]
    return g


def two_rlg_graph(a: dict, b: dict) -> dict:
    """Two single-RLG graphs as one: the base loader, conditioning and latent shared, the rest side by side.

    The nodes of `a` keep their ids with suffix 'a', those of `b` suffix 'b' (SaveLatent: 7a, 7b).
    """
    shared = ("1", "4", "5")
    out = {k: a[k] for k in shared}
    for suffix, g in (("a", a), ("b", b)):
        for node_id, node in g.items():
            if node_id in shared:
                continue
            inputs = {name: ([v[0] if v[0] in shared else v[0] + suffix, v[1]] if isinstance(v, list) else v)
                      for name, v in node["inputs"].items()}
            out[node_id + suffix] = {"class_type": node["class_type"], "inputs": inputs}
    return out


def probe_graph(census: bool = False, models: dict[str, dict] | None = None) -> dict:
    """RLGTestProbe nodes: one with no model (p), and one per {label: loader node} inspecting and tracking it."""
    g = {"p": {"class_type": "RLGTestProbe", "inputs": {"census": census}}}
    for label, loader in (models or {}).items():
        g[f"L{label}"] = loader
        g[f"p{label}"] = {"class_type": "RLGTestProbe", "inputs": {"census": False, "model": [f"L{label}", 0],
                                                                  "track": label}}
    return g


BASE_LOADER = {"class_type": "UNETLoader", "inputs": {"unet_name": BASE, "weight_dtype": "default"}}


# -- the HTTP driver: harness.server.ComfyServer ------------------------------------------------------

def run_ok(srv: ComfyServer, prompt: dict) -> dict:
    """A prompt that must succeed; forgotten by the server's history once read (a long-lived server)."""
    return srv.run_ok(prompt, forget=True)


def probe(srv: ComfyServer, census: bool = False, models: dict[str, dict] | None = None) -> dict:
    """The probe's reports: {"": the server, label: that model's report}."""
    entry = run_ok(srv, probe_graph(census, models))
    reports = {"": entry["outputs"]["p"]["probe"][0]}
    for label in models or {}:
        reports[label] = entry["outputs"][f"p{label}"]["probe"][0]
    return reports


# -- the fresh process -----------------------------------------------------------------------------

class ReferenceProcess:
    """A process of its own that samples graphs without the server (reliability_reference.py)."""

    def __init__(self, models: Path, work: Path):
        work.mkdir(parents=True, exist_ok=True)
        config = work / "extra_model_paths.yaml"
        config.write_text(f"rlg_reliability:\n  base_path: {models}\n  diffusion_models: diffusion_models\n"
                          f"  loras: loras\n  custom_nodes: {TEST_NODES}\n")
        self.log_path = work / "reference.log"
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "harness.reference", str(work), str(config), "--whitelist", "rlg_test_nodes"],
            cwd=host.ROOT,
            env=host.child_env(ONE_TORCH_THREAD), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
            text=True, bufsize=1)
        self._answers: dict[str, dict] = {}
        self._count = 0

    def submit(self, prompt: dict) -> str:
        self._count += 1
        ticket = f"g{self._count}"
        self.proc.stdin.write(json.dumps({"id": ticket, "graph": prompt}) + "\n")
        self.proc.stdin.flush()
        return ticket

    def result(self, ticket: str, timeout: float = 600.0) -> dict[str, torch.Tensor]:
        start = time.time()
        while ticket not in self._answers:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"the reference process ended:\n{self.log_path.read_text()[-4000:]}")
            answer = json.loads(line)
            if "id" in answer:
                self._answers[answer["id"]] = answer
            if time.time() - start > timeout:
                raise TimeoutError(f"no reference for {ticket} in {timeout}s")
        answer = self._answers[ticket]
        if "error" in answer:
            raise AssertionError(f"the reference process could not sample the graph:\n{answer['error']}")
        return {node_id: safetensors.torch.load_file(path)["latent_tensor"]
                for node_id, path in answer["latents"].items()}

    def sample(self, prompt: dict) -> dict[str, torch.Tensor]:
        return self.result(self.submit(prompt))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._log.close()


# -- what the run measured --------------------------------------------------------------------------

RESULTS: dict = {"checked": 0, "checked_max_diff": 0.0, "faults": [], "bad_inputs": [], "two_nodes": []}


def summary_lines() -> list[str]:
    """The figures of this run, one line each (conftest prints them under 'RLG reliability')."""
    lines = [f"{label:40s} {value}" for label, value in FIGURES.items()]
    if RESULTS["faults"]:
        lines.append(f"{'faults survived':40s} {len(RESULTS['faults'])}: {'; '.join(RESULTS['faults'])}")
    if RESULTS["bad_inputs"]:
        kinds = [k for _, k, _ in RESULTS["bad_inputs"]]
        lines.append(f"{'bad inputs tried':40s} {len(kinds)}, each refused naming node and input "
                     f"({kinds.count('validation')} by ComfyUI's validation, {kinds.count('execution')} by the "
                     "node), the next good prompt exact")
    if RESULTS["two_nodes"]:
        lines.append(f"{'two RLG nodes in one graph':40s} {'; '.join(RESULTS['two_nodes'])}: each equal to the "
                     "node alone")
    if RESULTS["checked"]:
        lines.append(f"{'other prompts vs a fresh process':40s} {RESULTS['checked']}, max |diff| "
                     f"{RESULTS['checked_max_diff']:.2e}: nothing lost")
    return lines
