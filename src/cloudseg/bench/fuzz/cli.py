"""The command line of ``cloudseg bench fuzz``."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from cloudseg.bench.fuzz.catalogue import KINDS
from cloudseg.bench.fuzz.messages import DEFAULT_SEQUENCE, PROG, ValidStream
from cloudseg.bench.fuzz.report import summary_table
from cloudseg.bench.fuzz.run import Fuzz, FuzzError, Options
from cloudseg.launcher import parse_node_params


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Start the cloud process and the vehicle process over real DDS (a domain of their\n"
            "own, this host only) and send them N hostile messages: random and corrupt\n"
            "payloads, every codec string, zero and huge sizes, every scale 0..255, bad stamps,\n"
            "seq jumps, bad Knobs, bad camera Images, keyframe requests and labels. Between\n"
            "them, valid frames (a real H.264 stream, IDR first) check that labels and\n"
            "FrameStats still come back. Reports crashes, whether the graph still serves,\n"
            "and memory growth (RSS of each node process after warm-up and at the end)."
        ),
        epilog="kinds of hostile messages:\n"
        + "\n".join(f"  {k:<18} {v[1]}" for k, v in KINDS.items())
        + '\n\n--json: one line {"sent", "crashes", "still_serving", '
        '"valid_frames_answered", "rss_growth_mb", "per_kind", ...}.\n'
        "Exit status: 0 when nothing crashed and the graph still serves, 1 otherwise, "
        "2 when the run could not be made.",
    )
    parser.add_argument(
        "--frames", type=int, default=10_000, metavar="N", help="hostile messages (10000)"
    )
    parser.add_argument(
        "--soak-minutes",
        type=float,
        default=0.0,
        metavar="M",
        help="instead of N messages, run the loop for M minutes and sample RSS along the way",
    )
    parser.add_argument(
        "--valid-only",
        action="store_true",
        help="with --soak-minutes: only the valid stream (a looped run of the real sequence)",
    )
    parser.add_argument("--rate", type=float, default=60.0, help="hostile messages per second (60)")
    parser.add_argument(
        "--valid-every",
        type=int,
        default=100,
        metavar="K",
        help="a valid burst (one GOP + a camera image) every K hostile messages (100)",
    )
    parser.add_argument(
        "--final-bursts",
        type=int,
        default=5,
        metavar="B",
        help="valid bursts after the fuzzing; all must be answered for still_serving (5)",
    )
    parser.add_argument(
        "--answer-timeout",
        type=float,
        default=6.0,
        metavar="S",
        help="seconds to wait for a burst's FrameStats (6; the CPU cloud takes ~0.5 s a frame)",
    )
    parser.add_argument(
        "--rss-every", type=float, default=10.0, metavar="S", help="RSS sample period (10 s)"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (0)")
    parser.add_argument(
        "--input", default=DEFAULT_SEQUENCE, help="folder of real frames for the valid stream"
    )
    parser.add_argument(
        "--cloud-param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override a cloud node parameter (default on a CPU: device=cpu cpu_max_width=512)",
    )
    parser.add_argument(
        "--domain-id",
        type=int,
        help="ROS domain (default: $ROS_DOMAIN_ID, else one of 150..229 by process id)",
    )
    parser.add_argument("--log-dir", type=Path, help="node logs (default: a temporary folder)")
    parser.add_argument("--keep-logs", action="store_true", help="keep the temporary log folder")
    parser.add_argument("--json", action="store_true", help="one JSON line on stdout")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.frames < 1:
            raise FuzzError("--frames must be >= 1")
        if args.rate <= 0 or args.valid_every < 1 or args.final_bursts < 1:
            raise FuzzError("--rate must be > 0, --valid-every and --final-bursts >= 1")
        if args.soak_minutes < 0:
            raise FuzzError("--soak-minutes must be >= 0")
        if args.valid_only and not args.soak_minutes:
            raise FuzzError("--valid-only goes with --soak-minutes")
        if not Path(args.input).is_dir():
            raise FuzzError(f"--input {args.input} is not a folder of frames")
        if args.domain_id is not None and not 0 <= args.domain_id <= 232:
            raise FuzzError("--domain-id must be 0..232")
        opts = Options(
            frames=args.frames,
            soak_minutes=args.soak_minutes,
            valid_only=args.valid_only,
            rate=args.rate,
            valid_every=args.valid_every,
            final_bursts=args.final_bursts,
            answer_timeout=args.answer_timeout,
            rss_every=args.rss_every,
            seed=args.seed,
            input=args.input,
            cloud_params=parse_node_params("cloud", args.cloud_param, "--cloud-param", FuzzError),
            log_dir=args.log_dir,
            keep_logs=args.keep_logs,
            domain_id=args.domain_id,
            progress=not args.quiet,
        )
        stream = ValidStream.from_folder(args.input)
        fuzz = Fuzz(opts, stream)
        result = fuzz.run()
    except FuzzError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; the node processes were stopped", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps(result), flush=True)
    else:
        print(summary_table(result))
    ok = result["crashes"] == 0 and result["still_serving"]
    if ok and not (args.log_dir or args.keep_logs):
        shutil.rmtree(fuzz.log_dir, ignore_errors=True)
    elif not args.quiet:
        print(f"{PROG}: node logs in {fuzz.log_dir}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
