"""A segmenter as training feeds it: RGB [0, 1] in, logits at the input size out."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cloudseg.models.icnet import INPUT_MEAN, INPUT_STD

__all__ = ["IGNORE_ID", "NUM_CLASSES", "FrozenSegmenter", "RgbSegmenter", "segmenter_labels"]

NUM_CLASSES = 19
IGNORE_ID = 255


class RgbSegmenter(nn.Module):
    """RGB [0, 1] -> logits at the input size: ImageNet normalisation, padding to the stride."""

    def __init__(self, model: nn.Module, stride: int = 16) -> None:
        super().__init__()
        self.model = model
        self.stride = stride
        self.register_buffer("mean", torch.tensor(INPUT_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(INPUT_STD).view(1, 3, 1, 1))

    def forward(self, rgb: Tensor) -> Tensor:
        h, w = rgb.shape[-2:]
        x = (rgb - self.mean) / self.std
        pad_h, pad_w = (-h) % self.stride, (-w) % self.stride
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        return self.model(x)[..., :h, :w]


class FrozenSegmenter(RgbSegmenter):
    """An :class:`RgbSegmenter` whose weights and BatchNorm statistics never change."""

    def __init__(self, model: nn.Module, stride: int = 16) -> None:
        super().__init__(model.eval().requires_grad_(False), stride)
        self.train(False)

    def train(self, mode: bool = True) -> FrozenSegmenter:  # BatchNorm statistics stay frozen
        return super().train(False)


@torch.no_grad()
def segmenter_labels(
    segmenter: RgbSegmenter, image: np.ndarray, device: torch.device
) -> np.ndarray:
    """Train ids of an HxWx3 uint8 RGB image (ESPNetv2's background output -> ``IGNORE_ID``)."""
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float().div_(255.0).to(device)
    labels = segmenter(x).argmax(1)[0].to(torch.uint8).cpu().numpy()
    labels[labels >= NUM_CLASSES] = IGNORE_ID
    return labels
