"""Security: what the pack's code may do. No test here names a file of the pack or pins its text: the sources are
found by walking the pack as ComfyUI loads it (harness.pack.pack_sources: its __init__.py, every module it
imports and the packages they are in, its WEB_DIRECTORY), and the rules apply to whatever is there.

* At run time (an audit hook around a fresh import, loading good and refused LoRAs, sampling): no network or
  process event, no eval/exec/compile or unpickling by the pack, and the only files it touches are in the loras
  folder folder_paths names, with LoRAs read by load_torch_file(safe_load=True).
* In the sources: no eval/exec/compile, pickle, network or process modules; model files read only through
  load_torch_file(safe_load=True) on a path folder_paths gave; every other file read only after a size check that
  refuses it, and JSON parsed only from bytes cut at that same limit. The front-end code imports only ComfyUI's
  own scripts and makes no request, evaluates no code and writes no HTML.

Each static rule is also run on code that breaks it, so a rule that finds nothing is known to be able to.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import importlib.util
import os
import re
import socket
import sys
import uuid
from pathlib import Path

import pytest
import torch

from harness import reliability as rel
from harness.audit import NETWORK_EVENTS, watching
from harness.host import ROOT
from harness.pack import pack_sources

PY_SOURCES = [p for p in pack_sources() if p.suffix == ".py"]
JS_SOURCES = [p for p in pack_sources() if p.suffix in (".js", ".mjs")]


def _fresh_pack(name: str):
    """This pack imported again under another name: every module of it executes once more."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "__init__.py", submodule_search_locations=[str(ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def test_the_pack_opens_no_connection_runs_no_code_and_reads_only_its_model_files(tmp_path):
    """Import, loading (good and refused LoRAs) and sampling, in-process, under an audit hook."""
    import comfy.utils

    from harness import sampling as h

    loras = tmp_path / "loras"
    loras.mkdir()
    models = tmp_path / "models"
    rel.write_model_files(models, other_family=False)
    config = "adapter_config.json"
    for name in (rel.LORA, rel.PEFT, str(Path(rel.PEFT).with_name(config)), rel.PEFT_HUGE_JSON,
                 str(Path(rel.PEFT_HUGE_JSON).with_name(config)), rel.LORA_PICKLE):
        (loras / name).parent.mkdir(parents=True, exist_ok=True)
        (loras / name).write_bytes((models / "loras" / name).read_bytes())
    marker = models / rel.PICKLE_MARKER  # where the pickle's code would create a folder
    name = f"comfyui_rlg_audit_{uuid.uuid4().hex[:8]}"
    torch_loads = []
    real_load = comfy.utils.load_torch_file

    def recording_load(path, *args, **kwargs):
        torch_loads.append((str(path), kwargs.get("safe_load")))
        return real_load(path, *args, **kwargs)

    comfy.utils.load_torch_file = recording_load
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models; spin-waiting threads crawl on a busy machine (rel.ONE_TORCH_THREAD)
    try:
        with rel.loras_folder(loras), watching(map(str, PY_SOURCES)) as events:
            pack = _fresh_pack(name)
            nodes = {cls.define_schema().node_id: cls
                     for cls in asyncio.run(asyncio.run(pack.comfy_entrypoint()).get_node_list())}
            base, rl_file = h.load_model("sd3"), h.load_model("sd3", rl_seed=1)
            loader = nodes["RLGLoraLoaderModelOnly"]
            rl_peft = loader.execute(base, rel.PEFT, 1.0).args[0]
            rl_plain = loader.execute(base, rel.LORA, 1.0).args[0]
            for bad in (rel.LORA_PICKLE, rel.PEFT_HUGE_JSON, "../models/diffusion_models/" + rel.BASE):
                with pytest.raises(ValueError, match="lora_name"):
                    loader.execute(base, bad, 1.0)
            for rl in (rl_peft, rl_plain, rl_file):
                h.ksample(nodes["RLGApply"].execute(base, rl, 1.5, 0.0, 1.0).args[0])
            terms = nodes["RLGRLModel"].execute(rl_file, 0.7, 0.0, 0.5).args[0]
            terms = nodes["RLGRLModel"].execute(rl_plain, 1.2, 0.2, 1.0, "linear", 0.5, rl_models=terms).args[0]
            h.ksample(nodes["RLGApplyMulti"].execute(base, terms).args[0], batch=3, sampler="dpmpp_2m")
            # The hook is live: a connection the test itself opens is seen.
            with socket.socket() as s, contextlib.suppress(OSError):
                s.connect(("127.0.0.1", 9))
    finally:
        torch.set_num_threads(threads)
        comfy.utils.load_torch_file = real_load
        for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
            del sys.modules[key]

    own = [e for e in events if e[0].startswith("socket.") and Path(__file__).name in e[2][0]]
    assert own, "the audit hook saw nothing: the check would be blind"
    events = [e for e in events if e not in own and not (e[0] == "socket.__new__" and own)]
    network = [e for e in events if e[0] in NETWORK_EVENTS or e[0].startswith("socket.")]
    assert network == [], network
    code = [e for e in events if e[0] in ("exec", "compile") or e[0].startswith(("pickle", "marshal"))]
    assert code == [], code
    assert not marker.exists(), "loading the pickle LoRA ran its code"
    # Files: the LoRAs through comfy.utils.load_torch_file(safe_load=True), their configs, and folder listings,
    # all inside the loras folder folder_paths names.
    assert torch_loads and all(safe is True for _, safe in torch_loads), torch_loads
    opened = [path for kind, path, _ in events if kind in ("open", "os.listdir", "os.scandir", "glob.glob")]
    inside = os.path.realpath(loras)
    outside = [p for p in [p for p, _ in torch_loads] + opened
               if not os.path.realpath(p).startswith(inside + os.sep) and os.path.realpath(p) != inside]
    assert outside == [], outside
    assert any(p.endswith(config) for p in opened), opened
    rel.FIGURES["security: audit of import, loading, sampling"] = (
        f"0 network events, 0 eval/exec/compile/unpickling by the pack; {len(torch_loads)} LoRA reads "
        f"(safe_load) and {len(opened)} other file accesses, all inside the loras folder")


