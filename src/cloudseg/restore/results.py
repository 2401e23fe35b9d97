"""What the pipeline's stages hand over: restored pyramids, images and labels with their times."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

__all__ = ["PipelineResult", "Pyramid", "Restored", "to_uint8"]


@dataclass
class PipelineResult:
    """What :meth:`RestorationPipeline.process` returns (tensors on the pipeline's device).

    ``labels``: (N, H, W) uint8 train ids, 255 = background / ignore. ``restored``: (N, H, W, 3)
    uint8 RGB of the image that was segmented, or None unless asked for. ``timings_ms``: ``sr``
    (uint8 -> float and SR / bilinear upsampling), ``segmentation`` (normalisation, network,
    argmax) and ``total`` (including the host -> device copy of numpy input).
    ``reduced_by``: the CPU reduction factor (1 = full size, see the module docstring).
    """

    labels: Tensor
    restored: Tensor | None
    timings_ms: dict[str, float]
    mode: str
    reduced_by: int = 1
    untrained: tuple[str, ...] = field(default_factory=tuple)


@dataclass
class Pyramid:
    """What :meth:`RestorationPipeline.restore` hands to :meth:`RestorationPipeline.segment`:
    ``levels`` {1: HR, 2: MR, 4: LR} as RGB float [0, 1] tensors on the device (at 1/
    ``reduced_by`` of the full size), and the stage's time marks."""

    levels: dict[int, Tensor]
    mode: str
    reduced_by: int
    marks: list[Any]
    scale: int = 0  # the downsampling factor of the input (set by the caller that routes it)


@dataclass
class Restored:
    """What :meth:`RestorationPipeline.restore_image` returns: stage 1's image as uint8
    (N, H, W, 3) on the device at 1/``reduced_by`` of the camera size, how it was restored,
    and the stage's time in ms (as ``PipelineResult.timings_ms["sr"]``)."""

    images: Tensor
    mode: str
    reduced_by: int
    sr_ms: float


def to_uint8(hr: Tensor) -> Tensor:
    """(N, 3, H, W) float [0, 1] -> (N, H, W, 3) uint8 (rounded), on the same device."""
    out = hr.mul(255.0).round_().clamp_(0, 255).to(torch.uint8)
    return out.permute(0, 2, 3, 1).contiguous()
