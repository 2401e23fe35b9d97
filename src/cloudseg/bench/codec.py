"""``cloudseg bench codec``: libx264 preset x rate control x intra refresh at one scale (issue 8).

Every frame of each input is downsampled (area, default 4x: 512x256 for Cityscapes) and
encoded in stream order with :class:`~cloudseg.media.h264.H264Encoder` (tune zerolatency,
GOP 17), decoded, and restored bilinearly to full size. Reported per configuration:

* kbit/s at 17 fps and the largest frame after the first (kB: IDR bursts on the link);
* PSNR (dB) of the bilinear restoration against the original, all frames;
* mIoU after restoration on every ``--score-every``-th frame (offset 1: Cityscapes frame 19,
  the annotated one, is among them): the segmenter (ESPNetv2 at its trained 1024x512) on the
  bilinearly restored frame, against the same segmenter's labels on the original frame
  (``load_labelled_sequence``, cached), one confusion matrix over all inputs. ``--sr NAME``
  also scores the named configurations with the CARN-M SR route of the cloud pipeline;
* encode ms per frame: CPU time of the encode call (colour conversion included), median,
  with the process pinned to one core while encoding.

``--frame-budget B ...`` (frames that fit, issue 19) instead compares the compressor's default
encoder (veryfast, CRF 25) without a cap, with each per-frame budget B bytes
(`H264Encoder.set_frame_budget`: a VBV of one frame), and with the budgets in turn, each for
``BUDGET_STEP`` frames (every change down costs an IDR): frames over budget (not sent: the
previous picture stays, the next frame is an IDR), PSNR and encode ms, same run.

Rate controls: CRF; capped CRF (CRF with maxrate/bufsize = maxrate x 0.5 s); CBR-like
(bitrate = maxrate, same VBV buffer).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from cloudseg.media.codecs import CodecError
from cloudseg.media.h264 import H264Decoder, H264Encoder
from cloudseg.media.quality import psnr
from cloudseg.media.resize import downsample, upsample_bilinear

log = logging.getLogger(__name__)

FPS = 17.0
GOP = 17
DEFAULT_INPUT = Path("/work/shared/data/sequences/aachen_seq0000")
PRESETS = ("ultrafast", "superfast", "veryfast", "faster")
BUDGET_STEP = 10  # frames per budget when the budgets take turns
Segmenter = Callable[[list[np.ndarray], str], list[np.ndarray]]
"""(LR frames, mode "bilinear" or "sr") -> labels at the reference labels' resolution."""


@dataclass(frozen=True)
class RateControl:
    """One rate-control setting: crf, capped crf (crf + maxrate) or cbr (bitrate)."""

    name: str
    crf: int | None = None
    maxrate_kbps: int | None = None
    bitrate_kbps: int | None = None

    def params(self) -> dict[str, Any]:
        if self.bitrate_kbps:
            return {"bitrate_kbps": self.bitrate_kbps}
        return {"crf": self.crf, "maxrate_kbps": self.maxrate_kbps}


RATE_CONTROLS = (
    RateControl("crf23", crf=23),
    RateControl("crf25", crf=25),
    RateControl("crf26", crf=26),
    RateControl("crf23<=450k", crf=23, maxrate_kbps=450),
    RateControl("cbr450k", bitrate_kbps=450),
)