# -- the sources --------------------------------------------------------------------------------------

FORBIDDEN_MODULES = {"pickle", "cPickle", "dill", "marshal", "shelve", "joblib", "socket", "ssl", "http", "urllib",
                     "urllib3", "requests", "httpx", "aiohttp", "websockets", "ftplib", "smtplib", "subprocess",
                     "ctypes", "runpy", "importlib", "code", "codeop", "multiprocessing", "webbrowser", "os"}
FORBIDDEN_CALLS = {"eval", "exec", "compile", "__import__", "breakpoint", "open", "input", "execfile"}
FORBIDDEN_ATTRIBUTES = {("torch", "load"), ("jit", "load"), ("np", "load"), ("numpy", "load"), ("json", "load"),
                        ("os", "system"), ("os", "popen"), ("safetensors", "safe_open"), ("torch", "load_file"),
                        ("safetensors", "load")}
FILE_READS = {"read_bytes", "read_text", "open"}
MODEL_PATHS = {"get_full_path", "get_full_path_or_raise"}  # folder_paths' answers to "where is this model file"


def _call_name(node: ast.Call) -> tuple[str | None, str]:
    func = node.func
    if isinstance(func, ast.Name):
        return None, func.id
    if isinstance(func, ast.Attribute):
        owner = func.value
        if isinstance(owner, ast.Name):
            return owner.id, func.attr
        return (owner.attr if isinstance(owner, ast.Attribute) else None), func.attr
    return None, ""


