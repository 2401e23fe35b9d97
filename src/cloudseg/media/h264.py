"""H.264 through PyAV (libx264 to encode, FFmpeg's decoder), one access unit per frame.

H.264 works on yuv420p, which needs an even width and height: :class:`H264Encoder` raises
:class:`~cloudseg.media.codecs.CodecError` for odd sizes rather than padding (the decoder could
not know the original size), so crop to even sizes first (``rgb[: h - h % 2, : w - w % 2]``).

Colour conversion uses OpenCV's ``RGB2YUV_I420`` / ``YUV2RGB_I420`` (BT.601, limited range, as
H.264 players assume), about 5x faster than PyAV's ``reformat``.
"""

from __future__ import annotations

import logging
from fractions import Fraction

import av
import cv2
import numpy as np

from cloudseg.guard import BadInputCounter
from cloudseg.media.codecs import (
    CodecError,
    DecoderStats,
    EncodedFrame,
    check_dimensions,
    check_frame,
)

log = logging.getLogger(__name__)

#: NAL unit types (H.264 table 7-1): IDR slice, sequence and picture parameter sets
NAL_IDR, NAL_SPS, NAL_PPS = 5, 7, 8


def nal_unit_types(payload: bytes) -> list[int]:
    """The NAL unit types of an Annex-B byte stream, in order."""
    types = []
    start = payload.find(b"\x00\x00\x01")
    while 0 <= start < len(payload) - 3:
        types.append(payload[start + 3] & 0x1F)
        start = payload.find(b"\x00\x00\x01", start + 3)
    return types


def is_h264_keyframe(payload: bytes) -> bool:
    """True when an Annex-B H.264 payload holds an IDR slice (NAL type 5)."""
    return NAL_IDR in nal_unit_types(bytes(payload))


