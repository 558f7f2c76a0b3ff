# Every target sets up the ComfyUI host in .comfy-host/ first (idempotent, cached).
PY := .comfy-host/venv/bin/python

.PHONY: setup test test-quick lint demo

setup:
	bash scripts/setup_host.sh

## test: the whole suite, server end-to-end tests included (what CI runs)
test: setup
	$(PY) -m pytest

## test-quick: everything but the tests that start the ComfyUI server
test-quick: setup
	$(PY) -m pytest -m "not server"

## lint: ruff over the pack, tests and scripts
lint: setup
	$(PY) -m ruff check .

## demo: turn the RLG dial through ComfyUI's HTTP API and print what it does
demo: setup
	$(PY) scripts/demo.py
