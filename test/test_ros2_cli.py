"""The `ros2` command a ROS user opens against a running graph: `ros2 node list`, `ros2 topic
hz` / `echo`, `ros2 param set` / `get` and `ros2 interface show`, run as commands.

The graph is the cheapest real one: the vehicle (frame_selector, compressor, camera_labels in one
process) and a source looping the Udacity clip at 5 Hz, started as `cloudseg run` starts nodes.
The `ros2` commands get the graph's environment (its ROS_DOMAIN_ID, localhost discovery and
Fast DDS profile, as a user's shell gets them from `cloudseg run`) and run without the daemon
(nothing is left behind). Needs the ros2cli wheels scripts/setup.sh installs from
../shared/wheels (or a ROS install); skipped, saying so, without them.
"""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloudseg.fastdds import one_host_env
from cloudseg.graph import FRAMES_TOPIC, GRAPHS, IMAGE_TOPIC, config_dir, resolve
from cloudseg.launcher import NodeProcesses
from support import claim_ros_domain, release_ros_domain, ros2_command

pytestmark = pytest.mark.dds

RATE_HZ = 5.0
VERBS = ("ros2node", "ros2topic", "ros2param", "ros2interface")


def _cli_env(domain: int) -> dict[str, str]:
    """The graph's environment: its domain, DDS on this host with the one-host profile, and
    the venv in AMENT_PREFIX_PATH (where cloudseg's messages register)."""
    prefixes = [*filter(None, os.environ.get("AMENT_PREFIX_PATH", "").split(":")), sys.prefix]
    return {
        **os.environ,
        **one_host_env(),
        "ROS_DOMAIN_ID": str(domain),
        "AMENT_PREFIX_PATH": ":".join(dict.fromkeys(prefixes)),
        "PYTHONUNBUFFERED": "1",
    }


def ros2(env: dict[str, str], *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
    """`ros2 ARGS...`, its output as text (stderr folded into stdout)."""
    return subprocess.run(
        [ros2_command(), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        check=False,
    )


class Graph:
    """The running vehicle graph, its environment and its node logs."""

    def __init__(self, procs: NodeProcesses, env: dict[str, str], log_dir: Path) -> None:
        self.procs, self.env, self.log_dir = procs, env, log_dir

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.log_dir.glob("*.log")))


@pytest.fixture(scope="module")
def graph(tmp_path_factory, shared_data) -> Iterator[Graph]:
    missing = [m for m in VERBS if importlib.util.find_spec(m) is None]
    if missing or ros2_command() is None:
        pytest.skip(
            f"the ros2 command tools are not installed ({', '.join(missing) or 'ros2'} "
            "missing): scripts/setup.sh installs them from ../shared/wheels"
        )
    domain = claim_ros_domain()
    env = _cli_env(domain)
    log_dir = tmp_path_factory.mktemp("ros2_cli_graph")
    procs = NodeProcesses(env=env, log_dir=log_dir)
    try:
        procs.start_graph("vehicle")
        source_config = config_dir() / dict(GRAPHS["pipeline"])["source"]
        clip = shared_data / "video" / "solidWhiteRight.mp4"
        procs.start("source", source_config, {"input": str(clip), "loop": True, "rate": RATE_HZ})
        yield Graph(procs, env, log_dir)
    finally:
        procs.stop_all()
        release_ros_domain(domain)


def _until(graph: Graph, check, timeout: float = 40.0) -> subprocess.CompletedProcess:
    """Run `check()` (a ros2 command) until it passes its own test, while the graph runs."""
    deadline = time.monotonic() + timeout
    while True:
        gone = graph.procs.exited()
        assert not gone, f"the graph ended: {gone}\n{graph.logs()}"
        result, ok = check()
        if ok or time.monotonic() > deadline:
            return result
        time.sleep(0.5)


def test_node_list_shows_the_graph(graph):
    expected = {"/source", "/frame_selector", "/compressor", "/camera_labels"}

    def check():
        result = ros2(graph.env, "node", "list", "--no-daemon", "--spin-time", "2")
        return result, expected <= set(result.stdout.split())

    result = _until(graph, check)
    assert expected <= set(result.stdout.split()), result.stdout + graph.logs()


def test_topic_hz_and_echo_see_the_messages(graph):
    """`ros2 topic hz` measures the source's rate on camera/image_raw; `ros2 topic echo --once`
    decodes a cloudseg/msg/Frame (the CLI finds the project's message type)."""
    hz = subprocess.Popen(
        [ros2_command(), "topic", "hz", "--window", "10", resolve(IMAGE_TOPIC)],
        env=graph.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    time.sleep(8.0)
    hz.send_signal(signal.SIGINT)
    out, _ = hz.communicate(timeout=20)
    rates = [float(r) for r in re.findall(r"average rate: ([\d.]+)", out)]
    assert rates, out + graph.logs()
    assert RATE_HZ * 0.6 < rates[-1] < RATE_HZ * 1.4, out

    def check():
        result = ros2(
            graph.env, "topic", "echo", "--once", "--no-arr", "--no-daemon", resolve(FRAMES_TOPIC),
            "cloudseg/msg/Frame", timeout=40,
        )  # fmt: skip
        return result, result.returncode == 0

    result = _until(graph, check)
    assert result.returncode == 0, result.stdout
    assert "codec: h264" in result.stdout and "width: 960" in result.stdout, result.stdout
    assert "data: '<sequence type: uint8, length:" in result.stdout, result.stdout


def test_param_set_changes_a_running_node(graph):
    """`ros2 param set /compressor crf 28`: applied (the node says so), `ros2 param get` reads
    it back; a value out of the graph's range is refused with the reason."""

    def check():
        result = ros2(graph.env, "param", "set", "--no-daemon", "/compressor", "crf", "28")
        return result, "Set parameter successful" in result.stdout

    result = _until(graph, check)
    assert "Set parameter successful" in result.stdout, result.stdout + graph.logs()
    got = ros2(graph.env, "param", "get", "--no-daemon", "/compressor", "crf")
    assert "Integer value is: 28" in got.stdout, got.stdout
    refused = ros2(graph.env, "param", "set", "--no-daemon", "/compressor", "crf", "99")
    assert "Setting parameter failed" in refused.stdout, refused.stdout
    got = ros2(graph.env, "param", "get", "--no-daemon", "/compressor", "crf")
    assert "Integer value is: 28" in got.stdout, got.stdout  # the refused value changed nothing
    deadline = time.monotonic() + 10
    while "crf=28" not in graph.logs() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "crf=28" in graph.logs()  # the compressor took it


def test_interface_show_prints_the_frame_fields(graph):
    result = ros2(graph.env, "interface", "show", "cloudseg/msg/Frame")
    assert result.returncode == 0, result.stdout
    for field in ("std_msgs/Header header", "uint64 seq", "string codec", "uint8[] data"):
        assert field in result.stdout, field
