"""The reliability suite's harness: its model files (good and broken), its API graphs, its servers under each
ComfyUI cache, the fresh reference process, and what a run measured.

The tests are in tests/reliability/ (load, faults, bad input) and tests/test_security.py; FIGURES collects what
they measured, and tests/conftest.py prints summary_lines() at the end of a run ("RLG reliability").

Which cache a server runs (see CACHES): ComfyUI's default cache is CLASSIC up to 0.21 (a prompt starts by dropping
every output the previous prompt left that it does not use) and RAM_PRESSURE since 0.22 (outputs of earlier
prompts stay cached until a node of a later prompt has executed and memory is short of the cache's threshold;
with the default thresholds on a machine of up to 128 GB, that is at once). A server's probe reports the cache its
executor really runs (harness.probe.executor_cache), and the tests check it against what this module expects.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import safetensors.torch
import torch

from . import host
from .probe import weights_digest
from .server import PACK_DIR_NAME, ComfyServer

TEST_NODES = host.ROOT / "tests" / "comfy_test_nodes"  # holds rlg_test_nodes, loaded as a custom node pack
TEST_NODES_PACK = "rlg_test_nodes"

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
PICKLE_MARKER = "PICKLE_RAN"  # the folder (in the models folder) the pickle's code would create


class _RunsCode:
    """Unpickling this creates `marker`: proof that code ran. A safe loader refuses it."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (self.marker,)


def write_model_files(models: Path, other_family: bool = True) -> dict[str, str]:
    """Every model file the suite loads, in ComfyUI's folder layout. Returns {base, rl: weights digest}.

    other_family=False leaves out the SD1.5 model and LoRA (26 M parameters, the slow part).
    """
    from . import sampling as h  # (they import ComfyUI: after harness.host.use_comfy(), not when this module is)
    from . import tiny_models as tm

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
    torch.save({"lora": _RunsCode(str(models / PICKLE_MARKER))}, models / "loras" / LORA_PICKLE)
    return {"base": weights_digest(base_sd), "rl": weights_digest(rl_sd)}


def model_paths_config(work: Path, models: Path) -> Path:
    """An extra model paths config: the suite's model folders, and the test nodes as a custom_nodes folder."""
    config = work / "extra_model_paths.yaml"
    config.write_text(f"rlg_reliability:\n  base_path: {models}\n  diffusion_models: diffusion_models\n"
                      f"  loras: loras\n  custom_nodes: {TEST_NODES}\n")
    return config


# Processes started here run torch on one thread. The tiny models gain nothing from more. The server, the
# fresh process and pytest share CI's two cores, and OpenMP threads that spin-wait for a busy core slow a tiny
# prompt from 0.05 s to 3 s (measured here with another job running).
ONE_TORCH_THREAD = {"OMP_NUM_THREADS": "1"}


# -- caches ------------------------------------------------------------------------------------------

# The first ComfyUI whose default cache is RAM_PRESSURE (main.py: no cache flag -> CacheType.RAM_PRESSURE, with
# `--cache-ram [ACTIVE [INACTIVE]]` in GB). Before it, the default is CLASSIC and RAM_PRESSURE an opt-in
# (`--cache-ram HEADROOM`, another implementation).
RAM_PRESSURE_DEFAULT_SINCE = (0, 22, 0)


@dataclass(frozen=True)
class Cache:
    """A cache a server of the suite runs: its name here, the flags that pick it, and the cache ComfyUI runs then."""

    name: str
    args: tuple[str, ...]
    kind: str  # ComfyUI's name (execution.CacheType): CLASSIC or RAM_PRESSURE

    @property
    def label(self) -> str:
        how = " ".join(self.args) if self.args else "the default"
        return f"{self.kind} ({how})"


