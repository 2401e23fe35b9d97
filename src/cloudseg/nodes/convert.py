"""sensor_msgs/Image and CompressedImage <-> numpy, with cv_bridge's conventions.

Imports ROS message types but not rclpy, so it is testable without DDS.
"""

from __future__ import annotations

import numpy as np
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

#: channels per supported 8-bit encoding
ENCODINGS = {"rgb8": 3, "bgr8": 3, "mono8": 1}


class ImageError(ValueError):
    """An Image message that cannot be read as a picture (encoding, size, step)."""


def image_to_numpy(msg: Image) -> np.ndarray:
    """View an Image as HxWxC (or HxW for mono8) uint8, honouring row padding (`step`)."""
    channels = ENCODINGS.get(msg.encoding)
    if channels is None:
        raise ImageError(
            f"unsupported encoding {msg.encoding!r} (supported: {', '.join(ENCODINGS)})"
        )
    row = msg.width * channels
    if msg.step < row:
        raise ImageError(f"step {msg.step} is smaller than width*channels {row}")
    data = np.frombuffer(msg.data, dtype=np.uint8)
    if data.size != msg.step * msg.height:
        raise ImageError(
            f"data has {data.size} bytes, header says {msg.height} rows of "
            f"{msg.step} ({msg.width}x{msg.height} {msg.encoding})"
        )
    rows = data.reshape(msg.height, msg.step)[:, :row]
    return rows.reshape(msg.height, msg.width, channels) if channels > 1 else rows


def image_to_rgb(msg: Image) -> np.ndarray:
    """An Image as HxWx3 RGB uint8 (bgr8 swapped, mono8 replicated)."""
    array = image_to_numpy(msg)
    if msg.encoding == "bgr8":
        return np.ascontiguousarray(array[:, :, ::-1])
    if msg.encoding == "mono8":
        return np.repeat(array[:, :, None], 3, axis=2)
    return array


def numpy_to_image(array: np.ndarray, encoding: str, header: Header | None = None) -> Image:
    """Build an Image from HxWx3 (rgb8/bgr8) or HxW (mono8) uint8."""
    channels = ENCODINGS.get(encoding)
    if channels is None:
        raise ImageError(f"unsupported encoding {encoding!r}")
    if (
        array.dtype != np.uint8
        or array.ndim != (3 if channels > 1 else 2)
        or (channels > 1 and array.shape[2] != channels)
    ):
        raise ImageError(f"array {array.shape} {array.dtype} does not fit {encoding}")
    msg = Image()
    if header is not None:
        msg.header = header
    msg.height, msg.width = int(array.shape[0]), int(array.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = msg.width * channels
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
