"""The slot the cloud's GPU work plugs into: one call per group of a batch (no rclpy).

`Inference` is what the cloud node calls: ``lr`` is (N, h, w, 3) uint8 RGB, one size per
call, all at downsampling ``scale``; it returns a `BatchResult`: labels (N, H, W) at the size
the pipeline segments at (the router scales each to its frame's camera size), and the restored
image and the colour overlay only when asked for (someone subscribes to them). Two fit it:
`cloudseg.cloud.local.LocalInference` (this process's `RestorationPipeline`) and
`cloudseg.triton.client.TritonInference` (``inference: triton``; labels only).
`cloudseg.cloud.engines.make_inference` turns the node's ``inference`` parameter into one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np


@dataclass
class BatchResult:
    labels: np.ndarray  # (N, H, W) uint8 train ids, at the size the pipeline segments at
    restored: np.ndarray | None  # (N, H, W, 3) uint8 RGB, only when want_restored, else None
    ms: float  # wall time of the batch
    overlay: np.ndarray | None = None  # (N, H, W, 3) uint8 RGB, only when want_overlay
    sr_ms: float = 0.0  # stage times of the batch where known (FrameStats)
    segmentation_ms: float = 0.0
    mode: str = ""  # "sr", "bilinear" or "full"
    untrained: tuple[str, ...] = field(default_factory=tuple)


class Inference(Protocol):
    #: the restored image and the overlay can be asked for (False: labels only, whatever
    #: ``want_restored`` / ``want_overlay`` say)
    makes_images: bool

    def describe(self) -> str: ...

    def infer(
        self,
        lr: np.ndarray,
        scale: int,
        sr_bypass: bool = False,
        want_restored: bool = False,
        want_overlay: bool = False,
    ) -> BatchResult: ...
