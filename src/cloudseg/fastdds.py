"""Fast DDS profiles and the environment that selects them: one host, TCP, discovery server,
behind the mutual-TLS gates."""

from __future__ import annotations

import ipaddress
import os
import socket
import tempfile
import time
from pathlib import Path

from cloudseg.graph import config_dir

LOCAL_DDS_PROFILE = "fastdds_local.xml"


def one_host_env() -> dict[str, str]:
    """DDS on this host only, with the large-message Fast DDS profile (a graph whose vehicle
    and cloud share the host: `cloudseg run pipeline`, the demo, pipeline.launch.py)."""
    return {
        "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
        "FASTDDS_DEFAULT_PROFILES_FILE": str(config_dir() / LOCAL_DDS_PROFILE),
    }


def ros_domain_id(fallback: int | None = None) -> int:
    """ROS_DOMAIN_ID from the environment when it is set (a test's claimed domain, the user's
    choice), else `fallback`, by default a bench's own pick by process id (150..229: above
    the domains the test sessions claim)."""
    value = os.environ.get("ROS_DOMAIN_ID", "").strip()
    if value:
        return int(value)
    return fallback if fallback is not None else 150 + os.getpid() % 80


#: `--dds` choices: the Fast DDS profile of each side when vehicle and cloud are on different hosts.
DDS_MODES = ("local", "tcp", "discovery", "tls")
TCP_DDS_PROFILES = {"vehicle": "fastdds_tcp_vehicle.xml", "cloud": "fastdds_tcp_cloud.xml"}
#: behind the mutual-TLS gates (cloudseg.security.tls_gate): Fast DDS talks TCP to 127.0.0.1 only
TLS_DDS_PROFILES = {"vehicle": "fastdds_tls_vehicle.xml", "cloud": "fastdds_tls_cloud.xml"}
#: where each vehicle's gate listens, announced by the cloud (fastdds_tls_cloud.xml)
TLS_ANNOUNCE_ADDRESS = "127.0.0.1"
DISCOVERY_DDS_PROFILE = "fastdds_discovery_client.xml"
DEFAULT_DDS_PORT = 7410
DEFAULT_DISCOVERY_PORT = 11811


def parse_host_port(text: str, default_port: int) -> tuple[str, int]:
    """`HOST:PORT`, `HOST` or `:PORT` as (host, port); a name is resolved to its IPv4 address
    (Fast DDS locators in the profiles take addresses)."""
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = text, ""
    port_n = int(port) if port else default_port
    if not 0 < port_n < 65536:
        raise ValueError(f"port out of range in {text!r}")
    if not host:
        raise ValueError(f"no host in {text!r}")
    return socket.gethostbyname(host), port_n


def cloud_profile_with_wan_addr(public_ip: str, out_dir: Path | None = None) -> Path:
    """A copy of the TCP cloud profile announcing `public_ip` (`<wan_addr>`) for a cloud behind
    NAT; written to `out_dir` (default: a new temporary folder)."""
    ip = str(ipaddress.IPv4Address(public_ip))  # the XML takes a literal IPv4 address
    text = (config_dir() / TCP_DDS_PROFILES["cloud"]).read_text()
    anchor = "</listening_ports>"
    if text.count(anchor) != 1:
        raise ValueError(f"{TCP_DDS_PROFILES['cloud']}: expected one {anchor}")
    text = text.replace(anchor, f"{anchor}\n        <wan_addr>{ip}</wan_addr>")
    out = Path(out_dir or tempfile.mkdtemp(prefix="cloudseg_dds_")) / TCP_DDS_PROFILES["cloud"]
    out.write_text(text)
    return out


#: the TCP vehicle profile's cloud address (set by `dds_env`; read by the profile XML, the
#: launcher's wait for the cloud and the vehicle's link watch)
PEER_ADDRESS_ENV = "CLOUDSEG_DDS_PEER_ADDRESS"
PEER_PORT_ENV = "CLOUDSEG_DDS_PEER_PORT"


