"""A fresh process that runs API graphs through ComfyUI's own executor: what the reliability tests check a server
against.

    python -m harness.reference <work dir> <extra model paths config>... [--whitelist PACK...]

(on the tree harness.host.comfy_dir() names). It never talks to a server and shares nothing with one but the files
it reads. It starts ComfyUI the way main.py does, without the HTTP server: the server's settings (--cpu), its own
output, temp, input and user folders in <work dir>, the model folders and custom_nodes folders of the configs,
the built-in nodes, and the custom node packs loaded by ComfyUI's own loader (nodes.init_extra_nodes, with
--disable-all-custom-nodes and the whitelist: this pack, through a link of its own in <work dir>, and the packs
named). Each graph then goes through what a queued prompt goes through: execution.validate_prompt, then
execution.PromptExecutor. The executor runs with no cache (CacheType.NONE, main.py's --cache-none): every node runs,
every loader reads its file again, and after each graph every model is unloaded and collected, so no graph sees
anything an earlier one left.

The executor needs a server only to send its messages to; a stand-in keeps them. API nodes are not loaded.

Protocol: graphs come on stdin, one JSON object per line: {"id": "...", "graph": {...}}. Once ComfyUI is up, one
line {"ready": true, ...} on stdout says what was loaded; then one line per graph: {"id": ..., "latents": {SaveLatent
node id: the file it saved}} or {"id": ..., "error": "..."}. Everything else the process prints goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import sys
import traceback
from pathlib import Path

from .host import comfy_version, foreign_modules, use_comfy
from .server import PACK_DIR_NAME, link_pack


def _protocol_stream():
    """Our stdout for the answers; everything printed by libraries goes to stderr."""
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return proto


class ServerStandIn:
    """What PromptExecutor asks of PromptServer: a client id, the node running, and somewhere to send messages."""

    def __init__(self):
        self.client_id = None
        self.last_node_id = None
        self.last_prompt_id = None
        self.sockets_metadata: dict = {}
        self.messages: list[tuple[str, dict]] = []

    def send_sync(self, event, data, sid=None):
        self.messages.append((event, data))

    def queue_updated(self):
        pass


def start_comfy(work: Path, configs: list[Path], whitelist: list[str]):
    """ComfyUI as main.py starts it, without the HTTP server. Returns (nodes module, the executor, what loaded)."""
    use_comfy(cpu=True)  # what the test servers run with (--cpu)
    import utils.extra_config  # noqa: I001  (main.py imports it before nodes: nodes puts comfy/ on sys.path)
    import comfy.cli_args
    import folder_paths

    args = comfy.cli_args.args
    args.disable_all_custom_nodes = True
    args.whitelist_custom_nodes = [PACK_DIR_NAME, *whitelist]
    for name, setter in (("output", folder_paths.set_output_directory), ("temp", folder_paths.set_temp_directory),
                         ("input", folder_paths.set_input_directory), ("user", folder_paths.set_user_directory)):
        (work / name).mkdir(parents=True, exist_ok=True)
        setter(str(work / name))
    for config in [*configs, link_pack(work)]:
        utils.extra_config.load_extra_path_config(str(config))

    import execution
    import nodes

    failed = asyncio.run(nodes.init_extra_nodes(init_custom_nodes=True, init_api_nodes=False))
    executor = execution.PromptExecutor(ServerStandIn(), cache_type=execution.CacheType.NONE,
                                        cache_args={"lru": 0, "ram": 0, "ram_inactive": 0})
    loaded = sorted({getattr(cls, "RELATIVE_PYTHON_MODULE", "nodes") for cls in nodes.NODE_CLASS_MAPPINGS.values()})
    info = {"ready": True, "comfyui_version": comfy_version(), "cache": executor.cache_type.name,
            "nodes": len(nodes.NODE_CLASS_MAPPINGS), "custom_nodes": [m for m in loaded if "custom_nodes" in m],
            "builtin_import_failed": [str(f) for f in failed or []], "foreign_modules": foreign_modules()}
    return nodes, executor, info


def run_graph(executor, prompt_id: str, graph: dict) -> dict[str, str]:
    """Validate and execute one API graph as a queued prompt. {SaveLatent node id: the file it saved}."""
    import comfy.model_management
    import execution
    import folder_paths

    valid, error, outputs, node_errors = asyncio.run(execution.validate_prompt(prompt_id, graph, None))
    if not valid:
        raise RuntimeError(f"ComfyUI's validation refused the graph: {json.dumps(error)} {json.dumps(node_errors)}")
    executor.server.messages.clear()
    try:
        executor.execute(graph, prompt_id, {}, outputs)
        if not executor.success:
            errors = [data for kind, data in executor.status_messages if kind == "execution_error"]
            raise RuntimeError(f"the prompt failed: {json.dumps(errors or executor.status_messages)[:6000]}")
        latents = {}
        output_dir = Path(folder_paths.get_output_directory())
        for node_id, ui in executor.history_result["outputs"].items():
            for info in ui.get("latents", []):
                latents[node_id] = str(output_dir / info["subfolder"] / info["filename"])
        return latents
    finally:
        comfy.model_management.unload_all_models()
        executor.reset()
        gc.collect()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m harness.reference", description=__doc__.split("\n\n")[0])
    parser.add_argument("work", type=Path)
    parser.add_argument("configs", type=Path, nargs="+")
    parser.add_argument("--whitelist", nargs="*", default=["rlg_test_nodes"],
                        help="custom node packs to load besides this one (default: the test nodes)")
    options = parser.parse_args()
    proto = _protocol_stream()
    _, executor, info = start_comfy(options.work.resolve(), options.configs, options.whitelist)

    proto.write(json.dumps(info) + "\n")
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        try:
            answer = {"id": request["id"], "latents": run_graph(executor, request["id"], request["graph"])}
        except Exception:  # noqa: BLE001  (reported to the test, which fails with it)
            answer = {"id": request["id"], "error": traceback.format_exc()}
        proto.write(json.dumps(answer) + "\n")


if __name__ == "__main__":
    main()
