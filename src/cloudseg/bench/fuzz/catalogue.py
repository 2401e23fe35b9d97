"""The hostile-message catalogue: every kind the fuzzer sends (:data:`KINDS`) and
:class:`Hostile`, which builds them from a real stream."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from typing import Any

from cloudseg.bench.fuzz.messages import (
    HOSTILE_ID,
    I32_MAX,
    I32_MIN,
    KNOB_SEQ_BASE,
    OWN_LABELS_ID,
    OWN_REQUEST_ID,
    STAMP_CASES,
    U32,
    U64,
    Item,
    ValidStream,
    image_msg,
    jpeg_claiming,
    now_msg,
    png_claiming,
    stamp_case_msg,
    time_msg,
)
from cloudseg.graph import CODEC_CHOICES

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
            f.header.stamp = stamp_case_msg(case)
        if where in (1, 2):
            f.sent_stamp = stamp_case_msg(case)
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
        k.header.stamp = now_msg()
        k.seq = KNOB_SEQ_BASE + sum(self.calls[x] for x in ("knob_range", "knob_inconsistent"))
        k.scale, k.codec, k.crf = 4, "h264", 25
        stamp = fields.pop("stamp", None)
        if stamp is not None:
            k.header.stamp = time_msg(*stamp)
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
        return [image_msg(cw, ch, "rgb8", self._bytes(n), step)]

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
        msg = image_msg(w, h, encoding, self._bytes(max(n, 0)), w * bpp)
        msg.is_bigendian = (0, 1, 255)[i % 3]
        return [msg]

    def image_stamp(self, i: int) -> list[Any]:
        msg = image_msg(64, 32, "rgb8", self._bytes(64 * 32 * 3))
        msg.header.stamp = stamp_case_msg(STAMP_CASES[i % len(STAMP_CASES)])
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
        return [image_msg(w, h, encoding, bytes(w * h * ch), w * ch)]

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
        r.header.stamp = now_msg() if stamp is None else time_msg(*stamp)
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
        msg = image_msg(w, h, enc, self._bytes(n), step)
        msg.header.frame_id = OWN_LABELS_ID
        if i % len(cases) == len(cases) - 1:
            msg.header.stamp = stamp_case_msg(STAMP_CASES[(i // len(cases)) % len(STAMP_CASES)])
        return [msg]
