"""``cloudseg bench fuzz``: hostile messages against the running graph, over real DDS (issue 9).

The cloud process (``cloud_node``: decode, SR, segmentation) and the vehicle process
(``vehicle_node``: frame_selector, compressor, camera_labels) run as separate processes, as
``cloudseg run`` starts them, on a DDS domain of their own. A fuzzer node in this process then
sends N hostile messages (:data:`KINDS`, a round of every kind at a time in random order):

* Frames to the cloud: random bytes as payloads, truncated and bit-flipped H.264 access units
  of a real stream (frames of ``--input`` encoded with the project's ``FrameCompressor``), every
  codec string (valid ones on the wrong payload, unknown, empty, huge), zero and huge claimed
  sizes, every scale 0..255, negative, invalid and far-future stamps, seq jumps and reversals,
  NaN fields, PNG/JPEG headers claiming gigapixels, and raw CDR garbage on the frame topic;
* Knobs with out-of-range, NaN and inconsistent fields (each should be refused as a whole; the
  vehicle's Frames carry the seq of the Knob in force, so an accepted one shows);
* to the vehicle: camera Images whose sizes, steps, encodings and stamps are wrong, keyframe
  requests with absurd fields, and label Images (to camera_labels) of the wrong shape.

Every ``--valid-every`` hostile messages it sends a burst of valid frames (one GOP of the real
H.264 stream, IDR first, ``frame_id`` "fuzz_valid") and one valid camera image, and waits (up
to ``--answer-timeout`` s) until FrameStats for the burst come back. The vehicle's own Frames
are remapped to /fuzz/vehicle_frames (so its stream does not mix with the fuzzer's at the
cloud's decoder) and counted there. After the N messages a final batch of valid bursts decides
``still_serving``. Memory: the RSS of each node process (/proc) after warm-up (every kind sent
once, every allowed scale built) and at the end. ``--soak-minutes M`` runs the same loop for M
minutes and samples RSS along the way (``--valid-only``: only the valid stream, a looped run).

Plain ``--json``: one line ``{"sent", "crashes", "still_serving", "valid_frames_answered",
"rss_growth_mb", "per_kind", ...}``; ``crashes`` counts node processes that exited while the
fuzzer ran.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "KINDS",
    "Hostile",
    "ValidStream",
    "build_parser",
    "main",
    "rss_mb",
    "summary_table",
]

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

#: kind -> (topic, what it sends)
KINDS: dict[str, tuple[str, str]] = {
    "frame_random": ("frames", "random bytes as the payload (h264, jpeg, png; now and then MBs)"),
    "frame_truncated": ("frames", "a real H.264 access unit (IDR, or P after its IDR) cut short"),
    "frame_bitflip": ("frames", "a real H.264 access unit with 1-16 bits flipped (often headers)"),
    "frame_codec": ("frames", "every codec string: valid on a wrong payload, unknown, empty, huge"),
    "frame_size": ("frames", "claimed sizes: zero, 1x1, odd, over the limits, 2^32-1, disagreeing"),
    "frame_scale": ("frames", "every scale 0..255 on a real IDR, claims consistent or not"),
    "frame_stamp": ("frames", "negative, nanosec >= 1e9, far-future and zero stamps"),
    "frame_seq": ("frames", "seq jumps, reversals, 0 and 2^64-1 on real IDR and P units"),
    "frame_fields": ("frames", "NaN/inf deviation and encode_ms, odd level, lying keyframe flag"),
    "frame_bomb": ("frames", "PNG/JPEG headers claiming up to 65535x65535, swapped codecs"),
    "frame_cdr": ("frames", "raw CDR garbage: random, truncated, bit-flipped serialised Frames"),
    "knob_range": ("knob", "one field out of range or NaN/inf (scale, fps, thresholds, crf, ...)"),
    "knob_inconsistent": ("knob", "fields that contradict (useful > key, JPEG q 0, PNG level 50)"),
    "image_size": ("image", "camera Images whose width, height, step and data disagree"),
    "image_encoding": ("image", "unknown, empty, huge, Bayer, 16-bit, float encodings"),
    "image_stamp": ("image", "camera Images with negative, invalid and far-future stamps"),
    "image_tiny": ("image", "valid camera Images of degenerate sizes (1x1 .. 4096x1, 1x100000)"),
    "keyframe_request": ("keyframe_request", "seq 0 / 2^64-1, huge reasons, bad stamps"),
    "labels": ("labels", "label Images to camera_labels: wrong encodings, sizes, stamps, ids"),
}

#: Codec strings a Frame claims (valid ones go with wrong payloads too).
CODEC_STRINGS: tuple[str, ...] = (
    "h264",
    "jpeg",
    "png",
    "H264",
    "JPEG",
    "h265",
    "hevc",
    "vp9",
    "av1",
    "mjpeg",
    "jpg",
    "webp",
    "rgb8",
    "",
    " ",
    "h264 ",
    "\u00e9\u00e8",
    "\U0001f600" * 8,
    "%s%s%n",
    "../../../etc/passwd",
    "h" * 100_000,
    "png" * 50_000,
)

#: (width, height) a Frame claims for a 512x256 payload at scale 4 (mostly wrong).
SIZE_CASES: tuple[tuple[int, int], ...] = (
    (0, 0),
    (0, 1024),
    (2048, 0),
    (1, 1),
    (2, 2),
    (3, 3),
    (2047, 1023),
    (2049, 1025),
    (4096, 4096),
    (4097, 1024),
    (2048, 4097),
    (16384, 16384),
    (65535, 65535),
    (130560, 65280),
    (U32, U32),
    (U32, 1),
    (1, U32),
    (1024, 512),
    (4096, 2048),
    (512, 256),
    (2048, 1023),
)

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


def _time_msg(sec: int, nanosec: int):
    from builtin_interfaces.msg import Time

    t = Time()
    t.sec, t.nanosec = int(sec), int(nanosec)
    return t


def _now_msg(offset_s: float = 0.0):
    ns = time.time_ns() + int(offset_s * NS)
    return _time_msg(*divmod(ns, NS))


def _stamp_case(case: tuple[int, int] | float):
    if isinstance(case, tuple):
        return _time_msg(*case)
    sec, nanosec = divmod(time.time_ns() + int(case * NS), NS)
    return _time_msg(max(min(sec, I32_MAX), I32_MIN), nanosec)


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
        return _time_msg(*divmod(ns, NS))

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
        f.sent_stamp = _now_msg()
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


def _image(width: int, height: int, encoding: str, data: bytes, step: int | None = None):
    from sensor_msgs.msg import Image

    msg = Image()
    msg.header.frame_id = HOSTILE_ID
    msg.header.stamp = _now_msg()
    msg.width, msg.height = int(width) & U32, int(height) & U32
    msg.encoding = encoding
    msg.step = (int(step) if step is not None else int(width) * 3) & U32
    msg.data = data
    return msg


class Hostile:
    """Builds the hostile messages of each kind (:data:`KINDS`): a list of `Item`s per call.
    Each kind walks through its cases in turn (so N calls cover every scale 0..255, every codec
    string, ...), with random payloads from a seeded generator."""

    def __init__(self, stream: ValidStream, seed: int = 0) -> None:
        self.s = stream
        self.rng = random.Random(seed)
        self.calls: Counter[str] = Counter()

    def make(self, kind: str) -> list[Item]:
        if kind not in KINDS:
            raise KeyError(f"unknown kind {kind!r}")
        i = self.calls[kind]
        self.calls[kind] += 1
        items = getattr(self, kind)(i)
        return [it if isinstance(it, Item) else Item(KINDS[kind][0], it, kind) for it in items]

    # -- helpers ------------------------------------------------------------------------------

    def _bytes(self, n: int) -> bytes:
        return self.rng.randbytes(n)

    def _frame(self, c: Any = None, seq: int | None = None, **fields: Any):
        """A hostile Frame: the IDR ``c`` (default: a random one) with its true claims, then
        ``fields`` overridden (``data`` included)."""
        c = c or self.rng.choice(self.s.idrs)
        f = self.s.frame(c, HOSTILE_ID, self.s.seq if seq is None else seq)
        for name, value in fields.items():
            setattr(f, name, value)
        return f

    def _flip(self, data: bytes, head: bool) -> bytes:
        out = bytearray(data)
        if not out:
            return b""
        for _ in range(self.rng.randint(1, 16)):
            j = self.rng.randrange(min(len(out), 64) if head else len(out))
            out[j] ^= 1 << self.rng.randrange(8)
        return bytes(out)

    def _idr_then(self, mutate: Callable[[bytes], bytes], i: int, what: str) -> list[Item]:
        """Odd calls: a mutated IDR. Even calls: a clean IDR, then its next P-frame mutated at
        the next seq, so the mutation reaches a decoder that is not waiting for an IDR."""
        if i % 2 or not self.s.pframes:
            c = self.rng.choice(self.s.idrs)
            return [Item("frames", self._frame(c, data=mutate(c.payload)), f"{what} IDR")]
        gop = self.rng.choice(self.s.pframes)
        seq = self.s.seq + 1000 + i
        clean = self._frame(gop[0], seq=seq)
        bad = self._frame(gop[1], seq=seq + 1, data=mutate(gop[1].payload))
        return [Item("frames", clean, f"{what}: clean IDR"), Item("frames", bad, f"{what} P")]

    # -- frames -------------------------------------------------------------------------------

    def frame_random(self, i: int) -> list[Any]:
        from cloudseg.graph import CODEC_CHOICES

        codec = CODEC_CHOICES[i % len(CODEC_CHOICES)]
        n = self.rng.choice((0, 1, 7, 64, 300, 4096, 65536))
        if i % 97 == 96:
            n = self.rng.randint(1 << 20, 4 << 20)  # a few MB
        data = self._bytes(n)
        if codec == "h264" and i % 2:  # a start code and a NAL header: reaches the parser
            nal = self.rng.choice((0x65, 0x67, 0x68, 0x41, 0x06, 0x09, 0x1F))
            data = b"\x00\x00\x00\x01" + bytes([nal]) + data
        return [self._frame(codec=codec, data=data)]

    def frame_truncated(self, i: int) -> list[Item]:
        return self._idr_then(lambda d: d[: self.rng.randrange(max(len(d), 1))], i, "truncated")

    def frame_bitflip(self, i: int) -> list[Item]:
        return self._idr_then(lambda d: self._flip(d, head=i % 4 < 2), i, "bit-flipped")

    def frame_codec(self, i: int) -> list[Any]:
        codec = CODEC_STRINGS[i % len(CODEC_STRINGS)]
        payloads = (
            self.rng.choice(self.s.idrs).payload,
            self.s.jpeg,
            self.s.png,
            self._bytes(100),
        )
        return [self._frame(codec=codec, data=payloads[(i // len(CODEC_STRINGS)) % 4])]

    def frame_size(self, i: int) -> list[Any]:
        width, height = SIZE_CASES[i % len(SIZE_CASES)]
        variant = (i // len(SIZE_CASES)) % 3
        if variant == 0:
            return [self._frame(width=width, height=height)]
        codec, data = ("jpeg", self.s.jpeg) if variant == 1 else ("png", self.s.png)
        return [self._frame(codec=codec, width=width, height=height, data=data)]

    def frame_scale(self, i: int) -> list[Any]:
        scale = i % 256
        c = self.rng.choice(self.s.idrs)
        lr_w, lr_h = c.width // c.scale, c.height // c.scale  # what the payload decodes to
        if (i // 256) % 2 == 0:  # claims that agree with the payload at this scale
            width, height = lr_w * scale, lr_h * scale
        else:
            width, height = c.width, c.height
        return [self._frame(c, scale=scale, width=width, height=height)]

    def frame_stamp(self, i: int) -> list[Any]:
        case = STAMP_CASES[i % len(STAMP_CASES)]
        where = (i // len(STAMP_CASES)) % 3
        f = self._frame()
        if where in (0, 2):
            f.header.stamp = _stamp_case(case)
        if where in (1, 2):
            f.sent_stamp = _stamp_case(case)
        return [f]

    def frame_seq(self, i: int) -> list[Any]:
        s = self.s.seq
        cases = (U64, 0, max(s - 1, 0), max(s - 1000, 0), s + 10**6, 1 << 63, s + 1, s, U64 - 1)
        seq = cases[i % len(cases)]
        if (i // len(cases)) % 2 and self.s.pframes:
            c = self.rng.choice(self.s.pframes)[1]  # a P-frame out of its place
        else:
            c = self.rng.choice(self.s.idrs)
        return [self._frame(c, seq=seq)]

    def frame_fields(self, i: int) -> list[Any]:
        nan, inf = float("nan"), float("inf")
        cases: list[dict[str, Any]] = [
            {"level": 0},
            {"level": 3},
            {"level": 255},
            {"deviation": nan},
            {"deviation": inf},
            {"deviation": -inf},
            {"deviation": -1.0},
            {"encode_ms": nan},
            {"encode_ms": -inf},
            {"knob_seq": U64},
            {"keyframe": False},
            {"level": 255, "deviation": nan, "encode_ms": inf, "knob_seq": U64, "keyframe": False},
        ]
        case = dict(cases[i % (len(cases) + 3)] if i % (len(cases) + 3) < len(cases) else {})
        f = self._frame(**case)
        k = i % (len(cases) + 3) - len(cases)
        if k == 0 and self.s.pframes:  # a P-frame that says it is a keyframe
            p = self.rng.choice(self.s.pframes)[1]
            f.data, f.keyframe = p.payload, True
        elif k == 1:
            f.header.frame_id = "x" * 100_000
        elif k == 2:
            f.header.frame_id = "\u00e9\U0001f600\t\n\r"
        return [f]

    def frame_bomb(self, i: int) -> list[Any]:
        big = (
            (40000, 40000),
            (65535, 65535),
            (U32, U32),
            (I32_MAX, 1),
            (4096, 4096),
            (0, 0),
            (1, 65535),
        )
        w, h = big[i % len(big)]
        variant = (i // len(big)) % 4
        if variant == 0:  # a PNG header claiming gigapixels, small claims in the Frame
            data = png_claiming(w, h)
            return [self._frame(codec="png", scale=2, width=256, height=128, data=data)]
        if variant == 1:
            data = jpeg_claiming(self.s.jpeg, min(w, 65535), min(h, 65535))
            return [self._frame(codec="jpeg", data=data)]
        if variant == 2:  # a real JPEG sent as PNG, a real PNG as JPEG
            return [self._frame(codec="png", data=self.s.jpeg)]
        return [self._frame(codec="jpeg", data=self.s.png)]

    def frame_cdr(self, i: int) -> list[Item]:
        from rclpy.serialization import serialize_message

        good = serialize_message(self._frame())
        variant = i % 5
        if variant == 0:
            raw = self._bytes(self.rng.randint(1, 2000))
        elif variant == 1:
            raw = good[: self.rng.randrange(1, len(good))]
        elif variant == 2:
            raw = self._flip(good, head=i % 10 < 5)
        elif variant == 3:  # a length field (4-aligned) says 2^31-1 or 2^32-1
            out = bytearray(good)
            j = 4 + 4 * self.rng.randrange((min(len(out), 160) - 8) // 4)
            out[j : j + 4] = self.rng.choice((b"\xff\xff\xff\xff", b"\xff\xff\xff\x7f"))
            raw = bytes(out)
        else:  # a valid encapsulation header then garbage
            raw = good[:4] + self._bytes(self.rng.randint(0, 64))
        return [Item("frames", raw, f"raw CDR ({len(raw)} bytes, variant {variant})")]

    # -- knobs --------------------------------------------------------------------------------

    def _knob(self, **fields: Any):
        from cloudseg.msg import Knob

        k = Knob()
        k.header.stamp = _now_msg()
        k.seq = KNOB_SEQ_BASE + sum(self.calls[x] for x in ("knob_range", "knob_inconsistent"))
        k.scale, k.codec, k.crf = 4, "h264", 25
        stamp = fields.pop("stamp", None)
        if stamp is not None:
            k.header.stamp = _time_msg(*stamp)
        for name, value in fields.items():
            setattr(k, name, value)
        return k

    KNOB_RANGE: tuple[dict[str, Any], ...] = (
        {"scale": 0},
        {"scale": 5},
        {"scale": 6},
        {"scale": 7},
        {"scale": 9},
        {"scale": 16},
        {"scale": 255},
        {"max_fps": -1.0},
        {"max_fps": 241.0},
        {"max_fps": 1e38},
        {"max_fps": float("nan")},
        {"max_fps": float("inf")},
        {"max_fps": float("-inf")},
        {"key_threshold": -0.1},
        {"key_threshold": 1.5},
        {"key_threshold": float("nan")},
        {"key_threshold": float("inf")},
        {"key_threshold": 0.5, "useful_threshold": float("nan")},
        {"key_threshold": 0.5, "useful_threshold": -1.0},
        {"key_threshold": 0.5, "useful_threshold": 2.0},
        {"crf": 52},
        {"crf": 60},
        {"crf": 255},
        {"codec": "jpeg", "quality": 101},
        {"codec": "jpeg", "quality": 255},
        {"quality": 101},
        {"quality": 255},
        {"bitrate_kbps": 100_001},
        {"bitrate_kbps": U32},
        {"codec": "vp9"},
        {"codec": "H264"},
        {"codec": " h264"},
        {"codec": "x" * 100_000},
        {"codec": "\u00e9"},
        {"selection_mode": "bogus"},
        {"selection_mode": "PIXEL"},
        {"selection_mode": "x" * 100_000},
    )

    KNOB_INCONSISTENT: tuple[dict[str, Any], ...] = (
        {"key_threshold": 0.2, "useful_threshold": 0.5},
        {"key_threshold": 0.0, "useful_threshold": 0.3},
        {"codec": "jpeg", "quality": 0},
        {"codec": "png", "quality": 10},
        {"codec": "png", "quality": 50},
        {"codec": "png", "quality": 100},
        {"stamp": (-1, 0)},
        {"stamp": (0, U32)},
        {"stamp": (I32_MIN, 0), "request_full_frame": True},
        {"scale": 0, "request_full_frame": True},
        {"crf": 99, "bitrate_kbps": 500},
        {
            "scale": 255,
            "max_fps": float("nan"),
            "key_threshold": float("nan"),
            "useful_threshold": float("nan"),
            "crf": 255,
            "quality": 255,
            "codec": "",
            "selection_mode": "",
            "bitrate_kbps": U32,
        },
    )

    def knob_range(self, i: int) -> list[Any]:
        return [self._knob(**self.KNOB_RANGE[i % len(self.KNOB_RANGE)])]

    def knob_inconsistent(self, i: int) -> list[Any]:
        return [self._knob(**self.KNOB_INCONSISTENT[i % len(self.KNOB_INCONSISTENT)])]

    # -- vehicle inputs -----------------------------------------------------------------------

    def image_size(self, i: int) -> list[Any]:
        w, h = 64, 32
        row = w * 3
        cases = (
            (w, h, row, row * h - 1),
            (w, h, row, row * h + 7),
            (w, h, 10, row * h),
            (w, h, U32, row * h),
            (w, h, 0, row * h),
            (0, 0, 0, 0),
            (0, h, row, row * h),
            (w, 0, row, 16),
            (U32, U32, U32, 64),
            (65536, 65536, 65536 * 3, 64),
            (1, 1_000_000, 3, 300),
            (w, h, row, 0),
            (I32_MAX, 2, 0, 64),
        )
        cw, ch, step, n = cases[i % len(cases)]
        return [_image(cw, ch, "rgb8", self._bytes(n), step)]

    ENCODINGS = (
        ("", 3),
        ("RGB8", 3),
        ("rgb", 3),
        ("yuv422", 2),
        ("yuv422_yuy2", 2),
        ("nv21", 1),
        ("bayer_rggb8", 1),
        ("bayer_grbg16", 2),
        ("mono16", 2),
        ("16UC1", 2),
        ("32FC1", 4),
        ("64FC3", 24),
        ("8UC4", 4),
        ("8UC999", 1),
        ("rgba8", 4),
        ("bgra8", 4),
        ("mono8", 1),
        ("jpeg", 1),
        ("x" * 100_000, 3),
        ("\u00e9\U0001f600", 3),
    )

    def image_encoding(self, i: int) -> list[Any]:
        encoding, bpp = self.ENCODINGS[i % len(self.ENCODINGS)]
        w, h = (63, 31) if i % 2 else (64, 32)
        n = w * h * bpp - (1 if (i // 2) % 2 else 0)  # odd data lengths every other time
        msg = _image(w, h, encoding, self._bytes(max(n, 0)), w * bpp)
        msg.is_bigendian = (0, 1, 255)[i % 3]
        return [msg]

    def image_stamp(self, i: int) -> list[Any]:
        msg = _image(64, 32, "rgb8", self._bytes(64 * 32 * 3))
        msg.header.stamp = _stamp_case(STAMP_CASES[i % len(STAMP_CASES)])
        return [msg]

    def image_tiny(self, i: int) -> list[Any]:
        sizes = (
            (1, 1),
            (2, 1),
            (1, 2),
            (3, 3),
            (7, 5),
            (1, 4096),
            (4096, 1),
            (17, 1),
            (1, 100_000),  # made the selector ask for 8 GB before d332c26
        )
        w, h = sizes[i % len(sizes)]
        encoding, ch = (("rgb8", 3), ("bgr8", 3), ("mono8", 1), ("rgba8", 4))[(i // 9) % 4]
        return [_image(w, h, encoding, bytes(w * h * ch), w * ch)]

    def keyframe_request(self, i: int) -> list[Any]:
        from cloudseg.msg import KeyframeRequest

        s = self.s.seq
        cases = (
            (U64, 0, "lost", None),
            (0, U64, "undecodable", None),
            (s + 10**6, s + 2 * 10**6, "joined", None),
            (s, 0, "", None),
            (s, 0, "x" * 100_000, None),
            (s, 0, "\u00e9\U0001f600", None),
            (s, 0, "lost", (-1, 0)),
            (s, 0, "lost", (0, U32)),
            (1 << 63, 1 << 63, "bogus", (I32_MAX, 0)),
        )
        seq, last, reason, stamp = cases[i % len(cases)]
        r = KeyframeRequest(seq=seq, last_decoded_seq=last, reason=reason)
        r.header.frame_id = OWN_REQUEST_ID
        r.header.stamp = _now_msg() if stamp is None else _time_msg(*stamp)
        return [r]

    def labels(self, i: int) -> list[Any]:
        cases = (
            (64, 32, "mono8", 64, 64 * 32 - 1),
            (64, 32, "rgb8", 192, 64 * 32 * 3),
            (64, 32, "16UC1", 128, 64 * 32 * 2),
            (0, 0, "mono8", 0, 0),
            (U32, U32, "mono8", U32, 64),
            (64, 32, "", 64, 64 * 32),
            (64, 32, "mono8", 3, 64 * 32),
            (7, 3, "mono8", 7, 21),  # valid, tiny, ids up to 255
            (2048, 1, "mono8", 2048, 2048),
            (64, 32, "mono8", 64, 64 * 32),  # valid, with a bad stamp below
        )
        w, h, enc, step, n = cases[i % len(cases)]
        msg = _image(w, h, enc, self._bytes(n), step)
        msg.header.frame_id = OWN_LABELS_ID
        if i % len(cases) == len(cases) - 1:
            msg.header.stamp = _stamp_case(STAMP_CASES[(i // len(cases)) % len(STAMP_CASES)])
        return [msg]


# ---------------------------------------------------------------------------------------------
# Processes and memory


def rss_mb(pid: int) -> float | None:
    """Resident set size of a process in MiB (/proc), None when it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def process_group(pgid: int) -> list[int]:
    """Pids of the live processes in a process group (a node started in its own session)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] != "Z":
            pids.append(int(entry))
    return pids


@dataclass
class NodeProcess:
    """One node process (its own session, so its group can be checked and stopped)."""

    name: str
    proc: subprocess.Popen
    log: Path
    exited_at: float | None = None
    exit_code: int | None = None
    after_message: int | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None


def start_node(
    name: str,
    graph_node: str,
    config: str,
    overrides: dict[str, Any],
    extra_args: Sequence[str],
    log_dir: Path,
    env: dict[str, str],
) -> NodeProcess:
    from cloudseg.graph import config_dir
    from cloudseg.launcher import node_command

    cmd = node_command(graph_node, config_dir() / config, overrides) + list(extra_args)
    log = log_dir / f"{name}.log"
    with open(log, "w") as out:  # the child keeps its own descriptor
        proc = subprocess.Popen(
            cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    return NodeProcess(name, proc, log)


def stop_node(p: NodeProcess, grace: float = 10.0) -> tuple[int, float, list[int]]:
    """SIGINT, then SIGKILL of its group after `grace` s: (exit code, seconds, pids that were
    left in its group and had to be killed)."""
    t0 = time.monotonic()
    if p.alive():
        p.proc.send_signal(signal.SIGINT)
    try:
        code = p.proc.wait(grace)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        code = p.proc.wait()
    left = process_group(p.pid)
    if left:
        os.killpg(p.pid, signal.SIGKILL)
    return code, time.monotonic() - t0, left


# ---------------------------------------------------------------------------------------------
# The run


class FuzzError(Exception):
    """Bad options or a run that cannot go on; main() prints one line and returns 2."""


@dataclass
class Answers:
    """What came back, filled by the subscription callbacks (executor thread)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    valid_stats: set[int] = field(default_factory=set)  # capture stamps (ns) of valid frames
    valid_labels: set[int] = field(default_factory=set)
    hostile_stats: int = 0
    hostile_labels: int = 0
    cloud_frames_received: int = 0  # FrameStats.frames_received, newest
    vehicle_frames: int = 0
    vehicle_valid: set[int] = field(default_factory=set)  # camera stamps the vehicle sent on
    vehicle_knob_seqs: set[int] = field(default_factory=set)
    keyframe_requests: int = 0
    keyframe_reasons: Counter = field(default_factory=Counter)


