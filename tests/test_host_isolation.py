"""One leg, one host: every process of a test leg runs the ComfyUI tree of that leg and no other.

`comfy` has no __init__.py, so a second tree on sys.path would lend this process some of its modules
(which ones depends on import order) without any error. These tests fail the leg if anything of the host
in this process, in a server a test starts, or in the fresh reference process comes from another tree.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from harness import host

# What the suite imports, directly or through ComfyUI (among them the modules that mixed before: comfy.sample
# and comfy.nested_tensor came from the default host in the 0.8.0 leg).
EXPECTED = ("comfy.sample", "comfy.samplers", "comfy.model_patcher", "comfy.sd", "comfy.lora", "comfy.utils",
            "comfy.model_management", "comfy_api.latest", "folder_paths", "nodes")


def test_every_host_module_in_this_process_comes_from_this_legs_tree():
    import comfy.sample  # noqa: F401
    import comfy.samplers  # noqa: F401
    import folder_paths  # noqa: F401
    import nodes  # noqa: F401

    tree = host.comfy_dir()
    loaded = [name for name in EXPECTED if name in sys.modules]
    assert set(loaded) == set(EXPECTED), set(EXPECTED) - set(loaded)
    assert host.foreign_modules(tree) == {}, f"modules of another ComfyUI tree in this leg ({tree})"
    trees = [p for p in sys.path if p and (Path(p) / "comfy" / "sd.py").is_file()]
    assert [Path(p).resolve() for p in trees] == [tree], f"ComfyUI trees on sys.path: {trees}"


def test_the_check_sees_a_module_from_another_tree(tmp_path, monkeypatch):
    """foreign_modules() is what the session-end check relies on: it must notice a mixed-in module."""
    other = tmp_path / "OtherComfyUI" / "comfy"
    other.mkdir(parents=True)
    (other / "sample.py").write_text("")
    fake = type(sys)("comfy.rlg_probe_mixed")
    fake.__file__ = str(other / "sample.py")
    monkeypatch.setitem(sys.modules, "comfy.rlg_probe_mixed", fake)
    assert host.foreign_modules() == {"comfy.rlg_probe_mixed": str((other / "sample.py").resolve())}


def test_a_fresh_process_of_this_leg_loads_only_this_tree():
    """What the reference process and the demo do (harness.host.use_comfy in a process of this leg's environment)."""
    code = ("from harness import host; host.use_comfy(); import comfy.sample, comfy.samplers, nodes, execution; "
            "print(host.comfy_version()); print(host.foreign_modules())")
    out = subprocess.run([sys.executable, "-c", code], cwd=host.ROOT, env=host.child_env(), capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    version, foreign = out.stdout.strip().splitlines()[-2:]
    assert version == host.comfy_version() and foreign == "{}", out.stdout


def test_use_comfy_refuses_a_second_tree_on_sys_path(tmp_path, monkeypatch):
    other = tmp_path / "OtherComfyUI"
    (other / "comfy").mkdir(parents=True)
    (other / "comfy" / "sd.py").write_text("")
    (other / "main.py").write_text("")
    monkeypatch.setattr(sys, "path", [str(other), *sys.path])
    with pytest.raises(host.HostError, match="Another ComfyUI tree is on sys.path"):
        host.use_comfy()


@pytest.mark.server
def test_a_server_of_this_leg_serves_this_legs_comfyui(workflow_server):
    stats = workflow_server.get("/system_stats")
    assert stats["system"]["comfyui_version"] == host.comfy_version()
    assert Path(workflow_server.comfy_dir).resolve() == host.comfy_dir()