def caches(version: tuple[int, ...] | None = None) -> dict[str, Cache]:
    """The caches the suite measures on a host (this leg's by default), by name:

    default        what the host runs without a flag: what users run;
    classic        CLASSIC, where it is not the default (--cache-classic);
    ram_pressure   RAM_PRESSURE with thresholds that make it deterministic, where it is the default:
                   --cache-ram 0 100000 never drops outputs of the running prompt (no active threshold) and
                   always drops older prompts' outputs once a node has executed (an inactive threshold no free
                   memory reaches). The defaults behave so too on a machine of up to 128 GB.
    """
    ram_default = (version or host.version_tuple()) >= RAM_PRESSURE_DEFAULT_SINCE
    if not ram_default:
        return {"default": Cache("default", (), "CLASSIC")}
    return {"default": Cache("default", (), "RAM_PRESSURE"),
            "classic": Cache("classic", ("--cache-classic",), "CLASSIC"),
            "ram_pressure": Cache("ram_pressure", ("--cache-ram", "0", "100000"), "RAM_PRESSURE")}


def cache_named(name: str) -> Cache | None:
    """One of caches(), or None where the host has no such variant (it would be its default)."""
    return caches().get(name)


def start_server(work: Path, models: Path, cache: Cache | None = None) -> ComfyServer:
    """A ComfyUI server with the pack, the test nodes and the suite's models, under `cache` (the default if None)."""
    work.mkdir(parents=True, exist_ok=True)
    return ComfyServer(work, model_paths_config(work, models), [PACK_DIR_NAME, TEST_NODES_PACK],
                       extra_args=cache.args if cache else (), env=ONE_TORCH_THREAD).start()


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


BASE_LOADER = {"class_type": "UNETLoader", "inputs": {"unet_name": BASE, "weight_dtype": "default"}}


def probe_node(model: list | None = None, track: str = "", census: bool = False, cache: bool = False,
               after: str | None = None, report: bool = True) -> dict:
    """An RLGTestProbe node: inspects (and tracks, weakly, as `track`) the model linked, reports the cache and a
    census if asked, reports nothing if not `report`; `after`: the id of a probe that must run first."""
    inputs: dict = {"census": census, "cache": cache, "report": report}
    if model is not None:
        inputs["model"] = model
        inputs["track"] = track
    if after is not None:
        inputs["after"] = [after, 0]
    return {"class_type": "RLGTestProbe", "inputs": inputs}


def probe_graph(census: bool = False, models: dict[str, dict] | None = None, cache: bool = False,
                first: bool = False) -> dict:
    """Probes after a first one (`a`, which executes first, so any cache has dropped older prompts when the others
    run; it reports only if `first`): `p` with no model, and one per {label: loader node} inspecting and tracking
    it."""
    g = {"a": probe_node(report=first), "p": probe_node(census=census, cache=cache, after="a")}
    for label, loader in (models or {}).items():
        g[f"L{label}"] = loader
        g[f"p{label}"] = probe_node([f"L{label}", 0], track=label, after="a")
    return g


def run_ok(srv: ComfyServer, prompt: dict) -> dict:
    """A prompt that must succeed; forgotten by the server's history once read (a long-lived server)."""
    return srv.run_ok(prompt, forget=True)


def probe(srv: ComfyServer, census: bool = False, models: dict[str, dict] | None = None,
          cache: bool = False, first: bool = False) -> dict:
    """The probes' reports: {"": the server (after older prompts were dropped), "first": the first probe's (before;
    empty unless `first`), label: that model's report}."""
    entry = run_ok(srv, probe_graph(census, models, cache, first))
    reports = {"": entry["outputs"]["p"]["probe"][0], "first": entry["outputs"]["a"]["probe"][0]}
    for label in models or {}:
        reports[label] = entry["outputs"][f"p{label}"]["probe"][0]
    return reports


# -- the fresh process -----------------------------------------------------------------------------

