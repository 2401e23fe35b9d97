"""`cloudseg demo`: vehicle and cloud sides as separate processes over DDS, with a summary."""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import rclpy
from rclpy.executors import SingleThreadedExecutor

from cloudseg.data.sources import DataError, are_stills, list_frame_files
from cloudseg.graph import FRAMES_TOPIC, GRAPHS, STATS_TOPIC, config_dir
from cloudseg.launcher import NodeProcesses, local_env
from cloudseg.nodes.monitor_node import MonitorNode
from cloudseg.stream_stats import StreamStats

REAL_DATA_HINT = (
    "no --input given: streaming a generated test clip. Real data: a Cityscapes "
    "leftImg8bit_sequence folder (e.g. ../shared/data/sequences/aachen_seq0000), a video "
    "file, or a rosbag2 made with `cloudseg convert`."
)


STILLS_NOTE = (
    "the input is unrelated Cityscapes stills: each frame is sent as an H.264 stream of its "
    "own (gop 1), as `cloudseg eval` encodes them (--gop N to change)"
)


def _plays_stills(input_path: str | None) -> bool:
    """True when the input is a folder of unrelated Cityscapes stills (a split)."""
    if not input_path or not Path(input_path).is_dir():
        return False
    try:
        return are_stills(list_frame_files(input_path))
    except DataError:
        return False  # the source node will say what is wrong with it


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
    crf: int | None = None,
    bitrate_kbps: int = 0,
    quiet: bool = False,
    log_dir: Path | None = None,
    timeout: float = 600.0,
    cloud: str = "cloud",
    sr_bypass: bool = False,
    cloud_params: dict | None = None,
    score: bool = False,
    gop: int | None = None,
    select: str = "pixel",
    control: bool = False,
    controller_params: dict | None = None,
) -> StreamStats:
    """Stream `input_path` through vehicle and cloud processes; return what was seen.

    `cloud` names the cloud graph (cloudseg.graph.GRAPHS): "cloud" (SR + segmentation in one
    process), "cloud_split" (sr and segmentation processes) or "cloud_bilinear" (bilinear
    restoration only, the paper's LR-bilinear stream). `cloud_params` override the
    segmentation node's parameters (models, device); `sr_bypass` restores bilinearly.
    `score`: after the stream, the mIoU of the labels that came back, against ground truth
    when the input has it, else against the segmenter's labels on the original frames
    (cloudseg.scoring); in the returned stats' `miou*` fields. `gop`: the H.264 keyframe
    interval (None: the compressor's default, except 1 for the unrelated stills of a
    Cityscapes split, each then a stream of its own as `cloudseg eval` encodes them).
    `select`: the frame_selector's mode ("pixel", "learned" or "off": every frame sent).
    `control`: also run the adaptive controller (the "controller" graph, `controller_params`
    override its parameters): its Knobs then replace scale, rate and SR bypass as it measures
    the link; off, the settings given here hold for the whole stream.
    """
    if cloud not in GRAPHS or not cloud.startswith("cloud"):
        raise ValueError(f"unknown cloud graph {cloud!r}")
    if input_path is None and not quiet:
        print(REAL_DATA_HINT, file=sys.stderr)
    stats = StreamStats(fps=rate or 17.0)
    env = local_env()
    os.environ.update(env)
    log_dir = log_dir or Path(tempfile.mkdtemp(prefix="cloudseg-demo-"))
    if gop is None and codec == "h264" and _plays_stills(input_path):
        gop = 1
        if not quiet:
            print(STILLS_NOTE, file=sys.stderr)
    scorer = None
    if score:
        from cloudseg.scoring import LabelScorer

        scorer = LabelScorer(
            input_path,
            limit=limit,
            backend=(cloud_params or {}).get("backend", "espnetv2"),
            device=(cloud_params or {}).get("device", "auto"),
        )
        if not quiet:
            print(f"{scorer.describe()}, after the stream", file=sys.stderr)
    rclpy.init(args=[])
    monitor = MonitorNode(stats, scorer=scorer)
    executor = SingleThreadedExecutor()
    executor.add_node(monitor)
    try:
        with NodeProcesses(env=env, log_dir=log_dir) as procs:
            seg = dict(cloud_params or {})
            sr = {"restore": "bilinear"} if sr_bypass else {}
            procs.start_graph(cloud, {"cloud": {**sr, **seg}, "segmentation": seg, "sr": sr})
            vehicle = {
                "scale": scale,
                "codec": codec,
                "bitrate_kbps": bitrate_kbps,
                "mode": select,
            }
            for name, value in (("crf", crf), ("gop", gop)):  # None: the compressor's default
                if value is not None:
                    vehicle[name] = value
            procs.start_graph("vehicle", {"vehicle": vehicle})
            if control:
                procs.start_graph("controller", {"controller": dict(controller_params or {})})
            ready = _wait_for(
                executor,
                monitor,
                lambda: (
                    monitor.count_publishers(FRAMES_TOPIC) >= 1
                    # the cloud, this monitor and the vehicle's camera_labels
                    and monitor.count_subscribers(FRAMES_TOPIC) >= 3
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
            )  # the vehicle's frame_selector + this monitor
            deadline = time.monotonic() + timeout
            while procs.procs["source"].poll() is None and time.monotonic() < deadline:
                executor.spin_once(timeout_sec=0.05)
            code = procs.procs["source"].poll()
            if code:
                raise RuntimeError(f"the source failed (exit {code}); see {log_dir}/source.log")
            bilinear = cloud == "cloud_bilinear"
            _settle(executor, monitor, 2.0 if bilinear else 5.0, segmenting=not bilinear)
    finally:
        executor.remove_node(monitor)
        monitor.destroy_node()
        rclpy.try_shutdown()
    if scorer is not None:
        scores = scorer.finish_all()
        result = scores["received"]
        stats.miou, stats.miou_gt_classes = result.miou, result.miou_gt_classes
        stats.miou_reference, stats.frames_scored = result.reference, result.frames_scored
        stats.not_scored = result.describe_not_scored()
        if "held" in scores:
            stats.miou_held = scores["held"].miou
            stats.frames_held_scored = scores["held"].frames_scored
    return stats


def _settle(
    executor,
    monitor: MonitorNode,
    quiet_s: float,
    segmenting: bool,
    first_s: float = 30.0,
    limit_s: float = 120.0,
) -> None:
    """After the input ended, wait for the cloud, at least `quiet_s`: until the result (labels,
    or the stats of a cloud that does not segment) of the last frame sent is back (the cloud
    always works on the newest frame), or until it has been quiet for `quiet_s` or 1.5 times
    the longest frame it took (`first_s` while nothing has come back: models warming up on a
    CPU), at most `limit_s`."""
    stats = monitor.stats
    start = last = time.monotonic()
    seen = (stats.frames_received, stats.labels_received)
    while time.monotonic() - start < limit_s:
        executor.spin_once(timeout_sec=0.05)
        now = time.monotonic()
        if (stats.frames_received, stats.labels_received) != seen:
            seen = (stats.frames_received, stats.labels_received)
            last = now
        back = monitor.labelled if segmenting else monitor.reported
        if monitor.last_sent is not None and monitor.last_sent in back:
            end = max(now + 0.5, start + quiet_s)  # anything else still on its way
            while time.monotonic() < end:
                executor.spin_once(timeout_sec=0.05)
            return
        if stats.frames_received:
            work = stats.latency_ms["decode_restore"], stats.latency_ms["segmentation"]
            allowance = max(quiet_s, 1.5 * sum(max(v, default=0.0) for v in work) / 1e3)
        else:
            allowance = max(quiet_s, first_s) if stats.frames_sent else quiet_s
        if now - last >= allowance:
            return
