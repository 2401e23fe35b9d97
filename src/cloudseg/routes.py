"""Routes from the decoded low-resolution stream to labels: the one list of them.

A route is a restoration (none, bilinear x2, or CARN-M x2 with given weights) and a segmenter
with given weights, run at the resolution its weights were trained at. ``cloudseg eval`` has a
row per route; the cloud runs :data:`DEFAULT_ROUTE` (the graph's defaults for ``restore``,
``sr_weights`` and ``seg_weights`` come from it). Why the default is the default:
docs/training-and-evaluation.md, "Which route the cloud runs", and docs/benchmarks/accuracy.md,
"Learned routes".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = [
    "DEFAULT_ROUTE",
    "ROUTES",
    "SEG_HR",
    "SEG_LR",
    "Route",
    "route_pipeline",
    "seg_weights_for",
]

SEG_HR = "espnetv2_s2_city_1024x512"
SEG_LR = "espnetv2_s2_city_512x256"


@dataclass(frozen=True)
class Route:
    """``segmenter`` (a registry name) with ``seg_weights`` (a key of its weights), fed by
    ``sr_weights`` (CARN-M weights key; None: bilinear, or nothing when the segmenter runs at
    the low resolution)."""

    name: str
    segmenter: str
    seg_weights: str
    sr_weights: str | None
    learned: bool
    description: str

    @property
    def mode(self) -> str:
        """The pipeline mode: "sr" or "bilinear" (x1 for a low-resolution segmenter)."""
        return "bilinear" if self.sr_weights is None else "sr"


ROUTES: dict[str, Route] = {
    r.name: r
    for r in (
        Route("bilinear", SEG_HR, "city", None, False, "bilinear x2, official ESPNetv2 1024x512"),
        Route("lr_seg", SEG_LR, "city", None, False, "official ESPNetv2 512x256 on the LR frame"),
        Route("sr", SEG_HR, "city", "div2k", False, "official CARN-M x2, official ESPNetv2"),
        Route("sr_ft", SEG_HR, "city", "cloudseg_ft", True, "SR-FT CARN-M x2, official ESPNetv2"),
        Route(
            "lr_seg_ft",
            SEG_LR,
            "cloudseg_stream",
            None,
            True,
            "ESPNetv2 512x256 adapted to the decoded LR frame",
        ),
        Route(
            "bilinear_seg_ft",
            SEG_HR,
            "cloudseg_stream",
            None,
            True,
            "bilinear x2, ESPNetv2 1024x512 adapted to it",
        ),
        Route(
            "sr_seg_ft",
            SEG_HR,
            "cloudseg_stream_sr",
            "cloudseg_ft",
            True,
            "SR-FT CARN-M x2, ESPNetv2 1024x512 adapted to its output (both)",
        ),
    )
}

DEFAULT_ROUTE = ROUTES["bilinear_seg_ft"]
"""What the cloud runs by default (docs/benchmarks/accuracy.md, "Learned routes": the best
accuracy for its cost through the default stream)."""


def route_pipeline(route: Route, **options: Any):
    """The serving pipeline of ``route`` (``options``: RestorationPipeline's keyword options)."""
    from cloudseg.restore.pipeline import RestorationPipeline

    return RestorationPipeline(
        None if route.sr_weights is None else "carn_m",
        route.segmenter,
        sr_weights=route.sr_weights or "default",
        seg_weights=route.seg_weights,
        **options,
    )


def seg_weights_for(backend: str, seg_weights: str) -> str:
    """``seg_weights`` for ``backend`` (a backend or registry name): the default route's key
    where the backend's model has no such weights (ICNet) becomes "default" (its own)."""
    from cloudseg.models.registry import get_spec
    from cloudseg.restore.backends import BACKENDS

    if seg_weights != DEFAULT_ROUTE.seg_weights:
        return seg_weights
    try:
        spec = get_spec(BACKENDS.get(backend, backend))
    except KeyError:
        return seg_weights
    return seg_weights if seg_weights in spec.weights else "default"
