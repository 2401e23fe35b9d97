#!/usr/bin/env bash
# Issue 16's figures (docs/benchmarks/accuracy.md, "Learned routes"): the routes from the
# decoded stream to labels, trained on the same 365 low-resolution frames (cityscapes_lr train.txt), then scored on
# frames never trained on, every row with its kbit/s:
#   stills   the 7 val stills of ../shared/data/cityscapes (each a lone IDR) vs fine labels
#   clips    the labelled frames inside the 4 real clips (P-frames, clips streamed in order)
#   stream60 60 frames of 2 val clips in stream order vs ESPNetv2 on the originals
#   lr_val   the 21 cityscapes_lr val.txt frames (low resolution only: no hr rows)
#   nocodec  the stills without a codec (the paper's setting)
#   kernel   the stills with the compressor's kernel bilinear_noaa instead of area
#   kernel60 the 60 streamed frames with kernel bilinear_noaa (the routes without SR)
#
#   bash bench/learned_routes.sh train   # the training runs (CPU: about 1.5 h on 2 cores)
#   bash bench/learned_routes.sh ship    # runs/stream/*.pth -> weights/ as fp16, with cards
#   bash bench/learned_routes.sh eval    # the tables (CPU: about 25 min on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
data=${CLOUDSEG_SHARED_DATA:-../shared/data}
out=${OUT:-bench_out_routes}
runs=${RUNS:-runs/stream}
cloudseg=(.venv/bin/cloudseg)
train=("${cloudseg[@]}" train stream --data "$data/cityscapes_lr" --threads "${THREADS:-1}")

case "${1:-eval}" in
train)
  "${train[@]}" --route lr_seg --out "$runs/lr_seg.pth" --steps 500 --lr 2e-4
  "${train[@]}" --route bilinear_seg --out "$runs/bilinear_seg.pth" --steps 300 --lr 2e-4
  "${train[@]}" --route sr_ft --sr-weights cloudseg_ft --out "$runs/sr_ft.pth" --steps 150 \
    --batch-size 4 --crop 192x96 --val-every 50
  ;;
ship)
  .venv/bin/python - "$runs" <<'EOF'
import sys
from cloudseg.train.checkpoint import ship_weights
runs = sys.argv[1]
for src, dest in [("lr_seg", "espnetv2_512x256_stream"), ("bilinear_seg", "espnetv2_1024x512_stream")]:
    print(ship_weights(f"{runs}/{src}.pth", f"weights/{dest}.pth"))
EOF
  sha256sum weights/*_stream.pth
  ;;
eval)
  mkdir -p "$out"
  ev=("${cloudseg[@]}" eval --no-progress)
  "${ev[@]}" --data "$data/cityscapes" --json | tee "$out/stills.txt"
  "${ev[@]}" --data "$data/cityscapes" --kernel bilinear_noaa --json | tee "$out/kernel.txt"
  "${ev[@]}" --data "$data/cityscapes" --codec none --json | tee "$out/nocodec.txt"
  "${ev[@]}" --data "$data/cityscapes_lr" --json | tee "$out/lr_val.txt"
  "${ev[@]}" --data "$data"/sequences/mp4/*.mp4 --gt-root "$data/cityscapes" --json \
    | tee "$out/clips.txt"
  "${ev[@]}" --data "$data"/sequences/mp4/frankfurt_000000_{000997,001217}.mp4 --json \
    | tee "$out/stream60.txt"
  "${ev[@]}" --data "$data"/sequences/mp4/frankfurt_000000_{000997,001217}.mp4 --json \
    --kernel bilinear_noaa --rows bilinear,lr_seg,lr_seg_ft,bilinear_seg_ft | tee "$out/kernel60.txt"
  .venv/bin/python bench/routes_table.py "$out" | tee "$out/table.md"
  ;;
*)
  echo "usage: bash bench/learned_routes.sh train|ship|eval" >&2
  exit 2
  ;;
esac
