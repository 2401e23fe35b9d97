"""Full-reference image quality: PSNR and SSIM (Wang et al. 2004) over uint8 images."""

from __future__ import annotations

import math

import cv2
import numpy as np

_SSIM_SIGMA = 1.5
_SSIM_WIN = 11
_SSIM_K1 = 0.01
_SSIM_K2 = 0.03


def _check_pair(a: np.ndarray, b: np.ndarray) -> None:
    for name, x in (("a", a), ("b", b)):
        if not isinstance(x, np.ndarray):
            raise ValueError(f"{name} must be a numpy array, got {type(x).__name__}")
        if x.ndim not in (2, 3) or x.size == 0:
            raise ValueError(f"{name} must be a non-empty HxW or HxWxC image, got {x.shape}")
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")


def psnr(a: np.ndarray, b: np.ndarray, data_range: float = 255) -> float:
    """Peak signal-to-noise ratio in dB over all pixels and channels; inf when identical."""
    _check_pair(a, b)
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(float(data_range) ** 2 / mse)


def ssim(a: np.ndarray, b: np.ndarray, data_range: float = 255) -> float:
    """Mean structural similarity, averaged over channels.

    Wang et al.'s standard settings: 11x11 Gaussian window with sigma 1.5, K1 0.01, K2 0.03,
    population statistics, and the mean taken over the region where the window fits (as the
    reference MATLAB code's 'valid' filtering; scikit-image's ``gaussian_weights=True`` gives
    the same numbers).
    """
    _check_pair(a, b)
    if min(a.shape[:2]) < _SSIM_WIN:
        raise ValueError(f"SSIM needs images at least {_SSIM_WIN}x{_SSIM_WIN}, got {a.shape}")
    x = a.astype(np.float64).reshape(a.shape[0], a.shape[1], -1)
    y = b.astype(np.float64).reshape(b.shape[0], b.shape[1], -1)
    c1 = (_SSIM_K1 * data_range) ** 2
    c2 = (_SSIM_K2 * data_range) ** 2
    pad = _SSIM_WIN // 2

    def blur(img: np.ndarray) -> np.ndarray:
        out = cv2.GaussianBlur(
            img, (_SSIM_WIN, _SSIM_WIN), _SSIM_SIGMA, borderType=cv2.BORDER_REFLECT
        )
        return out[pad:-pad, pad:-pad]

    scores = []
    for c in range(x.shape[2]):
        xc, yc = np.ascontiguousarray(x[..., c]), np.ascontiguousarray(y[..., c])
        mu_x, mu_y = blur(xc), blur(yc)
        var_x = blur(xc * xc) - mu_x * mu_x
        var_y = blur(yc * yc) - mu_y * mu_y
        cov = blur(xc * yc) - mu_x * mu_y
        num = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
        den = (mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2)
        scores.append(float(np.mean(num / den)))
    return float(np.mean(scores))
