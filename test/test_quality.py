"""cloudseg.media.quality: PSNR and SSIM."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from cloudseg.media.quality import psnr, ssim

FRAME = "cityscapes/leftImg8bit/val/frankfurt/frankfurt_000000_000294_leftImg8bit.png"


@pytest.fixture(scope="module")
def crop(shared_data: Path) -> np.ndarray:
    bgr = cv2.imread(str(shared_data / FRAME), cv2.IMREAD_COLOR)
    return np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)[300:556, 700:1212])


def _noisy(img: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0.0, sigma, img.shape)
    return np.clip(img + noise, 0, 255).round().astype(np.uint8)


def test_identical() -> None:
    img = np.random.default_rng(1).integers(0, 256, (32, 40, 3), dtype=np.uint8)
    assert psnr(img, img) == math.inf
    assert ssim(img, img) == pytest.approx(1.0, abs=1e-12)


def test_psnr_known_value() -> None:
    a = np.zeros((16, 16, 3), np.uint8)
    b = np.full((16, 16, 3), 10, np.uint8)
    assert psnr(a, b) == pytest.approx(10 * math.log10(255**2 / 100))
    assert psnr(a, b, data_range=1.0) == pytest.approx(10 * math.log10(1 / 100))


def test_noisier_scores_lower(crop: np.ndarray) -> None:
    mild, strong = _noisy(crop, 3.0), _noisy(crop, 12.0)
    assert 35 < psnr(crop, mild) < 45  # sigma 3: about 38.6 dB before clipping
    assert psnr(crop, strong) < psnr(crop, mild) - 8
    assert 0.5 < ssim(crop, strong) < ssim(crop, mild) < 1.0


def test_ssim_blur_and_symmetry(crop: np.ndarray) -> None:
    blurred = cv2.GaussianBlur(crop, (0, 0), 2.0)
    score = ssim(crop, blurred)
    assert 0.3 < score < 0.95
    assert ssim(blurred, crop) == pytest.approx(score, abs=1e-12)
    # Mean of the per-channel scores, computed channel by channel.
    per_channel = [ssim(crop[..., c], blurred[..., c]) for c in range(3)]
    assert score == pytest.approx(float(np.mean(per_channel)), abs=1e-12)


def test_ssim_matches_direct_formula_on_constant_window() -> None:
    # Two constant images: SSIM reduces to the luminance term (2ab + C1) / (a^2 + b^2 + C1).
    a, b = np.full((20, 20), 100, np.uint8), np.full((20, 20), 120, np.uint8)
    c1 = (0.01 * 255) ** 2
    assert ssim(a, b) == pytest.approx((2 * 100 * 120 + c1) / (100**2 + 120**2 + c1))


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="differ in shape"):
        psnr(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 5, 3), np.uint8))
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 3), np.uint8))
