"""The fresh process that samples, for tests/test_reliability.py, the graphs it checks a server against.

    python -m harness.reference <models dir> <output dir>      (on the tree harness.host.comfy_dir() names)

It never talks to the server. It imports ComfyUI as a library with the server's settings (--cpu),
loads this pack as ComfyUI does, and reads API-format graphs, one JSON object per line on stdin:
{"id": "...", "graph": {...}}. It runs each graph's nodes itself, in dependency order and without any
cache (every loader reads its file again), under torch.inference_mode() as ComfyUI's executor does,
and writes the latent each SaveLatent node would save to <output dir>/<id>.safetensors, keyed by the
SaveLatent's node id. It answers each graph with one line on its stdout: {"id": ..., "ok": true} or
{"id": ..., "error": "<traceback>"}. Everything else it prints goes to stderr.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import traceback
from pathlib import Path

from .host import ROOT, use_comfy
from .pack import node_classes

TEST_NODES = ROOT / "tests" / "comfy_test_nodes" / "rlg_test_nodes" / "__init__.py"


def _protocol_stream():
    """Our stdout for the answers; everything printed by libraries goes to stderr."""
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return proto


def _setup(models: Path) -> dict:
    use_comfy(cpu=True)  # what the test server runs with (--cpu), nothing more
    import folder_paths

    folder_paths.add_model_folder_path("diffusion_models", str(models / "diffusion_models"), is_default=True)
    folder_paths.add_model_folder_path("loras", str(models / "loras"), is_default=True)

    import nodes
    from comfy_extras.nodes_sd3 import EmptySD3LatentImage

    pack_nodes = node_classes()
    spec = importlib.util.spec_from_file_location("rlg_test_nodes", TEST_NODES)
    test_nodes = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(test_nodes)

    return {**nodes.NODE_CLASS_MAPPINGS, "EmptySD3LatentImage": EmptySD3LatentImage, **pack_nodes,
            **test_nodes.NODE_CLASS_MAPPINGS}


def _call(cls, inputs: dict) -> tuple:
    from comfy_api.latest import io

    if isinstance(cls, type) and issubclass(cls, io.ComfyNode):
        return cls.execute(**inputs).args
    return getattr(cls(), cls.FUNCTION)(**inputs)


def run_graph(graph: dict, classes: dict) -> dict:
    """{SaveLatent node id: the latent it would save} for an API-format graph."""
    outputs: dict[str, tuple] = {}

    def value(v):
        if isinstance(v, list) and len(v) == 2 and isinstance(v[0], str) and isinstance(v[1], int):
            return evaluate(v[0])[v[1]]
        return v

    def evaluate(node_id: str) -> tuple:
        if node_id not in outputs:
            node = graph[node_id]
            inputs = {name: value(v) for name, v in node["inputs"].items()}
            outputs[node_id] = _call(classes[node["class_type"]], inputs)
        return outputs[node_id]

    return {node_id: value(node["inputs"]["samples"])["samples"].contiguous()
            for node_id, node in graph.items() if node["class_type"] == "SaveLatent"}


def main() -> None:
    models, out_dir = (Path(a) for a in sys.argv[1:3])
    proto = _protocol_stream()
    classes = _setup(models)
    import safetensors.torch
    import torch

    proto.write(json.dumps({"ready": True}) + "\n")
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        try:
            with torch.inference_mode():
                latents = run_graph(request["graph"], classes)
            safetensors.torch.save_file(latents, out_dir / f"{request['id']}.safetensors")
            answer = {"id": request["id"], "ok": True}
        except Exception:  # noqa: BLE001  (reported to the test, which fails with it)
            answer = {"id": request["id"], "error": traceback.format_exc()}
        proto.write(json.dumps(answer) + "\n")


if __name__ == "__main__":
    main()
