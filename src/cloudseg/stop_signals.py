"""Ctrl-C and SIGTERM as a request to stop, raised only where that is safe.

Python's default SIGINT handler raises KeyboardInterrupt wherever the main thread happens to be:
inside rclpy turning a message into Python (pybind11 then reports "Unable to convert call
argument '0' to Python object" instead), inside a `finally` that is cleaning up, or, with a
second signal, in a destructor. rclpy's own handlers shut the context down under nodes whose
worker threads still publish ("publisher's context is invalid"). `StopSignals` replaces both:
while `raising` it raises KeyboardInterrupt once (code that never enters rclpy: startup,
scoring); otherwise it only records the signal, and the loops that spin rclpy read
`requested` or call `check()` between turns. Any later signal is only recorded, so cleanup is
never interrupted.

Plain Python: no ROS import. Install it in the main thread (Python runs signal handlers there).
"""

from __future__ import annotations

import signal
from types import FrameType

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

#: The exit status of a command stopped by Ctrl-C (128 + SIGINT), as shells report it.
INTERRUPTED_EXIT = 130


class StopSignals:
    """SIGINT and SIGTERM recorded in `requested` (the first signal's number); while `raising`,
    the first one also raises KeyboardInterrupt. A context manager: the previous handlers come
    back on exit."""

    def __init__(self, raising: bool = False, signals: tuple[int, ...] = STOP_SIGNALS) -> None:
        self.raising = raising
        self.signals = signals
        self.requested: int | None = None
        self._previous: dict[int, object] = {}

    def install(self) -> StopSignals:
        """Take the signals over. A stop that an enclosing StopSignals recorded (a signal
        before this one took over, e.g. `cloudseg`'s start-up guard) moves here: recorded, and
        raised now in raising mode (after the previous handlers are back)."""
        for sig in self.signals:
            previous = signal.signal(sig, self._handle)
            self._previous[sig] = previous
            owner = getattr(previous, "__self__", None)
            if isinstance(owner, StopSignals) and owner.requested is not None:
                self.requested, owner.requested = owner.requested, None  # taken over
        if self.requested is not None and self.raising:
            self.restore()
            raise KeyboardInterrupt
        return self

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._previous.clear()

    def _handle(self, sig: int, _frame: FrameType | None) -> None:
        first = self.requested is None
        if first:
            self.requested = sig
        if first and self.raising:
            self.raising = False  # once: a second Ctrl-C must not break the cleanup
            raise KeyboardInterrupt

    def check(self) -> None:
        """Raise KeyboardInterrupt here when a stop was asked for (a loop's safe point)."""
        if self.requested is not None:
            raise KeyboardInterrupt

    def __enter__(self) -> StopSignals:
        return self.install()

    def __exit__(self, *exc: object) -> None:
        self.restore()
