"""ComfyUI's main.py with this pack, driven over HTTP as a user or a script would: the one HTTP driver.

The server runs the tree of this process's leg (harness.host.comfy_dir()), and start() refuses a server
that reports another ComfyUI version on /system_stats: a test leg never talks to another leg's ComfyUI. It loads
the pack from this checkout (harness.host.ROOT), linked as custom_nodes/ComfyUI-RLG in a folder of the server's
own, so several checkouts can share one host and each server runs the code of the checkout that started it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

from . import host

# The folder name ComfyUI knows the pack by: the whitelist, /extensions/ComfyUI-RLG/ and the template browser use it.
PACK_DIR_NAME = "ComfyUI-RLG"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def link_pack(work_dir: Path, others: tuple[Path, ...] = ()) -> Path:
    """A custom_nodes folder of work_dir's own holding ComfyUI-RLG -> this checkout (and each folder of `others`, the
    third-party packs a test stacks on RLG, under its own name), and the extra model paths config that names it
    (ComfyUI reads custom_nodes folders from such a config). Returns the config."""
    packs = work_dir / "packs"
    packs.mkdir(parents=True, exist_ok=True)
    for name, target in ((PACK_DIR_NAME, host.ROOT), *((Path(o).name, Path(o)) for o in others)):
        link = packs / name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(target, target_is_directory=True)
    config = work_dir / "rlg_pack_paths.yaml"
    config.write_text(f"rlg_pack:\n  custom_nodes: {packs}\n")
    return config


class ComfyServer:
    """One ComfyUI server process: `start()`, then `run(graph)` (queue and wait), `get` / `post`,
    `interrupt_during(graph, ...)` (a client on the websocket), `stop()`."""

    def __init__(self, work_dir: Path, extra_paths_yaml: Path, whitelist: list[str], *,
                 extra_args: tuple[str, ...] = (), env: dict[str, str] | None = None, comfy_dir: Path | None = None,
                 packs: tuple[Path, ...] = ()):
        self.comfy_dir = comfy_dir or host.comfy_dir()
        self.version = host.comfy_version(self.comfy_dir)
        self.work_dir = work_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.output_dir = work_dir / "output"
        self.log_path = work_dir / "server.log"
        self.env = host.child_env(env)
        self.packs = tuple(packs)
        whitelist = [*whitelist, *(Path(p).name for p in self.packs)]
        pack_config = self._link_pack()
        self.cmd = [
            sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
            "--output-directory", str(self.output_dir), "--temp-directory", str(work_dir / "temp"),
            "--user-directory", str(work_dir / "user"), "--input-directory", str(work_dir / "input"),
            "--extra-model-paths-config", str(extra_paths_yaml), str(pack_config), "--database-url", "sqlite:///:memory:",
            "--disable-all-custom-nodes", "--whitelist-custom-nodes", *whitelist, *extra_args,
        ]
        self.proc: subprocess.Popen | None = None

    def _link_pack(self) -> Path:
        """custom_nodes/ComfyUI-RLG -> this checkout, in the server's work folder, and the config that names it."""
        return link_pack(self.work_dir, self.packs)

    # -- the process -------------------------------------------------------------------------------
    def start(self, timeout: float = 180.0) -> ComfyServer:
        for sub in ("", "output", "temp", "user", "input"):
            (self.work_dir / sub).mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(self.cmd, cwd=self.comfy_dir, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=self.env)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.proc.returncode}:\n{self.log()}")
            try:
                stats = self.get("/system_stats")
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.3)
                continue
            self._check_version(stats)
            return self
        self.stop()
        raise RuntimeError(f"ComfyUI did not start within {timeout}s:\n{self.log()}")

    def _check_version(self, stats: dict) -> None:
        served = stats.get("system", {}).get("comfyui_version")
        if served is not None and served != self.version:
            self.stop()
            raise RuntimeError(f"the server says ComfyUI {served}, but this leg runs {self.version} ({self.comfy_dir})")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> ComfyServer:
        return self.start() if self.proc is None else self

    def __exit__(self, *exc) -> None:
        self.stop()

    def log(self, tail: int = 8000) -> str:
        return self.log_path.read_text(errors="replace")[-tail:] if self.log_path.exists() else ""

    def rss_kb(self) -> int:
        """The server process's resident memory, read from outside (Linux; 0 elsewhere)."""
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    # -- HTTP --------------------------------------------------------------------------------------
    def get(self, route: str):
        with urllib.request.urlopen(self.url + route, timeout=30) as resp:
            return json.loads(resp.read())

    def post(self, route: str, payload: dict) -> tuple[int, dict]:
        """POST JSON; (status, the JSON answer, {} for an empty one). HTTP errors are answers too."""
        req = urllib.request.Request(self.url + route, data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                body = resp.read()
                return resp.status, json.loads(body) if body.strip() else {}
        except urllib.error.HTTPError as err:
            body = err.read()
            try:
                return err.code, json.loads(body or b"{}")
            except json.JSONDecodeError:
                return err.code, {"text": body.decode(errors="replace")}

    def queue(self, prompt: dict) -> tuple[int, dict]:
        return self.post("/prompt", {"prompt": prompt, "client_id": str(uuid.uuid4())})

    def wait(self, prompt_id: str, timeout: float = 300.0, forget: bool = False) -> dict:
        """The prompt's /history entry once it finished; `forget` deletes it from the server's history then,
        so the history a long-lived server keeps does not grow."""
        deadline = time.time() + timeout
        delay = 0.005
        while time.time() < deadline:
            entry = self.get(f"/history/{prompt_id}").get(prompt_id)
            if entry and entry.get("status", {}).get("status_str") in ("success", "error"):
                if forget:
                    self.post("/history", {"delete": [prompt_id]})
                return entry
            time.sleep(delay)
            delay = min(delay * 1.5, 0.1)
        raise TimeoutError(f"prompt {prompt_id} did not finish in {timeout}s:\n{self.log()}")

    def run(self, prompt: dict, timeout: float = 300.0, forget: bool = False) -> dict:
        """Queue an API-format graph and wait for its /history entry (success or error)."""
        status, body = self.queue(prompt)
        if status != 200:
            raise AssertionError(f"/prompt refused the graph ({status}): {json.dumps(body)[:2000]}")
        return self.wait(body["prompt_id"], timeout, forget)

    def run_ok(self, prompt: dict, timeout: float = 300.0, forget: bool = False) -> dict:
        entry = self.run(prompt, timeout, forget)
        assert entry["status"]["status_str"] == "success", (json.dumps(entry["status"])[:3000], self.log(3000))
        return entry

    def interrupt_during(self, prompt: dict, node: str, after_steps: int, timeout: float = 120.0) -> tuple[str, int]:
        """Queue `prompt` as a client on the websocket, and POST /interrupt once node `node` reported `after_steps`
        steps of progress. Returns (the prompt id, the step it was interrupted at)."""
        return asyncio.run(asyncio.wait_for(self._interrupt_during(prompt, node, after_steps), timeout))

    async def _interrupt_during(self, prompt: dict, node: str, after_steps: int) -> tuple[str, int]:
        import aiohttp  # ComfyUI's own requirement: there whenever a server can run

        client_id = str(uuid.uuid4())
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(f"{self.url.replace('http', 'ws', 1)}/ws?clientId={client_id}") as ws:
                async with session.post(f"{self.url}/prompt", json={"prompt": prompt, "client_id": client_id}) as resp:
                    if resp.status != 200:
                        raise AssertionError(f"/prompt refused the graph ({resp.status}): {await resp.text()}")
                    prompt_id = (await resp.json())["prompt_id"]
                async for msg in ws:
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        continue
                    event = json.loads(msg.data)
                    data = event.get("data", {})
                    if (event.get("type") == "progress" and data.get("prompt_id") == prompt_id
                            and data.get("node") == node and data.get("value", 0) >= after_steps):
                        async with session.post(f"{self.url}/interrupt", json={}) as resp:
                            if resp.status != 200:
                                raise AssertionError(f"/interrupt answered {resp.status}")
                        return prompt_id, data["value"]
        raise AssertionError(f"the websocket closed before node {node} reported progress:\n{self.log()}")

    def latents(self, entry: dict) -> dict:
        """{SaveLatent node id: the latent it saved} of a finished prompt."""
        import safetensors.torch

        out = {}
        for node_id, node_out in entry["outputs"].items():
            for info in node_out.get("latents", []):
                out[node_id] = safetensors.torch.load_file(self.output_dir / info["subfolder"] / info["filename"])[
                    "latent_tensor"]
        return out


def messages(entry: dict, kind: str) -> list[dict]:
    """The status messages of one kind (execution_error, execution_cached...) in a /history entry."""
    return [data for k, data in entry.get("status", {}).get("messages", []) if k == kind]


def execution_error(entry: dict) -> dict | None:
    errors = messages(entry, "execution_error")
    return errors[0] if errors else None
