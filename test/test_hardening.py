"""Hostile and faulty input over real Fast DDS (issue 9): the nodes keep serving, a bad Knob is
refused as a whole, one-shot requests fire once, a lost frame is recovered in one round trip,
and the processes stop cleanly on SIGTERM."""

from __future__ import annotations

import signal
import struct
import subprocess
import zlib

import cv2
import numpy as np
import pytest

from cloudseg.graph import (
    FRAMES_TOPIC,
    IMAGE_TOPIC,
    KEYFRAME_REQUEST_TOPIC,
    KNOB_TOPIC,
    LABELS_TOPIC,
    RESTORED_TOPIC,
    config_dir,
)
from cloudseg.launcher import NodeProcesses
from support import spin_for, spin_until, wait_until

# the test node and the node processes use the one-host Fast DDS profile (full-size labels
# over shared memory)
pytestmark = [pytest.mark.dds, pytest.mark.usefixtures("fastdds_local")]


def _wait_or_dump(proc, timeout: float) -> int | None:
    """The exit code; None when the process still runs after `timeout` s, and then it prints
    its threads' stacks into its log first (SIGUSR1: faulthandler, see nodes.common.run_nodes)."""
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGUSR1)
        wait_until(lambda: "most recent call first" in proc.log_tail() or not proc.alive(), 10)
        return None


def _camera_frames(shared_data, n: int) -> list[np.ndarray]:
    folder = shared_data / "sequences" / "aachen_seq0000"
    paths = sorted(folder.glob("*.jpg"))[:n]
    return [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in paths]


