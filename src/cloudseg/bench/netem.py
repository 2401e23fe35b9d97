"""A thin, shaped link between two network namespaces (plain Python around `ip` and `tc`).

`ShapedLink` makes two namespaces, ``<prefix>veh-<pid>`` (the vehicle) and ``<prefix>cld-<pid>``
(the cloud), joined by a veth pair with private /30 addresses 10.233.<n>.1 (vehicle) and
10.233.<n>.2 (cloud), ``lo`` up and a 224.0.0.0/4 route on each veth (DDS multicast
discovery). The vehicle-to-cloud direction is shaped by a ``tbf`` qdisc on the vehicle's veth;
:meth:`ShapedLink.set_rate` changes its rate live (``tc qdisc change``). The cloud-to-vehicle
direction is not shaped. No delay: netem is absent from this kernel and the user-space delay
forwarder (PLATFORM.md) is not built here.

Everything lives only inside the two namespaces; :meth:`ShapedLink.close` deletes them (the
veth pair goes with them) and runs from ``finally``, ``atexit`` and SIGINT/SIGTERM handlers.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import subprocess
from collections.abc import Sequence
from types import FrameType

__all__ = ["NetemError", "ShapedLink", "check_privileges", "list_namespaces", "remove_stale"]

PREFIX = "cloudseg-"
QUEUE_S = 0.4  # tbf queue: this many seconds at the link rate ...
MIN_QUEUE_BYTES = 64 * 1024  # ... and at least this much (a keyframe fits)


class NetemError(RuntimeError):
    """The link cannot be made (no privileges, no `ip`/`tc`, a command failed); one line."""


def check_privileges() -> str | None:
    """None when namespaces and tc can be used here, else the reason (one line)."""
    if os.geteuid() != 0:
        return "needs root (network namespaces and tc): run as root or with CAP_NET_ADMIN"
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            return f"`{tool}` not found (Debian: apt-get install iproute2)"
    return None


def _run(cmd: Sequence[str], check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(cmd), capture_output=True, text=True)
    if check and proc.returncode != 0:
        err = (proc.stderr or proc.stdout).strip().splitlines()
        raise NetemError(f"`{' '.join(cmd)}` failed: {err[-1] if err else proc.returncode}")
    return proc


def list_namespaces(prefix: str = PREFIX) -> list[str]:
    """The network namespaces whose names start with `prefix`."""
    out = _run(["ip", "netns", "list"], check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith(prefix)]


def remove_stale(prefix: str = PREFIX) -> list[str]:
    """Delete namespaces of ours left by a process that no longer exists (e.g. SIGKILLed)."""
    removed = []
    for name in list_namespaces(prefix):
        pid = name.rsplit("-", 1)[-1]
        if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            _run(["ip", "netns", "del", name], check=False)
            removed.append(name)
    return removed


def tbf_args(kbps: float) -> list[str]:
    """`tc` arguments of a tbf at `kbps` kbit/s (burst: 20 ms or one 1514-byte packet x 10)."""
    rate_bytes = kbps * 1000 / 8
    burst = max(int(rate_bytes * 0.02), 15140)
    limit = max(int(rate_bytes * QUEUE_S), MIN_QUEUE_BYTES) + burst
    return ["tbf", "rate", f"{int(kbps)}kbit", "burst", str(burst), "limit", str(limit)]


class ShapedLink:
    """Two namespaces joined by a veth pair, vehicle-to-cloud shaped by tbf. Use with `with`."""

    def __init__(self, kbps: float, prefix: str = PREFIX, tag: str | None = None) -> None:
        pid = os.getpid()
        tag = tag or str(pid)
        self.vehicle_ns = f"{prefix}veh-{tag}"
        self.cloud_ns = f"{prefix}cld-{tag}"
        self.vehicle_if = f"csv{pid}"[:15]
        self.cloud_if = f"csc{pid}"[:15]
        net = pid % 250 + 1
        self.vehicle_ip = f"10.233.{net}.1"
        self.cloud_ip = f"10.233.{net}.2"
        self.kbps = float(kbps)
        self._open = False
        self._old_handlers: dict[int, object] = {}

    def _ns(self, ns: str, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
        return _run(["ip", "netns", "exec", ns, *cmd], check=check)

    def open(self) -> ShapedLink:
        reason = check_privileges()
        if reason:
            raise NetemError(reason)
        remove_stale()
        atexit.register(self.close)
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old_handlers[sig] = signal.signal(sig, self._on_signal)
        self._open = True
        try:
            for ns in (self.vehicle_ns, self.cloud_ns):
                _run(["ip", "netns", "add", ns])
            peer = ["peer", "name", self.cloud_if, "netns", self.cloud_ns]
            _run(
                [
                    "ip",
                    "link",
                    "add",
                    self.vehicle_if,
                    "netns",
                    self.vehicle_ns,
                    "type",
                    "veth",
                    *peer,
                ]
            )
            for ns, dev, ip in (
                (self.vehicle_ns, self.vehicle_if, self.vehicle_ip),
                (self.cloud_ns, self.cloud_if, self.cloud_ip),
            ):
                self._ns(ns, "ip", "link", "set", "lo", "up")
                self._ns(ns, "ip", "addr", "add", f"{ip}/30", "dev", dev)
                self._ns(ns, "ip", "link", "set", dev, "up")
                self._ns(ns, "ip", "route", "add", "224.0.0.0/4", "dev", dev)
            self._ns(
                self.vehicle_ns, "tc", "qdisc", "add", "dev", self.vehicle_if, "root",
                *tbf_args(self.kbps),
            )  # fmt: skip
        except BaseException:
            self.close()
            raise
        return self

    def set_rate(self, kbps: float) -> None:
        """Change the vehicle-to-cloud rate live."""
        self._ns(
            self.vehicle_ns, "tc", "qdisc", "change", "dev", self.vehicle_if, "root",
            *tbf_args(kbps),
        )  # fmt: skip
        self.kbps = float(kbps)

    def exec_prefix(self, side: str) -> list[str]:
        """The command prefix that runs a program inside the `side` ("vehicle"/"cloud") ns."""
        return ["ip", "netns", "exec", self.vehicle_ns if side == "vehicle" else self.cloud_ns]

    def tx_bytes(self) -> int:
        """Bytes the vehicle's veth has sent so far (what crossed the shaped link)."""
        out = self._ns(
            self.vehicle_ns, "cat", f"/sys/class/net/{self.vehicle_if}/statistics/tx_bytes"
        )
        return int(out.stdout.strip() or 0)

    def close(self) -> None:
        """Delete both namespaces (and with them the veth pair); safe to call twice."""
        if not self._open:
            return
        self._open = False
        for ns in (self.vehicle_ns, self.cloud_ns):
            _run(["ip", "netns", "del", ns], check=False)
        for sig, handler in self._old_handlers.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._old_handlers.clear()
        atexit.unregister(self.close)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")  # unwinds through `finally` to close()

    def __enter__(self) -> ShapedLink:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()
