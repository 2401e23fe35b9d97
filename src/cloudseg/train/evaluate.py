"""``cloudseg eval``: the paper's Table 1 (PSNR, SSIM, mIoU), through the real stream, with kbit/s.

Every frame goes through what the cloud really receives (:class:`~cloudseg.media.stream.
StreamRoundTrip`): the compressor's downsampling and encoder with the compressor's own default
settings (preset, CRF or bitrate, GOP; ``--crf``/``--bitrate`` override them), then the cloud's
decoder. A sequence (frame folder, video, rosbag2) is one stream, in order (IDR and P-frames);
the unrelated stills of a Cityscapes split are each a stream of their own (an IDR).
``--codec none`` gives the paper's setting (no codec). Rows:

* ``bilinear``: LR upsampled bilinearly (the SR bypass);
* ``lr_seg``: the LR frame segmented directly by a segmenter trained at that size (ESPNetv2's
  512x256 weights), no restoration;
* ``sr``: the official CARN-M (or ``--sr-weights``); ``--sr-row NAME=PATH`` adds rows of
  other SR checkpoints; ``sr_ft``: ``--sr-ft-weights``;
* ``hr``: the original full-resolution frame (uncompressed); ``hr_stream``: the full-resolution
  frame through the same encoder (scale 1), what streaming it whole would cost.

The segmenter runs at the resolution its weights were trained for (``--seg-size trained``, the
serving default; ``full`` segments at the camera size as the paper does); labels are scaled
back to the camera size (nearest neighbour) and scored against the fine ground truth of a
Cityscapes folder, or, for a sequence without labels, against the ``hr`` row's labels
(``reference: hr``). PSNR and SSIM compare the restored image with the original
area-downsampled to the size that was segmented (mean over frames); mIoU comes from one
confusion matrix over all frames (cityscapesScripts conventions, :mod:`cloudseg.metrics`).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
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
from cloudseg.data.frames import DataError
from cloudseg.data.sources import open_source
from cloudseg.graph import DOWNSAMPLE_KERNELS
from cloudseg.media.codecs import CodecError
from cloudseg.media.quality import psnr, ssim
from cloudseg.media.resize import downsample, resize_labels
from cloudseg.media.stream import StreamRoundTrip, default_compressor_settings
from cloudseg.metrics import ConfusionMatrix, MetricsError
from cloudseg.models.registry import UnknownModelError, build_model
from cloudseg.models.weights import ENV_WEIGHTS, WeightsError
from cloudseg.restore.pipeline import (
    BACKENDS,
    DTYPES,
    SEG_SIZES,
    SR_ROUTES,
    PipelineError,
    RestorationPipeline,
)
from cloudseg.routes import DEFAULT_ROUTE, ROUTES, SEG_LR, route_pipeline
from cloudseg.train.stream_data import is_low_res_root, list_low_res_frames

__all__ = ["EvalError", "build_parser", "evaluate", "format_table", "main", "stream_settings"]

log = logging.getLogger(__name__)

PROG = "cloudseg eval"
CODECS = ("h264", "jpeg", "png", "none")
LR_SEGMENTERS = {"espnetv2": "espnetv2_s2_city_512x256"}
"""Backend -> a segmenter trained at the LR size of a x4 stream (the ``lr_seg`` row)."""
UNTRAINED_LABEL = "UNTRAINED"
LR_ROWS = frozenset(name for name, route in ROUTES.items() if route.segmenter == SEG_LR)
"""Rows that segment the low-resolution frame itself: they restore nothing (no PSNR)."""
LEARNED_ROWS = tuple(name for name, route in ROUTES.items() if route.learned)
"""The learned routes' rows (cloudseg.routes), each with the project's committed weights."""


class EvalError(Exception):
    """Bad evaluation input (options, data); main() prints it as one line and returns 2."""


@dataclass
class _Row:
    """Accumulators of one table row."""

    name: str
    mode: str
    stream: str = "lr"  # which stream feeds it: "lr", "hr" (original), "hr_stream"
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

    def summary_with(self, kbps: float | None) -> dict[str, Any]:
        return {**self.summary(), "kbps": _num(kbps) if kbps is not None else None}


def _num(value: float) -> float | None:
    """JSON-safe float: NaN and inf become None."""
    return None if value is None or not math.isfinite(value) else float(value)


def _sr_row(text: str) -> tuple[str, Path]:
    name, sep, path = text.partition("=")
    if not sep or not name.isidentifier() or not path:
        raise argparse.ArgumentTypeError(
            f"expected NAME=PATH (e.g. sr_base=runs/sr.pth), got {text!r}"
        )
    return name, Path(path)


def build_parser() -> argparse.ArgumentParser:
    compressor = default_compressor_settings()
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="PSNR, SSIM, mIoU and kbit/s of LR-bilinear, LR segmented directly, SR "
        "(CARN-M), fine-tuned SR and full resolution (the CloudSeg paper's Table 1), through "
        "the real stream the vehicle sends (the compressor's downsampling and H.264 encoder), "
        "on a Cityscapes-layout folder (against its fine labels) or a sequence (against the "
        "segmenter's labels on the original frames).",
        epilog="Example: cloudseg eval --data ../shared/data/cityscapes --split val --json; "
        "cloudseg eval --data ../shared/data/sequences/aachen_seq0000 --codec h264",
    )
    parser.add_argument(
        "--data",
        required=True,
        nargs="+",
        type=Path,
        help="a Cityscapes root (leftImg8bit/, gtFine/), or sequences: frame folders, videos, "
        "rosbag2 (each one stream, in order)",
    )
    parser.add_argument(
        "--gt-root",
        type=Path,
        help="with sequences: a Cityscapes root whose fine labels score the frames they exist "
        "for (by Cityscapes frame id), in stream order (P-frames included)",
    )
    parser.add_argument("--split", default="val", help="Cityscapes split folder (default val)")
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
    parser.add_argument(
        "--seg-size",
        default="trained",
        choices=SEG_SIZES,
        help="segment at the resolution the weights were trained for (default, as the cloud "
        "does) or at the camera size (the paper)",
    )
    parser.add_argument(
        "--sr-route",
        default="direct",
        choices=SR_ROUTES,
        help="SR straight to the segmentation size (default) or to the camera size and down",
    )
    parser.add_argument("--sr-model", default="carn_m", help="SR model name (default carn_m)")
    parser.add_argument(
        "--sr-weights", help="SR state_dict for the 'sr' row (default: the official CARN-M)"
    )
    parser.add_argument("--sr-ft-weights", help="fine-tuned SR checkpoint: adds the 'sr_ft' row")
    parser.add_argument(
        "--sr-row",
        action="append",
        type=_sr_row,
        default=[],
        metavar="NAME=PATH",
        help="add a row for another SR checkpoint (repeatable), e.g. sr_base=runs/sr.pth",
    )
    parser.add_argument(
        "--no-lr-seg",
        action="store_true",
        help="leave out the 'lr_seg' row (LR segmented directly)",
    )
    parser.add_argument(
        "--weights-dir",
        type=Path,
        help=f"folder searched first for default weights (sets ${ENV_WEIGHTS}); without it, "
        "the project's weights and ../shared/data/weights beside the checkout are found",
    )
    parser.add_argument(
        "--scale",
        type=int,
        default=compressor.scale,
        help=f"downsampling factor (default: the compressor's, {compressor.scale})",
    )
    parser.add_argument(
        "--codec",
        default=compressor.codec,
        choices=CODECS,
        help=f"the stream's codec (default: the compressor's, {compressor.codec}); none = no "
        "codec (the paper's Table 1)",
    )
    parser.add_argument(
        "--crf",
        type=int,
        help=f"H.264 CRF (default: the compressor's, {compressor.crf})",
    )
    parser.add_argument(
        "--bitrate",
        type=int,
        help="H.264 target kbit/s instead of a CRF (e.g. 750, the paper's)",
    )
    parser.add_argument(
        "--preset", help=f"libx264 preset (default: the compressor's, {compressor.preset})"
    )
    parser.add_argument("--gop", type=int, help=f"H.264 GOP (default: {compressor.gop})")
    parser.add_argument(
        "--jpeg-quality", type=int, help=f"JPEG quality 1..100 (default {compressor.quality})"
    )
    parser.add_argument(
        "--kernel",
        choices=DOWNSAMPLE_KERNELS,
        help=f"the compressor's downsampling kernel (default: the compressor's, "
        f"{compressor.kernel})",
    )
    parser.add_argument(
        "--list",
        default="val.txt",
        help="with a low-resolution root (cityscapes_lr layout): its list of frames to score "
        "(default val.txt); each frame is coded at scale 1 as a still, no hr rows",
    )
    parser.add_argument(
        "--no-routes",
        action="store_true",
        help="leave out the learned routes' rows (" + ", ".join(LEARNED_ROWS) + ")",
    )
    parser.add_argument(
        "--no-default",
        action="store_true",
        help="leave out the 'default' row (the cloud's default route, through CloudService)",
    )
    parser.add_argument(
        "--rows", help="only these rows, comma-separated (hr is always kept: the reference)"
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
    parser.add_argument(
        "--figure", type=Path, metavar="PNG", help="a figure of crops of one frame, every row"
    )
    parser.add_argument("--figure-frame", help="the frame of --figure (default: the first)")
    parser.add_argument(
        "--figure-crop",
        type=_box,
        default=(1024, 384, 512, 256),
        metavar="X,Y,W,H",
        help="the crop of --figure in camera pixels (default 1024,384,512,256)",
    )
    parser.add_argument(
        "--figure-rows", help="comma-separated rows of --figure (default: all but hr_stream)"
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


def _box(text: str) -> tuple[int, int, int, int]:
    try:
        x, y, w, h = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected X,Y,WIDTH,HEIGHT, got {text!r}") from None
    if min(x, y) < 0 or min(w, h) < 8:
        raise argparse.ArgumentTypeError(f"crop {text} must be inside the frame, at least 8x8")
    return x, y, w, h


def save_figure(
    path: Path,
    reference: np.ndarray,
    truth: np.ndarray,
    rows: list[tuple[str, np.ndarray, np.ndarray]],
    box: tuple[int, int, int, int],
) -> None:
    """Crops of one frame: (image | labels) per row beside the original and ground truth.
    ``box`` is (x, y, width, height) in camera pixels; images segmented at a reduced size are
    cropped at their own scale and shown enlarged (nearest neighbour: pixels as they are)."""
    x, y, w, h = box
    height, width = truth.shape[:2]
    if x + w > width or y + h > height:
        raise EvalError(f"--figure-crop {x},{y},{w},{h} is outside the {width}x{height} frame")

    def crop(image: np.ndarray) -> np.ndarray:
        f = width / image.shape[1]
        part = image[round(y / f) : round((y + h) / f), round(x / f) : round((x + w) / f)]
        return cv2.resize(part, (w, h), interpolation=cv2.INTER_NEAREST)

    def titled(image: np.ndarray, title: str) -> np.ndarray:
        tile = np.ascontiguousarray(image)
        for color, thickness in (((0, 0, 0), 4), ((255, 255, 255), 1)):
            cv2.putText(
                tile, title, (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, color, thickness, cv2.LINE_AA
            )
        return tile

    lines = [(titled(crop(reference), "original"), titled(colorize(crop(truth)), "ground truth"))]
    for name, restored, labels in rows:
        lines.append(
            (titled(crop(restored), name), titled(colorize(crop(labels)), f"{name} labels"))
        )
    gap = np.full((h, 4, 3), 255, np.uint8)
    figure = np.concatenate([np.concatenate([a, gap, b], axis=1) for a, b in lines], axis=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(figure, cv2.COLOR_RGB2BGR))


def _check_args(args: argparse.Namespace) -> None:
    if args.scale < 1:
        raise EvalError(f"--scale must be >= 1, got {args.scale}")
    if args.limit < 0:
        raise EvalError(f"--limit must be >= 0, got {args.limit}")
    if args.crf is not None and not 0 <= args.crf <= 51:
        raise EvalError(f"--crf must be 0..51, got {args.crf}")
    if args.bitrate is not None and args.bitrate <= 0:
        raise EvalError(f"--bitrate must be > 0 kbit/s, got {args.bitrate}")
    if args.jpeg_quality is not None and not 1 <= args.jpeg_quality <= 100:
        raise EvalError(f"--jpeg-quality must be 1..100, got {args.jpeg_quality}")
    for path in args.data:
        if not path.exists():
            raise EvalError(f"data {path} does not exist")
    if args.gt_root is not None and not (args.gt_root / "gtFine").is_dir():
        raise EvalError(f"--gt-root {args.gt_root} has no gtFine folder")
    paths = [args.sr_weights, args.sr_ft_weights, args.seg_weights]
    for option, value in zip(("sr_weights", "sr_ft_weights", "seg_weights"), paths, strict=True):
        if value is not None and not Path(value).expanduser().is_file():
            raise EvalError(f"--{option.replace('_', '-')}: no file {value}")
    for name, path in args.sr_row:
        if not path.expanduser().is_file():
            raise EvalError(f"--sr-row {name}: no file {path}")
    if args.weights_dir is not None and not args.weights_dir.is_dir():
        raise EvalError(f"--weights-dir: {args.weights_dir} is not a folder")


def stream_settings(args: argparse.Namespace, scale: int | None = None):
    """The compressor's default settings with the options given (one source of truth)."""
    changes: dict[str, Any] = {"scale": args.scale if scale is None else scale}
    if args.codec != "none":
        changes["codec"] = args.codec
    if args.crf is not None:
        changes["crf"] = args.crf
    if args.bitrate is not None:
        changes["bitrate_kbps"] = args.bitrate
    if args.preset is not None:
        changes["preset"] = args.preset
    if args.gop is not None:
        changes["gop"] = args.gop
    if args.jpeg_quality is not None:
        changes["quality"] = args.jpeg_quality
    if getattr(args, "kernel", None) is not None:
        changes["kernel"] = args.kernel
    return default_compressor_settings(**changes)


