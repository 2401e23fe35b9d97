"""Pictures of an evaluation: a panel per frame (every row's image and labels) and a figure of
crops of one frame."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from cloudseg.data.cityscapes import colorize
from cloudseg.eval.config import EvalError

__all__ = ["save_figure", "save_panel"]

PANEL_WIDTH = 1024  # each tile of a panel, in pixels


def _tile(rgb: np.ndarray, title: str) -> np.ndarray:
    """Resize to the panel width and write the title in the top-left corner."""
    h, w = rgb.shape[:2]
    interpolation = cv2.INTER_AREA if w > PANEL_WIDTH else cv2.INTER_NEAREST
    tile = cv2.resize(rgb, (PANEL_WIDTH, h * PANEL_WIDTH // w), interpolation=interpolation)
    for color, thickness in (((0, 0, 0), 5), ((255, 255, 255), 2)):
        cv2.putText(
            tile, title, (12, 36), cv2.FONT_HERSHEY_SIMPLEX, 1.0, color, thickness, cv2.LINE_AA
        )
    return tile


def save_panel(
    path: Path,
    reference: np.ndarray,
    truth: np.ndarray,
    rows: list[tuple[str, np.ndarray, np.ndarray]],
) -> None:
    """A picture of one frame: (image | labels) per row, the original and ground truth first."""
    lines = [(_tile(reference, "original"), _tile(colorize(truth), "ground truth"))]
    for name, restored, labels in rows:
        lines.append((_tile(restored, name), _tile(colorize(labels), f"{name} labels")))
    panel = np.concatenate([np.concatenate(pair, axis=1) for pair in lines], axis=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(panel, cv2.COLOR_RGB2BGR))


def save_figure(
    path: Path,
    reference: np.ndarray,
    truth: np.ndarray,
    rows: list[tuple[str, np.ndarray, np.ndarray]],
    box: tuple[int, int, int, int],
) -> None:
    """Crops of one frame: (image | labels) per row beside the original and ground truth.
    ``box`` is (x, y, width, height) in camera pixels; images segmented at a reduced size are
    cropped at their own scale and shown enlarged (nearest neighbour: pixels as they are)."""
    x, y, w, h = box
    height, width = truth.shape[:2]
    if x + w > width or y + h > height:
        raise EvalError(f"--figure-crop {x},{y},{w},{h} is outside the {width}x{height} frame")

    def crop(image: np.ndarray) -> np.ndarray:
        f = width / image.shape[1]
        part = image[round(y / f) : round((y + h) / f), round(x / f) : round((x + w) / f)]
        return cv2.resize(part, (w, h), interpolation=cv2.INTER_NEAREST)

    def titled(image: np.ndarray, title: str) -> np.ndarray:
        tile = np.ascontiguousarray(image)
        for color, thickness in (((0, 0, 0), 4), ((255, 255, 255), 1)):
            cv2.putText(
                tile, title, (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, color, thickness, cv2.LINE_AA
            )
        return tile

    lines = [(titled(crop(reference), "original"), titled(colorize(crop(truth)), "ground truth"))]
    for name, restored, labels in rows:
        lines.append(
            (titled(crop(restored), name), titled(colorize(crop(labels)), f"{name} labels"))
        )
    gap = np.full((h, 4, 3), 255, np.uint8)
    figure = np.concatenate([np.concatenate([a, gap, b], axis=1) for a, b in lines], axis=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(figure, cv2.COLOR_RGB2BGR))
