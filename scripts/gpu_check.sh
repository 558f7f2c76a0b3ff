#!/usr/bin/env bash
# The GPU check, in one command: the in-process test suite and the benchmarks on CUDA, on a machine that has torch
# and nothing of ComfyUI, and may reach no package registry (a lent GPU machine: only the checkout travels).
#
#   here, once (needs the registry):  bash scripts/gpu_prepare.sh          -> .gpu-carry/ (about 42 MiB, git-ignored)
#   on the GPU machine:               bash scripts/gpu_check.sh .gpu-carry  -> $OUT/ (default out/gpu/)
#
# What it does, each step in its share of a time budget (RLG_GPU_CHECK_BUDGET seconds, 420 by default; see share()):
#   1. setup.log    the machine; installs the carried wheels (sha256 checked, no registry, no dependencies) into a
#                   folder it puts first on PYTHONPATH; unpacks the carried ComfyUI 0.33.0 tree; imports each
#                   carried package, and says which the machine had already
#   2. tests.log    the in-process suite on that tree, on CUDA (RLG_TEST_DEVICE=cuda, TF32 off, deterministic
#                   cuBLAS); a test still running at the step's deadline finishes, the rest are counted as not run
#   3. bench.log    benchmarks/bench_rlg.py at SD3.5-Medium's true shape (2.5 B parameters, fp16, random
#      bench.csv    weights): exact RLG against its floor for a full RL model and a LoRA (default and batched
#                   paths), two and three LoRA RL models, the 50% window, and rl_every 2 and 3 where the benchmark
#                   has them (--rl-every in its --help)
#      sweep.csv    benchmarks/bench_sweep.py: a sweep of 6 scales against 6 runs and one run at batch 6
#      memory.csv   peak GPU memory of base, RLG and RLG-with-a-LoRA sampling, each in a fresh process
#   4. summary.txt  each step's result and time, and the headline ratios
#
# Settings (environment): RLG_GPU_CHECK_DEVICE cuda (default) or cpu; RLG_GPU_CHECK_PYTHON, the Python with torch
# (default python3); RLG_GPU_CHECK_SIZE, the benchmark size (sd35m on cuda, tiny on cpu); RLG_GPU_CHECK_REPS
# (2 on cuda, 1 on cpu); RLG_GPU_CHECK_TESTS, the test files (none: only the benchmarks); RLG_GPU_CHECK_MEMORY, the
# memory cases;
# RLG_GPU_CHECK_BUDGET; RLG_GPU_CHECK_WORK, the folder for the install (default a fresh temporary one, removed at the
# end); RLG_GPU_CHECK_EXTRA_PATH, folders after the carried one on PYTHONPATH, for a Python that lacks what the GPU
# image has (unset there). RLG_GPU_CHECK_DEVICE=cpu with a small size is the dry run that CI runs
# (scripts/gpu_dry_run.sh).
#
# The budget keeps a first call on a lent machine (its start takes a minute or two more) near 9 of a session's 15
# device minutes, so a second, shorter try still fits. Memory gets what is left: cases the budget leaves out are
# reported, not failed. The exit status is 0 only if every other step passed; every step runs even if an earlier one
# failed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

CARRY="${1:-}"
[[ -n "$CARRY" ]] || { echo "usage: bash scripts/gpu_check.sh CARRY_DIR   (made by scripts/gpu_prepare.sh)" >&2; exit 2; }
CARRY="$(cd "$CARRY" 2>/dev/null && pwd)" || { echo "gpu_check: no folder $1 (run scripts/gpu_prepare.sh)" >&2; exit 2; }
[[ -f "$CARRY/MANIFEST" ]] || { echo "gpu_check: $CARRY has no MANIFEST (run scripts/gpu_prepare.sh)" >&2; exit 2; }

DEVICE="${RLG_GPU_CHECK_DEVICE:-cuda}"
case "$DEVICE" in cuda|cpu) ;; *) echo "gpu_check: RLG_GPU_CHECK_DEVICE is cuda or cpu, not $DEVICE" >&2; exit 2 ;; esac
PY="${RLG_GPU_CHECK_PYTHON:-python3}"
command -v "$PY" >/dev/null || { echo "gpu_check: no Python '$PY' (RLG_GPU_CHECK_PYTHON)" >&2; exit 2; }
if [[ "$DEVICE" == cuda ]]; then SIZE_DEFAULT=sd35m REPS_DEFAULT=2; else SIZE_DEFAULT=tiny REPS_DEFAULT=1; fi
SIZE="${RLG_GPU_CHECK_SIZE:-$SIZE_DEFAULT}"
REPS="${RLG_GPU_CHECK_REPS:-$REPS_DEFAULT}"
BUDGET="${RLG_GPU_CHECK_BUDGET:-420}"
TESTS_DEFAULT="tests/test_rlg_math.py tests/test_sampling.py tests/test_rl_pass_proof.py tests/test_quantized.py
  tests/test_sweep.py tests/test_rl_every.py tests/test_families.py tests/test_multi.py tests/test_step_caches.py"
