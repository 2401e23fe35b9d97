"""Fast DDS profiles for vehicle and cloud on different hosts (issue 8): the XML files, the
`--dds` environment, and real processes talking over TCP / through a discovery server on
localhost."""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from cloudseg.bench.tls_link import base_env
from cloudseg.cli import build_parser
from cloudseg.fastdds import (
    DISCOVERY_DDS_PROFILE,
    TCP_DDS_PROFILES,
    dds_env,
    parse_host_port,
    wait_for_tcp_peer,
)
from cloudseg.graph import FRAMES_TOPIC, config_dir
from cloudseg.launcher import local_env
from cloudseg.processes import ManagedProcess
from support import wait_until

pytestmark = pytest.mark.dds

NS = {"d": "http://www.eprosima.com"}
FRAME_BYTES = 200_000  # the largest frames the vehicle sends
LABELS_TOPIC = "/cloudseg/test_back"  # the other direction (labels come back to the vehicle)


def _profile(name: str) -> ET.Element:
    return ET.parse(config_dir() / name).getroot()


def _transport_types(root: ET.Element) -> set[str]:
    return {t.text for t in root.iterfind(".//d:transport_descriptor/d:type", NS)}


def test_tcp_cloud_profile_listens_on_tcp_only():
    root = _profile(TCP_DDS_PROFILES["cloud"])
    assert _transport_types(root) == {"TCPv4"}
    assert root.findtext(".//d:listening_ports/d:port", namespaces=NS) == "${CLOUDSEG_DDS_PORT}"
    assert root.findtext(".//d:useBuiltinTransports", namespaces=NS) == "false"
    assert root.find(".//d:participant[@is_default_profile='true']", NS) is not None


def test_tcp_vehicle_profile_connects_to_the_cloud():
    root = _profile(TCP_DDS_PROFILES["vehicle"])
    assert "TCPv4" in _transport_types(root)
    assert root.find(".//d:listening_ports", NS) is None  # works from behind NAT
    peer = root.find(".//d:initialPeersList/d:locator/d:tcpv4", NS)
    assert peer is not None
    assert peer.findtext("d:address", namespaces=NS) == "${CLOUDSEG_DDS_PEER_ADDRESS}"
    assert peer.findtext("d:physical_port", namespaces=NS) == "${CLOUDSEG_DDS_PEER_PORT}"
    assert root.findtext(".//d:useBuiltinTransports", namespaces=NS) == "false"


def test_discovery_client_profile_names_the_server():
    root = _profile(DISCOVERY_DDS_PROFILE)
    assert root.findtext(".//d:discoveryProtocol", namespaces=NS) == "CLIENT"
    server = root.find(".//d:discoveryServersList/d:locator/d:udpv4", NS)
    assert server is not None
    assert server.findtext("d:address", namespaces=NS) == "${CLOUDSEG_DDS_SERVER_ADDRESS}"
    assert server.findtext("d:port", namespaces=NS) == "${CLOUDSEG_DDS_SERVER_PORT}"


def test_dds_env_sets_the_profile_and_its_variables():
    cloud = dds_env("tcp", "cloud", listen=7500)
    assert cloud["FASTDDS_DEFAULT_PROFILES_FILE"] == str(config_dir() / TCP_DDS_PROFILES["cloud"])
    assert cloud["CLOUDSEG_DDS_PORT"] == "7500"
    natted = Path(dds_env("tcp", "cloud", public_ip="203.0.113.7")["FASTDDS_DEFAULT_PROFILES_FILE"])
    assert ET.parse(natted).getroot().findtext(".//d:wan_addr", namespaces=NS) == "203.0.113.7"
    with pytest.raises(ValueError):
        dds_env("tcp", "cloud", public_ip="not-an-ip")
    vehicle = dds_env("tcp", "vehicle", peer="localhost:7500")
    assert (vehicle["CLOUDSEG_DDS_PEER_ADDRESS"], vehicle["CLOUDSEG_DDS_PEER_PORT"]) == (
        "127.0.0.1",
        "7500",
    )
    client = dds_env("discovery", "cloud", server="127.0.0.1")
    assert client["CLOUDSEG_DDS_SERVER_PORT"] == "11811"
    assert client["FASTDDS_DEFAULT_PROFILES_FILE"].endswith(DISCOVERY_DDS_PROFILE)
    for env in (cloud, vehicle, client):
        assert Path(env["FASTDDS_DEFAULT_PROFILES_FILE"]).is_file()
    with pytest.raises(ValueError, match="--peer"):
        dds_env("tcp", "vehicle")
    with pytest.raises(ValueError, match="--server"):
        dds_env("discovery", "vehicle")
    with pytest.raises(ValueError):
        parse_host_port("127.0.0.1:70000", 1)
    # one host keeps the shared-memory profile
    assert local_env()["FASTDDS_DEFAULT_PROFILES_FILE"].endswith("fastdds_local.xml")


