"""The report of ``cloudseg bench fleet``: each vehicle's labels scored against full-resolution
labels of its own frames (and, as a control, another vehicle's), and the table."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from cloudseg.bench import cuda_available

if TYPE_CHECKING:
    from pathlib import Path

    from cloudseg.bench.fleet import FleetOptions, Vehicle


def score(vehicles: list[Vehicle], args: FleetOptions, wall: float, log_dir: Path) -> dict:
    from cloudseg.media.resize import resize_labels
    from cloudseg.metrics import ConfusionMatrix
    from cloudseg.selection.reference import full_resolution_segmenter

    segment = full_resolution_segmenter(args.backend, "cpu" if args.device == "cpu" else "auto")
    references: dict[tuple[str, int], np.ndarray] = {}

    def reference(v: Vehicle, index: int) -> np.ndarray:
        key = (v.name, index)
        if key not in references:
            references[key] = segment(v.frames[index])
        return references[key]

    rows = []
    for k, v in enumerate(vehicles):
        other = vehicles[(k + 1) % len(vehicles)]
        labelled = sorted((v.index_of_stamp[s], s) for s in v.labels if s in v.index_of_stamp)
        unique = dict(labelled)  # index -> stamp (the last labels of each frame)
        picks = sorted(unique)
        if len(picks) > args.score_frames:
            step = len(picks) / args.score_frames
            picks = [picks[int(i * step)] for i in range(args.score_frames)]
        own, cross = ConfusionMatrix(), ConfusionMatrix()
        for index in picks:
            w, h, data = v.labels[unique[index]]
            got = np.frombuffer(data, np.uint8).reshape(h, w)
            ref = reference(v, index)
            own.update(resize_labels(got, ref.shape[1::-1]), ref)
            if other is not v and index < len(other.frames):
                ref_o = reference(other, index)
                cross.update(resize_labels(got, ref_o.shape[1::-1]), ref_o)
        lat = v.latency_ms
        rows.append(
            {
                "name": v.name.strip("/"),
                "input": v.input.name,
                "sent": len(v.sent),
                "labels": v.labels_received,
                "latency_ms_p50": _round(np.percentile(lat, 50)) if lat else None,
                "latency_ms_p95": _round(np.percentile(lat, 95)) if lat else None,
                "miou_vs_own_hr": _round(own.miou(), 3) if picks else None,
                "miou_vs_other_hr": _round(cross.miou(), 3) if picks and other is not v else None,
                "scored": len(picks),
                "stats_stream_ids": sorted(v.seen_stats_streams),
            }
        )
    sizes = [b for v in vehicles for b in v.batch_sizes]
    infer = [m for v in vehicles for m in v.infer_ms]
    # FrameStats come one per frame: batches = sum over frames of 1 / (its batch's size)
    batch_mean = len(sizes) / sum(1.0 / b for b in sizes) if sizes else None
    return {
        "inference": args.inference,
        "vehicles": rows,
        "batch_mean": _round(batch_mean, 2) if batch_mean else None,
        "ms_per_frame": _round(float(np.mean(infer)), 2) if infer else None,
        "restoration": restoration(args),
        "wall_s": round(wall, 1),
        "log_dir": str(log_dir),
    }


def restoration(args: FleetOptions) -> str:
    if args.inference == "triton":
        where = args.triton_urls or "two cloudseg serve servers on this host's CPU (KIND_CPU)"
        text = f"Triton ({where}): models cloudseg_x4_{{sr,bilinear}} for a 2048x1024 camera"
        if not args.triton_urls and args.cpu_max_width:
            text += f", reduced-resolution mode (segment at most {args.cpu_max_width} px wide)"
        return text + f"; restore={args.restore}; labels only"
    if args.device == "cpu" or (args.device == "auto" and not cuda_available()):
        text = f"CPU reduced-resolution mode: SR + segmentation at most {args.cpu_max_width} px "
        text += "wide (cpu_max_width)"
        if args.cpu_max_width and args.cpu_max_width <= 512:
            text += "; at x4 from 2048x1024 that is the decoded LR frame or less: no SR runs"
        return text + f"; restore={args.restore}"
    return f"GPU: restore={args.restore} at the backend's trained resolution"


def _round(x, nd: int = 1):
    return None if x is None or not np.isfinite(x) else round(float(x), nd)


def format_table(result: dict) -> str:
    lines = [
        "| vehicle | input | sent | labels | latency p50 / p95 ms | mIoU own hr | mIoU other hr |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in result["vehicles"]:
        lines.append(
            f"| {r['name']} | {r['input']} | {r['sent']} | {r['labels']} | "
            f"{r['latency_ms_p50']} / {r['latency_ms_p95']} | {r['miou_vs_own_hr']} | "
            f"{r['miou_vs_other_hr']} |"
        )
    lines.append(
        f"\ncloud: mean batch {result['batch_mean']}, {result['ms_per_frame']} ms per frame "
        f"(inference); {result['restoration']}"
    )
    for server in result.get("triton_servers") or []:
        lines.append(f"triton server {server['url']}: {server['requests']} requests")
    return "\n".join(lines)
