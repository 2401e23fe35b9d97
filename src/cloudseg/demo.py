"""`cloudseg demo`: vehicle and cloud sides as separate processes over DDS, with a summary."""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.signals import SignalHandlerOptions

from cloudseg.data.folder import are_stills, list_frame_files
from cloudseg.data.frames import DEFAULT_FPS, DataError
from cloudseg.data.recording import McapRecording
from cloudseg.data.sources import check_input
from cloudseg.graph import (
    BACKEND,
    BAG_IMAGE_TOPIC,
    COMPRESSOR,
    DEVICE,
    FRAME_SELECTOR,
    GRAPHS,
    SOURCE,
    SR,
    config_dir,
    namespace,
)
from cloudseg.launcher import (
    NodeFailed,
    NodeProcesses,
    local_env,
    ready_endpoints,
    wait_until_ready,
)
from cloudseg.nodes.graph_watch import missing_endpoints
from cloudseg.nodes.monitor_node import MonitorNode
from cloudseg.routes import DEFAULT_ROUTE
from cloudseg.stop_signals import StopSignals
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


HELD_ON_STILLS = (
    "not scored on unrelated stills: the labels the vehicle holds for a still came back for "
    "another one"
)


class DemoError(RuntimeError):
    """The demo cannot go on; the message says why in one line (a node's own reason)."""


#: The source node's last line: how many frames it published.
_SOURCE_COUNT = re.compile(r"input (?:finished: (\d+) frames published|failed after (\d+) frames)")


def source_frames_published(log: Path) -> int:
    """The number of frames the source node says it published (its log), 0 when unknown."""
    try:
        found = _SOURCE_COUNT.findall(log.read_text(errors="replace"))
    except OSError:
        return 0
    return int(next(n for n in found[-1] if n)) if found else 0


def check_inputs(
    input_path: str | None, topic: str | None = None, cloud_params: dict | None = None
) -> None:
    """What can be checked before any process starts: the input opens (a bag has the image
    topic), a bag topic is asked only of a bag, CUDA is there when asked for. DataError or
    DemoError saying what is wrong."""
    check_input(input_path, topic)
    device = (cloud_params or {}).get("device")
    if device not in (None, "auto", "cpu"):  # cuda, cuda:N: there, and that many GPUs
        from cloudseg.devices import DeviceError, resolve_device

        try:
            resolve_device(device)
        except DeviceError as exc:
            raise DemoError(str(exc)) from None


def cloud_overrides(
    cloud: str, sr_bypass: bool = False, cloud_params: dict | None = None
) -> dict[str, dict]:
    """Parameter overrides of the cloud graph's processes. The sr node restores as asked
    (`sr_bypass`: bilinear, else SR), whatever its graph's config file says, except in
    `cloud_bilinear`, the bilinear baseline; `cloud_params` (models, device) go to the
    segmentation node, and in a split cloud also to the sr process where it has them (its SR
    model and weights only there: the split segmentation node gets restored images)."""
    if cloud == "cloud_bilinear":
        return {}
    params = dict(cloud_params or {})
    sr = {"restore": "bilinear" if sr_bypass else "sr"}
    if cloud == "cloud_split":
        own = {p.name for p in SR.params}
        seg = {k: v for k, v in params.items() if k not in ("sr_model", "sr_weights")}
        return {"sr": {**sr, **{k: v for k, v in params.items() if k in own}}, "segmentation": seg}
    return {"cloud": {**sr, **params}, "segmentation": params, "sr": sr}


