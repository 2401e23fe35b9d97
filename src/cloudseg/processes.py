"""Child processes of the launcher, the benchmarks and the tests: start a command (a node, a
gate, a helper) with its own environment and log, optionally in its own process group or under
a command prefix (`ip netns exec NS`), stop it with a grace period, see it exit, read its
resident memory and the tail of its log.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path


def rss_mb(pid: int) -> float | None:
    """Resident set size of a process in MiB (/proc), None when it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def process_group(pgid: int) -> list[int]:
    """Pids of the live (not zombie) processes in process group `pgid`."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()  # after "pid (comm) ": state ppid pgrp
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] != "Z":
            pids.append(int(entry))
    return pids


def read_tail(path: Path, max_chars: int = 4000) -> str:
    """The last `max_chars` characters of a text file ('' when it cannot be read)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(f.tell() - 4 * max_chars, 0))  # room for multi-byte characters
            return f.read().decode(errors="replace")[-max_chars:]
    except OSError:
        return ""


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


_PR_SET_PDEATHSIG = 1


@functools.cache
def _prctl():
    """libc's prctl (Linux), looked up in the parent: the child only calls it."""
    return ctypes.CDLL(None, use_errno=True).prctl


def _preexec(default_sigint: bool, die_with_parent: bool, prctl) -> Callable[[], None] | None:
    """What the child runs before exec: SIGINT back to the default, and SIGTERM when the
    process that started it dies (a child in a session of its own is not reached by what ends
    ours, e.g. a SIGKILL)."""
    if not (default_sigint or die_with_parent):
        return None

    def run() -> None:
        if default_sigint:
            _default_sigint()
        if die_with_parent:
            prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)

    return run


@dataclass(frozen=True)
class Stopped:
    """How a stop went: the exit code, the seconds it took, and the pids left in the process's
    group after it exited (killed; always empty without an own group)."""

    code: int
    seconds: float
    leftover: list[int] = field(default_factory=list)


