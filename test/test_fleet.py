"""Many vehicles, one cloud, over real Fast DDS: streams kept apart, the lean result path, and
`cloudseg bench fleet`."""

from __future__ import annotations

import threading

import cv2
import numpy as np
import pytest

from cloudseg.graph import SEGMENTATION, SR, config_dir
from cloudseg.launcher import NodeProcesses
from support import spin_for, spin_until

pytestmark = pytest.mark.dds

CLOUD = {
    "device": "cpu",
    "cpu_max_width": 256,
    "discovery_period_s": 0.5,
    "max_wait_ms": 20.0,
    "stream_idle_s": 2.0,
}


def _first_frames(shared_data):
    """Two different real street scenes at 512x256 (camera size): aachen and frankfurt."""
    aachen = sorted((shared_data / "sequences" / "aachen_seq0000").glob("*.jpg"))[0]
    a = cv2.cvtColor(cv2.imread(str(aachen)), cv2.COLOR_BGR2RGB)
    cap = cv2.VideoCapture(str(shared_data / "sequences" / "mp4" / "frankfurt_000000_000275.mp4"))
    ok, b = cap.read()
    cap.release()
    assert ok
    b = cv2.cvtColor(b, cv2.COLOR_BGR2RGB)
    return [cv2.resize(x, (512, 256), interpolation=cv2.INTER_AREA) for x in (a, b)]


def _frame_msg(node, payload, seq, stream_id, width=512, height=256):
    from cloudseg.msg import Frame

    f = Frame(seq=seq, scale=4, width=width, height=height, codec="jpeg", keyframe=True)
    f.stream_id = stream_id
    f.data = payload
    f.header.stamp = node.get_clock().now().to_msg()
    f.sent_stamp = f.header.stamp
    return f


def _agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(a == b))


@pytest.mark.usefixtures("fastdds_local")
def test_two_vehicles_under_two_namespaces_each_get_only_their_own_labels(
    shared_data, weights_env, tmp_path, ros
):
    """One cloud process (streams discovered) and two vehicles, /car1 and /car2, sending
    different real scenes: each gets labels on its own topics only, and they are the labels of
    its own scene (as the same pipeline gives on that scene alone), not the other's. A frame
    sent on /car1's topic claiming to be /car2's is dropped with the reason. Idle streams are
    forgotten; a stream whose publisher left is unsubscribed too."""
    from sensor_msgs.msg import Image

    from cloudseg.cloud.service import CloudService
    from cloudseg.media.image_codecs import encode_image
    from cloudseg.msg import Frame, FrameStats
    from cloudseg.nodes.common import qos_for

    scenes = _first_frames(shared_data)
    payloads = [
        encode_image(cv2.resize(s, (128, 64), interpolation=cv2.INTER_AREA), "jpeg", 90)
        for s in scenes
    ]
    # what the cloud runs: its default route, from the graph's defaults
    service = CloudService.from_params({**SEGMENTATION.defaults(), **CLOUD})
    bypass = SR.defaults()["restore"] == "bilinear"
    expected = [
        service.process(p, "jpeg", 0, 4, 512, 256, sr_bypass=bypass).labels for p in payloads
    ]  # each scene alone
    assert _agreement(expected[0], expected[1]) < 0.7  # the scenes differ

    node = ros
    names = ("/car1", "/car2")
    labels = {n: [] for n in names}
    stats = {n: [] for n in names}
    root_labels: list = []
    pubs = {
        n: node.create_publisher(Frame, f"{n}/cloudseg/frames", qos_for("cloudseg/frames"))
        for n in names
    }
    for n in names:
        node.create_subscription(
            Image, f"{n}/cloudseg/labels", labels[n].append, qos_for("cloudseg/labels")
        )
        node.create_subscription(
            FrameStats, f"{n}/cloudseg/stats", stats[n].append, qos_for("cloudseg/stats")
        )
    node.create_subscription(
        Image, "/cloudseg/labels", root_labels.append, qos_for("cloudseg/labels")
    )
    with NodeProcesses(log_dir=tmp_path) as procs:
        procs.start("cloud", config_dir() / "cloud.yaml", CLOUD)

        def logs() -> str:
            return (tmp_path / "cloud.log").read_text()

        assert spin_until(
            node, lambda: all(p.get_subscription_count() >= 1 for p in pubs.values()), 60
        ), logs()
        spin_for(node, 1.0)  # discovery is not symmetric: let the other side match us too
        # a frame on car1's topic claiming car2's stream: dropped
        pubs["/car1"].publish(_frame_msg(node, payloads[1], 0, "/car2"))
        seq = 1
        while seq < 40 and not all(len(labels[n]) >= 2 for n in names):
            for i, n in enumerate(names):
                pubs[n].publish(_frame_msg(node, payloads[i], seq, n))
            seq += 1
            spin_for(node, 0.3)
        # idle streams are forgotten; one whose vehicle left is also unsubscribed
        node.destroy_publisher(pubs["/car2"])
        assert spin_until(node, lambda: "stream /car2: gone" in logs(), 15), logs()
        codes = procs.stop_all(grace=30)
    log = logs()
    assert codes == {"cloud": 0}, log
    assert all(len(labels[n]) >= 2 for n in names), log
    assert not root_labels  # nothing went to the root stream
    for i, n in enumerate(names):
        for msg in labels[n]:
            got = np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, msg.width)
            assert got.shape == (256, 512)
            own, other = _agreement(got, expected[i]), _agreement(got, expected[1 - i])
            assert own > 0.97 and other < own - 0.2, (n, own, other)
        assert stats[n] and all(s.stream_id == n for s in stats[n])
        assert all(1 <= s.batch_size <= 2 for s in stats[n])
    assert "stream /car1: serving /car1/cloudseg/frames" in log, log
    assert "stream /car1: no frame for 2 s: forgotten" in log, log  # its publisher stays
    assert "stream /car1: gone" not in log
    assert "/car1 frame 0 dropped (stream): stream_id '/car2' disagrees" in log, log
    assert "Traceback" not in log


