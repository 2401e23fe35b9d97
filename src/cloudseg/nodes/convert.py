"""sensor_msgs/Image and CompressedImage <-> numpy for the nodes, with cv_bridge's conventions.

Reading pixels is `cloudseg.media.image` (shared with the bag reader); this module builds the
rclpy messages. It imports ROS message types but not rclpy, so it is testable without DDS.
"""

from __future__ import annotations

import sys

import numpy as np
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from cloudseg.media.image import ENCODINGS, ImageError, image_to_rgb
from cloudseg.media.image import image_pixels as image_to_numpy

__all__ = ["ImageError", "compressed_image", "image_to_numpy", "image_to_rgb", "numpy_to_image"]


def numpy_to_image(array: np.ndarray, encoding: str, header: Header | None = None) -> Image:
    """Build an Image from HxWxC (e.g. rgb8/bgr8) or HxW (e.g. mono8, mono16) pixels."""
    if encoding not in ENCODINGS:
        raise ImageError(f"unsupported encoding {encoding!r}")
    enc = ENCODINGS[encoding]
    channels = enc.channels
    if (
        array.dtype != enc.dtype
        or array.ndim != (3 if channels > 1 else 2)
        or (channels > 1 and array.shape[2] != channels)
    ):
        raise ImageError(f"array {array.shape} {array.dtype} does not fit {encoding}")
    msg = Image()
    if header is not None:
        msg.header = header
    msg.height, msg.width = int(array.shape[0]), int(array.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = int(sys.byteorder == "big")
    msg.step = msg.width * channels * enc.depth
    msg.data = np.ascontiguousarray(array).tobytes()
    return msg


def compressed_image(payload: bytes, fmt: str, header: Header | None = None) -> CompressedImage:
    """A CompressedImage as image_transport's compressed plugin publishes it."""
    msg = CompressedImage()
    if header is not None:
        msg.header = header
    msg.format = fmt
    msg.data = payload
    return msg
