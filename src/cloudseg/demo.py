"""`cloudseg demo`: vehicle and cloud sides as separate processes over DDS, with a summary."""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import rclpy
from rclpy.executors import SingleThreadedExecutor

from cloudseg.graph import FRAMES_TOPIC, GRAPHS, STATS_TOPIC, config_dir
from cloudseg.launcher import NodeProcesses, local_env
from cloudseg.nodes.monitor_node import MonitorNode
from cloudseg.stream_stats import StreamStats

REAL_DATA_HINT = (
    "no --input given: streaming a generated test clip. Real data: a Cityscapes "
    "leftImg8bit_sequence folder (e.g. ../shared/data/sequences/aachen_seq0000), a video "
    "file, or a rosbag2 made with `cloudseg convert`."
)


def _wait_for(executor, node, condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        executor.spin_once(timeout_sec=0.1)
    return condition()


def run_demo(
    input_path: str | None,
    scale: int = 4,
    codec: str = "h264",
    rate: float = 17.0,
    limit: int = 0,
    crf: int = 23,
    bitrate_kbps: int = 0,
    quiet: bool = False,
    log_dir: Path | None = None,
    timeout: float = 600.0,
    cloud: str = "cloud",
    sr_bypass: bool = False,
    cloud_params: dict | None = None,
) -> StreamStats:
    """Stream `input_path` through vehicle and cloud processes; return what was seen.

    `cloud` names the cloud graph (cloudseg.graph.GRAPHS): "cloud" (SR + segmentation in one
    process), "cloud_split" (sr and segmentation processes) or "cloud_bilinear" (bilinear
    restoration only, the paper's LR-bilinear stream). `cloud_params` override the
    segmentation node's parameters (models, device); `sr_bypass` restores bilinearly.
    """
    if cloud not in GRAPHS or not cloud.startswith("cloud"):
        raise ValueError(f"unknown cloud graph {cloud!r}")
    if input_path is None and not quiet:
        print(REAL_DATA_HINT, file=sys.stderr)
    stats = StreamStats(fps=rate or 17.0)
    env = local_env()
    os.environ.update(env)
    log_dir = log_dir or Path(tempfile.mkdtemp(prefix="cloudseg-demo-"))
    rclpy.init(args=[])
    monitor = MonitorNode(stats)
    executor = SingleThreadedExecutor()
    executor.add_node(monitor)
    try:
        with NodeProcesses(env=env, log_dir=log_dir) as procs:
            seg = dict(cloud_params or {})
            sr = {"restore": "bilinear"} if sr_bypass else {}
            procs.start_graph(cloud, {"cloud": {**sr, **seg}, "segmentation": seg, "sr": sr})
            procs.start(
                "compressor",
                config_dir() / "vehicle.yaml",
                {"scale": scale, "codec": codec, "crf": crf, "bitrate_kbps": bitrate_kbps},
            )
            ready = _wait_for(
                executor,
                monitor,
                lambda: (
                    monitor.count_publishers(FRAMES_TOPIC) >= 1
                    and monitor.count_subscribers(FRAMES_TOPIC) >= 2
                    and monitor.count_publishers(STATS_TOPIC) >= 1
                ),
                timeout=90,
            )
            if not ready:
                raise RuntimeError(f"compressor and receiver did not come up; logs in {log_dir}")
            procs.start(
                "source",
                config_dir() / "source.yaml",
                {
                    "input": input_path or "",
                    "rate": rate,
                    "limit": limit,
                    "stamp_mode": "now",
                    "wait_for_subscribers": 2,
                },
            )  # compressor + this monitor
            deadline = time.monotonic() + timeout
            while procs.procs["source"].poll() is None and time.monotonic() < deadline:
                executor.spin_once(timeout_sec=0.05)
            code = procs.procs["source"].poll()
            if code:
                raise RuntimeError(f"the source failed (exit {code}); see {log_dir}/source.log")
            settle = time.monotonic() + (2.0 if cloud == "cloud_bilinear" else 5.0)
            while time.monotonic() < settle:
                executor.spin_once(timeout_sec=0.05)
    finally:
        executor.remove_node(monitor)
        monitor.destroy_node()
        rclpy.try_shutdown()
    return stats
