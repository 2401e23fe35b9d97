"""The fuzzer's valid traffic and message builders: a real H.264 stream in GOPs, camera
images, stamps, image headers that lie about their size."""

from __future__ import annotations

import os
import struct
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROG = "cloudseg bench fuzz"
DEFAULT_SEQUENCE = str(
    Path(os.environ.get("CLOUDSEG_SHARED_DATA", "/work/shared/data"))
    / "sequences"
    / "aachen_seq0000"
)
VEHICLE_FRAMES_TOPIC = "/fuzz/vehicle_frames"
VALID_ID = "fuzz_valid"
HOSTILE_ID = "fuzz_hostile"
#: frame ids of the fuzzer's own hostile labels and keyframe requests (the fuzzer listens on
#: those topics too, for the cloud's answers)
OWN_LABELS_ID = "fuzz_own_labels"
OWN_REQUEST_ID = "fuzz_own_request"
#: Hostile Knobs carry seqs from here on: a vehicle Frame whose knob_seq is one shows a Knob
#: that should have been refused was applied.
KNOB_SEQ_BASE = 1 << 40
U32, U64 = (1 << 32) - 1, (1 << 64) - 1
I32_MIN, I32_MAX = -(1 << 31), (1 << 31) - 1
NS = 1_000_000_000
YEAR_S = 365 * 24 * 3600


#: (sec, nanosec) of hostile stamps; None: now + offset seconds (far future / past).
STAMP_CASES: tuple[tuple[int, int] | float, ...] = (
    (-1, 0),
    (I32_MIN, 0),
    (-1, 999_999_999),
    (0, NS),
    (0, U32),
    (I32_MAX, 999_999_999),
    (I32_MAX, U32),
    (0, 0),
    (1, 0),
    float(YEAR_S),
    float(100 * YEAR_S) if time.time() + 100 * YEAR_S < I32_MAX else float(I32_MAX - 1e9),
    -float(10 * YEAR_S),
    3600.0,
)


@dataclass(frozen=True)
class Item:
    """One message to send: its topic key ("frames", "knob", "image", "keyframe_request",
    "labels"), the message (or raw CDR bytes) and a short description (for crash reports)."""

    topic: str
    msg: Any
    what: str


def time_msg(sec: int, nanosec: int):
    from builtin_interfaces.msg import Time

    t = Time()
    t.sec, t.nanosec = int(sec), int(nanosec)
    return t


def now_msg(offset_s: float = 0.0):
    ns = time.time_ns() + int(offset_s * NS)
    return time_msg(*divmod(ns, NS))


def stamp_case_msg(case: tuple[int, int] | float):
    if isinstance(case, tuple):
        return time_msg(*case)
    sec, nanosec = divmod(time.time_ns() + int(case * NS), NS)
    return time_msg(max(min(sec, I32_MAX), I32_MIN), nanosec)


