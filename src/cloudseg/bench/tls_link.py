"""The mutual-TLS link on one host, as `cloudseg bench tls` and test/test_tls.py use it: test
keys, the two TLS gates (`python -m cloudseg.security.tls_gate`) and DDS peers
(`cloudseg.bench.tls_peer`) as processes, and recording TCP forwarders that count the bytes of
the TLS leg and of the plaintext leg.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cloudseg.fastdds import dds_env, ros_domain_id
from cloudseg.processes import ManagedProcess

FRAMES_TOPIC = "/cloudseg/frames"
BACK_TOPIC = "/cloudseg/tls_back"
#: where the vehicle's gate listens when vehicle and cloud share one host (the cloud's Fast DDS
#: holds 127.0.0.1:<port>; any 127/8 address is this host's loopback on Linux)
ONE_HOST_VEHICLE_GATE = "127.0.0.2"


# --- keys --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LinkKeys:
    dir: Path
    ca: Path
    cloud: tuple[Path, Path]  # (cert, key): server usage, names cloud + IP 127.0.0.1
    vehicle: tuple[Path, Path]  # client usage, same CA
    rogue_ca: Path
    rogue: tuple[Path, Path]  # client usage, signed by another CA


def make_test_keys(out: Path) -> LinkKeys:
    """A CA with a cloud and a vehicle certificate, and a rogue CA with a vehicle certificate."""
    from cloudseg.security.certs import make_ca, make_host

    ca = make_ca(out, "cloudseg test CA")
    cloud = make_host(out, "cloud", ips=["127.0.0.1"], usage="server")
    car = make_host(out, "car1", usage="client")
    rogue_dir = out / "rogue"
    rogue_ca = make_ca(rogue_dir, "rogue CA")
    rogue = make_host(rogue_dir, "car1", usage="client")  # same name, wrong CA
    return LinkKeys(
        out,
        ca.cert,
        (cloud.cert, cloud.key),
        (car.cert, car.key),
        rogue_ca.cert,
        (rogue.cert, rogue.key),
    )


# --- recording forwarder -----------------------------------------------------------------------


class Recorder:
    """A TCP forwarder that counts (and with `keep`, keeps) the bytes going each way."""

    def __init__(self, to: tuple[str, int], keep: bool = False, limit: int = 64 << 20) -> None:
        self.to = to
        self.keep = keep
        self.limit = limit
        self.up = bytearray()  # client -> server (vehicle -> cloud)
        self.down = bytearray()  # server -> client
        self.n_up = 0
        self.n_down = 0
        self.connections = 0
        self.port = 0
        self._server: asyncio.AbstractServer | None = None

    async def start(self, host: str = "127.0.0.1") -> int:
        self._server = await asyncio.start_server(self._handle, host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()

    def counts(self) -> tuple[int, int]:
        return self.n_up, self.n_down

    async def _handle(self, reader, writer) -> None:
        self.connections += 1
        try:
            up_r, up_w = await asyncio.open_connection(*self.to)
        except OSError:
            writer.close()
            return

        async def pump(src, dst, up: bool) -> None:
            try:
                while data := await src.read(256 * 1024):
                    if up:
                        self.n_up += len(data)
                        if self.keep and len(self.up) < self.limit:
                            self.up += data
                    else:
                        self.n_down += len(data)
                        if self.keep and len(self.down) < self.limit:
                            self.down += data
                    dst.write(data)
                    await dst.drain()
            except OSError:
                pass
            finally:
                dst.close()

        await asyncio.gather(pump(reader, up_w, True), pump(up_r, writer, False))


class LoopThread:
    """An asyncio loop in a daemon thread; `run(coro)` runs a coroutine on it and waits."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro, timeout: float = 30.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)


# --- processes ---------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port free on 127.0.0.1 (and, barring bad luck, on the other loopback addresses)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def base_env(domain: int | None = None) -> dict[str, str]:
    """The environment of peer processes: no inherited DDS settings; domain `domain`, else
    ROS_DOMAIN_ID when set, else one of its own."""
    env = dict(os.environ)
    for key in ("FASTDDS_DEFAULT_PROFILES_FILE", "ROS_DISCOVERY_SERVER", "ROS_STATIC_PEERS"):
        env.pop(key, None)
    env["ROS_DOMAIN_ID"] = str(domain if domain is not None else ros_domain_id())
    env["PYTHONUNBUFFERED"] = "1"
    return env


