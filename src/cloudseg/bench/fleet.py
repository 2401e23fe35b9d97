"""``cloudseg bench fleet``: many vehicles, one cloud (issue 10).

Starts one cloud process (``cloud``: streams discovered, batched inference) and N vehicle
graphs, each a source and a vehicle process under its own namespace (``/car1`` ... ``/carN``:
``--ros-args -r __ns:=/carK``), each playing a different real sequence (the aachen_seq0000
frames, a Cityscapes mp4 clip, the 960x540 dashcam video, the other three clips, in that
order, then again). Every
vehicle sends every frame (selection off), H.264 at x4. This process listens on each
vehicle's topics: the frames it sent (decoded here and matched to their originals by content,
`cloudseg.bench.adapt_score.FrameMatcher`), the labels it got back (capture stamp to arrival:
the latency) and the cloud's FrameStats (batch sizes, inference ms per frame).

Afterwards, for up to ``--score-frames`` labelled frames of each vehicle, the labels it got
are compared (mIoU) with the backend's labels on that vehicle's own full-resolution frame
(`cloudseg.selection.reference.full_resolution_segmenter`, as the other benchmarks' "hr"
reference), and, as a control, with those of another vehicle's frame of the same index:
labels that crossed between streams would score the two alike.

On a CPU the cloud runs the reduced-resolution mode (``--cpu-max-width``, 256 by default) so
that it keeps up; at x4 from a 2048x1024 camera that segments the decoded LR frame (or less)
and no SR runs: the report says which.

``--inference triton``: the cloud sends its batches to Triton Inference Servers. Without
``--triton-urls`` the bench exports a model repository (a temporary folder: ``cloudseg export
triton`` with the settings the local cloud uses here, ``--cpu-max-width`` included, for a
2048x1024 camera, KIND_CPU), starts two ``cloudseg serve`` servers on free ports (one torch
thread each), points the cloud at both and stops them at the end, whatever happens; the report
gives each server's request count from its own metrics endpoint. The exported models have fixed
input dims for one camera size, so with Triton only the 2048x1024 sequences play (aachen and
the four mp4 clips): the 960x540 dashcam is left out.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cloudseg.graph import (
    FRAMES_TOPIC,
    GRAPHS,
    INFERENCE_CHOICES,
    LABELS_TOPIC,
    STATS_TOPIC,
    config_dir,
)
from cloudseg.launcher import NodeProcesses, local_env, node_command

log = logging.getLogger(__name__)


def default_inputs(shared: Path | None = None) -> list[Path]:
    """The real sequences, one per vehicle: aachen_seq0000, the mp4 clips, the dashcam (from
    ``shared``, by default ``$CLOUDSEG_SHARED_DATA`` or ``../shared/data``)."""
    from cloudseg.train.selector import shared_data_dir

    shared = shared or shared_data_dir()
    if shared is None:
        return []
    seq = shared / "sequences"
    clips = sorted((seq / "mp4").glob("*.mp4"))
    # the dashcam third: from 3 vehicles on, two frame sizes meet in the cloud's batches
    inputs = [seq / "aachen_seq0000", *clips[:1], shared / "video" / "solidWhiteRight.mp4"]
    return [p for p in [*inputs, *clips[1:]] if p.exists()]


#: The Triton models' camera size (their input dims are fixed): the sequences' 2048x1024.
TRITON_CAMERA = (2048, 1024)
DASHCAM = "solidWhiteRight.mp4"  # 960x540: not the Triton models' size


def triton_inputs(inputs: list[Path]) -> list[Path]:
    """The inputs at the Triton models' camera size (2048x1024): all but the dashcam."""
    return [p for p in inputs if p.name != DASHCAM]


@dataclass
class TritonBackend:
    """The servers the cloud uses: their gRPC URLs and, for those the bench started, the
    servers themselves (their metrics: request counts)."""

    urls: list[str]
    servers: list = field(default_factory=list)  # cloudseg.triton.local.ServerProcess
    repository: str = ""

    def request_counts(self) -> list[dict]:
        """Per server: url and successful requests (its metrics endpoint; for a server given
        by URL, the one at the gRPC port + 1, Triton's default layout; None when unreadable)."""
        rows = []
        started = {s.url: s for s in self.servers}
        for url in self.urls:
            count = None
            with contextlib.suppress(Exception):
                count = started[url].requests() if url in started else _remote_requests(url)
            rows.append({"url": url, "requests": count})
        return rows