class _Stream:
    """The LR frames the cloud receives (or, with codec none, plain area downsampling)."""

    def __init__(self, args: argparse.Namespace, scale: int) -> None:
        self.codec = args.codec
        self.scale = scale
        self.degradation = getattr(args, "kernel", None) or "area"
        self.roundtrip = (
            None if args.codec == "none" else StreamRoundTrip(stream_settings(args, scale))
        )

    def restart(self) -> None:
        if self.roundtrip is not None:
            self.roundtrip.restart()

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        if self.roundtrip is None:
            return downsample(rgb, self.scale, self.degradation)
        return self.roundtrip(rgb)

    def kbps(self) -> float | None:
        return None if self.roundtrip is None else self.roundtrip.kbps()

    def bytes_per_frame(self) -> float | None:
        if self.roundtrip is None or not self.roundtrip.payload_bytes:
            return None
        return statistics.fmean(self.roundtrip.payload_bytes)

    def describe(self) -> str:
        if self.roundtrip is None:
            return f"none (x{self.scale} area downsampling only)"
        return self.roundtrip.describe()


@dataclass
class _EvalFrame:
    """One frame to stream: pixels (or their file), its label file, its stream, and whether
    it is scored (every frame of a stream is encoded; with --gt-root only labelled ones count)."""

    name: str
    image: Any  # np.ndarray or a Path
    label: Path | None
    stream: str
    scored: bool = True


