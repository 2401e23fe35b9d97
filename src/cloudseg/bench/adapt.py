"""``cloudseg bench adapt``: adaptive streaming over a shaped link that changes its rate.

The vehicle side (source on a loop of a real sequence, vehicle node, and for ``--policy
controller`` the controller node) runs in one network namespace, the cloud side in another,
joined by a veth pair whose vehicle-to-cloud direction is shaped by tc tbf
(:mod:`cloudseg.bench.netem`). A bandwidth trace (default 8 -> 2 -> 1 -> 4 Mbit/s, 20 s each)
is replayed by changing the tbf rate live. A probe in the vehicle namespace
(:mod:`cloudseg.bench.adapt_probe`) records every Frame sent, every FrameStats back from the
cloud and every Knob, and publishes the Knobs of the bench's own policies:

* ``full``: scale 1 throughout; ``fixed4``: scale 4 throughout;
* ``resolution``: resolution-only adaptation (AWStream-like): scale 1, 2, 4 or 8 picked from
  the measured goodput and loss, probing a finer scale after a quiet spell
  (:class:`cloudseg.bench.adapt_analysis.ResolutionPolicy`; 8 because scale 4 at CRF 23
  needs ~1.1 Mbit/s, over a 1 Mbit/s link);
* ``gcc``: a GCC-style baseline, pure delay-based rate control over the H.264 bitrate at
  scale 2 (:mod:`cloudseg.bench.adapt_gcc`), as WebRTC would do it;
* ``controller``: the project's adaptive controller node (``cloudseg node controller``).

Without a GPU the cloud runs ``cloud_bilinear`` (decode + bilinear restoration, no
segmentation), which keeps up on a CPU; ``--cloud cloud`` runs SR + segmentation (a GPU).
DDS: UDP only between the namespaces (the cloud side has no shared-memory transport, so nothing
bypasses the veth), multicast discovery, a ROS domain of its own. ``--delay-ms D`` adds a
one-way delay of D ms in each direction (a user-space forwarder in a middle namespace, as netem
is absent from this kernel: :mod:`cloudseg.bench.delay_line`).

Accuracy (``--score-interval``, default one frame a second; 0 = off): after each run the
frames that came back are decoded, restored and segmented offline as a GPU cloud would, and
scored against the full-resolution labels of their original frames
(:mod:`cloudseg.bench.adapt_score`): ``miou`` per step and overall, reference "hr".

Reported per second: link rate, offered kbit/s (Frame bytes sent), goodput (payload bytes of
the frames whose FrameStats came back), knob in force (scale), capture-to-result latency (the
FrameStats' arrival on the vehicle minus the capture stamp) and accuracy estimate (the newest
``accuracy_estimate`` of the FrameStats, from the cloud's profiling frames; null without one).
Also per second: frames lost and the queue delay (the frame's arrival at the cloud minus its
send time, two clocks, relative to the smallest in the run;
:func:`cloudseg.bench.adapt_analysis.queue_delays`). ``--json``: one line per policy with
``steps`` = one summary per trace step; the goals' figures ``offered_over_link_max_1s`` (1-s
windows from 2 s into a step), ``lost_pct``, ``latency_ms_p95``, ``queue_ms_p95``;
``offered_over_link_max`` = the largest offered/link ratio over any 3-s window that starts 3 s
or more after a step starts and ends within that step; ``collapsed`` = no FrameStats arrived
for more than 2 s while the link was up.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cloudseg.bench import cuda_available
from cloudseg.bench.adapt_analysis import (
    POLICIES,
    AdaptError,
    Step,
    analyse,
    compare_to_fixed,
    parse_trace,
)
from cloudseg.fastdds import ros_domain_id
from cloudseg.launcher import parse_node_params
from cloudseg.processes import ManagedProcess, stop_all

PROG = "cloudseg bench adapt"
DEFAULT_SEQUENCE = "/work/shared/data/sequences/aachen_seq0000"
CPU_CLOUD_NOTE = (
    "no GPU: the cloud runs `cloud_bilinear` (decode + bilinear restoration, no segmentation), "
    "which keeps up on a CPU"
)
UDP_PROFILE = """<?xml version="1.0" encoding="UTF-8" ?>
<dds xmlns="http://www.eprosima.com"><profiles>
  <transport_descriptors><transport_descriptor>
    <transport_id>cloudseg_udp</transport_id><type>UDPv4</type>
    <sendBufferSize>4194304</sendBufferSize><receiveBufferSize>8388608</receiveBufferSize>
  </transport_descriptor></transport_descriptors>
  <participant profile_name="cloudseg_wan_udp" is_default_profile="true"><rtps>
    <userTransports><transport_id>cloudseg_udp</transport_id></userTransports>
    <useBuiltinTransports>false</useBuiltinTransports>
  </rtps></participant>