read -r -a TESTS <<<"$(echo ${RLG_GPU_CHECK_TESTS:-$TESTS_DEFAULT})"
IFS=, read -r -a MEMORY_CASES <<<"${RLG_GPU_CHECK_MEMORY:-base,rlg,rlg_lora,rlg_lora_batched}"

OUT="${OUT:-$ROOT/out/gpu}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
rm -f "$OUT"/{summary.txt,setup.log,tests.log,bench.log,bench.csv,sweep.csv,memory.csv}

if [[ -n "${RLG_GPU_CHECK_WORK:-}" ]]; then
  WORK="$RLG_GPU_CHECK_WORK"; mkdir -p "$WORK"
else
  WORK="$(mktemp -d "${TMPDIR:-/tmp}/rlg-gpu-check.XXXXXX")"
  trap 'rm -rf "$WORK"' EXIT
fi
SITE="$WORK/site"
TREE="$WORK/ComfyUI"

START=$SECONDS
DEADLINE=$((START + BUDGET))
STATUS=0
SUMMARY=()
say() { printf '[gpu-check] %s\n' "$*"; }
left() { echo $((DEADLINE - SECONDS)); }
# The time left is shared by weight among the steps still to come: tests 40, bench 30, sweep 22, memory 8. A step that
# ends early, or is not asked for, leaves its time to the later ones.
share() {  # share <this step's weight> <the later steps' weights>: the seconds this step may take
  echo $(((DEADLINE - SECONDS) * $1 / ($1 + $2)))
}
record() {  # record <step> <rc> <seconds> [note]
  local verdict=passed
  [[ "$2" == 0 ]] || { verdict="FAILED (exit $2)"; STATUS=1; }
  [[ "$2" == 124 || "$2" == 137 ]] && verdict="FAILED (stopped at its time share)"
  [[ "$2" == skip ]] && { verdict="skipped"; STATUS=1; }
  SUMMARY+=("$(printf '%-10s %-36s %4ss  %s' "$1" "$verdict" "$3" "${4:-}")")
  LAST_SECONDS="$3" LAST_RC="$2"
}
# run_step <step> <log> <seconds> <command...>: the command under a time limit, its output appended to the log
run_step() {
  local step="$1" log="$2" limit="$3"; shift 3
  if ((limit < 15)); then
    say "$step: skipped, no time left in the budget" | tee -a "$log"
    record "$step" skip 0 "no time left"; return 0
  fi
  say "$step: up to ${limit}s: $*" | tee -a "$log"
  local t0=$SECONDS rc=0
  timeout --kill-after=15 "$limit" "$@" >>"$log" 2>&1 || rc=$?
  record "$step" "$rc" $((SECONDS - t0))
  say "$step: exit $rc after $((SECONDS - t0))s" | tee -a "$log"
  return 0
}

export PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 PIP_NO_INDEX=1
# The image's own pytest plugins stay out: the run is the same on any machine.
export PYTEST_DISABLE_PLUGIN_AUTOLOAD=1

# 1. Setup: the machine, the wheels, the tree. (Called as `setup || rc=$?`, where bash ignores set -e: each step that
#    can fail returns by itself.)
setup() {
  echo "== machine"
  date -u +%Y-%m-%dT%H:%M:%SZ
  uname -srm
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  else
    echo "no nvidia-smi"
  fi
  echo "== carried ($CARRY)"
  cat "$CARRY/MANIFEST"
  local kind file module sum wheels=() modules=()
  while read -r kind file module sum; do
    case "$kind" in
      wheel)
        [[ "$(sha256sum "$CARRY/wheels/$file" | cut -d' ' -f1)" == "$sum" ]] || { echo "sha256 mismatch: $file"; return 1; }
        wheels+=("$CARRY/wheels/$file"); modules+=("$module") ;;
      comfyui)
        echo "== ComfyUI $file ($((SECONDS - START))s)"
        [[ "$(sha256sum "$CARRY/$module" | cut -d' ' -f1)" == "$sum" ]] || { echo "sha256 mismatch: $module"; return 1; }
        rm -rf "$TREE" "$WORK/tree.tmp"; mkdir -p "$WORK/tree.tmp"
        tar xzf "$CARRY/$module" -C "$WORK/tree.tmp" || return 1
        rm -f "$WORK/tree.tmp/extra_model_paths.yaml"
        mv "$WORK/tree.tmp" "$TREE" || return 1
        "$PY" -c "import runpy, sys; v = runpy.run_path(sys.argv[1])['__version__']; print('unpacked ComfyUI', v)
