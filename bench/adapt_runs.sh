#!/usr/bin/env bash
# Issue 19's acceptance runs: `cloudseg bench adapt --json` RUNS times per policy over the default
# step trace with DELAY ms each way, one JSON line per run appended to OUT; then the table of the
# goals' figures (median and range per policy) and the plot of the first controller run.
# Needs root (network namespaces). Usage:
#   sudo bench/adapt_runs.sh [OUT.jsonl] [RUNS] [DELAY] [SCORE_INTERVAL] [POLICIES...]
# e.g. sudo bench/adapt_runs.sh runs.jsonl 5 50 4 controller fixed4 resolution gcc
set -uo pipefail  # no -e: one failed run is reported and the others go on
cd "$(dirname "$0")/.."
out=${1:-adapt_runs.jsonl}; runs=${2:-5}; delay=${3:-50}; score=${4:-4}
shift $(( $# < 4 ? $# : 4 ))
policies=("$@"); [[ ${#policies[@]} -gt 0 ]] || policies=(controller fixed4 resolution gcc)
plot_dir=$(dirname "$out")
for run in $(seq 1 "$runs"); do
  for policy in "${policies[@]}"; do
    extra=()
    [[ $run == 1 ]] && extra=(--plot "$plot_dir/adapt_${policy}.png")
    echo "run $run/$runs: $policy ($(date -u +%H:%M:%S))" >&2
    line=$(.venv/bin/cloudseg bench adapt --policy "$policy" --delay-ms "$delay" \
      --score-interval "$score" --json "${extra[@]}" 2>>"$out.log" | tail -n 1)
    if [[ $line == \{* ]]; then
      echo "$line" | .venv/bin/python -c \
        "import json,sys; r=json.loads(sys.stdin.read()); r['run']=$run; print(json.dumps(r))" >>"$out"
    else
      echo "run $run of $policy failed (see $out.log)" >&2
    fi
  done
done
.venv/bin/python bench/adapt_summary.py "$out"
