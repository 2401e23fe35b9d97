"""Start a vehicle/cloud pair over the TCP profiles many times and count the starts whose
discovery never matched (issue 19): ``python -m cloudseg.bench.tcp_discovery --starts 25``.

Each start: a cloud stand-in (the TCP cloud profile, one listening port, a subscriber on the
frames topic) and, once its port accepts connections (as ``cloudseg run vehicle --dds tcp``
waits), the vehicle side with the TCP vehicle profile:

* ``--side vehicle_node`` (default): the real vehicle process (`cloudseg.nodes.vehicle_node`)
  with its link watch (`cloudseg.link_health`): a miss is reported in one line and recovered by
  a new participant. A start counts as matched first time, recovered (a "down" line, then the
  cloud's subscriber matched), or missed.
* ``--side plain``: a bare rclpy participant with a frames publisher (no watch): the miss rate
  of Fast DDS itself.

Per start it prints the seconds from the vehicle's start to the cloud's match and, for a miss,
the TCP sockets of the pair (`ss`): the stalled connections carry 68 bytes each way (the bind
request and response) and nothing more.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from cloudseg.bench.tls_link import base_env
from cloudseg.fastdds import dds_env, wait_for_tcp_peer
from cloudseg.processes import ManagedProcess

#: The cloud stand-in: the frames subscriber; prints MATCHED <s since start> once it has a
#: publisher, then runs until killed.
CLOUD_SCRIPT = """
import sys, time
import rclpy
from cloudseg.graph import FRAMES_TOPIC
from cloudseg.msg import Frame
from cloudseg.nodes.common import qos_for
rclpy.init(args=[])
node = rclpy.create_node("cloud_stand_in")
sub = node.create_subscription(Frame, FRAMES_TOPIC, lambda m: None, qos_for(FRAMES_TOPIC))
print("UP", flush=True)
said = False
while rclpy.ok():
    rclpy.spin_once(node, timeout_sec=0.05)
    if not said and sub.get_publisher_count():
        print(f"MATCHED {time.time():.3f}", flush=True)
        said = True
