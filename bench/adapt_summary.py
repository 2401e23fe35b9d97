"""The goals' figures of issue 19 from `cloudseg bench adapt --json` lines (one per run):
median and range per policy, and per step the mIoU and its gap to the best fixed policy.

Usage: .venv/bin/python bench/adapt_summary.py RUNS.jsonl   (lines of bench/adapt_runs.sh)
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict

#: (key, label, goal) of the per-run figures: the issue's goals on the default step trace
FIGURES = (
    ("offered_over_link_max_1s", "offered/link max (1-s, after 2 s)", "<= 1.0"),
    ("lost_pct", "frames lost %", "<= 1"),
    ("latency_ms_p95", "capture-to-stats p95 ms", "<= 150"),
    ("queue_ms_p95", "queue delay p95 ms", ""),
    ("goodput_kbps", "goodput kbit/s", ""),
    ("miou", "mIoU (vs full-resolution labels)", "within 0.02 of best fixed per step"),
)
FIXED = ("fixed4", "full")


def spread(values: list[float]) -> str:
    """'median (min-max, n)' of the values that are there."""
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    med = statistics.median(values)
    return f"{med:.3g} ({min(values):.3g}-{max(values):.3g}, n={len(values)})"


def main(path: str) -> int:
    runs: dict[str, list[dict]] = defaultdict(list)
    with open(path) as f:
        for line in f:
            if line.strip():
                r = json.loads(line)
                runs[r["policy"]].append(r)
    policies = list(runs)
    print("| figure | goal | " + " | ".join(policies) + " |")
    print("|---|---|" + "---|" * len(policies))
    collapsed = [str(sum(bool(r.get("collapsed")) for r in runs[p])) for p in policies]
    print("| runs collapsed | 0 | " + " | ".join(collapsed) + " |")
    for key, label, goal in FIGURES:
        cells = [spread([r.get(key) for r in runs[p]]) for p in policies]
        print(f"| {label} | {goal} | " + " | ".join(cells) + " |")
    # per step: mIoU median per policy, and the gap to the best fixed policy
    steps = max((len(r.get("steps", [])) for rs in runs.values() for r in rs), default=0)
    if steps:
        print("\n| step | " + " | ".join(policies) + " |")
        print("|---|" + "---|" * len(policies))
        for i in range(steps):
            med = {}
            for p in policies:
                vals = [r["steps"][i].get("miou") for r in runs[p] if len(r.get("steps", [])) > i]
                vals = [v for v in vals if v is not None]
                med[p] = statistics.median(vals) if vals else None
            fixed = [med[p] for p in FIXED if med.get(p) is not None]
            best = max(fixed) if fixed else None
            link = next((r["steps"][i].get("link_kbps") for rs in runs.values() for r in rs), None)
            cells = []
            for p in policies:
                if med[p] is None:
                    cells.append("-")
                elif best is None or p in FIXED:
                    cells.append(f"{med[p]:.3f}")
                else:
                    cells.append(f"{med[p]:.3f} ({med[p] - best:+.3f})")
            print(f"| {i + 1} ({link} kbit/s) | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        raise SystemExit(2)
    raise SystemExit(main(sys.argv[1]))
