"""What the tests, the demo, the benchmarks and the scripts share: the project's harness, never shipped.

  host.py           which ComfyUI tree a process runs on (RLG_COMFY_DIR), and the check that none is mixed
  pack.py           loads this pack the way ComfyUI does (as the package comfyui_rlg); finds its sources by walking
                    it; lists what `comfy node pack` ships
  server.py         starts ComfyUI's main.py and drives it over HTTP (the one HTTP driver)
  frontend.py       the real front-end in headless Chromium
  weights.py        seeded weights (the one maker) and the difference measures
  tiny_sd3.py       the tiny SD3/MMDiT that ComfyUI detects (the demo's and the tests' model)
  tiny_models.py    tiny SD3 / SD1.5 models, their conds and LoRAs
  tiny_families.py  tiny FLUX, Qwen-Image, Wan, SDXL... from ComfyUI's own classes
  sampling.py       in-process sampling through the real ComfyUI: KSampler, probes, forward counters
  probe.py          what a running ComfyUI holds (the reliability probe node's measurements), its cache, RLG's objects
  reference.py      a fresh process that runs API graphs through ComfyUI's own executor, sharing nothing with a server
  reliability.py    the reliability suite's model files, graphs, servers per cache, reference wrapper and figures
  audit.py          what code does at run time, through Python's audit hooks (the security tests)
  workflow_host.py  the server of the workflow and front-end tests, with stand-in model files

No module here changes anything when it is imported. Modules that import ComfyUI need harness.host.use_comfy()
to have run first: tests/conftest.py, demo/run_demo.py and the benchmarks call it before anything else.
"""