def test_run_parses_the_dds_flags():
    args = build_parser().parse_args(
        ["run", "vehicle", "--dds", "tcp", "--peer", "198.51.100.2:7410"]
    )
    assert (args.dds, args.peer) == ("tcp", "198.51.100.2:7410")
    args = build_parser().parse_args(["run", "cloud", "--dds", "tcp", "--listen", "7410"])
    assert (args.dds, args.listen) == ("tcp", 7410)
    args = build_parser().parse_args(["run", "cloud", "--dds", "discovery", "--server", "h:1"])
    assert (args.dds, args.server) == ("discovery", "h:1")
    assert build_parser().parse_args(["run", "vehicle"]).dds == "local"


# --- real processes ------------------------------------------------------------------------

# One side: publishes FRAME_BYTES-sized Frames on `pub_topic`, counts those arriving on
# `sub_topic` (the graph's frame QoS: best effort, small depth), prints the count and the time
# of the first one. Runs until `seconds` have passed or `want` messages have arrived.
SIDE_SCRIPT = f"""
import sys, time
import rclpy
from cloudseg.msg import Frame
from cloudseg.nodes.common import qos_for
from cloudseg.graph import FRAMES_TOPIC

pub_topic, sub_topic, seconds, want = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
rclpy.init(args=[])
node = rclpy.create_node("dds_profile_side")
qos = qos_for(FRAMES_TOPIC)
got = []
t0 = time.monotonic()
on_frame = lambda m: got.append((len(m.data), time.monotonic()))
node.create_subscription(Frame, sub_topic, on_frame, qos)
pub = node.create_publisher(Frame, pub_topic, qos) if pub_topic != "-" else None
msg = Frame(codec="jpeg", data=(bytes(range(256)) * {FRAME_BYTES // 256 + 1})[:{FRAME_BYTES}])
next_pub = 0.0
while time.monotonic() - t0 < seconds and len(got) < want:
    now = time.monotonic()
    if pub is not None and now >= next_pub:
        msg.seq += 1
        pub.publish(msg)
        next_pub = now + 0.05
    rclpy.spin_once(node, timeout_sec=0.01)
# keep publishing briefly so that the other side reaches its count too
t1 = time.monotonic()
while pub is not None and time.monotonic() - t1 < 2.0:
    msg.seq += 1
    pub.publish(msg)
    time.sleep(0.05)
sizes = sorted({{s for s, _ in got}})
first = round(got[0][1] - t0, 2) if got else None
print(f"RESULT received={{len(got)}} sizes={{sizes}} first_s={{first}}", flush=True)
"""

WANT = 5
SECONDS = 15.0  # TCP matched in 1-7 s here, through a discovery server in ~1 s
TCP_ATTEMPTS = 2


def _free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _side(
    script: Path, env: dict[str, str], pub: str, sub: str, log: Path, seconds: float = SECONDS
) -> ManagedProcess:
    cmd = [sys.executable, str(script), pub, sub, str(seconds), str(WANT)]
    return ManagedProcess.start(cmd, env=env, log=log)


def _result(proc: ManagedProcess, log: Path) -> tuple[int, str]:
    if proc.wait_exit(SECONDS + 10) is None:
        proc.stop(grace=0, sig=None)
    text = log.read_text()
    for line in text.splitlines():
        if line.startswith("RESULT received="):
            return int(line.split()[1].split("=")[1]), text
    return -1, text


