"""The cloud-side restoration pipeline: super-resolution and segmentation on one device.

A batch of low-resolution frames (one per stream, all the same size) goes through

* mode ``"sr"``: CARN restores LR to MR (x2) and HR (x4) in ONE pass of its body
  (:meth:`CARN.forward_pyramid`); ``"bilinear"``: SR bypass, bilinear upsampling on the device
  (``F.interpolate(align_corners=False)``); ``"full"``: the input already is full resolution;
* segmentation: ICNet gets the pyramid directly, levels ``{4: lr, 2: mr, 1: hr}`` = (the LR
  input, the x2 output, the x4 output), normalised, with no re-downsampling of what SR
  produced; ESPNetv2 gets HR. Labels are Cityscapes train ids (uint8), 255 where the model
  says background / ignore.

Everything stays on the device between the stages (no host copy until the caller asks for
one). Stage times come from ``torch.cuda.Event`` on CUDA and ``time.perf_counter`` on CPU.

**The segmenter at its trained resolution** (``seg_size="trained"``, the default). A
checkpoint's weights carry the resolution they were trained at (registry metadata, e.g.
1024x512 for ESPNetv2's Cityscapes weights): a 2048x1024 camera frame is then segmented at
1024x512, that is at ``1/k`` of the camera size with ``k = round(camera width / trained
width)``. With a x4 stream, SR then runs x2 straight to the segmentation size (``sr_route=
"direct"``), or x4 to the camera size followed by area downsampling by ``k`` (``"full"``).
``seg_size="full"`` segments at the camera size (the paper's setting). Labels and restored
images are ``k`` times smaller than the camera frame; :attr:`PipelineResult.reduced_by` says
``k`` and the caller scales labels back to the camera (nearest neighbour).

**Reduced-resolution CPU mode.** With ``cpu_max_width=W`` (CPU only) ``k`` is raised, when
needed, until the segmentation size is at most ``W`` wide (SR + segmentation at full size
take many seconds per frame on a 2-core CPU). Off by default (``None``).

**Restore only** (``restore_only=True``): no segmenter is built; :meth:`RestorationPipeline.
restore_image` gives the restored image (uint8) at the size the backend would segment (its
trained resolution from the registry, the CPU cap), or at the camera size with
``seg_size="full"``, as a split cloud's sr process publishes it for the segmentation process.
On a CPU its bilinear upsampling runs on uint8 (within 1 of the float path, ~10x faster at
2048x1024: the bilinear baseline keeps up).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cloudseg.media.resize import downsample_tensor
from cloudseg.models.icnet import INPUT_MEAN, INPUT_STD  # ImageNet: ESPNetv2 uses the same
from cloudseg.restore.backends import (
    DTYPES,
    PipelineError,
    build_network,
    registered_model,
    resolve_device,
    segmentation_backend,
    trained_resolution,
)
from cloudseg.restore.labels import IGNORE_ID, NUM_CLASSES
from cloudseg.restore.results import PipelineResult, Pyramid, Restored, to_uint8

__all__ = ["MODES", "SEG_SIZES", "SR_ROUTES", "RestorationPipeline"]

MODES = ("sr", "bilinear", "full")
SEG_SIZES = ("trained", "full")
SR_ROUTES = ("direct", "full")
_ESPNET_STRIDE = 16  # ESPNetv2 needs sides that are multiples of 16: pad, then crop


class RestorationPipeline:
    """SR (optional) + segmentation of batches of frames on one device.

    ``sr_model``: a registered SR model name ("carn_m", "carn") or None (modes "bilinear" and
    "full" only). ``backend``: "espnetv2" or "icnet" (or a registered model name of either).
    ``dtype``: "fp32", "fp16" or "bf16" (the latter two on CUDA only). ``channels_last``:
    default on for CUDA. ``sr_weights`` / ``seg_weights``: "default" (registry lookup), a
    path, or None (random init, needs ``allow_untrained``). ``allow_untrained`` also lets a
    model without any published checkpoint (ICNet here) run with random weights: then
    :attr:`untrained` names it and every result carries the names. ``compile``: wrap both
    networks in ``torch.compile(mode="reduce-overhead")`` (CUDA only, off by default; SR outputs
    are copied out of the CUDA graph's memory, so a pyramid outlives the next call).
    ``seg_size``: "trained" (segment at the resolution the segmenter's weights were trained
    at; default) or "full" (at the camera size). ``sr_route``: "direct" (SR by the factor that
    reaches the segmentation size; default) or "full" (SR to the camera size, then area
    downsampling). See the module docstring. ``restore_only``: build no segmenter (stage 1
    only: :meth:`restore`, :meth:`restored`); the backend then only says the size to restore
    to (its registry default weights' trained resolution).
    """

    def __init__(
        self,
        sr_model: str | None = "carn_m",
        backend: str = "espnetv2",
        *,
        device: str | torch.device = "cpu",
        dtype: str = "fp32",
        channels_last: bool | None = None,
        sr_weights: str | Path | None = "default",
        seg_weights: str | Path | None = "default",
        allow_untrained: bool = False,
        scale: int = 4,
        cpu_max_width: int | None = None,
        compile: bool = False,
        return_restored: bool = False,
        seg_size: str = "trained",
        sr_route: str = "direct",
        restore_only: bool = False,
    ) -> None:
        kind, seg_name = segmentation_backend(backend)
        self._check_options(device, dtype, scale, cpu_max_width, compile)  # before loading
        sr = None
        if sr_model is not None:
            registered_model(sr_model, "sr", "super-resolution")
            sr = build_network(sr_model, sr_weights, allow_untrained)
        segmenter = None if restore_only else build_network(seg_name, seg_weights, allow_untrained)
        self._setup(
            sr,
            segmenter,
            kind,
            names=(sr_model, seg_name),
            device=device,
            dtype=dtype,
            channels_last=channels_last,
            scale=scale,
            cpu_max_width=cpu_max_width,
            compile=compile,
            return_restored=return_restored,
            seg_size=seg_size,
            sr_route=sr_route,
        )

    @classmethod
    def from_modules(
        cls,
        sr: nn.Module | None,
        segmenter: nn.Module | None,
        backend: str,
        **options: Any,
    ) -> RestorationPipeline:
        """A pipeline over already built models (e.g. a fine-tuned CARN sharing a segmenter).

        ``backend`` says how to feed ``segmenter`` ("espnetv2" or "icnet"); ``options`` are
        the keyword options of the constructor that do not build models (device, dtype, ...).
        ``segmenter`` None: a restore-only pipeline (see the constructor).
        """
        kind, seg_name = segmentation_backend(backend)
        self = cls.__new__(cls)
        names = (type(sr).__name__ if sr is not None else None, seg_name)
        self._setup(sr, segmenter, kind, names=names, **options)
        return self

    @staticmethod
    def _check_options(
        device: str | torch.device,
        dtype: str,
        scale: int,
        cpu_max_width: int | None,
        compile: bool,
    ) -> None:
        dev = resolve_device(device)
        if dtype not in DTYPES:
            raise PipelineError(f"unknown dtype {dtype!r}; known: {', '.join(DTYPES)}")
        if dev.type == "cpu" and dtype != "fp32":
            raise PipelineError(f"dtype {dtype} needs CUDA; the CPU path runs fp32")
        if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
            raise PipelineError(f"scale must be a positive integer, got {scale!r}")
        if cpu_max_width is not None and int(cpu_max_width) < 32:
            raise PipelineError(f"cpu_max_width must be at least 32, got {cpu_max_width}")
        if compile and dev.type != "cuda":
            raise PipelineError("compile=True is for CUDA (CUDA graphs); not on CPU")

    def _setup(
        self,
        sr: nn.Module | None,
        segmenter: nn.Module | None,
        kind: str,
        *,
        names: tuple[str | None, str],
        device: str | torch.device = "cpu",
        dtype: str = "fp32",
        scale: int = 4,
        cpu_max_width: int | None = None,
        compile: bool = False,
        channels_last: bool | None = None,
        return_restored: bool = False,
        seg_size: str = "trained",
        sr_route: str = "direct",
    ) -> None:
        self._check_options(device, dtype, scale, cpu_max_width, compile)
        if seg_size not in SEG_SIZES:
            raise PipelineError(f"seg_size must be one of {SEG_SIZES}, got {seg_size!r}")
        if sr_route not in SR_ROUTES:
            raise PipelineError(f"sr_route must be one of {SR_ROUTES}, got {sr_route!r}")
        self.seg_size = seg_size
        self.sr_route = sr_route
        self.trained_resolution = trained_resolution(segmenter, names[1])
        self.device = resolve_device(device)
        self.dtype_name = dtype
        self.dtype = DTYPES[dtype]
        self.cuda = self.device.type == "cuda"
        self.channels_last = self.cuda if channels_last is None else bool(channels_last)
        self.scale = int(scale)
        self.cpu_max_width = None if cpu_max_width is None else int(cpu_max_width)
        self.return_restored = bool(return_restored)
        self.backend = kind
        self.sr_name, self.seg_name = names
        if sr is not None and self.scale != 1 and self.scale not in getattr(sr, "scales", ()):
            raise PipelineError(
                f"SR model has no x{self.scale} head (heads: {getattr(sr, 'scales', ())})"
            )
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        self.sr = None if sr is None else sr.eval().to(self.device, self.dtype, memory_format=fmt)
        self.segmenter = (
            None
            if segmenter is None
            else segmenter.eval().to(self.device, self.dtype, memory_format=fmt)
        )
        self.untrained = tuple(
            n or type(m).__name__
            for n, m in zip(names, (sr, segmenter), strict=True)
            if m is not None and getattr(m, "untrained", False)
        )
        self._mean = torch.tensor(INPUT_MEAN, device=self.device, dtype=self.dtype).view(1, 3, 1, 1)
        self._std = torch.tensor(INPUT_STD, device=self.device, dtype=self.dtype).view(1, 3, 1, 1)
        sr_fn: Callable[..., dict[int, Tensor]] | None = None
        if self.sr is not None:
            sr_fn = self.sr.forward_pyramid
        seg_fn: Callable[..., Tensor] | None = self.segmenter
        self.compiled = bool(compile)
        if compile:
            sr_fn = None if sr_fn is None else torch.compile(sr_fn, mode="reduce-overhead")
            seg_fn = None if seg_fn is None else torch.compile(seg_fn, mode="reduce-overhead")
        self._sr_fn, self._seg_fn = sr_fn, seg_fn

    def describe(self) -> str:
        """One line: models (and SR weights), device, dtype, the size the segmenter runs at, and
        an UNTRAINED marker where it applies."""
        sr = self.sr_name or "none"
        weights = getattr(getattr(self.sr, "weights_info", None), "filename", None)
        if weights:
            sr += f" ({weights})"
        restore_only = self.segmenter is None
        segmenter = f"{self.seg_name} ({self.backend})"
        text = (
            (
                f"SR {sr} x{self.scale}, restore only, for {segmenter}"
                if restore_only
                else f"SR {sr} x{self.scale} + {segmenter}"
            )
            + f" on {self.device} {self.dtype_name}"
            + (", channels_last" if self.channels_last else "")
            + (", compiled" if self.compiled else "")
        )
        verb = "restores to" if restore_only else "segments at"
        if self.seg_size == "trained" and self.trained_resolution is not None:
            w, h = self.trained_resolution
            text += f"; {verb} its trained resolution {w}x{h}"
        else:
            text += f"; {verb} the camera size"
        if self.cpu_max_width is not None and not self.cuda:
            text += f", at most {self.cpu_max_width} px wide on CPU"
        if self.untrained:
            text += f" [UNTRAINED: {', '.join(self.untrained)} has random weights]"
        return text

    def route(self, lr_width: int, lr_height: int, mode: str = "sr") -> str:
        """How a frame of this low-resolution size is restored and segmented, said for the
        camera it came from (the stream is 1/scale of it; mode "full": the camera frame)."""
        scale = 1 if mode == "full" else self.scale
        camera = (lr_width * scale, lr_height * scale)
        k = self._reduction(lr_width, mode)
        if scale == 1 or k >= scale:
            how = "no upsampling" + (f" (the stream at 1/{k // scale})" if k > scale else "")
        else:
            direct = self.scale % k == 0 and (self.sr_route == "direct" or mode == "bilinear")
            up = "SR" if mode == "sr" else "bilinear"
            how = f"{up} x{scale // k}" if direct else f"{up} x{scale}, then 1/{k}"
        return (
            f"a {camera[0]}x{camera[1]} camera (x{scale} stream, {lr_width}x{lr_height}): "
            f"{how}, segmented at {camera[0] // k}x{camera[1] // k}"
        )

    # --- processing -------------------------------------------------------------------------

    def _to_device(self, frames: np.ndarray | Tensor) -> Tensor:
        """Validate a uint8 (N, h, w, 3) batch (or one (h, w, 3) frame) and move it over."""
        if isinstance(frames, np.ndarray):
            if frames.dtype != np.uint8:
                raise PipelineError(f"frames must be uint8, got {frames.dtype}")
            tensor = torch.from_numpy(np.ascontiguousarray(frames))
        elif isinstance(frames, Tensor):
            if frames.dtype != torch.uint8:
                raise PipelineError(f"frames must be uint8, got {frames.dtype}")
            tensor = frames
        else:
            raise PipelineError(
                f"frames must be a numpy array or torch tensor, got {type(frames).__name__}"
            )
        if tensor.ndim == 3:
            tensor = tensor.unsqueeze(0)
        if tensor.ndim != 4 or tensor.shape[-1] != 3 or 0 in tuple(tensor.shape):
            raise PipelineError(
                f"frames must be N x h x w x 3 RGB (one size per batch), got {tuple(tensor.shape)}"
            )
        return tensor.to(self.device, non_blocking=True)

    def _reduction(self, width: int, mode: str) -> int:
        """k: the segmentation size is 1/k of the camera size (trained resolution, CPU cap)."""
        camera_width = width * (1 if mode == "full" or self.scale == 1 else self.scale)
        k = 1
        if self.seg_size == "trained" and self.trained_resolution is not None:
            k = max(1, round(camera_width / self.trained_resolution[0]))
        if not self.cuda and self.cpu_max_width is not None:
            k = max(k, math.ceil(camera_width / self.cpu_max_width))
        return k

    def _restore(self, x: Tensor, mode: str, k: int) -> dict[int, Tensor]:
        """{1: image at the segmentation size (1/k of the camera), 2: half of it, ...}: RGB
        float [0, 1]. ``x`` is the input (LR, or the camera frame for mode "full")."""
        if mode == "full" or self.scale == 1:
            return {1: downsample_tensor(x, k, "area") if k > 1 else x}
        if k >= self.scale:  # the segmentation size is the LR size or smaller: no upsampling
            factor = k // self.scale
            return {1: downsample_tensor(x, factor, "area") if factor > 1 else x}
        direct = self.scale % k == 0 and (self.sr_route == "direct" or mode == "bilinear")
        r = self.scale // k if direct else self.scale  # upsampling factor from LR
        if mode == "bilinear":  # ICNet also takes the half-size image (as from SR below)
            heads = {r: None, **({r // 2: None} if r == 4 and self.backend == "icnet" else {})}
            ups = {
                s: F.interpolate(x, scale_factor=s, mode="bilinear", align_corners=False).clamp_(
                    0.0, 1.0
                )
                for s in heads
            }
        else:
            if self._sr_fn is None:
                raise PipelineError("mode 'sr' needs an SR model (the pipeline was built without)")
            heads = getattr(self.sr, "scales", ())
            if r not in heads:
                raise PipelineError(f"SR model has no x{r} head (heads: {heads})")
            # ICNet also takes the half-size image: x2 comes with x4 from the same body pass
            extra = (r // 2,) if r == 4 and 2 in heads and self.backend == "icnet" else ()
            ups = self._sr_fn(x, scales=tuple(sorted((r, *extra))), clamp=True)
            if self.compiled:  # CUDA-graph outputs are overwritten by the next replay: a
                ups = {s: img.clone() for s, img in ups.items()}  # pyramid may be kept
        if not direct:  # SR to the camera size, then area downsampling to the segmentation size
            out = {1: downsample_tensor(ups[r], k, "area")}
            if self.scale % k == 0:
                out[self.scale // k] = x
            return out
        out = {r: x}
        for s, img in ups.items():
            out[r // s] = img
        return out

    def _normalise(self, x: Tensor) -> Tensor:
        return (x - self._mean) / self._std

    def _segment(self, levels: dict[int, Tensor]) -> Tensor:
        hr = levels[1]
        if self.backend == "icnet":
            branches = {1: self._normalise(hr)}
            for factor in (2, 4):
                img = levels.get(factor)
                if img is None:  # not produced by SR or the input: build it as ICNet would
                    img = F.interpolate(
                        hr, scale_factor=1 / factor, mode="bilinear", align_corners=True
                    )
                branches[factor] = self._normalise(img)
            logits = self._seg_fn(branches)
            return logits.argmax(1).to(torch.uint8)
        height, width = hr.shape[-2:]
        pad_h, pad_w = (-height) % _ESPNET_STRIDE, (-width) % _ESPNET_STRIDE
        x = self._normalise(hr)
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        logits = self._seg_fn(x)[..., :height, :width]
        labels = logits.argmax(1).to(torch.uint8)
        return labels.masked_fill_(labels >= NUM_CLASSES, IGNORE_ID)

    def _mark(self) -> Any:
        """A point in time on the device's stream (CUDA event) or on the host clock."""
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record(torch.cuda.current_stream(self.device))  # cuda:N's, not the current's
            return event
        return time.perf_counter()

    def _elapsed(self, marks: list[Any]) -> list[float]:
        """Milliseconds from the first mark to each mark (one host sync, at the end)."""
        if self.cuda:
            marks[-1].synchronize()
            return [marks[0].elapsed_time(m) for m in marks]
        return [(m - marks[0]) * 1e3 for m in marks]

    @torch.inference_mode()
    def restore(self, frames: np.ndarray | Tensor, mode: str = "sr") -> Pyramid:
        """Stage 1: move a uint8 (N, h, w, 3) batch to the device and restore it (SR x2 + x4
        in one pass, bilinear, or nothing for "full"). The pyramid stays on the device."""
        if mode not in MODES:
            raise PipelineError(f"unknown mode {mode!r}; known: {', '.join(MODES)}")
        if self.compiled:
            torch.compiler.cudagraph_mark_step_begin()
        marks = [self._mark()]
        frames_dev = self._to_device(frames)
        marks.append(self._mark())
        x = frames_dev.permute(0, 3, 1, 2).to(self.dtype).div_(255.0)
        reduced_by = self._reduction(x.shape[-1], mode)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        levels = self._restore(x, mode, reduced_by)
        marks.append(self._mark())
        return Pyramid(levels, mode, reduced_by, marks, self.scale)

    @torch.inference_mode()
    def restore_image(self, frames: np.ndarray | Tensor, mode: str = "sr") -> Restored:
        """Stage 1 without segmenting: the image the segmenter would get (1/``reduced_by`` of
        the camera size), as uint8. Syncs with the device once. What a split cloud's sr
        process publishes."""
        if mode == "bilinear" and not self.cuda:
            fast = self._bilinear_uint8(frames)
            if fast is not None:
                return fast
        pyramid = self.restore(frames, mode)
        images = to_uint8(pyramid.levels[1])
        span = self._elapsed(pyramid.marks)
        return Restored(images, pyramid.mode, pyramid.reduced_by, span[2] - span[1])

    def _bilinear_uint8(self, frames: np.ndarray | Tensor) -> Restored | None:
        """Bilinear upsampling on uint8 (CPU) when the route is a plain upsampling by
        ``scale / k``; None otherwise (the float path then runs)."""
        tensor = self._to_device(frames)
        t0 = time.perf_counter()
        k = self._reduction(tensor.shape[2], "bilinear")
        if self.scale == 1 or k >= self.scale or self.scale % k:
            return None
        x = tensor.permute(0, 3, 1, 2)  # a channels-last view of NHWC: no copy
        up = F.interpolate(x, scale_factor=self.scale // k, mode="bilinear", align_corners=False)
        images = up.permute(0, 2, 3, 1).contiguous()
        return Restored(images, "bilinear", k, (time.perf_counter() - t0) * 1e3)

    def mark(self) -> Any:
        """A time mark on the device's stream (CUDA event) or the host clock."""
        return self._mark()

    def elapsed_ms(self, marks: list[Any]) -> list[float]:
        """Milliseconds from the first mark to each (waits for the last one on CUDA)."""
        return self._elapsed(marks)

    @torch.inference_mode()
    def segment_labels(self, pyramid: Pyramid) -> Tensor:
        """Stage 2 without a host sync: (N, H, W) uint8 train ids on the device."""
        if self._seg_fn is None:
            raise PipelineError("this pipeline restores only (built with restore_only=True)")
        return self._segment(pyramid.levels)

    @torch.inference_mode()
    def segment(self, pyramid: Pyramid, *, return_restored: bool | None = None) -> PipelineResult:
        """Stage 2: segment a restored pyramid (ICNet takes LR, MR and HR as they are; ESPNetv2
        takes HR). Syncs with the device once, to read the stage times."""
        if self._seg_fn is None:
            raise PipelineError("this pipeline restores only (built with restore_only=True)")
        want_restored = self.return_restored if return_restored is None else return_restored
        labels = self._segment(pyramid.levels)
        seg_end = self._mark()
        restored = to_uint8(pyramid.levels[1]) if want_restored else None
        span = self._elapsed([*pyramid.marks, seg_end, self._mark()])
        timings = {
            "sr": span[2] - span[1],
            "segmentation": span[3] - span[2],
            "total": span[4],
        }
        return PipelineResult(
            labels, restored, timings, pyramid.mode, pyramid.reduced_by, self.untrained
        )

    def process(
        self,
        frames: np.ndarray | Tensor,
        mode: str = "sr",
        *,
        return_restored: bool | None = None,
    ) -> PipelineResult:
        """Restore and segment a batch of frames (both stages); see :class:`PipelineResult`.

        ``frames``: uint8 RGB (N, h, w, 3), numpy or a tensor (ideally already on the device);
        low resolution for modes "sr" and "bilinear", full resolution for "full".
        """
        return self.segment(self.restore(frames, mode), return_restored=return_restored)
