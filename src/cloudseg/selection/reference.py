"""The segmentation backend's labels on every frame of a sequence: what selection is judged by.

`cloudseg bench selector` scores the labels the vehicle holds at each camera frame against
these, and `cloudseg train selector` learns from them how much the labels change between two
frames (no ground truth needed). Labels are computed once per input, backend and resolution
with :class:`~cloudseg.restore.pipeline.RestorationPipeline` on the original frames (mode
``"full"``: at the backend's trained resolution), with a progress bar, and kept in a cache
(``$XDG_CACHE_HOME/cloudseg/labels``) so a second run reads them back.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cloudseg.data.sources import open_source

log = logging.getLogger(__name__)


@dataclass
class LabelledSequence:
    """Frames of one input (RGB, in order), their capture stamps and the backend's labels."""

    name: str
    frames: list[np.ndarray]
    stamps_ns: list[int]
    labels: list[np.ndarray]  # HxW uint8 train ids at the backend's resolution
    fps: float

    def __len__(self) -> int:
        return len(self.frames)


def labels_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "cloudseg" / "labels"


def _cache_key(path: Path, limit: int | None, backend: str) -> str:
    stat = path.stat()
    text = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{limit}|{backend}|full-v1"
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def load_labelled_sequence(
    path: str | Path,
    backend: str = "espnetv2",
    device: str = "auto",
    limit: int | None = None,
    cache: bool = True,
    progress: bool = True,
) -> LabelledSequence:
    """Read ``path`` (frame folder, video or bag) and the backend's labels on every frame."""
    path = Path(path)
    source = open_source(path, limit=limit)
    frames, stamps = [], []
    for frame in source:
        frames.append(frame.rgb)
        stamps.append(int(frame.stamp_ns))
    cache_file = labels_cache_dir() / f"{path.name}-{_cache_key(path, limit, backend)}.npz"
    labels: list[np.ndarray] | None = None
    if cache and cache_file.is_file():
        stored = np.load(cache_file)["labels"]
        if len(stored) == len(frames):
            labels = list(stored)
            log.info("labels of %s read from %s", path.name, cache_file)
    if labels is None:
        labels = segment_frames(frames, backend, device, progress, f"labels {path.name}")
        if cache:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            np.savez_compressed(cache_file, labels=np.stack(labels))
    return LabelledSequence(path.name, frames, stamps, labels, source.fps)


def full_resolution_segmenter(backend: str = "espnetv2", device: str = "auto"):
    """frame (HxWx3 uint8) -> the backend's labels on it, at its trained resolution (no SR,
    mode "full"): the reference of selection, profiling and `demo --score`."""
    import torch

    from cloudseg.restore.pipeline import RestorationPipeline

    pipeline = RestorationPipeline(None, backend, device=device)  # "auto" resolved there
    log.info("reference labels: %s", pipeline.describe())

    def segment(rgb: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return pipeline.process(rgb[None], "full").labels[0].cpu().numpy().astype(np.uint8)

    return segment


def segment_frames(
    frames: list[np.ndarray],
    backend: str = "espnetv2",
    device: str = "auto",
    progress: bool = True,
    what: str = "labels",
) -> list[np.ndarray]:
    """The backend's labels on each original frame (at its trained resolution)."""
    from tqdm import tqdm

    segment = full_resolution_segmenter(backend, device)
    bar = tqdm(frames, desc=what, unit="frame", disable=not progress, leave=False)
    return [segment(rgb) for rgb in bar]
