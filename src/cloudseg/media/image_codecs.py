"""Still-image codecs: JPEG and PNG through OpenCV, sizes checked from the header first."""

from __future__ import annotations

import struct

import cv2
import numpy as np

from cloudseg.media.codecs import (
    CodecError,
    DecoderStats,
    EncodedFrame,
    check_codec,
    check_dimensions,
    check_frame,
)

DEFAULT_JPEG_QUALITY = 80
"""JPEG quality 1..100 when none is given (compressed_image_transport's default)."""

DEFAULT_PNG_LEVEL = 3
"""PNG compression level 0..9 when none is given (compressed_image_transport's default)."""

_CV2_EXT = {"jpeg": ".jpg", "png": ".png"}
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _check_quality(codec: str, quality: int | None) -> int:
    if codec == "jpeg":
        value = DEFAULT_JPEG_QUALITY if quality is None else int(quality)
        if not 1 <= value <= 100:
            raise CodecError(f"JPEG quality must be 1..100, got {quality}")
    else:
        value = DEFAULT_PNG_LEVEL if quality is None else int(quality)
        if not 0 <= value <= 9:
            raise CodecError(f"PNG quality is the compression level 0..9, got {quality}")
    return value


def encode_image(rgb: np.ndarray, codec: str, quality: int | None = None) -> bytes:
    """Encode an HxWx3 uint8 RGB image as JPEG (quality 1..100) or PNG (level 0..9)."""
    codec = check_codec(codec)
    if codec not in _CV2_EXT:
        raise CodecError(f"encode_image handles jpeg and png, not {codec!r}")
    check_frame(rgb)
    value = _check_quality(codec, quality)
    flag = cv2.IMWRITE_JPEG_QUALITY if codec == "jpeg" else cv2.IMWRITE_PNG_COMPRESSION
    ok, buf = cv2.imencode(_CV2_EXT[codec], cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [flag, value])
    if not ok:
        raise CodecError(f"OpenCV could not encode a {rgb.shape[1]}x{rgb.shape[0]} {codec}")
    return buf.tobytes()


#: JPEG start-of-frame markers (SOF0..SOF15 but DHT, JPG and DAC): they carry the picture size.
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def image_size(payload: bytes, codec: str) -> tuple[int, int]:
    """(width, height) a JPEG or PNG payload declares in its header, read without decoding
    (so a size can be refused before anything is allocated for it); CodecError if none."""
    data = bytes(payload)
    if codec == "png":
        if not data.startswith(_PNG_SIGNATURE) or data[12:16] != b"IHDR" or len(data) < 24:
            raise CodecError(f"PNG payload without an IHDR header ({len(data)} bytes)")
        return struct.unpack(">II", data[16:24])
    if codec == "jpeg":
        i = 2
        while i + 4 <= len(data):
            if data[i] != 0xFF:
                break
            marker = data[i + 1]
            if marker == 0xFF:  # fill byte
                i += 1
                continue
            if marker in (0x01, *range(0xD0, 0xD8)):  # no length field
                i += 2
                continue
            (length,) = struct.unpack(">H", data[i + 2 : i + 4])
            if marker in _JPEG_SOF:
                if i + 9 > len(data) or length < 7:
                    break
                height, width = struct.unpack(">HH", data[i + 5 : i + 9])
                return width, height
            if marker == 0xDA or length < 2:  # scan data before any frame header
                break
            i += 2 + length
        raise CodecError(f"JPEG payload without a frame header ({len(data)} bytes)")
    raise CodecError(f"image_size handles jpeg and png, not {codec!r}", "codec")


def decode_image(
    payload: bytes,
    codec: str,
    *,
    size: tuple[int, int] | None = None,
    max_pixels: int | None = None,
) -> np.ndarray:
    """Decode a JPEG or PNG payload to an HxWx3 uint8 RGB image.

    A payload that is not complete (no JPEG end marker / PNG end chunk) or that OpenCV cannot
    read raises :class:`CodecError`; OpenCV alone would show a truncated JPEG as grey. The size
    in the file's header is checked against ``size`` (width, height) and ``max_pixels`` before
    decoding.
    """
    codec = check_codec(codec)
    if codec not in _CV2_EXT:
        raise CodecError(f"decode_image handles jpeg and png, not {codec!r}", "codec")
    data = bytes(payload)
    complete_jpeg = data.startswith(b"\xff\xd8") and data.rstrip(b"\0").endswith(b"\xff\xd9")
    if codec == "jpeg" and not complete_jpeg:
        raise CodecError(f"not a complete JPEG payload ({len(data)} bytes)")
    if codec == "png" and not (data.startswith(_PNG_SIGNATURE) and b"IEND" in data[-12:]):
        raise CodecError(f"not a complete PNG payload ({len(data)} bytes)")
    width, height = image_size(data, codec)
    if width < 1 or height < 1:
        raise CodecError(f"{codec} header declares an empty {width}x{height} picture", "size")
    check_dimensions(width, height, size, max_pixels)
    try:
        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if bgr is None:
            raise CodecError(f"OpenCV could not decode the {codec} payload ({len(data)} bytes)")
        check_dimensions(bgr.shape[1], bgr.shape[0], (width, height), None)
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    except cv2.error as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else "cv2.error"
        raise CodecError(f"OpenCV failed on the {codec} payload: {reason}") from None


class ImageEncoder:
    """Per-stream JPEG/PNG encoder with the :class:`Encoder` interface (every frame a key)."""

    def __init__(self, codec: str = "jpeg", quality: int | None = None) -> None:
        self.codec = check_codec(codec)
        if self.codec == "h264":
            raise CodecError("ImageEncoder handles jpeg and png; use H264Encoder for h264")
        self.quality = _check_quality(self.codec, quality)

    def encode(self, rgb: np.ndarray) -> EncodedFrame:
        return EncodedFrame(encode_image(rgb, self.codec, self.quality), True)


class ImageDecoder:
    """Per-stream JPEG/PNG decoder with the :class:`Decoder` interface (no inter-frame state).
    ``max_pixels``: larger pictures are refused from their header, before decoding."""

    def __init__(self, codec: str = "jpeg", max_pixels: int | None = None) -> None:
        self.codec = check_codec(codec)
        if self.codec == "h264":
            raise CodecError("ImageDecoder handles jpeg and png; use H264Decoder for h264")
        self.stats = DecoderStats()
        self.max_pixels = max_pixels

    def decode(
        self, payload: bytes, seq: int, *, size: tuple[int, int] | None = None
    ) -> np.ndarray | None:
        try:
            rgb = decode_image(payload, self.codec, size=size, max_pixels=self.max_pixels)
        except CodecError:
            self.stats.errors += 1
            raise
        self.stats.decoded += 1
        return rgb


def compressed_format(codec: str, encoding: str = "rgb8") -> str:
    """The ``sensor_msgs/CompressedImage.format`` that compressed_image_transport writes.

    For a colour source image of ROS ``encoding`` this is e.g. ``"rgb8; jpeg compressed bgr8"``.
    H.264 has no such format (stock image_transport cannot show it): CodecError.
    """
    codec = check_codec(codec)
    if codec not in _CV2_EXT:
        raise CodecError(
            f"{codec} has no compressed_image_transport format; publish jpeg or png on /compressed"
        )
    return f"{encoding}; {codec} compressed bgr8"
