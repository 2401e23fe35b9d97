"""Write bench/traces/cellular.csv: a synthetic cellular-like bandwidth trace for
`cloudseg bench adapt --trace`.

No dataset is copied. The pattern imitates what published 4G/LTE throughput logs show (e.g. the
Ghent 4G/LTE bandwidth logs of van der Hooft et al., IEEE Communications Letters 2016, and the
Mahimahi cellular traces): the rate swings 2-5x within a few seconds, with short deep fades.
Model (seeded, so the file is reproducible): 1-s steps for 70 s; the log of the rate is an
AR(1) process around log(2000 kbit/s) (coefficient 0.7, innovation sd 0.45); with probability
0.07 a second starts a fade to 500-700 kbit/s lasting 1-3 s; everything clipped to 500..6000.

    .venv/bin/python bench/cellular_trace.py            # rewrites bench/traces/cellular.csv
"""

from __future__ import annotations

import math
import random
from pathlib import Path

OUT = Path(__file__).parent / "traces" / "cellular.csv"


def cellular_trace(seconds: int = 70, seed: int = 19) -> list[tuple[int, int]]:
    """(seconds, kbps) steps of the model in the module docstring."""
    rnd = random.Random(seed)
    mean, x, fade = math.log(2000.0), math.log(2000.0), 0
    rows = []
    for _ in range(seconds):
        x = mean + 0.7 * (x - mean) + rnd.gauss(0.0, 0.45)
        if fade == 0 and rnd.random() < 0.07:
            fade = rnd.randint(1, 3)
        kbps = rnd.uniform(500, 700) if fade else math.exp(x)
        fade = max(fade - 1, 0)
        rows.append((1, round(min(max(kbps, 500.0), 6000.0))))
    return rows


def main() -> None:
    rows = cellular_trace()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    header = "# synthetic cellular-like trace (bench/cellular_trace.py, seed 19)\nseconds,kbps\n"
    OUT.write_text(header + "".join(f"{s},{k}\n" for s, k in rows))
    print(f"{OUT}: {len(rows)} s, {min(k for _, k in rows)}..{max(k for _, k in rows)} kbit/s")


if __name__ == "__main__":
    main()
