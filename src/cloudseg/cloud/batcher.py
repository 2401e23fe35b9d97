"""Batches of the newest frame of each stream (no rclpy).

The cloud receives from many vehicles; the GPU is best used on batches. Each stream has at
most one frame waiting: a newer frame of the same stream replaces it (the replaced one is
*skipped*, counted per stream: a frame that waited is worth less than a new one), unless
``keep`` says the waiting one must stay (the controller's profiling frame, which comes once;
the newer one is then skipped). A batch is taken when ``max_batch`` streams have a frame
waiting, or ``max_wait_ms`` after the oldest waiting frame arrived, oldest first; its frames
are grouped by ``key`` (size, scale, mode: one inference call per group), and ``handle`` is
called once per group in the batcher's worker thread. While the worker runs a batch, the
next one collects (decoding, in the node's callbacks, overlaps inference).

`poll` is the pure core (tests drive it with their own clock); `start` runs the worker.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")

log = logging.getLogger(__name__)


@dataclass
class Entry(Generic[T]):
    """A frame in a batch: its stream, the item, and the stream's frames skipped so far."""

    stream_id: str
    item: T
    skipped: int
    arrived: float


@dataclass
class Group(Generic[T]):
    """Frames of one batch that share a key (one inference call)."""

    key: Hashable
    entries: list[Entry[T]]
    batch_size: int  # frames in the whole batch (all groups)


class Batcher(Generic[T]):
    """Newest frame per stream, taken in batches; see the module docstring."""

    def __init__(
        self,
        handle: Callable[[Group[T]], None],
        key: Callable[[T], Hashable],
        max_batch: int = 8,
        max_wait_ms: float = 5.0,
        keep: Callable[[T], bool] | None = None,
        on_error: Callable[[Group[T], Exception], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        name: str = "batcher",
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {max_wait_ms}")
        self.handle, self.key, self.keep, self.on_error = handle, key, keep, on_error
        self.max_batch = int(max_batch)
        self.max_wait_s = float(max_wait_ms) / 1e3
        self.clock = clock
        self.name = name
        self.skipped: dict[str, int] = {}
        self.batches = 0
        self.frames = 0  # frames handed to `handle`
        self._pending: dict[str, Entry[T]] = {}  # insertion order = arrival order
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None

    # --- the pure core ------------------------------------------------------------------------

    def offer(self, stream_id: str, item: T) -> bool:
        """Hand over a stream's newest frame; False when it was skipped at once (`keep`)."""
        with self._cond:
            waiting = self._pending.get(stream_id)
            if waiting is not None:
                self.skipped[stream_id] = self.skipped.get(stream_id, 0) + 1
                if self.keep is not None and self.keep(waiting.item):
                    return False
                del self._pending[stream_id]  # the newer frame queues as a new arrival
                arrived = waiting.arrived  # ... but the batch deadline keeps the old one's
            else:
                arrived = self.clock()
            skipped = self.skipped.get(stream_id, 0)
            self._pending[stream_id] = Entry(stream_id, item, skipped, arrived)
            self._cond.notify()
        return True

    def pending(self) -> int:
        with self._cond:
            return len(self._pending)

    def forget(self, stream_id: str) -> None:
        """Drop a stream's counters and waiting frame (the stream was forgotten)."""
        with self._cond:
            self._pending.pop(stream_id, None)
            self.skipped.pop(stream_id, None)

    def _due(self, now: float) -> float | None:
        """0 when a batch is due, else the seconds until one is (None: nothing waits)."""
        if not self._pending:
            return None
        if len(self._pending) >= self.max_batch:
            return 0.0
        oldest = min(e.arrived for e in self._pending.values())
        return max(0.0, oldest + self.max_wait_s - now)

    def poll(self, now: float | None = None) -> list[Group[T]]:
        """The groups of the batch that is due now (empty when none is): at most
        ``max_batch`` frames, the longest waiting first, grouped by ``key`` in order."""
        with self._cond:
            return self._take(self.clock() if now is None else now)

    def _take(self, now: float) -> list[Group[T]]:
        if self._due(now) != 0.0:
            return []
        entries = sorted(self._pending.values(), key=lambda e: e.arrived)[: self.max_batch]
        for e in entries:
            del self._pending[e.stream_id]
        groups: dict[Hashable, list[Entry[T]]] = {}
        for e in entries:
            groups.setdefault(self.key(e.item), []).append(e)
        return [Group(k, v, len(entries)) for k, v in groups.items()]

    # --- the worker ---------------------------------------------------------------------------

    def start(self) -> Batcher[T]:
        self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._stopping:
                        return
                    due = self._due(self.clock())
                    if due == 0.0:
                        groups = self._take(self.clock())
                        break
                    self._cond.wait(due)  # None: until a frame comes
            self.batches += 1
            for group in groups:
                self.frames += len(group.entries)
                try:
                    self.handle(group)
                except Exception as exc:  # keep serving; the owner says what failed
                    if self.on_error is None:
                        log.exception("%s: a batch failed", self.name)
                    else:
                        self.on_error(group, exc)

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop after the batch in hand (waiting frames are dropped) and join; False when the
        worker still runs after ``timeout`` seconds."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        return thread is None or not thread.is_alive()

    @property
    def batch_mean(self) -> float:
        """Mean frames per batch so far (0 before the first)."""
        return self.frames / self.batches if self.batches else 0.0