@dataclass(frozen=True)
class Config:
    """One encoder configuration of the table."""

    preset: str
    rate: RateControl
    intra_refresh: bool = False
    budgets: tuple[int, ...] = ()  # per-frame budgets in bytes, taking turns (none: no cap)

    @property
    def name(self) -> str:
        cap = "/".join(str(b) for b in self.budgets)
        cap = f" <={cap}B" if cap else ""
        return f"{self.preset} {self.rate.name}{' ir' if self.intra_refresh else ''}{cap}"

    def budget(self, seq: int) -> int:
        """The budget of frame ``seq`` (0: none)."""
        if not self.budgets:
            return 0
        return self.budgets[(seq // BUDGET_STEP) % len(self.budgets)]

    def encoder(self) -> H264Encoder:
        return H264Encoder(
            preset=self.preset,
            gop=GOP,
            fps=FPS,
            intra_refresh=self.intra_refresh,
            **self.rate.params(),
        )


def budget_configs(budgets: Sequence[int], preset: str = "veryfast") -> list[Config]:
    """The compressor's default encoder uncapped, under each budget, and the budgets in turn."""
    rate = RateControl("crf25", crf=25)
    configs = [Config(preset, rate)] + [Config(preset, rate, budgets=(b,)) for b in budgets]
    if len(budgets) > 1:
        configs.append(Config(preset, rate, budgets=tuple(budgets)))
    return configs


def all_configs(
    presets: Sequence[str] = PRESETS, rates: Sequence[RateControl] = RATE_CONTROLS
) -> list[Config]:
    return [Config(p, r, ir) for p in presets for r in rates for ir in (False, True)]


@dataclass
class Row:
    """One line of the result table."""

    config: str
    preset: str
    rate_control: str
    intra_refresh: bool
    frames: int
    kbps: float
    peak_kb: float
    psnr_db: float
    encode_ms: float
    idr_frames: int
    miou: float = float("nan")
    miou_sr: float = float("nan")
    scored: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


@contextmanager
def one_core():
    """Pin this process to its first allowed core (restored afterwards); no-op where unsupported."""
    if not hasattr(os, "sched_getaffinity"):
        yield
        return
    cpus = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(cpus)})
    try:
        yield
    finally:
        os.sched_setaffinity(0, cpus)


def _even(rgb: np.ndarray) -> np.ndarray:
    h, w = rgb.shape[:2]
    return rgb[: h - h % 2, : w - w % 2]


def encode_clip(
    frames: list[np.ndarray], scale: int, config: Config, keep: set[int]
) -> tuple[dict[str, Any], dict[int, np.ndarray]]:
    """Encode + decode one clip in stream order; numbers and the decoded LR frames in ``keep``."""
    encoder, decoder = config.encoder(), H264Decoder()
    sizes, enc_ms, scores, idr, over, dropped, sent = [], [], [], 0, 0, 0, 0
    kept: dict[int, np.ndarray] = {}
    decoded = None
    for seq, frame in enumerate(frames):
        lr = _even(downsample(frame, scale, "area"))
        budget = config.budget(seq)
        t0 = time.process_time()
        encoder.set_frame_budget(budget)
        encoded = encoder.encode(lr)
        enc_ms.append((time.process_time() - t0) * 1e3)
        too_big = bool(budget) and len(encoded.payload) > budget
        over += too_big
        if too_big and not encoded.keyframe:  # as FrameCompressor: not sent, the next is an IDR
            encoder.request_keyframe()
            dropped += 1
        else:
            decoded = decoder.decode(encoded.payload, sent)
            sent += 1
            sizes.append(len(encoded.payload))
            idr += int(encoded.keyframe)
        if decoded is None:  # nothing got through yet: the cloud has no picture (mid-grey)
            decoded = np.full_like(lr, 128)
        scores.append(psnr(upsample_bilinear(decoded, (frame.shape[1], frame.shape[0])), frame))
        if seq in keep:
            kept[seq] = decoded
    numbers = {
        "frames": len(frames),
        "bytes": sum(sizes),
        "peak_kb": max(sizes[1:] or sizes or [0]) / 1000,
        "max_bytes": max(sizes or [0]),  # after the first IDR: bursts mid-stream
        "psnr_sum": sum(scores),
        "encode_ms": enc_ms,
        "idr_frames": idr,
        "over_budget": over,
        "dropped": dropped,
    }
    return numbers, kept