"""

#: The plain vehicle side: a frames publisher, nothing else.
PLAIN_SCRIPT = """
import rclpy
from cloudseg.graph import FRAMES_TOPIC
from cloudseg.msg import Frame
from cloudseg.nodes.common import qos_for
rclpy.init(args=[])
node = rclpy.create_node("plain_vehicle")
node.create_publisher(Frame, FRAMES_TOPIC, qos_for(FRAMES_TOPIC))
rclpy.spin(node)
"""

DOWN, BACK = "link to the cloud down", "link to the cloud back"


@dataclass
class Start:
    index: int
    matched_s: float | None  # vehicle start -> the cloud's subscriber matched
    down_lines: int  # "link ... down" lines the vehicle wrote
    back_lines: int
    outcome: str  # "matched", "recovered" or "missed"
    recovered_s: float | None = None  # the "down" line -> the cloud's subscriber matched
    recreations: int = 0  # new participants it took (the "back" line says)
    sockets: str = ""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sockets(port: int) -> str:
    if shutil.which("ss") is None:
        return ""
    cmd = ["ss", "-tanpi", f"( sport = :{port} or dport = :{port} )"]
    return subprocess.run(cmd, capture_output=True, text=True, check=False).stdout


def one_start(
    index: int, work: Path, side: str, wait_s: float, domain: int, link_timeout: float
) -> Start:
    """One vehicle/cloud pair on a fresh port; stopped after a match or ``wait_s``."""
    port, env = _free_port(), base_env(domain)
    cloud_env = {**env, **dds_env("tcp", "cloud", listen=port)}
    vehicle_env = {**env, **dds_env("tcp", "vehicle", peer=f"127.0.0.1:{port}")}
    logs = {name: work / f"{index}_{name}.log" for name in ("cloud", "vehicle")}
    cloud = ManagedProcess.start(
        [sys.executable, "-c", CLOUD_SCRIPT], env=cloud_env, log=logs["cloud"]
    )
    vehicle = None
    try:
        if not wait_for_tcp_peer("127.0.0.1", port, timeout=20.0):
            raise RuntimeError(f"the cloud stand-in never listened:\n{logs['cloud'].read_text()}")
        if side == "plain":
            cmd = [sys.executable, "-c", PLAIN_SCRIPT]
        else:
            cmd = [sys.executable, "-m", "cloudseg.nodes.vehicle_node", "--ros-args"]
            cmd += ["-p", f"link_timeout:={link_timeout}"]
        t0 = time.time()
        vehicle = ManagedProcess.start(cmd, env=vehicle_env, log=logs["vehicle"])
        deadline, sockets = time.monotonic() + wait_s, ""
        while time.monotonic() < deadline and "MATCHED" not in logs["cloud"].read_text():
            time.sleep(0.2)
        text = logs["cloud"].read_text()
        matched_at = next(
            (float(line.split()[1]) for line in text.splitlines() if line.startswith("MATCHED")),
            None,
        )
        if matched_at is None:
            sockets = _sockets(port)
            if side != "plain" and vehicle.alive():  # where it is: run_nodes dumps the stacks
                vehicle.send_signal(signal.SIGUSR1)
                time.sleep(1.0)
        # the vehicle's "back" line follows the match at its next 1-s check (after a new
        # participant, once the process that replaced it is up)
        until = time.monotonic() + (20.0 if DOWN in logs["vehicle"].read_text() else 0.5)
        while time.monotonic() < until and matched_at is not None:
            vlog = logs["vehicle"].read_text()
            if DOWN not in vlog or BACK in vlog:
                break
            time.sleep(0.2)
    finally:
        for proc in (vehicle, cloud):
            if proc is not None:
                proc.stop(grace=3)
    vlog = logs["vehicle"].read_text()
    down, back = vlog.count(DOWN), vlog.count(BACK)
    matched = None if matched_at is None else matched_at - t0
    outcome = "missed" if matched is None else ("recovered" if down else "matched")
    recovered = None
    if down and matched_at is not None:  # ROS log lines: [LEVEL] [<unix time>] [node]: text
        line = next(line for line in vlog.splitlines() if DOWN in line)
        recovered = matched_at - float(line.split("] [")[1])
    counts = re.findall(r"(\d+) participant re-creation", vlog)
    recreations = int(counts[-1]) if counts else 0
    return Start(index, matched, down, back, outcome, recovered, recreations, sockets)


def run(
    starts: int,
    side: str = "vehicle_node",
    wait_s: float = 30.0,
    domain: int = 190,
    link_timeout: float = 10.0,
    work: Path | None = None,
    echo: bool = True,
) -> list[Start]:
    """``starts`` pairs in a row; the result of each."""
    work = work or Path(tempfile.mkdtemp(prefix="cloudseg_tcp_discovery_"))
    results = []
    for i in range(starts):
        result = one_start(i, work, side, wait_s, domain, link_timeout)
        results.append(result)
        if echo:
            when = "-" if result.matched_s is None else f"{result.matched_s:.1f} s"
            if result.recovered_s is not None:
                when += f", {result.recovered_s:.1f} s after the down line"
            print(
                f"start {i}: {result.outcome} ({when}; down lines {result.down_lines}, "
                f"back lines {result.back_lines})",
                flush=True,
            )
            if result.sockets:
                print(result.sockets, flush=True)
    return results


def summary(results: list[Start]) -> dict[str, int]:
    counts = {"starts": len(results), "matched": 0, "recovered": 0, "missed": 0}
    for r in results:
        counts[r.outcome] += 1
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cloudseg.bench.tcp_discovery")
    parser.add_argument("--starts", type=int, default=25)
    parser.add_argument("--side", choices=("vehicle_node", "plain"), default="vehicle_node")
    parser.add_argument("--wait", type=float, default=30.0, help="seconds to wait for a match")
    parser.add_argument("--domain", type=int, default=190, help="ROS domain id")
    parser.add_argument("--link-timeout", type=float, default=10.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    results = run(args.starts, args.side, args.wait, args.domain, args.link_timeout)
    counts = summary(results)
    print(" ".join(f"{k}={v}" for k, v in counts.items()))
    if args.json:
        print(json.dumps({"summary": counts, "starts": [asdict(r) for r in results]}))
    return 0 if counts["missed"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