def _png_claiming(width: int, height: int) -> bytes:
    """~100 bytes of PNG whose header claims width x height: OpenCV raised cv2.error (over its
    2^30-pixel limit) or allocated gigabytes (under it)."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        body = tag + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def _wait_matched(ros, publishers, timeout: float = 60.0) -> None:
    assert spin_until(ros, lambda: all(p.get_subscription_count() for p in publishers), timeout)
    spin_for(ros, 1.0)  # discovery is not symmetric: let the other side match us too


def test_cloud_survives_hostile_frames_and_answers_the_valid_one(
    shared_data, weights_env, tmp_path, ros
):
    """Negative stamp, a PNG that broke OpenCV, a real IDR claiming gigabytes, an unknown codec,
    a corrupt access unit and a bad Knob: each is dropped with its reason; the valid frame
    after them gets labels; a gap makes the cloud ask for an IDR; SIGTERM stops it cleanly."""
    from sensor_msgs.msg import Image

    from cloudseg.media.stream import CompressorSettings, FrameCompressor
    from cloudseg.msg import Frame, KeyframeRequest, Knob
    from cloudseg.nodes.common import qos_for

    frames_pub = ros.create_publisher(Frame, FRAMES_TOPIC, qos_for(FRAMES_TOPIC))
    knob_pub = ros.create_publisher(Knob, KNOB_TOPIC, qos_for(KNOB_TOPIC))
    labels, requests = [], []
    ros.create_subscription(Image, LABELS_TOPIC, labels.append, qos_for(LABELS_TOPIC))
    ros.create_subscription(
        KeyframeRequest, KEYFRAME_REQUEST_TOPIC, requests.append, qos_for(KEYFRAME_REQUEST_TOPIC)
    )
    rgb = _camera_frames(shared_data, 4)
    comp = FrameCompressor(CompressorSettings(scale=4, gop=100))
    sent = [comp.compress(x) for x in rgb]  # an IDR, then P-frames
    assert sent[0].keyframe and not sent[1].keyframe

    def frame(seq, c=sent[0], sec=None, **claims):
        f = Frame(seq=seq, scale=c.scale, width=c.width, height=c.height, codec=c.codec)
        f.keyframe = c.keyframe
        for name, value in claims.items():
            setattr(f, name, value)
        f.data = claims.get("data", c.payload)
        f.header.frame_id = "camera"
        f.header.stamp = ros.get_clock().now().to_msg()
        f.sent_stamp = ros.get_clock().now().to_msg()
        if sec is not None:
            f.sent_stamp.sec = sec
        return f

    hostile = [
        frame(0, sec=-1),  # Time.from_msg raised here and ended the cloud process
        frame(1, codec="png", scale=2, width=256, height=128, data=_png_claiming(40000, 40000)),
        frame(2, scale=255, width=130560, height=65280),  # a real 512x256 IDR claiming GBs
        frame(3, codec="vp9"),
        frame(4, data=sent[0].payload[: len(sent[0].payload) // 3]),  # a cut access unit
    ]
    with NodeProcesses(log_dir=tmp_path) as procs:
        cloud = procs.start(
            "cloud", config_dir() / "cloud.yaml", {"device": "cpu", "cpu_max_width": 256}
        )
        _wait_matched(ros, [frames_pub, knob_pub], timeout=90)
        knob_pub.publish(Knob(seq=1, scale=4, codec="h264", crf=60))  # refused
        for f in hostile:
            frames_pub.publish(f)
            spin_for(ros, 0.3)
        valid = frame(10)
        frames_pub.publish(valid)
        assert spin_until(ros, lambda: labels, 120), (tmp_path / "cloud.log").read_text()
        frames_pub.publish(frame(11, c=sent[1]))  # the P-frame after the IDR: decodes
        spin_for(ros, 0.5)
        frames_pub.publish(frame(13, c=sent[3]))  # 12 was lost: the cloud asks for an IDR
        assert spin_until(ros, lambda: len(requests) >= 2, 10), (tmp_path / "cloud.log").read_text()
        spin_for(ros, 0.5)
        assert cloud.poll() is None, "the cloud died"
        cloud.send_signal(signal.SIGTERM)
        code = _wait_or_dump(cloud, 30)
    log = (tmp_path / "cloud.log").read_text()
    assert code == 0, log
    assert labels[0].header.stamp == valid.header.stamp, log
    assert (labels[0].width, labels[0].height) == (2048, 1024)
    for seq, kind in enumerate(("stamp", "size", "scale", "codec", "payload")):
        assert f"frame {seq} dropped ({kind})" in log, log
    assert "knob 1 refused: crf 60: must be <= 51" in log, log
    asked = [(r.seq, r.last_decoded_seq, r.reason) for r in requests]
    assert asked == [(4, 0, "undecodable"), (13, 11, "lost")], log  # one per gap
    assert requests[-1].header.frame_id == "camera"
    assert "asked the vehicle for an IDR (lost" in log
    assert "Traceback" not in log


def test_a_bad_knob_is_refused_and_a_full_frame_request_fires_once_across_a_restart(tmp_path, ros):
    from sensor_msgs.msg import Image

    from cloudseg.msg import Frame, Knob
    from cloudseg.nodes.common import qos_for
    from cloudseg.nodes.convert import numpy_to_image

    knob_pub = ros.create_publisher(Knob, KNOB_TOPIC, qos_for(KNOB_TOPIC))
    image_pub = ros.create_publisher(Image, IMAGE_TOPIC, qos_for(IMAGE_TOPIC))
    frames: list[Frame] = []
    ros.create_subscription(Frame, FRAMES_TOPIC, frames.append, qos_for(FRAMES_TOPIC))
    rgb = np.random.default_rng(4).integers(0, 255, (128, 256, 3), dtype=np.uint8)

    def knob(seq: int, **fields) -> Knob:
        k = Knob(seq=seq, scale=2, codec="h264", crf=30, **fields)
        k.header.stamp = ros.get_clock().now().to_msg()
        return k

    def send_images(n: int) -> list[Frame]:
        frames.clear()
        for _ in range(n):
            image_pub.publish(numpy_to_image(rgb, "rgb8"))
            spin_for(ros, 0.3)
        spin_until(ros, lambda: len(frames) >= n, 5)
        return list(frames)

    def said(text: str) -> bool:
        return text in (tmp_path / "compressor.log").read_text()

    logs = []
    with NodeProcesses(log_dir=tmp_path) as procs:
        procs.start("compressor", config_dir() / "vehicle.yaml")
        _wait_matched(ros, [knob_pub, image_pub])
        knob_pub.publish(knob(1))
        assert spin_until(ros, lambda: said("knob 1 applies"), 10)
        knob_pub.publish(knob(2, key_threshold=0.1, useful_threshold=0.2, max_fps=float("nan")))
        assert spin_until(ros, lambda: said("knob 2 refused"), 10)
        kept = send_images(2)  # knob 1 still in force
        knob_pub.publish(knob(3, request_full_frame=True))
        assert spin_until(ros, lambda: said("knob 3 applies"), 10)
        asked = send_images(3)
        procs.stop_all()
        logs.append((tmp_path / "compressor.log").read_text())
        procs.procs.clear()
        procs.start("compressor", config_dir() / "vehicle.yaml")  # gets knob 3 again
        _wait_matched(ros, [image_pub])
        restarted = send_images(3)
        logs.append((tmp_path / "compressor.log").read_text())
    first, second = logs
    assert [(f.scale, f.knob_seq) for f in kept] == [(2, 1), (2, 1)], first
    assert "knob 2 refused: " in first and "above key_threshold" in first, first
    assert "max_fps nan" in first
    assert [f.scale for f in asked] == [1, 2, 2], first  # one full-resolution frame
    assert restarted and all((f.scale, f.knob_seq) == (2, 3) for f in restarted), second
    assert "knob 3 applies" in second and "predates this node" in second, second
    assert "Traceback" not in first + second


def test_a_lost_frame_is_recovered_at_the_next_frame(tmp_path, ros):
    """The vehicle's frames go through the test (a lossy link dropping one P-frame) to a real
    sr process; its keyframe request reaches the real compressor, whose next frame is an IDR
    (its GOP is 17), and the cloud restores again from there."""
    from sensor_msgs.msg import Image

    from cloudseg.msg import Frame
    from cloudseg.nodes.common import qos_for
    from cloudseg.nodes.convert import numpy_to_image

    vehicle_frames = "/test/vehicle_frames"
    image_pub = ros.create_publisher(Image, IMAGE_TOPIC, qos_for(IMAGE_TOPIC))
    link_pub = ros.create_publisher(Frame, FRAMES_TOPIC, qos_for(FRAMES_TOPIC))
    seen: list[Frame] = []
    restored: list[Image] = []
    lost = 4

    def relay(f: Frame) -> None:
        seen.append(f)
        if f.seq != lost:
            link_pub.publish(f)

    ros.create_subscription(Frame, vehicle_frames, relay, qos_for(FRAMES_TOPIC))
    ros.create_subscription(Image, RESTORED_TOPIC, restored.append, qos_for(RESTORED_TOPIC))
    base = cv2.resize(
        np.random.default_rng(5).integers(0, 255, (16, 32, 3), dtype=np.uint8), (256, 128)
    )
    with NodeProcesses(log_dir=tmp_path) as procs:
        procs.start("sr", config_dir() / "cloud_bilinear.yaml")
        procs.start(
            "compressor",
            config_dir() / "vehicle.yaml",
            {"gop": 17},
            extra_args=["-r", f"{FRAMES_TOPIC}:={vehicle_frames}"],
        )
        _wait_matched(ros, [image_pub, link_pub])
        assert spin_until(
            ros,
            lambda: (
                ros.count_publishers(vehicle_frames)
                and ros.count_subscribers("/cloudseg/keyframe_request") >= 1
            ),
            30,
        )
        for i in range(10):
            image = numpy_to_image(np.roll(base, 3 * i, axis=1), "rgb8")
            image.header.stamp = ros.get_clock().now().to_msg()
            image_pub.publish(image)
            spin_for(ros, 0.4)  # a slow camera: every request has time to arrive
        spin_until(ros, lambda: len(seen) >= 10, 5)
        codes = procs.stop_all(grace=20)  # SIGINT: both stop by themselves
    logs = {n: (tmp_path / f"{n}.log").read_text() for n in ("sr", "compressor")}
    assert codes == {"sr": 0, "compressor": 0}, logs
    assert [f.seq for f in seen] == list(range(10)), logs
    keyframes = [f.seq for f in seen if f.keyframe]
    assert keyframes == [0, lost + 2], logs  # asked for at lost + 1, sent at lost + 2
    restored_seqs = [
        next(f.seq for f in seen if f.header.stamp == r.header.stamp) for r in restored
    ]
    assert restored_seqs == [s for s in range(10) if s not in (lost, lost + 1)], logs
    assert "asked the vehicle for an IDR (lost" in logs["sr"]
    assert "the cloud asks for an IDR (lost at frame 5)" in logs["compressor"]
