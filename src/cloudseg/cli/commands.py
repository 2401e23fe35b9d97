"""The `cloudseg` sub-commands: each takes the parsed arguments and returns the exit status.

Commands that parse their own options (eval, bench, train, ...) get them in `args.rest`.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from cloudseg.cli import BAD_INPUT_EXIT
from cloudseg.cli.reference import node_help
from cloudseg.graph import BAG_IMAGE_TOPIC, GRAPHS, NODES, config_dir, namespace
from cloudseg.stop_signals import INTERRUPTED_EXIT

#: `demo --restore` beyond the sr node's own choices: the bilinear cloud graph, no segmentation.
BILINEAR_ONLY = "bilinear-only"


def demo(args: argparse.Namespace) -> int:
    """`cloudseg demo`: stream an input through vehicle and cloud processes, print a summary."""
    from cloudseg.demo import run_demo

    try:
        ns = namespace(args.namespace)
        view_at = view_address(args.view)
        _check_record(args.record)
    except ValueError as exc:
        print(f"cloudseg demo: {exc}", file=sys.stderr)
        return BAD_INPUT_EXIT
    stats = run_demo(
        args.input,
        scale=args.scale,
        codec=args.codec,
        rate=args.rate,
        limit=args.frames,
        crf=args.crf,
        bitrate_kbps=args.bitrate,
        quiet=args.json,
        cloud="cloud_bilinear" if args.restore == BILINEAR_ONLY else args.cloud,
        sr_bypass=args.restore == "bilinear",
        cloud_params={"backend": args.backend, "device": args.device},
        score=args.score,
        gop=args.gop,
        select=args.select,
        control=_control_on(args.control),
        topic=args.topic,
        keep_logs=args.keep_logs,
        ns=ns,
        view=view_at,
        record=args.record,
    )
    print(stats.report())
    if args.json:
        print(stats.to_json())
    if stats.interrupted:
        print("cloudseg demo: interrupted; the summary covers what ran until then", file=sys.stderr)
        return INTERRUPTED_EXIT
    return 0 if stats.frames_processed else 1


def view(args: argparse.Namespace) -> int:
    """`cloudseg view`: a Foxglove WebSocket server on a running graph's topics."""
    try:
        ns = namespace(args.namespace)
    except ValueError as exc:
        print(f"cloudseg view: {exc}", file=sys.stderr)
        return BAD_INPUT_EXIT
    if not 0 <= args.port <= 65535:
        print(f"cloudseg view: --port {args.port}: must be 0..65535", file=sys.stderr)
        return BAD_INPUT_EXIT
    from cloudseg.nodes.view_node import serve_view

    return serve_view(args.host, args.port, ns)


def view_address(text: str | None) -> tuple[str, int] | None:
    """`demo --view [HOST:]PORT` -> (host, port); None without --view. ValueError when bad."""
    if text is None:
        return None
    from cloudseg.view import DEFAULT_HOST

    host, _, port = text.rpartition(":")
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"--view {text}: expected [HOST:]PORT, the port 0..65535")
    return host or DEFAULT_HOST, int(port)


def _check_record(output: str | None) -> None:
    """`--record`: the file can be written (ValueError saying why not), before anything runs."""
    if output:
        from cloudseg.data.frames import DataError
        from cloudseg.data.recording import check_output

        try:
            check_output(output)
        except DataError as exc:
            raise ValueError(str(exc)) from None


def record(args: argparse.Namespace) -> int:
    """`cloudseg record OUT.mcap`: record the graph's topics until Ctrl-C."""
    from cloudseg.nodes.recorder_node import main as record_main

    return record_main(args.rest)


def _control_on(choice: str) -> bool:
    """`--control`: auto is on when config/profile.json exists (`cloudseg profile`)."""
    if choice != "auto":
        return choice == "on"
    from cloudseg.control.profile import PROFILE_FILE

    return (config_dir() / PROFILE_FILE).is_file()


def convert(args: argparse.Namespace) -> int:
    """`cloudseg convert`: any frame source -> an rgb8 image rosbag2."""
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


