"""Fixtures of the reliability tests: the suite's model files, the fresh reference process, the servers (the default
one, and one per other cache the host has), and the checks a test makes of a server against the reference.

One of each per session, shared by the files of this folder: test_load.py (200 prompts, memory), test_cache.py
(what a cache drops, /free), test_faults.py, test_bad_input.py, test_graphs.py. The harness behind them is
harness/reliability.py; what they measured is printed at the end of the run (tests/conftest.py).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from harness import reliability as rel
from harness.server import ComfyServer, messages
from harness.weights import max_diff, tolerance

# A fresh seed for every "next good prompt" of the session, so none is served from a cache (Server.seed).
_SEEDS = itertools.count(5000)


@dataclass
class Models:
    path: Path
    digests: dict[str, str]  # {"base", "rl": weights digest of the file}


@pytest.fixture(scope="session")
def models(tmp_path_factory) -> Models:
    path = tmp_path_factory.mktemp("rel_models")
    return Models(path, rel.write_model_files(path))


@pytest.fixture(scope="session")
def refs(models, tmp_path_factory):
    proc = rel.ReferenceProcess(models.path, tmp_path_factory.mktemp("rel_refs"))
    yield proc
    proc.stop()


@dataclass
class Server:
    """A running server of the suite, the cache it runs, and the checks of its results against the reference."""

    srv: ComfyServer
    cache: rel.Cache
    refs: rel.ReferenceProcess
    models: Models
    _pristine: dict | None = field(default=None, repr=False)

    @property
    def pristine(self) -> dict:
        """The base model as this server loaded it before anything else ran: its state is the file's."""
        if self._pristine is None:
            state = rel.probe(self.srv, models={"base": rel.BASE_LOADER})["base"]["model"]
            assert state["digest"] == self.models.digests["base"], "the server's base weights differ from the file"
            self._pristine = state
        return self._pristine

    @staticmethod
    def seed() -> int:
        """A seed no prompt of this session used before."""
        return next(_SEEDS)

    def base_untouched(self, context: str) -> None:
        """No RL weights, hooks, weight functions, patches or wrappers left on the base the server caches.

        The probe's loader is served from ComfyUI's cache: it inspects the very base object the prompts before used.
        """
        pristine = self.pristine
        entry = rel.run_ok(self.srv, rel.probe_graph(models={"base": rel.BASE_LOADER}))
        (cached,) = messages(entry, "execution_cached")
        assert "Lbase" in cached["nodes"], f"{context}: the probe got a freshly loaded base, not the one that ran"
        state = entry["outputs"]["pbase"]["probe"][0]["model"]
        assert state == pristine, f"{context}: the base model changed: {state} != {pristine}"

    def exact(self, prompt: dict, context: str) -> dict:
        """Run a prompt; its latents equal the fresh process's to float tolerance. Returns the latents."""
        ticket = self.refs.submit(prompt)
        got = self.srv.latents(rel.run_ok(self.srv, prompt))
        want = self.refs.result(ticket)
        diff = max_diff(got, want)
        rel.RESULTS["checked"] += 1
        rel.RESULTS["checked_max_diff"] = max(rel.RESULTS["checked_max_diff"], diff)
        assert diff <= tolerance(want), f"{context}: server differs from a fresh process by {diff:.3e}"
        return got

    def next_prompts_are_right(self, form: str | None, context: str) -> None:
        """After a fault: the base untouched, base alone and RLG exactly as in a fresh process."""
        self.base_untouched(context)
        self.exact(rel.graph(None, seed=self.seed(), prefix="rel/after"), f"{context}, base alone")
        if form is not None:
            self.exact(rel.graph(form, scale=1.7, seed=self.seed(), prefix="rel/after"), f"{context}, RLG ({form})")


class Servers:
    """The suite's servers, by cache name (harness.reliability.caches): started on first use, stopped at the end."""

    def __init__(self, models: Models, refs: rel.ReferenceProcess, tmp_path_factory):
        self._models, self._refs, self._tmp = models, refs, tmp_path_factory
        self._running: dict[str, Server] = {}

    def get(self, name: str) -> Server:
        """The server under cache `name`; skips the test where the host has no such cache besides its default."""
        cache = rel.cache_named(name)
        if cache is None:
            default = rel.caches()["default"]
            pytest.skip(f"ComfyUI's default cache here is {default.kind}: the default server measures it")
        if name not in self._running:
            srv = rel.start_server(self._tmp.mktemp(f"rel_server_{name}"), self._models.path, cache)
            server = self._running[name] = Server(srv, cache, self._refs, self._models)
            assert server.pristine  # the base as loaded before anything ran
            self._check_cache(server)
        return self._running[name]

    def first_of(self, names: tuple[str, ...], kind: str) -> Server:
        """The server of the first of `names` whose cache is `kind` on this host; skips where there is none."""
        for name in names:
            cache = rel.cache_named(name)
            if cache is not None and cache.kind == kind:
                return self.get(name)
        pytest.skip(f"{kind} is not ComfyUI's default cache before 0.22 (here {rel.caches()['default'].kind}); "
                    "there it is an opt-in of another implementation (--cache-ram HEADROOM), not measured")

    @staticmethod
    def _check_cache(server: Server) -> None:
        """The server runs the cache we say it does (its executor, as the probe finds it)."""
        report = rel.probe(server.srv, cache=True)[""]["cache"]
        assert report and report["type"] == server.cache.kind, (server.cache, report)
        settings = ", ".join(f"{k} {report['args'][k]:.3g}" for k in ("ram", "ram_inactive") if report["args"].get(k))
        rel.FIGURES[f"cache of the {server.cache.name} server"] = (
            f"{server.cache.label}: the executor runs {report['type']}" + (f" ({settings} GB)" if settings else ""))

    def stop(self) -> None:
        for server in self._running.values():
            server.srv.stop()


@pytest.fixture(scope="session")
def servers(models, refs, tmp_path_factory):
    running = Servers(models, refs, tmp_path_factory)
    yield running
    running.stop()


@pytest.fixture(scope="session")
def server(servers) -> Server:
    """The server most tests share: the host's default cache, what users run."""
    return servers.get("default")
