"""``cloudseg eval``: the paper's Table 1 (PSNR, SSIM, mIoU), through the real stream, with kbit/s.

Rows (:mod:`cloudseg.eval.rows`): ``bilinear`` (LR upsampled bilinearly, the SR bypass),
``lr_seg`` (the LR frame segmented by a segmenter trained at that size), ``sr`` (the official
CARN-M or ``--sr-weights``; ``--sr-row NAME=PATH`` adds rows of other SR checkpoints, ``sr_ft``
``--sr-ft-weights``), the learned routes, ``default`` (the cloud's default route), ``hr`` (the
original full-resolution frame) and ``hr_stream`` (the same through the encoder at scale 1). The
options fill an :class:`~cloudseg.eval.config.EvalConfig`; :func:`~cloudseg.eval.run.evaluate`
runs it (:mod:`cloudseg.eval.run` says how frames are streamed and scored).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path

from cloudseg.devices import device_arg
from cloudseg.eval.config import CODECS, EvalConfig
from cloudseg.eval.report import format_table
from cloudseg.eval.rows import LEARNED_ROWS
from cloudseg.eval.run import EVAL_ERRORS, evaluate
from cloudseg.graph import DOWNSAMPLE_KERNELS
from cloudseg.media.stream import default_compressor_settings
from cloudseg.models.weights import ENV_WEIGHTS, WeightsError
from cloudseg.restore.backends import BACKENDS, DTYPES
from cloudseg.restore.pipeline import SEG_SIZES, SR_ROUTES

__all__ = ["PROG", "build_parser", "config_from_args", "main", "parse_config"]

PROG = "cloudseg eval"


def _names(text: str) -> tuple[str, ...]:
    """``a, b`` -> ("a", "b"); empty -> ()."""
    return tuple(name.strip() for name in text.split(",")) if text else ()


def _sr_row(text: str) -> tuple[str, Path]:
    name, sep, path = text.partition("=")
    if not sep or not name.isidentifier() or not path:
        raise argparse.ArgumentTypeError(
            f"expected NAME=PATH (e.g. sr_base=runs/sr.pth), got {text!r}"
        )
    return name, Path(path)


def build_parser() -> argparse.ArgumentParser:
    compressor = default_compressor_settings()
    defaults = EvalConfig()
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
    parser.add_argument(
        "--split",
        default=defaults.split,
        help=f"Cityscapes split folder (default {defaults.split})",
    )
    parser.add_argument(
        "--backend",
        default=defaults.backend,
        choices=sorted(BACKENDS),
        help=f"segmentation backend (default {defaults.backend})",
    )
    parser.add_argument(
        "--seg-model",
        help=f"registry name of the segmenter (default per backend: "
        f"{', '.join(f'{k}={v}' for k, v in BACKENDS.items())})",
    )
    parser.add_argument("--seg-weights", help="segmenter state_dict (default: registry lookup)")
    parser.add_argument(
        "--seg-size",
        default=defaults.seg_size,
        choices=SEG_SIZES,
        help="segment at the resolution the weights were trained for (default, as the cloud "
        "does) or at the camera size (the paper)",
    )
    parser.add_argument(
        "--sr-route",
        default=defaults.sr_route,
        choices=SR_ROUTES,
        help="SR straight to the segmentation size (default) or to the camera size and down",
    )
    parser.add_argument(
        "--sr-model", default=defaults.sr_model, help=f"SR model name (default {defaults.sr_model})"
    )
    parser.add_argument(
        "--sr-weights", help="SR state_dict for the 'sr' row (default: the official CARN-M)"
    )
    parser.add_argument("--sr-ft-weights", help="fine-tuned SR checkpoint: adds the 'sr_ft' row")
    parser.add_argument(
        "--sr-row",
        dest="sr_rows",
        action="append",
        type=_sr_row,
        default=[],
        metavar="NAME=PATH",
        help="add a row for another SR checkpoint (repeatable), e.g. sr_base=runs/sr.pth",
    )
    parser.add_argument(
        "--no-lr-seg",
        dest="lr_seg_row",
        action="store_false",
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
        default=defaults.scale,
        help=f"downsampling factor (default: the compressor's, {compressor.scale})",
    )
    parser.add_argument(
        "--codec",
        default=defaults.codec,
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
        dest="low_res_list",
        metavar="LIST",
        default=defaults.low_res_list,
        help="with a low-resolution root (cityscapes_lr layout): its list of frames to score "
        "(default val.txt); each frame is coded at scale 1 as a still, no hr rows",
    )
    parser.add_argument(
        "--no-routes",
        dest="route_rows",
        action="store_false",
        help="leave out the learned routes' rows (" + ", ".join(LEARNED_ROWS) + ")",
    )
    parser.add_argument(
        "--no-default",
        dest="default_row",
        action="store_false",
        help="leave out the 'default' row (the cloud's default route, through CloudService)",
    )
    parser.add_argument(
        "--rows",
        dest="only_rows",
        metavar="ROWS",
        type=_names,
        default=(),
        help="only these rows, comma-separated (hr is always kept: the reference)",
    )
    parser.add_argument(
        "--limit", type=int, default=defaults.limit, help="first N frames only (0 = all)"
    )
    parser.add_argument(
        "--device",
        type=device_arg,
        default=None,
        help="cpu, cuda or cuda:N; default: cuda when available, else cpu",
    )
    parser.add_argument("--dtype", default=defaults.dtype, choices=sorted(DTYPES), help="CUDA only")
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
    parser.add_argument(
        "--no-progress",
        dest="progress",
        action="store_false",
        help="no progress bar on stderr",
    )
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
        default=defaults.figure_crop,
        metavar="X,Y,W,H",
        help="the crop of --figure in camera pixels (default 1024,384,512,256)",
    )
    parser.add_argument(
        "--figure-rows",
        type=_names,
        default=(),
        help="comma-separated rows of --figure (default: all but hr_stream)",
    )
    return parser


def _box(text: str) -> tuple[int, int, int, int]:
    try:
        x, y, w, h = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected X,Y,WIDTH,HEIGHT, got {text!r}") from None
    if min(x, y) < 0 or min(w, h) < 8:
        raise argparse.ArgumentTypeError(f"crop {text} must be inside the frame, at least 8x8")
    return x, y, w, h


def config_from_args(args: argparse.Namespace) -> EvalConfig:
    """The :class:`EvalConfig` of parsed options (every option but the output's)."""
    values = {f.name: getattr(args, f.name) for f in fields(EvalConfig)}
    values["data"] = tuple(values["data"])
    values["sr_rows"] = tuple(values["sr_rows"])
    return EvalConfig(**values)


def parse_config(argv: Sequence[str]) -> EvalConfig:
    """``cloudseg eval``'s options -> :class:`EvalConfig` (SystemExit on a usage error)."""
    return config_from_args(build_parser().parse_args(list(argv)))


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
    config = config_from_args(args)
    try:
        report = evaluate(config)
    except EVAL_ERRORS as exc:
        hint = ""
        if isinstance(exc, WeightsError) and not config.allow_untrained:
            hint = " (or --allow-untrained for random weights, timing only)"
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"{PROG}: error: {message}{hint}", file=sys.stderr)
        return 2
    print(format_table(report, per_class=args.per_class))
    if args.json:
        print(json.dumps(report, allow_nan=False))
    return 0
