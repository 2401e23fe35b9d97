"""The `cloudseg` command: demo, convert, run, node, eval, bench, profile, certs, train, export
and serve."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable

from cloudseg.graph import BAG_IMAGE_TOPIC, COMPRESSOR, GRAPHS, NODES, namespace
from cloudseg.launcher import DDS_MODES
from cloudseg.routes import DEFAULT_ROUTE


def _demo(args: argparse.Namespace) -> int:
    from cloudseg.demo import run_demo

    try:
        ns = namespace(args.namespace)
    except ValueError as exc:
        print(f"cloudseg demo: {exc}", file=sys.stderr)
        return 2
    stats = run_demo(
        args.input,
        scale=args.scale,
        codec=args.codec,
        rate=args.rate,
        limit=args.frames,
        crf=args.crf,
        bitrate_kbps=args.bitrate,
        quiet=args.json,
        cloud="cloud_bilinear" if args.restore == "bilinear-only" else args.cloud,
        sr_bypass=args.restore == "bilinear",
        cloud_params={"backend": args.backend, "device": args.device},
        score=args.score,
        gop=args.gop,
        select=args.select,
        control=_control_on(args.control),
        topic=args.topic,
        keep_logs=args.keep_logs,
        ns=ns,
    )
    print(stats.report())
    if args.json:
        print(stats.to_json())
    return 0 if stats.frames_processed else 1


def _control_on(choice: str) -> bool:
    """`--control`: auto is on when config/profile.json exists (`cloudseg profile`)."""
    if choice != "auto":
        return choice == "on"
    from cloudseg.control.profile import PROFILE_FILE
    from cloudseg.graph import config_dir

    return (config_dir() / PROFILE_FILE).is_file()


def _convert(args: argparse.Namespace) -> int:
    from cloudseg.data.bag_writer import convert_to_bag

    n = convert_to_bag(
        args.input,
        args.output,
        storage=args.storage,
        fps=args.fps,
        topic=args.output_topic,
        input_topic=args.topic or BAG_IMAGE_TOPIC,
        progress=True,
    )
    print(f"wrote {n} frames to {args.output} ({args.storage}, topic {args.output_topic})")
    return 0


def _run(args: argparse.Namespace) -> int:
    from cloudseg.data.frames import DataError
    from cloudseg.data.sources import check_input
    from cloudseg.launcher import parse_param_overrides, run_graph

    try:
        overrides = parse_param_overrides(args.graph, args.params or [])
        ns = namespace(args.namespace)
    except ValueError as exc:
        print(f"cloudseg run: {exc}", file=sys.stderr)
        return 2
    if args.input or args.topic:
        if "source" not in dict(GRAPHS[args.graph]):
            print(
                f"cloudseg run: --input/--topic: graph {args.graph} has no source", file=sys.stderr
            )
            return 2
        try:
            check_input(args.input, args.topic)
        except DataError as exc:
            print(f"cloudseg run: {exc}", file=sys.stderr)
            return 2
        source = overrides.setdefault("source", {})
        if args.input:
            source["input"] = args.input
        if args.topic:
            source["topic_in_bag"] = args.topic
    dds = None
    if args.dds != "local":
        from cloudseg.launcher import dds_env

        side = "vehicle" if args.graph in ("vehicle", "controller") else "cloud"
        if args.graph in ("pipeline", "cloud_split"):
            print(f"--dds {args.dds} runs one side: graph vehicle or cloud", file=sys.stderr)
            return 2
        try:
            dds = dds_env(args.dds, side, args.peer, args.listen, args.public_ip, args.server)
        except (ValueError, OSError) as exc:
            print(f"cloudseg run: {exc}", file=sys.stderr)
            return 2
    return run_graph(args.graph, overrides or None, dds, ns)


def node_help(name: str) -> str:
    """`cloudseg node NAME --help`: what the node does and its parameters (cloudseg.graph)."""
    spec = NODES[name]
    configs = sorted(
        {
            c
            for entries in GRAPHS.values()
            for n, c in entries
            if n == name or name in NODES[n].composes
        }
    )
    lines = [
        f"usage: cloudseg node {name} [--ros-args -p NAME:=VALUE ... --params-file FILE]",
        "",
        f"{spec.description} ({spec.side} side; python -m {spec.module}).",
    ]
    if spec.composes:
        lines.append(f"Runs the nodes {', '.join(spec.composes)} in one process.")
    if configs:
        lines.append(f"Config files: {', '.join(f'config/{c}' for c in configs)}.")
    lines += ["", "parameters:"]
    for p in spec.params:
        allowed = ""
        if p.choices:
            allowed = f"; one of {', '.join(map(str, p.choices))}"
        elif p.min is not None or p.max is not None:
            allowed = f"; {p.min:g}..{p.max:g}"
        alone = "; in its own process only" if p.name in spec.standalone else ""
        lines.append(f"  {p.name} (default {p.default!r}{allowed}{alone})")
        lines.append(f"      {p.description}")
    return "\n".join(lines)


def _node(args: argparse.Namespace) -> int:
    import importlib

    ours = (
        args.ros_args[: args.ros_args.index("--ros-args")]
        if "--ros-args" in args.ros_args
        else args.ros_args
    )
    if {"-h", "--help"} & set(ours):
        print(node_help(args.name))
        return 0

    module = importlib.import_module(NODES[args.name].module)
    return module.main(["cloudseg", *args.ros_args])


BENCH_COMMANDS = {
    "bitrate": "kbit/s and PSNR per scale and codec",
    "codec": "libx264 preset x rate control x intra refresh: kbit/s, PSNR, mIoU, encode ms",
    "cloud": "ms per frame of decode, SR and segmentation (CPU or GPU)",
    "accuracy": "Table 1 without codec, through the default H.264 stream and at 750 kbit/s",
    "selector": "frames sent, kbit/s and held-label mIoU of frame selection vs fixed interval",
    "adapt": "policies over a tc-shaped link replaying a bandwidth trace (root; namespaces)",
    "tls": "bitrate cost of the mutual-TLS link (bytes with and without TLS, same DDS stream)",
    "recover": "time to recover after a lost frame: periodic IDR vs the cloud's IDR request",
    "fuzz": "hostile messages to the cloud and vehicle processes over DDS: crashes, memory",
    "fleet": "N vehicles under their own namespaces, one cloud: labels, latency, no cross-talk",
}


def _list_commands(command: str, commands: dict[str, str], rest: list[str]) -> int:
    """`cloudseg bench` / `cloudseg train` without a sub-command: list them (on stdout and 0
    with --help, else on stderr and 2)."""
    asked = bool({"-h", "--help"} & set(rest))
    out = sys.stdout if asked else sys.stderr
    print(f"usage: cloudseg {command} {{{','.join(commands)}}} [options]", file=out)
    for name, text in commands.items():
        print(f"  {name:<10} {text}", file=out)
    print(f"see cloudseg {command} NAME --help", file=out)
    return 0 if asked else 2


def _bench(args: argparse.Namespace) -> int:
    import importlib

    if args.what is None:
        return _list_commands("bench", BENCH_COMMANDS, args.rest)
    module = importlib.import_module(f"cloudseg.bench.{args.what}")
    return module.main(args.rest)


def _eval(args: argparse.Namespace) -> int:
    from cloudseg.eval import main as eval_main

    return eval_main(args.rest)


def _certs(args: argparse.Namespace) -> int:
    from cloudseg.security.certs import main as certs_main

    return certs_main(args.rest)


def _profile(args: argparse.Namespace) -> int:
    from cloudseg.control.profile_run import main as profile_main

    return profile_main(args.rest)


TRAIN_COMMANDS = {
    "sr": "CARN on codec-degraded frames, L1 (no labels)",
    "finetune": "CARN fine-tuned to help the frozen segmenter (hybrid L1 + CE loss)",
    "icnet": "ICNet as published (for users with Cityscapes and a GPU)",
    "stream": "a route from the decoded stream to labels (lr_seg, bilinear_seg, sr_ft, sr_seg) "
    "on labelled low-resolution frames (cityscapes_lr)",
    "selector": "learned frame selector: predicts the fraction of labels changed (no labels)",
}


def _train(args: argparse.Namespace) -> int:
    if args.what is None:
        return _list_commands("train", TRAIN_COMMANDS, args.rest)
    if args.what == "icnet":
        from cloudseg.train.icnet import main as icnet_main

        return icnet_main(args.rest)
    if args.what == "stream":
        from cloudseg.train.stream import main as stream_main

        return stream_main(args.rest)
    if args.what == "selector":
        from cloudseg.train.selector import main as selector_main

        return selector_main(args.rest)
    from cloudseg.train.sr import main as sr_main

    return sr_main(args.rest, args.what)


EXPORT_COMMANDS = {
    "triton": "a Triton Inference Server model repository (TorchScript + config.pbtxt)",
}


def _export(args: argparse.Namespace) -> int:
    if args.what is None:
        return _list_commands("export", EXPORT_COMMANDS, args.rest)
    from cloudseg.triton.export import main as export_main

    return export_main(args.rest)


def _serve(args: argparse.Namespace) -> int:
    from cloudseg.triton.serve import main as serve_main

    return serve_main(args.rest)


def _add_command_group(
    sub: argparse._SubParsersAction,
    name: str,
    title: str,
    commands: dict[str, str],
    func: Callable[[argparse.Namespace], int],
    detailed: bool = True,
) -> None:
    """`cloudseg NAME [WHAT] ...`: WHAT one of `commands` (each parses its own options);
    the help lists them (with their descriptions when `detailed`)."""
    listing = (
        "; ".join(f"{k}: {v}" for k, v in commands.items()) if detailed else ", ".join(commands)
    )
    p = sub.add_parser(
        name, help=f"{title}: {listing} (see cloudseg {name} X --help)", add_help=False
    )
    p.add_argument("what", nargs="?", choices=tuple(commands))
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
    p.add_argument(
        "--scale", type=int, default=4, choices=(1, 2, 4, 8), help="downsampling factor (default 4)"
    )
    p.add_argument("--codec", default="h264", choices=("h264", "jpeg", "png"))
    p.add_argument(
        "--crf",
        type=int,
        help=f"H.264 CRF (default: the compressor's, {COMPRESSOR.param('crf').default})",
    )
    p.add_argument("--bitrate", type=int, default=0, help="H.264 kbit/s (0 = use --crf)")
    p.add_argument(
        "--gop",
        type=int,
        help="H.264 keyframe interval in frames (default 17, and 1 for the unrelated stills "
        "of a Cityscapes split; 1 = every frame an H.264 stream of its own)",
    )
    p.add_argument(
        "--select",
        default="pixel",
        choices=("pixel", "learned", "off"),
        help="vehicle frame selection: send only frames that changed enough, by grey-level "
        "difference (pixel, default) or by a small network predicting how much the labels "
        "changed (learned); off sends every frame",
    )
    p.add_argument("--rate", type=float, default=17.0, help="frames per second (default 17)")
    p.add_argument("--frames", type=int, default=0, help="stop after N frames (0 = all)")
    p.add_argument(
        "--restore",
        default=DEFAULT_ROUTE.mode,
        choices=("sr", "bilinear", "bilinear-only"),
        help="cloud side: SR + segmentation, bilinear + segmentation, or bilinear restoration "
        f"without segmentation (fast on a CPU); default {DEFAULT_ROUTE.mode}: the default route "
        f"({DEFAULT_ROUTE.description})",
    )
    p.add_argument(
        "--cloud",
        default="cloud",
        choices=("cloud", "cloud_split"),
        help="SR and segmentation in one process (default) or in two",
    )
    p.add_argument(
        "--backend",
        default="espnetv2",
        choices=("espnetv2", "icnet"),
        help="segmentation model (default espnetv2)",
    )
    p.add_argument(
        "--device",
        default="auto",
        choices=("auto", "cpu", "cuda"),
        help="cloud torch device (default: cuda when present)",
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
    p.set_defaults(func=_demo)

    p = sub.add_parser(
        "convert", help="frames folder, video or rosbag2 -> rosbag2 of sensor_msgs/Image rgb8"
    )
    p.add_argument("input", help="Cityscapes sequence folder, video file or rosbag2")
    p.add_argument("output", help="output bag folder")
    p.add_argument("--storage", default="mcap", choices=("mcap", "sqlite3"))
    p.add_argument("--fps", type=float, default=17.0, help="stamp rate (default 17)")
    p.add_argument(
        "--topic",
        help=f"the image topic of a rosbag2 input (Image or CompressedImage; default "
        f"{BAG_IMAGE_TOPIC})",
    )
    p.add_argument(
        "--output-topic", default=BAG_IMAGE_TOPIC, help=f"topic written (default {BAG_IMAGE_TOPIC})"
    )
    p.set_defaults(func=_convert)

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
        "the local mutual-TLS gate, python -m cloudseg.security.tls_gate; see the README)",
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
    p.set_defaults(func=_run)

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
    p.set_defaults(func=_node)

    # eval and bench parse their own options: `cloudseg eval --help`, `cloudseg bench cloud -h`
    _add_command_group(sub, "bench", "benchmarks", BENCH_COMMANDS, _bench, detailed=False)

    p = sub.add_parser(
        "eval",
        help="PSNR/SSIM/mIoU table on a Cityscapes folder (see cloudseg eval --help)",
        add_help=False,
    )
    p.set_defaults(func=_eval, passes_options=True)

    p = sub.add_parser(
        "certs",
        help="a CA and per-host certificates for the TLS link (see cloudseg certs --help)",
        add_help=False,
    )
    p.set_defaults(func=_certs, passes_options=True)

    p = sub.add_parser(
        "profile",
        help="offline kbit/s-accuracy profile -> config/profile.json (see cloudseg profile --help)",
        add_help=False,
    )
    p.set_defaults(func=_profile, passes_options=True)

    _add_command_group(sub, "train", "train models", TRAIN_COMMANDS, _train)
    _add_command_group(sub, "export", "export models", EXPORT_COMMANDS, _export)

    p = sub.add_parser(
        "serve",
        help="a Triton Inference Server on this host (pytriton, needs .venv-triton: "
        "scripts/setup.sh --triton; see cloudseg serve --help)",
        add_help=False,
    )
    p.set_defaults(func=_serve, passes_options=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if rest and not getattr(args, "passes_options", False):
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    args.rest = rest
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if args.verbose:
            raise
        print(f"cloudseg {args.command}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
