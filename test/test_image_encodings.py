"""Image encodings beyond rgb8/bgr8/mono8 become RGB as cv_bridge converts them."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from cloudseg.media.image import ENCODINGS, ImageError, image_pixels, image_to_rgb

# Where R, G and B sit in each 2x2 Bayer tile (row, column), by the encoding's name.
BAYER_TILES = {
    "rggb": {"r": (0, 0), "g": ((0, 1), (1, 0)), "b": (1, 1)},
    "bggr": {"r": (1, 1), "g": ((0, 1), (1, 0)), "b": (0, 0)},
    "gbrg": {"r": (1, 0), "g": ((0, 0), (1, 1)), "b": (0, 1)},
    "grbg": {"r": (0, 1), "g": ((0, 0), (1, 1)), "b": (1, 0)},
}


def _msg(encoding: str, pixels: np.ndarray, bigendian: bool | None = None, pad: int = 0):
    """An Image-like object holding `pixels` (rows padded by `pad` bytes)."""
    if bigendian is None:
        bigendian = sys.byteorder == "big"
    if pixels.dtype == np.uint16:
        pixels = pixels.astype(">u2" if bigendian else "<u2")
    height, width = pixels.shape[:2]
    raw = np.ascontiguousarray(pixels).view(np.uint8).reshape(height, -1)
    rows = np.concatenate([raw, np.full((height, pad), 77, np.uint8)], axis=1)
    return SimpleNamespace(
        encoding=encoding,
        height=height,
        width=width,
        step=rows.shape[1],
        is_bigendian=int(bigendian),
        data=rows.tobytes(),
    )


def _mosaic(rgb: np.ndarray, pattern: str) -> np.ndarray:
    """The Bayer image a sensor with `pattern` records of `rgb` (one value per pixel)."""
    out = np.zeros(rgb.shape[:2], rgb.dtype)
    tiles = BAYER_TILES[pattern]
    for channel, where in (("r", [tiles["r"]]), ("g", tiles["g"]), ("b", [tiles["b"]])):
        index = "rgb".index(channel)
        for dy, dx in where:
            out[dy::2, dx::2] = rgb[dy::2, dx::2, index]
    return out


@pytest.mark.parametrize("pattern", sorted(BAYER_TILES))
@pytest.mark.parametrize("bits", [8, 16])
def test_bayer_patterns_demosaic_to_the_recorded_colour(pattern, bits):
    """A flat colour recorded through each of the four Bayer patterns comes back as that
    colour (a wrong pattern swaps or mixes red and blue)."""
    colour = np.array([200, 100, 40])
    dtype = np.uint8 if bits == 8 else np.uint16
    rgb = np.broadcast_to(colour * (1 if bits == 8 else 257), (8, 10, 3)).astype(dtype)
    out = image_to_rgb(_msg(f"bayer_{pattern}{bits}", _mosaic(rgb, pattern), pad=3))
    assert out.shape == (8, 10, 3) and out.dtype == np.uint8
    assert np.array_equal(out[2:-2, 2:-2].reshape(-1, 3), np.tile(colour, (4 * 6, 1)))


def test_bayer_uses_cv_bridges_opencv_codes():
    """cv_bridge.cpp (getConversionCodes): rggb -> BayerBG, bggr -> BayerRG, gbrg -> BayerGR,
    grbg -> BayerGB, to RGB."""
    expected = {
        "rggb": cv2.COLOR_BayerBG2RGB,
        "bggr": cv2.COLOR_BayerRG2RGB,
        "gbrg": cv2.COLOR_BayerGR2RGB,
        "grbg": cv2.COLOR_BayerGB2RGB,
    }
    mosaic = np.random.default_rng(0).integers(0, 256, (6, 8), dtype=np.uint8)
    for pattern, code in expected.items():
        assert ENCODINGS[f"bayer_{pattern}8"].to_rgb == code
        got = image_to_rgb(_msg(f"bayer_{pattern}8", mosaic))
        assert np.array_equal(got, cv2.cvtColor(mosaic, code))


@pytest.mark.parametrize("encoding", ["mono16", "16UC1"])
@pytest.mark.parametrize("bigendian", [False, True])
def test_16_bit_mono_scales_by_255_over_65535(encoding, bigendian):
    """cv_bridge: 16 -> 8 bits is convertTo(..., 255/65535) (rounded), so 257 * k -> k and
    65535 -> 255; big-endian data is byte-swapped first. 16UC1 is read as mono16, as
    cvtColorForDisplay does."""
    values = (np.arange(256, dtype=np.uint16) * 257).reshape(16, 16)
    values[0, :4] = [128, 129, 383, 65535]
    out = image_to_rgb(_msg(encoding, values, bigendian=bigendian, pad=2))
    expected = np.arange(256, dtype=np.uint8).reshape(16, 16)
    expected[0, :4] = [0, 1, 1, 255]  # 0.498 -> 0, 0.502 -> 1, 1.49 -> 1
    assert np.array_equal(out, np.repeat(expected[..., None], 3, axis=2))
    native = image_pixels(_msg(encoding, values, bigendian=bigendian))
    assert native.dtype == np.uint16 and np.array_equal(native, values)


def test_16_bit_colour_keeps_channel_order():
    rgb = np.zeros((2, 3, 3), np.uint16)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 65535, 257 * 100, 0
    assert image_to_rgb(_msg("rgb16", rgb))[0, 0].tolist() == [255, 100, 0]
    assert image_to_rgb(_msg("bgr16", rgb[..., ::-1].copy(), bigendian=True))[1, 2].tolist() == [
        255,
        100,
        0,
    ]


def test_yuv422_and_bad_sizes():
    uyvy = np.full((2, 4, 2), 128, np.uint8)  # U/V 128 and Y 128: grey (BT.601 video range)
    out = image_to_rgb(_msg("yuv422", uyvy))
    assert out.shape == (2, 4, 3) and np.all(out == out[0, 0, 0]) and 125 < out[0, 0, 0] < 135
    with pytest.raises(ImageError, match="step"):
        image_to_rgb(SimpleNamespace(encoding="mono16", height=1, width=2, step=3, data=b"\0" * 3))
    with pytest.raises(ImageError, match="unsupported image encoding '32FC1'"):
        image_to_rgb(SimpleNamespace(encoding="32FC1", height=1, width=1, step=4, data=b"\0" * 4))
