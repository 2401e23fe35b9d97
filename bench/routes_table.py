"""One markdown table of every route on every frame set, from bench/learned_routes.sh eval.

    .venv/bin/python bench/routes_table.py [bench_out_routes]

Each ``NAME.txt`` there ends with ``cloudseg eval --json``'s report; ``NAME+MORE.txt`` add
rows (e.g. a route trained later, run with ``--rows``). Cells: mIoU (kbit/s of
the stream the row reads; ms/frame on this machine), and, where the set has bilinear and hr
rows, the share of the bilinear-to-hr gap the row recovers.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from cloudseg.bench.accuracy import gap_recovered

SETS = {
    "stills": "7 val stills (IDR), vs fine labels",
    "clips": "labelled P-frames of the 4 clips, vs fine labels",
    "stream60": "60 streamed frames of 2 val clips, vs ESPNetv2 on the originals",
    "lr_val": "21 cityscapes_lr val.txt frames (IDR), vs fine labels",
    "nocodec": "7 val stills without a codec (the paper's setting)",
    "kernel": "7 val stills, compressor kernel bilinear_noaa",
    "kernel60": "60 streamed frames, compressor kernel bilinear_noaa",
}
GMACS = {  # per frame of a x4 stream of 2048x1024 (registry metadata: ESPNetv2 MFLOPs, CARN-M)
    "bilinear": 2.70,
    "lr_seg": 0.67,
    "sr": 54.6,
    "sr_ft": 54.6,
    "sr_ft_9frames": 54.6,
    "lr_seg_ft": 0.67,
    "bilinear_seg_ft": 2.70,
    "sr_seg_ft": 54.6,
    "default": None,
    "hr": 2.70,
    "hr_stream": 2.70,
}


def _last_json(path: Path) -> dict | None:
    for line in reversed(path.read_text().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    return None


def report(folder: Path, name: str) -> dict | None:
    """The report of ``NAME.txt``, with the rows of ``NAME+*.txt`` (runs adding rows) added."""
    reports = [
        _last_json(p)
        for p in [folder / f"{name}.txt", *sorted(folder.glob(f"{name}+*.txt"))]
        if p.is_file()
    ]
    reports = [r for r in reports if r is not None]
    if not reports:
        return None
    merged = reports[0]
    for extra in reports[1:]:
        for key in ("rows", "timings_ms"):
            for row, value in extra.get(key, {}).items():
                merged.setdefault(key, {}).setdefault(row, value)
    return merged


def main(folder: Path) -> str:
    reports = {name: report(folder, name) for name in SETS}
    reports = {k: v for k, v in reports.items() if v is not None}
    rows: list[str] = []
    for rep in reports.values():
        rows += [r for r in rep["rows"] if r not in rows]
    lines = [
        "| route | GMACs | " + " | ".join(SETS[k] for k in reports) + " |",
        "|---|---:|" + "---:|" * len(reports),
    ]
    for row in rows:
        cells = []
        for rep in reports.values():
            r = rep["rows"].get(row)
            if r is None:
                cells.append("-")
                continue
            text = f"{r['miou']:.3f}"
            base, top = rep["rows"].get("bilinear"), rep["rows"].get("hr")
            if base and top and row not in ("bilinear", "hr"):
                gap = gap_recovered(r["miou"], base["miou"], top["miou"])
                text += f" ({gap:.0%})" if gap is not None else ""
            kbps = r.get("kbps")
            text += f", {kbps:.0f} kbit/s" if kbps else ", raw"
            ms = rep.get("timings_ms", {}).get(row, {}).get("total")
            if ms:
                text += f", {ms:.0f} ms"
            cells.append(text)
        gmacs = GMACS.get(row)
        lines.append(
            f"| {row} | {gmacs if gmacs is not None else '='} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    print(main(Path(sys.argv[1] if len(sys.argv) > 1 else "bench_out_routes")))
