#!/usr/bin/env bash
# Issue 6's accuracy figures (docs/benchmarks/accuracy.md, "Accuracy through the stream"):
# Table 1 with a codec column on the 7 shared Cityscapes val frames, the segmentation-size and
# SR-route choices, and the labelled frames inside real clips (P-frames; val, never trained on).
# CPU: ~30 min, 2 cores.
#
#   bash bench/accuracy_table.sh [RUNS]    RUNS: the folder of `cloudseg train` outputs
#                                           (default runs/; rows of missing checkpoints are left out)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-runs}
data=../shared/data
out=${OUT:-bench_out}
mkdir -p "$out"
cloudseg=(.venv/bin/cloudseg)

rows=()
for row in sr_base:sr/carn_m_sr.pth sr_ft_gt:ft_gt/carn_m_ft.pth sr_ft_hr:ft_hr/carn_m_ft.pth; do
  name=${row%%:*} path=$runs/${row#*:}
  [[ -f $path ]] && rows+=(--sr-row "$name=$path")
done

# Table 1: no codec / the default H.264 stream / 750 kbit/s; sr_ft = the committed default weights
"${cloudseg[@]}" bench accuracy --data "$data/cityscapes" --sr-ft-weights weights/carn_m_ft.pth \
  "${rows[@]}" --no-progress --json-out "$out/table1.json" | tee "$out/table1.md"

# the figure: crops of the first val frame through the default stream
"${cloudseg[@]}" eval --data "$data/cityscapes" --limit 1 --sr-ft-weights weights/carn_m_ft.pth \
  --no-lr-seg --no-progress --figure "$out/figure_sr_ft.png" --figure-rows bilinear,sr,sr_ft,hr

# where the segmenter runs: at the camera size (the paper) vs its trained resolution; SR route
for variant in "--seg-size full" "--sr-route full"; do
  "${cloudseg[@]}" eval --data "$data/cityscapes" --sr-ft-weights weights/carn_m_ft.pth \
    --no-lr-seg --no-progress $variant | tee "$out/eval_${variant// /_}.txt"
done

# the labelled frame inside each real Cityscapes clip, through the stream in order (a P-frame)
"${cloudseg[@]}" eval --data "$data"/sequences/mp4/*.mp4 --gt-root "$data/cityscapes" \
  --sr-ft-weights weights/carn_m_ft.pth --no-progress | tee "$out/eval_clips.txt"
# the same clips at the paper's 750 kbit/s (rate control works across a stream, not on one IDR)
"${cloudseg[@]}" eval --data "$data"/sequences/mp4/*.mp4 --gt-root "$data/cityscapes" \
  --sr-ft-weights weights/carn_m_ft.pth --bitrate 750 --no-progress | tee "$out/eval_clips_750k.txt"