class _Module:
    """One source, parsed: its functions and, for every node, the function it is in."""

    def __init__(self, name: str, source: str):
        self.name = name
        self.tree = ast.parse(source, filename=name)
        self.enclosing: dict[ast.AST, ast.FunctionDef | ast.AsyncFunctionDef | None] = {}
        self._visit(self.tree, None)

    def _visit(self, node, function) -> None:
        for child in ast.iter_child_nodes(node):
            self.enclosing[child] = function
            inner = child if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef) else function
            self._visit(child, inner)


def _params(function) -> list[str]:
    a = function.args
    return [p.arg for p in [*a.posonlyargs, *a.args, *a.kwonlyargs]]


def _assigned(function, name: str) -> list[ast.expr]:
    """The values `name` is assigned in `function` (plain and annotated assignments)."""
    out = []
    for node in ast.walk(function):
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            out.append(node.value)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.target.id == name:
            if node.value is not None:
                out.append(node.value)
    return out


def _from_folder_paths(expr, function, modules: list[_Module], depth: int = 0) -> str | None:
    """None if `expr` (in `function`) is a path folder_paths gave (get_full_path*), through assignments and the
    callers of the function it is a parameter of; else why not."""
    if depth > 4:
        return "too many calls deep to follow"
    if isinstance(expr, ast.Call) and _call_name(expr) in {("folder_paths", n) for n in MODEL_PATHS}:
        return None
    if not isinstance(expr, ast.Name) or function is None:
        return f"{ast.unparse(expr)} is not a path from folder_paths"
    values = _assigned(function, expr.id)
    if values:
        reasons = [_from_folder_paths(v, function, modules, depth + 1) for v in values]
        return next((r for r in reasons if r), None)
    params = _params(function)
    if expr.id not in params:
        return f"{expr.id} is not a path from folder_paths"
    index = params.index(expr.id)
    reasons, callers = [], 0
    for module in modules:
        for call in ast.walk(module.tree):
            if not isinstance(call, ast.Call) or _call_name(call)[1] != function.name:
                continue
            callers += 1
            given = next((k.value for k in call.keywords if k.arg == expr.id), None)
            if given is None and index < len(call.args):
                given = call.args[index]
            if given is None:
                reasons.append(f"a call of {function.name}() passes no {expr.id}")
                continue
            reasons.append(_from_folder_paths(given, module.enclosing.get(call), modules, depth + 1))
    if not callers:
        return f"{function.name}() reads the {expr.id} it is given, and nothing in the pack calls it"
    return next((r for r in reasons if r), None)


def _mentions_size(expr, function) -> bool:
    """`expr` reads a file's size: .st_size, os.path.getsize, or a name assigned from one of those."""
    for node in ast.walk(expr):
        if isinstance(node, ast.Attribute) and node.attr == "st_size":
            return True
        if isinstance(node, ast.Call) and _call_name(node)[1] == "getsize":
            return True
        if isinstance(node, ast.Name) and function is not None and any(
                _mentions_size(v, None) for v in _assigned(function, node.id)):
            return True
    return False


def _size_limits(function, before_line: int) -> set[str]:
    """The limits `function` refuses a file's size against (if size > limit: raise) before line `before_line`."""
    limits = set()
    for node in ast.walk(function):
        if not (isinstance(node, ast.If) and node.lineno < before_line and isinstance(node.test, ast.Compare)):
            continue
        if not any(isinstance(n, ast.Raise) for b in node.body for n in ast.walk(b)):
            continue
        sides = [node.test.left, *node.test.comparators]
        if len(sides) == 2 and isinstance(node.test.ops[0], ast.Gt | ast.GtE) and _mentions_size(sides[0], function):
            limits.add(ast.unparse(sides[1]))
    return limits


