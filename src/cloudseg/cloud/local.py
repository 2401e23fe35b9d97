"""`LocalInference`: the cloud's batches on this process's `RestorationPipeline` (no rclpy).

The lean path: frames go to the device from pinned memory (CUDA only), nothing the caller did
not ask for is made or copied back (the restored image is converted only for the restored
topic or the overlay; the overlay is blended on the device, at the segmentation size), and
everything asked for comes back with one host sync per call.

Shapes (`cloudseg.cloud.shapes`): on CUDA a group of n frames is padded to its batch bucket
(1, 2, 4, ..., ``max_batch``) and the padded outputs dropped, so the device sees few shapes; with
``cudnn_benchmark`` (`CUDNN_BENCHMARK` by default) every bucket x scale x mode of the warm-up
camera size is run once at start, so cuDNN tunes them then, not mid-stream. The flag is set
around this object's own calls only.
"""

from __future__ import annotations

import functools
import logging
import time

import numpy as np
import torch
from torch import Tensor

from cloudseg.cloud.inference import BatchResult
from cloudseg.cloud.service import CloudService
from cloudseg.cloud.shapes import (
    CUDNN_BENCHMARK,
    WARMUP_CAMERA_SIZE,
    WarmupShape,
    batch_buckets,
    bucket_for,
    cudnn_benchmark,
    pad_batch,
    warmup_plan,
)
from cloudseg.devices import to_host
from cloudseg.restore.labels import IGNORE_ID, NUM_CLASSES, palette
from cloudseg.restore.results import to_uint8

log = logging.getLogger(__name__)


@functools.cache
def _lut(device: str) -> Tensor:
    return torch.as_tensor(palette(), dtype=torch.float32).to(device)


def blend_overlay(rgb: Tensor, labels: Tensor, alpha: float = 0.5) -> Tensor:
    """Cityscapes colours over (N, H, W, 3) uint8 images on their device: (N, H, W) train ids,
    ``alpha`` the colours' weight; ids > 18 (255: ignore) keep the image's colour. Within 1 of
    `cloudseg.restore.labels.overlay` (the host version)."""
    ids = labels.long()
    valid = (ids < NUM_CLASSES).unsqueeze(-1)
    colours = _lut(str(rgb.device))[ids.clamp_(max=IGNORE_ID)]
    mixed = rgb.float().mul_(1.0 - alpha).add_(colours, alpha=alpha).round_().clamp_(0, 255)
    return torch.where(valid, mixed.to(torch.uint8), rgb)


class LocalInference:
    """`Inference` on this process's `RestorationPipeline`s (a `CloudService`'s, one per
    scale, the models shared). ``overlay_alpha``: the overlay's colour weight (the node
    updates it when its parameter changes). ``max_batch``: the largest group (the batcher's);
    ``bucketing``: pad groups to `batch_buckets` (None: on CUDA only; a CPU tunes nothing and
    would only compute the padding);
    ``cudnn_benchmark``: let cuDNN tune each shape (CUDA); ``warmup_camera``: the camera size
    (width, height) whose shapes are warmed up at start when tuning is on (None: none)."""

    makes_images = True

    def __init__(
        self,
        service: CloudService,
        overlay_alpha: float = 0.5,
        *,
        max_batch: int = 8,
        bucketing: bool | None = None,
        cudnn_benchmark: bool = CUDNN_BENCHMARK,
        warmup_camera: tuple[int, int] | None = WARMUP_CAMERA_SIZE,
    ) -> None:
        self.service = service
        self.overlay_alpha = float(overlay_alpha)
        self.cuda = service.device.type == "cuda"  # cuda:N included
        self.max_batch = int(max_batch)
        bucketing = self.cuda if bucketing is None else bucketing
        self.buckets = batch_buckets(max_batch) if bucketing else ()
        self.benchmark = bool(cudnn_benchmark) and self.cuda
        self.warmup_s = 0.0
        if self.benchmark and warmup_camera is not None:
            self.warmup_s = self.warm_up(warmup_camera)

    def plan(self, camera_size: tuple[int, int]) -> list[WarmupShape]:
        """The shapes this object runs for a camera size (width, height): every bucket x
        scale x mode (`warmup_plan`); without buckets, every batch size up to ``max_batch``."""
        sr_scales = tuple(getattr(self.service.first.sr, "scales", ()))
        batches = self.buckets or tuple(range(1, self.max_batch + 1))
        return warmup_plan(camera_size, tuple(self.service.scales), sr_scales, batches)

    def warm_up(self, camera_size: tuple[int, int]) -> float:
        """Run every shape of `plan` once (cuDNN tunes them now); returns the seconds taken."""
        t0 = time.perf_counter()
        plan = self.plan(camera_size)
        for shape in plan:
            lr = np.zeros((shape.batch, *shape.lr_hw, 3), dtype=np.uint8)
            self.infer(lr, shape.scale, sr_bypass=shape.mode == "bilinear")
        seconds = time.perf_counter() - t0
        log.info(
            "warmed up %d shapes (batches %s, camera %dx%d) in %.1f s",
            len(plan),
            ",".join(map(str, self.buckets or range(1, self.max_batch + 1))),
            *camera_size,
            seconds,
        )
        return seconds

    @property
    def untrained(self) -> tuple[str, ...]:
        return self.service.first.untrained

    def describe(self) -> str:
        text = f"local: {self.service.describe()}"
        if self.buckets:
            text += f"; batch buckets {','.join(map(str, self.buckets))}"
        if self.benchmark:
            text += f"; cuDNN tuned, warm-up {self.warmup_s:.1f} s"
        return text

    def infer(
        self,
        lr: np.ndarray,
        scale: int,
        sr_bypass: bool = False,
        want_restored: bool = False,
        want_overlay: bool = False,
    ) -> BatchResult:
        t0 = time.perf_counter()
        pipe = self.service.pipeline(scale)
        mode = CloudService.mode(pipe, scale, sr_bypass)
        lr = lr[None] if lr.ndim == 3 else lr
        n = len(lr)
        frames = torch.from_numpy(np.ascontiguousarray(pad_batch(lr, bucket_for(n, self.buckets))))
        if self.cuda:  # the host-to-device copy runs asynchronously from page-locked memory
            frames = frames.pin_memory()
        with torch.inference_mode(), cudnn_benchmark(self.benchmark):
            pyramid = pipe.restore(frames, mode)
            labels = pipe.segment_labels(pyramid)[:n]  # the padding's outputs dropped
            marks = [*pyramid.marks, pipe.mark()]
            want_image = want_restored or want_overlay
            restored = to_uint8(pyramid.levels[1][:n]) if want_image else None
            overlay = blend_overlay(restored, labels, self.overlay_alpha) if want_overlay else None
            host = to_host([labels, restored if want_restored else None, overlay])
        span = pipe.elapsed_ms(marks)  # the events are done: no further wait
        return BatchResult(
            labels=host[0],
            restored=host[1],
            ms=(time.perf_counter() - t0) * 1e3,
            overlay=host[2],
            sr_ms=span[2] - span[1],
            segmentation_ms=span[3] - span[2],
            mode=mode,
            untrained=pipe.untrained,
        )
