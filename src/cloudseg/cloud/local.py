"""`LocalInference`: the cloud's batches on this process's `RestorationPipeline` (no rclpy).

The lean path: frames go to the device from pinned memory (CUDA only), nothing the caller did
not ask for is made or copied back (the restored image is converted only for the restored
topic or the overlay; the overlay is blended on the device, at the segmentation size), and
everything asked for comes back with one host sync per call.
``torch.backends.cudnn.benchmark`` is on with CUDA (fixed batch shapes per stream size).
"""

from __future__ import annotations

import functools
import time

import numpy as np
import torch
from torch import Tensor

from cloudseg.cloud.inference import BatchResult
from cloudseg.cloud.service import CloudService
from cloudseg.devices import to_host
from cloudseg.restore.labels import IGNORE_ID, NUM_CLASSES, palette
from cloudseg.restore.results import to_uint8


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
    updates it when its parameter changes)."""

    makes_images = True

    def __init__(self, service: CloudService, overlay_alpha: float = 0.5) -> None:
        self.service = service
        self.overlay_alpha = float(overlay_alpha)
        self.cuda = service.device.type == "cuda"  # cuda:N included
        if self.cuda:
            torch.backends.cudnn.benchmark = True

    @property
    def untrained(self) -> tuple[str, ...]:
        return self.service.first.untrained

    def describe(self) -> str:
        return f"local: {self.service.describe()}"

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
        frames = torch.from_numpy(np.ascontiguousarray(lr))
        if frames.ndim == 3:
            frames = frames.unsqueeze(0)
        if self.cuda:  # the host-to-device copy runs asynchronously from page-locked memory
            frames = frames.pin_memory()
        with torch.inference_mode():
            pyramid = pipe.restore(frames, mode)
            labels = pipe.segment_labels(pyramid)
            marks = [*pyramid.marks, pipe.mark()]
            restored = to_uint8(pyramid.levels[1]) if (want_restored or want_overlay) else None
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
