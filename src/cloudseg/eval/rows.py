"""The rows of ``cloudseg eval``: one restoration pipeline each, and what they accumulate.

``bilinear`` (the SR bypass), ``lr_seg`` (the low-resolution frame segmented by a segmenter
trained at that size), ``sr`` (the official CARN-M or ``sr_weights``), extra SR checkpoints
(``sr_rows``, ``sr_ft``), the learned routes (:mod:`cloudseg.routes`) with their committed
weights, ``default`` (the cloud's default route through :class:`CloudService`), and the
references ``hr`` (the original frame) and ``hr_stream`` (the original through the encoder).
"""

from __future__ import annotations

import logging
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cloudseg.eval.config import EvalConfig, EvalError
from cloudseg.metrics import ConfusionMatrix
from cloudseg.models.registry import build_model
from cloudseg.models.weights import WeightsError
from cloudseg.restore.pipeline import RestorationPipeline
from cloudseg.routes import ROUTES, SEG_LR, route_pipeline

__all__ = ["LEARNED_ROWS", "LR_ROWS", "LR_SEGMENTERS", "Row", "build_rows", "num"]

log = logging.getLogger(__name__)

LR_SEGMENTERS = {"espnetv2": "espnetv2_s2_city_512x256"}
"""Backend -> a segmenter trained at the LR size of a x4 stream (the ``lr_seg`` row)."""
LR_ROWS = frozenset(name for name, route in ROUTES.items() if route.segmenter == SEG_LR)
"""Rows that segment the low-resolution frame itself: they restore nothing (no PSNR)."""
LEARNED_ROWS = tuple(name for name, route in ROUTES.items() if route.learned)
"""The learned routes' rows (cloudseg.routes), each with the project's committed weights."""


def num(value: float | None) -> float | None:
    """JSON-safe float: NaN and inf become None."""
    return None if value is None or not math.isfinite(value) else float(value)


@dataclass
class Row:
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
            "psnr": num(statistics.fmean(self.psnr)) if self.psnr else None,
            "ssim": num(statistics.fmean(self.ssim)) if self.ssim else None,
            "miou": num(self.cm.miou()),
            "miou_gt_classes": num(self.cm.miou(gt_classes_only=True)),
            "pixel_accuracy": num(self.cm.pixel_accuracy()),
        }

    def summary_with(self, kbps: float | None) -> dict[str, Any]:
        return {**self.summary(), "kbps": num(kbps) if kbps is not None else None}


class CloudDefault:
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


def build_rows(
    config: EvalConfig, device: str, low_res: bool
) -> tuple[dict[str, Row], dict[str, Any]]:
    """The pipelines of every row (sharing one segmenter) and their rows. ``low_res``: the data
    is already at the stream's resolution (no hr rows)."""
    options = {
        "device": device,
        "dtype": config.dtype,
        "scale": config.scale,
        "return_restored": True,
        "seg_size": config.seg_size,
        "sr_route": config.sr_route,
    }
    pipeline = RestorationPipeline(
        config.sr_model,
        config.seg_model or config.backend,
        sr_weights=config.sr_weights
        or ("div2k" if config.sr_model in ("carn_m", "carn") else "default"),
        seg_weights=config.seg_weights or "default",
        allow_untrained=config.allow_untrained,
        **options,
    )
    backend = config.seg_model or config.backend
    pipelines: dict[str, Any] = {"bilinear": pipeline}
    rows = {"bilinear": Row("bilinear", "bilinear")}
    lr_seg = LR_SEGMENTERS.get(config.backend)
    if lr_seg is not None and config.lr_seg_row and not config.seg_model and config.scale == 4:
        try:
            lr_pipeline = RestorationPipeline(None, lr_seg, **options)
        except WeightsError as exc:
            log.warning("no 'lr_seg' row: %s", str(exc).splitlines()[0])
        else:
            pipelines["lr_seg"] = lr_pipeline
            rows["lr_seg"] = Row("lr_seg", "bilinear")
    pipelines["sr"] = pipeline
    rows["sr"] = Row("sr", "sr")
    extra = [*config.sr_rows]
    if config.sr_ft_weights:
        extra.append(("sr_ft", Path(config.sr_ft_weights)))
    for name, path in extra:
        if name in rows:
            raise EvalError(f"row name {name!r} is taken")
        model = build_model(config.sr_model, path.expanduser())
        pipelines[name] = RestorationPipeline.from_modules(
            model, pipeline.segmenter, backend, **options
        )
        pipelines[name].sr_name = f"{config.sr_model} ({path.name})"
        rows[name] = Row(name, "sr")
    espnetv2 = not config.seg_model and config.backend == "espnetv2"
    if config.route_rows and espnetv2:
        for name in LEARNED_ROWS:
            if name in rows:  # sr_ft from --sr-ft-weights
                continue
            route = ROUTES[name]
            try:
                pipelines[name] = route_pipeline(route, **options)
            except WeightsError as exc:
                log.warning("no %r row: %s", name, str(exc).splitlines()[0])
                continue
            rows[name] = Row(name, route.mode)
    if config.default_row and espnetv2 and config.scale == 4:
        pipelines["default"] = CloudDefault(device, config.scale)
        rows["default"] = Row("default", pipelines["default"].mode)
    if low_res:
        return rows, pipelines
    pipelines["hr"] = pipeline
    rows["hr"] = Row("hr", "full", stream="hr")
    if config.codec != "none":
        pipelines["hr_stream"] = RestorationPipeline.from_modules(
            None, pipeline.segmenter, backend, **{**options, "scale": 1}
        )
        rows["hr_stream"] = Row("hr_stream", "full", stream="hr_stream")
    return rows, pipelines