def run_bench(
    clips: list[tuple[list[np.ndarray], list[np.ndarray] | None]],
    configs: Sequence[Config],
    *,
    scale: int = 4,
    score_every: int = 3,
    segment: Segmenter | None = None,
    sr_for: Sequence[str] = (),
) -> list[Row]:
    """The table for ``clips`` = [(frames, reference labels or None)]; mIoU when ``segment``."""
    from cloudseg.metrics import ConfusionMatrix

    keeps = [
        set(range(1 % score_every, len(f), score_every)) if segment else set() for f, _ in clips
    ]
    rows = []
    total = sum(len(f) for f, _ in clips) * len(configs)
    progress = tqdm(total=total, desc="bench codec", unit="frame", file=sys.stderr)
    with progress:
        for config in configs:
            progress.set_postfix_str(config.name)
            parts, decoded = [], []
            with one_core():
                for (frames, _), keep in zip(clips, keeps, strict=True):
                    numbers, kept = encode_clip(frames, scale, config, keep)
                    parts.append(numbers)
                    decoded.append(kept)
                    progress.update(len(frames))
            n = sum(p["frames"] for p in parts)
            row = Row(
                config=config.name,
                preset=config.preset,
                rate_control=config.rate.name,
                intra_refresh=config.intra_refresh,
                frames=n,
                kbps=sum(p["bytes"] for p in parts) * 8 * FPS / n / 1000,
                peak_kb=max(p["peak_kb"] for p in parts),
                psnr_db=sum(p["psnr_sum"] for p in parts) / n,
                encode_ms=statistics.median([ms for p in parts for ms in p["encode_ms"]]),
                idr_frames=sum(p["idr_frames"] for p in parts),
            )
            if config.budgets:
                over, dropped = (sum(p[k] for p in parts) for k in ("over_budget", "dropped"))
                row.extra["over_budget"] = f"{over} ({dropped} not sent)"
                row.extra["max_bytes"] = max(p["max_bytes"] for p in parts)
            if segment is not None:
                modes = ["bilinear"] + (["sr"] if config.name in sr_for else [])
                for mode in modes:
                    matrix = ConfusionMatrix()
                    for (_, labels), kept in zip(clips, decoded, strict=True):
                        if labels is None or not kept:
                            continue
                        order = sorted(kept)
                        for i, pred in zip(
                            order, segment([kept[i] for i in order], mode), strict=True
                        ):
                            matrix.update(pred, labels[i])
                        row.scored = sum(len(k) for k in decoded)
                    if matrix.total:
                        setattr(row, "miou" if mode == "bilinear" else "miou_sr", matrix.miou())
            rows.append(row)
    return rows


def pipeline_segmenter(backend: str = "espnetv2", scale: int = 4) -> Segmenter:
    """Segment LR frames as the cloud does (bilinear, or CARN-M SR when asked), one at a time."""
    import torch

    from cloudseg.restore.pipeline import RestorationPipeline

    pipelines: dict[str, RestorationPipeline] = {}

    def segment(frames: list[np.ndarray], mode: str) -> list[np.ndarray]:
        if mode not in pipelines:
            sr = "carn_m" if mode == "sr" else None
            pipelines[mode] = RestorationPipeline(sr, backend, device="cpu", scale=scale)
        out = []
        with torch.inference_mode():
            for lr in frames:
                labels = pipelines[mode].process(lr[None], mode).labels[0]
                out.append(labels.cpu().numpy().astype(np.uint8))
        return out

    return segment


_COLUMNS = (
    ("config", "configuration", "{}"),
    ("kbps", "kbit/s", "{:.0f}"),
    ("peak_kb", "peak kB", "{:.1f}"),
    ("idr_frames", "IDRs", "{}"),
    ("psnr_db", "PSNR dB", "{:.2f}"),
    ("miou", "mIoU bilinear", "{:.3f}"),
    ("miou_sr", "mIoU SR", "{:.3f}"),
    ("encode_ms", "enc ms", "{:.2f}"),
)


