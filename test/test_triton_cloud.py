"""Triton failover through a real cloud node: one cloud process (``inference: triton``) over two
``cloudseg serve`` servers, a vehicle stream of real H.264 Frames under /car1.

Labels come back on /car1's topics from both servers; one server stopped: labels keep coming;
restarted: it gets requests again (its own metrics say so); both stopped: each batch is dropped
with one clear line (no traceback) and the node keeps serving; one back: labels again. And
``cloudseg bench fleet --vehicles 2 --inference triton --json``.

Reduced sizes for 2 shared cores: a 256x128 camera (a real aachen frame, area-downsampled),
x4 H.264 stream (LR 64x32), model ``cloudseg_x4_sr`` exported for that camera size.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from cloudseg.graph import config_dir
from cloudseg.launcher import NodeProcesses
from cloudseg.triton.local import ServerProcess, free_ports, triton_python
from cloudseg.triton.serve import SETUP_COMMAND
from support import spin_for, spin_until, wait_until

pytestmark = pytest.mark.dds

CAMERA = (256, 128)
SCALE = 4


@pytest.fixture(scope="module", autouse=True)
def _needs_triton():
    if triton_python() is None:
        pytest.skip(f"no .venv-triton (nvidia-pytriton, numpy<2): run {SETUP_COMMAND}")
    pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] not installed")


@pytest.fixture(scope="module")
def repository(tmp_path_factory, shared_data) -> tuple[Path, list[str]]:
    from cloudseg.triton.export import export_repository

    before = torch.get_num_threads()
    torch.set_num_threads(1)  # 2 shared cores: one OpenMP thread exports faster
    try:
        out = tmp_path_factory.mktemp("triton_repo")
        models = export_repository(
            out,
            scales=(SCALE,),
            modes=("sr",),
            camera_size=CAMERA,
            sr_weights=shared_data / "weights/carn/carn_m.pth",
            seg_weights=shared_data / "weights/espnetv2/espnetv2_s_2.0_city_1024x512.pth",
            max_batch_size=4,
            preferred_batch_sizes=(2, 4),
            max_queue_delay_us=1000,
            kind="KIND_CPU",
        )
    finally:
        torch.set_num_threads(before)
    return out, [m.name for m in models]


def _lr_frame(shared_data: Path) -> np.ndarray:
    path = sorted((shared_data / "sequences" / "aachen_seq0000").glob("*.jpg"))[0]
    rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    w, h = CAMERA[0] // SCALE, CAMERA[1] // SCALE
    return cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)


@pytest.mark.usefixtures("fastdds_local")
def test_cloud_node_over_two_triton_servers_fails_over_and_comes_back(
    shared_data, weights_env, repository, tmp_path, ros
):
    from sensor_msgs.msg import Image

    from cloudseg.media.h264 import H264Encoder
    from cloudseg.msg import Frame, FrameStats
    from cloudseg.nodes.common import qos_for

    repo, models = repository
    ports = free_ports(6)
    a, b = (ServerProcess(repo, ports[i : i + 3], tmp_path / f"triton{i // 3}.log") for i in (0, 3))
    cloud = {
        "device": "cpu",
        "cpu_max_width": 256,
        "discovery_period_s": 0.5,
        "max_wait_ms": 20.0,
        "inference": "triton",
        "restore": "sr",  # the repository holds the sr models only
        "triton_urls": f"{a.url},{b.url}",
        "triton_timeout_s": 5.0,
    }
    lr = _lr_frame(shared_data)
    encoder = H264Encoder(crf=23, gop=10, fps=5.0)

    node = ros
    labels: list = []
    stats: list = []
    pub = node.create_publisher(Frame, "/car1/cloudseg/frames", qos_for("cloudseg/frames"))
    node.create_subscription(
        Image, "/car1/cloudseg/labels", labels.append, qos_for("cloudseg/labels")
    )
    node.create_subscription(
        FrameStats, "/car1/cloudseg/stats", stats.append, qos_for("cloudseg/stats")
    )
    seq = 0

    def send(n: int) -> None:
        """``n`` frames at 5 fps, spinning between them."""
        nonlocal seq
        for _ in range(n):
            enc = encoder.encode(lr)
            f = Frame(seq=seq, scale=SCALE, width=CAMERA[0], height=CAMERA[1], codec="h264")
            f.keyframe = enc.keyframe
            f.stream_id = "/car1"
            f.data = enc.payload
            f.header.stamp = node.get_clock().now().to_msg()
            f.sent_stamp = f.header.stamp
            pub.publish(f)
            seq += 1
            spin_for(node, 0.2)

    def feed_until(condition, timeout: float) -> bool:
        return wait_until(condition, timeout, step=lambda: send(3))

    procs = NodeProcesses(log_dir=tmp_path)

    def log() -> str:
        text = (tmp_path / "cloud.log").read_text() if (tmp_path / "cloud.log").exists() else ""
        return text + "\n--- triton a\n" + a.tail(1500) + "\n--- triton b\n" + b.tail(1500)

    try:
        a.start()
        b.start()
        procs.start("cloud", config_dir() / "cloud.yaml", cloud)  # loads while the servers do
        a.wait_ready(models)
        b.wait_ready(models)
        assert spin_until(node, lambda: pub.get_subscription_count() >= 1, 60), log()

        # 1. labels come back on /car1's topic, from both servers (their own metrics)
        assert feed_until(lambda: a.requests() >= 2 and b.requests() >= 2, 40), log()
        assert spin_until(node, lambda: len(labels) >= 4, 10), log()
        got = np.frombuffer(bytes(labels[-1].data), np.uint8).reshape(128, 256)
        assert (labels[-1].width, labels[-1].height) == CAMERA
        assert len(np.unique(got)) > 3  # a street scene: road, building, car, ...
        assert stats and all(s.stream_id == "/car1" for s in stats)

        # 2. one server stops: labels keep coming (from the other), the stream is kept
        b.stop()
        before, served_a = len(labels), a.requests()
        # labels of requests already answered may still be on their way: wait for both
        assert feed_until(lambda: len(labels) >= before + 6 and a.requests() >= served_a + 6, 30), (
            log()
        )
        assert "stopped answering" in log()

        # 3. it comes back (same ports): it gets requests again
        b.start()
        b.wait_ready(models)
        assert feed_until(lambda: b.requests() >= 2, 40), log()
        assert "is back" in log()

        # 4. every server down: batches dropped with a clear line, the node keeps serving
        a.terminate()
        b.terminate()
        a.stop()
        b.stop()
        send(10)
        assert spin_until(node, lambda: "dropped (no_server)" in log(), 10), log()
        a.start()
        a.wait_ready(models)
        before = len(labels)
        assert feed_until(lambda: len(labels) >= before + 3, 40), log()
        assert procs.procs["cloud"].poll() is None  # still running
        codes = procs.stop_all(grace=30)
    finally:
        procs.stop_all(grace=10)
        for server in (a, b):
            server.terminate()
        for server in (a, b):
            server.stop()
    text = log()
    assert codes == {"cloud": 0}, text
    assert "labels only: no restored image or overlay" in text, text
    assert "no Triton server could run cloudseg_x4_sr" in text
    assert text.count("dropped (no_server)") <= 2, text  # rate-limited
    assert "Traceback" not in text, text


def test_bench_fleet_two_vehicles_triton_json(shared_data, weights_env, tmp_path):
    """`cloudseg bench fleet --vehicles 2 --inference triton --json`: the bench exports a
    repository, starts two servers, and each vehicle gets its own labels through them."""
    cmd = [sys.executable, "-m", "cloudseg.cli", "bench", "fleet", "--vehicles", "2"]
    cmd += ["--inference", "triton", "--frames", "6", "--score-frames", "3", "--device", "cpu"]
    # a loaded CI machine serves a frame in ~0.75 s on the CPU: 1 fps and a long drain (which
    # ends as soon as every label is in) keep the cloud from shedding stale frames
    cmd += ["--rate", "1", "--drain", "20"]
    cmd += ["--json", "--data", str(shared_data), "--log-dir", str(tmp_path)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["inference"] == "triton"
    assert [v["name"] for v in result["vehicles"]] == ["car1", "car2"]
    for v in result["vehicles"]:
        assert v["sent"] >= 5 and v["labels"] >= 3, result
        assert v["miou_vs_own_hr"] > v["miou_vs_other_hr"], result
    servers = result["triton_servers"]
    assert len(servers) == 2 and all(s["requests"] >= 1 for s in servers), result
    assert "960x540" in out.stderr  # the dashcam is left out, and why
