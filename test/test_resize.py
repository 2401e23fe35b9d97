"""cloudseg.media.resize: the one downsampling function, its torch twin, bilinear restore."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from cloudseg.media.resize import METHODS, downsample, downsample_tensor, upsample_bilinear

FRAME = "cityscapes/leftImg8bit/val/frankfurt/frankfurt_000000_000294_leftImg8bit.png"


@pytest.fixture(scope="module")
def crop(shared_data: Path) -> np.ndarray:
    """A real 514x258 Cityscapes crop (not a multiple of 4, to exercise the edge crop)."""
    bgr = cv2.imread(str(shared_data / FRAME), cv2.IMREAD_COLOR)
    assert bgr is not None
    return np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)[300:558, 700:1214])


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("scale", [1, 2, 4])
def test_shapes(crop: np.ndarray, scale: int, method: str) -> None:
    out = downsample(crop, scale, method)
    assert out.shape == (258 // scale, 514 // scale, 3)
    assert out.dtype == np.uint8


def test_scale_one_is_identity(crop: np.ndarray) -> None:
    assert downsample(crop, 1) is crop


@pytest.mark.parametrize("scale", [2, 4])
def test_area_is_mean_pooling(crop: np.ndarray, scale: int) -> None:
    h, w = crop.shape[0] // scale * scale, crop.shape[1] // scale * scale
    blocks = crop[:h, :w].astype(np.float64).reshape(h // scale, scale, w // scale, scale, 3)
    mean = blocks.mean(axis=(1, 3))
    out = downsample(crop, scale, "area").astype(np.float64)
    tie = np.isclose(mean % 1, 0.5)
    # Exact where rounding is unambiguous; an exact .5 tie may go either way.
    np.testing.assert_array_equal(out[~tie], np.rint(mean[~tie]))
    assert np.all(np.abs(out[tie] - mean[tie]) == 0.5)


def test_methods_differ(crop: np.ndarray) -> None:
    area = downsample(crop, 4, "area").astype(int)
    noaa = downsample(crop, 4, "bilinear_noaa").astype(int)
    # Without antialiasing, a 4x bilinear reads 2 of every 4 pixels: visibly different.
    assert np.abs(area - noaa).mean() > 1.0


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_tensor_matches_numpy(crop: np.ndarray, scale: int, method: str) -> None:
    torch = pytest.importorskip("torch")
    x = torch.from_numpy(crop).permute(2, 0, 1)[None].float()
    y = downsample_tensor(x, scale, method)[0].permute(1, 2, 0).numpy()
    ref = downsample(crop, scale, method).astype(np.int16)
    got = np.clip(np.floor(y + 0.5), 0, 255).astype(np.int16)
    assert got.shape == ref.shape
    diff = np.abs(got - ref)
    assert diff.max() <= 1
    assert (diff > 0).mean() < 0.05


def test_tensor_scale_one_and_validation() -> None:
    torch = pytest.importorskip("torch")
    x = torch.rand(1, 3, 8, 8)
    assert downsample_tensor(x, 1) is x
    with pytest.raises(ValueError, match="NCHW"):
        downsample_tensor(torch.rand(3, 8, 8), 2)
    with pytest.raises(ValueError, match="float"):
        downsample_tensor(torch.zeros(1, 3, 8, 8, dtype=torch.uint8), 2)


def test_upsample_bilinear_restores_size(crop: np.ndarray) -> None:
    lr = downsample(crop, 4)
    up = upsample_bilinear(lr, (514, 258))
    assert up.shape == (258, 514, 3)
    np.testing.assert_array_equal(up, cv2.resize(lr, (514, 258), interpolation=cv2.INTER_LINEAR))
    with pytest.raises(ValueError, match="width, height"):
        upsample_bilinear(lr, (0, 10))


@pytest.mark.parametrize(
    ("image", "scale", "method", "match"),
    [
        (np.zeros((8, 8, 3), np.uint8), 0, "area", "scale must be >= 1"),
        (np.zeros((8, 8, 3), np.uint8), 2, "nearest", "unknown downsampling method"),
        (np.zeros((8, 8), np.uint8), 2, "area", "HxWx3"),
        (np.zeros((8, 8, 3), np.float32), 2, "area", "uint8"),
        (np.zeros((3, 8, 3), np.uint8), 4, "area", "smaller than the downsampling scale"),
    ],
)
def test_bad_input(image: np.ndarray, scale: int, method: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        downsample(image, scale, method)