def _exchange(
    tmp_path: Path,
    vehicle_env: dict[str, str],
    cloud_env: dict[str, str],
    listen_port: int | None = None,
) -> dict:
    """Vehicle publishes frames and receives on the back topic; the cloud does the opposite.
    Returns (messages received, log) per side."""
    script = tmp_path / "side.py"
    script.write_text(SIDE_SCRIPT)
    logs = {name: tmp_path / f"{name}.log" for name in ("cloud", "vehicle")}
    procs = {"cloud": _side(script, cloud_env, LABELS_TOPIC, FRAMES_TOPIC, logs["cloud"])}
    if listen_port is not None:  # as `cloudseg run vehicle --dds tcp` does
        assert wait_for_tcp_peer("127.0.0.1", listen_port, timeout=15.0), "the cloud never listened"
    procs["vehicle"] = _side(script, vehicle_env, FRAMES_TOPIC, LABELS_TOPIC, logs["vehicle"])
    return {name: _result(proc, logs[name]) for name, proc in procs.items()}


def test_vehicle_and_cloud_exchange_frames_over_tcp(tmp_path, fresh_ros_domain):
    env = base_env(fresh_ros_domain)
    # control: a participant with the default transports (UDP/SHM) does not see the cloud
    script = tmp_path / "side.py"
    script.write_text(SIDE_SCRIPT)
    control_log = tmp_path / "control.log"
    control = _side(script, env, "-", LABELS_TOPIC, control_log, seconds=12.0)
    # Fast DDS 3.2's TCP discovery now and then never matches a pair (about 1 start in 10 on
    # this host, with no error logged; docs/deployment.md): a second, fresh pair of processes is
    # allowed.
    for attempt in range(TCP_ATTEMPTS):
        port = _free_port()
        cloud_env = {**env, **dds_env("tcp", "cloud", listen=port)}
        vehicle_env = {**env, **dds_env("tcp", "vehicle", peer=f"127.0.0.1:{port}")}
        run_dir = tmp_path / f"attempt{attempt}"
        run_dir.mkdir()
        results = _exchange(run_dir, vehicle_env, cloud_env, listen_port=port)
        if all(received > 0 for received, _ in results.values()):
            break
    for name, (received, log) in results.items():
        assert received >= WANT, f"{name} received {received} frames over TCP:\n{log}"
        assert f"sizes=[{FRAME_BYTES}]" in log
    received, log = _result(control, control_log)
    assert received == 0, f"a default participant saw the TCP-only cloud:\n{log}"


def test_vehicle_and_cloud_exchange_frames_through_a_discovery_server(tmp_path, fresh_ros_domain):
    bin_dir = Path(sys.executable).parent
    fastdds = shutil.which("fastdds", path=str(bin_dir)) or shutil.which("fastdds")
    if fastdds is None:
        pytest.skip("the `fastdds` CLI (discovery server) is not installed")
    if importlib.util.find_spec("psutil") is None:
        pytest.skip("the `fastdds` CLI needs psutil, which is not installed")
    port = _free_port(socket.SOCK_DGRAM)
    env = base_env(fresh_ros_domain)
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    server = ManagedProcess.start(
        [fastdds, "discovery", "-i", "0", "-l", "127.0.0.1", "-p", str(port)],
        env=env,
        log=tmp_path / "server.log",
        own_group=True,  # the CLI starts the server binary as a child
    )
    try:
        wait_until(lambda: "Server started" in server.log_text() or not server.alive(), 10)
        assert "Server started" in server.log_text(), (
            f"discovery server did not start:\n{server.log_text()}"
        )
        client = dds_env("discovery", "cloud", server=f"127.0.0.1:{port}")
        results = _exchange(tmp_path, {**env, **client}, {**env, **client})
    finally:
        server.stop(grace=5, group=True)
    for name, (received, log) in results.items():
        assert received >= WANT, f"{name} received {received} frames via the server:\n{log}"
        assert f"sizes=[{FRAME_BYTES}]" in log
