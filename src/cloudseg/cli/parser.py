"""The `cloudseg` argument parser. The demo's options that set a node parameter take their
choices and defaults from the graph (cloudseg.graph)."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from cloudseg.cli import commands
from cloudseg.cli.commands import BENCH_COMMANDS, BILINEAR_ONLY, EXPORT_COMMANDS, TRAIN_COMMANDS
from cloudseg.data.frames import DEFAULT_FPS
from cloudseg.fastdds import DDS_MODES
from cloudseg.graph import (
    BAG_IMAGE_TOPIC,
    COMPRESSOR,
    FRAME_SELECTOR,
    GRAPHS,
    NODES,
    SEGMENTATION,
    SOURCE,
    SR,
    NodeSpec,
)
from cloudseg.routes import DEFAULT_ROUTE
from cloudseg.view import DEFAULT_HOST as VIEW_HOST
from cloudseg.view import DEFAULT_PORT as VIEW_PORT

#: `--cloud`: the cloud graphs that segment.
DEMO_CLOUDS = ("cloud", "cloud_split")


def add_param_option(
    parser: argparse.ArgumentParser,
    flag: str,
    spec: NodeSpec,
    name: str,
    text: str,
    node_default: bool = False,
    extra_choices: tuple[str, ...] = (),
) -> None:
    """An option that sets the parameter `name` of node `spec`, typed like it, with its
    choices (and `extra_choices`) and its default; `node_default`: the option's default is None
    (the node keeps its own, which the help names)."""
    param = spec.param(name)
    choices = (*param.choices, *extra_choices) if param.choices else None
    default = None if node_default else param.default
    value = f"{param.default:g}" if isinstance(param.default, float) else str(param.default)
    shown = f"the {spec.name}'s, {value}" if node_default else value
    parser.add_argument(
        flag,
        type=type(param.default),
        default=default,
        choices=choices,
        help=f"{text}; default {shown}",
    )


def add_record_option(parser: argparse.ArgumentParser, what: str) -> None:
    """`--record OUT.mcap`: a recorder beside the nodes (the topics `cloudseg record` takes
    by default)."""
    parser.add_argument(
        "--record",
        metavar="OUT.mcap",
        help=f"record {what}'s stream, labels and statistics to this new MCAP file (a rosbag2 "
        "recording with the message definitions: Foxglove, mcap and ros2 bag play open it)",
    )


def add_command_group(
    sub: argparse._SubParsersAction,
    name: str,
    title: str,
    subcommands: dict[str, str],
    func: Callable[[argparse.Namespace], int],
    detailed: bool = True,
) -> None:
    """`cloudseg NAME [WHAT] ...`: WHAT one of `commands` (each parses its own options);
    the help lists them (with their descriptions when `detailed`)."""
    listing = (
        "; ".join(f"{k}: {v}" for k, v in subcommands.items())
        if detailed
        else ", ".join(subcommands)
    )
    p = sub.add_parser(
        name, help=f"{title}: {listing} (see cloudseg {name} X --help)", add_help=False
    )
    p.add_argument("what", nargs="?", choices=tuple(subcommands))
    p.set_defaults(func=func, passes_options=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cloudseg",
        description="CloudSeg for ROS 2: stream downsampled frames from a vehicle to a cloud "
        "GPU that restores and segments them.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="run vehicle and cloud sides over DDS and print a summary")
    p.add_argument(
        "--input",
        help="Cityscapes sequence or split folder (leftImg8bit/val), video file or rosbag2; "
        "default: a generated test clip",
    )
    p.add_argument(
        "--topic",
        help="the image topic of a rosbag2 input (sensor_msgs/Image or CompressedImage; "
        f"default {BAG_IMAGE_TOPIC}), e.g. /camera/color/image_raw",
    )
    add_param_option(p, "--scale", COMPRESSOR, "scale", "downsampling factor")
    add_param_option(p, "--codec", COMPRESSOR, "codec", "payload codec")
    add_param_option(p, "--crf", COMPRESSOR, "crf", "H.264 CRF", node_default=True)
    add_param_option(p, "--bitrate", COMPRESSOR, "bitrate_kbps", "H.264 kbit/s (0 = use --crf)")
    add_param_option(
        p,
        "--gop",
        COMPRESSOR,
        "gop",
        "H.264 keyframe interval in frames (1 for the unrelated stills of a Cityscapes split; "
        "1 = every frame an H.264 stream of its own)",
        node_default=True,
    )
    add_param_option(
        p,
        "--select",
        FRAME_SELECTOR,
        "mode",
        "vehicle frame selection: send only frames that changed enough, by grey-level "
        "difference (pixel) or by a small network predicting how much the labels changed "
        "(learned); off sends every frame",
    )
    add_param_option(p, "--rate", SOURCE, "rate", "frames per second")
    add_param_option(p, "--frames", SOURCE, "limit", "stop after N frames (0 = all)")
    add_param_option(
        p,
        "--restore",
        SR,
        "restore",
        "cloud side: SR + segmentation, bilinear + segmentation, or bilinear restoration "
        f"without segmentation (fast on a CPU); the default is the default route's restoration "
        f"({DEFAULT_ROUTE.description})",
        extra_choices=(BILINEAR_ONLY,),
    )
    p.add_argument(
        "--cloud",
        default=DEMO_CLOUDS[0],
        choices=DEMO_CLOUDS,
        help="SR and segmentation in one process (default) or in two",
    )
    add_param_option(p, "--backend", SEGMENTATION, "backend", "segmentation model")
    add_param_option(
        p, "--device", SEGMENTATION, "device", "cloud torch device (auto: cuda when present)"
    )
    p.add_argument(
        "--score",
        action="store_true",
        help="after the stream, the mIoU of the labels that came back: against ground truth "
        "when the input is Cityscapes frames with gtFine labels, else against the segmenter's "
        "labels on the original full-resolution frames",
    )
    p.add_argument(
        "--control",
        default="auto",
        choices=("auto", "on", "off"),
        help="the adaptive controller: on, it measures the link and sends Knobs (scale, rate, "
        "SR bypass) from the profile, replacing --scale/--crf/--bitrate; off keeps these fixed; "
        "auto (default): on when config/profile.json exists (cloudseg profile)",
    )
    p.add_argument("--json", action="store_true", help="last line: one JSON object")
    p.add_argument(
        "--keep-logs",
        action="store_true",
        help="keep the node processes' logs (their folder is printed); by default they are "
        "removed at the end",
    )
    p.add_argument(
        "--namespace",
        metavar="NS",
        default="",
        help="run every node (vehicle, cloud, controller) in this ROS namespace, e.g. car1 "
        "(default: the root)",
    )
    p.add_argument(
        "--view",
        nargs="?",
        const=f"{VIEW_HOST}:{VIEW_PORT}",
        metavar="[HOST:]PORT",
        help=f"also serve the stream, labels and stats to Foxglove while the demo runs (as "
        f"cloudseg view; default {VIEW_HOST}:{VIEW_PORT}, the address is printed)",
    )
    add_record_option(p, "the demo")
    p.set_defaults(func=commands.demo)

    p = sub.add_parser(
        "convert", help="frames folder, video or rosbag2 -> rosbag2 of sensor_msgs/Image rgb8"
    )
    p.add_argument("input", help="Cityscapes sequence folder, video file or rosbag2")
    p.add_argument("output", help="output bag folder")
    p.add_argument("--storage", default="mcap", choices=("mcap", "sqlite3"))
    p.add_argument(
        "--fps", type=float, default=DEFAULT_FPS, help="stamp rate (default %(default)g)"
    )
    p.add_argument(
        "--topic",
        help=f"the image topic of a rosbag2 input (Image or CompressedImage; default "
        f"{BAG_IMAGE_TOPIC})",
    )
    p.add_argument(
        "--output-topic", default=BAG_IMAGE_TOPIC, help=f"topic written (default {BAG_IMAGE_TOPIC})"
    )
    p.set_defaults(func=commands.convert)

    p = sub.add_parser("run", help="start a graph's nodes as processes (no ros2 launch needed)")
    p.add_argument("graph", choices=sorted(GRAPHS))
    p.add_argument("--input", help="input for the source node (pipeline graph)")
    p.add_argument(
        "--topic", help=f"the image topic of a rosbag2 --input (default {BAG_IMAGE_TOPIC})"
    )
    p.add_argument(
        "-p",
        "--param",
        dest="params",
        action="append",
        metavar="NODE.NAME:=VALUE",
        help="set a node's parameter (checked against its range), e.g. -p compressor.scale:=2 "
        "or -p segmentation.device:=cpu; repeatable (see cloudseg node NODE --help)",
    )
    p.add_argument(
        "--dds",
        choices=DDS_MODES,
        default="local",
        help="Fast DDS profile: local (one host, default), tcp (cloud listens, vehicle "
        "connects), discovery (both are clients of a discovery server) or tls (plain TCP to "
        "the local mutual-TLS gate, python -m cloudseg.security.tls_gate; see docs/deployment.md)",
    )
    p.add_argument("--peer", metavar="HOST:PORT", help="tcp, vehicle: the cloud's address")
    p.add_argument(
        "--listen", metavar="PORT", type=int, help="tcp, cloud: TCP port to listen on (7410)"
    )
    p.add_argument(
        "--public-ip", metavar="IP", help="tcp, cloud: address the vehicle reaches (behind NAT)"
    )
    p.add_argument("--server", metavar="HOST:PORT", help="discovery: the discovery server")
    p.add_argument(
        "--namespace",
        metavar="NS",
        default="",
        help="run every node of the graph in this ROS namespace, e.g. car1: its topics are "
        "then /car1/camera/image_raw, /car1/cloudseg/frames, ... (default: the root)",
    )
    add_record_option(p, "the graph")
    p.set_defaults(func=commands.run)

    p = sub.add_parser(
        "node",
        help="run one node: cloudseg node NAME [--ros-args ...]",
        description="Run one node of the graph (cloudseg.graph) in the foreground.",
        epilog="nodes: "
        + "; ".join(f"{n}: {spec.description}" for n, spec in sorted(NODES.items()))
        + ". See cloudseg node NAME --help for a node's parameters.",
    )
    p.add_argument("name", choices=sorted(NODES), metavar="NAME", help="the node")
    p.add_argument(
        "ros_args",
        nargs=argparse.REMAINDER,
        metavar="--ros-args ...",
        help="ROS arguments, e.g. --ros-args -p scale:=2 --params-file config/vehicle.yaml",
    )
    p.set_defaults(func=commands.node)

    p = sub.add_parser(
        "view",
        help="serve a running graph's stream, labels and stats to Foxglove (no ROS install on "
        "the viewing side)",
        description="A Foxglove WebSocket server bridging the graph's topics: the H.264 stream "
        "(CompressedVideo), the coloured labels and overlay, FrameStats and label age (JSON). "
        "Open the printed address in Foxglove (app.foxglove.dev or desktop: Open connection); "
        "config/cloudseg.foxglove-layout.json lays them out.",
    )
    p.add_argument(
        "--host",
        default=VIEW_HOST,
        help=f"address to listen on (default {VIEW_HOST}: this host only). --host 0.0.0.0 "
        "serves every network this host is on: anyone who reaches the port sees the camera "
        "stream, with no authentication",
    )
    p.add_argument(
        "--port", type=int, default=VIEW_PORT, help=f"TCP port (default {VIEW_PORT}; 0: any free)"
    )
    p.add_argument(
        "--namespace", metavar="NS", default="", help="the graph's ROS namespace, e.g. car1"
    )
    p.set_defaults(func=commands.view)

    p = sub.add_parser(
        "record",
        help="record a running graph's topics to one MCAP file that Foxglove, the mcap tools "
        "and ros2 bag play open (see cloudseg record --help)",
        add_help=False,
    )
    p.set_defaults(func=commands.record, passes_options=True)

    # eval and bench parse their own options: `cloudseg eval --help`, `cloudseg bench cloud -h`
    add_command_group(sub, "bench", "benchmarks", BENCH_COMMANDS, commands.bench, detailed=False)

    p = sub.add_parser(
        "eval",
        help="PSNR/SSIM/mIoU table on a Cityscapes folder (see cloudseg eval --help)",
        add_help=False,
    )
    p.set_defaults(func=commands.evaluate, passes_options=True)

    p = sub.add_parser(
        "certs",
        help="a CA and per-host certificates for the TLS link (see cloudseg certs --help)",
        add_help=False,
    )
    p.set_defaults(func=commands.certs, passes_options=True)

    p = sub.add_parser(
        "profile",
        help="offline kbit/s-accuracy profile -> config/profile.json (see cloudseg profile --help)",
        add_help=False,
    )
    p.set_defaults(func=commands.profile, passes_options=True)

    add_command_group(sub, "train", "train models", TRAIN_COMMANDS, commands.train)
    add_command_group(sub, "export", "export models", EXPORT_COMMANDS, commands.export)

    p = sub.add_parser(
        "serve",
        help="a Triton Inference Server on this host (pytriton, needs .venv-triton: "
        "scripts/setup.sh --triton; see cloudseg serve --help)",
        add_help=False,
    )
    p.set_defaults(func=commands.serve, passes_options=True)
    return parser
