"""What every frame source yields (:class:`SourceFrame`) and raises (:class:`DataError`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_FPS = 17.0
"""Cityscapes' camera rate: stamps of folders and synthetic clips are made at this rate."""


class DataError(Exception):
    """A missing or malformed input (bag, folder, video, dataset); the message says what and why."""


@dataclass(frozen=True)
class SourceFrame:
    """One frame of a source: capture stamp (ns), RGB pixels (HxWx3 uint8), running index."""

    stamp_ns: int
    rgb: np.ndarray
    index: int


def stamp_ns(index: int, fps: float) -> int:
    return round(index * 1e9 / fps)


def check_fps(fps: float) -> float:
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps!r}")
    return float(fps)


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
