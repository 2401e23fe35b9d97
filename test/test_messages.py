"""Messages build and round-trip through CDR; Image <-> numpy follows cv_bridge's conventions."""

from __future__ import annotations

import functools
import operator

import numpy as np
import pytest
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import Image

from cloudseg.msg import Frame, FrameStats, Knob
from cloudseg.nodes.convert import (
    ImageError,
    compressed_image,
    image_to_numpy,
    image_to_rgb,
    numpy_to_image,
)


def test_frame_round_trip_keeps_every_field():
    f = Frame(
        seq=7,
        level=Frame.LEVEL_USEFUL,
        deviation=0.25,
        scale=4,
        width=2048,
        height=1024,
        codec="h264",
        keyframe=True,
        knob_seq=3,
        encode_ms=1.5,
    )
    f.header.frame_id = "camera"
    f.header.stamp.sec = 12
    f.data = bytes(range(256)) * 10
    g = deserialize_message(serialize_message(f), Frame)
    assert (g.seq, g.level, g.scale, g.width, g.height, g.codec, g.keyframe, g.knob_seq) == (
        7,
        Frame.LEVEL_USEFUL,
        4,
        2048,
        1024,
        "h264",
        True,
        3,
    )
    assert bytes(g.data) == bytes(f.data)
    assert g.header.frame_id == "camera" and g.header.stamp.sec == 12
    assert Frame.LEVEL_KEY != Frame.LEVEL_USEFUL


def test_knob_and_stats_round_trip():
    k = Knob(
        seq=5,
        scale=2,
        max_fps=8.5,
        key_threshold=0.3,
        useful_threshold=0.1,
        codec="jpeg",
        bitrate_kbps=750,
        crf=23,
        quality=80,
        sr_bypass=True,
        request_full_frame=True,
    )
    k2 = deserialize_message(serialize_message(k), Knob)
    assert (k2.seq, k2.scale, k2.codec, k2.sr_bypass, k2.request_full_frame) == (
        5,
        2,
        "jpeg",
        True,
        True,
    )
    assert k2.max_fps == pytest.approx(8.5)
    s = deserialize_message(serialize_message(FrameStats(seq=1, decode_ms=2.5)), FrameStats)
    assert s.decode_ms == pytest.approx(2.5)


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "mono8"])
def test_numpy_image_round_trip(encoding):
    rng = np.random.default_rng(0)
    shape = (5, 7, 3) if encoding != "mono8" else (5, 7)
    array = rng.integers(0, 256, shape, dtype=np.uint8)
    msg = numpy_to_image(array, encoding)
    assert (msg.width, msg.height, msg.encoding) == (7, 5, encoding)
    assert np.array_equal(image_to_numpy(msg), array)


def test_bgr8_and_mono8_become_rgb():
    bgr = np.zeros((2, 3, 3), np.uint8)
    bgr[..., 0] = 255  # blue
    assert image_to_rgb(numpy_to_image(bgr, "bgr8"))[0, 0].tolist() == [0, 0, 255]
    mono = np.full((2, 3), 9, np.uint8)
    assert image_to_rgb(numpy_to_image(mono, "mono8")).shape == (2, 3, 3)


def test_row_padding_is_honoured():
    msg = Image(height=2, width=3, encoding="rgb8", step=12)  # 9 bytes of pixels + 3 padding
    rows = [[*list(range(9)), 99, 99, 99], [*list(range(10, 19)), 99, 99, 99]]
    msg.data = bytes(functools.reduce(operator.iadd, rows, []))
    out = image_to_numpy(msg)
    assert out.shape == (2, 3, 3) and 99 not in out


def test_bad_images_give_clear_errors():
    with pytest.raises(ImageError, match="encoding"):
        image_to_numpy(Image(height=1, width=1, encoding="32FC1", step=4, data=b"\0" * 4))
    with pytest.raises(ImageError, match="bytes"):
        image_to_numpy(Image(height=2, width=2, encoding="rgb8", step=6, data=b"\0" * 5))
    with pytest.raises(ImageError, match="step"):
        image_to_numpy(Image(height=1, width=2, encoding="rgb8", step=3, data=b"\0" * 3))
    with pytest.raises(ImageError):
        numpy_to_image(np.zeros((2, 2), np.float32), "mono8")


def test_compressed_image_carries_format():
    msg = compressed_image(b"\xff\xd8", "rgb8; jpeg compressed bgr8")
    assert msg.format == "rgb8; jpeg compressed bgr8" and bytes(msg.data) == b"\xff\xd8"
