"""The shapes the cloud's device sees: batch-size buckets, padding, the warm-up plan (no rclpy).

With ``torch.backends.cudnn.benchmark`` on, cuDNN times its algorithms for every new input
shape the first time it sees it: a stall of 0.1-3 s in the middle of a stream. The batcher's
groups have any size from 1 to ``max_batch``, so the device would see ``max_batch`` batch
sizes per (LR size, scale, mode). Bucketing pads a group to the next of ``1, 2, 4, ...,
max_batch`` (`batch_buckets`), so only those few shapes occur, and `warmup_plan` lists them
all for one camera size so that they are tuned at start, not mid-stream.

`CUDNN_BENCHMARK` is the choice between "tuned, bucketed and warmed up" (True) and "cuDNN's
heuristics, no tuning stall, no warm-up" (False). It is meant to be chosen by measurement on a
GPU (``bash bench/gpu_cloud.sh`` times both); **no GPU has been lent yet**, so the default is
the usual choice for fixed shapes (on), pending that measurement. On a CPU it does not apply:
no warm-up runs there.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

__all__ = [
    "CUDNN_BENCHMARK",
    "WARMUP_CAMERA_SIZE",
    "WarmupShape",
    "batch_buckets",
    "bucket_for",
    "cudnn_benchmark",
    "pad_batch",
    "warmup_plan",
]

CUDNN_BENCHMARK = True  # pending a GPU measurement (see the module docstring)
WARMUP_CAMERA_SIZE = (2048, 1024)  # (width, height) warmed up at start: the vehicles' camera


def batch_buckets(max_batch: int) -> tuple[int, ...]:
    """1, 2, 4, ... below ``max_batch``, then ``max_batch`` itself: (1, 2, 4, 8) for 8,
    (1, 2, 4, 6) for 6."""
    if max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}")
    out, b = [], 1
    while b < max_batch:
        out.append(b)
        b *= 2
    return (*out, int(max_batch))


def bucket_for(n: int, buckets: tuple[int, ...]) -> int:
    """The smallest bucket that holds ``n`` frames; ``n`` itself beyond the largest."""
    return next((b for b in buckets if b >= n), n)


def pad_batch(frames: np.ndarray, size: int) -> np.ndarray:
    """(n, h, w, 3) frames padded to (size, h, w, 3) with copies of the last frame (a real
    frame: no all-zero input that takes another path); unchanged when n >= size."""
    n = len(frames)
    if n >= size:
        return frames
    return np.concatenate([frames, np.repeat(frames[-1:], size - n, axis=0)])


@dataclass(frozen=True)
class WarmupShape:
    """One shape the device will see: ``batch`` frames of ``lr_hw`` (h, w) at ``scale``,
    restored by ``mode`` ("sr", "bilinear" or "full")."""

    batch: int
    scale: int
    mode: str
    lr_hw: tuple[int, int]


def warmup_plan(
    camera_size: tuple[int, int],
    scales: tuple[int, ...],
    sr_scales: tuple[int, ...],
    batches: tuple[int, ...],
) -> list[WarmupShape]:
    """Every batch size (``batches``: the buckets) x scale x mode a cloud serving ``scales``
    will run for one camera size (width, height): "sr" where the SR model has a head for the
    scale (``sr_scales``), "bilinear" for every scale above 1, and "full" at scale 1 (the
    controller's profiling frames, full resolution). The LR size is the compressor's,
    (H // scale, W // scale)."""
    width, height = camera_size
    plan = []
    for scale in sorted({1, *(int(s) for s in scales)}):
        lr_hw = (height // scale, width // scale)
        if min(lr_hw) < 1:
            continue
        modes = ("full",) if scale == 1 else (("sr",) if scale in sr_scales else ()) + ("bilinear",)
        for mode in modes:
            plan += [WarmupShape(b, scale, mode, lr_hw) for b in batches]
    return plan


@contextlib.contextmanager
def cudnn_benchmark(on: bool) -> Iterator[None]:
    """``torch.backends.cudnn.benchmark`` set to ``on`` for the block only (the flag is
    process-wide: the previous value comes back after)."""
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = bool(on)
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = before
