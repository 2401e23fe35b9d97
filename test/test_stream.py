"""FrameCompressor / StreamDecoder: the vehicle and cloud halves of one stream, without DDS."""

from __future__ import annotations

import cv2
import pytest

from cloudseg.media.codecs import CodecError
from cloudseg.media.quality import psnr
from cloudseg.media.stream import CompressorSettings, FrameCompressor, StreamDecoder


@pytest.fixture(scope="module")
def frames(shared_data):
    folder = shared_data / "sequences" / "aachen_seq0000"
    paths = sorted(folder.glob("*_leftImg8bit.*"))[:6]
    # a 1024x512 window keeps the test fast; content stays real
    return [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB)[256:768, 512:1536] for p in paths]


def _run(compressor, decoder, frames, start_seq=0):
    out = []
    for seq, rgb in enumerate(frames, start_seq):
        c = compressor.compress(rgb)
        out.append((c, decoder.restore(c.payload, c.codec, seq, c.scale, c.width, c.height)))
    return out


@pytest.mark.parametrize(
    ("codec", "scale", "bound"), [("h264", 4, 26.0), ("jpeg", 2, 30.0), ("png", 1, float("inf"))]
)
def test_stream_restores_full_size_with_bounded_loss(frames, codec, scale, bound):
    results = _run(
        FrameCompressor(CompressorSettings(scale=scale, codec=codec)), StreamDecoder(), frames
    )
    for rgb, (_c, r) in zip(frames, results, strict=True):
        assert r is not None and r.rgb.shape == rgb.shape
        assert r.lr.shape[:2] == (rgb.shape[0] // scale, rgb.shape[1] // scale)
        assert psnr(rgb, r.rgb) >= bound


def test_new_settings_apply_at_the_next_frame_with_an_idr(frames):
    comp = FrameCompressor(CompressorSettings(scale=4, codec="h264", gop=100))
    first = comp.compress(frames[0])
    second = comp.compress(frames[1])
    assert first.keyframe and not second.keyframe
    comp.apply(comp.settings.with_changes(scale=2))
    assert comp.settings.scale == 4  # not yet
    third = comp.compress(frames[2])
    assert third.scale == 2 and third.keyframe


def test_odd_downsampled_size_is_cropped_to_even_and_restored(frames):
    rgb = frames[0][:510, :1022]  # /3 -> 170x340: fine; /4 -> 127x255: odd
    results = _run(FrameCompressor(CompressorSettings(scale=4)), StreamDecoder(), [rgb])
    assert results[0][1].rgb.shape == rgb.shape


def test_lost_frame_waits_for_next_idr(frames):
    comp = FrameCompressor(CompressorSettings(scale=4, gop=3))
    decoder = StreamDecoder()
    encoded = [comp.compress(rgb) for rgb in frames]  # IDR at 0 and 3
    decoded = []
    for seq, c in enumerate(encoded):
        if seq == 1:
            continue  # lost on the link
        decoded.append(decoder.restore(c.payload, c.codec, seq, c.scale, c.width, c.height))
    assert decoded[0] is not None
    assert decoded[1] is None  # seq 2 depends on lost seq 1
    assert all(d is not None for d in decoded[2:])  # IDR at seq 3 restarts decoding


def test_bad_payloads_are_refused_and_the_stream_goes_on(frames):
    comp = FrameCompressor(CompressorSettings(scale=2, codec="jpeg"))
    decoder = StreamDecoder()
    c = comp.compress(frames[0])
    with pytest.raises(CodecError):
        decoder.restore(c.payload[: len(c.payload) // 2], "jpeg", 0, 2, c.width, c.height)
    with pytest.raises(CodecError, match="expected"):  # header disagrees with the payload
        decoder.restore(c.payload, "jpeg", 1, 4, c.width, c.height)
    with pytest.raises(CodecError, match="unknown codec"):
        decoder.restore(c.payload, "vp9", 2, 2, c.width, c.height)
    with pytest.raises(CodecError, match="unknown codec"):
        CompressorSettings(codec="vp9")
    assert decoder.restore(c.payload, "jpeg", 3, 2, c.width, c.height) is not None


def test_restore_with_garbage_header_is_refused():
    with pytest.raises(CodecError, match="scale 0 is not allowed"):
        StreamDecoder().restore(b"xx", "png", 0, 0, 0, 0)
    with pytest.raises(CodecError, match="outside"):
        StreamDecoder().restore(b"xx", "png", 0, 2, 0, 0)


def test_profiling_frame_is_full_resolution_once_and_keeps_new_settings(frames):
    comp = FrameCompressor(CompressorSettings(scale=4, codec="jpeg"))
    comp.compress(frames[0])
    comp.apply(comp.settings.with_changes(scale=2))  # a Knob with a profiling request
    profiling = comp.compress(frames[1], full_resolution=True)
    after = comp.compress(frames[2])
    assert profiling.scale == 1 and after.scale == 2 and comp.settings.scale == 2
    restored = StreamDecoder().restore(
        profiling.payload, "jpeg", 0, 1, profiling.width, profiling.height
    )
    assert restored.lr.shape == frames[1].shape
