"""Cloud-side restoration: super-resolution + segmentation on one device (no ROS here)."""

from __future__ import annotations

from cloudseg.restore.backends import BACKENDS, PipelineError
from cloudseg.restore.labels import overlay
from cloudseg.restore.pipeline import MODES, RestorationPipeline
from cloudseg.restore.results import PipelineResult

__all__ = [
    "BACKENDS",
    "MODES",
    "PipelineError",
    "PipelineResult",
    "RestorationPipeline",
    "overlay",
]
