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

The link itself (gates, recorders, peers) is `cloudseg.bench.tls_link`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from cloudseg.bench.tls_link import (
    FRAMES_TOPIC,
    GatedLink,
    base_env,
    make_test_keys,
    peer_result,
    start_gate,
    start_peer,
)
from cloudseg.bench.tls_peer import PREFIX as PEER_PREFIX
from cloudseg.fastdds import dds_env
from cloudseg.processes import ManagedProcess

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
        sys.executable, "-m", "cloudseg.bench.tls_peer", "--pub", FRAMES_TOPIC,
        "--marker", "BENCH", "--size", str(size), "--count", str(messages),
        "--rate", str(rate), "--linger", "1.5", "--seconds", str(timeout),
    ]  # fmt: skip
    published = False
    vehicle = ManagedProcess.start(cmd, name="vehicle", env=env, log=log_path, prefix=prefix)
    for line in vehicle.follow_log():
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
        cloud.stop(grace=10, sig=signal.SIGTERM)
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
            _wait_listening(C, 7410, cloud)  # before the vehicle's first try (launcher.py)
            snapshots: dict[str, tuple[int, ...]] = {}

            def snap(name: str) -> None:
                snapshots[name] = wire()

            try:
                streamed = _vehicle_stream(
                    V, vehicle_env, run_dir / "vehicle.log", messages, size, rate, timeout, snap
                )
            finally:
                cloud.stop(grace=10, sig=signal.SIGTERM)
                for gate in gates:
                    gate.stop()
            if not streamed or "start" not in snapshots:
                raise RuntimeError(
                    f"{mode}: the vehicle never streamed (see {run_dir}):\n"
                    f"{(run_dir / 'vehicle.log').read_text()[-2000:]}"
                )
            return snapshots, (peer_result(cloud_log) or {}).get("received", 0)

        for mode in ("tcp", "tls"):
            # Fast DDS TCP now and then never matches a pair
            # (docs/deployment.md#vehicle-and-cloud-on-different-hosts): one fresh retry
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


def _wait_listening(
    prefix: Sequence[str], port: int, peer: ManagedProcess, timeout: float = 60.0
) -> bool:
    """Wait until a TCP socket listens on `port` in the network namespace `prefix` runs in (the
    cloud's Fast DDS listener, seen with `ss`, no connection made): Fast DDS 3.2's TCP client
    may never connect when its first try is refused. False when `peer` ends or on timeout."""
    cmd = [*prefix, "ss", "-Hltn", f"sport = :{port}"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and peer.poll() is None:
        if subprocess.run(cmd, capture_output=True, text=True, check=False).stdout.strip():
            return True
        time.sleep(0.2)
    return False


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