def run(args: argparse.Namespace) -> int:
    """`cloudseg run GRAPH`: start a graph's nodes as processes, parameters checked first."""
    from cloudseg.data.frames import DataError
    from cloudseg.data.sources import check_input
    from cloudseg.launcher import parse_param_overrides, run_graph

    try:
        overrides = parse_param_overrides(args.graph, args.params or [])
        ns = namespace(args.namespace)
        _check_record(args.record)
    except ValueError as exc:
        print(f"cloudseg run: {exc}", file=sys.stderr)
        return BAD_INPUT_EXIT
    if args.input or args.topic:
        if "source" not in dict(GRAPHS[args.graph]):
            print(
                f"cloudseg run: --input/--topic: graph {args.graph} has no source", file=sys.stderr
            )
            return BAD_INPUT_EXIT
        try:
            check_input(args.input, args.topic)
        except DataError as exc:
            print(f"cloudseg run: {exc}", file=sys.stderr)
            return BAD_INPUT_EXIT
        source = overrides.setdefault("source", {})
        if args.input:
            source["input"] = args.input
        if args.topic:
            source["topic_in_bag"] = args.topic
    dds = None
    if args.dds != "local":
        from cloudseg.fastdds import dds_env

        side = "vehicle" if args.graph in ("vehicle", "controller") else "cloud"
        if args.graph in ("pipeline", "cloud_split"):
            print(f"--dds {args.dds} runs one side: graph vehicle or cloud", file=sys.stderr)
            return BAD_INPUT_EXIT
        try:
            dds = dds_env(args.dds, side, args.peer, args.listen, args.public_ip, args.server)
        except (ValueError, OSError) as exc:
            print(f"cloudseg run: {exc}", file=sys.stderr)
            return BAD_INPUT_EXIT
    return run_graph(args.graph, overrides or None, dds, ns, record=args.record)


def node(args: argparse.Namespace) -> int:
    """`cloudseg node NAME`: run one node in the foreground (its help from the graph)."""
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


def list_commands(command: str, commands: dict[str, str], rest: list[str]) -> int:
    """`cloudseg bench` / `cloudseg train` without a sub-command: list them (on stdout and 0
    with --help, else on stderr and 2)."""
    asked = bool({"-h", "--help"} & set(rest))
    out = sys.stdout if asked else sys.stderr
    print(f"usage: cloudseg {command} {{{','.join(commands)}}} [options]", file=out)
    for name, text in commands.items():
        print(f"  {name:<10} {text}", file=out)
    print(f"see cloudseg {command} NAME --help", file=out)
    return 0 if asked else 2


def bench(args: argparse.Namespace) -> int:
    """`cloudseg bench NAME`: a benchmark module's own main."""
    if args.what is None:
        return list_commands("bench", BENCH_COMMANDS, args.rest)
    module = importlib.import_module(f"cloudseg.bench.{args.what}")
    return module.main(args.rest)


def evaluate(args: argparse.Namespace) -> int:
    """`cloudseg eval`: the evaluation table."""
    from cloudseg.eval import main as eval_main

    return eval_main(args.rest)


def certs(args: argparse.Namespace) -> int:
    """`cloudseg certs`: certificates for the TLS link."""
    from cloudseg.security.certs import main as certs_main

    return certs_main(args.rest)


def profile(args: argparse.Namespace) -> int:
    """`cloudseg profile`: the offline kbit/s-accuracy profile."""
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


def train(args: argparse.Namespace) -> int:
    """`cloudseg train NAME`: a trainer's own main."""
    if args.what is None:
        return list_commands("train", TRAIN_COMMANDS, args.rest)
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


def export(args: argparse.Namespace) -> int:
    """`cloudseg export NAME`: an exporter's own main."""
    if args.what is None:
        return list_commands("export", EXPORT_COMMANDS, args.rest)
    from cloudseg.triton.export import main as export_main

    return export_main(args.rest)


def serve(args: argparse.Namespace) -> int:
    """`cloudseg serve`: a Triton Inference Server on this host."""
    from cloudseg.triton.serve import main as serve_main

    return serve_main(args.rest)
