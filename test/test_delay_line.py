"""The user-space delay line: its queue (pure) and a ShapedLink with a delay (root, netns)."""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from cloudseg.bench import delay_line, netem
from cloudseg.bench.delay_line import DelayQueue
from cloudseg.processes import ManagedProcess
from support import wait_until

# --- the delay queue (pure) --------------------------------------------------------------------


def test_queue_releases_in_order_after_the_delay() -> None:
    q: DelayQueue[str] = DelayQueue(0.05)
    assert q.next_timeout(0.0) is None and q.due(10.0) == []
    q.push(1.0, "a")
    q.push(1.01, "b")
    q.push(1.02, "c")
    assert len(q) == 3
    assert q.next_timeout(1.0) == pytest.approx(0.05)
    assert q.due(1.049) == []
    assert q.due(1.05) == ["a"]
    assert q.next_timeout(1.05) == pytest.approx(0.01)
    assert q.due(2.0) == ["b", "c"]
    assert q.next_timeout(2.0) is None and len(q) == 0


def test_queue_overdue_timeout_is_zero_and_zero_delay_is_immediate() -> None:
    q: DelayQueue[int] = DelayQueue(0.1)
    q.push(0.0, 1)
    assert q.next_timeout(5.0) == 0.0
    z: DelayQueue[int] = DelayQueue(0.0)
    z.push(3.0, 7)
    assert z.next_timeout(3.0) == 0.0 and z.due(3.0) == [7]


def test_queue_full_drops_new_items() -> None:
    q: DelayQueue[int] = DelayQueue(1.0, max_items=2)
    assert q.push(0.0, 1) and q.push(0.0, 2)
    assert not q.push(0.0, 3)
    assert q.dropped == 1 and q.due(1.0) == [1, 2]


def test_cli_bad_interface_is_one_line_and_exit_1(capsys) -> None:
    assert delay_line.main(["--a", "nosuchif0", "--b", "nosuchif1", "--delay-ms", "5"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("delay_line:") and "nosuchif0" in err[0]


def test_negative_delay_is_refused() -> None:
    with pytest.raises(ValueError):
        netem.ShapedLink(1000, delay_ms=-1)


# --- over the namespaces (root) ----------------------------------------------------------------

needs_root = pytest.mark.skipif(
    netem.check_privileges() is not None, reason=str(netem.check_privileges())
)

ECHO = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("", int(sys.argv[1])))
s.settimeout(5.0)
print("ready", flush=True)
try:
    while True:
        data, addr = s.recvfrom(2048)
        s.sendto(data, addr)
except socket.timeout:
    pass
"""

PROBE = r"""
import json, socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(2.0)
rtts = []
for i in range(int(sys.argv[3])):
    t = time.monotonic()
    s.sendto(b"%d" % i, (sys.argv[1], int(sys.argv[2])))
    try:
        while s.recv(2048) != b"%d" % i:
            pass
        rtts.append((time.monotonic() - t) * 1000)
    except socket.timeout:
        rtts.append(None)
    time.sleep(0.05)
print(json.dumps(rtts), flush=True)
"""


def _udp_rtts_ms(
    link: netem.ShapedLink, log: Path, n: int = 6, port: int = 5999
) -> list[float | None]:
    """UDP round trips vehicle -> cloud -> vehicle (the first one also pays for ARP); the
    echo server's output goes to `log`."""
    echo = ManagedProcess.start(
        [sys.executable, "-c", ECHO, str(port)], prefix=link.exec_prefix("cloud"), log=log
    )
    try:
        assert wait_until(lambda: "ready" in echo.log_text() or not echo.alive(), 30)
        assert "ready" in echo.log_text(), echo.log_text()
        args = [link.cloud_ip, str(port), str(n)]
        probe = subprocess.run(
            [*link.exec_prefix("vehicle"), sys.executable, "-c", PROBE, *args],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert probe.returncode == 0, probe.stderr
        return json.loads(probe.stdout)
    finally:
        echo.stop(grace=5, sig=signal.SIGTERM)


def _vehicle_offloads(link: netem.ShapedLink) -> dict[str, bool | None]:
    code = "import json, sys; from cloudseg.bench import delay_line as d; "
    code += "print(json.dumps(d.get_offloads(sys.argv[1])))"
    out = subprocess.run(
        [*link.exec_prefix("vehicle"), sys.executable, "-c", code, link.vehicle_if],
        capture_output=True,
        text=True,
        env=netem._forwarder_env(),
        check=True,
    )
    return json.loads(out.stdout)


@needs_root
def test_delay_40_ms_each_way_gives_80_ms_round_trip_and_close_removes_all(tmp_path) -> None:
    link = netem.ShapedLink(4000, delay_ms=40)
    try:
        link.open()
        assert link.mid_ns is not None
        assert set(link.namespaces) <= set(netem.list_namespaces())
        assert len(link.namespaces) == 3
        assert not any(_vehicle_offloads(link).values())
        rtts = _udp_rtts_ms(link, tmp_path / "echo.log")
    finally:
        link.close()
    mine = [n for n in netem.list_namespaces() if n in link.namespaces]
    assert mine == [], f"namespaces left behind: {mine}"
    assert all(r is not None for r in rtts), f"lost probes: {rtts}"
    rtt = statistics.median(r for r in rtts[1:] if r is not None)
    assert 70 <= rtt <= 200, f"median RTT {rtt:.1f} ms (all: {rtts}); {link.forwarder_summary}"
    assert "forwarded" in link.forwarder_summary


@needs_root
def test_no_delay_is_a_plain_veth_pair(tmp_path) -> None:
    with netem.ShapedLink(4000) as link:
        assert link.mid_ns is None and len(link.namespaces) == 2
        # no middle namespace of this link (another test process may hold one of its own)
        assert f"{netem.PREFIX}mid-{os.getpid()}" not in netem.list_namespaces()
        rtts = _udp_rtts_ms(link, tmp_path / "echo.log")
    assert all(r is not None for r in rtts), f"lost probes: {rtts}"
    assert statistics.median(r for r in rtts if r is not None) < 20, rtts
    assert not set(link.namespaces) & set(netem.list_namespaces())


@needs_root
def test_forwarder_failing_to_start_says_why_and_leaves_nothing(monkeypatch) -> None:
    real = netem.ShapedLink._delay_line

    def broken(self: netem.ShapedLink, ns: str, *args: str) -> list[str]:
        return real(self, ns, *("nosuchif0" if a == self.mid_if_a else a for a in args))

    monkeypatch.setattr(netem.ShapedLink, "_delay_line", broken)
    link = netem.ShapedLink(1000, delay_ms=10)
    with pytest.raises(netem.NetemError, match=r"did not start.*nosuchif0") as info:
        link.open()
    assert "\n" not in str(info.value)
    assert not set(link.namespaces) & set(netem.list_namespaces())
