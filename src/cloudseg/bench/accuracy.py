"""``cloudseg bench accuracy``: Table 1 with a codec column, beside the paper's.

Runs ``cloudseg eval`` (:func:`cloudseg.eval.evaluate`) once per stream setting: no codec
(the paper's setting), the compressor's default H.264 stream, and H.264 at the paper's
750 kbit/s; every other option (rows, weights, seg size) is eval's, parsed into one
:class:`~cloudseg.eval.EvalConfig` that each stream setting changes. Prints one
markdown table with kbit/s, PSNR, SSIM, mIoU, mIoU over ground-truth classes and how much of
the bilinear-to-HR mIoU gap each row wins back ("gap %"), and the paper's Table 1 beside it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["PAPER_TABLE1", "format_markdown", "gap_recovered", "main"]

PAPER_TABLE1 = {"bilinear": 0.582, "sr": 0.633, "sr_ft": 0.649, "hr": 0.675}
"""CloudSeg (HotCloud 2019) Table 1: mIoU on Cityscapes val, ICNet, 4x, no codec."""

STREAMS: dict[str, dict[str, Any]] = {
    "none": {"codec": "none"},
    "h264 (default stream)": {},
    "h264 750 kbit/s": {"bitrate": 750},
}
"""Stream setting -> its changes to the evaluation's config."""


def gap_recovered(row: float | None, bilinear: float | None, hr: float | None) -> float | None:
    """Share of the bilinear-to-HR gap a row wins back (0 = bilinear, 1 = HR)."""
    if row is None or bilinear is None or hr is None or hr == bilinear:
        return None
    return (row - bilinear) / (hr - bilinear)


def _cell(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def format_markdown(reports: dict[str, dict[str, Any]]) -> str:
    """One markdown table over every stream setting and row; the paper's column where it has
    the row (no codec only)."""
    lines = [
        "| stream | row | kbit/s | PSNR dB | SSIM | mIoU | mIoU (GT classes) | pixel acc. "
        "| gap % (mIoU / GT classes) | paper mIoU |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for stream, report in reports.items():
        rows = report["rows"]
        base, top = rows["bilinear"], rows["hr"]
        for name, r in rows.items():
            gaps = [
                gap_recovered(r[key], base[key], top[key]) for key in ("miou", "miou_gt_classes")
            ]
            gap = " / ".join(_cell(None if g is None else 100 * g, ".0f") for g in gaps)
            paper = PAPER_TABLE1.get(name) if stream == "none" else None
            lines.append(
                f"| {stream} | {name} | {_cell(r['kbps'], '.0f')} | {_cell(r['psnr'], '.2f')} "
                f"| {_cell(r['ssim'], '.3f')} | {_cell(r['miou'], '.3f')} "
                f"| {_cell(r['miou_gt_classes'], '.3f')} | {_cell(r['pixel_accuracy'], '.3f')} "
                f"| {gap} | {_cell(paper, '.3f')} |"
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; options it does not know go to ``cloudseg eval`` (2 on bad input)."""
    from cloudseg.eval import EVAL_ERRORS, evaluate, format_table, parse_config

    parser = argparse.ArgumentParser(
        prog="cloudseg bench accuracy",
        description="Table 1 (PSNR, SSIM, mIoU, kbit/s) without a codec, through the default "
        "H.264 stream and at 750 kbit/s, beside the paper's. Other options go to cloudseg eval "
        "(e.g. --data, --sr-ft-weights, --sr-row NAME=PATH, --seg-size, --limit).",
    )
    parser.add_argument(
        "--streams",
        default=",".join(STREAMS),
        help=f"comma-separated subset of: {', '.join(STREAMS)}",
    )
    parser.add_argument("--json-out", type=Path, help="write every report to this JSON file")
    try:
        args, rest = parser.parse_known_args(list(argv or []))
    except SystemExit as exc:  # --help (0) or a usage error (2, already printed)
        return int(exc.code or 0)
    chosen = [s.strip() for s in args.streams.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in STREAMS]
    if unknown:
        print(
            f"cloudseg bench accuracy: error: unknown stream(s) {unknown}; known: "
            f"{', '.join(STREAMS)}",
            file=sys.stderr,
        )
        return 2
    try:
        config = parse_config(rest)
    except SystemExit as exc:
        return int(exc.code or 0)
    reports = {}
    for stream in chosen:
        try:
            reports[stream] = evaluate(dataclasses.replace(config, **STREAMS[stream]))
        except EVAL_ERRORS as exc:
            print(f"cloudseg bench accuracy: error: {str(exc).splitlines()[0]}", file=sys.stderr)
            return 2
        print(format_table(reports[stream]), file=sys.stderr)
    if args.json_out is not None:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(reports, indent=1, allow_nan=False))
    print(format_markdown(reports))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
