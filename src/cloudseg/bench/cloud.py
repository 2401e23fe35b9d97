"""``cloudseg bench cloud``: milliseconds per frame of the cloud side, per batch and dtype.

It times exactly what the cloud node runs: `LocalInference.infer` on a batch of host (numpy)
frames, with the node's flags: cuDNN tuning (`CUDNN_BENCHMARK`, ``--no-cudnn-benchmark``),
batch buckets on CUDA (a batch of 3 runs as 4; ``--no-bucketing``), dtype, channels-last, pinned
host-to-device copies, labels copied back. Stages, each the median over ``--iters`` timed
iterations after ``--warmup`` untimed ones:

* ``decode``: H.264 decode of one LR frame on the CPU (a 17-frame-GOP stream of a synthetic
  moving test pattern, libx264 ultrafast CRF 23), per frame (None without PyAV);
* ``sr``: CARN x``scale`` in one pass (LR -> MR and HR), per frame of the batch;
* ``segmentation``: the segmenter on the full-size frame (ICNet: the SR pyramid), per frame;
* ``total``: the node's whole call, host frames in, host labels out (host clock), per frame;
  ``bilinear``: the same with the SR bypass.

Precision is stated as run: an fp32 row on an Ampere or newer GPU is ``tf32`` while cuDNN's
(or matmul's) TF32 switch is on, as it is by default (``--no-tf32``: ``fp32 (tf32 off)``).
Weights are RANDOM (the timing does not depend on them; the output says so). On CPU the
defaults shrink to one batch of one 512x256 frame and three iterations (``--size`` etc.
override them). Imports only torch, numpy and PyAV (for ``decode``): runs on a GPU host
without ROS.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from cloudseg.cloud.shapes import CUDNN_BENCHMARK, bucket_for
from cloudseg.media.codecs import CodecError
from cloudseg.models.registry import UnknownModelError
from cloudseg.models.weights import WeightsError
from cloudseg.restore.backends import BACKENDS, DTYPES, PipelineError
from cloudseg.restore.pipeline import RestorationPipeline

__all__ = ["CloudBenchOptions", "build_parser", "main", "run_bench"]

PROG = "cloudseg bench cloud"
WEIGHTS_NOTE = "random weights (timing only; outputs meaningless)"
CUDA_DEFAULTS = {"size": "2048x1024", "batch": [1, 8], "dtype": ["fp32", "fp16"], "iters": 50}
CPU_DEFAULTS = {"size": "512x256", "batch": [1], "dtype": ["fp32"], "iters": 3}


class BenchError(Exception):
    """Bad benchmark options; main() prints one line and returns 2."""


@dataclass(frozen=True)
class CloudBenchOptions:
    """What to measure. None: the device's default (``CUDA_DEFAULTS`` / ``CPU_DEFAULTS``)."""

    device: str | None = None  # "cuda" or "cpu"; None: cuda if available
    batch: tuple[int, ...] | None = None
    dtype: tuple[str, ...] | None = None
    backend: str = "icnet"
    sr_model: str = "carn_m"
    size: str | None = None  # full-resolution "WxH" (the SR output)
    scale: int = 4
    iters: int | None = None
    warmup: int | None = None  # None: 10 on CUDA, 1 on CPU
    compile: bool = False
    channels_last: bool = True  # False: keep NCHW on CUDA
    cudnn_benchmark: bool = CUDNN_BENCHMARK  # as the node
    bucketing: bool | None = None  # as the node: on CUDA
    max_batch: int = 8  # the node's max_batch: its buckets go up to it
    tf32: bool = True  # torch's default for cuDNN convolutions (False: both switches off)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Per-frame milliseconds of H.264 decode, SR, segmentation and their sum "
        "on the cloud device, for several batch sizes and dtypes (random weights).",
        epilog="CUDA defaults: --size 2048x1024 --batch 1 8 --dtype fp32 fp16 --iters 50. "
        "CPU defaults: --size 512x256 --batch 1 --dtype fp32 --iters 3.",
    )
    parser.add_argument("--device", choices=("cuda", "cpu"), help="default: cuda if available")
    parser.add_argument("--batch", type=int, nargs="+", help="batch sizes (frames per call)")
    parser.add_argument("--dtype", nargs="+", choices=sorted(DTYPES), help="fp16/bf16: CUDA")
    parser.add_argument("--backend", default=CloudBenchOptions.backend, choices=sorted(BACKENDS))
    parser.add_argument(
        "--sr-model", default=CloudBenchOptions.sr_model, help="SR model (default %(default)s)"
    )
    parser.add_argument("--size", help="full-resolution WxH (the SR output), e.g. 2048x1024")
    parser.add_argument(
        "--scale", type=int, default=CloudBenchOptions.scale, help="SR factor (default %(default)s)"
    )
    parser.add_argument("--iters", type=int, help="timed iterations")
    parser.add_argument("--warmup", type=int, help="untimed iterations first (default 10/1)")
    parser.add_argument("--compile", action="store_true", help="torch.compile (CUDA only)")
    parser.add_argument("--no-channels-last", action="store_true", help="keep NCHW on CUDA")
    parser.add_argument(
        "--no-cudnn-benchmark", action="store_true", help="no cuDNN tuning (the node tunes)"
    )
    parser.add_argument(
        "--no-bucketing", action="store_true", help="run each batch size as is (the node pads)"
    )
    parser.add_argument("--no-tf32", action="store_true", help="fp32 rows without TF32")
    parser.add_argument(
        "--max-batch",
        type=int,
        default=CloudBenchOptions.max_batch,
        help="the node's max_batch (buckets 1, 2, 4, ... up to it; default %(default)s)",
    )
    parser.add_argument(
        "--json", action="store_true", help="last stdout line: the results as one JSON object"
    )
    return parser