class _Spy:
    """An Inference that records the flags it was called with."""

    def __init__(self, inner):
        self.inner, self.calls = inner, []
        self.overlay_alpha = inner.overlay_alpha

    def infer(self, lr, scale, sr_bypass=False, want_restored=False, want_overlay=False):
        self.calls.append((len(lr), want_restored, want_overlay))
        self.inner.overlay_alpha = self.overlay_alpha
        return self.inner.infer(lr, scale, sr_bypass, want_restored, want_overlay)


def test_restored_and_overlay_are_made_only_for_subscribers(shared_data, weights_env, monkeypatch):
    """The cloud's nodes in this process (a spy in the inference slot, a counter on the
    device blend): with nobody subscribed to overlay and restored, neither is computed nor
    published; once someone subscribes, both are."""
    import rclpy
    from rclpy.executors import MultiThreadedExecutor
    from sensor_msgs.msg import Image

    from cloudseg.cloud import local as local_mod
    from cloudseg.cloud.local import LocalInference
    from cloudseg.media.image_codecs import encode_image
    from cloudseg.msg import Frame
    from cloudseg.nodes.cloud_sr import CloudSRNode
    from cloudseg.nodes.common import qos_for
    from cloudseg.nodes.segmentation_node import SegmentationNode

    monkeypatch.setenv("FASTDDS_DEFAULT_PROFILES_FILE", str(config_dir() / "fastdds_local.xml"))
    blends = []
    real_blend = local_mod.blend_overlay
    monkeypatch.setattr(
        local_mod, "blend_overlay", lambda *a, **k: blends.append(1) or real_blend(*a, **k)
    )
    scene = _first_frames(shared_data)[0]
    payload = encode_image(cv2.resize(scene, (128, 64), interpolation=cv2.INTER_AREA), "jpeg", 90)
    rclpy.init(args=["--ros-args", "-p", "device:=cpu", "-p", "cpu_max_width:=256"])
    seg = SegmentationNode(in_process=True)
    spy = _Spy(LocalInference(seg.service))
    sr = CloudSRNode(service=seg.service, outputs=seg, inference=spy)
    node = rclpy.create_node("lean_test")
    executor = MultiThreadedExecutor(num_threads=2)
    for n in (seg, sr):
        executor.add_node(n)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    labels, overlays, restored = [], [], []
    pub = node.create_publisher(Frame, "/cloudseg/frames", qos_for("cloudseg/frames"))
    node.create_subscription(Image, "/cloudseg/labels", labels.append, qos_for("cloudseg/labels"))
    try:
        assert spin_until(node, lambda: pub.get_subscription_count() >= 1, 30)
        for seq in range(3):
            pub.publish(_frame_msg(node, payload, seq, ""))
            assert spin_until(node, lambda s=seq: len(labels) > s, 30)
        assert spy.calls and all(c[1:] == (False, False) for c in spy.calls), spy.calls
        assert not blends
        node.create_subscription(
            Image, "/cloudseg/overlay", overlays.append, qos_for("cloudseg/overlay")
        )
        node.create_subscription(
            Image, "/cloudseg/restored", restored.append, qos_for("cloudseg/restored")
        )
        assert spin_until(
            node,
            lambda: (
                seg.own.overlay.get_subscription_count() >= 1
                and sr.endpoints["/"].restored_pub.get_subscription_count() >= 1
            ),
            30,
        )
        before = len(spy.calls)
        for seq in range(3, 6):
            pub.publish(_frame_msg(node, payload, seq, ""))
            spin_until(node, lambda s=seq: len(labels) > s, 30)
        assert spin_until(node, lambda: overlays and restored, 10)
        assert all(c[1:] == (True, True) for c in spy.calls[before:]), spy.calls
        assert blends and len(blends) == len(spy.calls) - before
        assert (overlays[0].width, overlays[0].height) == (256, 128)  # the segmentation size
        assert overlays[0].encoding == "rgb8" and restored[0].width == 256
    finally:
        executor.shutdown(timeout_sec=2.0)
        sr.destroy_node()
        seg.destroy_node()
        node.destroy_node()
        rclpy.try_shutdown()


def test_bench_fleet_two_vehicles_json(shared_data, weights_env, tmp_path):
    """`cloudseg bench fleet --vehicles 2 --json`: both vehicles (aachen, a frankfurt clip)
    get labels back, and theirs agree with their own scenes' full-resolution labels far more
    than with the other vehicle's (no cross-talk)."""
    import json
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "cloudseg.cli", "bench", "fleet", "--vehicles", "2"]
    cmd += ["--frames", "6", "--score-frames", "3", "--device", "cpu", "--json"]
    cmd += ["--data", str(shared_data), "--log-dir", str(tmp_path)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert [v["name"] for v in result["vehicles"]] == ["car1", "car2"]
    for v in result["vehicles"]:
        assert v["sent"] >= 5 and v["labels"] >= 3, result
        assert v["latency_ms_p95"] > 0
        assert v["miou_vs_own_hr"] > v["miou_vs_other_hr"] + 0.1, result
    assert result["batch_mean"] >= 1 and result["ms_per_frame"] > 0
    assert "reduced-resolution" in result["restoration"]