def run_demo(
    input_path: str | None,
    scale: int = COMPRESSOR.param("scale").default,
    codec: str = COMPRESSOR.param("codec").default,
    rate: float = SOURCE.param("rate").default,
    limit: int = SOURCE.param("limit").default,
    crf: int | None = None,
    bitrate_kbps: int = COMPRESSOR.param("bitrate_kbps").default,
    quiet: bool = False,
    log_dir: Path | None = None,
    timeout: float = 600.0,
    cloud: str = "cloud",
    sr_bypass: bool = DEFAULT_ROUTE.mode == "bilinear",
    cloud_params: dict | None = None,
    score: bool = False,
    gop: int | None = None,
    select: str = FRAME_SELECTOR.param("mode").default,
    control: bool = False,
    controller_params: dict | None = None,
    topic: str | None = None,
    keep_logs: bool = False,
    ready_timeout: float = 120.0,
    ns: str | None = None,
    view: tuple[str, int] | None = None,
    record: str | Path | None = None,
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
    the link; off, the settings given here hold for the whole stream. `topic`: the image
    topic of a bag input (default BAG_IMAGE_TOPIC). `ns`: the ROS namespace every node
    process (and this process's monitor) runs in (`car1`: /car1/cloudseg/frames, ...).
    `view`: (host, port) of a Foxglove view (`cloudseg view`) served while the demo runs.
    `record`: a new MCAP file the stream, labels and statistics are recorded to (a recorder
    node beside the monitor, up before the source starts; closed at the end, also on Ctrl-C).

    The input (and CUDA, when asked for) is checked before anything starts; a node process
    that ends while the graph starts or streams stops the demo at once with DemoError and the
    node's own reason (the last error line of its log). Logs go to `log_dir`, or to a
    temporary folder that is removed at the end unless `keep_logs` (then it is printed).
    """
    if cloud not in GRAPHS or not cloud.startswith("cloud"):
        raise ValueError(f"unknown cloud graph {cloud!r}")
    ns = namespace(ns)
    check_inputs(input_path, topic, cloud_params)
    recording = McapRecording(record) if record else None
    if input_path is None and not quiet:
        print(REAL_DATA_HINT, file=sys.stderr)
    own_logs = log_dir is None
    log_dir = Path(tempfile.mkdtemp(prefix="cloudseg-demo-")) if own_logs else Path(log_dir)
    if keep_logs:  # asked for: said even with quiet (stderr; --json's line is on stdout)
        print(f"node logs: {log_dir}", file=sys.stderr)
    stats = StreamStats(fps=rate or DEFAULT_FPS, segmenting=cloud != "cloud_bilinear")
    stop = StopSignals(raising=True).install()  # Ctrl-C: the summary of what ran so far
    try:
        return _stream(
            stats,
            stop,
            input_path,
            log_dir,
            logs_hint=(
                "; run with --keep-logs for the full logs"
                if own_logs and not keep_logs
                else f"; logs in {log_dir}"
            ),
            scale=scale,
            codec=codec,
            rate=rate,
            limit=limit,
            crf=crf,
            bitrate_kbps=bitrate_kbps,
            quiet=quiet,
            timeout=timeout,
            cloud=cloud,
            sr_bypass=sr_bypass,
            cloud_params=cloud_params,
            score=score,
            gop=gop,
            select=select,
            control=control,
            controller_params=controller_params,
            topic=topic,
            ready_timeout=ready_timeout,
            ns=ns,
            view=view,
            recording=recording,
        )
    except KeyboardInterrupt:
        stats.interrupted = True
        return stats
    finally:
        stop.restore()
        if control:
            stats.add_knob_log(_read_log(log_dir / "controller.log"))
        if recording is not None:
            recording.close()  # the recorder closed it, unless the demo failed first
        if own_logs and not keep_logs:
            shutil.rmtree(log_dir, ignore_errors=True)


def _read_log(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _stream(
    stats: StreamStats,
    stop: StopSignals,
    input_path: str | None,
    log_dir: Path,
    logs_hint: str,
    *,
    scale: int,
    codec: str,
    rate: float,
    limit: int,
    crf: int | None,
    bitrate_kbps: int,
    quiet: bool,
    timeout: float,
    cloud: str,
    sr_bypass: bool,
    cloud_params: dict | None,
    score: bool,
    gop: int | None,
    select: str,
    control: bool,
    controller_params: dict | None,
    topic: str | None,
    ready_timeout: float,
    ns: str = "/",
    view: tuple[str, int] | None = None,
    recording: McapRecording | None = None,
) -> StreamStats:
    """run_demo's stream into `stats`, its logs in `log_dir` (`logs_hint` ends its error
    messages). While rclpy runs, a stop signal is a flag that each turn of the loops reads
    (`stop.check()`: KeyboardInterrupt there, never inside an rclpy callback)."""
    env = local_env()
    os.environ.update(env)
    stills = _plays_stills(input_path)
    if gop is None and codec == "h264" and stills:
        gop = 1
        if not quiet:
            print(STILLS_NOTE, file=sys.stderr)
    scorer = None
    if score:
        from cloudseg.scoring import LabelScorer

        scorer = LabelScorer(
            input_path,
            limit=limit,
            topic=topic or BAG_IMAGE_TOPIC,
            backend=(cloud_params or {}).get("backend", BACKEND.default),
            device=(cloud_params or {}).get("device", DEVICE.default),
        )
        if not quiet:
            print(f"{scorer.describe()}, after the stream", file=sys.stderr)
    stop.raising = False
    rclpy.init(args=[], signal_handler_options=SignalHandlerOptions.NO)
    monitor = MonitorNode(stats, scorer=scorer, namespace=ns)
    executor = SingleThreadedExecutor()
    executor.add_node(monitor)
    viewer = None
    recorder = None
    if recording is not None:  # in this process: up with the monitor, before the source
        from cloudseg.nodes.recorder_node import RecorderNode

        recorder = RecorderNode(recording, ns=ns, report=lambda text: print(text, file=sys.stderr))
        executor.add_node(recorder)

    def spin(seconds: float) -> None:
        executor.spin_once(timeout_sec=seconds)
        stop.check()

    try:
        viewer = _open_view(view, ns, executor)
        with NodeProcesses(env=env, log_dir=log_dir, ns=ns, own_group=True) as procs:
            started = procs.start_graph(cloud, cloud_overrides(cloud, sr_bypass, cloud_params))
            vehicle = {
                "scale": scale,
                "codec": codec,
                "bitrate_kbps": bitrate_kbps,
                "mode": select,
            }
            for name, value in (("crf", crf), ("gop", gop)):  # None: the compressor's default
                if value is not None:
                    vehicle[name] = value
            started += procs.start_graph("vehicle", {"vehicle": vehicle})
            if control:
                controller = {"controller": dict(controller_params or {})}
                started += procs.start_graph("controller", controller)

            def check_nodes() -> None:
                gone = procs.exited(started)
                if gone:
                    name, code = next(iter(gone.items()))
                    raise DemoError(procs.failure(name, code) + logs_hint)

            endpoints = ready_endpoints(started)
            try:
                wait_until_ready(
                    procs,
                    started,
                    lambda: missing_endpoints(monitor, endpoints, ns),
                    spin,
                    timeout=ready_timeout,
                    ns=ns,
                )
            except (NodeFailed, TimeoutError) as exc:
                raise DemoError(f"{exc}{logs_hint}") from None
            source = {
                "input": input_path or "",
                "rate": rate,
                "limit": limit,
                "stamp_mode": "now",
                "wait_for_subscribers": 2,  # the vehicle's frame_selector + this monitor
            }
            if topic:
                source["topic_in_bag"] = topic
            procs.start("source", config_dir() / "source.yaml", source)
            deadline = time.monotonic() + timeout
            checked = time.monotonic()
            while procs.procs["source"].poll() is None and time.monotonic() < deadline:
                spin(0.05)
                if time.monotonic() - checked > 0.5:
                    check_nodes()
                    checked = time.monotonic()
            code = procs.procs["source"].poll()
            if code:
                raise DemoError(procs.failure("source", code) + logs_hint)
            stats.source_frames = source_frames_published(log_dir / "source.log")
            bilinear = cloud == "cloud_bilinear"
            _settle(spin, monitor, 2.0 if bilinear else 5.0, not bilinear, check_nodes)
    finally:
        for node in (monitor, viewer, recorder):
            if node is not None:
                executor.remove_node(node)
                node.destroy_node()
        rclpy.try_shutdown()
    stop.raising = True
    stop.check()  # a signal during the cleanup
    if scorer is not None:
        scores = scorer.finish_all()
        result = scores["received"]
        stats.miou, stats.miou_gt_classes = result.miou, result.miou_gt_classes
        stats.miou_reference, stats.frames_scored = result.reference, result.frames_scored
        stats.not_scored = result.describe_not_scored()
        held = scores.get("held")
        if stills:  # the labels held for a still came back for another one
            stats.held_not_scored = HELD_ON_STILLS
        elif held is not None:
            stats.miou_held, stats.frames_held_scored = held.miou, held.frames_scored
            stats.held_not_scored = held.describe_not_scored()
    return stats


def _open_view(view: tuple[str, int] | None, ns: str, executor):
    """`demo --view`: the view node in the demo's executor, its address printed (stderr)."""
    if view is None:
        return None
    from cloudseg.nodes.view_node import ViewNode

    viewer = ViewNode(*view, ns)
    executor.add_node(viewer)
    print(f"view: open {viewer.url} in Foxglove (served while the demo runs)", file=sys.stderr)
    return viewer


def _settle(
    spin: Callable[[float], None],
    monitor: MonitorNode,
    quiet_s: float,
    segmenting: bool,
    check: Callable[[], None] = lambda: None,
    first_s: float = 30.0,
    limit_s: float = 120.0,
) -> None:
    """After the input ended, wait for the cloud, at least `quiet_s`: until the result (labels,
    or the stats of a cloud that does not segment) of the last frame sent is back (the cloud
    always works on the newest frame), or until it has been quiet for `quiet_s` or 1.5 times
    the longest frame it took (`first_s` while nothing has come back: models warming up on a
    CPU), at most `limit_s`. `check` raises when a node has ended."""
    stats = monitor.stats
    start = last = checked = time.monotonic()
    seen = (stats.frames_received, stats.frames_processed, stats.labels_received)
    while time.monotonic() - start < limit_s:
        spin(0.05)
        now = time.monotonic()
        if now - checked > 0.5:
            check()
            checked = now
        progress = (stats.frames_received, stats.frames_processed, stats.labels_received)
        if progress != seen:
            seen = progress
            last = now
        last_sent = monitor.last_sent
        if segmenting:
            back = last_sent in stats.segmented or last_sent in monitor.labelled
        else:
            back = last_sent in stats.reported
        if last_sent is not None and back:
            end = max(now + 0.5, start + quiet_s)  # anything else still on its way
            while time.monotonic() < end:
                spin(0.05)
            return
        if stats.frames_received:
            work = stats.latency_ms["decode_restore"], stats.latency_ms["segmentation"]
            allowance = max(quiet_s, 1.5 * sum(max(v, default=0.0) for v in work) / 1e3)
        else:
            allowance = max(quiet_s, first_s) if stats.frames_sent else quiet_s
        if now - last >= allowance:
            return
