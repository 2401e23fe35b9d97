#!/usr/bin/env bash
# The Triton server's own environment, .venv-triton: `cloudseg serve` runs its server module with
# this interpreter. nvidia-pytriton pins numpy<2, which clashes with .venv's numpy 2, hence a
# second venv (see ../shared/PLATFORM.md, "Triton Inference Server from PyPI"). Idempotent.
#
#   scripts/setup_triton.sh          (also: scripts/setup.sh --triton)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv="$root/.venv-triton"
# The same torch pin as scripts/setup.sh (read from it: one place to change), CPU build: this
# server runs on the CPU here; GPU hosts run the official Triton server container instead.
torch_spec=$(sed -n 's/^torch_spec="\(.*\)"$/\1/p' "$root/scripts/setup.sh")
[[ -n "$torch_spec" ]] || { echo "setup_triton: no torch_spec in scripts/setup.sh" >&2; exit 1; }
reqs=("$torch_spec" "numpy<2" "nvidia-pytriton==0.7.0")
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

command -v python3 >/dev/null || { echo "setup_triton: python3 (3.10+) is required" >&2; exit 1; }
[[ -x "$venv/bin/python" ]] || step "creating $venv" python3 -m venv "$venv"
stamp="$venv/.cloudseg-triton-deps"
key="${reqs[*]}"
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$key" ]]; then
  step "installing ${reqs[*]}" "$venv/bin/python" -m pip --disable-pip-version-check -q \
    install "${reqs[@]}"
  step "checking the Triton environment" "$venv/bin/python" -c \
    "import numpy, torch, pytriton.triton; assert numpy.__version__ < '2'"
  printf '%s' "$key" >"$stamp"
fi