def _parse_size(text: str, scale: int) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise BenchError(f"--size must be WxH, e.g. 2048x1024, got {text!r}") from None
    if width < 32 or height < 32 or width % (2 * scale) or height % (2 * scale):
        raise BenchError(
            f"--size {width}x{height}: sides must be >= 32 and multiples of {2 * scale} "
            f"(even LR for H.264)"
        )
    return width, height


def synthetic_frame(width: int, height: int, shift: int = 0, seed: int = 0) -> np.ndarray:
    """A deterministic HxWx3 uint8 frame with edges, gradients and texture (moves with shift)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    x = x + shift
    img = np.stack(
        [
            128 + 100 * np.sin(x / 23.0) * np.cos(y / 17.0),
            255 * (x % 97 < 48),
            255 * y / max(height - 1, 1),
        ],
        axis=-1,
    )
    img += rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def bench_decode(width: int, height: int, iters: int) -> float | None:
    """Median ms to decode one H.264 frame of width x height (a GOP-17 stream); None
    without PyAV (a GPU host may not have it)."""
    try:
        from cloudseg.media.h264 import H264Decoder, H264Encoder
    except ImportError:
        return None
    encoder = H264Encoder(crf=23, gop=17)
    payloads = [
        encoder.encode(synthetic_frame(width, height, shift=2 * i)).payload
        for i in range(max(iters, 17))
    ]
    decoder = H264Decoder()
    times = []
    for seq, payload in enumerate(payloads):
        t0 = time.perf_counter()
        decoder.decode(payload, seq)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


class OnePipeline:
    """One pipeline served as `LocalInference` asks a `CloudService` for its pipelines."""

    def __init__(self, pipeline: RestorationPipeline) -> None:
        self.first = pipeline
        self.device = pipeline.device
        self.scales = (pipeline.scale,)

    def pipeline(self, scale: int) -> RestorationPipeline:
        return self.first

    def describe(self) -> str:
        return self.first.describe()


def bench_node_call(
    inference: Any, lr: np.ndarray, scale: int, bypass: bool, iters: int, warmup: int
) -> dict[str, float]:
    """Median ms (whole batch) of the node's call (``inference``: a `LocalInference`):
    ``total`` (host frames to host labels),
    ``sr`` and ``segmentation`` (device events on CUDA)."""
    for _ in range(warmup):
        inference.infer(lr, scale, sr_bypass=bypass)
    samples: dict[str, list[float]] = {"total": [], "sr": [], "segmentation": []}
    for _ in range(iters):
        result = inference.infer(lr, scale, sr_bypass=bypass)
        samples["total"].append(result.ms)
        samples["sr"].append(result.sr_ms)
        samples["segmentation"].append(result.segmentation_ms)
    return {key: statistics.median(values) for key, values in samples.items()}


def precision_label(dtype: str, device: str) -> str:
    """What an fp32 run really computes in: "tf32" on an Ampere or newer GPU while cuDNN's or
    matmul's TF32 switch is on, "fp32 (tf32 off)" when both are off there; else ``dtype``."""
    if dtype != "fp32" or device != "cuda" or torch.cuda.get_device_capability()[0] < 8:
        return dtype
    tf32 = torch.backends.cudnn.allow_tf32 or torch.backends.cuda.matmul.allow_tf32
    return "tf32" if tf32 else "fp32 (tf32 off)"


