"""SelectorNet: how much of the segmentation changed between two frames, from low-level features.

After Li et al., "Low-latency video semantic segmentation" (CVPR 2018), whose adaptive key
frame scheduler regresses the deviation of the labels from the difference of low-level
features. Here the features come from a tiny encoder of its own (the vehicle runs no
segmenter): the frame is reduced by area averaging straight to :data:`INPUT_SIZE` (any camera
size is stretched to it), normalised, and passed through three strided convolutions
(:meth:`SelectorNet.features`, once per frame, 1/8 of the input). The head
(:meth:`SelectorNet.forward`) looks only at ``|fa - fb|``, the difference of two frames'
features (symmetric, 0 for the same frame's), convolves twice, averages over the image and
predicts the fraction of pixels whose label changed (0..1), the target ``cloudseg train
selector`` trains it for. (Giving the head the features themselves as well, or max pooling,
fitted the few training clips better and generalised worse to a held-out clip.)
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
from torch import nn

__all__ = ["INPUT_MEAN", "INPUT_SIZE", "INPUT_STD", "SelectorNet", "prepare", "selector_net"]

INPUT_SIZE: tuple[int, int] = (256, 128)
"""(width, height) the frame is reduced to (area averaging) before the encoder."""
INPUT_MEAN = (0.485, 0.456, 0.406)
INPUT_STD = (0.229, 0.224, 0.225)


def prepare(rgb: np.ndarray, size: tuple[int, int] = INPUT_SIZE) -> np.ndarray:
    """An HxWx3 uint8 RGB frame reduced to ``size`` by area averaging: HxWx3 uint8."""
    if rgb.shape[1] == size[0] and rgb.shape[0] == size[1]:
        return np.ascontiguousarray(rgb)
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)


def _conv(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


class SelectorNet(nn.Module):
    """Low-level encoder (3 strided convs) + a regression head over the difference of two
    frames' features."""

    def __init__(self, width: int = 24, head_width: int = 32) -> None:
        super().__init__()
        self.width = width
        self.head_width = head_width
        self.register_buffer("mean", torch.tensor(INPUT_MEAN).view(1, 3, 1, 1) * 255.0)
        self.register_buffer("std", torch.tensor(INPUT_STD).view(1, 3, 1, 1) * 255.0)
        self.encoder = nn.Sequential(
            _conv(3, width // 2, 2),  # 1/2
            _conv(width // 2, width, 2),  # 1/4
            _conv(width, width, 2),  # 1/8
        )
        self.head = nn.Sequential(
            _conv(width, head_width, 1),
            _conv(head_width, head_width, 2),  # 1/16
        )
        self.fc = nn.Linear(head_width, 1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Low-level features of frames: ``x`` is Nx3xHxW RGB (0..255 float or uint8) at
        :data:`INPUT_SIZE`; returns Nx``width``xH/8xW/8."""
        x = (x.float() - self.mean) / self.std
        return self.encoder(x)

    def forward(self, fa: torch.Tensor, fb: torch.Tensor) -> torch.Tensor:
        """Predicted fraction of pixels whose label changed between the frames of features
        ``fa`` and ``fb`` (N): symmetric in its two arguments, 0..1."""
        y = self.head(torch.abs(fa - fb))
        pooled = y.mean(dim=(2, 3))
        return torch.sigmoid(self.fc(pooled)).squeeze(1)

    def to_input(self, rgb: np.ndarray) -> torch.Tensor:
        """One HxWx3 uint8 RGB frame (any size) as the encoder's 1x3xHxW input."""
        small = prepare(rgb)
        return torch.from_numpy(small).permute(2, 0, 1).unsqueeze(0).to(self.mean.device)


def selector_net(width: int = 24, head_width: int = 32) -> SelectorNet:
    """The registry's builder of ``selector_net``."""
    return SelectorNet(width=width, head_width=head_width)