def png_claiming(width: int, height: int) -> bytes:
    """~100 bytes of PNG whose header claims width x height (a decompression bomb's header)."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        body = tag + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width & U32, height & U32, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def jpeg_claiming(jpeg: bytes, width: int, height: int) -> bytes:
    """A real JPEG whose frame header (SOF0) is patched to claim width x height."""
    i = jpeg.find(b"\xff\xc0")
    if i < 0:
        return jpeg
    out = bytearray(jpeg)
    out[i + 5 : i + 9] = struct.pack(">HH", height & 0xFFFF, width & 0xFFFF)
    return bytes(out)


class ValidStream:
    """The valid traffic: a real sequence encoded once with the project's FrameCompressor into
    GOPs (IDR first), camera images for the vehicle, and a JPEG and a PNG of a real frame."""

    def __init__(
        self, rgb_frames: Sequence[Any], gop: int = 3, scale: int = 4, image_width: int = 1024
    ) -> None:
        import cv2

        from cloudseg.media.image_codecs import encode_image
        from cloudseg.media.resize import downsample
        from cloudseg.media.stream import CompressorSettings, FrameCompressor

        if not rgb_frames:
            raise ValueError("no frames for the valid stream")
        comp = FrameCompressor(CompressorSettings(scale=scale, gop=gop))
        self.encoded = [comp.compress(x) for x in rgb_frames]
        self.gops: list[list[Any]] = []
        for c in self.encoded:
            if c.keyframe or not self.gops:
                self.gops.append([])
            self.gops[-1].append(c)
        if not self.encoded[0].keyframe:
            raise ValueError("the valid stream does not start with an IDR")
        self.idrs = [c for c in self.encoded if c.keyframe]
        self.pframes = [g for g in self.gops if len(g) > 1]  # GOPs with a P-frame to mutate
        small = downsample(rgb_frames[0], scale)
        self.jpeg = encode_image(small, "jpeg", 90)
        self.png = encode_image(small, "png")
        h, w = rgb_frames[0].shape[:2]
        size = (image_width, max(1, round(h * image_width / w)))
        self.images = [cv2.resize(x, size, interpolation=cv2.INTER_AREA) for x in rgb_frames]
        self.seq = 0  # the next valid Frame.seq
        self.bursts = 0
        self._last_ns = 0

    @classmethod
    def from_folder(cls, folder: str | Path, limit: int = 30, **kwargs: Any) -> ValidStream:
        import cv2

        paths = sorted(
            p for p in Path(folder).iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png")
        )[:limit]
        frames = []
        for p in paths:
            bgr = cv2.imread(str(p))
            if bgr is not None:
                frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        if not frames:
            raise ValueError(f"no images in {folder}")
        return cls(frames, **kwargs)

    def unique_stamp(self):
        """A capture stamp that is now and never repeats (answers are matched by stamp)."""
        ns = max(time.time_ns(), self._last_ns + 1000)
        self._last_ns = ns
        return time_msg(*divmod(ns, NS))

    def frame(self, c: Any, frame_id: str = VALID_ID, seq: int | None = None):
        """A Frame carrying the compressed frame ``c`` with its true claims."""
        from cloudseg.msg import Frame

        f = Frame()
        f.header.frame_id = frame_id
        f.header.stamp = self.unique_stamp()
        f.seq = self.seq if seq is None else seq
        f.level = Frame.LEVEL_KEY if c.keyframe else Frame.LEVEL_USEFUL
        f.scale, f.width, f.height, f.codec = c.scale, c.width, c.height, c.codec
        f.keyframe = bool(c.keyframe)
        f.data = c.payload
        f.sent_stamp = now_msg()
        return f

    def burst(self) -> list[Any]:
        """The next GOP of the real stream as valid Frames (IDR first, consecutive seqs)."""
        gop = self.gops[self.bursts % len(self.gops)]
        self.bursts += 1
        out = []
        for c in gop:
            out.append(self.frame(c))
            self.seq += 1
        return out

    def camera_image(self, frame_id: str = VALID_ID):
        """The next real camera image for the vehicle (rgb8, stamped now)."""
        from cloudseg.nodes.convert import numpy_to_image

        rgb = self.images[self.bursts % len(self.images)]
        msg = numpy_to_image(rgb, "rgb8")
        msg.header.frame_id = frame_id
        msg.header.stamp = self.unique_stamp()
        return msg


def image_msg(width: int, height: int, encoding: str, data: bytes, step: int | None = None):
    from sensor_msgs.msg import Image

    msg = Image()
    msg.header.frame_id = HOSTILE_ID
    msg.header.stamp = now_msg()
    msg.width, msg.height = int(width) & U32, int(height) & U32
    msg.encoding = encoding
    msg.step = (int(step) if step is not None else int(width) * 3) & U32
    msg.data = data
    return msg


def stamp_ns(stamp: Any) -> int:
    """A ROS stamp in nanoseconds."""
    return int(stamp.sec) * NS + int(stamp.nanosec)


def describe(msg: Any) -> str:
    """A short, bounded description of a message for crash reports."""
    if isinstance(msg, bytes | bytearray):
        return f"<{len(msg)} raw bytes>"
    parts = []
    for name in ("seq", "scale", "width", "height", "codec", "encoding", "step", "reason"):
        if hasattr(msg, name):
            v = getattr(msg, name)
            text = repr(v)
            parts.append(f"{name}={text[:24]}{'...' if len(text) > 24 else ''}")
    if hasattr(msg, "data"):
        parts.append(f"data={len(msg.data)}B")
    if hasattr(msg, "header"):
        parts.append(f"stamp={msg.header.stamp.sec}.{msg.header.stamp.nanosec}")
    return " ".join(parts)
