"""`cloudseg record` and `--record`: one MCAP file in the rosbag2 layout, read back with an
independent decoder (mcap-ros2-support's decoder factory over the embedded definitions), the
H.264 stream decoded with PyAV, coloured labels checked against cityscapesScripts' palette."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import av
import numpy as np
import pytest
import yaml
from cityscapesscripts.helpers.labels import trainId2label
from mcap.reader import NonSeekingReader, make_reader
from mcap_ros2.decoder import DecoderFactory
from rosbags.rosbag2 import Reader

from cloudseg.data.recording import (
    DEFAULT_TOPICS,
    DELIMITER,
    McapRecording,
    interface_prefixes,
    message_definition,
)
from cloudseg.graph import (
    CAMERA_LABELS_COLOR_TOPIC,
    CAMERA_LABELS_INFO_TOPIC,
    CAMERA_LABELS_TOPIC,
    FFMPEG_TOPIC,
    FOXGLOVE_TOPIC,
    FRAMES_TOPIC,
    LABEL_INFO_TOPIC,
    LABELS_COLOR_TOPIC,
    LABELS_TOPIC,
    OVERLAY_TOPIC,
    STATS_TOPIC,
    resolve,
)
from cloudseg.processes import ManagedProcess
from support import spin_for, spin_until, wait_until

REPO = Path(__file__).resolve().parents[1]

#: cityscapesScripts' colours by train id (255 and anything else: black)
PALETTE = np.zeros((256, 3), np.uint8)
for _tid in range(19):
    PALETTE[_tid] = trainId2label[_tid].color


def read_back(path: Path) -> dict[str, list]:
    """Every message of the recording decoded by mcap-ros2-support: topic -> [(schema name,
    log time, message)]; also checks the file's summary and rosbag2 metadata are there."""
    out: dict[str, list] = defaultdict(list)
    with open(path, "rb") as f:
        reader = make_reader(f, validate_crcs=True, decoder_factories=[DecoderFactory()])
        header = reader.get_header()
        assert header.profile == "ros2"
        summary = reader.get_summary()
        assert summary is not None and summary.statistics is not None
        for schema, channel, message, decoded in reader.iter_decoded_messages():
            assert schema.encoding == "ros2msg" and channel.message_encoding == "cdr"
            assert "offered_qos_profiles" in channel.metadata
            out[channel.topic].append((schema.name, message.log_time, decoded))
        bag = [m for m in reader.iter_metadata() if m.name == "rosbag2"]
        f.seek(0)  # record by record from the start to the closing magic, CRCs checked
        records = sum(1 for _ in NonSeekingReader(f, validate_crcs=True).iter_messages())
    assert records == sum(len(v) for v in out.values())
    assert len(bag) == 1
    meta = yaml.safe_load(bag[0].metadata["serialized_metadata"])
    assert meta["storage_identifier"] == "mcap" and meta["version"] == 9
    assert meta["message_count"] == sum(len(v) for v in out.values())
    counts = {
        t["topic_metadata"]["name"]: t["message_count"] for t in meta["topics_with_message_count"]
    }
    assert counts == {k: len(v) for k, v in out.items()}
    # rosbags, a second rosbag2 implementation, opens the one file from its embedded metadata
    with Reader(path) as bag2:
        assert {c.topic: c.msgcount for c in bag2.connections} == counts
        assert all(c.ext.offered_qos_profiles for c in bag2.connections)
    return out


def decode_h264(payloads: list[bytes]) -> list[np.ndarray]:
    """Annex B access units -> RGB frames (PyAV's own decoder)."""
    ctx = av.CodecContext.create("h264", "r")
    frames = []
    for data in payloads:
        for frame in ctx.decode(av.Packet(bytes(data))):
            frames.append(frame.to_ndarray(format="rgb24"))
    return frames