class ReferenceProcess:
    """A process of its own (python -m harness.reference) that runs graphs through ComfyUI's executor, with no
    cache and nothing shared with any server: see harness/reference.py."""

    def __init__(self, models: Path, work: Path):
        work.mkdir(parents=True, exist_ok=True)
        config = model_paths_config(work, models)
        self.log_path = work / "reference.log"
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "harness.reference", str(work), str(config), "--whitelist", TEST_NODES_PACK],
            cwd=host.ROOT,
            env=host.child_env(ONE_TORCH_THREAD), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
            text=True, bufsize=1)
        self._answers: dict[str, dict] = {}
        self._count = 0
        self.ready: dict | None = None

    def submit(self, prompt: dict) -> str:
        self._count += 1
        ticket = f"g{self._count}"
        self.proc.stdin.write(json.dumps({"id": ticket, "graph": prompt}) + "\n")
        self.proc.stdin.flush()
        return ticket

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the reference process ended:\n{self.log_path.read_text()[-4000:]}")
        answer = json.loads(line)
        if "ready" in answer:
            # The same ComfyUI as this leg's, and nothing of another tree (harness.host).
            if answer["comfyui_version"] != host.comfy_version() or answer["foreign_modules"]:
                raise RuntimeError(f"the reference process runs another ComfyUI than this leg's: {answer}")
            self.ready = answer
        elif "id" in answer:
            self._answers[answer["id"]] = answer
        return answer

    def result(self, ticket: str, timeout: float = 600.0) -> dict[str, torch.Tensor]:
        """{SaveLatent node id: the latent it saved} of a graph submitted."""
        start = time.time()
        while ticket not in self._answers:
            self._read()
            if time.time() - start > timeout:
                raise TimeoutError(f"no reference for {ticket} in {timeout}s")
        answer = self._answers.pop(ticket)
        if "error" in answer:
            raise AssertionError(f"the reference process could not run the graph:\n{answer['error']}")
        return {node_id: safetensors.torch.load_file(path)["latent_tensor"]
                for node_id, path in answer["latents"].items()}

    def sample(self, prompt: dict) -> dict[str, torch.Tensor]:
        return self.result(self.submit(prompt))

    def wait_ready(self) -> dict:
        """What the process reports once ComfyUI is up: its version, cache, the node packs loaded."""
        while self.ready is None:
            self._read()
        return self.ready

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._log.close()


# -- what the run measured --------------------------------------------------------------------------

# {label: value}, in order; a label names the cache a figure was measured under where that matters.
FIGURES: dict[str, str] = {}
RESULTS: dict = {"checked": 0, "checked_max_diff": 0.0, "faults": [], "bad_inputs": [], "two_nodes": []}


def summary_lines() -> list[str]:
    """The figures of this run, one line each (tests/conftest.py prints them under 'RLG reliability')."""
    rows = list(FIGURES.items())
    if RESULTS["faults"]:
        rows.append(("faults survived", f"{len(RESULTS['faults'])}: {'; '.join(RESULTS['faults'])}"))
    if RESULTS["bad_inputs"]:
        kinds = [k for _, k, _ in RESULTS["bad_inputs"]]
        rows.append(("bad inputs tried", f"{len(kinds)}, each refused naming node and input "
                     f"({kinds.count('validation')} by ComfyUI's validation, {kinds.count('execution')} by the "
                     "node), the next good prompt exact"))
    if RESULTS["two_nodes"]:
        rows.append(("two RLG nodes in one graph", f"{'; '.join(RESULTS['two_nodes'])}: each equal to the node alone"))
    if RESULTS["checked"]:
        rows.append(("other prompts vs a fresh process",
                     f"{RESULTS['checked']}, max |diff| {RESULTS['checked_max_diff']:.2e}: nothing lost"))
    width = max((len(label) for label, _ in rows), default=0)
    return [f"{label:{width}s}  {value}" for label, value in rows]


# -- in-process ----------------------------------------------------------------------------------------

@contextlib.contextmanager
def loras_folder(path: Path):
    """folder_paths' loras folder set to `path` alone, as a ComfyUI whose models live there; restored after."""
    import folder_paths

    saved = folder_paths.folder_names_and_paths["loras"]
    folder_paths.folder_names_and_paths["loras"] = ([str(path)], set(saved[1]))
    folder_paths.filename_list_cache.pop("loras", None)
    try:
        yield
    finally:
        folder_paths.folder_names_and_paths["loras"] = saved
        folder_paths.filename_list_cache.pop("loras", None)