def _stamp_ns(stamp: Any) -> int:
    return int(stamp.sec) * NS + int(stamp.nanosec)


class Progress:
    """A one-line progress bar on stderr (a line every 10% when stderr is not a terminal)."""

    def __init__(self, total: int | None, seconds: float | None, enabled: bool) -> None:
        self.total, self.seconds, self.enabled = total, seconds, enabled
        self.tty = sys.stderr.isatty()
        self.t0 = time.monotonic()
        self.last = 0.0
        self.last_decile = -1

    def update(self, done: int, note: str, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if self.seconds:
            frac = min((now - self.t0) / self.seconds, 1.0)
        else:
            frac = min(done / max(self.total or 1, 1), 1.0)
        decile = int(frac * 10)
        if self.tty:
            if not force and now - self.last < 0.25:
                return
            bar = "#" * int(frac * 30) + "." * (30 - int(frac * 30))
            of = f"{done}" if self.seconds else f"{done}/{self.total}"
            sys.stderr.write(f"\r[{bar}] {frac:4.0%} {of} sent  {note}\x1b[K")
            sys.stderr.flush()
        elif decile != self.last_decile or force:
            print(f"{PROG}: {frac:4.0%} {done} sent  {note}", file=sys.stderr, flush=True)
            self.last_decile = decile
        self.last = now

    def close(self) -> None:
        if self.enabled and self.tty:
            sys.stderr.write("\n")
            sys.stderr.flush()


def _has_cuda() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:
        return False


@dataclass
class Options:
    frames: int = 10_000
    soak_minutes: float = 0.0
    valid_only: bool = False
    rate: float = 60.0
    valid_every: int = 100
    final_bursts: int = 5
    answer_timeout: float = 6.0
    startup_timeout: float = 300.0
    rss_every: float = 10.0
    seed: int = 0
    input: str = DEFAULT_SEQUENCE
    cloud_params: dict[str, Any] = field(default_factory=dict)
    log_dir: Path | None = None
    keep_logs: bool = False
    domain_id: int | None = None
    progress: bool = True


class Fuzz:
    """The processes, the fuzzer node and the loop; :meth:`run` returns the result dict."""

    def __init__(self, opts: Options, stream: ValidStream) -> None:
        self.o = opts
        self.stream = stream
        self.hostile = Hostile(stream, opts.seed)
        self.answers = Answers()
        self.nodes: list[NodeProcess] = []
        self.per_kind: Counter[str] = Counter()
        self.sent = 0
        self.publish_errors: Counter[str] = Counter()
        self.recent: deque[str] = deque(maxlen=20)
        self.valid_sent = 0
        self.bursts = self.bursts_answered = 0
        self.vehicle_images = 0
        self.image_stamps: list[int] = []  # capture stamps of the valid camera images
        self.rss: dict[str, dict[str, float | None]] = {}
        self.timeline: list[list[float | None]] = []
        self.warm_index = 0  # the timeline's sample taken after warm-up
        self.t0 = time.monotonic()
        self.log_dir = opts.log_dir or Path(tempfile.mkdtemp(prefix="cloudseg-fuzz-"))
        self.log_dir.mkdir(parents=True, exist_ok=True)

    # -- set-up -------------------------------------------------------------------------------

    def environment(self) -> dict[str, str]:
        from cloudseg.launcher import local_env

        env = local_env(one_host=True)
        domain = self.o.domain_id
        if domain is None:
            domain = int(os.environ.get("ROS_DOMAIN_ID") or 150 + os.getpid() % 80)
        env["ROS_DOMAIN_ID"] = str(domain)
        env["PYTHONUNBUFFERED"] = "1"
        os.environ.update(env)  # the fuzzer node in this process talks on the same domain
        return {**os.environ}

    def start(self) -> None:
        env = self.environment()
        cloud = dict(self.o.cloud_params)
        if "device" not in cloud and not _has_cuda():
            cloud["device"] = "cpu"
        if cloud.get("device", "auto") == "cpu":
            cloud.setdefault("cpu_max_width", 512)
        self.nodes.append(start_node("cloud", "cloud", "cloud.yaml", cloud, (), self.log_dir, env))
        from cloudseg.graph import FRAMES_TOPIC

        # relative, as the node's own name: it matches in whatever namespace the node runs
        remap = ["-r", f"{FRAMES_TOPIC}:={VEHICLE_FRAMES_TOPIC}"]
        self.nodes.append(
            start_node("vehicle", "vehicle", "vehicle.yaml", {}, remap, self.log_dir, env)
        )

    def make_node(self) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from sensor_msgs.msg import Image

        from cloudseg.graph import (
            FRAMES_TOPIC,
            IMAGE_TOPIC,
            KEYFRAME_REQUEST_TOPIC,
            KNOB_TOPIC,
            LABELS_TOPIC,
            STATS_TOPIC,
        )
        from cloudseg.msg import Frame, FrameStats, KeyframeRequest, Knob
        from cloudseg.nodes.common import qos_for

        rclpy.init(args=[])
        self.node = node = rclpy.create_node("cloudseg_fuzzer")
        self.pubs = {
            "frames": node.create_publisher(Frame, FRAMES_TOPIC, qos_for(FRAMES_TOPIC)),
            "knob": node.create_publisher(Knob, KNOB_TOPIC, qos_for(KNOB_TOPIC)),
            "image": node.create_publisher(Image, IMAGE_TOPIC, qos_for(IMAGE_TOPIC)),
            "keyframe_request": node.create_publisher(
                KeyframeRequest, KEYFRAME_REQUEST_TOPIC, qos_for(KEYFRAME_REQUEST_TOPIC)
            ),
            "labels": node.create_publisher(Image, LABELS_TOPIC, qos_for(LABELS_TOPIC)),
        }
        a = self.answers

        def on_stats(m: Any) -> None:
            with a.lock:
                if m.header.frame_id == VALID_ID:
                    a.valid_stats.add(_stamp_ns(m.header.stamp))
                else:
                    a.hostile_stats += 1
                a.cloud_frames_received = max(a.cloud_frames_received, int(m.frames_received))

        def on_labels(m: Any) -> None:
            if m.header.frame_id == OWN_LABELS_ID:
                return  # our own hostile labels
            with a.lock:
                if m.header.frame_id == VALID_ID:
                    a.valid_labels.add(_stamp_ns(m.header.stamp))
                else:
                    a.hostile_labels += 1

        def on_vehicle_frame(m: Any) -> None:
            with a.lock:
                a.vehicle_frames += 1
                a.vehicle_knob_seqs.add(int(m.knob_seq))
                if m.header.frame_id == VALID_ID:
                    a.vehicle_valid.add(_stamp_ns(m.header.stamp))

        def on_request(m: Any) -> None:
            if m.header.frame_id == OWN_REQUEST_ID:
                return  # our own
            with a.lock:
                a.keyframe_requests += 1
                a.keyframe_reasons[str(m.reason)[:20]] += 1

        node.create_subscription(FrameStats, STATS_TOPIC, on_stats, qos_for(STATS_TOPIC))
        node.create_subscription(Image, LABELS_TOPIC, on_labels, qos_for(LABELS_TOPIC))
        node.create_subscription(
            Frame, VEHICLE_FRAMES_TOPIC, on_vehicle_frame, qos_for(FRAMES_TOPIC)
        )
        node.create_subscription(
            KeyframeRequest, KEYFRAME_REQUEST_TOPIC, on_request, qos_for(KEYFRAME_REQUEST_TOPIC)
        )
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(node)
        self.spinner = threading.Thread(target=self._spin, name="fuzz-spin", daemon=True)
        self.spinner.start()

    def _spin(self) -> None:
        from rclpy.executors import ExternalShutdownException

        try:
            self.executor.spin()
        except (ExternalShutdownException, KeyboardInterrupt):
            pass
        except Exception as exc:  # the fuzzer's own receiving side: say so, stop receiving
            print(f"{PROG}: fuzzer node stopped receiving: {exc}", file=sys.stderr)

    def close(self) -> None:
        import rclpy

        executor = getattr(self, "executor", None)
        if executor is not None:
            executor.shutdown(timeout_sec=2.0)
        node = getattr(self, "node", None)
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()

    # -- checks -------------------------------------------------------------------------------

    def check_nodes(self) -> None:
        for p in self.nodes:
            if p.exited_at is None and not p.alive():
                p.exited_at = time.monotonic() - self.t0
                p.exit_code = p.proc.returncode
                p.after_message = self.sent
                print(
                    f"\n{PROG}: the {p.name} process exited (code {p.exit_code}) after "
                    f"{self.sent} messages; log {p.log}; the last messages sent:",
                    file=sys.stderr,
                )
                for line in self.recent:
                    print(f"    {line}", file=sys.stderr)

    def sample_rss(self, label: str | None = None) -> dict[str, float | None]:
        values = {p.name: rss_mb(p.pid) if p.alive() else None for p in self.nodes}
        if label:
            for name, v in values.items():
                self.rss.setdefault(name, {})[label] = None if v is None else round(v, 1)
        t = round(time.monotonic() - self.t0, 1)
        self.timeline.append([t, *(None if v is None else round(v, 1) for v in values.values())])
        return values

    # -- sending ------------------------------------------------------------------------------

    def publish(self, item: Item) -> None:
        try:
            self.pubs[item.topic].publish(item.msg)
        except Exception as exc:  # a message our own rclpy refuses to send: count it
            self.publish_errors[f"{type(exc).__name__}"] += 1

    def send_hostile(self, kind: str, count: bool = True) -> int:
        items = self.hostile.make(kind)
        for it in items:
            self.publish(it)
            self.recent.append(f"{kind}: {it.what} {_describe(it.msg)}")
        if count:
            self.per_kind[kind] += len(items)
            self.sent += len(items)
        return len(items)

    def burst(self, wait: bool = True) -> bool:
        """One valid GOP (paced) and one camera image; True when FrameStats for a frame of it
        came back within the answer timeout."""
        frames = self.stream.burst()
        stamps = {_stamp_ns(f.header.stamp) for f in frames}
        image = self.stream.camera_image()
        self.image_stamps.append(_stamp_ns(image.header.stamp))
        self.publish(Item("image", image, "valid camera image"))
        self.vehicle_images += 1
        for f in frames:
            self.publish(Item("frames", f, "valid"))
            self.valid_sent += 1
            time.sleep(0.1)
        self.bursts += 1
        if not wait:
            return False
        end = time.monotonic() + self.o.answer_timeout
        while time.monotonic() < end:
            with self.answers.lock:
                if stamps & self.answers.valid_stats:
                    self.bursts_answered += 1
                    return True
            time.sleep(0.02)
            self.check_nodes()
        return False

    def wait_for_graph(self) -> None:
        """Until both processes subscribe to what the fuzzer sends, and the cloud answers."""
        end = time.monotonic() + self.o.startup_timeout
        need = ("frames", "knob", "image", "keyframe_request", "labels")
        while not all(self.pubs[k].get_subscription_count() for k in need):
            self.check_nodes()
            if any(p.exited_at is not None for p in self.nodes):
                raise FuzzError(f"a node died at start; logs in {self.log_dir}")
            if time.monotonic() > end:
                raise FuzzError(f"the nodes did not come up; logs in {self.log_dir}")
            time.sleep(0.2)
        time.sleep(1.0)  # discovery is not symmetric: let them match us too
        while not self.burst():
            self.check_nodes()
            if any(p.exited_at is not None for p in self.nodes):
                raise FuzzError(f"a node died at start; logs in {self.log_dir}")
            if time.monotonic() > end:
                raise FuzzError(f"no FrameStats came back; logs in {self.log_dir}")

    def warm_up(self) -> None:
        """Every kind twice (not counted), every allowed scale once with time to build its
        pipeline, then valid bursts until one is answered."""
        for _ in range(2):
            for kind in KINDS:
                self.send_hostile(kind, count=False)
                time.sleep(0.02)
        c = self.stream.idrs[0]
        for scale in (1, 2, 3, 4, 8):
            f = self.stream.frame(c, HOSTILE_ID, seq=self.stream.seq)
            f.scale = scale
            f.width, f.height = c.width // c.scale * scale, c.height // c.scale * scale
            self.publish(Item("frames", f, "warm-up scale"))
            time.sleep(1.5)
        for _ in range(10):
            if self.burst():
                break
        time.sleep(2.0)

    def run(self) -> dict[str, Any]:
        o = self.o
        self.start()
        self.make_node()
        progress = Progress(
            None if o.soak_minutes else o.frames, o.soak_minutes * 60 or None, o.progress
        )
        try:
            if o.progress:
                print(f"{PROG}: starting the cloud and vehicle processes", file=sys.stderr)
            self.wait_for_graph()
            self.sample_rss("start")
            if o.progress:
                print(f"{PROG}: the cloud answers; warming up", file=sys.stderr)
            self.warm_up()
            self.check_nodes()
            self.sample_rss("after_warmup")
            self.warm_index = len(self.timeline) - 1
            t_main = time.monotonic()
            soak_end = t_main + o.soak_minutes * 60 if o.soak_minutes else None
            kinds = list(KINDS)
            rng = random.Random(o.seed + 1)
            order: list[str] = []
            next_t = time.monotonic()
            last_rss = last_check = time.monotonic()
            since_burst = 0
            while True:
                now = time.monotonic()
                if soak_end is not None:
                    if now >= soak_end:
                        break
                elif self.sent >= o.frames:
                    break
                if o.valid_only:
                    self.burst()
                    time.sleep(max(0.0, 1.0 / max(o.rate, 1e-3)))
                else:
                    if not order:
                        order = kinds[:]
                        rng.shuffle(order)
                    n = self.send_hostile(order.pop())
                    since_burst += n
                    if since_burst >= o.valid_every:
                        since_burst = 0
                        self.burst()
                        next_t = time.monotonic()
                    next_t += n / o.rate
                    delay = next_t - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                    else:
                        next_t = time.monotonic()
                now = time.monotonic()
                if now - last_check > 0.5:
                    self.check_nodes()
                    last_check = now
                    if any(p.exited_at is not None for p in self.nodes):
                        break  # a crash is the finding: stop fuzzing, check what still serves
                if now - last_rss > o.rss_every:
                    self.sample_rss()
                    last_rss = now
                with self.answers.lock:
                    answered = len(self.answers.valid_stats)
                rss = self.timeline[-1][1:] if self.timeline else []
                mem = " ".join(
                    f"{p.name} {v:.0f}MB" if v is not None else f"{p.name} DEAD"
                    for p, v in zip(self.nodes, rss, strict=False)
                )
                progress.update(self.sent, f"answered {answered}/{self.valid_sent} valid  {mem}")
            progress.update(self.sent, "final batch", force=True)
            main_seconds = time.monotonic() - t_main
            # the final batch: valid bursts only
            time.sleep(1.0)
            first_final = len(self.image_stamps)
            final = [self.burst() for _ in range(o.final_bursts)]
            time.sleep(2.0)
            final_images = set(self.image_stamps[first_final:])
            with self.answers.lock:
                vehicle_final = len(final_images & self.answers.vehicle_valid)
            self.check_nodes()
            self.sample_rss("end")
        finally:
            progress.close()
            codes = self.stop()
            self.close()
        return self.result(final, main_seconds, codes, vehicle_final)

    def stop(self) -> dict[str, dict[str, Any]]:
        out = {}
        for p in reversed(self.nodes):
            code, seconds, left = stop_node(p)
            out[p.name] = {"code": code, "seconds": round(seconds, 1), "left_behind": left}
        return out

    # -- results ------------------------------------------------------------------------------

    def result(
        self, final: list[bool], seconds: float, codes: dict, vehicle_final: int
    ) -> dict[str, Any]:
        a = self.answers
        crashed = [p for p in self.nodes if p.exited_at is not None]
        logs = {p.name: p.log.read_text(errors="replace") for p in self.nodes}
        tracebacks = sum(text.count("Traceback") for text in logs.values())
        accepted = sorted(s for s in a.vehicle_knob_seqs if s >= KNOB_SEQ_BASE)
        for text in logs.values():
            for m in re.finditer(r"knob (\d+) applies", text):
                if int(m.group(1)) >= KNOB_SEQ_BASE:
                    accepted.append(int(m.group(1)))
        growth = {}
        for name, r in self.rss.items():
            if r.get("end") is not None and r.get("after_warmup") is not None:
                growth[name] = round(r["end"] - r["after_warmup"], 1)
        # the final batch: FrameStats for every burst of it, labels, the vehicle sending on
        still = all(final) and not crashed and vehicle_final >= 1 and bool(a.valid_labels)
        rss = dict(self.rss)
        slopes: dict[str, float | None] = {}
        slopes_late: dict[str, float | None] = {}
        for i, p in enumerate(self.nodes):
            samples = [row[1 + i] for row in self.timeline if row[1 + i] is not None]
            rss.setdefault(p.name, {})["max"] = round(max(samples), 1) if samples else None
            after = [(row[0], row[1 + i]) for row in self.timeline[self.warm_index :]]
            after = [pt for pt in after if pt[1] is not None]
            slopes[p.name] = _slope_per_min(after)
            if after:  # the second half: growth that goes on, not a first fill of caches
                mid = (after[0][0] + after[-1][0]) / 2
                slopes_late[p.name] = _slope_per_min([pt for pt in after if pt[0] >= mid])
        return {
            "sent": self.sent,
            "crashes": len(crashed),
            "still_serving": still,
            "valid_frames_answered": len(a.valid_stats),
            "rss_growth_mb": round(sum(growth.values()), 1) if growth else None,
            "per_kind": dict(sorted(self.per_kind.items())),
            "valid_frames_sent": self.valid_sent,
            "valid_frames_labelled": len(a.valid_labels),
            "valid_bursts": self.bursts,
            "valid_bursts_answered": self.bursts_answered,
            "final_bursts_answered": sum(final),
            "final_bursts": len(final),
            "hostile_frames_answered": a.hostile_stats,
            "cloud_frames_received": a.cloud_frames_received,
            "vehicle_images_valid": self.vehicle_images,
            "vehicle_frames_for_valid_images": len(a.vehicle_valid),
            "vehicle_frames_for_final_images": vehicle_final,
            "vehicle_frames_total": a.vehicle_frames,
            "knobs_accepted": len(set(accepted)),
            "keyframe_requests": a.keyframe_requests,
            "keyframe_request_reasons": dict(a.keyframe_reasons),
            "publish_errors": dict(self.publish_errors),
            "tracebacks_in_logs": tracebacks,
            "rss_growth_mb_per_process": growth,
            "rss_slope_mb_per_min": slopes,
            "rss_slope_mb_per_min_second_half": slopes_late,
            "rss_mb": rss,
            "rss_timeline": self.timeline if self.o.soak_minutes else None,
            "rss_timeline_columns": ["t_s", *(p.name for p in self.nodes)],
            "dead": [
                {
                    "process": p.name,
                    "code": p.exit_code,
                    "at_s": round(p.exited_at or 0, 1),
                    "after_message": p.after_message,
                }
                for p in crashed
            ],
            "stop": codes,
            "seconds": round(seconds, 1),
            "rate_msgs_per_s": round(self.sent / seconds, 1) if seconds > 0 else None,
            "soak_minutes": self.o.soak_minutes or None,
            "drops_logged": {name: _drop_kinds(text) for name, text in logs.items()},
            "log_lines": {name: text.count("\n") for name, text in logs.items()},
            "log_dir": str(self.log_dir),
        }


def _slope_per_min(points: Sequence[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, MB) points in MB per minute (None: under 3 points)."""
    if len(points) < 3:
        return None
    n = len(points)
    mt = sum(t for t, _ in points) / n
    mv = sum(v for _, v in points) / n
    den = sum((t - mt) ** 2 for t, _ in points)
    if den == 0:
        return None
    return round(60 * sum((t - mt) * (v - mv) for t, v in points) / den, 2)


def _describe(msg: Any) -> str:
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


def _drop_kinds(log: str) -> dict[str, int]:
    """The drop counts a node logged, per "callback/kind": the newest running count of each
    (a lower bound: the nodes log a kind at most every 10 s or 1000 drops)."""
    out: dict[str, int] = {}
    pattern = r"\]: ([^\[\]]+?) dropped \(([^)]+)\):.*?\[(\d+) so far"
    for m in re.finditer(pattern, log):
        words = m.group(1).split()
        while len(words) > 1 and re.fullmatch(r"[\d.]+", words[-1]):
            words.pop()  # "frame 12", "image 1795.0021": the callback, not the message
        key = f"{' '.join(words)}/{m.group(2)}"
        out[key] = max(out.get(key, 0), int(m.group(3)))
    return dict(sorted(out.items()))


def summary_table(r: dict[str, Any]) -> str:
    """The plain-text report of a run."""
    lines = []
    width = max(len(k) for k in KINDS)
    lines.append(f"{'kind':<{width}}  {'sent':>6}  what")
    for kind, (_, what) in KINDS.items():
        lines.append(f"{kind:<{width}}  {r['per_kind'].get(kind, 0):>6}  {what}")
    lines.append(f"{'total':<{width}}  {r['sent']:>6}  in {r['seconds']} s")
    lines.append("")
    rows = [
        ("node processes that exited (crashes)", r["crashes"]),
        ("still serving after the fuzzing", r["still_serving"]),
        (
            "valid frames answered (FrameStats) / sent",
            f"{r['valid_frames_answered']} / {r['valid_frames_sent']}",
        ),
        ("valid frames labelled", r["valid_frames_labelled"]),
        (
            "valid bursts answered / sent",
            f"{r['valid_bursts_answered']} / {r['valid_bursts']}",
        ),
        ("final bursts answered", f"{r['final_bursts_answered']} / {r['final_bursts']}"),
        ("hostile frames the cloud answered", r["hostile_frames_answered"]),
        ("frames the cloud received (its count)", r["cloud_frames_received"]),
        (
            "vehicle frames for valid camera images",
            f"{r['vehicle_frames_for_valid_images']} / {r['vehicle_images_valid']}",
        ),
        ("hostile Knobs applied", r["knobs_accepted"]),
        ("keyframe requests from the cloud", r["keyframe_requests"]),
        ("tracebacks in the node logs", r["tracebacks_in_logs"]),
        ("RSS growth after warm-up, MB (all nodes)", r["rss_growth_mb"]),
    ]
    for name, rr in r["rss_mb"].items():
        rows.append(
            (
                f"RSS {name} MB: start / after warm-up / end / max",
                f"{rr.get('start')} / {rr.get('after_warmup')} / {rr.get('end')} / {rr.get('max')}",
            )
        )
    for name, s in r["stop"].items():
        rows.append(
            (
                f"stop {name}: exit code, seconds, left behind",
                f"{s['code']}, {s['seconds']}, {s['left_behind'] or 'none'}",
            )
        )
    w = max(len(n) for n, _ in rows)
    lines.extend(f"{n:<{w}}  {v}" for n, v in rows)
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Command line


def _cloud_params(items: Sequence[str]) -> dict[str, Any]:
    from cloudseg.graph import NODES

    out: dict[str, Any] = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep:
            raise FuzzError(f"--cloud-param {item!r}: expected NAME=VALUE")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text
        try:
            spec = NODES["cloud"].param(name)
            if isinstance(spec.default, float) and isinstance(value, int):
                value = float(value)
            out[name] = spec.check(value)
        except (KeyError, ValueError, TypeError) as exc:
            raise FuzzError(f"--cloud-param {item}: {str(exc).strip(chr(34))}") from None
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Start the cloud process and the vehicle process over real DDS (a domain of their\n"
            "own, this host only) and send them N hostile messages: random and corrupt\n"
            "payloads, every codec string, zero and huge sizes, every scale 0..255, bad stamps,\n"
            "seq jumps, bad Knobs, bad camera Images, keyframe requests and labels. Between\n"
            "them, valid frames (a real H.264 stream, IDR first) check that labels and\n"
            "FrameStats still come back. Reports crashes, whether the graph still serves,\n"
            "and memory growth (RSS of each node process after warm-up and at the end)."
        ),
        epilog="kinds of hostile messages:\n"
        + "\n".join(f"  {k:<18} {v[1]}" for k, v in KINDS.items())
        + '\n\n--json: one line {"sent", "crashes", "still_serving", '
        '"valid_frames_answered", "rss_growth_mb", "per_kind", ...}.\n'
        "Exit status: 0 when nothing crashed and the graph still serves, 1 otherwise, "
        "2 when the run could not be made.",
    )
    parser.add_argument(
        "--frames", type=int, default=10_000, metavar="N", help="hostile messages (10000)"
    )
    parser.add_argument(
        "--soak-minutes",
        type=float,
        default=0.0,
        metavar="M",
        help="instead of N messages, run the loop for M minutes and sample RSS along the way",
    )
    parser.add_argument(
        "--valid-only",
        action="store_true",
        help="with --soak-minutes: only the valid stream (a looped run of the real sequence)",
    )
    parser.add_argument("--rate", type=float, default=60.0, help="hostile messages per second (60)")
    parser.add_argument(
        "--valid-every",
        type=int,
        default=100,
        metavar="K",
        help="a valid burst (one GOP + a camera image) every K hostile messages (100)",
    )
    parser.add_argument(
        "--final-bursts",
        type=int,
        default=5,
        metavar="B",
        help="valid bursts after the fuzzing; all must be answered for still_serving (5)",
    )
    parser.add_argument(
        "--answer-timeout",
        type=float,
        default=6.0,
        metavar="S",
        help="seconds to wait for a burst's FrameStats (6; the CPU cloud takes ~0.5 s a frame)",
    )
    parser.add_argument(
        "--rss-every", type=float, default=10.0, metavar="S", help="RSS sample period (10 s)"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (0)")
    parser.add_argument(
        "--input", default=DEFAULT_SEQUENCE, help="folder of real frames for the valid stream"
    )
    parser.add_argument(
        "--cloud-param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override a cloud node parameter (default on a CPU: device=cpu cpu_max_width=512)",
    )
    parser.add_argument(
        "--domain-id",
        type=int,
        help="ROS domain (default: $ROS_DOMAIN_ID or a free-looking one from 150..229)",
    )
    parser.add_argument("--log-dir", type=Path, help="node logs (default: a temporary folder)")
    parser.add_argument("--keep-logs", action="store_true", help="keep the temporary log folder")
    parser.add_argument("--json", action="store_true", help="one JSON line on stdout")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.frames < 1:
            raise FuzzError("--frames must be >= 1")
        if args.rate <= 0 or args.valid_every < 1 or args.final_bursts < 1:
            raise FuzzError("--rate must be > 0, --valid-every and --final-bursts >= 1")
        if args.soak_minutes < 0:
            raise FuzzError("--soak-minutes must be >= 0")
        if args.valid_only and not args.soak_minutes:
            raise FuzzError("--valid-only goes with --soak-minutes")
        if not Path(args.input).is_dir():
            raise FuzzError(f"--input {args.input} is not a folder of frames")
        if args.domain_id is not None and not 0 <= args.domain_id <= 232:
            raise FuzzError("--domain-id must be 0..232")
        opts = Options(
            frames=args.frames,
            soak_minutes=args.soak_minutes,
            valid_only=args.valid_only,
            rate=args.rate,
            valid_every=args.valid_every,
            final_bursts=args.final_bursts,
            answer_timeout=args.answer_timeout,
            rss_every=args.rss_every,
            seed=args.seed,
            input=args.input,
            cloud_params=_cloud_params(args.cloud_param),
            log_dir=args.log_dir,
            keep_logs=args.keep_logs,
            domain_id=args.domain_id,
            progress=not args.quiet,
        )
        stream = ValidStream.from_folder(args.input)
        fuzz = Fuzz(opts, stream)
        result = fuzz.run()
    except FuzzError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; the node processes were stopped", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps(result), flush=True)
    else:
        print(summary_table(result))
    ok = result["crashes"] == 0 and result["still_serving"]
    if ok and not (args.log_dir or args.keep_logs):
        shutil.rmtree(fuzz.log_dir, ignore_errors=True)
    elif not args.quiet:
        print(f"{PROG}: node logs in {fuzz.log_dir}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