def _options_from(args: argparse.Namespace) -> CloudBenchOptions:
    """The options of a parsed command line."""
    return CloudBenchOptions(
        device=args.device,
        batch=tuple(args.batch) if args.batch else None,
        dtype=tuple(args.dtype) if args.dtype else None,
        backend=args.backend,
        sr_model=args.sr_model,
        size=args.size,
        scale=args.scale,
        iters=args.iters,
        warmup=args.warmup,
        compile=args.compile,
        channels_last=not args.no_channels_last,
        cudnn_benchmark=not args.no_cudnn_benchmark,
        bucketing=False if args.no_bucketing else None,
        tf32=not args.no_tf32,
        max_batch=args.max_batch,
    )


def run_bench(options: CloudBenchOptions) -> dict[str, Any]:
    """Run every (dtype, batch) configuration; returns the JSON-ready report."""
    device = options.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise BenchError("--device cuda: CUDA is not available here")
    defaults = CUDA_DEFAULTS if device == "cuda" else CPU_DEFAULTS
    batches = options.batch or defaults["batch"]
    dtypes = options.dtype or defaults["dtype"]
    iters = options.iters if options.iters is not None else defaults["iters"]
    warmup = options.warmup if options.warmup is not None else (10 if device == "cuda" else 1)
    if options.scale not in (2, 3, 4):
        raise BenchError(f"--scale must be 2, 3 or 4, got {options.scale}")
    width, height = _parse_size(options.size or defaults["size"], options.scale)
    if iters < 1 or warmup < 0 or any(b < 1 for b in batches):
        raise BenchError("--iters and --batch must be >= 1, --warmup >= 0")
    if device == "cpu" and any(d != "fp32" for d in dtypes):
        raise BenchError("fp16/bf16 need CUDA; on CPU use --dtype fp32")
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    if device == "cuda" and not options.tf32:
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        return _run(options, device, batches, dtypes, iters, warmup, width, height)
    finally:  # the switches are process-wide: as they were
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32