def _remote_requests(url: str) -> int:
    import re
    import urllib.request

    host, port = url.rsplit(":", 1)
    text = urllib.request.urlopen(f"http://{host}:{int(port) + 1}/metrics", timeout=5).read()
    found = re.findall(rb"^nv_inference_request_success\{[^}]*\} (\S+)$", text, re.M)
    return int(sum(float(v) for v in found))


def start_triton(args: argparse.Namespace, log_dir: Path, stack: contextlib.ExitStack):
    """The Triton servers of the run: ``--triton-urls``, or two ``cloudseg serve`` servers of a
    freshly exported repository (stopped when ``stack`` closes)."""
    if args.triton_urls:
        urls = [u.strip() for u in args.triton_urls.split(",") if u.strip()]
        return TritonBackend(urls)
    from cloudseg.triton.export import export_repository
    from cloudseg.triton.local import running_servers, triton_python
    from cloudseg.triton.serve import SETUP_COMMAND

    if triton_python() is None:
        raise RuntimeError(
            f"--inference triton without --triton-urls needs .venv-triton: run {SETUP_COMMAND}"
        )
    repo = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="cloudseg-fleet-triton-")))
    t0 = time.perf_counter()
    models = export_repository(
        repo,
        scales=(4,),
        modes=("sr", "bilinear"),  # the Knob may bypass SR
        camera_size=TRITON_CAMERA,
        backend=args.backend,
        device="cpu",
        cpu_max_width=args.cpu_max_width or None,
        max_batch_size=args.max_batch,
        preferred_batch_sizes=tuple(b for b in (2, 4, 8) if b <= args.max_batch) or (1,),
        max_queue_delay_us=1000,
        instances=1,
        kind="KIND_CPU",
    )
    log.info("exported %s in %.0f s", ", ".join(m.name for m in models), time.perf_counter() - t0)
    servers = stack.enter_context(
        running_servers(repo, [m.name for m in models], 2, log_dir, threads=1)
    )
    return TritonBackend([s.url for s in servers], servers, str(repo))


@dataclass
class Vehicle:
    name: str  # its namespace, e.g. /car1
    input: Path
    frames: list[np.ndarray] = field(default_factory=list)  # the originals (scoring)
    sent: set[int] = field(default_factory=set)
    index_of_stamp: dict[int, int] = field(default_factory=dict)
    labels: dict[int, np.ndarray] = field(default_factory=dict)  # index -> first labels
    latency_ms: list[float] = field(default_factory=list)
    labels_received: int = 0
    batch_sizes: list[int] = field(default_factory=list)
    infer_ms: list[float] = field(default_factory=list)
    seen_stats_streams: set[str] = field(default_factory=set)


def _stamp(header) -> int:
    return header.stamp.sec * 1_000_000_000 + header.stamp.nanosec


def read_frames(path: Path, limit: int) -> list[np.ndarray]:
    from cloudseg.data.sources import open_source

    return [f.rgb for f in open_source(path, limit=limit)]


def run_fleet(args: argparse.Namespace) -> dict:
    """The run; with ``--inference triton`` the servers are up for it and stopped after."""
    log_dir = Path(args.log_dir or tempfile.mkdtemp(prefix="cloudseg_fleet_"))
    log_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        triton = start_triton(args, log_dir, stack) if args.inference == "triton" else None
        return _run_fleet(args, log_dir, triton)


