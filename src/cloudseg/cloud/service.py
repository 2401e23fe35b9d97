"""The cloud service behind the nodes: decode + (SR + segmentation) per frame, no ROS.

`CloudService` keeps one decoder per stream (`StreamDecoder`) and one `RestorationPipeline`
per downsampling scale (the models are built once and shared), and turns an encoded payload
into labels at the camera's size, the restored image and stage timings. Scales come from the
wire: only allowed ones (`scales`, `cloudseg.graph.SCALES` by default) get a pipeline, and at
most `max_pipelines` are kept (least recently used first out; the x4 one stays).

With `restore_only=True` it builds no segmenter and serves stage 1 only (`restore`,
`restore_image`): a split cloud's sr process, which publishes the restored image for the
segmentation process (`segment_restored`, labels scaled back to the camera size it is told).
"""

from __future__ import annotations

import functools
import logging
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from cloudseg.graph import SCALES
from cloudseg.guard import BadInput
from cloudseg.media.resize import resize_labels
from cloudseg.media.stream import StreamDecoder
from cloudseg.restore.backends import resolve_device
from cloudseg.restore.labels import class_names, mark_untrained, overlay
from cloudseg.restore.pipeline import RestorationPipeline
from cloudseg.restore.results import PipelineResult, Pyramid
from cloudseg.routes import seg_weights_for

log = logging.getLogger(__name__)


@dataclass
class CloudResult:
    work_labels: np.ndarray  # HxW uint8 train ids at the size that was segmented
    restored: np.ndarray  # HxWx3 uint8, the image that was segmented (may be reduced on CPU)
    camera_size: tuple[int, int]  # (width, height) of the original frame
    decode_ms: float
    sr_ms: float
    segmentation_ms: float
    mode: str
    untrained: tuple[str, ...]

    @functools.cached_property
    def labels(self) -> np.ndarray:
        """Train ids at the camera's size (nearest-neighbour when segmented smaller)."""
        return resize_labels(self.work_labels, self.camera_size)

    @classmethod
    def from_pipeline(
        cls, result: PipelineResult, camera_size: tuple[int, int], decode_ms: float = 0.0
    ) -> CloudResult:
        """The first frame of a pipeline batch, moved to the host."""
        return cls(
            result.labels[0].cpu().numpy(),
            result.restored[0].cpu().numpy(),
            camera_size,
            decode_ms,
            result.timings_ms["sr"],
            result.timings_ms["segmentation"],
            result.mode,
            result.untrained,
        )

    def overlay(self, alpha: float = 0.5) -> np.ndarray:
        out = overlay(self.restored, self.work_labels, alpha)
        if self.untrained:
            out = mark_untrained(out, self.untrained)
        return out


@dataclass
class RestoredImage:
    """Stage 1 on the host: what a split cloud's sr process publishes."""

    rgb: np.ndarray  # HxWx3 uint8 at 1/reduced_by of the camera size
    sr_ms: float
    mode: str  # "sr", "bilinear" or "full" (a scale-1 frame)
    reduced_by: int
    untrained: tuple[str, ...]