</profiles></dds>
"""


# --- the run -------------------------------------------------------------------------------


def _controller_available() -> bool:
    import importlib.util

    from cloudseg.graph import NODES

    if "controller" not in NODES:
        return False
    try:
        return importlib.util.find_spec(NODES["controller"].module) is not None
    except ImportError:
        return False


def _read_events(path: Path) -> list[dict]:
    events = []
    if path.exists():
        for line in path.read_text().splitlines():
            with contextlib.suppress(json.JSONDecodeError):  # a line cut by the stop
                events.append(json.loads(line))
    return events


def run_policy(
    policy: str,
    steps: list[Step],
    sequence: str,
    cloud: str,
    log_dir: Path,
    rate: float = 17.0,
    quiet: bool = False,
    startup_s: float = 90.0,
    controller_params: dict[str, Any] | None = None,
    delay_ms: float = 0.0,
) -> dict:
    """One run of `policy` over the trace; returns `analyse()`'s result and ``t0`` (the trace
    start, wall clock). `controller_params` override the controller node's parameters (policy
    controller); `delay_ms`: one-way delay each way."""
    from cloudseg.bench.netem import ShapedLink
    from cloudseg.graph import GRAPHS, NODES, config_dir
    from cloudseg.launcher import local_env, node_command

    def say(text: str) -> None:
        if not quiet:
            print(f"[{policy}] {text}", file=sys.stderr, flush=True)

    log_dir.mkdir(parents=True, exist_ok=True)
    udp_profile = log_dir / "fastdds_wan_udp.xml"
    udp_profile.write_text(UDP_PROFILE)
    base = {**os.environ, **local_env(one_host=False)}
    base.pop("ROS_LOCALHOST_ONLY", None)
    base["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "SUBNET"
    # a test's claimed domain when set, else one of its own
    base["ROS_DOMAIN_ID"] = str(ros_domain_id(fallback=200 + os.getpid() % 30))
    # vehicle: shared memory inside its namespace (6 MB camera images) + UDP; cloud: UDP only,
    # so everything between the two crosses the veth
    vehicle_env = {**base, "FASTDDS_DEFAULT_PROFILES_FILE": str(config_dir() / "fastdds_local.xml")}
    cloud_env = {**base, "FASTDDS_DEFAULT_PROFILES_FILE": str(udp_profile)}
    events_file = log_dir / f"events-{policy}.jsonl"
    payloads_file = log_dir / f"payloads-{policy}.bin"
    procs: list[ManagedProcess] = []

    def start(name: str, side: str, cmd: list[str], env: dict[str, str]) -> ManagedProcess:
        log = log_dir / f"{policy}-{name}.log"
        p = ManagedProcess.start(cmd, name=name, env=env, log=log, prefix=link.exec_prefix(side))
        procs.append(p)
        return p

    link = ShapedLink(steps[0].kbps, delay_ms=delay_ms)
    link.open()
    say(f"namespaces {link.vehicle_ns} ({link.vehicle_ip}) and {link.cloud_ns} ({link.cloud_ip})")
    try:
        for node, config in GRAPHS[cloud]:
            over: dict[str, Any] = {"publish_restored": False} if node in ("sr", "cloud") else {}
            start(node, "cloud", node_command(node, config_dir() / config, over), cloud_env)
        probe = [sys.executable, "-m", "cloudseg.bench.adapt_probe", "--policy", policy]
        probe += ["--events", str(events_file), "--payloads", str(payloads_file)]
        start("probe", "vehicle", probe, vehicle_env)
        if policy == "controller":
            ctl = dict(GRAPHS).get("controller", (("controller", None),))[0]
            cfg = config_dir() / ctl[1] if ctl[1] else None
            cmd = node_command("controller", cfg, controller_params)
            start("controller", "vehicle", cmd, vehicle_env)
        vehicle_over = {"scale": POLICIES[policy]}
        for node, config in GRAPHS["vehicle"]:
            cmd = node_command(node, config_dir() / config, vehicle_over)
            start(node, "vehicle", cmd, vehicle_env)
        source = {
            "input": sequence,
            "loop": True,
            "stamp_mode": "now",
            "rate": rate,
            "wait_for_subscribers": 1,
            "wait_timeout": startup_s,
        }
        start("source", "vehicle", node_command("source", None, source), vehicle_env)
        assert "source" in NODES
        deadline = time.monotonic() + startup_s
        while not any(e["e"] == "back" for e in _read_events(events_file)):
            dead = [p.name for p in procs if p.poll() is not None]
            if dead:
                raise AdaptError(
                    f"{dead[0]} ended at start-up; see {log_dir}/{policy}-{dead[0]}.log"
                )
            if time.monotonic() > deadline:
                raise AdaptError(f"no frame came back within {startup_s:.0f} s; logs in {log_dir}")
            time.sleep(0.5)
        time.sleep(3.0)  # let the first frames settle before the trace starts
        say(f"stream up; replaying {len(steps)} steps, {steps[-1].end:.0f} s")
        t0 = time.time()
        for s in steps:
            link.set_rate(s.kbps)
            say(f"t={s.start:5.1f} s link {s.kbps:.0f} kbit/s")
            while time.time() - t0 < s.end:
                time.sleep(0.1)
                dead = [p.name for p in procs if p.poll() is not None]
                if dead:
                    raise AdaptError(f"{dead[0]} died; see {log_dir}/{policy}-{dead[0]}.log")
    finally:
        stop_all(reversed(procs), grace=5)
        link.close()
    return {**analyse(_read_events(events_file), steps, t0, policy), "t0": t0}


def score_policy(
    run: dict,
    policy: str,
    steps: Sequence[Step],
    log_dir: Path,
    sequence: Any,
    segment: Any,
    interval_s: float,
    quiet: bool,
) -> None:
    """Add the offline accuracy (`miou`, reference "hr") to `run`'s result and its steps."""
    from tqdm import tqdm

    from cloudseg.bench.adapt_score import read_payloads, score_events

    events = _read_events(log_dir / f"events-{policy}.jsonl")
    payloads = read_payloads(log_dir / f"payloads-{policy}.bin")
    arrived = {e["seq"] for e in events if e["e"] == "back"}
    total = sum(1 for e in events if e["e"] == "sent" and e["seq"] in arrived)
    with tqdm(total=total, desc=f"score {policy}", unit="frame", disable=quiet) as bar:
        scores = score_events(
            events,
            payloads,
            [(s.start, s.end) for s in steps],
            run["t0"],
            sequence.frames,
            sequence.labels,
            segment,
            interval_s,
            bar,
        )
    result = run["result"]
    result["miou"] = None if scores.miou is None else round(scores.miou, 4)
    result["miou_reference"] = "hr"
    for step, miou, n in zip(result["steps"], scores.steps_miou, scores.steps_scored, strict=True):
        step["miou"] = None if miou is None else round(miou, 4)
        step["scored"] = n


