#!/usr/bin/env bash
# The test matrix (`make test`, and CI through .ci/run): the whole suite once per ComfyUI host, then the
# browser tests once more against the newest front-end package.
#
#   ComfyUI 0.3.75   always (from the package registry, see scripts/setup_host.sh), front-end 1.32.9
#   ComfyUI 0.8.0    when ../shared/hosts/comfyui-0.8.0.tar.gz is there (CI has it; a plain clone does not), 1.35.9
#   ComfyUI 0.33.0   when ../shared/hosts/comfyui-0.33.0.tar.gz is there, front-end 1.49.6
#   front-end 1.58.1 the browser tests (-m frontend), served by the newest host present
#
# Each leg is one pytest process whose ComfyUI tree is RLG_COMFY_DIR (harness/host.py); every server and
# reference process it starts runs that tree too, and tests/test_host_isolation.py fails the leg otherwise.
# Extra arguments go to every pytest run (for example -x, or -k blend). Every leg runs even if an earlier one
# failed; the exit status is non-zero if any failed.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
HOST="${RLG_HOST_DIR:-$ROOT/.comfy-host}"
SHARED="${RLG_SHARED_DIR:-$ROOT/../shared}"
PY="$HOST/venv/bin/python"

bash scripts/setup_host.sh || exit 1

summary=()
failed=0
leg() {  # leg <name> <ComfyUI dir> <PYTHONPATH overlay> <pytest args...>
  local name="$1" dir="$2" overlay="$3"; shift 3
  printf '\n==== %s ====\n' "$name"
  local start=$SECONDS
  RLG_COMFY_DIR="$dir" PYTHONPATH="$overlay" "$PY" -m pytest "$@"
  local rc=$?
  summary+=("$(printf '%-36s %s in %ss' "$name" "$([[ $rc == 0 ]] && echo passed || echo "FAILED (exit $rc)")" \
    $((SECONDS - start)))")
  [[ $rc == 0 ]] || failed=1
}

leg "ComfyUI 0.3.75" "$HOST/ComfyUI" "" "$@"

newest_host="$HOST/ComfyUI" newest_overlay=""
for version in 0.8.0 0.33.0; do
  if [[ ! -f "$SHARED/hosts/comfyui-$version.tar.gz" ]]; then
    summary+=("$(printf '%-36s skipped: no %s (a host of CI'"'"'s matrix)' "ComfyUI $version" \
      "$SHARED/hosts/comfyui-$version.tar.gz")")
    continue
  fi
  if bash scripts/setup_host.sh "$version"; then
    leg "ComfyUI $version" "$HOST/hosts/$version/ComfyUI" "$HOST/hosts/$version/site" "$@"
    newest_host="$HOST/hosts/$version/ComfyUI" newest_overlay="$HOST/hosts/$version/site"
  else
    summary+=("$(printf '%-36s FAILED (host setup)' "ComfyUI $version")"); failed=1
  fi
done

if bash scripts/setup_host.sh frontend; then
  RLG_EXPECT_FRONTEND=1.58.1 leg "front-end 1.58.1 (browser tests)" "$newest_host" \
    "$HOST/frontends/1.58.1${newest_overlay:+:$newest_overlay}" -m frontend "$@"
else
  summary+=("front-end 1.58.1                     FAILED (install)"); failed=1
fi

# The GPU check's dry run: the one command a lent GPU machine runs (scripts/gpu_check.sh over the prepared
# .gpu-carry/), on the CPU with the tiny size, so that it cannot rot between GPU loans (docs/performance.md, "The GPU check").
if [[ -f "$SHARED/hosts/comfyui-0.33.0.tar.gz" ]]; then
  printf '\n==== GPU check, dry run on the CPU ====\n'
  start=$SECONDS
  if RLG_SHARED_DIR="$SHARED" bash scripts/gpu_dry_run.sh; then rc=0; else rc=$?; fi
  summary+=("$(printf '%-36s %s in %ss' "GPU check dry run (CPU)" "$([[ $rc == 0 ]] && echo passed || echo "FAILED (exit $rc)")" \
    $((SECONDS - start)))")
  [[ $rc == 0 ]] || failed=1
else
  summary+=("$(printf '%-36s skipped: no %s' "GPU check dry run (CPU)" "$SHARED/hosts/comfyui-0.33.0.tar.gz")")
fi

printf '\n==== test matrix ====\n'
printf '%s\n' "${summary[@]}"
exit $failed
