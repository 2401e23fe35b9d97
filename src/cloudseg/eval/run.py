"""One run of ``cloudseg eval``: every frame through the stream and every row, then the report.

Every frame goes through what the cloud really receives (:class:`~cloudseg.media.stream.
StreamRoundTrip`): the compressor's downsampling and encoder with the compressor's own default
settings unless the config changes them, then the cloud's decoder. A sequence (frame folder,
video, rosbag2) is one stream, in order (IDR and P-frames); the unrelated stills of a Cityscapes
split are each a stream of their own (an IDR). Codec ``none`` is the paper's setting.

The segmenter runs at the resolution its weights were trained for (seg size ``trained``, the
serving default; ``full`` segments at the camera size as the paper does); labels are scaled
back to the camera size (nearest neighbour) and scored against the fine ground truth of a
Cityscapes folder, or, for a sequence without labels, against the ``hr`` row's labels
(``reference: hr``). PSNR and SSIM compare the restored image with the original
area-downsampled to the size that was segmented (mean over frames); mIoU comes from one
confusion matrix over all frames (cityscapesScripts conventions, :mod:`cloudseg.metrics`).
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from cloudseg.data.cityscapes import TRAIN_ID_NAMES, load_label_train_ids, load_rgb
from cloudseg.data.frames import DataError
from cloudseg.eval.config import EvalConfig, EvalError, stream_settings
from cloudseg.eval.figures import save_figure, save_panel
from cloudseg.eval.frames import eval_frames
from cloudseg.eval.report import UNTRAINED_LABEL
from cloudseg.eval.rows import LR_ROWS, build_rows, num
from cloudseg.media.codecs import CodecError
from cloudseg.media.quality import psnr, ssim
from cloudseg.media.resize import downsample, resize_labels
from cloudseg.media.stream import StreamRoundTrip
from cloudseg.metrics import MetricsError
from cloudseg.models.registry import UnknownModelError
from cloudseg.models.weights import ENV_WEIGHTS, WeightsError
from cloudseg.restore.backends import PipelineError
from cloudseg.routes import DEFAULT_ROUTE
from cloudseg.train.stream_data import is_low_res_root

__all__ = ["EVAL_ERRORS", "CodedStream", "evaluate"]

EVAL_ERRORS: tuple[type[Exception], ...] = (
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
"""The errors of bad input (options, data, weights): a command prints them as one line."""


class CodedStream:
    """The frames the cloud receives at one scale (with codec none: plain downsampling)."""

    def __init__(self, config: EvalConfig, scale: int) -> None:
        self.codec = config.codec
        self.scale = scale
        self.degradation = config.kernel or "area"
        self.roundtrip = (
            None if config.codec == "none" else StreamRoundTrip(stream_settings(config, scale))
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


def evaluate(config: EvalConfig) -> dict[str, Any]:
    """Run the evaluation ``config`` describes; returns the JSON-ready report."""
    config.validate()
    if config.weights_dir is not None:
        os.environ[ENV_WEIGHTS] = str(config.weights_dir)
    device = config.device
    if device is None:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    low_res = any(is_low_res_root(p) for p in config.data)
    reference, frames = eval_frames(config)
    rows, pipelines = build_rows(config, device, low_res)
    if config.only_rows:  # hr stays: the reference of a sequence and the top of the gap
        wanted = set(config.only_rows) | {"hr"}
        unknown = sorted(wanted - set(rows) - {"hr"})
        if unknown:
            raise EvalError(f"--rows: no row {', '.join(unknown)} (rows: {', '.join(rows)})")
        rows = {name: row for name, row in rows.items() if name in wanted}
    main_pipeline = pipelines["sr"]
    lr_stream = CodedStream(config, 1 if low_res else config.scale)
    hr_stream = CodedStream(config, 1) if "hr_stream" in rows else None
    figure_done = False
    figure_frame = config.figure_frame or next((f.name for f in frames if f.scored), None)
    start = time.perf_counter()
    bar = tqdm(frames, desc="eval", unit="frame", file=sys.stderr, disable=not config.progress)
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
        if low_res:  # the image is the stream's low resolution, its label the camera's
            if gt is None or gt.shape != (rgb.shape[0] * config.scale, rgb.shape[1] * config.scale):
                raise EvalError(f"{name}: the label is not {config.scale}x the image")
        elif gt is not None and gt.shape != rgb.shape[:2]:
            raise EvalError(f"{name}: label {gt.shape} and image {rgb.shape[:2]} differ")
        lr = lr_stream(rgb)
        hr_coded = None  # the full-resolution stream is encoded frame by frame too
        if hr_stream is not None:
            hr_coded = hr_stream(rgb[: lr.shape[0] * config.scale, : lr.shape[1] * config.scale])
        if not frame.scored:
            continue
        height, width = lr.shape[0] * config.scale, lr.shape[1] * config.scale
        original = None if low_res else rgb[:height, :width]
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
        want_figure = config.figure is not None and figure_frame == name and original is not None
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
            if config.save_panels or want_figure:
                panel_rows.append((row_name, restored, labels))
        if config.save_panels and original is not None:
            save_panel(config.save_panels / f"{name}.png", original, target, panel_rows)
        if want_figure:
            chosen = config.figure_rows
            picked = [r for r in panel_rows if (r[0] in chosen if chosen else r[0] != "hr_stream")]
            save_figure(config.figure, original, target, picked, config.figure_crop)
            figure_done = True
    seconds = time.perf_counter() - start
    if config.figure is not None and not figure_done:
        raise EvalError(
            f"--figure-frame {config.figure_frame}: no such frame in {list(config.data)}"
        )

    kbps = {"lr": lr_stream.kbps(), "hr": None}
    if hr_stream is not None:
        kbps["hr_stream"] = hr_stream.kbps()
    untrained = list(main_pipeline.untrained)
    report: dict[str, Any] = {
        "rows": {name: row.summary_with(kbps[row.stream]) for name, row in rows.items()},
        "per_class": {
            name: {
                cls: num(v) for cls, v in zip(TRAIN_ID_NAMES, row.cm.iou().tolist(), strict=True)
            }
            for name, row in rows.items()
        },
        "frames": sum(f.scored for f in frames),
        "frames_streamed": len(frames),
        "reference": reference,
        "split": config.split if any((p / "leftImg8bit").is_dir() for p in config.data) else None,
        "data": ", ".join(str(p) for p in config.data),
        "backend": main_pipeline.backend,
        "segmenter": main_pipeline.seg_name,
        "pipeline": main_pipeline.describe(),
        "seg_size": config.seg_size,
        "sr_route": config.sr_route,
        "sr_model": config.sr_model,
        "sr_weights": config.sr_weights or "official",
        "sr_ft_weights": config.sr_ft_weights,
        "sr_rows": {name: str(path) for name, path in config.sr_rows},
        "scale": config.scale,
        "degradation": lr_stream.degradation if not low_res else "as the data was made",
        "default_route": f"{DEFAULT_ROUTE.name}: {DEFAULT_ROUTE.description}",
        "codec": lr_stream.describe(),
        "kbps": kbps["lr"],
        "lr_bytes_per_frame": lr_stream.bytes_per_frame(),
        "device": str(main_pipeline.device),
        "dtype": config.dtype,
        "timings_ms": {
            name: {k: statistics.median(v) for k, v in row.timings.items()}
            for name, row in rows.items()
        },
        "seconds": seconds,
        "untrained": untrained,
        "label": UNTRAINED_LABEL if untrained else None,
    }
    return report
