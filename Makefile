# Every target sets up the ComfyUI host in .comfy-host/ first (idempotent, cached).
PY := .comfy-host/venv/bin/python

.PHONY: setup test test-quick lint demo demo-server bench bench-caches gpu-prepare gpu-check gpu-dry-run

setup:
	bash scripts/setup_host.sh

## test: the whole suite on every ComfyUI host of the test matrix, server and browser tests included (what CI runs)
test:
	bash scripts/run_tests.sh

## test-quick: everything but the tests that start the ComfyUI server, on the default host (0.3.75)
test-quick: setup
	$(PY) -m pytest -m "not server"

## lint: ruff over the pack, tests and scripts
lint: setup
	$(PY) -m ruff check .

## demo: train the tiny base/RL pair (cached; the same files on any x86-64 CPU), turn the RLG dial through ComfyUI, write out/demo/, check what it shows
demo: setup
	$(PY) -m demo.run_demo

## demo-server: ComfyUI with the pack and the demo's nodes and templates (rlg_demo_nodes) on http://127.0.0.1:8188 (after make demo)
demo-server: setup
	mkdir -p .comfy-host/packs && ln -sfn $(CURDIR) .comfy-host/packs/ComfyUI-RLG
	printf 'rlg_pack:\n  custom_nodes: %s\n' $(CURDIR)/.comfy-host/packs > .comfy-host/packs.yaml
	cd .comfy-host/ComfyUI && PYTHONPATH=$(CURDIR) ../venv/bin/python main.py --cpu --listen 127.0.0.1 --port 8188 \
		--extra-model-paths-config $(CURDIR)/demo/extra_model_paths.yaml $(CURDIR)/.comfy-host/packs.yaml

## bench: RLG time and memory against the models alone, a scale sweep's cost, RLG under step caches (prints tables, writes benchmarks/results/)
bench: setup
	$(PY) -m benchmarks.bench_rlg
	$(PY) -m benchmarks.bench_sweep
	$(PY) -m benchmarks.bench_caches

## bench-caches: RLG under each step cache against exact RLG and the base with the same cache (time, error, demo shares)
bench-caches: setup
	$(PY) -m benchmarks.bench_caches

## gpu-prepare: gather what a GPU machine without the registry lacks into .gpu-carry/ (ComfyUI 0.33.0, wheels; ~42 MiB)
gpu-prepare:
	bash scripts/gpu_prepare.sh

## gpu-check: the GPU check on this machine's NVIDIA GPU with python3's torch, from .gpu-carry/ (out/gpu/)
gpu-check:
	bash scripts/gpu_check.sh .gpu-carry

## gpu-dry-run: the same command on the CPU, tiny size and a few test files (out/gpu-dry/; part of make test)
gpu-dry-run: setup
	bash scripts/setup_host.sh 0.33.0
	bash scripts/gpu_dry_run.sh