def _run(
    options: CloudBenchOptions,
    device: str,
    batches: Sequence[int],
    dtypes: Sequence[str],
    iters: int,
    warmup: int,
    width: int,
    height: int,
) -> dict[str, Any]:
    """`run_bench` once its options are checked."""
    lr_w, lr_h = width // options.scale, height // options.scale
    report: dict[str, Any] = {
        "device": device,
        "gpu": torch.cuda.get_device_name(0) if device == "cuda" else None,
        "torch": torch.__version__,
        "backend": options.backend,
        "sr_model": options.sr_model,
        "weights": WEIGHTS_NOTE,
        "size": f"{width}x{height}",
        "lr_size": f"{lr_w}x{lr_h}",
        "scale": options.scale,
        "iters": iters,
        "warmup": warmup,
        "compile": bool(options.compile),
        "cudnn_benchmark": bool(options.cudnn_benchmark) and device == "cuda",
        "channels_last": bool(options.channels_last) and device == "cuda",
        "cpu_defaults": device == "cpu" and options.size is None,
        "decode_ms": bench_decode(lr_w, lr_h, max(iters, 17)),
        "rows": [],
    }
    from cloudseg.cloud.local import LocalInference  # here: synthetic_frame imports lightly

    frame = synthetic_frame(lr_w, lr_h)
    for dtype in dtypes:
        pipeline = RestorationPipeline(
            options.sr_model,
            options.backend,
            device=device,
            dtype=dtype,
            channels_last=None if options.channels_last else False,
            sr_weights=None,
            seg_weights=None,
            allow_untrained=True,
            scale=options.scale,
            compile=options.compile,
        )
        node = LocalInference(
            OnePipeline(pipeline),  # type: ignore[arg-type]
            max_batch=max(options.max_batch, *batches),
            bucketing=options.bucketing,
            cudnn_benchmark=options.cudnn_benchmark,
            warmup_camera=None,  # the warm-up iterations below
        )
        report["bucketing"] = bool(node.buckets)
        for batch in batches:
            lr = np.repeat(frame[None], batch, axis=0)
            sr = bench_node_call(node, lr, options.scale, False, iters, warmup)
            bilinear = bench_node_call(node, lr, options.scale, True, iters, warmup)
            total = sr["total"] / batch
            report["rows"].append(
                {
                    "dtype": dtype,
                    "precision": precision_label(dtype, device),
                    "batch": batch,
                    "device_batch": bucket_for(batch, node.buckets),
                    "decode_ms": report["decode_ms"],
                    "sr_ms": sr["sr"] / batch,
                    "segmentation_ms": sr["segmentation"] / batch,
                    "total_ms": total,
                    "bilinear_total_ms": bilinear["total"] / batch,
                    "fps": 1000.0 / total if total > 0 else None,
                }
            )
        del pipeline
        if device == "cuda":
            torch.cuda.empty_cache()
    return report


def format_table(report: dict[str, Any]) -> str:
    """Aligned text table of a report."""
    where = report["device"] + (f" ({report['gpu']})" if report["gpu"] else "")
    lines = [
        f"{PROG}: {where}, SR {report['sr_model']} x{report['scale']} {report['lr_size']} -> "
        f"{report['size']} + {report['backend']}, {report['weights']}",
        f"median ms per frame over {report['iters']} iterations ({report['warmup']} warm-up)"
        + (", compiled" if report["compile"] else "")
        + (", cudnn.benchmark" if report["cudnn_benchmark"] else "")
        + (", channels_last" if report["channels_last"] else "")
        + (", batch buckets" if report.get("bucketing") else "")
        + "; total: host frames in, host labels out, as the node",
    ]
    if report["cpu_defaults"]:
        lines.append("CPU: reduced default size/iterations (use --size, --iters to change)")
    lines.append(
        f"{'precision':<16}{'batch':>6}{'run as':>7}{'decode':>9}{'sr':>9}{'seg':>9}"
        f"{'total':>9}{'bilinear':>10}{'fps':>8}"
    )
    for r in report["rows"]:
        decode = "-" if r["decode_ms"] is None else f"{r['decode_ms']:.2f}"
        lines.append(
            f"{r['precision']:<16}{r['batch']:>6}{r['device_batch']:>7}{decode:>9}"
            f"{r['sr_ms']:>9.2f}{r['segmentation_ms']:>9.2f}{r['total_ms']:>9.2f}"
            f"{r['bilinear_total_ms']:>10.2f}{r['fps']:>8.1f}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``cloudseg bench cloud``; returns the exit code (2 on bad options)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--"]:  # `cloudseg <command> -- ARGS` passes the separator through
        argv = argv[1:]
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2, message already printed)
        return int(exc.code or 0)
    try:
        report = run_bench(_options_from(args))
    except (
        BenchError,
        PipelineError,
        WeightsError,
        UnknownModelError,
        CodecError,
        ValueError,
    ) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    print(format_table(report))
    if args.json:
        print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