def image_array(msg) -> np.ndarray:
    """A decoded sensor_msgs/Image (mono8 or rgb8) as an array."""
    channels = {"mono8": 1, "rgb8": 3}[msg.encoding]
    data = np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, msg.step)
    return data[:, : msg.width * channels].reshape(msg.height, msg.width, channels).squeeze()


def stamp_ns(stamp) -> int:
    return stamp.sec * 10**9 + stamp.nanosec


def test_definitions_are_the_installed_msg_texts_with_their_dependencies():
    image = message_definition("sensor_msgs/msg/Image")
    msg_file = next(
        p / "share/sensor_msgs/msg/Image.msg"
        for p in interface_prefixes()
        if (p / "share/sensor_msgs/msg/Image.msg").is_file()
    )
    assert image.startswith(msg_file.read_text())
    assert f"\n{DELIMITER}MSG: std_msgs/Header\n" in image
    assert f"\n{DELIMITER}MSG: builtin_interfaces/Time\n" in image
    info = message_definition("vision_msgs/msg/LabelInfo")
    assert f"\n{DELIMITER}MSG: vision_msgs/VisionClass\n" in info
    frame = message_definition("cloudseg/msg/Frame")
    assert frame.count(DELIMITER) == 2  # Header and Time, Time once


def test_an_unwritable_or_existing_output_is_refused_in_one_line(tmp_path):
    existing = tmp_path / "there.mcap"
    existing.write_bytes(b"keep")
    cases = [
        (["record", str(tmp_path / "no_dir" / "x.mcap")], "folder"),
        (["record", str(existing)], "exists already"),
        (["record", str(tmp_path / "x.txt")], ".mcap"),
        (["record", str(tmp_path / "y.mcap"), "--topics", "cloudseg/nope"], "not a graph topic"),
        (["demo", "--record", str(tmp_path / "no_dir" / "x.mcap")], "does not exist"),
        (["run", "pipeline", "--record", str(existing)], "exists already"),
    ]
    for args, words in cases:
        t0 = time.monotonic()
        r = subprocess.run(
            [sys.executable, "-m", "cloudseg.cli", *args], capture_output=True, text=True
        )
        assert r.returncode == 2, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1 and words in r.stderr, (args, r.stderr)
        assert time.monotonic() - t0 < 30
    assert existing.read_bytes() == b"keep"
    assert not (tmp_path / "x.txt").exists() and not (tmp_path / "y.mcap").exists()


