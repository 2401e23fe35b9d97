"""sensor_msgs/Image and CompressedImage <-> numpy for the nodes, with cv_bridge's conventions,
and the H.264 stream as the viewers' CompressedVideo and FFMPEGPacket.

Reading pixels is `cloudseg.media.image` (shared with the bag reader), the viewers' fields
`cloudseg.media.viewer_formats`; this module builds the rclpy messages. It imports ROS message
types but not rclpy, so it is testable without DDS.
"""

from __future__ import annotations

import sys

import numpy as np
from ffmpeg_image_transport_msgs.msg import FFMPEGPacket
from foxglove_msgs.msg import CompressedVideo
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from cloudseg.media.image import ENCODINGS, ImageError, image_to_rgb
from cloudseg.media.image import image_pixels as image_to_numpy
from cloudseg.media.viewer_formats import FFMPEG_ENCODING, FOXGLOVE_FORMAT, ffmpeg_flags

__all__ = [
    "ImageError",
    "compressed_image",
    "compressed_video",
    "ffmpeg_packet",
    "image_to_numpy",
    "image_to_rgb",
    "numpy_to_image",
]


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


def compressed_video(access_unit: bytes, header: Header) -> CompressedVideo:
    """Foxglove's CompressedVideo for one H.264 access unit (Annex B) of a camera frame."""
    return CompressedVideo(
        timestamp=header.stamp, frame_id=header.frame_id, data=access_unit, format=FOXGLOVE_FORMAT
    )


def ffmpeg_packet(
    access_unit: bytes, header: Header, size: tuple[int, int], pts: int, keyframe: bool
) -> FFMPEGPacket:
    """image_transport's ffmpeg FFMPEGPacket for one H.264 access unit; `size` = (width,
    height) of the encoded picture, `keyframe`: an IDR."""
    return FFMPEGPacket(
        header=header,
        width=int(size[0]),
        height=int(size[1]),
        encoding=FFMPEG_ENCODING,
        pts=int(pts),
        flags=ffmpeg_flags(keyframe),
        is_bigendian=False,
        data=access_unit,
    )
