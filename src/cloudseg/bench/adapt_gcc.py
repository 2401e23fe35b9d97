"""The bench's GCC-style baseline policy (``cloudseg bench adapt --policy gcc``): pure
delay-based rate control over the H.264 bitrate at a fixed scale, as WebRTC's Google Congestion
Control does it (draft-ietf-rmcat-gcc): the same over-use detector as the controller
(:mod:`cloudseg.control.delay`) drives an AIMD rate controller.

* over-use: decrease at once to ``beta`` (0.85) x the rate reaching the cloud;
* under-use: hold (a queue is draining);
* normal: increase, multiplicatively (``increase_per_s``, 8 %/s) while far above the rate of
  the last over-use, additively (``near_per_s``, 2 %/s of it) within 10 % of it; no increase
  while above 1.5 x the rate reaching the cloud (as GCC);
* loss (GCC's loss-based part): over 10 % of the frames of the last window, x (1 - loss / 2).

WebRTC changes its encoder's bitrate without a key frame; here a new bitrate restarts the
encoder (an IDR), so a new Knob goes out only when the rate moved by ``publish_step`` (10 %)
(a decrease after over-use always does). Plain Python: the probe feeds it the FrameStats and
publishes its Knobs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from cloudseg.control.delay import DelayDetector, Usage


@dataclass
class GccPolicy:
    """AIMD over the bitrate from the delay detector (see the module docstring)."""

    scale: int = 2  # fixed: x2 spans ~450-2700 kbit/s in config/profile.json
    rate_kbps: float = 500.0
    min_kbps: float = 150.0
    max_kbps: float = 10_000.0
    beta: float = 0.85
    increase_per_s: float = 0.08
    near_per_s: float = 0.02
    publish_step: float = 0.10
    detector: DelayDetector = field(default_factory=DelayDetector)
    overuse_kbps: float = math.nan  # the rate reaching the cloud at the last over-use
    published_kbps: float = 0.0
    decreased_until: float = -math.inf  # one decrease per this long (the queue drains)

    def on_stats(self, seq: int, sent_ns: int, arrival_ns: int, nbytes: int, now: float) -> None:
        """One FrameStats: feed the detector; an over-use decreases the rate at once."""
        usage = self.detector.update(seq, sent_ns, arrival_ns, nbytes)
        if usage is Usage.OVERUSE and now >= self.decreased_until:
            incoming = self.detector.incoming_kbps()
            if math.isfinite(incoming) and incoming > 0:
                self.overuse_kbps = incoming
                self.rate_kbps = max(self.beta * min(incoming, self.rate_kbps), self.min_kbps)
                self.decreased_until = now + 1.0

    def update(self, now: float, dt: float, loss: float) -> int | None:
        """Every `dt` s: the increase (or the loss-based decrease); returns a bitrate to publish
        (kbit/s), or None when the Knob in force is close enough."""
        usage = self.detector.state
        if loss > 0.1:
            self.rate_kbps *= 1 - loss / 2
        elif usage is Usage.NORMAL and now >= self.decreased_until:
            incoming = self.detector.incoming_kbps()
            # no increase while far above what arrives (GCC: at most 1.5 x the incoming
            # rate); a stream that sends less than asked is not a reason to decrease
            room = not math.isfinite(incoming) or self.rate_kbps < 1.5 * incoming
            near = math.isfinite(self.overuse_kbps) and self.rate_kbps > 0.9 * self.overuse_kbps
            if room and near:
                self.rate_kbps += self.near_per_s * self.overuse_kbps * dt
            elif room:
                self.rate_kbps *= (1 + self.increase_per_s) ** dt
        self.rate_kbps = min(max(self.rate_kbps, self.min_kbps), self.max_kbps)
        moved = abs(self.rate_kbps - self.published_kbps) >= self.publish_step * self.published_kbps
        if self.published_kbps and not moved:
            return None
        self.published_kbps = self.rate_kbps
        return round(self.rate_kbps)