class H264Encoder:
    """One libx264 encoder per stream, kept across frames; one packet per frame.

    Rate control (:attr:`rate_control`): ``crf`` alone is constant quality; ``crf`` with
    ``maxrate_kbps`` is capped CRF (constant quality, but at most ``maxrate_kbps`` over a VBV
    buffer of ``vbv_seconds`` of data); otherwise ``bitrate_kbps`` (default 750) is CBR-like:
    average ``bit_rate`` with ``maxrate`` equal to it and the same VBV buffer.
    ``tune=zerolatency`` (no B-frames, no lookahead) makes every ``encode`` return the packet of
    the frame just given. SPS/PPS are repeated in every IDR (FFmpeg's libx264 wrapper writes
    them in band unless the codec context asks for global headers, which this one never does),
    so a decoder can join at any keyframe. Changing the frame size, or :meth:`reconfigure`,
    starts a new encoder: the next frame is an IDR.

    ``intra_refresh=True`` (x264 ``intra-refresh=1``): after the first IDR, a column of intra
    blocks sweeps the picture every ``gop`` frames instead of periodic IDRs, so there are no IDR
    bursts on the link. Only the first frame of an encoder is an IDR and the only frame flagged
    ``keyframe`` (x264 flags refresh starts as key frames; they are not decodable on their own):
    a forced keyframe (:meth:`request_keyframe`, a new encoder) is still an IDR.

    ``max_frame_bytes`` > 0 (:meth:`set_frame_budget`) caps every frame: x264's VBV with a
    buffer of one frame's budget (``vbv-bufsize`` = budget, ``vbv-maxrate`` = budget x fps, on
    top of the rate control above), so x264 raises the QP of the frame it is coding until it
    fits, IDRs included (``cloudseg bench codec --frame-budget``: no frame over on Cityscapes
    at x4). PyAV cannot change the VBV of an open encoder, so a new budget needs a new encoder
    (an IDR): a lower budget takes effect at the next frame, a higher one at the next GOP
    boundary (where a periodic IDR was due anyway). A frame can still overshoot a budget below
    what x264 can reach at QP 51: :attr:`EncodedFrame.payload` says so by its length; the
    caller decides (`cloudseg.media.stream.FrameCompressor` drops it and asks for an IDR).
    """

    codec = "h264"

    def __init__(
        self,
        bitrate_kbps: float | None = None,
        crf: float | None = None,
        *,
        preset: str = "ultrafast",
        gop: int = 17,
        fps: float = 17.0,
        vbv_seconds: float = 0.5,
        maxrate_kbps: float | None = None,
        intra_refresh: bool = False,
        max_frame_bytes: int = 0,
    ) -> None:
        self._ctx: av.VideoCodecContext | None = None
        self._pts = 0
        self._settings: dict[str, object] = {}
        self._raised_budget: int | None = None  # a higher budget waiting for a GOP boundary
        self.reconfigure(
            bitrate_kbps=bitrate_kbps,
            crf=crf,
            preset=preset,
            gop=gop,
            fps=fps,
            vbv_seconds=vbv_seconds,
            maxrate_kbps=maxrate_kbps,
            intra_refresh=intra_refresh,
            max_frame_bytes=max_frame_bytes,
        )

    @property
    def bitrate_kbps(self) -> float | None:
        return self._settings["bitrate_kbps"]  # type: ignore[return-value]

    @property
    def crf(self) -> float | None:
        return self._settings["crf"]  # type: ignore[return-value]

    @property
    def gop(self) -> int:
        return self._settings["gop"]  # type: ignore[return-value]

    @property
    def maxrate_kbps(self) -> float | None:
        return self._settings["maxrate_kbps"]  # type: ignore[return-value]

    @property
    def intra_refresh(self) -> bool:
        return bool(self._settings["intra_refresh"])

    @property
    def max_frame_bytes(self) -> int:
        """The per-frame budget in force (bytes, 0 = none)."""
        return int(self._settings["max_frame_bytes"])  # type: ignore[call-overload]

    def set_frame_budget(self, max_frame_bytes: int) -> None:
        """Cap every frame at ``max_frame_bytes`` (0 = no cap): lower now (the next frame is an
        IDR that fits), higher at the next GOP boundary (no IDR beyond the periodic one)."""
        budget = int(max_frame_bytes)
        if budget < 0:
            raise CodecError(f"H.264 max_frame_bytes must be >= 0 (0: no cap), got {budget}")
        current = self.max_frame_bytes
        self._raised_budget = None
        if budget == current:
            return
        if current and (budget == 0 or budget > current):
            self._raised_budget = budget  # the lower cap stays safe until then
            return
        self._settings["max_frame_bytes"] = budget
        self._close()

    @property
    def rate_control(self) -> str:
        """``"crf"``, ``"capped-crf"`` (crf with maxrate_kbps) or ``"cbr"`` (bitrate_kbps)."""
        if self.crf is None:
            return "cbr"
        return "capped-crf" if self.maxrate_kbps else "crf"

    @property
    def size(self) -> tuple[int, int] | None:
        """(width, height) of the running encoder, None before the first frame."""
        return None if self._ctx is None else (self._ctx.width, self._ctx.height)

    def reconfigure(self, **changes: object) -> None:
        """Change any of bitrate_kbps, crf, preset, gop, fps, vbv_seconds, maxrate_kbps,
        intra_refresh; the next frame is an IDR.

        Giving ``crf`` switches to constant quality; giving ``bitrate_kbps`` switches to
        bitrate mode (pass ``crf=None`` too, or just the one you want). ``maxrate_kbps`` caps
        CRF (ignored in bitrate mode, whose cap is the bitrate itself).
        """
        known = {
            "bitrate_kbps",
            "crf",
            "preset",
            "gop",
            "fps",
            "vbv_seconds",
            "maxrate_kbps",
            "intra_refresh",
            "max_frame_bytes",
        }
        unknown = set(changes) - known
        if unknown:
            raise CodecError(f"unknown H.264 setting(s) {sorted(unknown)}; known: {sorted(known)}")
        settings = {**self._settings, **changes}
        if changes.get("bitrate_kbps") is not None and "crf" not in changes:
            settings["crf"] = None
        if changes.get("crf") is not None and "bitrate_kbps" not in changes:
            settings["bitrate_kbps"] = None
        if settings.get("crf") is not None and settings.get("bitrate_kbps") is not None:
            raise CodecError("give H.264 either bitrate_kbps or crf, not both")
        if settings.get("crf") is None and settings.get("bitrate_kbps") is None:
            settings["bitrate_kbps"] = 750.0
        crf, kbps = settings["crf"], settings["bitrate_kbps"]
        if crf is not None and not 0 <= float(crf) <= 51:
            raise CodecError(f"H.264 crf must be 0..51, got {crf}")
        if kbps is not None and not float(kbps) > 0:
            raise CodecError(f"H.264 bitrate_kbps must be > 0, got {kbps}")
        maxrate = settings.get("maxrate_kbps")
        if maxrate is not None and float(maxrate) < 0:
            raise CodecError(f"H.264 maxrate_kbps must be >= 0 (0: no cap), got {maxrate}")
        settings["maxrate_kbps"] = float(maxrate) if maxrate else None
        settings["intra_refresh"] = bool(settings.get("intra_refresh"))
        settings["max_frame_bytes"] = int(settings.get("max_frame_bytes") or 0)
        if settings["max_frame_bytes"] < 0:
            raise CodecError("H.264 max_frame_bytes must be >= 0 (0: no cap)")
        if int(settings["gop"]) < 1:
            raise CodecError(f"H.264 gop must be >= 1, got {settings['gop']}")
        if not float(settings["fps"]) > 0 or not float(settings["vbv_seconds"]) > 0:
            raise CodecError("H.264 fps and vbv_seconds must be > 0")
        self._settings = settings
        self._raised_budget = None
        self._close()

    def request_keyframe(self) -> None:
        """Make the next frame an IDR (e.g. when the receiver reports a loss)."""
        self._close()

    def _close(self) -> None:
        self._ctx = None
        self._pts = 0

    def _open(self, width: int, height: int) -> av.VideoCodecContext:
        s = self._settings
        ctx = av.CodecContext.create("libx264", "w")
        ctx.width, ctx.height = width, height
        ctx.pix_fmt = "yuv420p"
        fps = Fraction(float(s["fps"])).limit_denominator(1001)
        ctx.framerate = fps
        ctx.time_base = 1 / fps
        ctx.gop_size = int(s["gop"])
        options = {"preset": str(s["preset"]), "tune": "zerolatency"}
        if s["intra_refresh"]:
            options["x264-params"] = "intra-refresh=1"
        maxrate = bufsize = None
        if s["crf"] is not None:
            options["crf"] = f"{float(s['crf']):g}"
            if s["maxrate_kbps"]:
                maxrate = int(float(s["maxrate_kbps"]) * 1000)
        else:
            maxrate = int(float(s["bitrate_kbps"]) * 1000)
        if maxrate:
            bufsize = int(maxrate * float(s["vbv_seconds"]))
        if s["max_frame_bytes"]:  # a VBV buffer of one frame's budget: no frame exceeds it
            # x264 counts the buffer in whole kbit (rounded down): at least 1 kbit, or no VBV
            frame_bits = max(int(s["max_frame_bytes"]) * 8, 1000)
            maxrate = min(maxrate or 2**31 - 1, int(frame_bits * float(s["fps"])))
            bufsize = min(bufsize or frame_bits, frame_bits)
        if s["crf"] is None:
            ctx.bit_rate = maxrate
        if maxrate:
            options["maxrate"] = str(maxrate)
            options["bufsize"] = str(bufsize)
        ctx.options = options
        try:
            ctx.open()
        except av.FFmpegError as exc:
            raise CodecError(f"libx264 rejected settings {s}: {exc}") from exc
        return ctx

    def encode(self, rgb: np.ndarray) -> EncodedFrame:
        """Encode one HxWx3 uint8 RGB frame; returns its payload (Annex-B) and keyframe flag."""
        check_frame(rgb)
        height, width = rgb.shape[:2]
        if width % 2 or height % 2:
            raise CodecError(
                f"H.264 yuv420p needs an even width and height, got {width}x{height}; crop first"
            )
        if self._raised_budget is not None and self._pts % self.gop == 0:
            self._settings["max_frame_bytes"] = self._raised_budget  # a GOP boundary: apply it
            self._raised_budget = None
            self._close()
        if self._ctx is not None and (width, height) != self.size:
            log.info("frame size changed %s -> %dx%d: new H.264 encoder", self.size, width, height)
            self._close()
        if self._ctx is None:
            self._ctx = self._open(width, height)
        yuv = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2YUV_I420)
        frame = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
        frame.pts = self._pts
        self._pts += 1
        try:
            packets = self._ctx.encode(frame)
        except av.FFmpegError as exc:
            self._close()
            raise CodecError(f"libx264 failed to encode a {width}x{height} frame: {exc}") from exc
        if not packets:
            self._close()
            raise CodecError("libx264 buffered a frame (expected one packet per frame)")
        payload = b"".join(bytes(p) for p in packets)
        if self.intra_refresh:  # x264 flags refresh starts as key: only an IDR decodes alone
            return EncodedFrame(payload, is_h264_keyframe(payload))
        return EncodedFrame(payload, any(p.is_keyframe for p in packets))