class _Publishers:
    """Every recorded message type published from a test node: the contract's topics."""

    def __init__(self, node, size=(64, 32)) -> None:
        from rosidl_runtime_py.utilities import get_message

        from cloudseg.graph import TOPICS
        from cloudseg.nodes.common import qos_for

        self.node = node
        self.size = size
        self.pub = {
            t: node.create_publisher(get_message(TOPICS[t].type), t, qos_for(t))
            for t in DEFAULT_TOPICS
        }

    def label_info(self) -> None:
        from vision_msgs.msg import LabelInfo, VisionClass

        msg = LabelInfo(threshold=0.5)
        msg.class_map = [
            VisionClass(class_id=i, class_name=trainId2label[i].name) for i in range(19)
        ]
        self.pub[LABEL_INFO_TOPIC].publish(msg)

    def frame(self, i: int, payload: bytes, key: bool) -> None:
        from builtin_interfaces.msg import Time
        from ffmpeg_image_transport_msgs.msg import FFMPEGPacket
        from foxglove_msgs.msg import CompressedVideo
        from sensor_msgs.msg import Image
        from std_msgs.msg import Header

        from cloudseg.msg import Frame, FrameStats, LabelAge

        w, h = self.size
        header = Header(stamp=Time(sec=1000 + i, nanosec=0), frame_id="camera")
        self.pub[FRAMES_TOPIC].publish(
            Frame(header=header, seq=i, codec="h264", keyframe=key, data=payload, scale=1)
        )
        self.pub[FOXGLOVE_TOPIC].publish(
            CompressedVideo(timestamp=header.stamp, frame_id="camera", data=payload, format="h264")
        )
        self.pub[FFMPEG_TOPIC].publish(
            FFMPEGPacket(
                header=header,
                width=w,
                height=h,
                encoding="h264",
                pts=i,
                flags=int(key),
                data=payload,
            )
        )
        ids = (np.arange(w * h).reshape(h, w) // 7 + i) % 20  # 19: none
        ids = np.where(ids == 19, 255, ids).astype(np.uint8)
        rgb = PALETTE[ids]
        for mono, color in (
            (LABELS_TOPIC, LABELS_COLOR_TOPIC),
            (CAMERA_LABELS_TOPIC, CAMERA_LABELS_COLOR_TOPIC),
        ):
            self.pub[mono].publish(
                Image(
                    header=header, height=h, width=w, encoding="mono8", step=w, data=ids.tobytes()
                )
            )
            self.pub[color].publish(
                Image(
                    header=header,
                    height=h,
                    width=w,
                    encoding="rgb8",
                    step=3 * w,
                    data=rgb.tobytes(),
                )
            )
        self.pub[OVERLAY_TOPIC].publish(
            Image(header=header, height=h, width=w, encoding="rgb8", step=3 * w, data=rgb.tobytes())
        )
        self.pub[STATS_TOPIC].publish(FrameStats(header=header, seq=i, total_ms=12.5))
        self.pub[CAMERA_LABELS_INFO_TOPIC].publish(LabelAge(header=header, source_seq=i))


def _h264(n: int, size=(64, 32)) -> list[tuple[bytes, bool]]:
    from cloudseg.media.h264 import H264Encoder

    enc = H264Encoder(crf=30)
    w, h = size
    out = []
    for i in range(n):
        rgb = np.zeros((h, w, 3), np.uint8)
        rgb[:, (4 * i) % w :] = (200, 40, 90)
        e = enc.encode(rgb)
        out.append((bytes(e.payload), e.keyframe))
    return out


def check_recording(path: Path, size: tuple[int, int], n_min: int) -> dict[str, list]:
    """The recording holds every default channel, decoded by the independent decoder: the
    CompressedVideo stream decodes to frames of `size`, coloured labels are the palette of the
    mono8 labels of the same stamp, LabelInfo names the 19 classes."""
    got = read_back(path)
    assert set(got) == {resolve(t) for t in DEFAULT_TOPICS}, sorted(got)
    video = got[resolve(FOXGLOVE_TOPIC)]
    assert len(video) >= n_min
    assert all(name == "foxglove_msgs/msg/CompressedVideo" for name, _, _ in video)
    frames = decode_h264([m.data for _, _, m in video])
    assert len(frames) == len(video) and frames[0].shape == (size[1], size[0], 3)
    packets = [m for _, _, m in got[resolve(FFMPEG_TOPIC)]]
    assert (packets[0].width, packets[0].height) == size and packets[0].flags & 1
    assert len(decode_h264([p.data for p in packets])) == len(packets)
    for mono, color in (
        (LABELS_TOPIC, LABELS_COLOR_TOPIC),
        (CAMERA_LABELS_TOPIC, CAMERA_LABELS_COLOR_TOPIC),
    ):
        ids = {stamp_ns(m.header.stamp): image_array(m) for _, _, m in got[resolve(mono)]}
        colored = [m for _, _, m in got[resolve(color)]]
        assert all(m.encoding == "rgb8" for m in colored)
        # each pair recorded whole (both best effort: one of a pair may be lost on the way)
        pairs = [
            (m, ids[stamp_ns(m.header.stamp)]) for m in colored if stamp_ns(m.header.stamp) in ids
        ]
        assert pairs, (mono, len(ids), len(colored))
        for m, mono_ids in pairs:
            assert np.array_equal(image_array(m), PALETTE[mono_ids])
    (info,) = [m for _, _, m in got[resolve(LABEL_INFO_TOPIC)]]
    assert [(c.class_id, c.class_name) for c in info.class_map] == [
        (i, trainId2label[i].name) for i in range(19)
    ]
    return got


@pytest.mark.dds
def test_recorder_writes_every_channel_so_an_independent_decoder_reads_it(tmp_path, ros):
    """A recorder node beside a publisher of every recorded type: LabelInfo latched before
    the recorder starts is captured; every channel decodes; the video decodes with PyAV."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from cloudseg.nodes.recorder_node import RecorderNode

    pubs = _Publishers(ros)
    pubs.label_info()  # before the recorder exists: transient local brings it
    path = tmp_path / "unit.mcap"
    reports = []
    recorder = RecorderNode(McapRecording(path), report=reports.append)
    executor = SingleThreadedExecutor()
    executor.add_node(recorder)
    executor.add_node(ros)
    try:
        assert wait_until(
            lambda: all(p.get_subscription_count() for p in pubs.pub.values()),
            20,
            lambda: executor.spin_once(timeout_sec=0.05),
        )
        n = 6
        topics = recorder.recording.topics
        for i, (payload, key) in enumerate(_h264(n)):
            pubs.frame(i, payload, key)
            # each subscription keeps the last 5: the recorder takes a frame's 10 first
            wait_until(
                lambda i=i: sum(t.count for t in topics.values()) >= 10 * (i + 1),
                5,
                lambda: executor.spin_once(timeout_sec=0.05),
            )
        assert wait_until(
            lambda: (
                len(topics) == len(DEFAULT_TOPICS)
                and all(
                    t.count >= (1 if t.name == resolve(LABEL_INFO_TOPIC) else n)
                    for t in topics.values()
                )
            ),
            20,
            lambda: executor.spin_once(timeout_sec=0.05),
        ), {k: v.count for k, v in topics.items()}
    finally:
        executor.remove_node(recorder)
        recorder.destroy_node()
        executor.shutdown()
    assert rclpy.ok()
    assert reports and str(path) in reports[0] and "nothing received" not in reports[0]
    got = check_recording(path, (64, 32), n)
    stats = [m for _, _, m in got[resolve(STATS_TOPIC)]]
    assert [s.seq for s in stats] == list(range(n)) and stats[0].total_ms == 12.5
    # the README's figure command on it: the last frame beside its labels
    r = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "viewing_figure"),
            str(path),
            str(tmp_path / "f.png"),
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    assert f"stamp {1000 + n - 1}000000000 from /cloudseg/lowres/foxglove" in r.stdout
    assert (tmp_path / "f.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.dds
def test_record_command_in_a_namespace_closes_the_file_on_ctrl_c(tmp_path, ros):
    """`cloudseg record OUT.mcap --namespace rec7 --topics ...`: Ctrl-C ends it with exit 0,
    the summary printed and a whole file (summary, rosbag2 metadata) with what was sent."""
    from cloudseg.msg import FrameStats

    path = tmp_path / "cli.mcap"
    log = tmp_path / "record.log"
    cmd = [sys.executable, "-m", "cloudseg.cli", "record", str(path), "--namespace", "rec7"]
    cmd += ["--topics", STATS_TOPIC, LABEL_INFO_TOPIC]
    proc = ManagedProcess.start(cmd, name="record", log=log)
    try:
        pub = ros.create_publisher(FrameStats, f"/rec7/{STATS_TOPIC}", 5)
        assert spin_until(ros, lambda: pub.get_subscription_count() > 0, 30), log.read_text()
        spin_for(ros, 1.0)  # the recorder's side of the match too (best effort: no resend)
        for i in range(5):
            pub.publish(FrameStats(seq=i))
            spin_until(ros, lambda: False, 0.05)
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        code = proc.wait_exit(15)
    finally:
        proc.stop()
    text = log.read_text()
    assert code == 0, text
    assert "Traceback" not in text
    assert (
        f"recording {path}: " in text and "nothing received on: /rec7/cloudseg/label_info" in text
    )
    got = read_back(path)
    assert list(got) == ["/rec7/cloudseg/stats"]
    seqs = [m.seq for _, _, m in got["/rec7/cloudseg/stats"]]
    assert seqs == list(range(5))[-len(seqs) :] and len(seqs) >= 4, seqs  # best effort


@pytest.mark.dds
def test_run_record_starts_a_recorder_that_ctrl_c_closes(tmp_path, ros):
    """`cloudseg run vehicle --namespace rec8 --record`: a recorder process beside the graph's,
    in its namespace; Ctrl-C on `run` stops it with the rest, and its file is whole."""
    from cloudseg.msg import FrameStats

    path = tmp_path / "run.mcap"
    log = tmp_path / "run.log"
    cmd = [sys.executable, "-m", "cloudseg.cli", "run", "vehicle", "--namespace", "rec8"]
    proc = ManagedProcess.start([*cmd, "--record", str(path)], name="run", log=log)
    try:
        pub = ros.create_publisher(FrameStats, f"/rec8/{STATS_TOPIC}", 5)
        assert spin_until(ros, lambda: pub.get_subscription_count() > 0, 60), log.read_text()
        spin_for(ros, 1.0)  # the recorder's side of the match too (best effort: no resend)
        for i in range(3):
            pub.publish(FrameStats(seq=i))
            spin_for(ros, 0.05)
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        code = proc.wait_exit(30)
    finally:
        proc.stop()
    text = log.read_text()
    assert code == 130, text  # Ctrl-C on `cloudseg run`: interrupted (and the file whole)
    assert f"recording {path}: " in text and " messages on 1 topic, " in text, text
    got = read_back(path)
    seqs = [m.seq for _, _, m in got["/rec8/cloudseg/stats"]]
    assert seqs == [0, 1, 2][-len(seqs) :] and len(seqs) >= 2, seqs  # best effort


@pytest.mark.dds
@pytest.mark.slow
def test_demo_record_holds_the_stream_and_labels(tmp_path, shared_data, weights_env):
    """`cloudseg demo --record` on 12 real frames (6 s: labels come back while the camera
    runs, so the vehicle holds some) with the segmenting cloud: every default
    channel in the file and decodable. (The CompressedVideo, FFMPEGPacket, coloured label and
    LabelInfo channels come from the compressor and segmentation nodes of issue 18 §1-2.)"""
    path = tmp_path / "demo.mcap"
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    r = subprocess.run(
        [sys.executable, "-m", "cloudseg.cli", "demo",
         "--input", str(shared_data / "sequences" / "aachen_seq0000"),
         "--frames", "12", "--rate", "2", "--restore", "bilinear", "--select", "off",
         "--control", "off", "--record", str(path), "--json"],
        capture_output=True, text=True, timeout=400, env=env,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout.strip().splitlines()[-1])
    assert f"recording {path}: " in r.stderr
    got = read_back(path)
    frames = [m for _, _, m in got[resolve(FRAMES_TOPIC)]]
    assert s["frames_sent"] == 12 and len(frames) >= 11  # best effort, like the monitor's
    assert decode_h264([f.data for f in frames])[0].shape == (256, 512, 3)  # x4 of 2048x1024
    labels = [m for _, _, m in got[resolve(LABELS_TOPIC)]]
    assert labels and labels[0].encoding == "mono8"
    assert (labels[0].width, labels[0].height) == (2048, 1024)
    assert {stamp_ns(m.header.stamp) for m in labels} <= {stamp_ns(f.header.stamp) for f in frames}
    assert len(got[resolve(STATS_TOPIC)]) >= len(labels)
    assert len(got[resolve(CAMERA_LABELS_INFO_TOPIC)]) >= 1
    # the viewers' channels (issue 18 §1-2, other nodes): present, and as the contract says
    check_recording(path, (512, 256), 11)
