"""Write each shipped route's held-out figures into its model card (the .json beside the weights).

    .venv/bin/python bench/card_evaluation.py [bench_out_routes]

Reads the reports of bench/learned_routes.sh eval (see bench/routes_table.py) and adds an
``evaluation`` entry per card: mIoU (and the share of the bilinear-to-hr gap) and kbit/s of its
route's row on every frame set. The weights files are not touched.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from cloudseg.bench.accuracy import gap_recovered

sys.path.insert(0, str(Path(__file__).resolve().parent))
from routes_table import SETS
from routes_table import report as _report

CARDS = {  # weights file -> the eval row of the route it serves
    "weights/espnetv2_1024x512_stream.json": "bilinear_seg_ft",
    "weights/espnetv2_512x256_stream.json": "lr_seg_ft",
    "weights/espnetv2_1024x512_stream_sr.json": "sr_seg_ft",
    "weights/carn_m_ft.json": "sr_ft",
}


def main(folder: Path) -> None:
    reports = {name: _report(folder, name) for name in SETS}
    for card_file, row in CARDS.items():
        path = Path(card_file)
        if not path.is_file():
            continue
        evaluation = {"command": "bash bench/learned_routes.sh eval", "row": row}
        for name, report in reports.items():
            if report is None or row not in report["rows"]:
                continue
            r = report["rows"][row]
            entry = {"frames": SETS[name], "miou": round(r["miou"], 4), "kbps": r["kbps"]}
            base, top = report["rows"].get("bilinear"), report["rows"].get("hr")
            gap = gap_recovered(r["miou"], base["miou"], top["miou"]) if base and top else None
            if gap is not None:
                entry["gap_recovered"] = round(gap, 3)
            evaluation[name] = entry
        card = json.loads(path.read_text())
        card["evaluation"] = evaluation
        path.write_text(json.dumps(card, indent=2) + "\n")
        print(f"{path}: {len(evaluation) - 2} frame sets")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "bench_out_routes"))