def _run_fleet(args: argparse.Namespace, log_dir: Path, triton: TritonBackend | None) -> dict:
    import rclpy
    from sensor_msgs.msg import Image

    from cloudseg.bench.adapt_score import FrameMatcher
    from cloudseg.cloud.streams import stream_topic
    from cloudseg.guard import TRUSTED
    from cloudseg.media.stream import StreamDecoder
    from cloudseg.msg import Frame, FrameStats
    from cloudseg.nodes.common import qos_for

    inputs = default_inputs(Path(args.data) if args.data else None)
    if not inputs:
        raise ValueError(
            f"no real sequences under {args.data or '$CLOUDSEG_SHARED_DATA or ../shared/data'}"
        )
    if triton is not None:
        inputs = triton_inputs(inputs)
    vehicles = [Vehicle(f"/car{k + 1}", inputs[k % len(inputs)]) for k in range(args.vehicles)]
    for v in vehicles:
        v.frames = read_frames(v.input, args.frames)
    env = local_env()
    rclpy.init(args=[])
    node = rclpy.create_node("fleet_bench")
    matchers = {v.name: FrameMatcher(v.frames) for v in vehicles}
    decoders = {v.name: StreamDecoder(TRUSTED) for v in vehicles}

    def on_frame(v: Vehicle, f) -> None:
        v.sent.add(int(f.seq))
        try:
            lr, _ = decoders[v.name].decode(
                bytes(f.data), f.codec, int(f.seq), int(f.scale), int(f.width), int(f.height)
            )
        except Exception:  # a frame this listener cannot decode (a loss before it)
            return
        if lr is not None:
            v.index_of_stamp[_stamp(f.header)] = matchers[v.name](lr)

    def on_labels(v: Vehicle, msg) -> None:
        v.latency_ms.append((time.time_ns() - _stamp(msg.header)) / 1e6)
        v.labels_received += 1
        v.labels.setdefault(_stamp(msg.header), (msg.width, msg.height, bytes(msg.data)))

    def on_stats(v: Vehicle, s) -> None:
        v.seen_stats_streams.add(s.stream_id)
        v.sent.add(int(s.seq))
        if s.batch_size:
            v.batch_sizes.append(int(s.batch_size))
            v.infer_ms.append(float(s.sr_ms + s.segmentation_ms))

    for v in vehicles:
        node.create_subscription(
            Frame,
            stream_topic(v.name, FRAMES_TOPIC),
            lambda m, v=v: on_frame(v, m),
            qos_for(FRAMES_TOPIC),
        )
        node.create_subscription(
            Image,
            stream_topic(v.name, LABELS_TOPIC),
            lambda m, v=v: on_labels(v, m),
            qos_for(LABELS_TOPIC),
        )
        node.create_subscription(
            FrameStats,
            stream_topic(v.name, STATS_TOPIC),
            lambda m, v=v: on_stats(v, m),
            qos_for(STATS_TOPIC),
        )

    def spin(seconds: float, until=lambda: False) -> bool:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if until():
                return True
            rclpy.spin_once(node, timeout_sec=0.05)
        return bool(until())

    cloud = {
        "device": args.device,
        "cpu_max_width": args.cpu_max_width,
        "restore": args.restore,
        "inference": args.inference,
        "max_batch": args.max_batch,
        "max_wait_ms": args.max_wait_ms,
        "discovery_period_s": 0.5,
    }
    if triton is not None:
        cloud["triton_urls"] = ",".join(triton.urls)
    procs = NodeProcesses(env=env, log_dir=log_dir)

    def start(name: str, graph_node: str, config: str, overrides: dict, ns: str | None) -> None:
        cmd = node_command(graph_node, config_dir() / config, overrides, ns)
        with open(log_dir / f"{name}.log", "w") as out:
            procs.procs[name] = subprocess.Popen(
                cmd, env=procs.env, stdout=out, stderr=subprocess.STDOUT
            )

    def logs() -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-1500:]}" for p in log_dir.glob("*.log"))

    config = dict(GRAPHS["pipeline"])
    t_start = time.monotonic()
    try:
        start("cloud", "cloud", config["cloud"], cloud, None)
        if not spin(
            args.timeout, lambda: node.count_subscribers(stream_topic("/", FRAMES_TOPIC)) >= 1
        ):
            raise RuntimeError(f"the cloud did not start\n{logs()}")
        vehicle = {"mode": "off", "scale": 4, "preset": "ultrafast"}
        for v in vehicles:
            start(
                f"vehicle{v.name.replace('/', '_')}", "vehicle", config["vehicle"], vehicle, v.name
            )
        # each vehicle's frames have its camera_labels node, the cloud and this listener
        ready = lambda: all(  # noqa: E731
            node.count_subscribers(stream_topic(v.name, FRAMES_TOPIC)) >= 3 for v in vehicles
        )
        if not spin(args.timeout, ready):
            raise RuntimeError(f"the vehicles or the cloud's discovery did not come up\n{logs()}")
        spin(1.0)
        source = {
            "rate": args.rate,
            "limit": args.frames,
            "stamp_mode": "now",
            "wait_for_subscribers": 1,
        }
        for v in vehicles:
            start(
                f"source{v.name.replace('/', '_')}",
                "source",
                config["source"],
                {**source, "input": str(v.input)},
                v.name,
            )
        sources = [p for n, p in procs.procs.items() if n.startswith("source")]
        spin(args.timeout, lambda: all(p.poll() is not None for p in sources))
        total = sum(len(v.frames) for v in vehicles)
        spin(args.drain, lambda: sum(v.labels_received for v in vehicles) >= total)
        counts = triton.request_counts() if triton is not None else None
    finally:
        codes = procs.stop_all(grace=20)
        node.destroy_node()
        rclpy.try_shutdown()
    wall = time.monotonic() - t_start
    failed = {n: c for n, c in codes.items() if c not in (0, None)}
    if failed:
        log.warning("processes that did not exit cleanly: %s (logs in %s)", failed, log_dir)
    result = score(vehicles, args, wall, log_dir)
    if triton is not None:
        result["triton_servers"] = counts
    return result


