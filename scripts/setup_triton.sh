#!/usr/bin/env bash
# The Triton server's own environment, .venv-triton: `cloudseg serve` runs its server module with
# this interpreter. nvidia-pytriton pins numpy<2, which clashes with .venv's numpy 2, hence a
# second venv (see ../shared/PLATFORM.md, "Triton Inference Server from PyPI"). Idempotent.
#
#   scripts/setup_triton.sh [--cuda|--cpu]   (also: scripts/setup.sh [--cuda|--cpu] --triton)
#
# PyTorch: the same pin and build choice as .venv (scripts/torch_build, one place): the small
# CPU wheel on a CPU host, never the multi-GB CUDA build; the CUDA build on a GPU host (an NVIDIA
# driver there, or --cuda), for a server with GPU instances.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv="$root/.venv-triton"
torch_build="$root/scripts/torch_build"
for arg in "$@"; do
  case "$arg" in
    --cuda|--cpu) ;;
    *) echo "setup_triton: unknown option $arg (--cuda, --cpu)" >&2; exit 2 ;;
  esac
done
command -v python3 >/dev/null || { echo "setup_triton: python3 (3.10+) is required" >&2; exit 1; }
torch_mode=$(python3 "$torch_build" mode "$@")
reqs=("numpy<2" "nvidia-pytriton==0.7.0")
log=$(mktemp -t cloudseg-setup-triton.XXXXXX)
trap 'rm -f "$log"' EXIT

step() {  # step NAME CMD...: run quietly, show the log only on failure
  local name=$1; shift
  if ! "$@" >"$log" 2>&1; then
    echo "setup_triton: $name failed; the last lines of its output:" >&2
    tail -n 25 "$log" >&2
    exit 1
  fi
}

[[ -x "$venv/bin/python" ]] || step "creating $venv" python3 -m venv "$venv"
stamp="$venv/.cloudseg-triton-deps"
key="${reqs[*]} $(cat "$torch_build") torch build: $torch_mode"
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$key" ]]; then
  # torch first, as its own step: nvidia-pytriton's own dependencies then find it installed
  step "installing PyTorch ($torch_mode build)" "$venv/bin/python" "$torch_build" install \
    "$torch_mode" "$venv/bin/python"
  step "installing ${reqs[*]}" "$venv/bin/python" -m pip --disable-pip-version-check -q \
    install "${reqs[@]}"
  step "checking the Triton environment" "$venv/bin/python" -c \
    "import numpy, torch, pytriton.triton; assert numpy.__version__ < '2'"
  printf '%s' "$key" >"$stamp"
fi
