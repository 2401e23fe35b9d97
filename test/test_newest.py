"""The newest-first worker of the cloud nodes and its companion store (no ROS)."""

from __future__ import annotations

import threading
import time

from cloudseg.newest import NewestFirst, Recent
from support import wait_until


def test_worker_takes_the_newest_item_and_counts_the_skipped():
    gate = threading.Event()
    handled: list[tuple[int, int]] = []

    def handle(item: int, skipped: int) -> None:
        gate.wait(5)
        handled.append((item, skipped))

    worker = NewestFirst(handle, name="test-worker")
    try:
        worker.offer(0)  # taken at once; the worker then waits at the gate
        wait_until(lambda: not worker._has_pending, 5, poll_s=0.01)
        for item in (1, 2, 3):  # 1 and 2 are replaced before the worker is free
            worker.offer(item)
        gate.set()
        wait_until(lambda: len(handled) >= 2, 5, poll_s=0.01)
    finally:
        assert worker.stop(5)
    assert handled == [(0, 0), (3, 2)]
    assert worker.skipped == 2 and worker.handled == 2 and not worker.running


def test_a_kept_item_is_not_replaced_and_errors_do_not_stop_the_worker():
    gate = threading.Event()
    handled, errors = [], []

    def handle(item: str, skipped: int) -> None:
        gate.wait(5)
        if item == "bad":
            raise ValueError("bad item")
        handled.append(item)

    worker = NewestFirst(
        handle, keep=lambda pending: pending == "profiling", on_error=lambda i, e: errors.append(i)
    )
    try:
        worker.offer("bad")
        wait_until(lambda: not worker._has_pending, 5, poll_s=0.01)
        assert worker.offer("profiling")
        assert not worker.offer("newer")  # the profiling item stays; this one is skipped
        gate.set()
        wait_until(lambda: handled, 5, poll_s=0.01)
    finally:
        assert worker.stop(5)
    assert errors == ["bad"] and handled == ["profiling"] and worker.skipped == 1


def test_stop_joins_an_idle_worker_at_once():
    worker = NewestFirst(lambda item, skipped: None)
    t0 = time.monotonic()
    assert worker.stop(5) and time.monotonic() - t0 < 1
    assert not worker.running


def test_recent_keeps_the_last_values_and_waits_for_a_late_one():
    recent: Recent[int, str] = Recent(size=2)
    for key in (1, 2, 3):
        recent.put(key, f"v{key}")
    assert recent.get(1) is None and recent.get(3) == "v3" and len(recent) == 2
    threading.Timer(0.05, recent.put, (4, "late")).start()
    assert recent.get(4, timeout=2.0) == "late"
    t0 = time.monotonic()
    assert recent.get(5, timeout=0.1) is None and time.monotonic() - t0 >= 0.09