def score(vehicles: list[Vehicle], args, wall: float, log_dir: Path) -> dict:
    from cloudseg.media.resize import resize_labels
    from cloudseg.metrics import ConfusionMatrix
    from cloudseg.selection.reference import full_resolution_segmenter

    segment = full_resolution_segmenter(args.backend, "cpu" if args.device == "cpu" else "auto")
    references: dict[tuple[str, int], np.ndarray] = {}

    def reference(v: Vehicle, index: int) -> np.ndarray:
        key = (v.name, index)
        if key not in references:
            references[key] = segment(v.frames[index])
        return references[key]

    rows = []
    for k, v in enumerate(vehicles):
        other = vehicles[(k + 1) % len(vehicles)]
        labelled = sorted((v.index_of_stamp[s], s) for s in v.labels if s in v.index_of_stamp)
        unique = dict(labelled)  # index -> stamp (the last labels of each frame)
        picks = sorted(unique)
        if len(picks) > args.score_frames:
            step = len(picks) / args.score_frames
            picks = [picks[int(i * step)] for i in range(args.score_frames)]
        own, cross = ConfusionMatrix(), ConfusionMatrix()
        for index in picks:
            w, h, data = v.labels[unique[index]]
            got = np.frombuffer(data, np.uint8).reshape(h, w)
            ref = reference(v, index)
            own.update(resize_labels(got, ref.shape[1::-1]), ref)
            if other is not v and index < len(other.frames):
                ref_o = reference(other, index)
                cross.update(resize_labels(got, ref_o.shape[1::-1]), ref_o)
        lat = v.latency_ms
        rows.append(
            {
                "name": v.name.strip("/"),
                "input": v.input.name,
                "sent": len(v.sent),
                "labels": v.labels_received,
                "latency_ms_p50": _round(np.percentile(lat, 50)) if lat else None,
                "latency_ms_p95": _round(np.percentile(lat, 95)) if lat else None,
                "miou_vs_own_hr": _round(own.miou(), 3) if picks else None,
                "miou_vs_other_hr": _round(cross.miou(), 3) if picks and other is not v else None,
                "scored": len(picks),
                "stats_stream_ids": sorted(v.seen_stats_streams),
            }
        )
    sizes = [b for v in vehicles for b in v.batch_sizes]
    infer = [m for v in vehicles for m in v.infer_ms]
    # FrameStats come one per frame: batches = sum over frames of 1 / (its batch's size)
    batch_mean = len(sizes) / sum(1.0 / b for b in sizes) if sizes else None
    return {
        "inference": args.inference,
        "vehicles": rows,
        "batch_mean": _round(batch_mean, 2) if batch_mean else None,
        "ms_per_frame": _round(float(np.mean(infer)), 2) if infer else None,
        "restoration": restoration(args),
        "wall_s": round(wall, 1),
        "log_dir": str(log_dir),
    }


def restoration(args) -> str:
    if args.inference == "triton":
        where = args.triton_urls or "two cloudseg serve servers on this host's CPU (KIND_CPU)"
        text = f"Triton ({where}): models cloudseg_x4_{{sr,bilinear}} for a 2048x1024 camera"
        if not args.triton_urls and args.cpu_max_width:
            text += f", reduced-resolution mode (segment at most {args.cpu_max_width} px wide)"
        return text + f"; restore={args.restore}; labels only"
    if args.device == "cpu" or (args.device == "auto" and not _cuda()):
        text = f"CPU reduced-resolution mode: SR + segmentation at most {args.cpu_max_width} px "
        text += "wide (cpu_max_width)"
        if args.cpu_max_width and args.cpu_max_width <= 512:
            text += "; at x4 from 2048x1024 that is the decoded LR frame or less: no SR runs"
        return text + f"; restore={args.restore}"
    return f"GPU: restore={args.restore} at the backend's trained resolution"


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _round(x, nd: int = 1):
    return None if x is None or not np.isfinite(x) else round(float(x), nd)


