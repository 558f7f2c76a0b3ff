#!/usr/bin/env bash
# The GPU check's dry run, on the CPU (make gpu-dry-run; scripts/run_tests.sh runs it, so CI does): the same command
# as on a GPU machine, scripts/gpu_check.sh over the same prepared folder, with the CPU as the device, the host's
# Python, the tiny benchmark size and a few test files. It proves that the folder is complete and installs, that the
# command runs from end to end, and that what it leaves under $OUT comes back from a lent machine (at most 8 plain
# files of 16 MiB, no deeper than 2 folders, plain names). The checks that need CUDA cannot run here.
#
#   bash scripts/gpu_dry_run.sh [CARRY_DIR]      (default .gpu-carry, prepared first by scripts/gpu_prepare.sh)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
CARRY="${1:-$ROOT/.gpu-carry}"
PY="${RLG_GPU_CHECK_PYTHON:-$ROOT/.comfy-host/venv/bin/python}"
OUT_DIR="${RLG_GPU_DRY_OUT:-$ROOT/out/gpu-dry}"
say() { printf '[gpu-dry-run] %s\n' "$*"; }

bash scripts/gpu_prepare.sh "$CARRY"

# The one package of the GPU image that this host's Python lacks and the check needs: torchaudio (ComfyUI 0.33.0's
# comfy.sd imports it). The host keeps one that works with its torch in the 0.33.0 overlay (scripts/setup_host.sh
# 0.33.0); only that package is lent to the dry run, so the carry must bring everything else itself.
overlay="${RLG_HOST_DIR:-$ROOT/.comfy-host}/hosts/0.33.0/site"
[[ -d "$overlay/torchaudio" ]] || { say "no torchaudio in $overlay: run scripts/setup_host.sh 0.33.0 first"; exit 1; }
standin="$(mktemp -d "${TMPDIR:-/tmp}/rlg-gpu-dry-image.XXXXXX")"
trap 'rm -rf "$standin"' EXIT
ln -s "$overlay/torchaudio" "$standin/torchaudio"
ln -s "$overlay"/torchaudio-*.dist-info "$standin/"

# One thread: the tiny models gain nothing from more, and on a busy 2-core machine torch's spinning worker threads
# made the dry run several times slower.
export OMP_NUM_THREADS=1

rm -rf "$OUT_DIR"
start=$SECONDS
rc=0
OUT="$OUT_DIR" RLG_GPU_CHECK_DEVICE=cpu RLG_GPU_CHECK_PYTHON="$PY" RLG_GPU_CHECK_SIZE=tiny RLG_GPU_CHECK_REPS=1 \
  RLG_GPU_CHECK_TESTS="${RLG_GPU_DRY_TESTS:-tests/test_rlg_math.py tests/test_quantized.py}" \
  RLG_GPU_CHECK_MEMORY=base,rlg_lora RLG_GPU_CHECK_BUDGET="${RLG_GPU_DRY_BUDGET:-1200}" RLG_GPU_CHECK_EXTRA_PATH="$standin" \
  bash scripts/gpu_check.sh "$CARRY" || rc=$?
say "scripts/gpu_check.sh exit $rc after $((SECONDS - start))s"

# What a lent machine would send back, and what it should say.
problems=()
mapfile -t files < <(cd "$OUT_DIR" && find . -mindepth 1 | sed 's|^\./||' | sort)
((${#files[@]} <= 8)) || problems+=("${#files[@]} entries under \$OUT, at most 8 come back")
for f in "${files[@]}"; do
  [[ -f "$OUT_DIR/$f" && ! -L "$OUT_DIR/$f" ]] || problems+=("$f: not a plain file")
  [[ "$f" =~ ^[A-Za-z0-9._-]+$ ]] || problems+=("$f: a folder or a name that would not come back")
  (($(stat -c %s "$OUT_DIR/$f") <= 16 * 1048576)) || problems+=("$f: over 16 MiB")
done
for f in summary.txt setup.log tests.log bench.log bench.csv sweep.csv memory.csv; do
  [[ -s "$OUT_DIR/$f" ]] || problems+=("no $f")
done
if [[ -s "$OUT_DIR/summary.txt" ]]; then
  for step in setup tests bench sweep memory; do
    grep -Eq "^$step +passed" "$OUT_DIR/summary.txt" || problems+=("summary: step $step did not pass")
  done
fi
[[ -s "$OUT_DIR/setup.log" ]] && while read -r _ _ module _; do
  # each carried package imported from the folder the check installed, not from this machine's own packages
  grep -Eq "^  $module .* from .*/rlg-gpu-check\.[^/]+/site/" "$OUT_DIR/setup.log" ||
    problems+=("setup.log: $module not imported from the installed carry")
done < <(grep '^wheel ' "$CARRY/MANIFEST")
[[ -s "$OUT_DIR/bench.csv" ]] && ! grep -q "^tiny,LoRA batched: " "$OUT_DIR/bench.csv" && problems+=("bench.csv: no ratios")
[[ "$rc" == 0 ]] || problems+=("scripts/gpu_check.sh exit $rc")

if ((${#problems[@]})); then
  say "FAILED:"
  printf '  %s\n' "${problems[@]}"
  exit 1
fi
say "passed: ${#files[@]} files under $OUT_DIR, $(du -sh "$OUT_DIR" | cut -f1) in all, $((SECONDS - start))s"
