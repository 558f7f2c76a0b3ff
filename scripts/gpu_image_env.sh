#!/usr/bin/env bash
# A stand-in for the GPU machine's Python, on this CPU machine, to re-check scripts/gpu_wheels.txt when ComfyUI, the
# pack or the GPU image changes: CPython 3.12 with torch 2.11.0 (the CUDA build, run on the CPU), torchvision 0.26,
# torchaudio 2.11, transformers 5.17, numpy 2.5.2 and the other packages of the GPU image that ComfyUI uses, and
# nothing that the image lacks (device docs, KINDS.md). Not part of CI.
#
#   bash scripts/gpu_image_env.sh [DIR]            (default /tmp/rlg-gpu-image; downloads about 0.6 GB)
#   RLG_GPU_CHECK_PYTHON=DIR/venv/bin/python RLG_GPU_CHECK_DEVICE=cpu RLG_GPU_CHECK_SIZE=tiny RLG_GPU_CHECK_REPS=1 \
#     OMP_NUM_THREADS=1 bash scripts/gpu_check.sh .gpu-carry
#
# torch's CUDA build loads its CUDA 13 libraries even on the CPU. Rather than download them (3 GB), the venv links
# those of the host's venv (.comfy-host/venv, torch 2.15, also CUDA 13) and adds the one it lacks (curand).
# Measured with it (2026-11): the check's 7 test files passed (213 tests, in two runs) on ComfyUI 0.33.0 with the
# five carried wheels alone, and the whole check ran on the CPU with the tiny size.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${1:-/tmp/rlg-gpu-image}"
HOST_SITE="$ROOT/.comfy-host/venv/lib/python3.11/site-packages"
log() { printf '[gpu-image-env] %s\n' "$*" >&2; }

PY312=""
v312="$( (pyenv versions --bare 2>/dev/null || true) | grep -E '^3\.12(\.|$)' | tail -n 1 || true)"
if [[ -n "$v312" ]]; then
  PY312="$(pyenv prefix "$v312")/bin/python3.12"
elif python3.12 -c pass 2>/dev/null; then
  PY312="$(python3.12 -c 'import sys; print(sys.executable)')"
fi
[[ -x "$PY312" ]] || { log "no CPython 3.12 (python3.12 or pyenv)"; exit 1; }
[[ -d "$HOST_SITE/nvidia/cu13/lib" ]] || { log "no CUDA 13 libraries in $HOST_SITE (scripts/setup_host.sh)"; exit 1; }

mkdir -p "$DIR/dl"
[[ -x "$DIR/venv/bin/python" ]] || "$PY312" -m venv "$DIR/venv"
V="$DIR/venv/bin/python"
pip() { "$V" -m pip -q --disable-pip-version-check "$@" 2> >(grep -v "is ignored: it is neither" >&2); }
log "torch 2.11.0, torchvision 0.26.0, torchaudio 2.11.0 without their CUDA packages"
pip install --no-deps torch==2.11.0 torchvision==0.26.0 torchaudio==2.11.0
pip install filelock "typing-extensions>=4.10" "setuptools<82" "sympy>=1.13.3" networkx jinja2 fsspec
log "the image's versions of what ComfyUI and the tests use"
pip install numpy==2.5.2 safetensors==0.8.0 transformers==5.17.0 tokenizers==0.23.2 huggingface_hub==1.33.0 \
  sentencepiece==0.2.2 einops pillow scipy tqdm psutil pyyaml aiohttp yarl requests pytest regex packaging
# typer pulls pydantic in; the image's list has no pydantic, so it goes (ComfyUI's in-process use must not need it).
pip uninstall -y pydantic pydantic_core annotated-types typing-inspection || true

log "CUDA 13 libraries: linked from $HOST_SITE, plus curand"
SITE="$("$V" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
rm -rf "$SITE/nvidia"; mkdir -p "$SITE/nvidia/cu13/lib"
for d in "$HOST_SITE"/nvidia/*; do [[ "$(basename "$d")" == cu13 ]] || ln -s "$d" "$SITE/nvidia/"; done
for d in "$HOST_SITE"/nvidia/cu13/*; do [[ "$(basename "$d")" == lib ]] || ln -s "$d" "$SITE/nvidia/cu13/"; done
ln -s "$HOST_SITE"/nvidia/cu13/lib/* "$SITE/nvidia/cu13/lib/"
"$V" -m pip download -q --no-deps --only-binary=:all: -d "$DIR/dl" "nvidia-curand>=10,<11" 2>/dev/null
(cd "$DIR/dl" && unzip -q -o nvidia_curand-*.whl 'nvidia/cu13/lib/*' && cp nvidia/cu13/lib/* "$SITE/nvidia/cu13/lib/")

"$V" -c 'import torch, transformers, numpy; print("python 3.12 stand-in:", "torch", torch.__version__,
"transformers", transformers.__version__, "numpy", numpy.__version__)'
log "ready: RLG_GPU_CHECK_PYTHON=$V"
