#!/usr/bin/env bash
# Gathers, on a machine that reaches the package registry, what the GPU check needs and a GPU machine lacks, into one
# git-ignored folder that travels with the checkout (default .gpu-carry/):
#
#   bash scripts/gpu_prepare.sh [CARRY_DIR]            (make gpu-prepare)
#
#   CARRY_DIR/hosts/comfyui-0.33.0.tar.gz   the ComfyUI tree the check runs on, from ../shared/hosts (sha256 checked)
#   CARRY_DIR/wheels/*.whl                  the packages of scripts/gpu_wheels.txt, for CPython 3.12 on x86-64 (abi3
#                                           or pure Python, so the same files also install into the CPU dry run's 3.11)
#   CARRY_DIR/MANIFEST                      what is there: files, sha256, sizes, import names, total
#
# It carries nothing the GPU machine's image already has (torch 2.11 with CUDA, transformers, numpy, pytest...: see
# scripts/gpu_wheels.txt), and prints the carried size and the size of what travels with the working tree (at most
# 64 MiB on a lent machine). Re-running is cheap: files already there with the right sha256 are kept.
#
# How the wheel list was found: a Python 3.12 environment with torch 2.11.0 (CPU use), transformers 5.17 and only the
# other packages of the GPU image ran the check's tests and benchmarks on the ComfyUI 0.33.0 tree; each
# ModuleNotFoundError added one package. ComfyUI's server (main.py) is not part of the check, so its front-end
# packages, SQLAlchemy, alembic, blake3 and simpleeval stay behind.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CARRY="${1:-$ROOT/.gpu-carry}"
SHARED="${RLG_SHARED_DIR:-$ROOT/../shared}"
PY="${PYTHON:-$ROOT/.comfy-host/venv/bin/python}"
[[ -x "$PY" ]] || PY=python3
LIST="$ROOT/scripts/gpu_wheels.txt"
COMFY_VERSION=0.33.0
COMFY_SHA=ac069637aedd01dc2e40fcab015e24890808ee8066790c22354a3d9ad8acfaf8
# The GPU machine's Python (device docs): CPython 3.12, x86-64, glibc >= 2.28.
TARGET=(--python-version 3.12 --implementation cp --abi cp312 --abi abi3 --abi none
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_12_x86_64
        --platform manylinux2010_x86_64 --platform manylinux1_x86_64)
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1

log() { printf '[gpu-prepare] %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }
sha() { sha256sum "$1" | cut -d' ' -f1; }

mkdir -p "$CARRY/hosts" "$CARRY/wheels"

# 1. The ComfyUI tree, unmodified.
tarball="$SHARED/hosts/comfyui-$COMFY_VERSION.tar.gz"
dest="$CARRY/hosts/comfyui-$COMFY_VERSION.tar.gz"
if [[ -f "$dest" && "$(sha "$dest")" == "$COMFY_SHA" ]]; then
  log "ComfyUI $COMFY_VERSION tarball present"
else
  [[ -f "$tarball" ]] || die "no $tarball (../shared/hosts beside the checkout; RLG_SHARED_DIR moves it)"
  [[ "$(sha "$tarball")" == "$COMFY_SHA" ]] || die "$tarball: sha256 mismatch"
  cp "$tarball" "$dest"
  log "copied $tarball"
fi

# 2. The wheels, exactly the pinned files.

while read -r spec module tag sum; do
  [[ -z "$spec" || "$spec" == \#* ]] && continue
  name="${spec%%==*}"; version="${spec#*==}"
  stem="$(printf '%s' "$name" | tr 'A-Z-' 'a-z_')-$version-"
  found=""
  for f in "$CARRY/wheels/$stem"*.whl; do
    [[ -f "$f" && "$(sha "$f")" == "$sum" ]] && found="$f"
  done
  if [[ -z "$found" ]]; then
    rm -f "$CARRY/wheels/$stem"*.whl
    platform=("${TARGET[@]}")
    [[ "$tag" == any ]] && platform=(--python-version 3.12 --implementation py --abi none --platform any)
    log "downloading $spec ($tag)"
    "$PY" -m pip download -q --no-deps --only-binary=:all: "${platform[@]}" -d "$CARRY/wheels" "$spec" \
      2> >(grep -v "is ignored: it is neither a file nor a directory" >&2) || die "pip download $spec failed"
    for f in "$CARRY/wheels/$stem"*.whl; do [[ -f "$f" ]] && found="$f"; done
    [[ -n "$found" ]] || die "$spec: no wheel downloaded"
    [[ "$(sha "$found")" == "$sum" ]] || die "$(basename "$found"): sha256 $(sha "$found"), scripts/gpu_wheels.txt says $sum"
  fi
  printf '%s %s %s\n' "$(basename "$found")" "$module" "$sum"
done <"$LIST" >"$CARRY/MANIFEST.wheels"
mapfile -t wanted < <(cut -d' ' -f1 "$CARRY/MANIFEST.wheels")
for f in "$CARRY/wheels"/*; do  # nothing else travels
  keep=0
  for w in "${wanted[@]}"; do [[ "$(basename "$f")" == "$w" ]] && keep=1; done
  ((keep)) || { log "removing $(basename "$f") (not in scripts/gpu_wheels.txt)"; rm -rf "$f"; }
done

# 3. The set installs as a whole for CPython 3.12 on x86-64 (tags only: nothing is imported here).
check="$(mktemp -d)"
trap 'rm -rf "$check"' EXIT
"$PY" -m pip install -q --no-index --no-deps --no-compile --only-binary=:all: "${TARGET[@]}" --target "$check" \
  "$CARRY/wheels"/*.whl || die "the wheels do not install for CPython 3.12 x86-64"

# 4. The manifest and the sizes.
{
  echo "# Carried for scripts/gpu_check.sh (made by scripts/gpu_prepare.sh on $(date -u +%Y-%m-%dT%H:%MZ))"
  echo "comfyui $COMFY_VERSION hosts/$(basename "$dest") $COMFY_SHA"
  sed 's/^/wheel /' "$CARRY/MANIFEST.wheels"
} >"$CARRY/MANIFEST"
rm -f "$CARRY/MANIFEST.wheels"
carried=$(du -sb "$CARRY" | cut -f1)
tree=$(cd "$ROOT" && git ls-files -z --cached --others --exclude-standard | du -cb --files0-from=- 2>/dev/null |
  tail -n 1 | cut -f1) || true  # a deleted tracked file, or no git: the sum of what is there
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
echo "carried $carried bytes" >>"$CARRY/MANIFEST"
log "$CARRY: $(mib "$carried") ($(ls "$CARRY/wheels" | wc -l) wheels, ComfyUI $COMFY_VERSION)"
log "working tree that travels (tracked and untracked-not-ignored files): $(mib "${tree:-0}"); with the carry: $(mib $((carried + ${tree:-0}))) of 64 MiB"
if ((carried + ${tree:-0} > 48 * 1048576)); then
  die "over 48 MiB: too close to the 64 MiB a lent machine takes"
fi
