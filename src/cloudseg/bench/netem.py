"""A thin, shaped link between two network namespaces (plain Python around `ip` and `tc`).

`ShapedLink` makes two namespaces, ``<prefix>veh-<pid>`` (the vehicle) and ``<prefix>cld-<pid>``
(the cloud), joined by a veth pair with private /30 addresses 10.233.<n>.1 (vehicle) and
10.233.<n>.2 (cloud), ``lo`` up and a 224.0.0.0/4 route on each veth (DDS multicast
discovery). The vehicle-to-cloud direction is shaped by a ``tbf`` qdisc on the vehicle's veth;
:meth:`ShapedLink.set_rate` changes its rate live (``tc qdisc change``). The cloud-to-vehicle
direction is not shaped.

Delay: netem is absent from this kernel, so with ``delay_ms > 0`` a third namespace
``<prefix>mid-<pid>`` sits between the two: vehicle veth <-> middle iface A, middle iface B <->
cloud veth, and the user-space forwarder :mod:`cloudseg.bench.delay_line` (AF_PACKET) runs there
as a transparent L2 bridge (no addresses) that holds every frame ``delay_ms`` in *each*
direction, so a round trip takes ``2 x delay_ms`` more. The vehicle and cloud keep the same
addresses; tbf stays on the vehicle's veth (frames are shaped, then delayed). tx checksum, SG,
TSO, GSO and GRO offloads are off on all four interfaces (frames re-injected by the forwarder
must be complete and no larger than the MTU). With ``delay_ms == 0`` there is no middle
namespace and no forwarder.

Everything lives only inside the namespaces; :meth:`ShapedLink.close` stops the forwarder and
deletes them (the veth pairs go with them) and runs from ``finally``, ``atexit`` and
SIGINT/SIGTERM handlers.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from cloudseg.processes import ManagedProcess

__all__ = ["NetemError", "ShapedLink", "check_privileges", "list_namespaces", "remove_stale"]

PREFIX = "cloudseg-"
QUEUE_S = 0.4  # tbf queue: this many seconds at the link rate ...
MIN_QUEUE_BYTES = 64 * 1024  # ... and at least this much (a keyframe fits)
FORWARDER_START_S = 10.0  # the delay forwarder must say "ready" within this
FORWARDER_STOP_S = 3.0  # ... and exit within this after SIGTERM (else SIGKILL)


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


def _last_line(proc: subprocess.CompletedProcess) -> str:
    lines = [ln for ln in (proc.stderr or proc.stdout or "").splitlines() if ln.strip()]
    return lines[-1] if lines else f"exit status {proc.returncode}"


def _forwarder_env() -> dict[str, str]:
    """The environment for ``python -m cloudseg.bench.delay_line``: this cloudseg importable."""
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if os.path.basename(root) in ("site-packages", "dist-packages"):
        return env  # installed: importable as it is (on PYTHONPATH it would shadow the stdlib)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


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
            # a delay forwarder orphaned in a middle namespace: it exits with its parent, but
            # end any that is still there so that the namespace really goes away
            pids = _run(["ip", "netns", "pids", name], check=False).stdout.split()
            for p in pids:
                if p.isdigit():
                    with contextlib.suppress(OSError):
                        os.kill(int(p), signal.SIGTERM)
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
    """Two namespaces joined by veths, vehicle-to-cloud shaped by tbf. Use with `with`.

    `kbps`: the vehicle-to-cloud rate (tbf). `delay_ms`: one-way delay added in *each*
    direction by a forwarder in a middle namespace (round trip = 2 x `delay_ms`); 0 (the
    default): a plain veth pair, no middle namespace.
    """

    def __init__(
        self, kbps: float, prefix: str = PREFIX, tag: str | None = None, delay_ms: float = 0.0
    ) -> None:
        if delay_ms < 0:
            raise ValueError(f"delay_ms must be >= 0, got {delay_ms}")
        pid = os.getpid()
        tag = tag or str(pid)
        self.vehicle_ns = f"{prefix}veh-{tag}"
        self.cloud_ns = f"{prefix}cld-{tag}"
        self.vehicle_if = f"csv{pid}"[:15]
        self.cloud_if = f"csc{pid}"[:15]
        self.delay_ms = float(delay_ms)
        # the middle (delay) namespace and its two ifaces: A faces the vehicle, B the cloud
        self.mid_ns: str | None = f"{prefix}mid-{tag}" if self.delay_ms > 0 else None
        self.mid_if_a = f"csa{pid}"[:15]
        self.mid_if_b = f"csb{pid}"[:15]
        net = pid % 250 + 1
        self.vehicle_ip = f"10.233.{net}.1"
        self.cloud_ip = f"10.233.{net}.2"
        self.kbps = float(kbps)
        self._open = False
        self._old_handlers: dict[int, object] = {}
        self._forwarder: ManagedProcess | None = None
        self.forwarder_summary = ""  # the forwarder's last log line (its counts), after close()

    @property
    def namespaces(self) -> list[str]:
        """The namespaces this link makes: vehicle, cloud and (with a delay) the middle one."""
        return [self.vehicle_ns, self.cloud_ns] + ([self.mid_ns] if self.mid_ns else [])

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
            for ns in self.namespaces:
                _run(["ip", "netns", "add", ns])
            if self.mid_ns is None:
                self._add_veth(self.vehicle_if, self.vehicle_ns, self.cloud_if, self.cloud_ns)
            else:
                self._add_veth(self.vehicle_if, self.vehicle_ns, self.mid_if_a, self.mid_ns)
                self._add_veth(self.mid_if_b, self.mid_ns, self.cloud_if, self.cloud_ns)
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
            if self.mid_ns is not None:
                self._open_middle(self.mid_ns)
        except BaseException:
            self.close()
            raise
        return self

    def _add_veth(self, left: str, left_ns: str, right: str, right_ns: str) -> None:
        veth = ["ip", "link", "add", left, "netns", left_ns, "type", "veth"]
        _run([*veth, "peer", "name", right, "netns", right_ns])

    def _delay_line(self, ns: str, *args: str) -> list[str]:
        return ["ip", "netns", "exec", ns, sys.executable, "-m", "cloudseg.bench.delay_line", *args]

    def _open_middle(self, mid: str) -> None:
        """Offloads off on all four ifaces, middle ifaces up (promisc), the forwarder started."""
        env = _forwarder_env()
        for ns, dev in ((self.vehicle_ns, self.vehicle_if), (self.cloud_ns, self.cloud_if)):
            proc = subprocess.run(
                self._delay_line(ns, "--disable-offloads", dev),
                capture_output=True, text=True, env=env,
            )  # fmt: skip
            if proc.returncode != 0:
                raise NetemError(f"turning offloads off on {dev} in {ns}: {_last_line(proc)}")
        for dev in (self.mid_if_a, self.mid_if_b):
            if shutil.which("sysctl"):  # no IPv6 link-local chatter from the bridge itself
                self._ns(mid, "sysctl", "-qw", f"net.ipv6.conf.{dev}.disable_ipv6=1", check=False)
            self._ns(mid, "ip", "link", "set", dev, "promisc", "on", "up")
        fd, log = tempfile.mkstemp(prefix=f"{mid}-", suffix=".log")
        os.close(fd)
        self._forwarder = forwarder = ManagedProcess.start(
            self._delay_line(
                mid, "--a", self.mid_if_a, "--b", self.mid_if_b,
                "--delay-ms", f"{self.delay_ms:g}", "--exit-with-parent",
            ),
            name="delay forwarder", env=env, log=Path(log), stdin=subprocess.DEVNULL,
            own_group=True,  # a terminal's Ctrl-C reaches only us; close() stops it
        )  # fmt: skip
        deadline = time.monotonic() + FORWARDER_START_S
        while True:
            text = forwarder.log_text()
            if "delay_line: ready" in text:
                return
            code = forwarder.poll()
            if code is not None or time.monotonic() > deadline:
                lines = [ln for ln in text.splitlines() if ln.strip()]
                why = lines[-1] if lines else f"exit status {code}"
                if code is None:
                    why = f"not ready after {FORWARDER_START_S:g} s ({why})"
                raise NetemError(f"delay forwarder in {mid} did not start: {why}")
            time.sleep(0.02)

    def _stop_forwarder(self) -> None:
        proc, self._forwarder = self._forwarder, None
        if proc is None:
            self.forwarder_summary = ""
            return
        proc.stop(grace=FORWARDER_STOP_S, sig=signal.SIGTERM)
        lines = proc.log_text().strip().splitlines()
        self.forwarder_summary = lines[-1] if lines else ""
        with contextlib.suppress(OSError):
            proc.log.unlink()

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
        """Stop the forwarder, delete the namespaces (and the veths); safe to call twice."""
        if not self._open:
            return
        self._open = False
        self._stop_forwarder()
        for ns in self.namespaces:
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
