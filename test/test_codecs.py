"""cloudseg.media.codecs, h264, image_codecs: per-stream H.264, JPEG/PNG, one interface."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

from cloudseg.media.codecs import CODECS, CodecError, EncodedFrame
from cloudseg.media.h264 import H264Decoder, H264Encoder, is_h264_keyframe
from cloudseg.media.image_codecs import compressed_format, decode_image, encode_image
from cloudseg.media.quality import psnr
from cloudseg.media.resize import downsample
from cloudseg.media.stream import make_decoder, make_encoder

FRAME = "cityscapes/leftImg8bit/val/frankfurt/frankfurt_000000_000294_leftImg8bit.png"
SEQUENCE = "sequences/aachen_seq0000"

# x264 CRF 23 (its default, "visually good") on these 512x256 frames measured 37.4-40.6 dB
# (the first, IDR, frame highest), chroma subsampling included. 35 dB leaves ~2.5 dB of margin
# for other x264 builds while still failing on a wrong colour conversion (< 20 dB), a frame
# from the wrong time (~20 dB) or a badly starved rate.
H264_MIN_PSNR_DB = 35.0


def _read_rgb(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert bgr is not None, path
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def crop(shared_data: Path) -> np.ndarray:
    """A real 512x256 Cityscapes crop."""
    return np.ascontiguousarray(_read_rgb(shared_data / FRAME)[300:556, 700:1212])


@pytest.fixture(scope="module")
def frames(shared_data: Path) -> list[np.ndarray]:
    """The first 10 frames of the real 17 fps sequence, 4x area-downsampled to 512x256."""
    files = sorted((shared_data / SEQUENCE).glob("*_leftImg8bit.jpg"))[:10]
    assert len(files) == 10
    return [downsample(_read_rgb(f), 4) for f in files]


@pytest.fixture(scope="module")
def stream(frames: list[np.ndarray]) -> list[EncodedFrame]:
    """The frames encoded at CRF 23 with a keyframe every 5 frames (IDR at 0 and 5)."""
    encoder = H264Encoder(crf=23, gop=5)
    return [encoder.encode(f) for f in frames]


# --- still images ---------------------------------------------------------------------------


def test_png_round_trip_is_exact(crop: np.ndarray) -> None:
    payload = encode_image(crop, "png")
    assert payload.startswith(b"\x89PNG")
    np.testing.assert_array_equal(decode_image(payload, "png"), crop)


def test_jpeg_q90_quality(crop: np.ndarray) -> None:
    payload = encode_image(crop, "jpeg", 90)
    decoded = decode_image(payload, "jpeg")
    assert decoded.shape == crop.shape
    # Measured 40.2 dB; q90 JPEG on natural images is typically 38-42 dB. A channel swap
    # (RGB/BGR mix-up) would drop it far below.
    assert psnr(crop, decoded) > 37.0
    assert len(payload) < crop.nbytes / 8
    assert len(encode_image(crop, "jpeg", 50)) < len(payload)


@pytest.mark.parametrize("codec", ["jpeg", "png"])
def test_image_corrupt_payload(crop: np.ndarray, codec: str) -> None:
    payload = encode_image(crop, codec, None)
    for bad in (payload[: len(payload) // 2], b"", b"not an image at all"):
        with pytest.raises(CodecError):
            decode_image(bad, codec)


def test_image_quality_range(crop: np.ndarray) -> None:
    with pytest.raises(CodecError, match=r"1\.\.100"):
        encode_image(crop, "jpeg", 0)
    with pytest.raises(CodecError, match=r"0\.\.9"):
        encode_image(crop, "png", 10)


# --- H.264 ------------------------------------------------------------------------------------


def test_h264_round_trip(frames: list[np.ndarray], stream: list[EncodedFrame]) -> None:
    decoder = H264Decoder()
    for seq, (frame, encoded) in enumerate(zip(frames, stream, strict=True)):
        decoded = decoder.decode(encoded.payload, seq, size=(512, 256))
        assert decoded is not None
        assert decoded.shape == frame.shape and decoded.dtype == np.uint8
        assert psnr(frame, decoded) > H264_MIN_PSNR_DB, seq
    assert decoder.stats.decoded == 10 and decoder.stats.dropped == 0
    assert not decoder.waiting_for_idr


def test_h264_one_packet_per_frame_and_keyframes(stream: list[EncodedFrame]) -> None:
    assert len(stream) == 10
    assert [e.keyframe for e in stream] == [i % 5 == 0 for i in range(10)]
    # The encoder's flag agrees with the NAL units in the payload (type 5 = IDR).
    assert [is_h264_keyframe(e.payload) for e in stream] == [e.keyframe for e in stream]
    # Inter frames are much smaller than keyframes on this slow-moving sequence.
    assert max(len(e.payload) for e in stream if not e.keyframe) < len(stream[0].payload)


def test_h264_reconfigure_gives_idr(frames: list[np.ndarray]) -> None:
    encoder = H264Encoder(bitrate_kbps=750)
    assert encoder.encode(frames[0]).keyframe
    assert not encoder.encode(frames[1]).keyframe
    encoder.reconfigure(bitrate_kbps=250)
    assert encoder.bitrate_kbps == 250 and encoder.crf is None
    assert encoder.encode(frames[2]).keyframe
    assert not encoder.encode(frames[3]).keyframe
    encoder.reconfigure(crf=30)
    assert encoder.crf == 30 and encoder.bitrate_kbps is None
    assert encoder.encode(frames[4]).keyframe
    # A new frame size restarts the encoder by itself.
    small = downsample(frames[5], 2)
    first = encoder.encode(small)
    assert first.keyframe and encoder.size == (256, 128)
    decoded = H264Decoder().decode(first.payload, 0)
    assert decoded is not None and decoded.shape == small.shape


def test_h264_bitrate_mode_follows_target(frames: list[np.ndarray]) -> None:
    def stream_bytes(kbps: float) -> int:
        encoder = H264Encoder(bitrate_kbps=kbps)
        return sum(len(encoder.encode(f).payload) for f in frames)

    assert stream_bytes(250) < 0.6 * stream_bytes(1000)


def test_h264_gap_waits_for_idr(
    frames: list[np.ndarray], stream: list[EncodedFrame], caplog: pytest.LogCaptureFixture
) -> None:
    decoder = H264Decoder()
    assert decoder.waiting_for_idr  # nothing decoded yet
    assert decoder.decode(stream[0].payload, 0) is not None
    assert decoder.decode(stream[1].payload, 1) is not None
    # Frame 2 is lost: 3 and 4 reference it and cannot be shown.
    with caplog.at_level(logging.WARNING, logger="cloudseg.media.h264"):
        assert decoder.decode(stream[3].payload, 3) is None
    assert decoder.waiting_for_idr
    assert "waiting for IDR" in caplog.text
    assert decoder.decode(stream[4].payload, 4) is None
    # The IDR at 5 resynchronises, and the following inter frames decode again.
    for seq in range(5, 10):
        decoded = decoder.decode(stream[seq].payload, seq)
        assert decoded is not None
        assert psnr(frames[seq], decoded) > H264_MIN_PSNR_DB
    assert not decoder.waiting_for_idr
    assert (decoder.stats.decoded, decoder.stats.dropped) == (7, 2)


def test_h264_repeated_losses_are_logged_once_per_kind_then_rate_limited(
    stream: list[EncodedFrame], caplog: pytest.LogCaptureFixture
) -> None:
    """A hostile or very lossy stream (a loss before every IDR, 200 times) writes a line for
    the first loss and then at most one per 10 s, each saying how many it stood for."""
    decoder = H264Decoder()
    with caplog.at_level(logging.WARNING, logger="cloudseg.media.h264"):
        seq = 0
        for _ in range(200):
            assert decoder.decode(stream[0].payload, seq) is not None  # an IDR
            seq += 2  # one lost
            assert decoder.decode(stream[1].payload, seq) is None
            seq += 1
        assert decoder.decode(stream[0].payload, seq) is not None
        with pytest.raises(CodecError):  # a new kind: logged
            decoder.decode(b"\x00\x00\x00\x01\x41garbage", seq + 1)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    assert "lost 1 frame(s)" in lines[0] and "waiting for IDR" in lines[0]
    assert "1 so far" in lines[0]
    assert decoder.stats.dropped >= 200


def test_h264_starting_mid_stream_waits_for_idr(stream: list[EncodedFrame]) -> None:
    decoder = H264Decoder()
    assert decoder.decode(stream[2].payload, 2) is None
    assert decoder.decode(stream[3].payload, 3) is None
    assert decoder.decode(stream[5].payload, 5) is not None


@pytest.mark.parametrize("damage", ["truncated", "garbage", "flipped"])
def test_h264_corrupt_payload(stream: list[EncodedFrame], damage: str) -> None:
    good = stream[3].payload
    bad = {
        "truncated": good[: len(good) // 2],
        "garbage": bytes(np.random.default_rng(0).integers(0, 256, 600, dtype=np.uint8)),
        "flipped": good[:40] + bytes(b ^ 0xFF for b in good[40:80]) + good[80:],
    }[damage]
    decoder = H264Decoder()
    for seq in range(3):
        assert decoder.decode(stream[seq].payload, seq) is not None
    with pytest.raises(CodecError, match="seq 3"):
        decoder.decode(bad, 3)
    assert decoder.waiting_for_idr and decoder.stats.errors == 1
    assert decoder.decode(stream[4].payload, 4) is None
    # It keeps working: the next IDR decodes, and the inter frames after it.
    for seq in range(5, 10):
        assert decoder.decode(stream[seq].payload, seq) is not None


def test_h264_missing_slice_is_an_error(stream: list[EncodedFrame]) -> None:
    # x264 zerolatency cuts frames into slices; a payload with only its first slice would be
    # shown half-concealed by FFmpeg without complaint. The decoder reports it instead.
    idr = stream[0].payload
    starts = [i for i in range(len(idr) - 3) if idr[i : i + 3] == b"\x00\x00\x01"]
    slices = [i for i in starts if idr[i + 3] & 0x1F == 5]
    if len(slices) < 2:
        pytest.skip("this x264 build wrote one slice per frame")
    with pytest.raises(CodecError):
        H264Decoder().decode(idr[: slices[1]], 0)


def test_h264_bad_frames() -> None:
    encoder = H264Encoder()
    with pytest.raises(CodecError, match="even width and height"):
        encoder.encode(np.zeros((255, 512, 3), np.uint8))
    with pytest.raises(CodecError, match="uint8"):
        encoder.encode(np.zeros((256, 512, 3), np.float32))
    with pytest.raises(CodecError, match="not both"):
        H264Encoder(bitrate_kbps=500, crf=23)
    with pytest.raises(CodecError, match=r"unknown H\.264 setting"):
        encoder.reconfigure(qp=20)
    with pytest.raises(CodecError, match="empty"):
        H264Decoder().decode(b"", 0)


def test_h264_size_mismatch(stream: list[EncodedFrame]) -> None:
    with pytest.raises(CodecError, match="expected 1024x512"):
        H264Decoder().decode(stream[0].payload, 0, size=(1024, 512))


# --- uniform interface ------------------------------------------------------------------------


@pytest.mark.parametrize("codec", CODECS)
def test_make_encoder_decoder(frames: list[np.ndarray], codec: str) -> None:
    encoder = make_encoder(codec)
    decoder = make_decoder(codec)
    for seq, frame in enumerate(frames[:3]):
        encoded = encoder.encode(frame)
        assert isinstance(encoded, EncodedFrame) and isinstance(encoded.payload, bytes)
        assert encoded.keyframe == (codec != "h264" or seq == 0)
        decoded = decoder.decode(encoded.payload, seq)
        assert decoded is not None and decoded.shape == frame.shape
        assert psnr(frame, decoded) > 30
    assert decoder.stats.decoded == 3


def test_unknown_codec() -> None:
    for call in (make_encoder, make_decoder, compressed_format):
        with pytest.raises(CodecError, match="h264, jpeg, png"):
            call("vp9")
    with pytest.raises(CodecError, match="unknown codec"):
        encode_image(np.zeros((8, 8, 3), np.uint8), "webp", 80)
    with pytest.raises(CodecError, match="bad jpeg encoder parameters"):
        make_encoder("jpeg", crf=23)


def test_compressed_format() -> None:
    assert compressed_format("jpeg") == "rgb8; jpeg compressed bgr8"
    assert compressed_format("png", "bgr8") == "bgr8; png compressed bgr8"
    with pytest.raises(CodecError, match="no compressed_image_transport format"):
        compressed_format("h264")