_CITYSCAPES_ID = re.compile(r"^(?P<city>[a-z]+)_(?P<seq>\d{6})_(?P<frame>\d{6})", re.IGNORECASE)


def _gt_label(gt_root: Path, city: str, seq: str, frame: int) -> Path | None:
    """The fine label of a Cityscapes frame id under any split of ``gt_root``/gtFine, if any."""
    for suffix in ("_gtFine_labelTrainIds.png", "_gtFine_labelIds.png"):
        hits = sorted((gt_root / "gtFine").glob(f"*/{city}/{city}_{seq}_{frame:06d}{suffix}"))
        if hits:
            return hits[0]
    return None


def _sequence_frames(path: Path, args: argparse.Namespace) -> list[_EvalFrame]:
    """A sequence in order (one stream). With --gt-root, frames whose Cityscapes id (from the
    file names of a frame folder, or a video named <city>_<seq>_<first frame>) has a fine label
    are scored against it and the others only pass through the stream."""
    from cloudseg.data.folder import list_frame_files

    names: list[str] | None = None
    if path.is_dir():
        names = [f.name for f in list_frame_files(path)]
    frames = []
    for frame in open_source(path, limit=args.limit or None):
        label = None
        if args.gt_root is not None:
            match = _CITYSCAPES_ID.match(names[frame.index] if names else path.stem)
            if match:
                number = int(match["frame"]) + (0 if names else frame.index)
                label = _gt_label(args.gt_root, match["city"].lower(), match["seq"], number)
        name = f"{path.stem}_{frame.index:06d}"
        scored = args.gt_root is None or label is not None
        frames.append(_EvalFrame(name, frame.rgb, label, str(path), scored))
    return frames


