"""The codec interface of a stream: what every encoder and decoder is and raises.

The compressor and receiver hold one :class:`Encoder` / :class:`Decoder` per stream, whatever
the codec (:func:`cloudseg.media.stream.make_encoder`, :func:`~cloudseg.media.stream.make_decoder`):

* ``Encoder.encode(rgb) -> EncodedFrame(payload, keyframe)``: exactly one payload per frame.
* ``Decoder.decode(payload, seq) -> rgb | None``: ``None`` when the frame cannot be shown (an
  H.264 stream after a lost frame waits for the next IDR).

The codecs: :mod:`cloudseg.media.h264` (H.264 through PyAV/libx264) and
:mod:`cloudseg.media.image_codecs` (JPEG and PNG through OpenCV).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import NamedTuple, Protocol

import numpy as np

from cloudseg.graph import CODEC_CHOICES
from cloudseg.guard import BadInput
from cloudseg.media.resize import check_rgb

__all__ = [
    "CODECS",
    "MAX_IMAGE_PIXELS",
    "CodecError",
    "Decoder",
    "DecoderStats",
    "EncodedFrame",
    "Encoder",
    "check_codec",
]

log = logging.getLogger(__name__)

CODECS = CODEC_CHOICES  # the graph's codec choices: one list


#: The most pixels OpenCV may decode from one image file anywhere in this process (its own
#: default is 2^30, from a tiny PNG): the cloud's largest `max_width` x `max_height`. The
#: decoders below read the size from the file's header and check it before decoding.
MAX_IMAGE_PIXELS = 16384 * 16384
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(MAX_IMAGE_PIXELS))


class CodecError(BadInput):
    """A payload that cannot be decoded, an unknown codec, a bad frame or a size mismatch;
    ``kind`` groups the cause for the nodes' drop counters ("payload", "codec", "size")."""

    def __init__(self, message: str = "", kind: str = "payload") -> None:
        super().__init__(message, kind)


class EncodedFrame(NamedTuple):
    """One encoded frame: the payload to send and whether it decodes on its own."""

    payload: bytes
    keyframe: bool


@dataclass
class DecoderStats:
    """Counters of one decoder: frames returned, frames dropped, payloads that failed."""

    decoded: int = 0
    dropped: int = 0
    errors: int = 0


class Encoder(Protocol):
    """What a compressor holds per stream."""

    codec: str

    def encode(self, rgb: np.ndarray) -> EncodedFrame: ...


class Decoder(Protocol):
    """What a receiver holds per stream."""

    codec: str
    stats: DecoderStats

    def decode(
        self, payload: bytes, seq: int, *, size: tuple[int, int] | None = None
    ) -> np.ndarray | None: ...


def check_codec(codec: str) -> str:
    name = str(codec).strip().lower()
    if name not in CODECS:
        raise CodecError(f"unknown codec {codec!r}; known codecs: {', '.join(CODECS)}", "codec")
    return name


def check_frame(rgb: object) -> np.ndarray:
    try:
        return check_rgb(rgb, "frame")
    except ValueError as exc:
        raise CodecError(str(exc)) from None


def check_dimensions(
    width: int, height: int, size: tuple[int, int] | None, max_pixels: int | None
) -> None:
    """A picture's size (from its header, before decoding) against the expected size and limit."""
    if size is not None and (width, height) != (int(size[0]), int(size[1])):
        raise CodecError(f"decoded frame is {width}x{height}, expected {size[0]}x{size[1]}", "size")
    if max_pixels is not None and width * height > max_pixels:
        raise CodecError(f"picture {width}x{height} exceeds {max_pixels} pixels", "size")
