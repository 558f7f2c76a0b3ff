#!/usr/bin/env bash
# On a machine with an NVIDIA GPU (never in CI): the in-process test suite and the benchmark on CUDA,
# including the SD3.5-Medium-shaped model (2.5 B parameters, random weights).
#
#   bash scripts/gpu_check.sh            (writes its log and the benchmark CSV under out/gpu/)
#
# The host is set up as usual (scripts/setup_host.sh needs the package registry); on a GPU machine
# without network, bring the checkout's .comfy-host along. The tests keep their CPU tolerances: TF32
# is switched off, and the identities (w=0 is base, w=1 is RL) are compared as on the CPU.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT="${OUT:-$ROOT/out/gpu}"
mkdir -p "$OUT"
PY="$ROOT/.comfy-host/venv/bin/python"
[[ -x "$PY" ]] || bash scripts/setup_host.sh || exit 1
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available())"
} 2>&1 | tee "$OUT/machine.txt"
status=0
RLG_TEST_DEVICE=cuda "$PY" -m pytest -m "not server" -q 2> -q -p no:randomly 2>&11 | tee "$OUT/tests.log" || status=1
RLG_BENCH_DEVICE=cuda "$PY" benchmarks/bench_rlg.py --sizes tiny,small,sd35m 2>&1 | tee "$OUT/bench.log" || status=1
cp benchmarks/results/bench-*.csv "$OUT/" 2>/dev/null || true
exit $status
