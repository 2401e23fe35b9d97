"""A user-space delay line: an L2 forwarder between two interfaces (standard library only).

netem is absent from this kernel, so a one-way delay is added by a process in a middle network
namespace that sits between two veth pairs: every Ethernet frame received on interface A is sent
out of B ``delay_ms`` later, and every frame received on B is sent out of A ``delay_ms`` later
(two AF_PACKET raw sockets, one FIFO :class:`DelayQueue` per direction). The delay applies in
each direction, so a round trip crosses it twice.

The re-injected frames must carry complete checksums and be no larger than the MTU, so the
offloads (tx checksumming, scatter-gather, TSO, GSO, GRO) are turned off on the forwarder's two
interfaces and, by the caller, on the end points' interfaces (:func:`disable_offloads`, the
SIOCETHTOOL ioctl; there is no ``ethtool`` binary here).

Run inside the middle namespace::

    ip netns exec NS python -m cloudseg.bench.delay_line --a IF_A --b IF_B --delay-ms 50
    ip netns exec NS python -m cloudseg.bench.delay_line --disable-offloads IF [IF ...]

The forwarder prints one ``delay_line: ready`` line once both sockets are bound, and exits
cleanly (with a one-line count of what it forwarded) on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import ctypes.util
import errno
import fcntl
import os
import select
import signal
import socket
import sys
import time
from collections import deque
from collections.abc import Sequence
from typing import Generic, TypeVar

__all__ = ["DelayLine", "DelayQueue", "disable_offloads", "get_offloads", "main"]

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4  # socket.PACKET_OUTGOING
SIOCETHTOOL = 0x8946
SOCK_BUF_BYTES = 4 * 1024 * 1024
MAX_FRAME = 65536
MAX_QUEUED = 100_000  # frames held per direction before new ones are dropped
IDLE_TIMEOUT_S = 1.0  # the loop wakes at least this often (to notice a dead parent)

# legacy ethtool_value commands: feature -> (get, set)
OFFLOADS: dict[str, tuple[int, int]] = {
    "tx-checksumming": (0x16, 0x17),  # ETHTOOL_GTXCSUM / ETHTOOL_STXCSUM
    "scatter-gather": (0x18, 0x19),  # ETHTOOL_GSG / ETHTOOL_SSG
    "tcp-segmentation-offload": (0x1E, 0x1F),  # ETHTOOL_GTSO / ETHTOOL_STSO
    "generic-segmentation-offload": (0x23, 0x24),  # ETHTOOL_GGSO / ETHTOOL_SGSO
    "generic-receive-offload": (0x2B, 0x2C),  # ETHTOOL_GGRO / ETHTOOL_SGRO
}

T = TypeVar("T")


class DelayQueue(Generic[T]):
    """Items held `delay_s` after their arrival, released in arrival (FIFO) order."""

    def __init__(self, delay_s: float, max_items: int = MAX_QUEUED) -> None:
        self.delay_s = float(delay_s)
        self.max_items = max_items
        self._q: deque[tuple[float, T]] = deque()
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._q)

    def push(self, t: float, item: T) -> bool:
        """Hold `item`, arrived at time `t`; False (and dropped) when the queue is full."""
        if len(self._q) >= self.max_items:
            self.dropped += 1
            return False
        self._q.append((t + self.delay_s, item))
        return True

    def due(self, now: float) -> list[T]:
        """Pop and return the items whose release time is at or before `now`, oldest first."""
        out: list[T] = []
        q = self._q
        while q and q[0][0] <= now:
            out.append(q.popleft()[1])
        return out

    def next_timeout(self, now: float) -> float | None:
        """Seconds until the next release (0 when one is due), None when empty."""
        if not self._q:
            return None
        return max(0.0, self._q[0][0] - now)


# --- offloads through SIOCETHTOOL ------------------------------------------------------------


class _EthtoolValue(ctypes.Structure):
    _fields_ = (("cmd", ctypes.c_uint32), ("data", ctypes.c_uint32))


class _IfreqData(ctypes.Structure):
    """struct ifreq with the ifr_data member of its union (40 bytes on 64-bit Linux)."""

    _fields_ = (
        ("ifr_name", ctypes.c_char * 16),
        ("ifr_data", ctypes.c_void_p),
        ("_pad", ctypes.c_char * 16),
    )


def _ethtool(sock: socket.socket, ifname: str, cmd: int, data: int = 0) -> int:
    value = _EthtoolValue(cmd, data)
    ifr = _IfreqData(ifname.encode()[:15], ctypes.addressof(value))
    fcntl.ioctl(sock.fileno(), SIOCETHTOOL, ifr)
    return int(value.data)


def _unsupported(exc: OSError) -> bool:
    return exc.errno in (errno.EOPNOTSUPP, errno.ENOTSUP)


def get_offloads(ifname: str) -> dict[str, bool | None]:
    """Each offload of `ifname` (in this namespace): on, off, or None when not supported."""
    state: dict[str, bool | None] = {}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for name, (get, _) in OFFLOADS.items():
            try:
                state[name] = bool(_ethtool(sock, ifname, get))
            except OSError as exc:
                if not _unsupported(exc):
                    raise
                state[name] = None
    return state


def disable_offloads(ifname: str) -> dict[str, bool]:
    """Turn off tx checksumming, SG, TSO, GSO and GRO on `ifname` (in this namespace).

    Returns feature -> True when turned off, False when the device does not support changing
    it (EOPNOTSUPP, ignored). Any other error (no such device, not permitted) raises OSError.
    """
    done: dict[str, bool] = {}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for name, (_, set_cmd) in OFFLOADS.items():
            try:
                _ethtool(sock, ifname, set_cmd, 0)
                done[name] = True
            except OSError as exc:
                if not _unsupported(exc):
                    raise OSError(
                        exc.errno, f"{ifname}: turning off {name}: {exc.strerror}"
                    ) from exc
                done[name] = False
    return done


# --- the forwarder ---------------------------------------------------------------------------


def _packet_socket(ifname: str) -> socket.socket:
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    try:
        for opt, force in ((socket.SO_RCVBUF, 33), (socket.SO_SNDBUF, 32)):  # SO_*BUFFORCE
            try:
                sock.setsockopt(socket.SOL_SOCKET, force, SOCK_BUF_BYTES)
            except OSError:
                sock.setsockopt(socket.SOL_SOCKET, opt, SOCK_BUF_BYTES)
        sock.bind((ifname, ETH_P_ALL))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class DelayLine:
    """Forwards every frame from interface `a` to `b` and from `b` to `a`, each `delay_s` late."""

    def __init__(self, a: str, b: str, delay_s: float, max_queued: int = MAX_QUEUED) -> None:
        self.a, self.b = a, b
        self.delay_s = float(delay_s)
        self.sock_a = _packet_socket(a)
        try:
            self.sock_b = _packet_socket(b)
        except BaseException:
            self.sock_a.close()
            raise
        # frames received on a wait in q_ab and go out of b; frames received on b, the reverse
        self.q_ab: DelayQueue[bytes] = DelayQueue(delay_s, max_queued)
        self.q_ba: DelayQueue[bytes] = DelayQueue(delay_s, max_queued)
        self.forwarded = {"a->b": 0, "b->a": 0}
        self.send_errors = {"a->b": 0, "b->a": 0}

    def close(self) -> None:
        """Close both sockets (frames still queued are dropped)."""
        self.sock_a.close()
        self.sock_b.close()

    def _drain(self, sock: socket.socket, queue: DelayQueue[bytes], now: float) -> None:
        for _ in range(1024):  # bounded, so releases are not starved under a flood
            try:
                frame, addr = sock.recvfrom(MAX_FRAME)
            except (BlockingIOError, InterruptedError):
                return
            if addr[2] == PACKET_OUTGOING:  # what this namespace itself sent on the iface
                continue
            queue.push(now, frame)

    def _release(self, now: float) -> None:
        for queue, sock, key in (
            (self.q_ab, self.sock_b, "a->b"),
            (self.q_ba, self.sock_a, "b->a"),
        ):
            for frame in queue.due(now):
                try:
                    sock.send(frame)
                    self.forwarded[key] += 1
                except OSError:  # ENOBUFS, ENETDOWN, EMSGSIZE: the frame is lost
                    self.send_errors[key] += 1

    def run(self, stop_fd: int | None = None, parent_pid: int | None = None) -> None:
        """Forward until `stop_fd` becomes readable or (when given) `parent_pid` is gone."""
        watched: list[object] = [self.sock_a, self.sock_b]
        if stop_fd is not None:
            watched.append(stop_fd)
        while True:
            now = time.monotonic()
            self._release(now)
            waits = [self.q_ab.next_timeout(now), self.q_ba.next_timeout(now), IDLE_TIMEOUT_S]
            timeout = min(w for w in waits if w is not None)
            readable, _, _ = select.select(watched, [], [], timeout)
            if stop_fd is not None and stop_fd in readable:
                return
            if parent_pid is not None and os.getppid() != parent_pid:
                return
            now = time.monotonic()
            if self.sock_a in readable:
                self._drain(self.sock_a, self.q_ab, now)
            if self.sock_b in readable:
                self._drain(self.sock_b, self.q_ba, now)

    def summary(self) -> str:
        """One line: frames forwarded, dropped (queue full) and lost (send errors) each way."""
        parts = []
        for key, queue in (("a->b", self.q_ab), ("b->a", self.q_ba)):
            parts.append(
                f"{key} {self.forwarded[key]} forwarded, {queue.dropped} dropped (queue full), "
                f"{self.send_errors[key]} send errors, {len(queue)} still queued"
            )
        return f"delay_line {self.a}<->{self.b}: " + "; ".join(parts)


def _exit_with_parent() -> int:
    """Ask the kernel for SIGTERM when the parent dies (prctl PR_SET_PDEATHSIG); the parent."""
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    except OSError:
        pass  # the getppid() check in the loop still catches it
    return parent


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: forward with a delay, or only turn offloads off."""
    ap = argparse.ArgumentParser(prog="python -m cloudseg.bench.delay_line", description=__doc__)
    ap.add_argument("--a", help="interface A (frames from A go out of B)")
    ap.add_argument("--b", help="interface B (frames from B go out of A)")
    ap.add_argument("--delay-ms", type=float, default=0.0, help="one-way delay, each direction")
    ap.add_argument(
        "--disable-offloads",
        nargs="+",
        metavar="IF",
        help="only turn off tx-csum/SG/TSO/GSO/GRO on these interfaces, then exit",
    )
    ap.add_argument(
        "--keep-offloads",
        action="store_true",
        help="do not turn off the offloads of A and B at start-up",
    )
    ap.add_argument(
        "--exit-with-parent", action="store_true", help="exit when the parent process dies"
    )
    args = ap.parse_args(argv)
    if args.disable_offloads:
        try:
            for ifname in args.disable_offloads:
                disable_offloads(ifname)
        except OSError as exc:
            print(f"delay_line: {exc}", file=sys.stderr, flush=True)
            return 1
        return 0
    if not args.a or not args.b:
        ap.error("--a and --b are needed (or --disable-offloads)")
    if args.delay_ms < 0:
        ap.error("--delay-ms must be >= 0")
    return run_delay_line(
        args.a,
        args.b,
        args.delay_ms,
        keep_offloads=args.keep_offloads,
        exit_with_parent=args.exit_with_parent,
    )


def run_delay_line(
    a: str,
    b: str,
    delay_ms: float,
    *,
    keep_offloads: bool = False,
    exit_with_parent: bool = False,
) -> int:
    """Forward between interfaces ``a`` and ``b`` with ``delay_ms`` each way until SIGTERM or
    SIGINT (or the parent's exit); prints a ready line and a summary. 1 on a socket error."""
    try:
        parent = _exit_with_parent() if exit_with_parent else None
        if not keep_offloads:
            for ifname in (a, b):
                disable_offloads(ifname)
        line = DelayLine(a, b, delay_ms / 1000.0)
    except OSError as exc:
        print(f"delay_line: {exc}", file=sys.stderr, flush=True)
        return 1

    stop_r, stop_w = os.pipe()
    os.set_blocking(stop_w, False)

    def _stop(signum: int, frame: object) -> None:
        with contextlib.suppress(BlockingIOError):
            os.write(stop_w, b"x")

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _stop)
    print(f"delay_line: ready {a}<->{b} delay {delay_ms:g} ms each way", flush=True)
    try:
        line.run(stop_fd=stop_r, parent_pid=parent)
    finally:
        line.close()
        print(line.summary(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
