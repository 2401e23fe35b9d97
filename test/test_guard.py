"""Input from the wire: claims checked before allocation, decoders with pixel limits, drops
counted and logged at a bounded rate (plain logic, no DDS)."""

from __future__ import annotations

import struct
import zlib
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from cloudseg.guard import BadInput, BadInputCounter, FrameLimits, check_stamp
from cloudseg.media.codecs import CodecError
from cloudseg.media.h264 import H264Decoder, H264Encoder
from cloudseg.media.image_codecs import decode_image, encode_image, image_size
from cloudseg.media.stream import StreamDecoder


def _picture(h: int = 256, w: int = 512) -> np.ndarray:
    noise = np.random.default_rng(0).integers(0, 255, (h // 16, w // 16, 3), dtype=np.uint8)
    return cv2.resize(noise, (w, h), interpolation=cv2.INTER_CUBIC)


def test_counter_logs_the_first_of_each_kind_then_at_most_every_interval():
    now = [0.0]
    counter = BadInputCounter(every_s=10.0, every_n=1000, clock=lambda: now[0])
    first = counter.drop("frame", BadInput("scale 255 is not allowed", "scale"))
    assert first == "frame dropped (scale): scale 255 is not allowed [1 so far]"
    assert counter.drop("frame", BadInput("scale 0 is not allowed", "scale")) is None
    other = counter.drop("frame", ZeroDivisionError("division by zero"))
    assert other.startswith("frame dropped (ZeroDivisionError): ZeroDivisionError: division")
    assert counter.drop("knob", BadInput("crf 60", "scale")) is not None  # another callback
    for _ in range(10):
        assert counter.drop("frame", BadInput("x", "scale")) is None
    now[0] = 10.5
    line = counter.drop("frame", BadInput("scale 9 is not allowed", "scale"))
    assert line.endswith("[13 so far; 11 more of this kind since the last report]")
    assert counter.count("frame") == 14 and counter.count() == 15
    assert counter.summary()["frame/scale"] == 13


def test_counter_logs_every_n_in_a_flood():
    counter = BadInputCounter(every_s=1e9, every_n=100, clock=lambda: 0.0)
    lines = [counter.drop("frame", BadInput("bad", "size")) for _ in range(1000)]
    assert sum(line is not None for line in lines) == 10


def test_stamps_that_no_clock_holds_are_refused():
    assert check_stamp(SimpleNamespace(sec=2, nanosec=5)) == 2_000_000_005
    with pytest.raises(BadInput, match="sent_stamp -1") as info:
        check_stamp(SimpleNamespace(sec=-1, nanosec=0), "sent_stamp")
    assert info.value.kind == "stamp"
    with pytest.raises(BadInput):
        check_stamp(SimpleNamespace(sec=1, nanosec=1_000_000_000))


def test_claims_are_checked_against_the_limits_before_decoding():
    limits = FrameLimits(max_width=4096, max_height=4096, scales=(1, 2, 4))
    assert limits.check("h264", 4, 2048, 1024) == (512, 256)
    assert limits.check("h264", 4, 2046, 1026) == (510, 256)  # even sides for yuv420p
    assert limits.check("jpeg", 2, 255, 129) == (127, 64)
    cases = {
        ("h264", 255, 130560, 65280): "scale",  # issue 9: a real 512x256 IDR claims this
        ("h264", 0, 2048, 1024): "scale",
        ("h264", 3, 2048, 1024): "scale",  # not among the configured scales
        ("h264", 4, 8192, 1024): "size",
        ("h264", 4, 0, 1024): "size",
        ("h264", 4, 2, 2): "size",  # empty at x4
        ("vp9", 4, 2048, 1024): "codec",
        ("H264", 4, 2048, 1024): "codec",  # exact names only: one decoder per codec
    }
    for claims, kind in cases.items():
        with pytest.raises(BadInput) as info:
            limits.check(*claims)
        assert info.value.kind == kind, claims
    with pytest.raises(ValueError):
        FrameLimits(scales=())


def test_a_valid_idr_with_huge_claims_is_refused_before_anything_is_allocated():
    payload = H264Encoder(crf=25).encode(_picture()).payload
    decoder = StreamDecoder()
    with pytest.raises(CodecError, match="scale 255") as info:
        decoder.decode(payload, "h264", 0, 255, 130560, 65280)
    assert info.value.kind == "scale"
    with pytest.raises(CodecError, match="outside"):
        decoder.decode(payload, "h264", 0, 4, 130560, 65280)
    lr, _ = decoder.decode(payload, "h264", 1, 4, 2048, 1024)  # the stream goes on
    assert lr.shape == (256, 512, 3)


def test_h264_decoder_refuses_a_picture_over_its_pixel_limit_or_of_another_size():
    payload = H264Encoder(crf=25).encode(_picture()).payload
    with pytest.raises(CodecError):  # FFmpeg refuses the SPS size (max_pixels)
        H264Decoder(max_pixels=100 * 100).decode(payload, 0)
    decoder = H264Decoder(max_pixels=512 * 256)
    with pytest.raises(CodecError, match="expected 256x128") as info:
        decoder.decode(payload, 0, size=(256, 128))
    assert info.value.kind == "size" and decoder.waiting_for_idr
    assert decoder.decode(payload, 1, size=(512, 256)).shape == (256, 512, 3)


def _png_claiming(width: int, height: int) -> bytes:
    """A tiny, valid-looking PNG whose header claims width x height (OpenCV would allocate it)."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        body = tag + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_image_headers_are_read_before_decoding():
    rgb = _picture(64, 128)
    assert image_size(encode_image(rgb, "png"), "png") == (128, 64)
    assert image_size(encode_image(rgb, "jpeg", 80), "jpeg") == (128, 64)
    bomb = _png_claiming(30000, 30000)  # 2.7 GB of pixels from ~100 bytes
    assert image_size(bomb, "png") == (30000, 30000)
    with pytest.raises(CodecError, match="expected 128x64") as info:
        decode_image(bomb, "png", size=(128, 64))
    assert info.value.kind == "size"
    with pytest.raises(CodecError, match="exceeds"):
        decode_image(bomb, "png", max_pixels=4096 * 4096)
    with pytest.raises(CodecError, match="frame header"):
        image_size(b"\xff\xd8\xff\xd9", "jpeg")


def test_opencv_errors_become_codec_errors():
    # a PNG that passes the header and size checks but is not a picture OpenCV can read
    broken = _png_claiming(128, 64)
    with pytest.raises(CodecError):
        decode_image(broken, "png", size=(128, 64))


def test_trusted_offline_limits_open_a_decoder():
    from cloudseg.guard import TRUSTED

    payload = H264Encoder(crf=25).encode(_picture()).payload
    lr, _ = StreamDecoder(TRUSTED).decode(payload, "h264", 0, 4, 2048, 1024)
    assert lr.shape == (256, 512, 3)


def test_a_restored_images_camera_size_must_fit_the_image():
    from cloudseg.guard import check_camera_size

    assert check_camera_size(2048, 1024, 2, 1024, 512) == (2048, 1024)
    assert check_camera_size(2046, 1023, 3, 682, 341) == (2046, 1023)  # floor, as the sr node
    for claim in ((130560, 65280, 255, 512, 256), (2048, 1024, 2, 512, 256), (0, 1, 1, 0, 1)):
        with pytest.raises(BadInput, match="camera size") as err:
            check_camera_size(*claim)
        assert err.value.kind == "size"
