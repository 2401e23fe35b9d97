#!/usr/bin/env bash
# GPU benchmark of the cloud pipeline, ready for a GPU host without ROS (e.g. the `device`
# tool's H100: Python 3.12, PyTorch, OpenCV; PyAV carried as a wheel in .whl/).
#
# Prepare here (once):   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
#     -d .whl av==18.1.0
# Run there:             bash bench/gpu_cloud.sh          (carry: .whl)
set -euo pipefail
cd "$(dirname "$0")/.."
if ! python3 -c "import av" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader || true
for backend in icnet espnetv2; do
  python3 -m cloudseg.bench.cloud --device cuda --backend "$backend" --batch 1 8 \
    --dtype fp32 fp16 --iters 50 --json
  python3 -m cloudseg.bench.cloud --device cuda --backend "$backend" --batch 1 8 \
    --dtype fp16 --iters 50 --compile --json
  python3 -m cloudseg.bench.cloud --device cuda --backend "$backend" --sr-model carn --batch 1 8 \
    --dtype fp16 --iters 50 --json
done