class CloudService:
    """Decode, restore (SR or bilinear) and segment frames of one stream."""

    def __init__(
        self,
        sr_model: str | None = "carn_m",
        backend: str = "espnetv2",
        device: str = "auto",
        dtype: str = "fp32",
        cpu_max_width: int | None = 1024,
        allow_untrained: bool = False,
        sr_weights: str = "default",
        seg_weights: str = "default",
        scales: Iterable[int] = SCALES,
        max_pipelines: int = 4,
        restore_only: bool = False,
        seg_size: str = "trained",
    ) -> None:
        self.device = resolve_device(device)  # cuda:N is CUDA too: compare by .type only
        cuda = self.device.type == "cuda"
        self.scales = tuple(int(s) for s in scales)
        self.max_pipelines = max(1, int(max_pipelines))
        self.options = {
            "device": self.device,
            "dtype": dtype if cuda else "fp32",
            "cpu_max_width": None if cuda else cpu_max_width,
            "return_restored": True,
            "seg_size": seg_size,
        }
        self.backend = backend
        first = RestorationPipeline(
            sr_model,
            backend,
            sr_weights=sr_weights,
            seg_weights=seg_weights_for(backend, seg_weights),
            allow_untrained=allow_untrained,
            scale=4,
            restore_only=restore_only,
            **self.options,
        )
        self.first = first
        self.pipelines: OrderedDict[int, RestorationPipeline] = OrderedDict({4: first})
        self.decoder = StreamDecoder()
        self._routes: set[tuple] = set()  # (LR size, scale, mode) already said
        log.info("cloud pipeline: %s", first.describe())

    @classmethod
    def from_params(cls, p: dict, **options) -> CloudService:
        """A service from a node's model and device parameters (the graph's sr/segmentation
        specs); `options` add the rest (scales, restore_only, ...)."""
        return cls(
            sr_model=None if p["sr_model"] == "none" else p["sr_model"],
            sr_weights=p["sr_weights"],
            seg_weights=p.get("seg_weights", "default"),
            backend=p["backend"],
            device=p["device"],
            dtype=p["dtype"],
            cpu_max_width=p["cpu_max_width"] or None,
            allow_untrained=p["allow_untrained"],
            **options,
        )

    def describe(self) -> str:
        return self.first.describe()

    @property
    def class_names(self) -> tuple[str, ...]:
        """The segmenter's class names by train id (its weights' metadata, else Cityscapes')."""
        info = getattr(self.first.segmenter, "weights_info", None)
        return class_names(getattr(info, "meta", None))

    def new_route(self, lr_shape: tuple[int, ...], scale: int, sr_bypass: bool) -> str | None:
        """The route of a frame (`RestorationPipeline.route`: the real camera size, known only
        once frames come) the first time one of its size, scale and mode comes, else None."""
        pipe = self.pipeline(scale)
        mode = self.mode(pipe, scale, sr_bypass)
        key = (tuple(lr_shape[:2]), int(scale), mode)
        if key in self._routes:
            return None
        self._routes.add(key)
        return pipe.route(lr_shape[1], lr_shape[0], mode)

    def limit_scales(self, scales: Iterable[int]) -> None:
        """Serve only these scales from now on (the sr node's `scales` parameter)."""
        self.scales = tuple(int(s) for s in scales)

    def pipeline(self, scale: int) -> RestorationPipeline:
        """The pipeline of one downsampling factor: built on first use (sharing the models),
        only for allowed scales, at most `max_pipelines` kept (least recently used out)."""
        scale = int(scale)
        if scale in self.pipelines:
            self.pipelines.move_to_end(scale)
            return self.pipelines[scale]
        if scale not in self.scales and scale != 1:  # scale 1: profiling, segment_restored
            allowed = ", ".join(map(str, self.scales))
            raise BadInput(f"scale {scale} is not served (allowed: {allowed})", "scale")
        first = self.first
        sr = first.sr if scale in getattr(first.sr, "scales", ()) else None
        self.pipelines[scale] = pipe = RestorationPipeline.from_modules(
            sr, first.segmenter, self.backend, scale=scale, **self.options
        )
        while len(self.pipelines) > self.max_pipelines:
            victim = next(k for k in self.pipelines if self.pipelines[k] is not first)
            del self.pipelines[victim]
        return pipe

    def decode(
        self, payload: bytes, codec: str, seq: int, scale: int, width: int, height: int
    ) -> tuple[np.ndarray | None, float]:
        """Decode every frame (cheap, keeps the H.264 reference chain); None while waiting."""
        return self.decoder.decode(payload, codec, seq, scale, width, height)

    def restore(self, lr: np.ndarray, scale: int, sr_bypass: bool = False) -> Pyramid:
        """Stage 1 (the SR node's): SR x2 + x4 in one pass (or bilinear); stays on the device."""
        pipe = self.pipeline(scale)
        return pipe.restore(lr[None], self.mode(pipe, scale, sr_bypass))

    @staticmethod
    def mode(pipe: RestorationPipeline, scale: int, sr_bypass: bool) -> str:
        """How a frame at ``scale`` is restored: "full" (scale 1), "bilinear" or "sr"."""
        return "full" if scale == 1 else ("bilinear" if sr_bypass or pipe.sr is None else "sr")

    def restore_image(self, lr: np.ndarray, scale: int, sr_bypass: bool = False) -> RestoredImage:
        """Stage 1 moved to the host: the image the segmenter would get (see `RestoredImage`)."""
        pipe = self.pipeline(scale)
        out = pipe.restore_image(lr[None], self.mode(pipe, scale, sr_bypass))
        return RestoredImage(
            out.images[0].cpu().numpy(), out.sr_ms, out.mode, out.reduced_by, pipe.untrained
        )

    def segment(
        self, pyramid: Pyramid, width: int, height: int, decode_ms: float = 0.0
    ) -> CloudResult:
        """Stage 2 (the segmentation node's): labels at the camera size from a pyramid."""
        result = self.pipeline(pyramid.scale).segment(pyramid)
        return CloudResult.from_pipeline(result, (width, height), decode_ms)

    def segment_lr(
        self,
        lr: np.ndarray,
        scale: int,
        width: int,
        height: int,
        sr_bypass: bool = False,
        decode_ms: float = 0.0,
    ) -> CloudResult:
        """Restore (SR or bilinear) and segment one decoded low-resolution frame."""
        return self.segment(self.restore(lr, scale, sr_bypass), width, height, decode_ms)

    def process(
        self,
        payload: bytes,
        codec: str,
        seq: int,
        scale: int,
        width: int,
        height: int,
        sr_bypass: bool = False,
    ) -> CloudResult | None:
        """One encoded frame -> labels; None while the decoder waits for an IDR frame."""
        lr, decode_ms = self.decode(payload, codec, seq, scale, width, height)
        if lr is None:
            return None
        return self.segment_lr(lr, scale, width, height, sr_bypass, decode_ms)

    def segment_restored(
        self, rgb: np.ndarray, camera_size: tuple[int, int] | None = None
    ) -> CloudResult:
        """Segment an already restored image (SR ran in another process): at its own size or
        smaller (trained resolution, CPU cap); `labels` at `camera_size` (width, height), by
        default the image's size."""
        result = self.pipeline(1).process(rgb[None], "full")
        return CloudResult.from_pipeline(result, camera_size or (rgb.shape[1], rgb.shape[0]))