def check_python(sources: dict[str, str]) -> tuple[list[str], dict[str, int]]:
    """The static rules over {file name: source}. (problems, what was found: model reads, file reads, JSON parses)."""
    modules = [_Module(name, source) for name, source in sources.items()]
    problems, found = [], {"model reads": 0, "file reads": 0, "JSON parses": 0}
    for module in modules:
        rel_name = module.name
        for node in ast.walk(module.tree):
            function = module.enclosing.get(node)
            where = f"{rel_name}:{getattr(node, 'lineno', '?')}"
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                bad = [n for n in names if n.split(".")[0] in FORBIDDEN_MODULES]
                if bad and not (isinstance(node, ast.ImportFrom) and node.level):
                    problems.append(f"{where} imports {bad}")
            elif isinstance(node, ast.Name) and node.id in ("__builtins__", "builtins"):
                problems.append(f"{where} uses {node.id}")
            if not isinstance(node, ast.Call):
                continue
            owner, name = _call_name(node)
            if owner is None and name in FORBIDDEN_CALLS:
                problems.append(f"{where} calls {name}()")
            if (owner, name) in FORBIDDEN_ATTRIBUTES or owner in ("pickle", "marshal", "subprocess", "socket"):
                problems.append(f"{where} calls {owner}.{name}()")
            if name == "load_torch_file":
                found["model reads"] += 1
                safe = [k for k in node.keywords if k.arg == "safe_load"]
                if not (safe and isinstance(safe[0].value, ast.Constant) and safe[0].value.value is True):
                    problems.append(f"{where} load_torch_file without safe_load=True")
                path = node.args[0] if node.args else next((k.value for k in node.keywords if k.arg == "ckpt"), None)
                why = "no path" if path is None else _from_folder_paths(path, function, modules)
                if why:
                    problems.append(f"{where} load_torch_file on a path not from folder_paths: {why}")
            elif owner is not None and name in FILE_READS:
                found["file reads"] += 1
                if function is None or not _size_limits(function, node.lineno):
                    problems.append(f"{where} reads a file ({name}) without refusing its size first")
            elif (owner, name) == ("json", "loads"):
                found["JSON parses"] += 1
                arg = node.args[0] if node.args else None
                bounded = (isinstance(arg, ast.Subscript) and isinstance(arg.slice, ast.Slice)
                           and arg.slice.upper is not None)
                limits = _size_limits(function, node.lineno) if function is not None else set()
                if not bounded or ast.unparse(arg.slice.upper) not in limits:
                    problems.append(f"{where} parses JSON not cut at the size limit its file was checked against "
                                    f"({limits or 'none'})")
    return problems, found


def test_the_pack_sources_evaluate_no_code_and_read_files_only_through_folder_paths_safetensors_and_bounded_json():
    """Static: every Python source of the pack, parsed (see check_python)."""
    assert ROOT / "__init__.py" in PY_SOURCES and len(PY_SOURCES) > 1, PY_SOURCES
    problems, found = check_python({str(p.relative_to(ROOT)): p.read_text() for p in PY_SOURCES})
    assert problems == [], problems
    rel.FIGURES["security: sources"] = (
        f"{len(PY_SOURCES)} Python files found by walking the pack, parsed: no eval/exec/compile/pickle/network/"
        f"process use; {found['model reads']} model-file reads (load_torch_file, safe_load=True, a folder_paths "
        f"path); {found['file reads']} other file reads, each after a size check; {found['JSON parses']} JSON "
        "parses, each cut at that limit")