def dds_env(
    mode: str,
    side: str,
    peer: str | None = None,
    listen: int | None = None,
    public_ip: str | None = None,
    server: str | None = None,
) -> dict[str, str]:
    """Environment selecting the Fast DDS profile of one side ("vehicle" or "cloud") for vehicle
    and cloud on different hosts, with the variables the profile reads.

    - "tcp": the cloud listens on TCP port `listen` (announcing `public_ip` when it is behind
      NAT, through a written copy of the profile), the vehicle connects to `peer` (HOST:PORT);
      only that one port must be reachable.
    - "discovery": both sides are clients of the discovery server `server` (HOST:PORT, started
      with `fastdds discovery -i 0 -l ADDR -p PORT`); data then flows directly over UDP.
    - "tls": behind the mutual-TLS gates (`python -m cloudseg.security.tls_gate`, started
      separately; docs/deployment.md#encrypted-authenticated-wan-link): the cloud's Fast DDS
      listens on 127.0.0.1:`listen` only, the vehicle's connects to its own gate at `peer` (default
      127.0.0.1:7410; `:PORT` for 127.0.0.1:PORT; a loopback address whose port is the cloud's
      `listen` port). The cloud's address is the vehicle gate's `--to`, not a Fast DDS setting.
    """
    if side not in TCP_DDS_PROFILES:
        raise ValueError(f"side must be vehicle or cloud, not {side!r}")
    if mode == "tcp":
        env = {"FASTDDS_DEFAULT_PROFILES_FILE": str(config_dir() / TCP_DDS_PROFILES[side])}
        if side == "cloud":
            env["CLOUDSEG_DDS_PORT"] = str(listen or DEFAULT_DDS_PORT)
            if public_ip:
                env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(cloud_profile_with_wan_addr(public_ip))
        else:
            if not peer:
                raise ValueError("--dds tcp on the vehicle needs --peer HOST:PORT (the cloud)")
            host, port = parse_host_port(peer, DEFAULT_DDS_PORT)
            env[PEER_ADDRESS_ENV] = host
            env[PEER_PORT_ENV] = str(port)
    elif mode == "tls":
        env = {"FASTDDS_DEFAULT_PROFILES_FILE": str(config_dir() / TLS_DDS_PROFILES[side])}
        if public_ip:
            raise ValueError(
                "--public-ip is for --dds tcp: with tls the vehicle's gate names the cloud (--to)"
            )
        if side == "cloud":
            env["CLOUDSEG_DDS_PORT"] = str(listen or DEFAULT_DDS_PORT)
            env["CLOUDSEG_DDS_ANNOUNCE_ADDRESS"] = TLS_ANNOUNCE_ADDRESS
        else:
            local = peer or ""
            if local.startswith(":") or not local:  # `:PORT`: the gate on 127.0.0.1
                local = TLS_ANNOUNCE_ADDRESS + local
            host, port = parse_host_port(local, DEFAULT_DDS_PORT)
            if not ipaddress.IPv4Address(host).is_loopback:
                raise ValueError(
                    f"--dds tls: --peer is the vehicle's own TLS gate (127.0.0.1:PORT), not "
                    f"{peer}; the cloud's address goes to the gate (tls_gate client --to)"
                )
            env[PEER_ADDRESS_ENV] = host
            env[PEER_PORT_ENV] = str(port)
    elif mode == "discovery":
        if not server:
            raise ValueError("--dds discovery needs --server HOST:PORT (the discovery server)")
        host, port = parse_host_port(server, DEFAULT_DISCOVERY_PORT)
        env = {
            "FASTDDS_DEFAULT_PROFILES_FILE": str(config_dir() / DISCOVERY_DDS_PROFILE),
            "CLOUDSEG_DDS_SERVER_ADDRESS": host,
            "CLOUDSEG_DDS_SERVER_PORT": str(port),
        }
    else:
        raise ValueError(f"unknown DDS mode {mode!r} (one of {', '.join(DDS_MODES[1:])})")
    # A range from the environment would fight the profile's own discovery settings (and so
    # would ROS_DISCOVERY_SERVER: run_graph drops it; an empty value is an error to Fast DDS).
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "SYSTEM_DEFAULT"
    return env


def wait_for_tcp_peer(host: str, port: int, timeout: float | None = None) -> bool:
    """Wait until `host:port` accepts a TCP connection (the cloud's Fast DDS listener); False
    on timeout. Fast DDS 3.2's TCP client sometimes never connects when its first attempt is
    refused (about 1 start in 8 here), so the vehicle starts its nodes once the cloud listens."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=2.0):
                return True
        except OSError:
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(0.5)
