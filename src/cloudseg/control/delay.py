"""Delay-based over-use detection (WebRTC GCC's trendline estimator + adaptive threshold).

Plain Python. Per frame the cloud reports when the vehicle sent it (``sent_ns``, the vehicle's
clock) and when it reached the cloud's DDS reader (``arrival_ns``, the cloud's clock). One frame
is one group (WebRTC groups the packets of a 5 ms burst; here a frame is one DDS sample). The
delay variation between consecutive frames

    d_i = (arrival_i - arrival_{i-1}) - (sent_i - sent_{i-1})

is free of the offset between the two clocks. Its running sum is the one-way queueing delay up
to a constant; it is smoothed (exponential, ``smoothing``) and a least-squares line is fitted
to the last ``window`` points (x: arrival time). The slope, scaled by the number of deltas seen
(at most 60) and ``gain`` as in WebRTC, is compared with an adaptive threshold gamma
(starts at 12.5, moves towards the |trend| at ``k_up`` / ``k_down`` per ms, 6..600): above
gamma for two frames in a row and rising: OVERUSE (a queue is growing on the link, before any
loss); below -gamma: UNDERUSE (a queue is draining); else NORMAL. Spikes far above gamma
(> gamma + 15) do not move gamma, so one big IDR does not teach the detector to ignore a queue.

At video frame rates (8-17 frames a second here, not WebRTC's packet groups every few ms) the
trend lags by about a second, so a second signal catches a standing queue sooner: the floor of
the queue estimate over the last ``standing_s`` (0.4 s) of arrivals above ``standing_ms``
(50 ms) and not falling, two frames in a row, is OVERUSE too (one IDR's queue drains within
that span; an overrun link's does not).

The detector also measures the incoming rate at the cloud (payload bytes per arrival time over
the last ``rate_window_s``) and the queue delay estimate (the accumulated delay above its
minimum so far), which the controller uses for a back-off target and the bench reports.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from enum import Enum

__all__ = ["DelayDetector", "DelaySettings", "Usage", "linear_slope"]


class Usage(Enum):
    """What the delay trend says about the link."""

    NORMAL = "normal"
    OVERUSE = "overuse"
    UNDERUSE = "underuse"


@dataclass(frozen=True)
class DelaySettings:
    """The detector's constants: WebRTC's, except `window` (frames, not 5 ms groups: a shorter
    window keeps the reaction within about 0.8 s at 17 fps) and `floor_frames` (chosen on
    simulated bottlenecks with IDRs 3-8x a P-frame: no over-use at 0.8-0.95x the link, over-use
    13 frames after the rate steps to 1.1-1.5x)."""

    window: int = 12  # points of the smoothed accumulated delay the line is fitted to
    smoothing: float = 0.9  # weight of the previous smoothed value
    gain: float = 4.0  # threshold_gain: the slope is multiplied by this x the deltas seen
    threshold_ms: float = 12.5  # initial gamma
    k_up: float = 0.0087  # gamma's adaptation per ms when |trend| > gamma
    k_down: float = 0.039  # ... when |trend| < gamma
    overuse_ms: float = 10.0  # the trend must stay over gamma this long (and 2 frames)
    rate_window_s: float = 1.0  # incoming rate over the arrivals of this long
    floor_frames: int = 8  # the trend is fitted to the minimum over this many frames
    standing_s: float = 0.4  # a standing queue: its floor over this long of arrivals ...
    standing_ms: float = 50.0  # ... above this and rising (0: off)


def linear_slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ys over xs (0 with < 2 distinct xs)."""
    n = len(xs)
    if n < 2:
        return 0.0
    mx, my = sum(xs) / n, sum(ys) / n
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den if den else 0.0


