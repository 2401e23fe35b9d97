"""Per-window measurements of the Frame stream, from the cloud's FrameStats: goodput, loss,
the trend of the transport latency (a rising latency is a queue building up on the link), the
cloud's time per frame and the newest accuracy estimate of online profiling."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from cloudseg.control.delay import DelayDetector, Usage

__all__ = ["Measurements", "StatSample", "Window", "theil_sen_slope"]


@dataclass(frozen=True)
class StatSample:
    """What the controller uses of one FrameStats (times in seconds of one clock)."""

    seq: int  # Frame.seq
    payload_bytes: int
    capture_s: float  # the frame's capture stamp
    arrival_s: float  # when the stats arrived at the controller
    transport_ms: float  # compressor publish to cloud receive
    total_ms: float  # cloud processing time
    frames_received: int = 0  # cloud's count of frames received so far (0: not counted)
    bytes_received: int = 0  # cloud's count of payload bytes received so far
    accuracy: float = -1.0  # label agreement of a profiling frame (-1: none)
    sent_ns: int = 0  # the Frame's send time, vehicle clock (0: unknown)
    arrival_ns: int = 0  # its arrival at the cloud, cloud clock (0: unknown)


@dataclass(frozen=True)
class Window:
    """What one window measured."""

    start_s: float
    end_s: float
    samples: int  # FrameStats received
    frames_sent: int  # frames the vehicle sent in the window (seq span)
    goodput_kbps: float  # payload bits arriving at the cloud per second
    loss: float  # fraction of the frames sent that did not arrive (0..1)
    trend_ms_per_s: float  # slope of the transport latency (robust; > 0: a queue is growing)
    transport_ms: float  # median transport latency
    latency_ms: float  # median capture-to-arrival latency (capture to stats at the controller)
    cloud_ms: float  # median cloud processing time
    accuracy: float | None  # newest accuracy estimate in the window, if any
    silent_s: float  # seconds since the last stats arrived (at end_s)
    overuse: bool = False  # the delay detector signalled over-use in the window
    incoming_kbps: float = math.nan  # the detector's rate at the cloud (last second of arrivals)
    queue_ms: float = 0.0  # the detector's queueing delay estimate at the window's end

    def describe(self) -> str:
        return (
            f"{self.samples} stats, goodput {self.goodput_kbps:.0f} kbit/s, loss "
            f"{self.loss:.0%}, latency trend {self.trend_ms_per_s:+.0f} ms/s, transport "
            f"{self.transport_ms:.0f} ms, cloud {self.cloud_ms:.0f} ms, queue "
            f"{self.queue_ms:.0f} ms{', over-use' if self.overuse else ''}"
        )


def theil_sen_slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """The median of the pairwise slopes: a trend one outlier cannot move. 0 with < 2 points."""
    slopes = [
        (ys[j] - ys[i]) / (xs[j] - xs[i])
        for i in range(len(xs))
        for j in range(i + 1, len(xs))
        if xs[j] != xs[i]
    ]
    return statistics.median(slopes) if slopes else 0.0


class Measurements:
    """Aggregates FrameStats into windows: call `add` per stats, `take` once per window."""

    def __init__(self, detector: DelayDetector | None = None) -> None:
        self.detector = detector or DelayDetector()
        self._overuse = False  # over-use signalled since the last take
        self._samples: list[StatSample] = []
        self._base: StatSample | None = None  # the last sample of the previous window
        self._last_take: float | None = None
        self._last_arrival: float | None = None

    def add(self, s: StatSample) -> Usage:
        """One FrameStats; returns what the delay detector says after it."""
        self._samples.append(s)
        self._last_arrival = s.arrival_s
        usage = self.detector.update(s.seq, s.sent_ns, s.arrival_ns, s.payload_bytes)
        self._overuse = self._overuse or usage is Usage.OVERUSE
        return usage

    def silent_s(self, now: float) -> float:
        """Seconds since the last stats arrived (0 before any)."""
        return now - self._last_arrival if self._last_arrival is not None else 0.0

    def take(self, now: float) -> Window:
        """The window since the previous `take` (or the first sample), ending at `now`."""
        samples = sorted(self._samples, key=lambda s: s.seq)
        self._samples = []
        start = self._last_take
        if start is None:
            start = samples[0].arrival_s if samples else now
        self._last_take = now
        duration = max(now - start, 1e-3)
        silent = self.silent_s(now)
        base = self._base
        if samples:
            self._base = samples[-1]
        delay = {
            "overuse": self._overuse,
            "incoming_kbps": self.detector.incoming_kbps(),
            "queue_ms": self.detector.queue_ms,
        }
        self._overuse = False
        if not samples:
            return Window(
                start, now, 0, 0, 0.0, 0.0, 0.0, math.nan, math.nan, math.nan, None, silent, **delay
            )
        last = samples[-1]
        counted = last.frames_received > 0 and (base is None or base.frames_received > 0)
        if base is None:  # the first window: the first sample is the baseline
            base, rest = samples[0], samples[1:]
        else:
            rest = [s for s in samples if s.seq > base.seq]
        sent = max(last.seq - base.seq, 0)
        if counted:  # the cloud counted every frame it received, processed or not
            received = last.frames_received - base.frames_received
            bits = (last.bytes_received - base.bytes_received) * 8
        else:  # only the processed frames: seq gaps count as lost
            received = len(rest)
            bits = sum(s.payload_bytes for s in rest) * 8
        loss = min(max(1.0 - received / sent, 0.0), 1.0) if sent else 0.0
        acc = [s.accuracy for s in samples if s.accuracy >= 0]
        return Window(
            start_s=start,
            end_s=now,
            samples=len(samples),
            frames_sent=sent,
            goodput_kbps=bits / 1000 / duration,
            loss=loss,
            trend_ms_per_s=theil_sen_slope(
                [s.arrival_s for s in samples], [s.transport_ms for s in samples]
            ),
            transport_ms=statistics.median(s.transport_ms for s in samples),
            latency_ms=statistics.median((s.arrival_s - s.capture_s) * 1e3 for s in samples),
            cloud_ms=statistics.median(s.total_ms for s in samples),
            accuracy=acc[-1] if acc else None,
            silent_s=silent,
            **delay,
        )
