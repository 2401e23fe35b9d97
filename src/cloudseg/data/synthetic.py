"""The generated test clip: a gradient, moving shapes and a caption (no data needed)."""

from __future__ import annotations

from collections.abc import Iterator

import cv2
import numpy as np

from cloudseg.data.frames import DEFAULT_FPS, SourceFrame, check_fps, stamp_ns


def synthetic_frame(index: int, width: int = 1024, height: int = 512) -> np.ndarray:
    """Frame ``index`` of the generated test clip: gradient, moving shapes and a caption."""
    ys = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]
    xs = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :]
    img = np.empty((height, width, 3), np.uint8)
    img[..., 0] = (60 + 120 * ys + 40 * xs).astype(np.uint8)  # sky-to-road gradient
    img[..., 1] = (110 + 60 * xs * (1 - ys) + 40 * ys).astype(np.uint8)
    img[..., 2] = (200 - 110 * ys).astype(np.uint8)
    horizon = height // 2
    img[horizon:] = (img[horizon:].astype(np.uint16) * 2 // 3).astype(np.uint8)  # darker road

    s = min(width, height) / 512.0
    t = index / DEFAULT_FPS
    # A car-like box driving right, a ball bouncing, a pole-like bar sliding left.
    x0 = int((0.05 + 0.12 * t) % 1.0 * width)
    cv2.rectangle(
        img,
        (x0, int(horizon + 40 * s)),
        (x0 + int(160 * s), int(horizon + 110 * s)),
        (0, 0, 142),
        thickness=-1,
    )
    cx = int(width * (0.7 + 0.2 * np.sin(1.3 * t)))
    cy = int(horizon - abs(np.sin(2.1 * t)) * 150 * s)
    cv2.circle(img, (cx, cy), int(40 * s), (220, 20, 60), thickness=-1, lineType=cv2.LINE_AA)
    xb = int((0.9 - 0.08 * t) % 1.0 * width)
    cv2.rectangle(
        img,
        (xb, int(horizon - 180 * s)),
        (xb + int(14 * s), horizon + int(30 * s)),
        (153, 153, 153),
        thickness=-1,
    )
    tri = np.array(
        [
            [int(width * 0.35 + 60 * s * np.cos(t)), int(horizon + 150 * s)],
            [int(width * 0.45), int(horizon + 60 * s)],
            [int(width * 0.55 - 60 * s * np.cos(t)), int(horizon + 150 * s)],
        ],
        np.int32,
    )
    cv2.fillPoly(img, [tri], (244, 35, 232), lineType=cv2.LINE_AA)
    font = cv2.FONT_HERSHEY_SIMPLEX
    cv2.putText(
        img,
        "cloudseg test clip",
        (int(20 * s), int(50 * s)),
        font,
        1.4 * s,
        (255, 255, 255),
        max(1, int(3 * s)),
        cv2.LINE_AA,
    )
    cv2.putText(
        img,
        f"frame {index:04d}",
        (int(20 * s), int(95 * s)),
        font,
        1.0 * s,
        (255, 255, 0),
        max(1, int(2 * s)),
        cv2.LINE_AA,
    )
    return img


def check_synthetic(width: int, height: int, frames: int) -> None:
    if width < 16 or height < 16 or frames < 1:
        raise ValueError(
            f"synthetic clip needs width, height >= 16 and frames >= 1, "
            f"got {width}x{height}, {frames} frames"
        )


def iter_synthetic(
    width: int = 1024, height: int = 512, frames: int = 34, fps: float = DEFAULT_FPS
) -> Iterator[SourceFrame]:
    """A deterministic generated clip (for demos and tests when no input is given)."""
    fps = check_fps(fps)
    check_synthetic(width, height, frames)
    for index in range(frames):
        yield SourceFrame(stamp_ns(index, fps), synthetic_frame(index, width, height), index)