def _print_seconds(policy: str, seconds: list[dict]) -> None:
    print(f"policy {policy}: per second")
    print("    t  link  offered  goodput  sent  back  lost  scale  latency_ms  queue_ms  accuracy")
    for r in seconds:
        lat = "-" if r["latency_ms"] is None else f"{r['latency_ms']:.0f}"
        queue = "-" if r["queue_ms"] is None else f"{r['queue_ms']:.0f}"
        acc = "n/a" if r["accuracy"] is None else f"{r['accuracy']:.3f}"
        print(
            f"{r['t']:5d} {r['link_kbps']:5.0f} {r['offered_kbps']:8.0f} {r['goodput_kbps']:8.0f}"
            f" {r['sent']:5d} {r['arrived']:5d} {r['lost']:5d} {r['scale'] or '-':>6} {lat:>11}"
            f" {queue:>9}  {acc}"
        )


def _print_result(r: dict) -> None:
    print(
        f"policy {r['policy']}: collapsed {r['collapsed']}, offered/link max "
        f"{r['offered_over_link_max']:.2f}, latency p50 {r['latency_ms_p50']} ms, p95 "
        f"{r['latency_ms_p95']} ms, frames lost {r['frames_lost']} ({r['lost_pct']}%), "
        f"offered/link max per 1-s window after 2 s of a step {r['offered_over_link_max_1s']}, "
        f"queue delay p95 {r['queue_ms_p95']} ms, goodput {r['goodput_kbps']} kbit/s"
        + (f", mIoU {r['miou']:.3f} (vs full-resolution labels)" if r.get("miou") else "")
    )
    for s in r["steps"]:
        if "miou" in s:
            miou = "-" if s["miou"] is None else f"{s['miou']:.3f}"
            best = (
                f" (best fixed that fits: {s['best_fixed_policy']} {s['best_fixed_miou']:.3f})"
                if "best_fixed_miou" in s
                else ""
            )
            print(
                f"    step at {s['start_s']:.0f} s, {s['link_kbps']:.0f} kbit/s: mIoU {miou}{best}"
            )