if v != sys.argv[2]: sys.exit('expected ' + sys.argv[2])" "$TREE/comfyui_version.py" "$file" || return 1 ;;
    esac
  done < <(grep -v '^#' "$CARRY/MANIFEST")
  [[ -f "$TREE/main.py" ]] || { echo "no ComfyUI tree in $CARRY/MANIFEST"; return 1; }
  echo "== installing ($((SECONDS - START))s) ${#wheels[@]} wheels into $SITE (no index, no dependencies)"
  rm -rf "$SITE"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" "${wheels[@]}" || return 1
  echo "== Python, torch and the carried packages ($((SECONDS - START))s)"
  PYTHONPATH="${RLG_GPU_CHECK_EXTRA_PATH:-}" "$PY" - "$DEVICE" "$SITE" "${modules[@]}" <<'PYEOF'
import importlib, importlib.util, os, platform, sys
device, site, modules = sys.argv[1], sys.argv[2], sys.argv[3:]
had = [m for m in modules if importlib.util.find_spec(m) is not None]  # before the carried folder is on the path
sys.path.insert(0, site)
import torch
print("python", platform.python_version(), sys.executable)
print("torch", torch.__version__, "cuda", torch.version.cuda, "cuda available", torch.cuda.is_available(),
      "cpus", os.cpu_count())
if torch.cuda.is_available():
    print("device", torch.cuda.get_device_name(0), f"{torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB")
for name in modules:
    module = importlib.import_module(name)
    where = getattr(module, "__file__", None) or next(iter(getattr(module, "__path__", [])), "?")
    print(f"  {name} {getattr(module, '__version__', '')} from {where}")
if had:
    print("note: this machine already had", ", ".join(had), "- the carried copies go first; carry them no more if the"
          " versions agree")
if device == "cuda" and not torch.cuda.is_available():
    sys.exit("RLG_GPU_CHECK_DEVICE=cuda, but this torch sees no CUDA device")
PYEOF
  [[ $? == 0 ]] || return 1
  echo "== setup done ($((SECONDS - START))s)"
}
say "setup: $(date -u +%H:%M:%S), budget ${BUDGET}s, device $DEVICE, python $PY, work folder $WORK"
t0=$SECONDS; rc=0
setup >>"$OUT/setup.log" 2>&1 || rc=$?
record setup "$rc" $((SECONDS - t0))
if [[ "$rc" != 0 ]]; then
  tail -n 20 "$OUT/setup.log"
  printf '%s\n' "${SUMMARY[@]}" | tee "$OUT/summary.txt"
  exit 1
fi
tail -n 12 "$OUT/setup.log"

export RLG_COMFY_DIR="$TREE"
export PYTHONPATH="$SITE${RLG_GPU_CHECK_EXTRA_PATH:+:$RLG_GPU_CHECK_EXTRA_PATH}:$ROOT"

# 2. The in-process suite (files that are not there yet are left out with a note; RLG_GPU_CHECK_TESTS=none: no tests).
present=()
for f in "${TESTS[@]}"; do
  [[ "$f" == none ]] && continue
  if [[ -f "$f" ]]; then present+=("$f"); else say "tests: no $f here, left out" | tee -a "$OUT/tests.log"; fi
