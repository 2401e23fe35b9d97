"""Learned deviation: a small network's prediction of the fraction of labels that changed.

As in Li et al. (CVPR 2018): the low-level features of each frame are computed once
(:meth:`LearnedDeviation.features`, kept for the reference frames), and a small head over the
difference of two frames' features predicts how much of the segmentation changed between them
(0..1; :mod:`cloudseg.models.selector_net`). The weights come from ``cloudseg train selector``;
the project ships ``weights/selector_learned.pth`` (+ model card), found like the other
weights. A missing or unfit file raises :class:`~cloudseg.models.weights.WeightsError`: never
random weights.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from cloudseg.media.resize import check_rgb
from cloudseg.models.weights import WeightsError

__all__ = ["ARCHITECTURE", "LearnedDeviation", "WeightsError"]

ARCHITECTURE = "selector_net"


class LearnedDeviation:
    """Deviation = predicted fraction of pixels whose label changed (``selector_net``)."""

    name = "learned"

    def __init__(self, weights: str | Path = "default", device: str = "cpu") -> None:
        from cloudseg.models.registry import build_model  # lazy: imports every builder

        self.device = torch.device(device)
        try:
            self.net = build_model(ARCHITECTURE, weights).to(self.device)
        except WeightsError as exc:
            raise WeightsError(
                f"learned frame selection needs trained weights: {exc} (the project's own are "
                f"weights/selector_learned.pth; cloudseg train selector makes new ones)"
            ) from None
        self.weights_info = self.net.weights_info

    def features(self, rgb: np.ndarray) -> torch.Tensor:
        """The frame's low-level features (1xCxH/8xW/8 at the net's input size)."""
        check_rgb(rgb, "frame")
        with torch.inference_mode():
            return self.net.features(self.net.to_input(rgb))

    def deviation(self, reference: torch.Tensor, current: torch.Tensor) -> float:
        """Predicted fraction (0..1) of pixels whose label differs between the two frames."""
        with torch.inference_mode():
            return float(self.net(reference, current)[0])

    def describe(self) -> str:
        info = self.weights_info
        return f"learned ({ARCHITECTURE}, {info.filename if info else 'untrained'})"
