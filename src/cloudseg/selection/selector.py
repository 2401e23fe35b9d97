"""Two-level frame selection on the vehicle (CloudSeg, Section 3.2): KEY, USEFUL or STALE.

Each camera frame's deviation is measured against the last KEY frame and against the last
frame sent. Above ``key_threshold`` (against either) a frame is KEY: it starts an H.264 IDR.
Above ``useful_threshold`` against the last frame sent it is USEFUL: a P-frame. Otherwise it is
STALE and not sent at all. Bounds keep a static scene fresh: a KEY frame at least every
``max_key_interval`` seconds and a sent frame at least every ``max_gap`` seconds (of capture
time). A scene cut deviates far from the last frame sent, so it is KEY at once.

The deviation measure is pluggable (:class:`DeviationMeasure`): ``pixel`` (a small grayscale
copy, :mod:`cloudseg.selection.pixel`), ``learned`` (a small network predicting the fraction of
labels that changed, :mod:`cloudseg.selection.learned`) or ``off`` (every frame is sent).
Plain Python: the ``frame_selector`` node, the demo, ``cloudseg bench selector`` and the tests
share it.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, replace
from enum import IntEnum
from typing import Any, Protocol

import numpy as np

from cloudseg.selection.rate import RateCap

MODES = ("pixel", "learned", "off")

#: Thresholds each mode uses unless told otherwise: (key, useful). Pixel deviation is the mean
#: absolute grey-level difference of a small copy (0..1); learned deviation is the predicted
#: fraction of pixels whose label changed (0..1). Chosen from `cloudseg bench selector`
#: (docs/benchmarks/selector.md, "Frame selection").
DEFAULT_THRESHOLDS: dict[str, tuple[float, float]] = {
    "pixel": (0.15, 0.0075),
    "learned": (0.40, 0.06),
    "off": (0.0, 0.0),
}


class Level(IntEnum):
    """Selection levels; USEFUL and KEY have the values of `Frame.LEVEL_*`."""

    STALE = 0
    USEFUL = 1
    KEY = 2


class DeviationMeasure(Protocol):
    """How different two frames are: features once per frame, then a cheap comparison."""

    name: str

    def features(self, rgb: np.ndarray) -> Any:
        """What the measure keeps of a frame (e.g. a small grey copy)."""

    def deviation(self, reference: Any, current: Any) -> float:
        """0 for the same frame, growing with the change (roughly 0..1)."""


class SelectionError(ValueError):
    """Settings that cannot work (thresholds out of order, unknown mode, ...)."""


def _check_threshold(name: str, value: float) -> float:
    value = float(value)
    if not math.isfinite(value) or value < 0 or value > 1:
        raise SelectionError(f"{name} must be a number in 0..1, got {value!r}")
    return value


@dataclass(frozen=True)
class SelectorSettings:
    """The selector's knobs; thresholds of 0 (both) mean the mode's defaults."""

    mode: str = "pixel"
    key_threshold: float = 0.0
    useful_threshold: float = 0.0
    max_key_interval: float = 1.0  # seconds of capture time
    max_gap: float = 0.5  # seconds of capture time
    max_fps: float = 0.0  # frame-rate cap before selection (0 = none)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise SelectionError(f"unknown selection mode {self.mode!r}; known: {', '.join(MODES)}")
        key = _check_threshold("key_threshold", self.key_threshold)
        useful = _check_threshold("useful_threshold", self.useful_threshold)
        if (key or useful) and useful > key:
            raise SelectionError(
                f"useful_threshold ({useful:g}) must not be above key_threshold ({key:g})"
            )
        for name in ("max_key_interval", "max_gap", "max_fps"):
            value = float(getattr(self, name))
            if not math.isfinite(value) or value < 0:
                raise SelectionError(f"{name} must be >= 0, got {value!r}")

    @property
    def thresholds(self) -> tuple[float, float]:
        """(key, useful) in force: the given ones, or the mode's defaults when both are 0."""
        if self.key_threshold or self.useful_threshold:
            return self.key_threshold, self.useful_threshold
        return DEFAULT_THRESHOLDS[self.mode]

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> SelectorSettings:
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in params.items() if k in names})

    def with_changes(self, **changes: Any) -> SelectorSettings:
        """A copy with ``changes`` (validated; raises SelectionError saying why)."""
        return replace(self, **changes)

    def with_knob(
        self, key_threshold: float, useful_threshold: float, max_fps: float, mode: str = ""
    ) -> SelectorSettings:
        """The settings a Knob asks for: thresholds both 0 and an empty mode keep the current
        ones; anything invalid raises SelectionError and changes nothing."""
        changes: dict[str, Any] = {"max_fps": float(max_fps)}
        if mode:
            changes["mode"] = mode
        if key_threshold or useful_threshold:  # NaN is truthy: it is checked, and refused
            changes["key_threshold"] = float(key_threshold)
            changes["useful_threshold"] = float(useful_threshold)
        return self.with_changes(**changes)

    def describe(self) -> str:
        if self.mode == "off":
            return f"off (every frame sent, KEY every {self.max_key_interval:g} s)"
        key, useful = self.thresholds
        return (
            f"{self.mode}: KEY >= {key:g}, USEFUL >= {useful:g}, KEY at least every "
            f"{self.max_key_interval:g} s, a frame at least every {self.max_gap:g} s"
        )


