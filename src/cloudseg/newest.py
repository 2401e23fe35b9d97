"""Newest first: a worker thread that processes only the newest item offered to it (no ROS).

The cloud's nodes receive faster than they can process on a CPU: a frame that waited is worth
less than a new one. Their subscription callbacks only `offer` what arrived (cheap: decoding
keeps the H.264 chain); the worker takes the newest item when it is free, and an item replaced
before the worker took it is *skipped* (counted). `stop` ends the worker after the item it
holds and joins it, before the node that owns it is destroyed. `Recent` keeps the companions
of recent items by key (a split cloud's RestoredInfo by stamp) for the worker to look up.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)

log = logging.getLogger(__name__)


class NewestFirst(Generic[T]):
    """A worker thread calling ``handle(item, skipped)`` on the newest item offered.

    ``skipped``: items skipped so far, when this one was taken (items offered = items handled
    + skipped + the one pending). ``keep(pending)``: True when a pending item must not be
    replaced (a newer one is then skipped instead; e.g. a profiling frame that comes once).
    ``on_error(item, exc)``: an exception from ``handle`` (the worker keeps serving); logged
    when not given.
    """

    def __init__(
        self,
        handle: Callable[[T, int], None],
        name: str = "newest-first",
        keep: Callable[[T], bool] | None = None,
        on_error: Callable[[T, Exception], None] | None = None,
    ) -> None:
        self.handle, self.keep, self.on_error = handle, keep, on_error
        self.skipped = 0
        self.handled = 0
        self._pending: T | None = None
        self._has_pending = False
        self._stopping = False
        self._wake = threading.Condition()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def offer(self, item: T) -> bool:
        """Hand over the newest item; False when it was skipped at once (`keep`)."""
        with self._wake:
            if self._has_pending:
                self.skipped += 1
                if self.keep is not None and self.keep(self._pending):
                    return False
            self._pending, self._has_pending = item, True
            self._wake.notify()
        return True

    def _loop(self) -> None:
        while True:
            with self._wake:
                while not self._has_pending and not self._stopping:
                    self._wake.wait()
                if self._stopping:
                    return
                item, skipped = self._pending, self.skipped
                self._pending, self._has_pending = None, False
            try:
                self.handle(item, skipped)
            except Exception as exc:  # keep serving; the owner says what failed
                if self.on_error is None:
                    log.exception("%s: item failed", self._thread.name)
                else:
                    self.on_error(item, exc)
            finally:
                self.handled += 1

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop after the item in hand (a pending one is dropped) and join; False when the
        thread is still running after `timeout` seconds."""
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)
        return not self._thread.is_alive()


class Recent(Generic[K, T]):
    """The last ``size`` values put, by key (thread-safe): one thread puts, another gets, and
    may wait a little for a value that is late."""

    def __init__(self, size: int = 64) -> None:
        self.size = max(1, int(size))
        self._values: OrderedDict[K, T] = OrderedDict()
        self._changed = threading.Condition()

    def put(self, key: K, value: T) -> None:
        with self._changed:
            self._values[key] = value
            self._values.move_to_end(key)
            while len(self._values) > self.size:
                self._values.popitem(last=False)
            self._changed.notify_all()

    def __len__(self) -> int:
        with self._changed:
            return len(self._values)

    def get(self, key: K, timeout: float = 0.0) -> T | None:
        """The value of `key`, waiting up to `timeout` seconds for it; None if none came."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while key not in self._values:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._changed.wait(left)
            return self._values[key]
