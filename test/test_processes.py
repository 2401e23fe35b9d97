"""cloudseg.processes: start, stop with a grace period, kill after it, exit, RSS, log tail."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cloudseg.processes import ManagedProcess, process_group, read_tail, rss_mb, stop_all
from support import wait_until

#: prints "ready", then exits 0 on SIGINT
POLITE = (
    "import signal, sys, time\n"
    "signal.signal(signal.SIGINT, lambda *a: sys.exit(0))\n"
    "print('ready', flush=True)\n"
    "while True: time.sleep(0.05)\n"
)
#: ignores SIGINT and leaves a grandchild in its group
STUBBORN = (
    "import signal, subprocess, sys, time\n"
    "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
    "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
    "print('ready', flush=True)\n"
    "while True: time.sleep(0.05)\n"
)


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_own_group_grace_stop_and_log_tail(tmp_path: Path) -> None:
    p = ManagedProcess.start(_python(POLITE), name="polite", log=tmp_path / "p.log", own_group=True)
    try:
        assert wait_until(lambda: "ready" in p.log_text(), 10)
        assert os.getpgid(p.pid) == p.pid  # its own group
        assert p.alive() and p.poll() is None and p.exited_at is None
        assert p.group_pids() == [p.pid]
        rss = p.rss_mb()
        assert rss is not None and 1 < rss < 1000
        assert p.log_tail(3) == "dy\n"
        stopped = p.stop(grace=10)
    finally:
        p.kill()
    assert stopped.code == 0 and stopped.leftover == []
    assert stopped.seconds < 10
    assert not p.alive() and p.returncode == 0 and p.exited_at is not None
    assert p.rss_mb() is None


def test_kill_after_grace_takes_the_group(tmp_path: Path) -> None:
    p = ManagedProcess.start(_python(STUBBORN), log=tmp_path / "s.log", own_group=True)
    try:
        assert wait_until(lambda: "ready" in p.log_text(), 10)
        assert wait_until(lambda: len(p.group_pids()) == 2, 10)
        stopped = p.stop(grace=0.5)
    finally:
        p.kill()
    assert stopped.code == -signal.SIGKILL
    assert 0.5 <= stopped.seconds < 10
    assert wait_until(lambda: process_group(p.pid) == [], 10)  # the grandchild went too


def test_leftover_in_group_is_reported_and_killed(tmp_path: Path) -> None:
    code = STUBBORN.split("\n")[2]  # start a grandchild and exit
    p = ManagedProcess.start(_python("import subprocess, sys\n" + code), own_group=True)
    assert p.wait(30) == 0
    stopped = p.stop(grace=1)
    assert stopped.code == 0 and len(stopped.leftover) == 1
    assert wait_until(lambda: process_group(p.pid) == [], 10)


def test_exit_seen_env_prefix_and_popen_interface(tmp_path: Path) -> None:
    log = tmp_path / "e.log"
    p = ManagedProcess.start(
        _python("import os, sys; print(os.environ['CLOUDSEG_T']); sys.exit(3)"),
        name="env",
        env={**os.environ, "CLOUDSEG_T": "seen"},
        log=log,
        prefix=["env", "CLOUDSEG_X=1"],
    )
    assert p.wait_exit(30) == 3
    assert p.returncode == 3 and p.exited_at is not None and p.name == "env"
    assert p.log_text() == "seen\n" and read_tail(log, 5) == "seen\n"
    assert p.stop().code == 3  # stopping an ended process only reports it


def test_wait_times_out_like_popen() -> None:
    p = ManagedProcess.start(_python(POLITE))
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            p.wait(0.1)
        assert p.wait_exit(0.1) is None
    finally:
        p.kill()
    assert p.wait(10) == -signal.SIGKILL
    assert p.log_tail() == ""  # no log file


def test_stop_all_shares_one_grace(tmp_path: Path) -> None:
    polite = ManagedProcess.start(_python(POLITE), name="a", log=tmp_path / "a.log")
    stubborn = ManagedProcess.start(
        _python(STUBBORN), name="b", log=tmp_path / "b.log", own_group=True
    )
    for p in (polite, stubborn):
        assert wait_until(lambda p=p: "ready" in p.log_text(), 10)
    t0 = time.monotonic()
    codes = stop_all([polite, stubborn], grace=1.0)
    assert codes == {"a": 0, "b": -signal.SIGKILL}
    assert time.monotonic() - t0 < 8
    assert rss_mb(stubborn.pid) is None


def test_stop_signals_the_group(tmp_path: Path) -> None:
    p = ManagedProcess.start(_python(STUBBORN), log=tmp_path / "g.log", own_group=True)
    assert wait_until(lambda: len(p.group_pids()) == 2, 10)
    grandchild = next(pid for pid in p.group_pids() if pid != p.pid)
    stopped = p.stop(grace=0.5, group=True)  # SIGINT ends the grandchild, not its parent
    assert stopped.code == -signal.SIGKILL and stopped.leftover == []
    assert rss_mb(grandchild) is None
    with pytest.raises(ValueError, match="no process group"):
        ManagedProcess(p.popen, "x").signal_group(signal.SIGINT)


def test_default_sigint_undoes_an_inherited_ignore() -> None:
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)  # as in a `cmd &` test run
    try:
        inherits = ManagedProcess.start(["sleep", "30"])
        restored = ManagedProcess.start(["sleep", "30"], default_sigint=True)
    finally:
        signal.signal(signal.SIGINT, before)
    assert restored.stop(grace=5).code == -signal.SIGINT
    assert inherits.stop(grace=0.5).code == -signal.SIGKILL


def test_follow_log_yields_lines_as_written(tmp_path: Path) -> None:
    code = (
        "import time\n"
        "for i in range(3):\n"
        "    print(i, flush=True); time.sleep(0.2)\n"
        "print('end', end='')"
    )
    p = ManagedProcess.start(_python(code), log=tmp_path / "f.log")
    seen = []
    for line in p.follow_log():
        seen.append((line, p.poll() is None))
    assert [line for line, _ in seen] == ["0\n", "1\n", "2\n", "end"]
    assert seen[0][1]  # the first line came while it still ran
