"""`cloudseg bench fuzz`: the hostile messages it builds (without DDS), its report, its command
line, and one short run over real DDS."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from cloudseg.bench import fuzz
from cloudseg.bench.fuzz.catalogue import CODEC_STRINGS, KINDS, Hostile
from cloudseg.bench.fuzz.messages import (
    KNOB_SEQ_BASE,
    ValidStream,
    jpeg_claiming,
    png_claiming,
)
from cloudseg.bench.fuzz.report import drop_kinds, summary_table


@pytest.fixture(scope="module")
def stream(shared_data):
    return ValidStream.from_folder(shared_data / "sequences" / "aachen_seq0000", limit=9)


def _all(h: Hostile, kind: str, n: int):
    return [it for _ in range(n) for it in h.make(kind)]


def test_the_valid_stream_is_a_real_h264_stream_in_gops_idr_first(stream):
    from cloudseg.media.h264 import H264Decoder

    assert [len(g) for g in stream.gops] == [3, 3, 3]
    assert all(g[0].keyframe and not any(c.keyframe for c in g[1:]) for g in stream.gops)
    decoder = H264Decoder()
    frames = stream.burst() + stream.burst()
    assert [f.seq for f in frames] == list(range(6)) and frames[0].keyframe
    for f in frames:
        rgb = decoder.decode(bytes(f.data), f.seq)
        assert rgb is not None and rgb.shape == (256, 512, 3)
    stamps = [(f.header.stamp.sec, f.header.stamp.nanosec) for f in frames]
    assert len(set(stamps)) == len(stamps)  # answers are matched by stamp


def test_every_kind_builds_messages_that_serialise(stream):
    from rclpy.serialization import serialize_message

    h = Hostile(stream, seed=1)
    for kind, (topic, _) in KINDS.items():
        items = _all(h, kind, 60)
        assert items, kind
        for it in items:
            assert it.topic == topic
            raw = it.msg if isinstance(it.msg, bytes) else serialize_message(it.msg)
            assert isinstance(raw, bytes)


def test_frames_cover_every_scale_codec_string_and_hostile_claims(stream):
    h = Hostile(stream)
    scales = {it.msg.scale for it in _all(h, "frame_scale", 512)}
    assert scales == set(range(256))
    codecs = {it.msg.codec for it in _all(h, "frame_codec", len(CODEC_STRINGS))}
    assert codecs == set(CODEC_STRINGS)
    assert {"", "h264", "vp9"} <= codecs and max(map(len, codecs)) >= 100_000
    sizes = {(it.msg.width, it.msg.height) for it in _all(h, "frame_size", 21)}
    assert {(0, 0), (2**32 - 1, 2**32 - 1)} <= sizes
    stamps = {it.msg.header.stamp.sec for it in _all(h, "frame_stamp", 13)}
    assert min(stamps) < 0 and max(stamps) == 2**31 - 1
    seqs = {it.msg.seq for it in _all(h, "frame_seq", 9)}
    assert {0, 2**64 - 1} <= seqs
    fields = _all(h, "frame_fields", 15)
    assert any(np.isnan(it.msg.deviation) for it in fields)


def test_mutated_h264_units_follow_a_clean_idr_so_a_decoder_meets_them(stream):
    h = Hostile(stream, seed=3)
    pair = h.make("frame_truncated")  # call 0: a clean IDR, then its P-frame cut short
    assert len(pair) == 2 and pair[0].msg.keyframe and not pair[1].msg.keyframe
    assert pair[1].msg.seq == pair[0].msg.seq + 1
    gop = next(g for g in stream.gops if bytes(g[0].payload) == bytes(pair[0].msg.data))
    assert len(pair[1].msg.data) < len(gop[1].payload)
    flipped = h.make("frame_bitflip")
    original = next(
        g[1].payload for g in stream.gops if bytes(g[0].payload) == bytes(flipped[0].msg.data)
    )
    assert bytes(flipped[1].msg.data) != bytes(original)
    assert len(flipped[1].msg.data) == len(original)


def test_every_hostile_knob_is_one_the_graph_must_refuse(stream):
    """The Knob cases are hostile by the graph's own rules (cloudseg.control.knob): each one
    fails check_knob, so a vehicle Frame carrying its seq shows a bug."""
    from cloudseg.control.knob import check_knob
    from cloudseg.guard import BadInput

    h = Hostile(stream)
    knobs = _all(h, "knob_range", len(Hostile.KNOB_RANGE))
    knobs += _all(h, "knob_inconsistent", len(Hostile.KNOB_INCONSISTENT))
    assert len({k.msg.seq for k in knobs}) == len(knobs)
    assert min(k.msg.seq for k in knobs) >= KNOB_SEQ_BASE
    for k in knobs:
        with pytest.raises(BadInput):
            check_knob(k.msg)


def test_bad_camera_images_are_refused_by_the_image_reader(stream):
    from cloudseg.guard import BadInput
    from cloudseg.media.image import image_to_rgb

    h = Hostile(stream)
    readable = []
    for it in _all(h, "image_size", 13):
        try:
            image_to_rgb(it.msg)
            readable.append(it.msg)
        except BadInput:
            pass
    # only the one with data to spare is a picture (cv_bridge ignores bytes past the last row)
    assert [(m.width, m.height, len(m.data)) for m in readable] == [(64, 32, 64 * 32 * 3 + 7)]


def test_image_bombs_claim_what_they_say():
    from cloudseg.media.image_codecs import encode_image, image_size

    assert image_size(png_claiming(40000, 40000), "png") == (40000, 40000)
    jpeg = encode_image(np.zeros((16, 32, 3), np.uint8), "jpeg", 90)
    assert image_size(jpeg_claiming(jpeg, 65535, 1), "jpeg") == (65535, 1)


def test_drop_counts_and_summary_table():
    log = (
        "[WARN] [1.0] [sr]: frame 3 dropped (size): claimed size 0x0 ... [1 so far]\n"
        "[WARN] [2.0] [sr]: frame 9 dropped (size): claimed ... [40 so far; 39 more]\n"
        "[ERROR] [3.0] [compressor]: image 17.000000001 dropped (ValueError): x [3 so far]\n"
        "[WARN] [4.0] [frame_selector]: camera image dropped (stamp): bad [2 so far]\n"
    )
    assert drop_kinds(log) == {
        "camera image/stamp": 2,
        "frame/size": 40,
        "image/ValueError": 3,
    }
    result = {
        "sent": 19,
        "seconds": 1.0,
        "per_kind": dict.fromkeys(KINDS, 1),
        "crashes": 0,
        "still_serving": True,
        "valid_frames_answered": 5,
        "valid_frames_sent": 6,
        "valid_frames_labelled": 5,
        "valid_bursts": 2,
        "valid_bursts_answered": 2,
        "final_bursts_answered": 1,
        "final_bursts": 1,
        "hostile_frames_answered": 0,
        "cloud_frames_received": 20,
        "vehicle_frames_for_valid_images": 2,
        "vehicle_images_valid": 2,
        "knobs_accepted": 0,
        "keyframe_requests": 1,
        "tracebacks_in_logs": 0,
        "rss_growth_mb": 1.5,
        "rss_mb": {"cloud": {"start": 1, "after_warmup": 2, "end": 3, "max": 3}},
        "stop": {"cloud": {"code": 0, "seconds": 0.5, "left_behind": []}},
    }
    table = summary_table(result)
    assert "frame_scale" in table and "still serving after the fuzzing" in table
    assert table.splitlines()[len(KINDS) + 1].split()[:2] == ["total", "19"]


def test_help_and_bad_options():
    out = subprocess.run(
        [sys.executable, "-m", "cloudseg.cli", "bench", "fuzz", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "--frames" in out.stdout and "frame_bitflip" in out.stdout
    assert fuzz.main(["--frames", "0"]) == 2
    assert fuzz.main(["--input", "/no/such/folder"]) == 2
    assert fuzz.main(["--valid-only"]) == 2


@pytest.mark.dds
@pytest.mark.slow
def test_a_short_fuzz_run_over_dds(shared_data, weights_env, tmp_path):
    """300 hostile messages (every kind) against the real processes: nothing dies, the graph
    still answers, no hostile Knob is applied, no traceback in the logs."""
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "cloudseg.cli",
            "bench",
            "fuzz",
            "--frames",
            "300",
            "--json",
            "--quiet",
            "--input",
            str(shared_data / "sequences" / "aachen_seq0000"),
            "--log-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    logs = "\n".join(p.read_text() for p in tmp_path.glob("*.log"))
    assert out.returncode == 0, out.stderr + logs
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["sent"] >= 300 and set(r["per_kind"]) == set(KINDS)
    assert r["crashes"] == 0 and r["still_serving"], r
    assert r["valid_frames_answered"] > 0
    assert r["knobs_accepted"] == 0 and r["tracebacks_in_logs"] == 0, r
    assert all(s["code"] == 0 and not s["left_behind"] for s in r["stop"].values()), r


@pytest.mark.parametrize("height", [4096, 100_000])
def test_a_1_by_n_camera_image_does_not_blow_up_the_selectors_copies(height):
    """Found by the fuzzer: the small copies followed the frame's aspect ratio, so a 1 x 4096
    rgb8 Image (12 kB) made the frame selector allocate 386 MB for 0.7 s, and a 1 x 100000 one
    asked OpenCV for 8 GB. Now the copies are at most 8 times taller than wide."""
    import resource
    import time

    from cloudseg.selection.held_labels import flow_frame
    from cloudseg.selection.pixel import PixelDeviation

    rgb = np.zeros((height, 1, 3), np.uint8)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    measure = PixelDeviation()
    features = measure.features(rgb)
    assert features.shape == (8 * 128, 128)
    assert flow_frame(rgb).shape == (8 * 256, 256)
    assert time.perf_counter() - t0 < 0.5
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 50 * 1024  # kB
    # an ordinary frame keeps its aspect ratio
    assert measure.features(np.zeros((1024, 2048, 3), np.uint8)).shape == (64, 128)


def test_an_image_smaller_than_the_scale_is_bad_input_not_an_error():
    """Found by the fuzzer: a 1x1 camera Image reached the compressor's boundary as a bare
    ValueError, logged as an unexpected error; it is bad input (kind "size"), a ValueError still."""
    from cloudseg.guard import BadInput
    from cloudseg.media.resize import downsample

    with pytest.raises(BadInput) as info:
        downsample(np.zeros((1, 1, 3), np.uint8), 4)
    assert info.value.kind == "size" and isinstance(info.value, ValueError)