def _frames(args: argparse.Namespace) -> tuple[str, list[_EvalFrame]]:
    """("gt", the labelled stills of a Cityscapes root, each a stream of its own), or the
    frames of the sequences (each one stream, in order): scored against fine labels with
    --gt-root ("gt"), else against the segmenter's labels on the original frames ("hr")."""
    if any(is_low_res_root(p) for p in args.data):
        if len(args.data) > 1:
            raise EvalError("give one low-resolution root on its own")
        listed = list_low_res_frames(args.data[0], args.list)[: args.limit or None]
        return "gt", [_EvalFrame(f.id, f.image_path, f.label_path, f.id) for f in listed]
    roots = [p for p in args.data if (p / "leftImg8bit").is_dir()]
    if roots:
        if len(args.data) > 1:
            raise EvalError("give one Cityscapes root, or any number of sequences")
        pairs = list_pairs(roots[0], args.split)[: args.limit or None]
        return "gt", [_EvalFrame(p.name, p.image_path, p.label_path, p.name) for p in pairs]
    frames = [f for path in args.data for f in _sequence_frames(path, args)]
    if args.gt_root is not None:
        if not any(f.scored for f in frames):
            raise EvalError(f"--gt-root {args.gt_root}: no frame of the input has a fine label")
        return "gt", frames
    return "hr", frames


