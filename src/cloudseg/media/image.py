"""The pixels of a sensor_msgs/Image as numpy, with cv_bridge's conventions.

Works on any object with the Image fields (height, width, encoding, is_bigendian, step, data):
rclpy messages and rosbags messages alike. Imports no ROS package.

Conversion to rgb8 follows cv_bridge (`toCvCopy(msg, "rgb8")`, cv_bridge.cpp in
ros-perception/vision_opencv): the colour conversion first, at the source depth (Bayer
patterns demosaiced with OpenCV's codes as cv_bridge maps them: rggb -> BayerBG, bggr ->
BayerRG, gbrg -> BayerGR, grbg -> BayerGB), then 16 to 8 bits by ``v * 255 / 65535``, rounded
(OpenCV's ``convertTo``). ``16UC1`` (a depth image) is taken as ``mono16``, as
``cvtColorForDisplay`` does without a given range; so depth in millimetres looks dark.
16-bit data is byte-swapped when ``is_bigendian`` differs from this machine's order.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import cv2
import numpy as np

from cloudseg.guard import BadInput


@dataclass(frozen=True)
class Encoding:
    """How an Image encoding is laid out and turned into RGB."""

    channels: int  # values per pixel
    depth: int  # bytes per value: 1 or 2
    to_rgb: int | None  # OpenCV conversion to RGB at the source depth; None: already RGB

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.uint8 if self.depth == 1 else np.uint16)


#: encoding -> layout and conversion (sensor_msgs/image_encodings names)
ENCODINGS: dict[str, Encoding] = {
    "rgb8": Encoding(3, 1, None),
    "bgr8": Encoding(3, 1, cv2.COLOR_BGR2RGB),
    "mono8": Encoding(1, 1, cv2.COLOR_GRAY2RGB),
    "8UC1": Encoding(1, 1, cv2.COLOR_GRAY2RGB),
    "rgba8": Encoding(4, 1, cv2.COLOR_RGBA2RGB),
    "bgra8": Encoding(4, 1, cv2.COLOR_BGRA2RGB),
    "bayer_rggb8": Encoding(1, 1, cv2.COLOR_BayerBG2RGB),
    "bayer_bggr8": Encoding(1, 1, cv2.COLOR_BayerRG2RGB),
    "bayer_gbrg8": Encoding(1, 1, cv2.COLOR_BayerGR2RGB),
    "bayer_grbg8": Encoding(1, 1, cv2.COLOR_BayerGB2RGB),
    "yuv422": Encoding(2, 1, cv2.COLOR_YUV2RGB_UYVY),
    "yuv422_yuy2": Encoding(2, 1, cv2.COLOR_YUV2RGB_YUY2),
    "rgb16": Encoding(3, 2, None),
    "bgr16": Encoding(3, 2, cv2.COLOR_BGR2RGB),
    "rgba16": Encoding(4, 2, cv2.COLOR_RGBA2RGB),
    "bgra16": Encoding(4, 2, cv2.COLOR_BGRA2RGB),
    "mono16": Encoding(1, 2, cv2.COLOR_GRAY2RGB),
    "16UC1": Encoding(1, 2, cv2.COLOR_GRAY2RGB),
    "bayer_rggb16": Encoding(1, 2, cv2.COLOR_BayerBG2RGB),
    "bayer_bggr16": Encoding(1, 2, cv2.COLOR_BayerRG2RGB),
    "bayer_gbrg16": Encoding(1, 2, cv2.COLOR_BayerGR2RGB),
    "bayer_grbg16": Encoding(1, 2, cv2.COLOR_BayerGB2RGB),
}

#: cv_bridge's 16 -> 8 bit factor (toCvCopyImpl: convertTo(..., 255. / 65535.))
SCALE_16_TO_8 = 255.0 / 65535.0


class ImageError(BadInput):
    """An Image that cannot be read as a picture (encoding, size, step, data length)."""

    def __init__(self, message: str, kind: str = "image") -> None:
        super().__init__(message, kind)


def encoding_of(name: str) -> Encoding:
    """The layout of an encoding; ImageError naming the supported ones when unknown."""
    if name not in ENCODINGS:
        raise ImageError(f"unsupported image encoding {name!r} (supported: {', '.join(ENCODINGS)})")
    return ENCODINGS[name]


def image_pixels(msg: object) -> np.ndarray:
    """A view of the pixels: HxWxC, or HxW for one channel (uint8, or uint16 in this machine's
    byte order for 16-bit encodings); row padding (`step`) is skipped."""
    enc = encoding_of(msg.encoding)
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    row = width * enc.channels * enc.depth
    data = msg.data if isinstance(msg.data, np.ndarray) else np.frombuffer(msg.data, np.uint8)
    if height == 0 or width == 0:
        raise ImageError(f"empty image {width}x{height}")
    if step < row:
        raise ImageError(f"image step {step} is shorter than a {width}-pixel {msg.encoding} row")
    if data.size < step * height:
        raise ImageError(
            f"image data holds {data.size} bytes, {width}x{height} {msg.encoding} with step "
            f"{step} needs {step * height}"
        )
    rows = data[: step * height].reshape(height, step)[:, :row]
    if enc.depth == 2:
        big = bool(getattr(msg, "is_bigendian", 0))
        dtype = np.dtype(">u2" if big else "<u2")
        rows = np.ascontiguousarray(rows).view(dtype)
        if (sys.byteorder == "big") != big:
            rows = rows.astype(np.uint16)  # native order
    shape = (height, width, enc.channels) if enc.channels > 1 else (height, width)
    return rows.reshape(shape)


def image_to_rgb(msg: object) -> np.ndarray:
    """An Image as a new HxWx3 uint8 RGB array, as cv_bridge's ``toCvCopy(msg, "rgb8")``:
    bgr swapped, mono replicated, alpha dropped, Bayer demosaiced, YUV 4:2:2 converted,
    16-bit scaled by 255/65535."""
    pixels = np.ascontiguousarray(image_pixels(msg))
    enc = ENCODINGS[msg.encoding]
    if enc.to_rgb is None:
        rgb = np.array(pixels, copy=True, order="C")
    else:
        try:
            rgb = cv2.cvtColor(pixels, enc.to_rgb)
        except cv2.error as exc:  # e.g. a Bayer or YUV 4:2:2 image too small to convert
            detail = str(exc).strip().splitlines()[-1]
            size = f"{pixels.shape[1]}x{pixels.shape[0]}"
            raise ImageError(f"{msg.encoding} image {size}: {detail}") from None
    if enc.depth == 2:
        rgb = cv2.convertScaleAbs(rgb, alpha=SCALE_16_TO_8)
    return rgb
