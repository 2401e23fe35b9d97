"""The vehicle process over real Fast DDS: frame selection in front of the compressor, and
labels for every camera frame."""

from __future__ import annotations

import numpy as np
import pytest

from cloudseg.graph import (
    CAMERA_LABELS_INFO_TOPIC,
    FRAMES_TOPIC,
    IMAGE_TOPIC,
    KNOB_TOPIC,
    LABELS_TOPIC,
    config_dir,
)
from cloudseg.launcher import NodeProcesses
from support import spin_for, spin_until

pytestmark = pytest.mark.dds

FPS = 17


def _picture(seed: int) -> np.ndarray:
    import cv2

    noise = np.random.default_rng(seed).integers(0, 255, (16, 32, 3), dtype=np.uint8)
    return cv2.resize(noise, (256, 128), interpolation=cv2.INTER_CUBIC)


def test_selected_frames_carry_level_and_deviation_and_labels_follow_every_camera_frame(
    tmp_path, ros
):
    """Still frames are STALE, a cut is a KEY frame and an IDR, level and deviation arrive in
    Frame; a bad Knob is refused with a log line; labels that come back are republished for
    each later camera frame with the seq they came from and their age."""
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header

    from cloudseg.msg import Frame, Knob, LabelAge
    from cloudseg.nodes.common import qos_for
    from cloudseg.nodes.convert import numpy_to_image

    node = ros
    frames, ages = [], []
    image_pub = node.create_publisher(Image, IMAGE_TOPIC, qos_for(IMAGE_TOPIC))
    labels_pub = node.create_publisher(Image, LABELS_TOPIC, qos_for(LABELS_TOPIC))
    knob_pub = node.create_publisher(Knob, KNOB_TOPIC, qos_for(KNOB_TOPIC))
    node.create_subscription(Frame, FRAMES_TOPIC, frames.append, qos_for(FRAMES_TOPIC))
    node.create_subscription(
        LabelAge, CAMERA_LABELS_INFO_TOPIC, ages.append, qos_for(CAMERA_LABELS_INFO_TOPIC)
    )

    def header(i: int) -> Header:
        h = Header(frame_id="camera")
        h.stamp.sec, h.stamp.nanosec = divmod(round(i * 1e9 / FPS), 10**9)
        return h

    def vehicle_log() -> str:
        return (tmp_path / "vehicle.log").read_text()

    def publish(i: int, rgb: np.ndarray) -> None:
        image_pub.publish(numpy_to_image(rgb, "rgb8", header(i)))
        spin_for(node, 0.15)

    a, b = _picture(1), _picture(2)
    with NodeProcesses(log_dir=tmp_path) as procs:
        procs.start("vehicle", config_dir() / "vehicle.yaml", {"mode": "pixel"})
        spin_until(
            node,
            lambda: all(p.get_subscription_count() for p in (image_pub, labels_pub, knob_pub)),
            30,
        )
        spin_for(node, 1.0)  # discovery is not symmetric: let the other side match us too
        bad = Knob(seq=3, scale=4, key_threshold=0.1, useful_threshold=0.2)  # refused
        knob_pub.publish(bad)
        spin_until(node, lambda: "knob 3 refused" in vehicle_log(), 10)
        for i in range(6):  # 0: KEY (first); 1-5: the same picture, STALE (< 0.5 s)
            publish(i, a)
        publish(6, b)  # a cut: KEY at once
        spin_until(node, lambda: len(frames) >= 2, 10)
        labels_pub.publish(numpy_to_image(np.ones((64, 128), np.uint8), "mono8", header(0)))
        spin_for(node, 0.5)  # the labels reach camera_labels (nothing to see from here)
        for i in (7, 8):
            publish(i, b)
        spin_until(node, lambda: len(ages) >= 2, 10)
    log = vehicle_log()
    assert [f.seq for f in frames] == [0, 1], log  # the five still frames were not sent
    first, cut = frames
    assert (first.level, first.keyframe) == (Frame.LEVEL_KEY, True)
    assert (cut.level, cut.keyframe) == (Frame.LEVEL_KEY, True), log
    assert cut.deviation >= 0.08 and cut.header.stamp == header(6).stamp
    assert "knob 3 refused: " in log and "useful_threshold 0.2 is above key_threshold" in log
    assert "Traceback" not in log
    assert [m.header.stamp for m in ages] == [header(7).stamp, header(8).stamp], log
    assert all(m.source_seq == 0 and m.source_stamp == header(0).stamp for m in ages)
    assert ages[0].age_ms == pytest.approx(7 / FPS * 1e3, abs=0.01)
    assert ages[1].age_ms == pytest.approx(8 / FPS * 1e3, abs=0.01)
