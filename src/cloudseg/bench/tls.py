"""Bitrate cost of the TLS link (`cloudseg bench tls`): bytes on the wire with and without TLS
for the same DDS message stream.

One host, loopback: a cloud peer (Fast DDS, fastdds_tls_cloud.xml) and a vehicle peer
(fastdds_tls_vehicle.xml) as separate processes, the two TLS gates
(`python -m cloudseg.security.tls_gate`) as separate processes, and two recording forwarders
in this process that count every byte:

    vehicle Fast DDS -> vehicle gate =TLS=> [recorder: TLS leg] => cloud gate
                        -> [recorder: plaintext leg] -> cloud Fast DDS

The plaintext leg carries exactly what Fast DDS would send over a plain TCP link (the same
TCP stream the `--dds tcp` profiles use), the TLS leg what crosses the WAN with TLS; both see
the same stream at the same time. Counted are TCP payload bytes (TCP/IP headers come on top,
about the same number of packets either way). The vehicle publishes `--messages` Frames of
`--size` bytes at `--rate` once the cloud's subscriber has matched; the window starts at its
first message and ends 1 s after its last.

    cloudseg bench tls [--messages 200] [--size 5000 [SIZE ...]] [--rate 50] [--json]
    cloudseg bench tls --two-hosts ...   # root: two network namespaces, interface bytes

`GatedLink`, `Recorder` and `make_test_keys` are also the harness of test/test_tls.py.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cloudseg.bench.tls_peer import PREFIX as PEER_PREFIX

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
    """The environment of peer processes: no inherited DDS settings, an own domain."""
    env = dict(os.environ)
    for key in ("FASTDDS_DEFAULT_PROFILES_FILE", "ROS_DISCOVERY_SERVER", "ROS_STATIC_PEERS"):
        env.pop(key, None)
    env["ROS_DOMAIN_ID"] = str(domain if domain is not None else 150 + os.getpid() % 80)
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
) -> subprocess.Popen:
    """`python -m cloudseg.security.tls_gate MODE ...` (under the command `prefix`, e.g.
    `ip netns exec NS`), waiting until it listens."""
    cmd = [*prefix, sys.executable, "-m", "cloudseg.security.tls_gate", mode, "--listen", listen]
    cmd += ["--to", to, "--ca", str(ca), "--cert", str(cert), "--key", str(key), *extra]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 15
    while "listening on" not in log.read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_process(proc)
            raise RuntimeError(f"tls_gate {mode} did not start:\n{log.read_text()}")
        time.sleep(0.05)
    return proc


def stop_process(proc: subprocess.Popen, sig: int = signal.SIGINT, grace: float = 5.0) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        return proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def start_peer(
    args: Sequence[str], env: dict[str, str], log: Path, prefix: Sequence[str] = ()
) -> subprocess.Popen:
    """`python -m cloudseg.bench.tls_peer ARGS` with its output in `log`."""
    with open(log, "w") as out:
        return subprocess.Popen(
            [*prefix, sys.executable, "-m", "cloudseg.bench.tls_peer", *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


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
        self.gates: dict[str, subprocess.Popen] = {}
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
        from cloudseg.launcher import dds_env

        dds = dds_env("tls", "cloud", listen=self.dds_port)
        dds["CLOUDSEG_DDS_ANNOUNCE_ADDRESS"] = ONE_HOST_VEHICLE_GATE
        return {**env, **dds}

    def vehicle_env(self, env: dict[str, str]) -> dict[str, str]:
        from cloudseg.launcher import dds_env

        return {**env, **dds_env("tls", "vehicle", peer=f"{ONE_HOST_VEHICLE_GATE}:{self.dds_port}")}

    def gate_log(self, name: str) -> str:
        return self.logs[name].read_text() if self.logs[name].exists() else ""

    def close(self) -> None:
        for proc in self.gates.values():
            stop_process(proc)
        with contextlib.suppress(Exception):
            self.loop.run(self.plain.stop(), 5)
            self.loop.run(self.tls.stop(), 5)
        self.loop.close()

    def __enter__(self) -> GatedLink:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- the benchmark -----------------------------------------------------------------------------


def _vehicle_stream(
    prefix: Sequence[str],
    env: dict[str, str],
    log_path: Path,
    messages: int,
    size: int,
    rate: float,
    timeout: float,
    snap,
) -> bool:
    """Run the vehicle peer (under the command `prefix`, e.g. `ip netns exec NS`) until it has
    streamed; `snap("start")` at its first message, `snap("end")` 1 s after its last. True when
    it streamed."""
    cmd = [
        *prefix, sys.executable, "-m", "cloudseg.bench.tls_peer", "--pub", FRAMES_TOPIC,
        "--marker", "BENCH", "--size", str(size), "--count", str(messages),
        "--rate", str(rate), "--linger", "1.5", "--seconds", str(timeout),
    ]  # fmt: skip
    published = False
    with open(log_path, "w") as log:
        vehicle = subprocess.Popen(
            cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        assert vehicle.stdout is not None
        for line in vehicle.stdout:
            log.write(line)
            if not line.startswith(PEER_PREFIX):
                continue
            event = json.loads(line[len(PEER_PREFIX) :])["event"]
            if event == "start":
                snap("start")
            elif event == "published":
                published = True
                time.sleep(1.0)  # the last messages cross the link
                snap("end")
        vehicle.wait()
    return published


def _deltas(snapshots: dict[str, tuple[int, ...]], a: str, b: str) -> list[int]:
    return [y - x for x, y in zip(snapshots[a], snapshots[b], strict=True)]


def _overhead(tls: int, plain: int) -> float:
    return round(100.0 * (tls - plain) / max(plain, 1), 2)


def measure(
    messages: int, size: int, rate: float, workdir: Path, timeout: float = 90.0
) -> dict[str, object]:
    """One run on this host: the vehicle streams `messages` Frames of `size` bytes at `rate` Hz
    to the cloud through the gates; TCP payload bytes on both legs during the stream and in
    all."""
    keys = make_test_keys(workdir / "keys")
    env = base_env()
    with GatedLink(keys, workdir) as link:
        cloud_log = workdir / "cloud.log"
        cloud = start_peer(
            ["--sub", FRAMES_TOPIC, "--seconds", str(timeout)], link.cloud_env(env), cloud_log
        )
        snapshots: dict[str, tuple[int, ...]] = {}

        def snap(name: str) -> None:
            snapshots[name] = (*link.tls.counts(), *link.plain.counts())

        snap("zero")
        vehicle_log = workdir / "vehicle.log"
        streamed = _vehicle_stream(
            [], link.vehicle_env(env), vehicle_log, messages, size, rate, timeout, snap
        )
        stop_process(cloud, signal.SIGTERM, 10)
        snap("total")
        received = (peer_result(cloud_log) or {}).get("received", 0)
        if not streamed or "start" not in snapshots:
            raise RuntimeError(
                f"the vehicle never streamed (no match through the gates?):\n"
                f"{vehicle_log.read_text()[-2000:]}\n{link.gate_log('server')[-2000:]}"
            )
    tls_up, tls_down, plain_up, plain_down = _deltas(snapshots, "start", "end")
    total = _deltas(snapshots, "zero", "total")
    return {
        "where": "one host, loopback; TCP payload bytes",
        "messages": messages,
        "size": size,
        "rate_hz": rate,
        "received": received,
        "payload_bytes": messages * size,
        "plain_up": plain_up,
        "plain_down": plain_down,
        "tls_up": tls_up,
        "tls_down": tls_down,
        "overhead_pct": _overhead(tls_up + tls_down, plain_up + plain_down),
        "plain_total": total[2] + total[3],
        "tls_total": total[0] + total[1],
        "total_overhead_pct": _overhead(total[0] + total[1], total[2] + total[3]),
        "tls_connections": link.tls.connections,
    }


def measure_two_hosts(
    messages: int, size: int, rate: float, workdir: Path, timeout: float | None = None
) -> dict[str, object]:
    """The deployment set-up between two network namespaces (root): the same stream once over
    plain TCP (`--dds tcp` profiles, the vehicle connecting to the cloud's address) and once
    through the gates (`--dds tls` profiles, gates at 127.0.0.1:7410 on the vehicle and
    <cloud>:7411 on the cloud), counting the bytes the vehicle's network interface sent and
    received (Ethernet frames as the kernel counts them, headers included)."""
    from cloudseg.bench.netem import NetemError, ShapedLink, check_privileges
    from cloudseg.launcher import dds_env
    from cloudseg.security.certs import make_ca, make_host

    reason = check_privileges()
    if reason:
        raise RuntimeError(reason)
    timeout = timeout or messages / rate + 25.0  # matching takes 1-7 s
    env = base_env()
    out: dict[str, object] = {
        "where": "two network namespaces (veth); interface bytes incl. headers",
        "messages": messages,
        "size": size,
        "rate_hz": rate,
        "payload_bytes": messages * size,
    }
    try:
        link = ShapedLink(10_000_000).open()  # 10 Gbit/s: not shaped
    except NetemError as exc:
        raise RuntimeError(str(exc)) from exc
    try:
        keys = workdir / "keys"
        make_ca(keys, "cloudseg bench CA")
        cloud_cert = make_host(keys, "cloud", ips=[link.cloud_ip], usage="server")
        car_cert = make_host(keys, "car1", usage="client")
        V, C = link.exec_prefix("vehicle"), link.exec_prefix("cloud")
        iface = f"/sys/class/net/{link.vehicle_if}/statistics"

        def wire() -> tuple[int, int]:
            done = subprocess.run(
                [*V, "cat", f"{iface}/tx_bytes", f"{iface}/rx_bytes"],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            tx, rx = done.stdout.split()
            return int(tx), int(rx)

        def one_run(mode: str, run_dir: Path) -> tuple[dict[str, tuple[int, ...]], int]:
            run_dir.mkdir(parents=True, exist_ok=True)
            gates = []
            if mode == "tls":
                gates.append(start_gate(
                    "server", f"{link.cloud_ip}:7411", "127.0.0.1:7410", keys / "ca.crt",
                    cloud_cert.cert, cloud_cert.key, run_dir / "gate_server.log", prefix=C,
                ))  # fmt: skip
                gates.append(start_gate(
                    "client", "127.0.0.1:7410", f"{link.cloud_ip}:7411", keys / "ca.crt",
                    car_cert.cert, car_cert.key, run_dir / "gate_client.log", prefix=V,
                ))  # fmt: skip
                cloud_env = {**env, **dds_env("tls", "cloud", listen=7410)}
                vehicle_env = {**env, **dds_env("tls", "vehicle")}
            else:
                cloud_env = {**env, **dds_env("tcp", "cloud", listen=7410)}
                vehicle_env = {**env, **dds_env("tcp", "vehicle", peer=f"{link.cloud_ip}:7410")}
            cloud_log = run_dir / "cloud.log"
            cloud = start_peer(
                ["--sub", FRAMES_TOPIC, "--seconds", str(timeout + 10)],
                cloud_env,
                cloud_log,
                prefix=C,
            )
            time.sleep(3.0)  # the cloud listens before the vehicle's first try (launcher.py)
            snapshots: dict[str, tuple[int, ...]] = {}

            def snap(name: str) -> None:
                snapshots[name] = wire()

            try:
                streamed = _vehicle_stream(
                    V, vehicle_env, run_dir / "vehicle.log", messages, size, rate, timeout, snap
                )
            finally:
                stop_process(cloud, signal.SIGTERM, 10)
                for gate in gates:
                    stop_process(gate)
            if not streamed or "start" not in snapshots:
                raise RuntimeError(
                    f"{mode}: the vehicle never streamed (see {run_dir}):\n"
                    f"{(run_dir / 'vehicle.log').read_text()[-2000:]}"
                )
            return snapshots, (peer_result(cloud_log) or {}).get("received", 0)

        for mode in ("tcp", "tls"):
            # Fast DDS TCP now and then never matches a pair (README): one fresh retry
            for attempt in range(2):
                try:
                    snapshots, received = one_run(mode, workdir / f"{mode}{attempt}")
                    break
                except RuntimeError:
                    if attempt == 1:
                        raise
            name = "plain" if mode == "tcp" else "tls"
            out[f"{name}_up"], out[f"{name}_down"] = _deltas(snapshots, "start", "end")
            out[f"{name}_received"] = received
    finally:
        link.close()
    out["received"] = min(out["plain_received"], out["tls_received"])  # type: ignore[type-var]
    out["overhead_pct"] = _overhead(
        out["tls_up"] + out["tls_down"],  # type: ignore[operator]
        out["plain_up"] + out["plain_down"],  # type: ignore[operator]
    )
    return out


def format_result(r: dict[str, object]) -> str:
    dur = r["messages"] / r["rate_hz"]  # type: ignore[operator]
    lines = [
        f"{r['messages']} messages of {r['size']} B at {r['rate_hz']} Hz "
        f"(payload {r['payload_bytes']} B), cloud received {r['received']}; {r['where']}",
        "| link | vehicle->cloud B | cloud->vehicle B | kbit/s up (stream) |",
        "|---|---:|---:|---:|",
    ]
    for name in ("plain", "tls"):
        up, down = r[f"{name}_up"], r[f"{name}_down"]
        kbps = 8 * up / dur / 1000  # type: ignore[operator]
        label = "plain TCP" if name == "plain" else "mutual TLS (gates)"
        lines.append(f"| {label} | {up} | {down} | {kbps:.1f} |")
    line = f"TLS overhead during the stream: {r['overhead_pct']} %"
    if "total_overhead_pct" in r:
        line += (
            f" (whole run incl. discovery and handshake: {r['total_overhead_pct']} %, "
            f"{r['plain_total']} -> {r['tls_total']} B; {r['tls_connections']} TLS connection(s))"
        )
    lines.append(line)
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="cloudseg bench tls",
        description="Bitrate cost of the mutual-TLS link: TCP payload bytes with and without "
        "TLS for the same DDS stream (vehicle and cloud on this host, loopback; see "
        "cloudseg.bench.tls).",
    )
    p.add_argument("--messages", type=int, default=200)
    p.add_argument(
        "--size",
        type=int,
        nargs="+",
        default=[5000],
        help="bytes of Frame.data per message; several sizes: one run each",
    )
    p.add_argument("--rate", type=float, default=50.0, help="messages per second")
    p.add_argument(
        "--two-hosts",
        action="store_true",
        help="root: vehicle and cloud in two network namespaces with the deployment set-up, "
        "plain TCP vs TLS, counting interface bytes (headers included)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON line per run")
    p.add_argument("--keep", type=Path, help="keep logs and keys in this folder")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.messages < 1 or min(args.size) < 32 or args.rate <= 0:
        print("cloudseg bench tls: --messages >= 1, --size >= 32, --rate > 0", file=sys.stderr)
        return 2
    cpus = os.cpu_count()
    machine = f"{platform.machine()}, {cpus} cores, Python {platform.python_version()}"
    run = measure_two_hosts if args.two_hosts else measure
    with contextlib.ExitStack() as stack:
        if args.keep:
            workdir = args.keep
            workdir.mkdir(parents=True, exist_ok=True)
        else:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="cloudseg-tls-")))
        for size in args.size:
            run_dir = workdir / f"size{size}"
            run_dir.mkdir(parents=True, exist_ok=True)
            try:
                result = run(args.messages, size, args.rate, run_dir)
            except RuntimeError as exc:
                print(f"cloudseg bench tls: {exc}", file=sys.stderr)
                return 1
            result["machine"] = machine
            print(json.dumps(result) if args.json else format_result(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