def start_gate(
    mode: str,
    listen: str,
    to: str,
    ca: Path,
    cert: Path,
    key: Path,
    log: Path,
    *extra: str,
    prefix: Sequence[str] = (),
) -> ManagedProcess:
    """`python -m cloudseg.security.tls_gate MODE ...` (under the command `prefix`, e.g.
    `ip netns exec NS`), waiting until it listens."""
    cmd = [sys.executable, "-m", "cloudseg.security.tls_gate", mode, "--listen", listen]
    cmd += ["--to", to, "--ca", str(ca), "--cert", str(cert), "--key", str(key), *extra]
    proc = ManagedProcess.start(cmd, name=f"gate_{mode}", log=log, prefix=prefix)
    deadline = time.monotonic() + 15
    while "listening on" not in proc.log_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.stop()
            raise RuntimeError(f"tls_gate {mode} did not start:\n{proc.log_text()}")
        time.sleep(0.05)
    return proc


def start_peer(
    args: Sequence[str], env: dict[str, str], log: Path, prefix: Sequence[str] = ()
) -> ManagedProcess:
    """`python -m cloudseg.bench.tls_peer ARGS` with its output in `log`."""
    cmd = [sys.executable, "-m", "cloudseg.bench.tls_peer", *args]
    return ManagedProcess.start(cmd, name=log.stem, env=env, log=log, prefix=prefix)


def peer_events(log: Path) -> list[dict]:
    from cloudseg.bench.tls_peer import parse_events

    return parse_events(log.read_text()) if log.exists() else []


def peer_result(log: Path) -> dict | None:
    results = [e for e in peer_events(log) if e["event"] == "result"]
    return results[-1] if results else None


class GatedLink:
    """Vehicle and cloud on this host, joined by the two TLS gates with recorders on the TLS leg
    and on the plaintext leg (see the module's docstring). Start peers with `cloud_env()` and
    `vehicle_env()`; `close()` (or `with`) stops the gates and the recorders.

    `keep`: keep the recorded bytes (tests look for markers in them)."""

    def __init__(self, keys: LinkKeys, workdir: Path, keep: bool = False) -> None:
        self.keys = keys
        self.workdir = workdir
        self.keep = keep
        self.dds_port = free_port()  # cloud Fast DDS on 127.0.0.1, vehicle gate on 127.0.0.2
        self.gate_port = free_port()  # the cloud gate ("public" port)
        self.loop = LoopThread()
        self.plain = Recorder(("127.0.0.1", self.dds_port), keep)
        self.tls = Recorder(("127.0.0.1", self.gate_port), keep)
        self.gates: dict[str, ManagedProcess] = {}
        self.logs = {name: workdir / f"gate_{name}.log" for name in ("server", "client")}

    def open(self) -> GatedLink:
        try:
            plain_port = self.loop.run(self.plain.start())
            tls_port = self.loop.run(self.tls.start())
            k = self.keys
            self.gates["server"] = start_gate(
                "server",
                f"127.0.0.1:{self.gate_port}",
                f"127.0.0.1:{plain_port}",
                k.ca,
                *k.cloud,
                self.logs["server"],
                "--log-interval",
                "0.5",
            )
            self.gates["client"] = start_gate(
                "client",
                f"{ONE_HOST_VEHICLE_GATE}:{self.dds_port}",
                f"127.0.0.1:{tls_port}",  # the cloud certificate carries IP 127.0.0.1
                k.ca,
                *k.vehicle,
                self.logs["client"],
            )
        except BaseException:
            self.close()
            raise
        return self

    def cloud_env(self, env: dict[str, str]) -> dict[str, str]:
        dds = dds_env("tls", "cloud", listen=self.dds_port)
        dds["CLOUDSEG_DDS_ANNOUNCE_ADDRESS"] = ONE_HOST_VEHICLE_GATE
        return {**env, **dds}

    def vehicle_env(self, env: dict[str, str]) -> dict[str, str]:
        return {**env, **dds_env("tls", "vehicle", peer=f"{ONE_HOST_VEHICLE_GATE}:{self.dds_port}")}

    def gate_log(self, name: str) -> str:
        return self.logs[name].read_text() if self.logs[name].exists() else ""

    def close(self) -> None:
        for proc in self.gates.values():
            proc.stop()
        with contextlib.suppress(Exception):
            self.loop.run(self.plain.stop(), 5)
            self.loop.run(self.tls.stop(), 5)
        self.loop.close()

    def __enter__(self) -> GatedLink:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()
