"""Cityscapes train-id labels as the pipeline gives them: their palette, class names and
colour overlay."""

from __future__ import annotations

from collections.abc import Mapping

import cv2
import numpy as np
from torch import Tensor

__all__ = [
    "IGNORE_ID",
    "LABEL_THRESHOLD",
    "NUM_CLASSES",
    "class_names",
    "mark_untrained",
    "overlay",
    "palette",
]

#: Cityscapes train ids 0..18 and the ignore id (as cloudseg.data.cityscapes, which is not
#: imported here: it needs cityscapesScripts, absent on a bare GPU host running the benchmark).
NUM_CLASSES = 19
IGNORE_ID = 255
#: vision_msgs/LabelInfo.threshold of the segmenters: each pixel takes its highest-scoring class
#: (argmax), whatever the score, so no confidence cut applies
LABEL_THRESHOLD = 0.0


def palette() -> np.ndarray:
    """(256, 3) uint8 RGB of every mono8 label value, Cityscapes colours (cityscapesScripts'
    labels.py) for train ids 0..18 and black for 255 ('unlabeled') and every other value:
    ``palette()[labels]`` colours an HxW uint8 label map."""
    from cloudseg.data.cityscapes import TRAIN_ID_PALETTE  # lazy: needs cityscapesScripts

    return TRAIN_ID_PALETTE


def class_names(meta: Mapping | None = None) -> tuple[str, ...]:
    """The names of a segmenter's classes, indexed by train id: its weights' metadata
    ``class_names`` when it lists them, else Cityscapes' 19 (cityscapesScripts' labels.py)."""
    names = (meta or {}).get("class_names")
    if isinstance(names, (list, tuple)) and names and all(isinstance(n, str) for n in names):
        return tuple(names)
    from cloudseg.data.cityscapes import TRAIN_ID_NAMES  # lazy: needs cityscapesScripts

    return TRAIN_ID_NAMES


def overlay(rgb_uint8: np.ndarray, labels: np.ndarray | Tensor, alpha: float = 0.5) -> np.ndarray:
    """Blend Cityscapes train-id colours over an HxWx3 uint8 RGB image (numpy, for RViz).

    ``labels``: HxW train ids of the same size; pixels labelled 255 (or any id > 18) keep the
    image's own colour. ``alpha`` is the weight of the label colour (0..1).
    """
    if isinstance(labels, Tensor):
        labels = labels.detach().cpu().numpy()
    rgb = np.asarray(rgb_uint8)
    labels = np.asarray(labels)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"image must be HxWx3 uint8, got {rgb.shape} {rgb.dtype}")
    if labels.shape != rgb.shape[:2]:
        raise ValueError(f"labels {labels.shape} do not match the image {rgb.shape[:2]}")
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integer train ids, got {labels.dtype}")
    ids = np.where((labels >= 0) & (labels < NUM_CLASSES), labels, IGNORE_ID).astype(np.uint8)
    colours = palette()[ids]
    blended = cv2.addWeighted(rgb, 1.0 - float(alpha), colours, float(alpha), 0.0)
    return np.where((ids < NUM_CLASSES)[..., None], blended, rgb)


def mark_untrained(overlay: np.ndarray, untrained: tuple[str, ...]) -> np.ndarray:
    """Never let random weights pass for a result: the overlay says so."""
    out = np.ascontiguousarray(overlay).copy()
    cv2.putText(
        out,
        f"UNTRAINED: {', '.join(untrained)}",
        (10, 30),
        cv2.FONT_HERSHEY_SIMPLEX,
        0.8,
        (255, 0, 0),
        2,
        cv2.LINE_AA,
    )
    return out
