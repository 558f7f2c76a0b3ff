#!/usr/bin/env bash
# The test matrix (`make test`, and CI through .ci/run): the whole suite on each ComfyUI host, then the
# browser tests once more against the newest front-end package.
#
#   ComfyUI 0.3.75   always (from the package registry, see scripts/setup_host.sh)
#   ComfyUI 0.8.0    when ../shared/hosts/comfyui-0.8.0.tar.gz is there (CI has it; a plain clone does not)
#   front-end 1.58.1 the browser tests (-m frontend), on 0.8.0 where it is present, else on 0.3.75
#
# Extra arguments go to every pytest run (for example -x, or -k blend). Every leg runs even if an
# earlier one failed; the exit status is non-zero if any failed.
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
  RLG_COMFY_DIR="$dir" PYTHONPATH="$overlay${PYTHONPATH:+:$PYTHONPATH}" "$PY" -m pytest "$@"
  local rc=$?
  summary+=("$(printf '%-34s %s in %ss' "$name" "$([[ $rc == 0 ]] && echo passed || echo "FAILED (exit $rc)")" \
    $((SECONDS - start)))")
  [[ $rc == 0 ]] || failed=1
}

leg "ComfyUI 0.3.75" "$HOST/ComfyUI" "" "$@"

frontend_host="$HOST/ComfyUI" frontend_overlay=""
if [[ -f "$SHARED/hosts/comfyui-0.8.0.tar.gz" ]]; then
  if bash scripts/setup_host.sh 0.8.0; then
    leg "ComfyUI 0.8.0" "$HOST/hosts/0.8.0/ComfyUI" "$HOST/hosts/0.8.0/site" "$@"
    frontend_host="$HOST/hosts/0.8.0/ComfyUI" frontend_overlay="$HOST/hosts/0.8.0/site"
  else
    summary+=("ComfyUI 0.8.0                      FAILED (host setup)"); failed=1
  fi
else
  summary+=("ComfyUI 0.8.0                      skipped: no $SHARED/hosts/comfyui-0.8.0.tar.gz (CI's second host)")
fi

if bash scripts/setup_host.sh frontend; then
  RLG_EXPECT_FRONTEND=1.58.1 leg "front-end 1.58.1 (browser tests)" "$frontend_host" "$HOST/frontends/1.58.1${frontend_overlay:+:$frontend_overlay}" \
    -m frontend "$@"
else
  summary+=("front-end 1.58.1                   FAILED (install)"); failed=1
fi

printf '\n==== test matrix ====\n'
printf '%s\n' "${summary[@]}"
exit $failed
