"""Cloud-side restoration: super-resolution + segmentation on one device (no ROS here)."""

from __future__ import annotations

from cloudseg.restore.pipeline import (
    BACKENDS,
    MODES,
    PipelineError,
    PipelineResult,
    RestorationPipeline,
    overlay,
)

__all__ = [
    "BACKENDS",
    "MODES",
    "PipelineError",
    "PipelineResult",
    "RestorationPipeline",
    "overlay",
]
