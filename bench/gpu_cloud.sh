#!/usr/bin/env bash
# The standing GPU check (src/cloudseg/bench/gpu_check.py): every CUDA path of the cloud, one
# PASS/FAIL/SKIP line per section (a failure does not stop the rest), then `cloudseg bench
# cloud` timing runs while --budget-s lasts (default 280 s: under 5 minutes on an H100).
# Needs Python 3.12 + PyTorch + numpy + OpenCV; no ROS wheels, rosbags, mcap, cityscapesScripts.
#
# Prepare here (once; .carry/ is git-ignored, Cityscapes frames never enter the repository):
#   mkdir -p .carry/gpu_data/weights
#   cp ../shared/data/cityscapes/leftImg8bit/val/frankfurt/frankfurt_000000_000294_leftImg8bit.png \
#      ../shared/data/cityscapes/leftImg8bit/val/lindau/lindau_000005_000019_leftImg8bit.png \
#      .carry/gpu_data/
#   cp -r ../shared/data/weights/carn ../shared/data/weights/espnetv2 .carry/gpu_data/weights/
#   wheels for what the GPU host may lack, in .carry/whl: PyAV (the decode column of the timing
#   runs) and tqdm (the trainers import it; without it their steps FAIL with an ImportError):
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
#     -d .carry/whl av==18.1.0
#   python3 -m pip download --no-deps -d .carry/whl tqdm==4.70.1
# Run there (device tool): command "bash bench/gpu_cloud.sh --data .carry/gpu_data",
#   carry [".carry"], timeout_s 420. Without --data (or an empty folder): synthetic frames and
#   random weights (looser agreement thresholds). --budget-s S, --size WxH, --verbose.
cd "$(dirname "$0")/.." || exit 2
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY="${PYTHON:-python3}"  # the GPU host's python3; PYTHON=.venv/bin/python here
if compgen -G ".carry/whl/*.whl" >/dev/null; then  # the carried wheels, outside the host's env
  "$PY" -m pip install -q --no-index --no-deps --target /tmp/site .carry/whl/*.whl \
    && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
exec "$PY" -m cloudseg.bench.gpu_check "$@"