class ManagedProcess:
    """One started process. Offers Popen's `pid`, `returncode`, `poll`, `wait`,
    `send_signal` and `kill`, so it stands where a Popen did."""

    def __init__(
        self,
        popen: subprocess.Popen,
        name: str = "",
        log: Path | None = None,
        own_group: bool = False,
    ) -> None:
        self.popen = popen
        self.name = name or str(popen.pid)
        self.log = log
        self.own_group = own_group
        #: time.monotonic() when the exit was first seen (poll, wait or stop)
        self.exited_at: float | None = None

    @classmethod
    def start(
        cls,
        cmd: Sequence[str],
        *,
        name: str = "",
        env: Mapping[str, str] | None = None,
        log: Path | None = None,
        own_group: bool = False,
        prefix: Sequence[str] = (),
        cwd: Path | None = None,
        stdin: int | None = None,
        default_sigint: bool = False,
        append: bool = False,
        die_with_parent: bool = False,
    ) -> ManagedProcess:
        """Start `cmd` (run under `prefix`, e.g. `ip netns exec NS`). `env`: the whole
        environment (None: this process's). `log`: a file for its stdout and stderr (None: they
        go where ours go; `append`: after what it holds, e.g. a restarted server's).
        `own_group`: a new session, so that a terminal's Ctrl-C reaches only us and
        `stop`/`kill` reach everything it started. `default_sigint`: SIGINT acts in the
        child as from a terminal even when we ignore it (a test run started with `cmd &`).
        `die_with_parent`: it gets SIGTERM when we die (Linux), also from a SIGKILL."""
        full = [*prefix, *cmd]
        kwargs: dict = dict(env=None if env is None else dict(env), cwd=cwd, stdin=stdin)
        prctl = _prctl() if die_with_parent and sys.platform == "linux" else None
        preexec = _preexec(default_sigint, prctl is not None, prctl)
        if preexec is not None:
            kwargs["preexec_fn"] = preexec
        if log is None:
            popen = subprocess.Popen(full, start_new_session=own_group, **kwargs)
        else:
            Path(log).parent.mkdir(parents=True, exist_ok=True)
            with open(log, "a" if append else "w") as out:  # the child keeps its own descriptor
                popen = subprocess.Popen(
                    full,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=own_group,
                    **kwargs,
                )
        return cls(popen, name, Path(log) if log is not None else None, own_group)

    # Popen's interface ------------------------------------------------------------------------

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        return self.poll()

    def poll(self) -> int | None:
        code = self.popen.poll()
        if code is not None and self.exited_at is None:
            self.exited_at = time.monotonic()
        return code

    def wait(self, timeout: float | None = None) -> int:
        """The exit code; subprocess.TimeoutExpired after `timeout` seconds (as Popen.wait)."""
        code = self.popen.wait(timeout)
        self.poll()
        return code

    def send_signal(self, sig: int) -> None:
        """`sig` to the process itself (not its group), when it still runs."""
        if self.poll() is None:
            self.popen.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL to the process, and to its whole group when it has its own."""
        if self.own_group:
            self.signal_group(signal.SIGKILL)
        elif self.poll() is None:
            self.popen.kill()

    # Beyond Popen ----------------------------------------------------------------------------

    def alive(self) -> bool:
        return self.poll() is None

    def wait_exit(self, timeout: float | None = None) -> int | None:
        """The exit code, or None when it still runs after `timeout` seconds."""
        try:
            return self.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(
        self, grace: float = 5.0, sig: int | None = signal.SIGINT, group: bool = False
    ) -> Stopped:
        """Send `sig` (when it still runs; None: it was already asked) to the process, or to its
        whole group with `group`; wait up to `grace` seconds, then SIGKILL it (its group with an
        own group); what is left in its group after it exited is killed too."""
        t0 = time.monotonic()
        if sig is not None and group:
            self.signal_group(sig)
        elif sig is not None:
            self.send_signal(sig)
        code = self.wait_exit(grace)
        if code is None:
            self.kill()
            code = self.wait()
        leftover = self.group_pids()
        if leftover:
            self.signal_group(signal.SIGKILL)
        return Stopped(code, time.monotonic() - t0, leftover)

    def group_pids(self) -> list[int]:
        """Live pids of its process group (empty without an own group)."""
        return process_group(self.pid) if self.own_group else []

    def rss_mb(self) -> float | None:
        """Its resident set size in MiB, None once it is gone."""
        return None if self.poll() is not None else rss_mb(self.pid)

    def log_text(self) -> str:
        """Everything in its log so far ('' without a log)."""
        return self.log.read_text(errors="replace") if self.log and self.log.exists() else ""

    def log_tail(self, max_chars: int = 4000) -> str:
        """The last `max_chars` characters of its log ('' without a log)."""
        return read_tail(self.log, max_chars) if self.log else ""

    def follow_log(self, poll: float = 0.01) -> Iterator[str]:
        """The lines of its log as it writes them, until it has exited and all are read."""
        if self.log is None:
            raise ValueError(f"{self.name} has no log to follow")
        with open(self.log, errors="replace") as f:
            partial = ""
            while True:
                ended = self.poll() is not None  # before reading: nothing is written after
                chunk = f.read()
                if chunk:
                    *lines, partial = (partial + chunk).split("\n")
                    yield from (line + "\n" for line in lines)
                elif ended:
                    if partial:
                        yield partial
                    return
                else:
                    time.sleep(poll)

    def signal_group(self, sig: int) -> None:
        """`sig` to every process of its group (it must have its own group)."""
        if not self.own_group:
            raise ValueError(f"{self.name} has no process group of its own")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, sig)

    def __repr__(self) -> str:
        return f"ManagedProcess({self.name!r}, pid={self.pid}, returncode={self.popen.returncode})"


def stop_all(
    processes: Iterable[ManagedProcess], grace: float = 5.0, sig: int = signal.SIGINT
) -> dict[str, int]:
    """Stop processes together: `sig` to each, one shared `grace` period, then SIGKILL to
    those still running; {name: exit code}."""
    processes = list(processes)
    for p in processes:
        p.send_signal(sig)
    deadline = time.monotonic() + grace
    return {p.name: p.stop(max(deadline - time.monotonic(), 0.1), None).code for p in processes}