class H264Decoder:
    """One H.264 decoder per stream; tracks sequence numbers and waits for an IDR after a loss.

    A gap in ``seq`` (a lost frame) makes the following inter frames undecodable: they are
    dropped (``None``) until a keyframe arrives. A corrupt or truncated payload raises
    :class:`CodecError` and the decoder restarts, again waiting for the next keyframe. A
    keyframe with any ``seq`` is accepted (e.g. a restarted sender); a stale non-key frame
    (``seq`` not above the last one) is dropped.

    ``max_pixels``: FFmpeg refuses a stream whose SPS declares a larger picture before it
    allocates one (its ``max_pixels`` option); a picture of another size than the expected
    one is refused before it is converted to RGB.
    """

    codec = "h264"

    def __init__(self, max_pixels: int | None = None) -> None:
        self.stats = DecoderStats()
        self.max_pixels = max_pixels
        self._ctx = self._open()
        self._last_seq: int | None = None
        self._waiting = True
        self._waits = BadInputCounter()  # one line per kind, then at most one per 10 s

    @property
    def waiting_for_idr(self) -> bool:
        """True until the first keyframe, and again after a lost or corrupt frame."""
        return self._waiting

    def _open(self) -> av.VideoCodecContext:
        ctx = av.CodecContext.create("h264", "r")
        # One thread and no frame threading: a frame comes out for each packet that goes in.
        ctx.thread_count = 1
        # Report damaged slices as errors instead of concealing them.
        options = {"err_detect": "careful+explode"}
        if self.max_pixels:
            options["max_pixels"] = str(min(int(self.max_pixels), 2**31 - 1))  # an int in FFmpeg
        ctx.options = options
        return ctx

    def _start_waiting(self, why: str) -> None:
        kind = why.split()[0]  # "lost", "corrupt", "empty": each kind logged, then rate-limited
        if not self._waiting and (line := self._waits.drop("H.264 frame", why, kind)):
            log.warning("%s; waiting for IDR", line)
        self._waiting = True

    def decode(
        self,
        payload: bytes,
        seq: int,
        *,
        keyframe: bool | None = None,
        size: tuple[int, int] | None = None,
    ) -> np.ndarray | None:
        """Decode the payload of frame ``seq``; RGB uint8, or None while waiting for an IDR.

        ``keyframe`` may be given by the sender; otherwise it is read from the NAL types.
        ``size`` = (width, height), when given, must match the decoded frame.
        """
        data = bytes(payload)
        if not data:
            self.stats.errors += 1
            self._start_waiting(f"empty payload at seq {seq}")
            raise CodecError(f"empty H.264 payload at seq {seq}")
        key = is_h264_keyframe(data) if keyframe is None else bool(keyframe)
        expected = None if self._last_seq is None else self._last_seq + 1
        if not key:
            if expected is not None and seq < expected:
                self.stats.dropped += 1
                return None
            if expected is not None and seq > expected:
                self._start_waiting(f"lost {seq - expected} frame(s) before seq {seq}")
            if self._waiting:
                self._last_seq = seq
                self.stats.dropped += 1
                return None
        self._last_seq = seq
        try:
            frames = self._ctx.decode(av.Packet(data))
        except av.FFmpegError as exc:
            self._fail(seq)
            raise CodecError(f"corrupt H.264 payload at seq {seq}: {exc}") from exc
        if len(frames) != 1 or frames[0].is_corrupt:
            self._fail(seq)
            what = "a damaged picture" if frames else "no picture"
            raise CodecError(f"H.264 payload at seq {seq} gave {what}")
        frame = frames[0]
        try:
            check_dimensions(frame.width, frame.height, size, self.max_pixels)
        except CodecError:
            self._fail(seq)  # the next picture of this stream needs a new IDR (and SPS)
            raise
        try:
            if frame.format.name in ("yuv420p", "yuvj420p"):
                rgb = cv2.cvtColor(frame.to_ndarray(), cv2.COLOR_YUV2RGB_I420)
            else:
                rgb = frame.to_ndarray(format="rgb24")
        except (cv2.error, ValueError, av.FFmpegError) as exc:
            self._fail(seq)
            raise CodecError(f"H.264 picture at seq {seq} cannot be converted: {exc}") from None
        self._waiting = False
        self.stats.decoded += 1
        return rgb

    def _fail(self, seq: int) -> None:
        self.stats.errors += 1
        self._ctx = self._open()
        self._start_waiting(f"corrupt payload at seq {seq}")
