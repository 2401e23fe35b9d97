"""What many tests need: waiting for an event with a deadline, and DDS domains of their own.

Imported by test modules as `from support import ...` (pytest puts `test/` on the path)."""

from __future__ import annotations

import fcntl
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

#: ROS 2 domain ids whose Fast DDS ports stay below Linux's ephemeral range (ROS docs: 0..101).
DOMAIN_IDS = range(1, 102)
_LOCKS = Path(tempfile.gettempdir()) / "cloudseg-test-ros-domains"
_held: dict[int, IO] = {}
_order = random.Random(os.getpid()).sample(list(DOMAIN_IDS), len(DOMAIN_IDS))
_next = 0


def wait_until(
    condition: Callable[[], object],
    timeout: float,
    step: Callable[[], object] | None = None,
    poll_s: float = 0.05,
) -> bool:
    """True as soon as `condition()` holds, False when `timeout` s pass first. `step` runs
    between checks (spin a node, feed a frame); without one the wait sleeps `poll_s`."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return bool(condition())
        if step is None:
            time.sleep(poll_s)
        else:
            step()


def spin_until(node, condition: Callable[[], object], timeout: float, spin_s: float = 0.05) -> bool:
    """`wait_until` that spins `node` (rclpy, global context) between checks."""
    import rclpy

    return wait_until(condition, timeout, lambda: rclpy.spin_once(node, timeout_sec=spin_s))


def spin_for(node, seconds: float, spin_s: float = 0.02) -> None:
    """Spin `node` for `seconds` (to let discovery or a stream run on; not a wait for an event)."""
    import rclpy

    end = time.monotonic() + seconds
    while time.monotonic() < end:
        rclpy.spin_once(node, timeout_sec=spin_s)


def running(process) -> bool:
    """A `psutil.Process` still runs (not a zombie)."""
    import psutil

    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def claim_ros_domain() -> int:
    """A ROS domain id no other process on this host holds: a lock file under the temp folder,
    held until `release_ros_domain` or this process ends. Test sessions, xdist workers and the
    node processes a test starts (they inherit the id) never share discovery with another
    test's, whatever ROS_DOMAIN_ID the developer's shell sets. Each claim moves on along this
    process's own order, so a domain just released (killed nodes may linger on it) is reused
    last."""
    global _next
    _LOCKS.mkdir(exist_ok=True)
    for i in range(len(_order)):
        at = (_next + i) % len(_order)
        domain = _order[at]
        if domain in _held:
            continue
        handle = (_LOCKS / f"{domain}.lock").open("w")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            continue
        _held[domain] = handle
        _next = at + 1
        return domain
    raise RuntimeError(f"every ROS domain id in {DOMAIN_IDS} is held by another test process")


def release_ros_domain(domain: int) -> None:
    """Let another test process claim `domain` again."""
    handle = _held.pop(domain, None)
    if handle is not None:
        handle.close()


def ros2_command() -> str | None:
    """The `ros2` command: this venv's (the wheels), else a ROS install's on PATH."""
    own = Path(sys.prefix) / "bin" / "ros2"
    return str(own) if own.is_file() else shutil.which("ros2")