GOOD = """
import json
import comfy.utils
import folder_paths

def load(model, path, strength):
    return comfy.utils.load_torch_file(path, safe_load=True)

def node(model, name):
    path = folder_paths.get_full_path_or_raise("loras", name)
    return load(model, path, 1.0)

def config(path, limit=1024):
    if path.stat().st_size > limit:
        raise ValueError("too big")
    return json.loads(path.read_bytes()[:limit])
"""
BROKEN = {
    "eval": ("x = eval('1')", "calls eval()"),
    "pickle": ("import pickle", "imports ['pickle']"),
    "torch.load": ("import torch\ntorch.load('m.pt')", "calls torch.load()"),
    "network": ("import urllib.request", "imports ['urllib.request']"),
    "not safe_load": (GOOD.replace("safe_load=True", "safe_load=False"), "without safe_load=True"),
    "a path of its own": (GOOD.replace('folder_paths.get_full_path_or_raise("loras", name)', '"/etc/" + name'),
                          "not from folder_paths"),
    "a loader nobody calls": (GOOD.replace("return load(model, path, 1.0)", "return path"), "nothing in the pack"),
    "no size check": (GOOD.replace("> limit", "> 0 and False").replace("st_size", "st_mode"),
                      "without refusing its size"),
    "JSON not cut": (GOOD.replace("read_bytes()[:limit]", "read_bytes()"), "not cut at the size limit"),
    "JSON cut elsewhere": (GOOD.replace("read_bytes()[:limit]", "read_bytes()[:limit * 8]"),
                           "not cut at the size limit"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_each_source_rule_finds_what_it_forbids(case):
    """The rules are not blind: the pattern the pack uses passes, and each way of breaking it is found."""
    assert check_python({"good.py": GOOD}) == ([], {"model reads": 1, "file reads": 1, "JSON parses": 1})
    source, words = BROKEN[case]
    problems, _ = check_python({"bad.py": source})
    assert any(words in p for p in problems), problems


# -- the front-end code ----------------------------------------------------------------------------------

JS_FORBIDDEN = {
    "evaluates code": r"\beval\s*\(|\bFunction\s*\(|\bset(?:Timeout|Interval)\s*\(\s*[\"'`]",
    "makes a request": r"\bfetch\s*\(|\bfetchApi\b|\bXMLHttpRequest\b|\bWebSocket\b|\bEventSource\b"
                       r"|\bsendBeacon\b|\bimport\s*\(",
    "writes HTML": r"\.(?:inner|outer)HTML\s*=|\binsertAdjacentHTML\b|\bdocument\.write",
}


def _js_code(source: str) -> tuple[str, list[str]]:
    """(the code with comments removed and string contents blanked, the module specifiers it imports)."""
    imports = re.findall(r"^\s*import\b[^;]*?[\"']([^\"']+)[\"']", source, flags=re.M)
    out, i, n = [], 0, len(source)
    while i < n:
        two = source[i:i + 2]
        if two == "//":
            i = source.find("\n", i) if "\n" in source[i:] else n
        elif two == "/*":
            i = source.find("*/", i + 2) + 2 if "*/" in source[i + 2:] else n
        elif source[i] in "\"'`":
            quote, j = source[i], i + 1
            while j < n and source[j] != quote:
                j += 2 if source[j] == "\\" else 1
            out.append(quote + quote)
            i = j + 1
        else:
            out.append(source[i])
            i += 1
    return "".join(out), imports


def check_js(source: str) -> list[str]:
    code, imports = _js_code(source)
    problems = [f"imports {spec}" for spec in imports if not spec.startswith(("./", "../")) or "://" in spec]
    problems += [f"{what}: {m.group(0)!r}" for what, pattern in JS_FORBIDDEN.items()
                 for m in re.finditer(pattern, code)]
    return problems


def test_the_front_end_code_imports_only_comfyuis_scripts_and_requests_nothing():
    assert JS_SOURCES, "the pack's WEB_DIRECTORY holds no script: the walk found nothing to check"
    problems = {str(p.relative_to(ROOT)): check_js(p.read_text()) for p in JS_SOURCES}
    assert all(v == [] for v in problems.values()), problems
    good = 'import { app } from "../../scripts/app.js";\n// fetch("x") in a comment\nconst s = "eval(1)";\n'
    assert check_js(good) == []
    for bad in ('fetch("/x")', "eval(s)", 'node.innerHTML = "<b>"', 'import x from "https://a.b/c.js"',
                "await import(url)", "api.fetchApi('/prompt')"):
        assert check_js(good + bad), bad
