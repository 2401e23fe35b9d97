"""The pixels of a sensor_msgs/Image as numpy, with cv_bridge's conventions.

Works on any object with the Image fields (height, width, encoding, step, data): rclpy
messages and rosbags messages alike. Imports no ROS package.
"""

from __future__ import annotations

import cv2
import numpy as np

from cloudseg.guard import BadInput

#: encoding -> (channels, OpenCV conversion to RGB or None)
ENCODINGS: dict[str, tuple[int, int | None]] = {
    "rgb8": (3, None),
    "bgr8": (3, cv2.COLOR_BGR2RGB),
    "mono8": (1, cv2.COLOR_GRAY2RGB),
    "8UC1": (1, cv2.COLOR_GRAY2RGB),
    "rgba8": (4, cv2.COLOR_RGBA2RGB),
    "bgra8": (4, cv2.COLOR_BGRA2RGB),
}


class ImageError(BadInput):
    """An Image that cannot be read as a picture (encoding, size, step, data length)."""

    def __init__(self, message: str, kind: str = "image") -> None:
        super().__init__(message, kind)


def image_pixels(msg: object) -> np.ndarray:
    """A view of the pixels: HxWxC uint8, or HxW for one channel; row padding (`step`) is
    skipped and `is_bigendian` is irrelevant for 8-bit data."""
    encoding = msg.encoding
    if encoding not in ENCODINGS:
        raise ImageError(
            f"unsupported image encoding {encoding!r} (supported: {', '.join(ENCODINGS)})"
        )
    channels = ENCODINGS[encoding][0]
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    row = width * channels
    data = msg.data if isinstance(msg.data, np.ndarray) else np.frombuffer(msg.data, np.uint8)
    if height == 0 or width == 0:
        raise ImageError(f"empty image {width}x{height}")
    if step < row:
        raise ImageError(f"image step {step} is shorter than a {width}-pixel {encoding} row")
    if data.size < step * height:
        raise ImageError(
            f"image data holds {data.size} bytes, {width}x{height} {encoding} with step {step} "
            f"needs {step * height}"
        )
    rows = data[: step * height].reshape(height, step)[:, :row]
    return rows.reshape(height, width, channels) if channels > 1 else rows


def image_to_rgb(msg: object) -> np.ndarray:
    """An Image as a new HxWx3 uint8 RGB array (bgr8 swapped, mono8 replicated, alpha dropped)."""
    pixels = image_pixels(msg)
    conversion = ENCODINGS[msg.encoding][1]
    if conversion is None:
        return np.array(pixels, copy=True, order="C")
    return cv2.cvtColor(np.ascontiguousarray(pixels), conversion)