def format_markdown(rows: list[Row]) -> str:
    """A markdown table (also readable as plain text); frames over budget when any had one."""
    columns = _COLUMNS
    if any("over_budget" in r.extra for r in rows):
        columns += (("max_bytes", "max B", "{}"), ("over_budget", "over budget", "{}"))
    header = [title for _, title, _ in columns]
    align = ["---" if key == "config" else "---:" for key, _, _ in columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    for r in rows:
        cells = [
            fmt.format(
                r.extra.get(key, "-") if key in r.extra or not hasattr(r, key) else getattr(r, key)
            )
            for key, _, fmt in columns
        ]
        lines.append("| " + " | ".join(c.replace("nan", "-") for c in cells) + " |")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cloudseg bench codec",
        description=(
            "libx264 presets x rate control (CRF 23, 25, 26, CRF 23 capped at 450 kbit/s, "
            "CBR 450 kbit/s) x intra refresh at one scale: kbit/s, peak frame, PSNR of the "
            "bilinear restoration, mIoU after restoration (ESPNetv2 vs its labels on the "
            "original frames) and encode CPU ms per frame on one core."
        ),
    )
    parser.add_argument("--input", nargs="+", type=Path, default=[DEFAULT_INPUT], metavar="PATH")
    parser.add_argument("--frames", type=int, default=30, metavar="N", help="frames per input")
    parser.add_argument("--scale", type=int, default=4, help="downsampling factor (default 4)")
    parser.add_argument("--presets", nargs="+", default=list(PRESETS), metavar="PRESET")
    parser.add_argument(
        "--score-every", type=int, default=3, metavar="K", help="mIoU on every K-th frame"
    )
    parser.add_argument("--no-miou", action="store_true", help="skip segmentation (fast)")
    parser.add_argument(
        "--sr", nargs="*", default=[], metavar="CONFIG", help="also score these configs with SR"
    )
    parser.add_argument("--backend", default="espnetv2", help="segmenter (default espnetv2)")
    parser.add_argument(
        "--frame-budget",
        nargs="+",
        type=int,
        default=[],
        metavar="BYTES",
        help="compare the compressor's encoder (veryfast CRF 25) uncapped, capped at each "
        "per-frame budget, and with the budgets taking turns every 10 frames",
    )
    parser.add_argument("--json", action="store_true", help='also print {"rows": [...]} last')
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; 0 on success, 2 on bad arguments or unreadable input."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.frames < 1 or args.score_every < 1 or args.scale < 1:
        parser.error("--frames, --score-every and --scale must be >= 1")
    for path in args.input:
        if not path.exists():
            parser.error(f"input {path} does not exist")
    from cloudseg.data.frames import DataError
    from cloudseg.data.sources import open_source
    from cloudseg.selection.reference import load_labelled_sequence

    try:
        clips: list[tuple[list[np.ndarray], list[np.ndarray] | None]] = []
        for path in args.input:
            if args.no_miou:
                frames = [f.rgb for f in open_source(path, limit=args.frames)]
                clips.append((frames, None))
            else:
                seq = load_labelled_sequence(path, args.backend, "cpu")
                clips.append((seq.frames[: args.frames], seq.labels[: args.frames]))
        segment = None if args.no_miou else pipeline_segmenter(args.backend, args.scale)
        if any(b < 1 for b in args.frame_budget):
            parser.error("--frame-budget: budgets must be >= 1 byte")
        configs = (
            budget_configs(args.frame_budget) if args.frame_budget else all_configs(args.presets)
        )
        known = {c.name for c in configs}
        unknown = [n for n in args.sr if n not in known]
        if unknown:
            parser.error(f"--sr: unknown configuration(s) {unknown}; e.g. {configs[0].name!r}")
        rows = run_bench(
            clips,
            configs,
            scale=args.scale,
            score_every=args.score_every,
            segment=segment,
            sr_for=args.sr,
        )
    except (DataError, CodecError, ValueError, OSError) as exc:
        print(f"cloudseg bench codec: error: {exc}", file=sys.stderr)
        return 2
    print(format_markdown(rows))
    if args.json:
        print(json.dumps({"rows": [asdict(r) for r in rows]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