class DelayDetector:
    """Feeds on (seq, sent_ns, arrival_ns, bytes) per frame; says over-use / normal / under-use."""

    def __init__(self, settings: DelaySettings | None = None) -> None:
        self.settings = settings or DelaySettings()
        self.state = Usage.NORMAL
        self.threshold = self.settings.threshold_ms
        self.trend = 0.0  # the last fitted slope (ms of delay per ms)
        self.modified_trend = 0.0  # trend x min(deltas, 60) x gain, compared with gamma
        self.deltas = 0
        self.accumulated_ms = 0.0
        self.min_accumulated_ms = 0.0
        self._smoothed = 0.0
        self._points: deque[tuple[float, float]] = deque(maxlen=self.settings.window)
        self._last: tuple[int, int, int] | None = None  # seq, sent_ns, arrival_ns
        self._first_arrival_ns: int | None = None
        self._over_ms = -1.0
        self._over_count = 0
        self._prev_trend = 0.0
        self._last_update_ms: float | None = None
        self._arrivals: deque[tuple[int, int]] = deque()  # (arrival_ns, bytes)
        self._recent: deque[float] = deque(maxlen=max(self.settings.floor_frames, 1))
        self._standing: deque[tuple[float, float]] = deque()  # (arrival ms, queue ms)
        self._standing_floor = 0.0
        self._standing_rises = 0

    @property
    def queue_ms(self) -> float:
        """The queueing delay estimate: accumulated delay variation above its minimum."""
        return self.accumulated_ms - self.min_accumulated_ms

    def incoming_kbps(self) -> float:
        """Payload kbit/s that reached the cloud over the last `rate_window_s` of arrivals
        (nan before two frames)."""
        if len(self._arrivals) < 2:
            return math.nan
        span_ns = self._arrivals[-1][0] - self._arrivals[0][0]
        window_ns = max(span_ns, self.settings.rate_window_s * 1e9 / 2)  # not a burst's rate
        bits = 8 * sum(b for _, b in list(self._arrivals)[1:])  # bytes after the first arrival
        return bits / (window_ns / 1e9) / 1000

    def update(self, seq: int, sent_ns: int, arrival_ns: int, payload_bytes: int) -> Usage:
        """One frame's times; returns the state after it. Frames without both times, or older
        than the last one (by seq), are ignored."""
        if sent_ns <= 0 or arrival_ns <= 0:
            return self.state
        if self._last is not None and seq <= self._last[0]:
            return self.state
        self._arrivals.append((arrival_ns, int(payload_bytes)))
        horizon = arrival_ns - self.settings.rate_window_s * 1e9
        while self._arrivals and self._arrivals[0][0] < horizon:
            self._arrivals.popleft()
        last, self._last = self._last, (seq, sent_ns, arrival_ns)
        if last is None:
            self._first_arrival_ns = arrival_ns
            return self.state
        send_delta_ms = (sent_ns - last[1]) / 1e6
        arrival_delta_ms = (arrival_ns - last[2]) / 1e6
        self._add_delta(arrival_delta_ms - send_delta_ms, arrival_ns, arrival_delta_ms)
        return self.state

    def _add_delta(self, delta_ms: float, arrival_ns: int, arrival_delta_ms: float) -> None:
        s = self.settings
        self.deltas += 1
        self.accumulated_ms += delta_ms
        self.min_accumulated_ms = min(self.min_accumulated_ms, self.accumulated_ms)
        # the floor of the last few frames: one big frame (an IDR) delays itself and the frames
        # right behind it, then the queue drains; a growing queue lifts the floor too
        self._recent.append(self.accumulated_ms)
        floor = min(self._recent)
        self._smoothed = s.smoothing * self._smoothed + (1 - s.smoothing) * floor
        assert self._first_arrival_ns is not None
        now_ms = (arrival_ns - self._first_arrival_ns) / 1e6
        self._points.append((now_ms, self._smoothed))
        if len(self._points) == s.window:
            xs, ys = zip(*self._points, strict=True)
            self.trend = linear_slope(list(xs), list(ys))
        self._detect(now_ms, arrival_delta_ms)
        if self._standing_queue(now_ms):
            self.state = Usage.OVERUSE

    def _standing_queue(self, now_ms: float) -> bool:
        """A queue that stays: the floor of the queue estimate over the last `standing_s` of
        arrivals (two frames at least) above `standing_ms` and not lower than at the frame
        before, twice in a row. At 8 fps the trend over a few frames lags by a second; one
        IDR's queue drains within that floor's span, a link overrun lifts it."""
        s = self.settings
        if s.standing_ms <= 0:
            return False
        self._standing.append((now_ms, self.queue_ms))
        while len(self._standing) > 2 and self._standing[0][0] < now_ms - s.standing_s * 1e3:
            self._standing.popleft()
        floor = min(q for _, q in self._standing)
        rising = floor > s.standing_ms and floor >= self._standing_floor
        self._standing_floor = floor
        self._standing_rises = self._standing_rises + 1 if rising else 0
        return self._standing_rises >= 2

    def _detect(self, now_ms: float, arrival_delta_ms: float) -> None:
        s = self.settings
        if self.deltas < 2:
            return
        self.modified_trend = min(self.deltas, 60) * self.trend * s.gain
        if self.modified_trend > self.threshold:
            if self._over_ms < 0:  # assume over-use started halfway since the last frame
                self._over_ms = arrival_delta_ms / 2
            else:
                self._over_ms += arrival_delta_ms
            self._over_count += 1
            lasting = self._over_ms > s.overuse_ms and self._over_count > 1
            if lasting and self.trend >= self._prev_trend:
                self._over_ms, self._over_count = 0.0, 0
                self.state = Usage.OVERUSE
        elif self.modified_trend < -self.threshold:
            self._over_ms, self._over_count = -1.0, 0
            self.state = Usage.UNDERUSE
        else:
            self._over_ms, self._over_count = -1.0, 0
            self.state = Usage.NORMAL
        self._prev_trend = self.trend
        self._adapt_threshold(now_ms)

    def _adapt_threshold(self, now_ms: float) -> None:
        s = self.settings
        if self._last_update_ms is None:
            self._last_update_ms = now_ms
        magnitude = abs(self.modified_trend)
        if magnitude > self.threshold + 15.0:  # a spike: do not learn from it
            self._last_update_ms = now_ms
            return
        k = s.k_down if magnitude < self.threshold else s.k_up
        dt = min(now_ms - self._last_update_ms, 100.0)
        self.threshold += k * (magnitude - self.threshold) * dt
        self.threshold = min(max(self.threshold, 6.0), 600.0)
        self._last_update_ms = now_ms