done
if ((${#present[@]})); then
  limit=$(share 40 60)
  run_step tests "$OUT/tests.log" "$limit" env RLG_GPU_CHECK_DEADLINE=$(($(date +%s) + limit - 25)) \
    RLG_TEST_DEVICE="$DEVICE" NVIDIA_TF32_OVERRIDE=0 CUBLAS_WORKSPACE_CONFIG=:4096:8 \
    PYTHONPATH="$PYTHONPATH:$ROOT/scripts" \
    "$PY" -m pytest -m "not server" -p gpu_check_deadline -q -rfEs --durations=10 "${present[@]}"
else
  say "tests: none asked for (RLG_GPU_CHECK_TESTS)" | tee -a "$OUT/tests.log"
  SUMMARY+=("$(printf '%-10s %-36s %4ss' tests "not asked for" 0)")
fi
if stopped=$(grep -E "^stopped at the deadline" "$OUT/tests.log"); then  # pytest says "interrupted" (exit 2)
  SUMMARY[-1]="$(printf '%-10s %-36s %4ss  %s' tests "FAILED (stopped at its time share)" "$LAST_SECONDS" \
    "${stopped#stopped at the deadline: }")"
fi
pytest_result() { grep -E " in [0-9.]+s( \([0-9:]+\))?( =+)?$" "$OUT/tests.log" | tail -n 1 | tr -d '=' | xargs; }
((${#present[@]} == 0)) || say "tests: $(pytest_result) ${stopped:-}"

# 3. The benchmarks: RLG against its floor, the sweep, peak memory.
export RLG_BENCH_DEVICE="$DEVICE"
bench_args=(--sizes "$SIZE" --reps "$REPS" --no-memory --csv "$OUT/bench.csv")  # 7 words; --rl-every after them
STATUS_BEFORE_BENCH=$STATUS
bench_help="$("$PY" -m benchmarks.bench_rlg --help 2>&1 || true)"  # (grep -q in a pipe would cut python off)
if [[ "$bench_help" == *--rl-every* ]]; then
  bench_args+=(--rl-every 2,3)
else
  say "bench: benchmarks/bench_rlg.py --help names no --rl-every; rl_every 2 and 3 run only if they are among its" \
    "default cases" | tee -a "$OUT/bench.log"
fi
run_step bench "$OUT/bench.log" "$(share 30 30)" "$PY" -m benchmarks.bench_rlg "${bench_args[@]}"
if [[ "$LAST_RC" == 2 && "${bench_args[*]}" == *--rl-every* ]] && grep -q "argument --rl-every" "$OUT/bench.log"; then
  # Its parser refused "2,3" (exit 2, before any work): the contract with the benchmark is a comma-separated list.
  say "bench: --rl-every 2,3 refused by benchmarks/bench_rlg.py; again without it" | tee -a "$OUT/bench.log"
  unset 'SUMMARY[-1]'
  STATUS=$STATUS_BEFORE_BENCH
  run_step bench "$OUT/bench.log" "$(share 30 30)" "$PY" -m benchmarks.bench_rlg "${bench_args[@]:0:7}"
fi
run_step sweep "$OUT/bench.log" "$(share 22 8)" \
  "$PY" -m benchmarks.bench_sweep --sizes "$SIZE" --reps "$REPS" --csv "$OUT/sweep.csv"

# Peak memory, one fresh process per case (the benchmark's own --memory-child), while the budget lasts.
memory() {
  echo "size,case,peak_mb,loaded_mb" >"$OUT/memory.csv"
  local case line rc
  for case in "${MEMORY_CASES[@]}"; do
    if (($(left) < 40)); then say "memory: no time left for $case and after"; return 0; fi
    say "memory: $case"
    rc=0
    line=$(timeout --kill-after=10 $(($(left) - 10)) "$PY" -m benchmarks.bench_rlg --memory-child "$SIZE" "$case" \
      | tail -n 1) || rc=$?
    [[ "$rc" == 0 ]] || { say "memory: $case exit $rc"; return "$rc"; }
    "$PY" -c "import json, sys; d = json.loads(sys.argv[1]); print(sys.argv[2], sys.argv[3], f\"{d['peak_mb']:.1f}\", \
f\"{d['loaded_mb']:.1f}\", sep=',')" "$line" "$SIZE" "$case" >>"$OUT/memory.csv" || return 1
  done
}
t0=$SECONDS; rc=0
memory >>"$OUT/bench.log" 2>&1 || rc=$?
measured=$(($(wc -l <"$OUT/memory.csv") - 1))
record memory "$rc" $((SECONDS - t0)) "$measured of ${#MEMORY_CASES[@]} cases$( ((measured < ${#MEMORY_CASES[@]})) &&
  echo "; the budget ran out before the rest")"

# 4. The summary: each step, then the headline figures.
{
  echo "GPU check $(date -u +%Y-%m-%dT%H:%M:%SZ): device $DEVICE, size $SIZE, reps $REPS, $((SECONDS - START))s of ${BUDGET}s"
  grep -E "^(device|torch|python) " "$OUT/setup.log" || true
  printf '%s\n' "${SUMMARY[@]}"
  echo "tests: $(pytest_result)"
  grep -E "^stopped at the deadline" "$OUT/tests.log" || true
  if [[ -f "$OUT/bench.csv" ]]; then
    echo "bench ($SIZE; ratio = RLG time / its floor; medians of $REPS):"
    awk -F, 'NR > 1 && $2 ~ /:/ { printf "  %-46s %s\n", $2, $3 }' "$OUT/bench.csv"
  fi
  if [[ -f "$OUT/sweep.csv" ]]; then
    echo "sweep:"
    awk -F, 'NR > 1 && $4 == "ratio" { printf "  %-46s %s\n", $2, $3 }' "$OUT/sweep.csv"
  fi
  if [[ -f "$OUT/memory.csv" ]]; then
    echo "peak memory (MB; $([[ $DEVICE == cuda ]] && echo "allocated on the GPU" || echo "resident")):"
    awk -F, 'NR > 1 { printf "  %-46s %s\n", $2, $3 }' "$OUT/memory.csv"
  fi
} >"$OUT/summary.txt"
echo
cat "$OUT/summary.txt"
say "logs and CSVs: $OUT ($(ls "$OUT" | wc -l) files)"
exit "$STATUS"
