"""The controller node over real Fast DDS: FrameStats showing a bandwidth drop -> a lower Knob."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import pytest

from cloudseg.control.profile import ProfileEntry, save_profile
from cloudseg.graph import KNOB_TOPIC, STATS_TOPIC, config_dir
from cloudseg.launcher import NodeProcesses
from support import spin_for, spin_until

pytestmark = pytest.mark.dds

PROFILE = [
    ProfileEntry(scale=4, crf=28, kbps=300, miou=0.45, cloud_ms=40),
    ProfileEntry(scale=4, crf=23, kbps=600, miou=0.50, cloud_ms=40),
    ProfileEntry(scale=2, crf=23, kbps=1500, miou=0.58, cloud_ms=60),
    ProfileEntry(scale=1, crf=23, kbps=4000, miou=0.65, cloud_ms=90),
]


@contextlib.contextmanager
def controller_running(node, tmp_path, **params) -> Iterator[tuple]:
    """A controller node process on PROFILE, watched by the test's rclpy `node`: yields
    (node, knobs, stats publisher); knobs are (arrival time, Knob), the first (the start
    entry) already in."""
    from cloudseg.msg import FrameStats, Knob
    from cloudseg.nodes.common import qos_for

    profile = tmp_path / "profile.json"
    save_profile(profile, PROFILE, {"source": "test"})
    knobs: list[tuple[float, Knob]] = []
    node.create_subscription(
        Knob, KNOB_TOPIC, lambda k: knobs.append((time.monotonic(), k)), qos_for(KNOB_TOPIC)
    )
    pub = node.create_publisher(FrameStats, STATS_TOPIC, qos_for(STATS_TOPIC))
    overrides = {
        "profile": str(profile),
        "start_kbps": 10000.0,
        "full_frame_every_s": 0.0,
        "latency_bound_ms": 0.0,
        **params,
    }

    def log() -> str:
        return (tmp_path / "controller.log").read_text()

    with NodeProcesses(log_dir=tmp_path) as procs:
        procs.start("controller", config_dir() / "controller.yaml", overrides)
        assert spin_until(node, lambda: knobs, 20), log()
        yield node, knobs, pub
        # the node logs each Knob after sending it: the last one's line
        spin_until(node, lambda: f"knob {knobs[-1][1].seq}: " in log(), 5)
        assert procs.procs["controller"].poll() is None, "the controller died"


def test_controller_steps_down_after_a_bandwidth_drop(tmp_path, ros):
    from cloudseg.msg import FrameStats

    with controller_running(ros, tmp_path, window_s=0.5) as (node, knobs, pub):
        # 20 frames/s sent, 80% arrive, 10156 bytes each: goodput ~1300 kbit/s, and the
        # transport latency grows 100 ms per second (a queue). The x4 CRF 23 entry (600) is
        # the one that fits for any goodput in 750..1875: a loaded CPU that slows this loop
        # (fewer frames a second) still gets the same step.
        received = 0
        t0 = time.monotonic()
        seq = 0
        while time.monotonic() - t0 < 8 and not any(k.scale == 4 for _, k in knobs):
            seq += 1
            if seq % 5:
                received += 1
                now = node.get_clock().now().to_msg()
                stats = FrameStats(
                    seq=seq,
                    codec="h264",
                    payload_bytes=10156,
                    frames_received=received,
                    bytes_received=received * 10156,
                    transport_ms=20.0 + 100.0 * (time.monotonic() - t0),
                    total_ms=40.0,
                )
                stats.header.stamp = now
                pub.publish(stats)
                # a split cloud's segmentation node reports the frame again (no codec,
                # no counters, no transport): the controller counts the frame once
                again = FrameStats(seq=seq, segmentation_ms=30.0, total_ms=30.0)
                again.header.stamp = now
                pub.publish(again)
            spin_for(node, 0.05, spin_s=0.01)
    log = (tmp_path / "controller.log").read_text()
    first = knobs[0][1]
    assert first.scale == 1 and first.codec == "h264", log
    down = [k for _, k in knobs if k.scale == 4]
    assert down, log
    assert (down[0].crf, down[0].seq) == (23, first.seq + 1), log  # 600 <= 0.8 x 1300
    assert down[0].selection_mode == "" and down[0].quality == 0  # keep
    assert "step down (loss " in log and "goodput" in log, log  # ~20% loss, by window
    assert "Traceback" not in log


def test_a_stall_steps_down_between_windows(tmp_path, ros):
    """Stats stop (a collapsing link): the Knob for the lowest entry goes out about stall_s
    later, not at the end of a long window."""
    from cloudseg.msg import FrameStats

    # window_s: longer than the silence the test waits for
    with controller_running(ros, tmp_path, window_s=6.0, stall_s=1.0) as (node, knobs, pub):
        for seq in range(1, 21):  # 1 s of stats at 20 frames/s, then nothing
            stats = FrameStats(seq=seq, codec="h264", payload_bytes=20000, total_ms=40.0)
            stats.frames_received, stats.bytes_received = seq, seq * 20000
            stats.transport_ms = 20.0
            stats.header.stamp = node.get_clock().now().to_msg()
            pub.publish(stats)
            spin_for(node, 0.05, spin_s=0.01)
        last_stats = time.monotonic()
        spin_until(node, lambda: len(knobs) >= 2, 5)
    log = (tmp_path / "controller.log").read_text()
    assert len(knobs) >= 2, log
    at, down = knobs[1]
    assert (down.scale, down.crf) == (4, 28), log  # the lowest entry
    assert 0.9 <= at - last_stats <= 2.5, (at - last_stats, log)  # window_s is 6
    assert "no stats for" in log


def test_a_growing_queue_steps_down_at_once_with_a_frame_budget(tmp_path, ros):
    """Arrival minus send times grow 20 ms a frame (a queue building on the link): the delay
    detector's over-use steps down at the stats that show it, long before the window's end,
    and the Knob carries a frame budget for the new entry."""
    from cloudseg.msg import FrameStats

    with controller_running(ros, tmp_path, window_s=6.0) as (node, knobs, pub):
        t0 = time.monotonic()
        base_ns = time.time_ns()
        for seq in range(1, 61):  # 20 frames/s for up to 3 s
            stats = FrameStats(seq=seq, codec="h264", payload_bytes=20000, total_ms=40.0)
            stats.frames_received, stats.bytes_received = seq, seq * 20000
            stats.transport_ms = 20.0
            stats.sent_ns = base_ns + seq * 50_000_000
            queue_ms = 20 * max(seq - 20, 0)  # steady for 1 s, then a queue grows
            stats.arrival_ns = stats.sent_ns + 20_000_000 + queue_ms * 1_000_000
            stats.header.stamp = node.get_clock().now().to_msg()
            pub.publish(stats)
            spin_for(node, 0.05, spin_s=0.01)
            if len(knobs) >= 2:
                break
        at = time.monotonic() - t0
    log = (tmp_path / "controller.log").read_text()
    assert len(knobs) >= 2, log
    down = knobs[1][1]
    assert down.scale > 1 and "delay over-use" in log, log
    assert at < 4.0, (at, log)  # window_s is 6
    assert down.max_frame_bytes > 0, log
