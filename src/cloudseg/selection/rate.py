"""Frame-rate cap: keep at most `max_fps` frames per second of capture time."""

from __future__ import annotations


class RateCap:
    """Decides by capture stamp whether a frame fits under the cap (0 = no cap).

    A frame passes when at least 1/max_fps has passed since the last frame that passed, with a
    small tolerance so that a 17 fps camera capped at 17 fps keeps every frame despite jitter.
    """

    TOLERANCE = 0.1  # fraction of the interval

    def __init__(self, max_fps: float = 0.0) -> None:
        self.max_fps = max_fps
        self._last_ns: int | None = None

    @property
    def max_fps(self) -> float:
        return self._max_fps

    @max_fps.setter
    def max_fps(self, value: float) -> None:
        if value < 0:
            raise ValueError(f"max_fps must be >= 0, got {value}")
        self._max_fps = float(value)

    def admit(self, stamp_ns: int) -> bool:
        """True if the frame captured at `stamp_ns` should go out."""
        if self._max_fps > 0 and self._last_ns is not None and stamp_ns >= self._last_ns:
            interval_ns = 1e9 / self._max_fps * (1 - self.TOLERANCE)
            if stamp_ns - self._last_ns < interval_ns:
                return False
        self._last_ns = stamp_ns
        return True
