"""The adaptive controller's parameters (the controller node's: cloudseg.graph.CONTROLLER;
the rules that use them: cloudseg.control.controller)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ControllerSettings:
    """The controller's parameters (the controller node's, see cloudseg.graph.CONTROLLER)."""

    safety: float = 0.8  # use at most this fraction of the measured goodput
    latency_bound_ms: float = 500.0  # transport + cloud time per frame (0: no bound)
    start_kbps: float = 0.0  # start at the most accurate entry under this (0: the lowest)
    hold_s: float = 3.0  # no step up sooner than this after a change
    up_windows: int = 2  # good windows in a row before a probe up
    bad_windows: int = 2  # bad windows in a row before a step down (1 is noise)
    loss_bad: float = 0.05  # a window with more loss is bad
    loss_severe: float = 0.3  # ... and with this much, step down at once
    trend_bad_ms_per_s: float = 50.0  # a window whose transport latency rises faster is bad
    stall_s: float = 1.0  # no stats for this long (after some arrived): step to the lowest entry
    probe_backoff_s: float = 5.0  # a failed probe is not repeated for this long (doubling, 4x max)
    accuracy_floor: float = 0.6  # worst case below this accuracy estimate (0: off)
    accuracy_hold_s: float = 30.0  # how long the worst-case setting is kept
    full_frame_every_s: float = 10.0  # online profiling: a full frame this often (0: never)
    full_frame_min_kbps: float = 3000.0  # ... only while the goodput is at least this: a
    # full-resolution IDR (~100 kB) blocks a thin link for about a second
    climb_factor: float = 2.0  # a step up reaches at most this x the current rate (1: one entry)
    ceiling_s: float = 6.0  # after a step down, no step up above the link's ceiling this long
    queue_severe_ms: float = 60.0  # delay over-use with this much queue: step down at once
    probe_gain: float = 1.5  # a probe sends at most this x what arrives, raised per good window
    frame_burst: float = 3.0  # no frame larger than this x the entry's mean frame (0: no cap)

    def __post_init__(self) -> None:
        if not 0 < self.safety <= 1:
            raise ValueError(f"safety must be in (0, 1], got {self.safety}")
        if self.up_windows < 1 or self.bad_windows < 1:
            raise ValueError("up_windows and bad_windows must be >= 1")
        if not self.climb_factor >= 1:
            raise ValueError(f"climb_factor must be >= 1, got {self.climb_factor}")
        if not self.ceiling_s >= 0:
            raise ValueError(f"ceiling_s must be >= 0, got {self.ceiling_s}")
        if not (self.probe_gain == 0 or self.probe_gain > 1):
            raise ValueError(f"probe_gain must be 0 (off) or > 1, got {self.probe_gain}")
        if not (self.frame_burst == 0 or self.frame_burst >= 1):
            raise ValueError(f"frame_burst must be 0 (no cap) or >= 1, got {self.frame_burst}")