def _build_rows(args: argparse.Namespace) -> tuple[dict[str, _Row], dict[str, Any]]:
    """The pipelines of every row (sharing one segmenter) and their rows."""
    options = {
        "device": args.device,
        "dtype": args.dtype,
        "scale": args.scale,
        "return_restored": True,
        "seg_size": args.seg_size,
        "sr_route": args.sr_route,
    }
    pipeline = RestorationPipeline(
        args.sr_model,
        args.seg_model or args.backend,
        sr_weights=args.sr_weights
        or ("div2k" if args.sr_model in ("carn_m", "carn") else "default"),
        seg_weights=args.seg_weights or "default",
        allow_untrained=args.allow_untrained,
        **options,
    )
    backend = args.seg_model or args.backend
    pipelines: dict[str, Any] = {"bilinear": pipeline}
    rows = {"bilinear": _Row("bilinear", "bilinear")}
    lr_seg = LR_SEGMENTERS.get(args.backend) if not (args.no_lr_seg or args.seg_model) else None
    if lr_seg is not None and args.scale == 4:
        try:
            lr_pipeline = RestorationPipeline(None, lr_seg, **options)
        except WeightsError as exc:
            log.warning("no 'lr_seg' row: %s", str(exc).splitlines()[0])
        else:
            pipelines["lr_seg"] = lr_pipeline
            rows["lr_seg"] = _Row("lr_seg", "bilinear")
    pipelines["sr"] = pipeline
    rows["sr"] = _Row("sr", "sr")
    extra = [*args.sr_row]
    if args.sr_ft_weights:
        extra.append(("sr_ft", Path(args.sr_ft_weights)))
    for name, path in extra:
        if name in rows:
            raise EvalError(f"row name {name!r} is taken")
        model = build_model(args.sr_model, path.expanduser())
        pipelines[name] = RestorationPipeline.from_modules(
            model, pipeline.segmenter, backend, **options
        )
        pipelines[name].sr_name = f"{args.sr_model} ({path.name})"
        rows[name] = _Row(name, "sr")
    if not (args.no_routes or args.seg_model or args.backend != "espnetv2"):
        for name in LEARNED_ROWS:
            if name in rows:  # sr_ft from --sr-ft-weights
                continue
            route = ROUTES[name]
            try:
                pipelines[name] = route_pipeline(route, **options)
            except WeightsError as exc:
                log.warning("no %r row: %s", name, str(exc).splitlines()[0])
                continue
            rows[name] = _Row(name, route.mode)
    if not (args.no_default or args.seg_model or args.backend != "espnetv2") and args.scale == 4:
        pipelines["default"] = _CloudDefault(args.device, args.scale)
        rows["default"] = _Row("default", pipelines["default"].mode)
    if args.low_res:
        return rows, pipelines
    pipelines["hr"] = pipeline
    rows["hr"] = _Row("hr", "full", stream="hr")
    if args.codec != "none":
        pipelines["hr_stream"] = RestorationPipeline.from_modules(
            None, pipeline.segmenter, backend, **{**options, "scale": 1}
        )
        rows["hr_stream"] = _Row("hr_stream", "full", stream="hr_stream")
    return rows, pipelines