def format_table(result: dict) -> str:
    lines = [
        "| vehicle | input | sent | labels | latency p50 / p95 ms | mIoU own hr | mIoU other hr |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in result["vehicles"]:
        lines.append(
            f"| {r['name']} | {r['input']} | {r['sent']} | {r['labels']} | "
            f"{r['latency_ms_p50']} / {r['latency_ms_p95']} | {r['miou_vs_own_hr']} | "
            f"{r['miou_vs_other_hr']} |"
        )
    lines.append(
        f"\ncloud: mean batch {result['batch_mean']}, {result['ms_per_frame']} ms per frame "
        f"(inference); {result['restoration']}"
    )
    for server in result.get("triton_servers") or []:
        lines.append(f"triton server {server['url']}: {server['requests']} requests")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="cloudseg bench fleet",
        description="N vehicles under their own namespaces, one cloud: frames sent, labels "
        "received, capture-to-labels latency, and mIoU of each vehicle's labels against its "
        "own frames' and (control) another vehicle's frames' full-resolution labels",
    )
    p.add_argument("--vehicles", type=int, default=2, help="vehicles (namespaces /car1...)")
    p.add_argument(
        "--inference",
        choices=INFERENCE_CHOICES,
        default="local",
        help="local: the cloud's own pipeline; triton: Triton servers (--triton-urls, or two "
        "cloudseg serve servers started here on an exported repository); only the 2048x1024 "
        "sequences then (the models' input size is fixed)",
    )
    p.add_argument(
        "--triton-urls",
        default="",
        help="with --inference triton: the servers' gRPC host:port, comma-separated (models "
        "from cloudseg export triton for 2048x1024 at x4); default: start two here",
    )
    p.add_argument("--json", action="store_true", help="also print one JSON line")
    p.add_argument("--frames", type=int, default=20, help="frames per vehicle (default 20)")
    p.add_argument(
        "--rate",
        type=float,
        default=2.0,
        help="camera fps per vehicle (default 2: 4 vehicles' worth keeps this 2-core CPU busy)",
    )
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument(
        "--cpu-max-width", type=int, default=256, help="CPU: segment at most this wide (256)"
    )
    p.add_argument("--restore", choices=("sr", "bilinear"), default="sr")
    p.add_argument("--backend", default="espnetv2", help="segmentation backend (reference too)")
    p.add_argument("--max-batch", type=int, default=8)
    p.add_argument("--max-wait-ms", type=float, default=5.0)
    p.add_argument("--score-frames", type=int, default=6, help="frames scored per vehicle")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per phase")
    p.add_argument("--drain", type=float, default=5.0, help="seconds to wait for last labels")
    p.add_argument("--data", default="", help="the shared data folder (default ../shared/data)")
    p.add_argument("--log-dir", default="", help="node logs (default: a temporary folder)")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.vehicles < 1 or args.frames < 1 or args.rate <= 0 or args.score_frames < 1:
        parser.error("--vehicles, --frames and --score-frames must be >= 1, --rate > 0")
    if args.triton_urls and args.inference != "triton":
        parser.error("--triton-urls needs --inference triton")
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    t0 = time.perf_counter()
    try:
        result = run_fleet(args)
    except (ValueError, RuntimeError) as exc:
        print(f"cloudseg bench fleet: error: {exc}", file=sys.stderr)
        return 2
    print(
        f"{args.vehicles} vehicles x {args.frames} frames at {args.rate:g} fps, x4 H.264, "
        f"{args.inference} inference; {time.perf_counter() - t0:.0f} s on {platform.node()}; "
        f"{result['restoration']}; logs in {result['log_dir']}",
        file=sys.stderr,
    )
    if args.inference == "triton":
        print(
            f"triton: the 960x540 dashcam ({DASHCAM}) is left out: the exported models' input "
            "dims are fixed for one camera size (2048x1024), so only aachen and the mp4 clips "
            "play",
            file=sys.stderr,
        )
    print(format_table(result))
    if args.json:
        keep = ("name", "sent", "labels", "latency_ms_p50", "latency_ms_p95")
        keep += ("miou_vs_own_hr", "miou_vs_other_hr")
        line = {
            "inference": result["inference"],
            "vehicles": [{k: r[k] for k in keep} for r in result["vehicles"]],
            "batch_mean": result["batch_mean"],
            "ms_per_frame": result["ms_per_frame"],
            "restoration": result["restoration"],
        }
        if "triton_servers" in result:
            line["triton_servers"] = result["triton_servers"]
        print(json.dumps(line))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
