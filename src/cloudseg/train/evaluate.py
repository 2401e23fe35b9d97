"""``cloudseg eval``: the paper's Table 1 (PSNR, SSIM, mIoU) on a Cityscapes-layout folder.

Each labelled frame of the split is downsampled with the project's one downsampling function
(:func:`cloudseg.media.resize.downsample`, ``--degradation``), optionally sent through a codec
round trip (``--codec``), then restored and segmented on the full-size frame by the
:class:`~cloudseg.restore.pipeline.RestorationPipeline`. Rows:

* ``bilinear``: LR upsampled bilinearly (the SR bypass);
* ``sr``: the official CARN-M (or ``--sr-weights``);
* ``sr_ft``: a fine-tuned SR checkpoint (only with ``--sr-ft-weights``);
* ``hr``: the original full-resolution frame (no restoration: PSNR/SSIM not applicable).

PSNR and SSIM compare the restored RGB frame with the original (mean over frames); mIoU comes
from one confusion matrix accumulated over the whole split (cityscapesScripts conventions, see
:mod:`cloudseg.train.metrics`). H.264 round trip: every LR frame is encoded as its own IDR
(intra-only, a fresh GOP per frame), since the frames of a split are unrelated images.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from cloudseg.data.cityscapes import (
    TRAIN_ID_NAMES,
    colorize,
    list_pairs,
    load_label_train_ids,
    load_rgb,
)
from cloudseg.data.sources import DataError
from cloudseg.media.codecs import CodecError, H264Decoder, H264Encoder, decode_image, encode_image
from cloudseg.media.quality import psnr, ssim
from cloudseg.media.resize import METHODS, downsample
from cloudseg.models.registry import UnknownModelError, build_model
from cloudseg.models.weights import ENV_WEIGHTS, WeightsError
from cloudseg.restore.pipeline import BACKENDS, DTYPES, PipelineError, RestorationPipeline
from cloudseg.train.metrics import ConfusionMatrix, MetricsError

__all__ = ["EvalError", "build_parser", "evaluate", "format_table", "main"]

PROG = "cloudseg eval"
CODECS = ("none", "h264", "jpeg")
UNTRAINED_LABEL = "UNTRAINED"


class EvalError(Exception):
    """Bad evaluation input (options, data); main() prints it as one line and returns 2."""


@dataclass
class _Row:
    """Accumulators of one table row."""

    name: str
    mode: str
    cm: ConfusionMatrix = field(default_factory=ConfusionMatrix)
    psnr: list[float] = field(default_factory=list)
    ssim: list[float] = field(default_factory=list)
    timings: dict[str, list[float]] = field(default_factory=dict)

    def add_timings(self, timings: dict[str, float]) -> None:
        for key, value in timings.items():
            self.timings.setdefault(key, []).append(float(value))

    def summary(self) -> dict[str, Any]:
        return {
            "psnr": _num(statistics.fmean(self.psnr)) if self.psnr else None,
            "ssim": _num(statistics.fmean(self.ssim)) if self.ssim else None,
            "miou": _num(self.cm.miou()),
            "miou_gt_classes": _num(self.cm.miou(gt_classes_only=True)),
            "pixel_accuracy": _num(self.cm.pixel_accuracy()),
        }


def _num(value: float) -> float | None:
    """JSON-safe float: NaN and inf become None."""
    return None if value is None or not math.isfinite(value) else float(value)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="PSNR, SSIM and mIoU of LR-bilinear, SR (CARN-M), fine-tuned SR and full "
        "resolution on a Cityscapes-layout folder (the CloudSeg paper's Table 1). The "
        "segmenter always runs on the full-size frame.",
        epilog="Example: cloudseg eval --data ../shared/data/cityscapes --split val "
        "--weights-dir ../shared/data/weights --json",
    )
    parser.add_argument(
        "--data", required=True, type=Path, help="Cityscapes root (leftImg8bit/, gtFine/)"
    )
    parser.add_argument("--split", default="val", help="split folder (default val)")
    parser.add_argument(
        "--backend",
        default="espnetv2",
        choices=sorted(BACKENDS),
        help="segmentation backend (default espnetv2)",
    )
    parser.add_argument(
        "--seg-model",
        help=f"registry name of the segmenter (default per backend: "
        f"{', '.join(f'{k}={v}' for k, v in BACKENDS.items())})",
    )
    parser.add_argument("--seg-weights", help="segmenter state_dict (default: registry lookup)")
    parser.add_argument("--sr-model", default="carn_m", help="SR model name (default carn_m)")
    parser.add_argument("--sr-weights", help="SR state_dict for the 'sr' row (default: official)")
    parser.add_argument("--sr-ft-weights", help="fine-tuned SR state_dict: adds the 'sr_ft' row")
    parser.add_argument(
        "--weights-dir",
        type=Path,
        help=f"folder searched for default weights (sets ${ENV_WEIGHTS}; subfolders searched)",
    )
    parser.add_argument("--scale", type=int, default=4, help="downsampling factor (default 4)")
    parser.add_argument(
        "--degradation",
        default="area",
        choices=METHODS,
        help="downsampling method for LR (default area)",
    )
    parser.add_argument(
        "--codec",
        default="none",
        choices=CODECS,
        help="codec round trip of the LR frames (h264: each frame its own IDR; default none)",
    )
    parser.add_argument("--crf", type=float, default=23.0, help="H.264 CRF (default 23)")
    parser.add_argument(
        "--jpeg-quality", type=int, default=80, help="JPEG quality 1..100 (default 80)"
    )
    parser.add_argument("--limit", type=int, default=0, help="first N frames only (0 = all)")
    parser.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        default=None,
        help="cuda when available, else cpu",
    )
    parser.add_argument("--dtype", default="fp32", choices=sorted(DTYPES), help="CUDA only")
    parser.add_argument(
        "--allow-untrained",
        action="store_true",
        help="run a model without published weights (ICNet) with RANDOM weights; every "
        "output is then labelled UNTRAINED",
    )
    parser.add_argument("--per-class", action="store_true", help="also print per-class IoU")
    parser.add_argument(
        "--json", action="store_true", help="last stdout line: the results as one JSON object"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    parser.add_argument(
        "--save-panels",
        type=Path,
        metavar="DIR",
        help="write one PNG per frame: each row's restored image and labels beside the truth",
    )
    return parser


PANEL_WIDTH = 1024  # each tile of a panel, in pixels


def _tile(rgb: np.ndarray, title: str) -> np.ndarray:
    """Resize to the panel width and write the title in the top-left corner."""
    h, w = rgb.shape[:2]
    interpolation = cv2.INTER_AREA if w > PANEL_WIDTH else cv2.INTER_NEAREST
    tile = cv2.resize(rgb, (PANEL_WIDTH, h * PANEL_WIDTH // w), interpolation=interpolation)
    for color, thickness in (((0, 0, 0), 5), ((255, 255, 255), 2)):
        cv2.putText(
            tile, title, (12, 36), cv2.FONT_HERSHEY_SIMPLEX, 1.0, color, thickness, cv2.LINE_AA
        )
    return tile


def save_panel(
    path: Path,
    reference: np.ndarray,
    truth: np.ndarray,
    rows: list[tuple[str, np.ndarray, np.ndarray]],
) -> None:
    """A picture of one frame: (image | labels) per row, the original and ground truth first."""
    lines = [(_tile(reference, "original"), _tile(colorize(truth), "ground truth"))]
    for name, restored, labels in rows:
        lines.append((_tile(restored, name), _tile(colorize(labels), f"{name} labels")))
    panel = np.concatenate([np.concatenate(pair, axis=1) for pair in lines], axis=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(panel, cv2.COLOR_RGB2BGR))


def _check_args(args: argparse.Namespace) -> None:
    if args.scale < 1:
        raise EvalError(f"--scale must be >= 1, got {args.scale}")
    if args.limit < 0:
        raise EvalError(f"--limit must be >= 0, got {args.limit}")
    if not 0 <= args.crf <= 51:
        raise EvalError(f"--crf must be 0..51, got {args.crf:g}")
    if not 1 <= args.jpeg_quality <= 100:
        raise EvalError(f"--jpeg-quality must be 1..100, got {args.jpeg_quality}")
    if not args.data.is_dir():
        raise EvalError(f"data folder {args.data} does not exist")
    for option in ("sr_weights", "sr_ft_weights", "seg_weights"):
        value = getattr(args, option)
        if value is not None and not Path(value).expanduser().is_file():
            raise EvalError(f"--{option.replace('_', '-')}: no file {value}")
    if args.weights_dir is not None and not args.weights_dir.is_dir():
        raise EvalError(f"--weights-dir: {args.weights_dir} is not a folder")


class _Codec:
    """The LR codec round trip: none, H.264 (every frame an IDR) or JPEG."""

    def __init__(self, name: str, crf: float, quality: int) -> None:
        self.name = name
        self.crf = crf
        self.quality = quality
        self.bytes: list[int] = []
        self._encoder = H264Encoder(crf=crf) if name == "h264" else None
        self._decoder = H264Decoder() if name == "h264" else None
        self._seq = 0

    def describe(self) -> str:
        if self.name == "h264":
            return f"h264 crf {self.crf:g}, each LR frame its own IDR"
        if self.name == "jpeg":
            return f"jpeg q{self.quality}"
        return "none"

    def roundtrip(self, lr: np.ndarray) -> np.ndarray:
        if self.name == "none":
            return lr
        if self.name == "jpeg":
            payload = encode_image(lr, "jpeg", self.quality)
            self.bytes.append(len(payload))
            return decode_image(payload, "jpeg")
        assert self._encoder is not None and self._decoder is not None
        height, width = lr.shape[:2]
        if height % 2 or width % 2:
            raise EvalError(
                f"H.264 needs even LR sizes, got {width}x{height} (choose another --scale)"
            )
        self._encoder.request_keyframe()
        encoded = self._encoder.encode(lr)
        self.bytes.append(len(encoded.payload))
        decoded = self._decoder.decode(encoded.payload, self._seq, keyframe=encoded.keyframe)
        self._seq += 1
        if decoded is None:
            raise EvalError("the H.264 decoder returned no picture for an IDR frame")
        return decoded


def _build_rows(args: argparse.Namespace) -> tuple[dict[str, _Row], dict[str, Any]]:
    """The pipelines of every row (sharing one segmenter) and their rows."""
    pipeline = RestorationPipeline(
        args.sr_model,
        args.seg_model or args.backend,
        device=args.device,
        dtype=args.dtype,
        sr_weights=args.sr_weights or "default",
        seg_weights=args.seg_weights or "default",
        allow_untrained=args.allow_untrained,
        scale=args.scale,
        return_restored=True,
    )
    pipelines: dict[str, Any] = {"bilinear": pipeline, "sr": pipeline}
    rows = {"bilinear": _Row("bilinear", "bilinear"), "sr": _Row("sr", "sr")}
    if args.sr_ft_weights:
        ft_model = build_model(args.sr_model, Path(args.sr_ft_weights).expanduser())
        pipelines["sr_ft"] = RestorationPipeline.from_modules(
            ft_model,
            pipeline.segmenter,
            pipeline.backend,
            device=args.device,
            dtype=args.dtype,
            scale=args.scale,
            return_restored=True,
        )
        pipelines["sr_ft"].sr_name = f"{args.sr_model} (fine-tuned)"
        rows["sr_ft"] = _Row("sr_ft", "sr")
    pipelines["hr"] = pipeline
    rows["hr"] = _Row("hr", "full")
    return rows, pipelines


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    """Run the evaluation described by parsed ``args``; returns the JSON-ready report."""
    _check_args(args)
    if args.weights_dir is not None:
        os.environ[ENV_WEIGHTS] = str(args.weights_dir)
    if args.device is None:
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    pairs = list_pairs(args.data, args.split)
    if args.limit:
        pairs = pairs[: args.limit]
    rows, pipelines = _build_rows(args)
    main_pipeline = pipelines["sr"]
    codec = _Codec(args.codec, args.crf, args.jpeg_quality)
    start = time.perf_counter()
    bar = tqdm(pairs, desc="eval", unit="frame", file=sys.stderr, disable=args.no_progress)
    for pair in bar:
        rgb = load_rgb(pair.image_path)
        gt = load_label_train_ids(pair.label_path)
        if gt.shape != rgb.shape[:2]:
            raise EvalError(f"{pair.name}: label {gt.shape} and image {rgb.shape[:2]} differ")
        lr = codec.roundtrip(downsample(rgb, args.scale, args.degradation))
        height, width = lr.shape[0] * args.scale, lr.shape[1] * args.scale
        reference, target = rgb[:height, :width], gt[:height, :width]
        panel_rows = []
        for name, row in rows.items():
            full = row.mode == "full"
            result = pipelines[name].process((reference if full else lr)[None], row.mode)
            row.cm.update(result.labels[0], target)
            if args.save_panels:
                restored = reference if full else result.restored[0].cpu().numpy()
                panel_rows.append((name, restored, result.labels[0].cpu().numpy()))
            row.add_timings(result.timings_ms)
            if not full:
                restored = result.restored[0].cpu().numpy()
                row.psnr.append(psnr(restored, reference))
                row.ssim.append(ssim(restored, reference))
        if args.save_panels:
            save_panel(args.save_panels / f"{pair.name}.png", reference, target, panel_rows)
    seconds = time.perf_counter() - start

    untrained = list(main_pipeline.untrained)
    report: dict[str, Any] = {
        "rows": {name: row.summary() for name, row in rows.items()},
        "per_class": {
            name: {
                cls: _num(v) for cls, v in zip(TRAIN_ID_NAMES, row.cm.iou().tolist(), strict=True)
            }
            for name, row in rows.items()
        },
        "frames": len(pairs),
        "split": args.split,
        "data": str(args.data),
        "backend": main_pipeline.backend,
        "segmenter": main_pipeline.seg_name,
        "sr_model": args.sr_model,
        "sr_weights": args.sr_weights or "default",
        "sr_ft_weights": args.sr_ft_weights,
        "scale": args.scale,
        "degradation": args.degradation,
        "codec": codec.describe(),
        "lr_bytes_per_frame": statistics.fmean(codec.bytes) if codec.bytes else None,
        "device": str(main_pipeline.device),
        "dtype": args.dtype,
        "timings_ms": {
            name: {k: statistics.median(v) for k, v in row.timings.items()}
            for name, row in rows.items()
        },
        "seconds": seconds,
        "untrained": untrained,
        "label": UNTRAINED_LABEL if untrained else None,
    }
    return report


def format_table(report: dict[str, Any], per_class: bool = False) -> str:
    """The aligned text table of a report (plus per-class IoU when asked)."""
    mark = f" [{UNTRAINED_LABEL}: {', '.join(report['untrained'])}]" if report["untrained"] else ""

    def cell(value: float | None, fmt: str) -> str:
        return "n/a" if value is None else format(value, fmt)

    lines = [
        f"{report['frames']} frames of {report['split']}, {report['segmenter']} on the full "
        f"frame, x{report['scale']} {report['degradation']}, codec {report['codec']}, "
        f"{report['device']} {report['dtype']}{mark}",
        f"{'row':<10} {'PSNR dB':>8} {'SSIM':>7} {'mIoU':>7} {'mIoU-gt':>7} {'pixAcc':>7} "
        f"{'ms/frame':>9}",
    ]
    for name, values in report["rows"].items():
        total = report["timings_ms"][name].get("total")
        label = f"{name}{' ' + UNTRAINED_LABEL if mark else ''}"
        lines.append(
            f"{label:<10} {cell(values['psnr'], '8.2f'):>8} {cell(values['ssim'], '7.4f'):>7} "
            f"{cell(values['miou'], '7.3f'):>7} {cell(values['miou_gt_classes'], '7.3f'):>7} "
            f"{cell(values['pixel_accuracy'], '7.3f'):>7} "
            f"{cell(total, '9.0f'):>9}"
        )
    lines.append(
        "mIoU: all classes seen in ground truth or prediction (cityscapesScripts); "
        "mIoU-gt: classes present in the ground truth only"
    )
    if per_class:
        names = list(report["per_class"])
        lines.append("")
        lines.append(f"{'class IoU':<14}" + "".join(f"{n:>9}" for n in names))
        for cls in TRAIN_ID_NAMES:
            lines.append(
                f"{cls:<14}"
                + "".join(f"{cell(report['per_class'][n][cls], '9.3f'):>9}" for n in names)
            )
    if mark:
        lines.append(f"{UNTRAINED_LABEL}: random weights, the numbers above are meaningless")
    return "\n".join(lines)


_EXPECTED_ERRORS = (
    EvalError,
    DataError,
    WeightsError,
    UnknownModelError,
    PipelineError,
    CodecError,
    MetricsError,
    OSError,
    ValueError,
)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``cloudseg eval``; returns the exit code (2 on bad input)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--"]:  # `cloudseg <command> -- ARGS` passes the separator through
        argv = argv[1:]
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2, message already printed)
        return int(exc.code or 0)
    try:
        report = evaluate(args)
    except _EXPECTED_ERRORS as exc:
        hint = ""
        if isinstance(exc, WeightsError) and not args.allow_untrained:
            hint = " (or --allow-untrained for random weights, timing only)"
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"{PROG}: error: {message}{hint}", file=sys.stderr)
        return 2
    print(format_table(report, per_class=args.per_class))
    if args.json:
        print(json.dumps(report, allow_nan=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