def plot(runs: dict[str, dict], path: Path) -> None:
    """Offered (and goodput) vs link rate over time, one panel per policy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(runs), 1, figsize=(9, 2.4 * len(runs)), sharex=True, squeeze=False)
    for ax, (policy, run) in zip(axes[:, 0], runs.items(), strict=True):
        secs = run["seconds"]
        t = [r["t"] + 0.5 for r in secs]
        ax.step(
            [r["t"] for r in secs],
            [r["link_kbps"] for r in secs],
            where="post",
            color="k",
            label="link",
        )
        ax.plot(t, [r["offered_kbps"] for r in secs], label="offered", color="tab:red")
        ax.plot(t, [r["goodput_kbps"] for r in secs], label="goodput", color="tab:green", ls="--")
        res = run["result"]
        ax.set_title(
            f"{policy}: collapsed {res['collapsed']}, offered/link max "
            f"{res['offered_over_link_max']:.2f}, p50 {res['latency_ms_p50']} ms"
            + (f", mIoU {res['miou']:.3f}" if res.get("miou") else ""),
            fontsize=9,
        )
        ax.set_ylabel("kbit/s")
        ax.legend(fontsize=7, loc="upper right")
    axes[-1, 0].set_xlabel("s")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Stream a real sequence from a vehicle namespace to a cloud namespace over "
        "a tc-shaped veth link that replays a bandwidth trace; per policy: offered vs link "
        "rate, goodput, knob, latency, collapse. Needs root.",
    )
    parser.add_argument("--trace", help="CSV or JSON of (seconds, kbps) steps")
    parser.add_argument(
        "--step-seconds", type=float, default=20.0, help="default trace: seconds per step (20)"
    )
    parser.add_argument(
        "--policy",
        default="controller",
        choices=(*POLICIES, "all"),
        help="controller (default), full, fixed4, resolution, gcc, or all five in turn",
    )
    parser.add_argument("--input", default=DEFAULT_SEQUENCE, help="sequence played on a loop")
    parser.add_argument("--rate", type=float, default=17.0, help="camera rate, Hz (17)")
    parser.add_argument(
        "--cloud",
        choices=("auto", "cloud_bilinear", "cloud"),
        default="auto",
        help="cloud graph (auto: cloud with a GPU, cloud_bilinear without)",
    )
    parser.add_argument(
        "--controller-param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override a controller node parameter (repeatable)",
    )
    parser.add_argument(
        "--delay-ms",
        type=float,
        default=0.0,
        help="one-way delay added in each direction, ms (0; a forwarder in a middle namespace)",
    )
    parser.add_argument(
        "--score-interval",
        type=float,
        default=1.0,
        help="score the labels of one returned frame per this many seconds, offline after the "
        "run (SR + segmentation on the CPU; 0 = no accuracy)",
    )
    parser.add_argument("--plot", type=Path, help="PNG: offered/goodput vs link over time")
    parser.add_argument("--records", type=Path, help="write the per-second records (JSON)")
    parser.add_argument("--log-dir", type=Path, help="node logs and events (default: a temp dir)")
    parser.add_argument("--json", action="store_true", help="one JSON line per policy")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from cloudseg.bench.netem import NetemError, check_privileges

    reason = check_privileges()
    if reason:
        print(f"{PROG}: {reason}", file=sys.stderr)
        return 1
    try:
        steps = parse_trace(args.trace, args.step_seconds)
        if not Path(args.input).exists():
            raise AdaptError(f"--input {args.input} does not exist")
        policies = list(POLICIES) if args.policy == "all" else [args.policy]
        if not _controller_available() and "controller" in policies:
            if args.policy == "controller":
                raise AdaptError("controller not available yet (no `controller` node in the graph)")
            print(f"{PROG}: controller not available yet; skipping it", file=sys.stderr)
            policies.remove("controller")
        cloud = args.cloud
        if cloud == "auto":
            cloud = "cloud" if cuda_available() else "cloud_bilinear"
        if cloud == "cloud_bilinear":
            print(f"{PROG}: {CPU_CLOUD_NOTE}", file=sys.stderr)
        if args.delay_ms < 0 or args.score_interval < 0:
            raise AdaptError("--delay-ms and --score-interval must be >= 0")
        ctl_params = parse_node_params(
            "controller", args.controller_param, "--controller-param", AdaptError
        )
        log_dir = args.log_dir or Path(tempfile.mkdtemp(prefix="cloudseg-adapt-"))
        scoring = None
        if args.score_interval > 0:
            from cloudseg.control.profile_run import pipeline_segment
            from cloudseg.selection.reference import load_labelled_sequence

            sequence = load_labelled_sequence(args.input, device="cpu", progress=not args.json)
            scoring = (sequence, pipeline_segment())
        runs = {}
        for policy in policies:
            run = run_policy(
                policy,
                steps,
                args.input,
                cloud,
                log_dir,
                rate=args.rate,
                quiet=args.json,
                controller_params=ctl_params,
                delay_ms=args.delay_ms,
            )
            if scoring is not None:
                score_policy(run, policy, steps, log_dir, *scoring, args.score_interval, args.json)
            runs[policy] = run
        compare_to_fixed(runs)
        for policy, run in runs.items():
            if args.json:
                print(json.dumps(run["result"]), flush=True)
            else:
                _print_seconds(policy, run["seconds"])
                _print_result(run["result"])
        if args.records:
            args.records.write_text(json.dumps({p: r["seconds"] for p, r in runs.items()}))
        if args.plot:
            plot(runs, args.plot)
    except (AdaptError, NetemError) as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; namespaces removed", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
