"""Frames that fit (issue 19): a per-frame budget caps every H.264 frame, the stream stays
decodable from its first IDR, and 0 changes nothing (plain logic on real frames)."""

from __future__ import annotations

import numpy as np
import pytest

from cloudseg.control.knob import check_knob, compressor_changes, frame_budget
from cloudseg.data.sources import open_source
from cloudseg.guard import BadInput
from cloudseg.media.h264 import H264Decoder, H264Encoder
from cloudseg.media.resize import downsample
from cloudseg.media.stream import CompressorSettings, FrameCompressor
from cloudseg.msg import Knob


@pytest.fixture(scope="module")
def frames(shared_data) -> list[np.ndarray]:
    """12 real camera frames (2048x1024; the compressor makes them 512x256)."""
    return [f.rgb for f in open_source(shared_data / "sequences/aachen_seq0000", limit=12)]


def _send(compressor: FrameCompressor, frames, budgets) -> list:
    """Compress frame i under budgets[i]; decode what would be sent; the frames sent."""
    decoder, sent = H264Decoder(), []
    for rgb, budget in zip(frames, budgets, strict=True):
        compressor.apply(compressor.next_settings.with_changes(max_frame_bytes=budget))
        out = compressor.compress(rgb)
        if out.droppable:
            continue
        assert decoder.decode(out.payload, len(sent)) is not None  # PyAV decodes every one
        sent.append(out)
    return sent


def test_every_frame_fits_its_budget_and_the_stream_decodes(frames):
    budgets = [3000] * 4 + [1500] * 4 + [2500] * 4  # down (an IDR), then up (none extra)
    compressor = FrameCompressor(CompressorSettings(gop=17))
    sent = _send(compressor, frames, budgets)
    assert len(sent) == len(frames) and compressor.over_budget_frames == 0
    assert all(len(f.payload) <= b for f, b in zip(sent, budgets, strict=True))
    # the first frame and the lower budget restart the encoder; the raise waits for the GOP
    assert [i for i, f in enumerate(sent) if f.keyframe] == [0, 4]
    uncapped = FrameCompressor(CompressorSettings(gop=17)).compress(frames[0])
    assert len(uncapped.payload) > 3000  # the budget did bite


def test_zero_budget_is_the_uncapped_stream(frames):
    plain = FrameCompressor(CompressorSettings())
    zero = FrameCompressor(CompressorSettings(max_frame_bytes=0))
    for rgb in frames[:4]:
        a, b = plain.compress(rgb), zero.compress(rgb)
        assert (len(a.payload), a.keyframe, a.over_budget) == (len(b.payload), b.keyframe, False)


def test_a_budget_below_the_codec_floor_sends_the_idr_and_fits_after(frames):
    compressor = FrameCompressor(CompressorSettings(max_frame_bytes=300))
    first = compressor.compress(frames[0])
    # a cold 512x256 IDR cannot get under ~800 bytes: sent anyway, the only one over
    assert first.keyframe and first.over_budget and not first.droppable
    rest = [compressor.compress(rgb) for rgb in frames[1:6]]
    assert all(len(f.payload) <= 300 and not f.keyframe for f in rest)


def test_an_over_budget_jpeg_frame_is_dropped(frames):
    """JPEG is not capped by the codec: what does not fit is not sent (the fallback)."""
    compressor = FrameCompressor(CompressorSettings(codec="jpeg", max_frame_bytes=1000))
    out = compressor.compress(frames[0])
    assert out.over_budget and out.droppable and compressor.over_budget_frames == 1


def test_encoder_budget_changes(frames):
    small = downsample(frames[0], 4, "area")
    encoder = H264Encoder(crf=25, gop=4, max_frame_bytes=2000)
    keys = []
    for i in range(9):
        if i == 2:
            encoder.set_frame_budget(4000)  # higher: at the next GOP boundary (frame 4)
        keys.append(encoder.encode(small).keyframe)
        if i == 2:
            assert encoder.max_frame_bytes == 2000
    assert encoder.max_frame_bytes == 4000
    assert keys == [True, False, False, False] * 2 + [True]  # IDRs only at GOP boundaries
    encoder.set_frame_budget(0)  # no cap: also waits for the boundary
    assert encoder.max_frame_bytes == 4000
    with pytest.raises(Exception, match="max_frame_bytes"):
        encoder.set_frame_budget(-1)


def test_knob_budget_is_checked_and_the_lower_cap_wins():
    knob = Knob(seq=1, scale=4, codec="h264", crf=25, max_frame_bytes=1500)
    k = check_knob(knob)
    assert k.max_frame_bytes == 1500
    assert compressor_changes(k)["max_frame_bytes"] == 1500
    assert compressor_changes(k, fixed_budget=1000)["max_frame_bytes"] == 1000
    assert frame_budget(0, 0) == 0 and frame_budget(2000, 0) == 2000
    knob.max_frame_bytes = 20_000_000
    with pytest.raises(BadInput, match="max_frame_bytes 20000000"):
        check_knob(knob)


def test_the_compressor_node_caps_frames_by_knob_and_parameter(ros, frames):
    """The Knob's budget and the fixed parameter: the lower applies to every Frame sent."""
    from rclpy.parameter import Parameter
    from std_msgs.msg import Header

    from cloudseg.nodes.compressor_node import CompressorNode

    node = CompressorNode(in_process=True)
    try:
        sizes = []

        def send(i: int) -> None:
            frame = node.send(Header(frame_id="camera"), frames[i])
            sizes.append(len(frame.data))

        send(0)
        assert sizes[-1] > 3000  # no budget: the IDR of the default stream
        node.on_knob(Knob(seq=1, scale=4, codec="h264", crf=25, max_frame_bytes=2000))
        for i in range(1, 5):
            send(i)
        assert max(sizes[1:]) <= 2000
        assert node.set_parameters([Parameter("max_frame_bytes", value=1200)])[0].successful
        for i in range(5, 9):
            send(i)
        assert node.compressor.settings.max_frame_bytes == 1200 and max(sizes[5:]) <= 1200
    finally:
        node.destroy_node()