@dataclass(frozen=True)
class Decision:
    """What the selector made of one frame."""

    level: Level
    deviation: float  # the deviation that decided (KEY: the larger of the two)
    reason: str  # "first", "deviation", "cut", "max_key_interval", "max_gap", "below", "off",
    # "rate_cap"
    deviation_key: float = 0.0  # against the last KEY frame
    deviation_sent: float = 0.0  # against the last frame sent

    @property
    def send(self) -> bool:
        return self.level != Level.STALE


def make_measure(mode: str, weights: str | None = None) -> DeviationMeasure | None:
    """The deviation measure of a mode (None for ``off``); ``weights`` for ``learned``."""
    if mode == "off":
        return None
    if mode == "pixel":
        from cloudseg.selection.pixel import PixelDeviation

        return PixelDeviation()
    if mode == "learned":
        from cloudseg.selection.learned import LearnedDeviation  # lazy: it imports torch

        return LearnedDeviation(weights or "default")
    raise SelectionError(f"unknown selection mode {mode!r}; known: {', '.join(MODES)}")


class FrameSelector:
    """Decides KEY / USEFUL / STALE for each frame of one camera stream.

    ``measures`` maps a mode to its measure (built on first use with :func:`make_measure`
    otherwise), so a Knob can switch modes at run time. New settings (:meth:`apply`) take
    effect at the next frame. ``counts`` tallies the levels.
    """

    def __init__(
        self,
        settings: SelectorSettings | None = None,
        measures: dict[str, DeviationMeasure | None] | None = None,
        learned_weights: str | None = None,
    ) -> None:
        self.settings = settings or SelectorSettings()
        self._measures: dict[str, DeviationMeasure | None] = dict(measures or {})
        self._learned_weights = learned_weights
        self._pending: SelectorSettings | None = None
        self._rate_cap = RateCap(self.settings.max_fps)
        self._key: tuple[int, Any] | None = None  # (stamp_ns, features) of the last KEY frame
        self._sent: tuple[int, Any] | None = None  # ... of the last frame sent
        self.counts: Counter[str] = Counter()
        self.measure(self.settings.mode)  # fail now (missing weights), not at the first frame

    def measure(self, mode: str) -> DeviationMeasure | None:
        if mode not in self._measures:
            self._measures[mode] = make_measure(mode, self._learned_weights)
        return self._measures[mode]

    @property
    def next_settings(self) -> SelectorSettings:
        """The settings the next frame will use (applied but not yet in force, or current)."""
        return self._pending or self.settings

    def apply(self, settings: SelectorSettings) -> None:
        """Use ``settings`` from the next frame on (a new mode is built now, so a missing
        weight file is refused here, not at the next frame)."""
        self.measure(settings.mode)
        self._pending = settings

    def restart(self) -> None:
        """Forget the reference frames: the next frame is KEY."""
        self._key = self._sent = None

    def select(self, rgb: np.ndarray, stamp_ns: int) -> Decision:
        """Decide for the frame captured at ``stamp_ns`` and remember it if it is sent."""
        if self._pending is not None:
            if self._pending.mode != self.settings.mode:
                self.restart()  # deviations of another measure cannot be compared
            self.settings, self._pending = self._pending, None
            self._rate_cap.max_fps = self.settings.max_fps
        decision = self._decide(rgb, stamp_ns)
        self.counts[decision.level.name] += 1
        return decision

    def _decide(self, rgb: np.ndarray, stamp_ns: int) -> Decision:
        s = self.settings
        if not self._rate_cap.admit(stamp_ns):
            return Decision(Level.STALE, 0.0, "rate_cap")
        measure = self.measure(s.mode)
        features = None if measure is None else measure.features(rgb)
        if self._key is None or self._sent is None or stamp_ns < self._sent[0]:
            return self._remember(Level.KEY, 0.0, "first", stamp_ns, features)  # or a loop
        since_key = (stamp_ns - self._key[0]) / 1e9
        since_sent = (stamp_ns - self._sent[0]) / 1e9
        if measure is None:
            if since_key >= s.max_key_interval:
                return self._remember(Level.KEY, 0.0, "max_key_interval", stamp_ns, features)
            return self._remember(Level.USEFUL, 0.0, "off", stamp_ns, features)
        key_th, useful_th = s.thresholds
        d_key = measure.deviation(self._key[1], features)
        d_sent = d_key if self._sent is self._key else measure.deviation(self._sent[1], features)
        devs = {"deviation_key": d_key, "deviation_sent": d_sent}
        if max(d_key, d_sent) >= key_th:  # far from the last frame sent: a scene cut
            reason = "cut" if d_sent >= key_th else "deviation"
            return self._remember(Level.KEY, max(d_key, d_sent), reason, stamp_ns, features, **devs)
        if since_key >= s.max_key_interval:
            return self._remember(Level.KEY, d_key, "max_key_interval", stamp_ns, features, **devs)
        if d_sent >= useful_th:
            return self._remember(Level.USEFUL, d_sent, "deviation", stamp_ns, features, **devs)
        if since_sent >= s.max_gap:
            return self._remember(Level.USEFUL, d_sent, "max_gap", stamp_ns, features, **devs)
        return Decision(Level.STALE, d_sent, "below", **devs)

    def _remember(
        self, level: Level, deviation: float, reason: str, stamp_ns: int, features: Any, **devs
    ) -> Decision:
        self._sent = (stamp_ns, features)
        if level == Level.KEY:
            self._key = self._sent
        return Decision(level, float(deviation), reason, **devs)

    def summary(self) -> str:
        """'KEY 3 / USEFUL 10 / STALE 17'."""
        return " / ".join(f"{lv.name} {self.counts[lv.name]}" for lv in reversed(Level))
