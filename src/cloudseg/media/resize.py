"""The one downsampling function shared by the compressor, evaluation and training.

SR only helps when it was trained on the degradation it meets (the official CARN-M gains
2.4 dB after area downsampling and loses 2 dB after non-antialiased bilinear), so every
component downsamples through :func:`downsample` (numpy, uint8) or :func:`downsample_tensor`
(torch, float NCHW), which give the same numbers within rounding.

An image whose height or width is not a multiple of ``scale`` is first cropped at the bottom
and right to the nearest multiple, so each output pixel covers exactly ``scale x scale`` input
pixels (Cityscapes' 2048x1024 divides by 1, 2, 4 and 8, so nothing is cropped there).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:
    import torch

METHODS = ("area", "bilinear_noaa", "bicubic")

_CV2_INTERPOLATION = {
    "area": cv2.INTER_AREA,
    "bilinear_noaa": cv2.INTER_LINEAR,
    "bicubic": cv2.INTER_CUBIC,
}


def check_rgb(rgb: object, what: str = "image") -> np.ndarray:
    """Return ``rgb`` if it is an HxWx3 uint8 array, else raise ValueError saying why."""
    if not isinstance(rgb, np.ndarray):
        raise ValueError(f"{what} must be a numpy array, got {type(rgb).__name__}")
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"{what} must be HxWx3 (RGB), got shape {rgb.shape}")
    if rgb.dtype != np.uint8:
        raise ValueError(f"{what} must be uint8, got {rgb.dtype}")
    if rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise ValueError(f"{what} is empty: shape {rgb.shape}")
    return rgb


def _check_scale_method(scale: int, method: str) -> None:
    if isinstance(scale, bool) or not isinstance(scale, (int, np.integer)):
        raise ValueError(f"scale must be an integer, got {scale!r}")
    if scale < 1:
        raise ValueError(f"scale must be >= 1, got {scale}")
    if method not in METHODS:
        raise ValueError(f"unknown downsampling method {method!r}; known: {', '.join(METHODS)}")


def _check_fits(height: int, width: int, scale: int) -> None:
    if height < scale or width < scale:
        from cloudseg.guard import BadInput  # a ValueError: an input problem, kind "size"

        raise BadInput(
            f"image {width}x{height} is smaller than the downsampling scale {scale}", "size"
        )


def downsample(rgb: np.ndarray, scale: int, method: str = "area") -> np.ndarray:
    """Downsample an HxWx3 uint8 image by an integer ``scale`` to (H//scale)x(W//scale)x3.

    Methods: ``"area"`` (cv2.INTER_AREA: the mean of each scale x scale block, rounded),
    ``"bilinear_noaa"`` (cv2.INTER_LINEAR on a downscale: bilinear without antialiasing, as
    the paper's TensorFlow resize), ``"bicubic"`` (cv2.INTER_CUBIC). Scale 1 returns the input
    unchanged (the same object).
    """
    check_rgb(rgb)
    _check_scale_method(scale, method)
    if scale == 1:
        return rgb
    height, width = rgb.shape[:2]
    _check_fits(height, width, scale)
    out_h, out_w = height // scale, width // scale
    cropped = rgb[: out_h * scale, : out_w * scale]
    return cv2.resize(cropped, (out_w, out_h), interpolation=_CV2_INTERPOLATION[method])


def upsample_bilinear(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an HxWx3 uint8 image to ``size`` = (width, height) with cv2.INTER_LINEAR.

    This is the paper's LR-bilinear baseline restoration.
    """
    check_rgb(rgb)
    if len(size) != 2 or any(int(v) < 1 for v in size):
        raise ValueError(f"size must be (width, height) with positive values, got {size!r}")
    width, height = int(size[0]), int(size[1])
    if (width, height) == (rgb.shape[1], rgb.shape[0]):
        return rgb
    return cv2.resize(rgb, (width, height), interpolation=cv2.INTER_LINEAR)


def resize_labels(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Class-id labels (HxW) at ``size`` = (width, height), nearest neighbour (ids are never
    blended); returned unchanged when they already have that size."""
    width, height = size
    if labels.shape[:2] == (height, width):
        return labels
    return cv2.resize(labels, (width, height), interpolation=cv2.INTER_NEAREST)


def downsample_tensor(x: torch.Tensor, scale: int, method: str = "area") -> torch.Tensor:
    """Torch twin of :func:`downsample` for float NCHW tensors (any value range).

    ``"area"`` is ``F.avg_pool2d``; ``"bilinear_noaa"`` and ``"bicubic"`` are
    ``F.interpolate(align_corners=False, antialias=False)``. The result is float and not
    clamped; rounded to uint8 it matches :func:`downsample` within one grey level.
    """
    import torch
    import torch.nn.functional as F

    if not isinstance(x, torch.Tensor):
        raise ValueError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 4:
        raise ValueError(f"x must be NCHW, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"x must be a float tensor, got {x.dtype}")
    _check_scale_method(scale, method)
    if scale == 1:
        return x
    height, width = x.shape[-2:]
    _check_fits(height, width, scale)
    out_h, out_w = height // scale, width // scale
    x = x[..., : out_h * scale, : out_w * scale]
    if method == "area":
        return F.avg_pool2d(x, kernel_size=scale, stride=scale)
    mode = "bilinear" if method == "bilinear_noaa" else "bicubic"
    return F.interpolate(x, size=(out_h, out_w), mode=mode, align_corners=False, antialias=False)