class _CloudDefault:
    """The ``default`` row: the cloud's default route through :class:`CloudService` built from
    the graph's defaults, as the cloud node builds it (restore as the sr node's ``restore``
    default says, then the segmentation node's pipeline)."""

    def __init__(self, device: str, scale: int) -> None:
        from cloudseg.cloud.service import CloudService
        from cloudseg.graph import SEGMENTATION, SR

        self.service = CloudService.from_params({**SEGMENTATION.defaults(), "device": device})
        self.sr_bypass = SR.defaults()["restore"] == "bilinear"
        self.mode = "bilinear" if self.sr_bypass else "sr"
        self.scale = scale
        self.untrained = self.service.first.untrained

    def process(self, frames: np.ndarray, mode: str):
        pyramid = self.service.restore(frames[0], self.scale, self.sr_bypass)
        return self.service.pipeline(self.scale).segment(pyramid, return_restored=True)


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    """Run the evaluation described by parsed ``args``; returns the JSON-ready report."""
    _check_args(args)
    if args.weights_dir is not None:
        os.environ[ENV_WEIGHTS] = str(args.weights_dir)
    if args.device is None:
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    args.low_res = any(is_low_res_root(p) for p in args.data)
    reference, frames = _frames(args)
    rows, pipelines = _build_rows(args)
    if args.rows:  # hr stays: the reference of a sequence and the top of the gap
        wanted = {r.strip() for r in args.rows.split(",")} | {"hr"}
        unknown = sorted(wanted - set(rows) - {"hr"})
        if unknown:
            raise EvalError(f"--rows: no row {', '.join(unknown)} (rows: {', '.join(rows)})")
        rows = {name: row for name, row in rows.items() if name in wanted}
    main_pipeline = pipelines["sr"]
    lr_stream = _Stream(args, 1 if args.low_res else args.scale)
    hr_stream = _Stream(args, 1) if "hr_stream" in rows else None
    figure_done = False
    figure_frame = args.figure_frame or next((f.name for f in frames if f.scored), None)
    start = time.perf_counter()
    bar = tqdm(frames, desc="eval", unit="frame", file=sys.stderr, disable=args.no_progress)
    current_stream = None
    for frame in bar:
        name = frame.name
        if frame.stream != current_stream:  # a new stream starts with an IDR
            current_stream = frame.stream
            lr_stream.restart()
            if hr_stream is not None:
                hr_stream.restart()
        rgb = load_rgb(frame.image) if isinstance(frame.image, Path) else frame.image
        gt = None if frame.label is None else load_label_train_ids(frame.label)
        if args.low_res:  # the image is the stream's low resolution, its label the camera's
            if gt is None or gt.shape != (rgb.shape[0] * args.scale, rgb.shape[1] * args.scale):
                raise EvalError(f"{name}: the label is not {args.scale}x the image")
        elif gt is not None and gt.shape != rgb.shape[:2]:
            raise EvalError(f"{name}: label {gt.shape} and image {rgb.shape[:2]} differ")
        lr = lr_stream(rgb)
        hr_coded = None  # the full-resolution stream is encoded frame by frame too
        if hr_stream is not None:
            hr_coded = hr_stream(rgb[: lr.shape[0] * args.scale, : lr.shape[1] * args.scale])
        if not frame.scored:
            continue
        height, width = lr.shape[0] * args.scale, lr.shape[1] * args.scale
        original = None if args.low_res else rgb[:height, :width]
        inputs = {"lr": lr, "hr": original}
        if hr_coded is not None:
            inputs["hr_stream"] = hr_coded
        results = {}
        for row_name, row in rows.items():
            results[row_name] = pipelines[row_name].process(inputs[row.stream][None], row.mode)
        if gt is None:  # a sequence: the reference is the segmenter's labels on the original
            gt = resize_labels(results["hr"].labels[0].cpu().numpy(), original.shape[1::-1])
        target = gt[:height, :width]
        panel_rows = []
        want_figure = args.figure is not None and figure_frame == name and original is not None
        for row_name, row in rows.items():
            result = results[row_name]
            labels = resize_labels(result.labels[0].cpu().numpy(), target.shape[::-1])
            row.cm.update(labels, target)
            row.add_timings(result.timings_ms)
            restored = result.restored[0].cpu().numpy()
            if original is not None and row.stream != "hr" and row_name not in LR_ROWS:
                k = result.reduced_by
                ref = downsample(original, k) if k > 1 else original
                ref = ref[: restored.shape[0], : restored.shape[1]]
                row.psnr.append(psnr(restored, ref))
                row.ssim.append(ssim(restored, ref))
            if args.save_panels or want_figure:
                panel_rows.append((row_name, restored, labels))
        if args.save_panels and original is not None:
            save_panel(args.save_panels / f"{name}.png", original, target, panel_rows)
        if want_figure:
            chosen = (args.figure_rows or "").split(",") if args.figure_rows else None
            picked = [r for r in panel_rows if (r[0] in chosen if chosen else r[0] != "hr_stream")]
            save_figure(args.figure, original, target, picked, args.figure_crop)
            figure_done = True
    seconds = time.perf_counter() - start
    if args.figure is not None and not figure_done:
        raise EvalError(f"--figure-frame {args.figure_frame}: no such frame in {args.data}")

    kbps = {"lr": lr_stream.kbps(), "hr": None}
    if hr_stream is not None:
        kbps["hr_stream"] = hr_stream.kbps()
    untrained = list(main_pipeline.untrained)
    report: dict[str, Any] = {
        "rows": {name: row.summary_with(kbps[row.stream]) for name, row in rows.items()},
        "per_class": {
            name: {
                cls: _num(v) for cls, v in zip(TRAIN_ID_NAMES, row.cm.iou().tolist(), strict=True)
            }
            for name, row in rows.items()
        },
        "frames": sum(f.scored for f in frames),
        "frames_streamed": len(frames),
        "reference": reference,
        "split": args.split if any((p / "leftImg8bit").is_dir() for p in args.data) else None,
        "data": ", ".join(str(p) for p in args.data),
        "backend": main_pipeline.backend,
        "segmenter": main_pipeline.seg_name,
        "pipeline": main_pipeline.describe(),
        "seg_size": args.seg_size,
        "sr_route": args.sr_route,
        "sr_model": args.sr_model,
        "sr_weights": args.sr_weights or "official",
        "sr_ft_weights": args.sr_ft_weights,
        "sr_rows": {name: str(path) for name, path in args.sr_row},
        "scale": args.scale,
        "degradation": lr_stream.degradation if not args.low_res else "as the data was made",
        "default_route": f"{DEFAULT_ROUTE.name}: {DEFAULT_ROUTE.description}",
        "codec": lr_stream.describe(),
        "kbps": kbps["lr"],
        "lr_bytes_per_frame": lr_stream.bytes_per_frame(),
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

    against = "fine labels" if report["reference"] == "gt" else "the hr row's labels"
    lines = [
        f"{report['frames']} frames of {report['data']}"
        + (f" ({report['split']})" if report["split"] else "")
        + f", scored against {against}; stream: {report['codec']}{mark}",
        f"pipeline: {report['pipeline']}",
        f"{'row':<10} {'kbit/s':>8} {'PSNR dB':>8} {'SSIM':>7} {'mIoU':>7} {'mIoU-gt':>7} "
        f"{'pixAcc':>7} {'ms/frame':>9}",
    ]
    for name, values in report["rows"].items():
        total = report["timings_ms"][name].get("total")
        label = f"{name}{' ' + UNTRAINED_LABEL if mark else ''}"
        kbps = values["kbps"]
        kbps_text = ("raw" if name == "hr" else "-") if kbps is None else f"{kbps:8.0f}"
        lines.append(
            f"{label:<10} {kbps_text:>8} {cell(values['psnr'], '8.2f'):>8} "
            f"{cell(values['ssim'], '7.4f'):>7} "
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
