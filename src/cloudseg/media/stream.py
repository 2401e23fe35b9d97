"""Per-stream compression (vehicle) and restoration (cloud), shared by nodes, demo and bench.

`FrameCompressor` downsamples with the project's one downsampling function and encodes with one
encoder kept across frames; new settings take effect at the next frame (an H.264 reconfigure
starts with an IDR), and so does a keyframe request (`request_keyframe`, the cloud's ask after
a loss). `StreamDecoder` holds one decoder per stream, checks a frame's claimed size and scale
against its limits (`cloudseg.guard.FrameLimits`) before decoding, opens its decoders with a
pixel limit, checks what it decoded against the header, and restores full resolution with
bilinear upsampling (the paper's LR-bilinear baseline; super-resolution plugs in through
`cloudseg.restore`).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from cloudseg.guard import TRUSTED, BadInput, FrameLimits
from cloudseg.media.codecs import CODECS, CodecError, Decoder, Encoder, check_codec
from cloudseg.media.image_codecs import ImageDecoder, ImageEncoder
from cloudseg.media.resize import METHODS, downsample, upsample_bilinear


def make_encoder(codec: str, **params: object) -> Encoder:
    """A per-stream encoder. h264: H264Encoder params; jpeg/png: ``quality``."""
    name = check_codec(codec)
    try:
        if name == "h264":
            from cloudseg.media.h264 import H264Encoder  # lazy: PyAV only where H.264 is used

            return H264Encoder(**params)  # type: ignore[arg-type]
        return ImageEncoder(name, **params)  # type: ignore[arg-type]
    except TypeError as exc:
        raise CodecError(f"bad {name} encoder parameters {sorted(params)}: {exc}") from None


def make_decoder(codec: str, max_pixels: int | None = None) -> Decoder:
    """A per-stream decoder for ``codec`` refusing pictures over ``max_pixels``."""
    name = check_codec(codec)
    if name == "h264":
        from cloudseg.media.h264 import H264Decoder  # lazy: PyAV only where H.264 is used

        return H264Decoder(max_pixels)
    return ImageDecoder(name, max_pixels)


@dataclass(frozen=True)
class CompressorSettings:
    """The vehicle-side knobs of one stream.

    H.264 rate control: ``bitrate_kbps`` > 0 is CBR-like; else ``crf``, capped at
    ``maxrate_kbps`` when that is > 0. ``intra_refresh``: periodic intra refresh (every
    ``gop`` frames) instead of periodic IDRs; forced keyframes are still IDRs.
    ``max_frame_bytes`` > 0: no frame sent is larger (`FrameCompressor`).
    """

    scale: int = 4
    kernel: str = "area"
    codec: str = "h264"
    bitrate_kbps: int = 0
    crf: int = 25
    gop: int = 17
    preset: str = "veryfast"
    quality: int = 80
    maxrate_kbps: int = 0
    intra_refresh: bool = False
    max_frame_bytes: int = 0

    def __post_init__(self) -> None:
        if self.codec not in CODECS:
            raise CodecError(f"unknown codec {self.codec!r} (known: {', '.join(CODECS)})")
        if self.scale < 1:
            raise ValueError(f"scale must be >= 1, got {self.scale}")
        if self.kernel not in METHODS:
            raise ValueError(f"unknown kernel {self.kernel!r} (known: {', '.join(METHODS)})")
        if not 0 <= self.crf <= 51:
            raise ValueError(f"crf must be 0..51, got {self.crf}")
        if not 0 <= self.quality <= 100:
            raise ValueError(f"quality must be 0..100, got {self.quality}")
        if self.codec == "jpeg" and self.quality < 1:
            raise ValueError(f"JPEG quality must be 1..100, got {self.quality}")
        if min(self.bitrate_kbps, self.maxrate_kbps, self.max_frame_bytes) < 0 or self.gop < 1:
            raise ValueError("bitrate_kbps, maxrate_kbps, max_frame_bytes must be >= 0, gop >= 1")

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> CompressorSettings:
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in params.items() if k in names})

    def encoder_params(self) -> dict[str, Any]:
        if self.codec == "h264":
            if self.bitrate_kbps:
                rate: dict[str, Any] = {"bitrate_kbps": self.bitrate_kbps}
            else:
                rate = {"crf": self.crf}
                if self.maxrate_kbps:
                    rate["maxrate_kbps"] = self.maxrate_kbps
            if self.intra_refresh:
                rate["intra_refresh"] = True
            return {"gop": self.gop, "preset": self.preset, **rate}
        if self.codec == "png":  # PNG is lossless: quality 0..9 is its compression level
            return {"quality": self.quality if self.quality <= 9 else None}
        return {"quality": self.quality}

    def with_changes(self, **changes: Any) -> CompressorSettings:
        return replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class CompressedFrame:
    payload: bytes
    keyframe: bool
    scale: int
    codec: str
    width: int  # original size
    height: int
    encode_ms: float  # downsampling + encoding
    encoded_size: tuple[int, int] = (0, 0)  # (width, height) of the picture encoded
    over_budget: bool = False  # larger than max_frame_bytes: not sent unless a keyframe

    @property
    def droppable(self) -> bool:
        """Over budget and not an H.264 IDR: not to be sent (the next H.264 frame is an IDR)."""
        return self.over_budget and not (self.keyframe and self.codec == "h264")


class FrameCompressor:
    """Downsample + encode one stream, keeping the encoder across frames.

    Frames that fit (``max_frame_bytes`` > 0, Salsify's idea with what PyAV allows): H.264
    frames are encoded under a VBV of one frame's budget (`H264Encoder.set_frame_budget`; a
    new budget changes no other setting, a lower one costs an IDR that fits it). A frame
    larger than the budget even so comes back ``over_budget``. Measured (`cloudseg bench
    codec --frame-budget`, Cityscapes at x4): P-frames always fit; only the first IDR of a new
    encoder overshoots budgets below ~850 bytes (x264's floor for a cold 512x256 IDR, ~110
    kbit/s at 17 fps). So: an over-budget keyframe is sent (nothing smaller restarts the
    stream); an over-budget P-frame (or JPEG/PNG frame) is not (``droppable``: the caller
    drops it) and the next H.264 frame is an IDR, as the decoder
    never gets the picture the encoder now references. ``over_budget_frames`` counts both.
    """

    def __init__(self, settings: CompressorSettings) -> None:
        self.settings = settings
        self._pending: CompressorSettings | None = None
        self._encoder = None
        self._encoder_key: tuple | None = None
        self._keyframe_requested = False
        self.over_budget_frames = 0

    def apply(self, settings: CompressorSettings) -> None:
        """Use `settings` from the next frame on."""
        self._pending = settings

    @property
    def next_settings(self) -> CompressorSettings:
        """The settings the next frame will use (applied but not yet in force, or current)."""
        return self._pending or self.settings

    def request_keyframe(self) -> None:
        """Make the next frame an H.264 IDR (the cloud lost a frame); JPEG/PNG: every frame is."""
        self._keyframe_requested = True

    def compress(
        self, rgb: np.ndarray, full_resolution: bool = False, keyframe: bool = False
    ) -> CompressedFrame:
        """Downsample and encode one frame; `full_resolution` sends this one frame at scale 1
        (the controller's profiling frame) without changing the settings; `keyframe` makes it
        an H.264 IDR (a KEY frame of the selector)."""
        if self._pending is not None:
            self.settings, self._pending = self._pending, None
        s = self.settings.with_changes(scale=1) if full_resolution else self.settings
        keyframe = keyframe or self._keyframe_requested
        self._keyframe_requested = False
        t0 = time.perf_counter()
        small = downsample(rgb, s.scale, s.kernel)
        if s.codec == "h264":  # 4:2:0 needs even sides: drop a last odd row/column
            small = small[: small.shape[0] & ~1, : small.shape[1] & ~1]
        key = (s.codec, tuple(sorted(s.encoder_params().items())), small.shape)
        # new settings or size: a fresh encoder starts with an IDR. H.264 gop 1: every frame is
        # a stream of its own (a fresh encoder, no rate-control history), as `cloudseg eval`
        # encodes the unrelated stills of a Cityscapes split.
        if key != self._encoder_key or (s.codec == "h264" and (s.gop == 1 or keyframe)):
            self._encoder = make_encoder(s.codec, **s.encoder_params())
            self._encoder_key = key
        # the profiling frame is measured as the full-resolution stream would send it: a budget
        # sized for low-resolution frames would blur it and the accuracy it estimates
        budget = 0 if full_resolution else s.max_frame_bytes
        if s.codec == "h264":
            self._encoder.set_frame_budget(budget)
        encoded = self._encoder.encode(small)
        ms = (time.perf_counter() - t0) * 1e3
        over = bool(budget) and len(encoded.payload) > budget
        if over:
            self.over_budget_frames += 1
            self._keyframe_requested |= not encoded.keyframe  # dropped: restart the stream
        return CompressedFrame(
            encoded.payload,
            encoded.keyframe,
            s.scale,
            s.codec,
            rgb.shape[1],
            rgb.shape[0],
            ms,
            (small.shape[1], small.shape[0]),
            over,
        )


@dataclass
class RestoredFrame:
    lr: np.ndarray  # decoded low-resolution image
    rgb: np.ndarray  # restored full-resolution image
    decode_ms: float
    restore_ms: float


class StreamDecoder:
    """The decoders of one stream (one kept per codec); also restores full resolution
    bilinearly.

    A frame's claims (codec, scale, camera size) are checked against ``limits`` before its
    payload is decoded (`cloudseg.guard.BadInput`), and the decoders refuse pictures larger
    than the limits allow or of another size than the claims say (`CodecError`)."""

    def __init__(self, limits: FrameLimits | None = None) -> None:
        self.limits = limits or FrameLimits()
        self._decoders: dict[str, Any] = {}

    def decoder(self, codec: str):
        if codec not in self._decoders:
            self._decoders[codec] = make_decoder(codec, max_pixels=self.limits.max_pixels)
        return self._decoders[codec]

    def waiting_for_idr(self, codec: str = "h264") -> bool:
        """True while the stream's H.264 decoder waits for an IDR (a loss, a corrupt frame)."""
        decoder = self._decoders.get(codec)
        return bool(getattr(decoder, "waiting_for_idr", False))

    def decode(
        self, payload: bytes, codec: str, seq: int, scale: int, width: int, height: int
    ) -> tuple[np.ndarray | None, float]:
        """Decode a payload and check its size against the header; None while waiting for IDR."""
        try:
            w, h = self.limits.check(codec, scale, width, height)
        except BadInput as exc:
            raise CodecError(str(exc), exc.kind) from None
        t0 = time.perf_counter()
        lr = self.decoder(codec).decode(bytes(payload), seq, size=(w, h))
        return lr, (time.perf_counter() - t0) * 1e3

    def restore(
        self, payload: bytes, codec: str, seq: int, scale: int, width: int, height: int
    ) -> RestoredFrame | None:
        lr, decode_ms = self.decode(payload, codec, seq, scale, width, height)
        if lr is None:
            return None
        t0 = time.perf_counter()
        rgb = lr if lr.shape[:2] == (height, width) else upsample_bilinear(lr, (width, height))
        return RestoredFrame(lr, rgb, decode_ms, (time.perf_counter() - t0) * 1e3)


def default_compressor_settings(**changes: Any) -> CompressorSettings:
    """The compressor node's default settings (from the graph's one parameter definition),
    with ``changes`` applied: what `cloudseg eval` and `cloudseg train` degrade with."""
    from cloudseg.graph import COMPRESSOR  # lazy: graph is plain Python but not needed here

    return CompressorSettings.from_params({**COMPRESSOR.defaults(), **changes})


class StreamRoundTrip:
    """What the cloud receives from one camera stream: the compressor's downsampling and
    encoder (kept across frames, so P-frames follow the IDR as in the stream), then the cloud's
    decoder. Evaluation and training call this, so they degrade exactly as serving does.

    ``restart()`` starts a new stream (the next frame is an IDR): use it between unrelated
    images. ``payload_bytes`` lists the size of every frame sent.
    """

    def __init__(self, settings: CompressorSettings | None = None) -> None:
        self.settings = settings or default_compressor_settings()
        self.payload_bytes: list[int] = []
        self.keyframes: list[bool] = []
        self.restart()

    def restart(self) -> None:
        self._compressor = FrameCompressor(self.settings)
        self._decoder = StreamDecoder(TRUSTED)  # offline: our own stream
        self._seq = 0

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        """The decoded low-resolution frame the cloud gets for camera frame ``rgb``."""
        sent = self._compressor.compress(rgb)
        self.payload_bytes.append(len(sent.payload))
        self.keyframes.append(sent.keyframe)
        lr, _ = self._decoder.decode(
            sent.payload, sent.codec, self._seq, sent.scale, sent.width, sent.height
        )
        self._seq += 1
        if lr is None:
            raise CodecError(f"the {sent.codec} decoder returned no picture for frame {self._seq}")
        return lr

    def kbps(self, fps: float = 17.0) -> float | None:
        """Mean bitrate of the frames sent so far at ``fps`` frames per second."""
        if not self.payload_bytes:
            return None
        return sum(self.payload_bytes) * 8 * fps / len(self.payload_bytes) / 1000

    def describe(self) -> str:
        s = self.settings
        if s.codec == "h264":
            rate = f"{s.bitrate_kbps} kbit/s" if s.bitrate_kbps else f"crf {s.crf}"
            if not s.bitrate_kbps and s.maxrate_kbps:
                rate += f" <= {s.maxrate_kbps} kbit/s"
            refresh = " intra refresh" if s.intra_refresh else ""
            codec = f"h264 {s.preset} {rate} gop {s.gop}{refresh}"
            return f"x{s.scale} {s.kernel}, {codec} (the compressor's)"
        return f"x{s.scale} {s.kernel}, {s.codec} q{s.quality} (the compressor's)"
