"""Start ComfyUI's main.py with this pack and drive it over HTTP, as a user or a script would."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ComfyServer:
    def __init__(self, comfy_dir: Path, work_dir: Path, extra_paths_yaml: Path, whitelist: list[str]):
        self.comfy_dir = comfy_dir
        self.work_dir = work_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.output_dir = work_dir / "output"
        self.log_path = work_dir / "server.log"
        self.cmd = [
            sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
            "--output-directory", str(self.output_dir), "--temp-directory", str(work_dir / "temp"),
            "--user-directory", str(work_dir / "user"), "--input-directory", str(work_dir / "input"),
            "--extra-model-paths-config", str(extra_paths_yaml), "--database-url", "sqlite:///:memory:",
            "--disable-all-custom-nodes", "--whitelist-custom-nodes", *whitelist,
        ]
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 180.0) -> ComfyServer:
        for sub in ("", "output", "temp", "user", "input"):
            (self.work_dir / sub).mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "w")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(self.cmd, cwd=self.comfy_dir, stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=env)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.proc.returncode}:\n{self.log()}")
            try:
                self.get("/system_stats")
                return self
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.5)
        raise RuntimeError(f"ComfyUI did not start within {timeout}s:\n{self.log()}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-8000:] if self.log_path.exists() else ""

    def get(self, route: str):
        with urllib.request.urlopen(self.url + route, timeout=30) as resp:
            return json.loads(resp.read())

    def post(self, route: str, payload: dict):
        req = urllib.request.Request(self.url + route, data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read() or b"{}")

    def run_prompt(self, prompt: dict, timeout: float = 300.0) -> dict:
        """Queue an API-format graph and wait for its /history entry."""
        status, body = self.post("/prompt", {"prompt": prompt, "client_id": str(uuid.uuid4())})
        if status != 200:
            raise AssertionError(f"/prompt refused the graph ({status}): {json.dumps(body)[:2000]}")
        prompt_id = body["prompt_id"]
        deadline = time.time() + timeout
        while time.time() < deadline:
            history = self.get(f"/history/{prompt_id}")
            if prompt_id in history and history[prompt_id].get("status", {}).get("completed") is not None:
                entry = history[prompt_id]
                if entry["status"].get("status_str") in ("success", "error"):
                    return entry
            time.sleep(0.2)
        raise TimeoutError(f"prompt {prompt_id} did not finish in {timeout}s:\n{self.log()}")


def execution_error(entry: dict) -> dict | None:
    for kind, data in entry.get("status", {}).get("messages", []):
        if kind == "execution_error":
            return data
    return None
