"""The demo's counts stay consistent when the monitor misses messages; split-cloud reports
are counted once per frame; frames the cloud skipped are skipped, not lost."""

from __future__ import annotations

import json

from cloudseg.stream_stats import StreamStats


def test_split_cloud_reports_each_stage_once_per_frame():
    """The sr node (the receiver: seq, transport, decode + restoration) and the segmentation
    node (segmentation only) both report each frame; each stage is timed once per frame."""
    stats = StreamStats()
    for seq in range(5):
        stats.add_sent(seq, key=seq == 0, payload_bytes=1000, encode_ms=3.0)
        key = (seq, 0)
        stats.add_cloud_report(
            key, receiver=True, seq=seq, frames_received=seq + 1, transport_ms=1.0,
            decode_restore_ms=50.0,
        )  # fmt: skip
        if seq % 2 == 0:  # the segmentation node keeps up with every other frame
            stats.add_cloud_report(key, receiver=False, segmentation_ms=400.0)
            stats.add_cloud_report(key, receiver=False, segmentation_ms=400.0)  # a repeat
    n = {stage: len(v) for stage, v in stats.latency_ms.items() if v}
    assert n == {"encode": 5, "transport": 5, "decode_restore": 5, "segmentation": 3}
    assert (stats.frames_sent, stats.frames_received, stats.frames_processed) == (5, 5, 3)
    assert (stats.frames_skipped, stats.frames_lost) == (2, 0)


def test_counts_are_consistent_when_the_monitor_misses_messages():
    """The monitor (best effort) saw 8 camera images of the 10 the source published and 7 of
    the 10 Frames; the cloud's reports carry its own count and the sequence numbers: in 10 /
    sent 10 / received 9, nothing counted twice, received <= sent <= in."""
    stats = StreamStats(segmenting=False)  # restoration only (cloud_bilinear)
    for _ in range(8):
        stats.add_camera_frame()
    for seq in (0, 1, 2, 4, 5, 6, 8):
        stats.add_sent(seq, key=False, payload_bytes=500, encode_ms=2.0)
    for received, seq in enumerate((0, 1, 2, 3, 4, 5, 6, 7, 9), start=1):  # 8 lost on the way
        stats.add_cloud_report((seq, 0), receiver=True, seq=seq, frames_received=received)
    assert (stats.frames_in, stats.frames_sent, stats.frames_received) == (10, 10, 9)
    stats.source_frames = 10
    assert stats.frames_in == 10
    summary = stats.summary()
    assert summary["frames_received"] <= summary["frames_sent"] <= summary["frames_in"]
    assert (summary["frames_processed"], summary["frames_skipped"], summary["frames_lost"]) == (
        9,
        0,
        1,
    )
    assert stats.report().splitlines()[:2] == [
        "frames in / sent / received : 10 / 10 / 9 (lost on the way: 1)",
        "cloud restored / skipped    : 9 / 0",
    ]


def test_a_cpu_cloud_skips_frames_by_design_and_says_so():
    """On a CPU the cloud works on the newest frame: 30 received, 2 segmented, 28 skipped
    (its count in FrameStats.frames_received), none lost."""
    stats = StreamStats()
    stats.source_frames = 30
    for seq in range(30):
        stats.add_sent(seq, key=False, payload_bytes=900, encode_ms=5.0)
    for seq, received in ((0, 1), (29, 30)):
        stats.add_cloud_report(
            (seq, 0), receiver=True, seq=seq, frames_received=received, transport_ms=1.0,
            decode_restore_ms=3000.0, segmentation_ms=600.0,
        )  # fmt: skip
    stats.labels_received = 2
    summary = json.loads(stats.to_json())
    assert (summary["frames_received"], summary["frames_processed"]) == (30, 2)
    assert (summary["frames_skipped"], summary["frames_lost"]) == (28, 0)
    line = stats.report().splitlines()[1]
    assert line.startswith("cloud segmented / skipped   : 2 / 28 (newest frame first")
    assert line.endswith("labels back: 2")
