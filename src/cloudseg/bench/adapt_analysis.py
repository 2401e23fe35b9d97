"""The pure parts of ``cloudseg bench adapt``: bandwidth traces, the analysis of a run's
events (per second and per trace step), the probe's sliding window, the bench's
resolution-only policy, and the comparison of adaptive runs with the fixed ones."""

from __future__ import annotations

import csv
import itertools
import json
import math
import statistics
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

#: policy -> the scale the vehicle starts with
POLICIES: dict[str, int] = {
    "controller": 4,
    "full": 1,
    "fixed4": 4,
    "resolution": 2,
    "gcc": 2,
}
DEFAULT_TRACE = ((8000.0,), (2000.0,), (1000.0,), (4000.0,))
COLLAPSE_GAP_S = 2.0
WINDOW_DELAY_S = 3.0
WINDOW_S = 3.0


class AdaptError(Exception):
    """Bad options or a run that cannot go on; main() prints one line and returns 2."""


@dataclass(frozen=True)
class Step:
    """One step of a bandwidth trace: from `start` (s) for `seconds`, at `kbps`."""

    start: float
    seconds: float
    kbps: float

    @property
    def end(self) -> float:
        return self.start + self.seconds


def _steps(pairs: Sequence[tuple[float, float]]) -> list[Step]:
    steps, t = [], 0.0
    for seconds, kbps in pairs:
        if not (seconds > 0 and kbps > 0):
            raise AdaptError(f"trace step ({seconds}, {kbps}): seconds and kbps must be > 0")
        steps.append(Step(t, float(seconds), float(kbps)))
        t += seconds
    if not steps:
        raise AdaptError("the trace has no steps")
    return steps


def parse_trace(path: str | Path | None, step_seconds: float = 20.0) -> list[Step]:
    """A trace from a CSV (`seconds,kbps` rows, a header allowed) or JSON file (a list of
    [seconds, kbps] pairs or {"seconds":, "kbps":} objects); None: the default trace
    (8000, 2000, 1000, 4000 kbit/s, `step_seconds` each)."""
    if path is None:
        return _steps([(step_seconds, kbps) for (kbps,) in DEFAULT_TRACE])
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise AdaptError(f"cannot read the trace {p}: {exc.strerror}") from None
    pairs: list[tuple[float, float]] = []
    try:
        if p.suffix.lower() == ".json":
            for item in json.loads(text):
                if isinstance(item, dict):
                    pairs.append((float(item["seconds"]), float(item["kbps"])))
                else:
                    pairs.append((float(item[0]), float(item[1])))
        else:
            for row in csv.reader(line for line in text.splitlines() if line.strip()):
                if row[0].strip().startswith("#"):
                    continue
                try:
                    pairs.append((float(row[0]), float(row[1])))
                except ValueError:
                    if pairs:  # only the first row may be a header
                        raise
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise AdaptError(f"trace {p}: expected (seconds, kbps) steps ({exc})") from None
    return _steps(pairs)


def link_at(steps: Sequence[Step], t: float) -> float:
    """The link rate at time `t` of the trace (0 outside it)."""
    for s in steps:
        if s.start <= t < s.end:
            return s.kbps
    return 0.0


def offered_over_link_max(
    sent: Sequence[tuple[float, int]],
    steps: Sequence[Step],
    delay: float = WINDOW_DELAY_S,
    window: float = WINDOW_S,
    hop: float = 1.0,
) -> float:
    """Largest (offered kbit/s over `window` s) / link kbit/s, over windows that start `delay`
    s or more after a step starts (every `hop` s) and end within the step. `sent`: (time s,
    bytes) of every frame sent, times relative to the trace start."""
    best = 0.0
    for s in steps:
        w = s.start + delay
        while w + window <= s.end + 1e-9:
            bits = 8 * sum(b for t, b in sent if w <= t < w + window)
            best = max(best, bits / window / 1000 / s.kbps)
            w += hop
    return best


def collapsed(
    arrivals: Sequence[float], steps: Sequence[Step], gap: float = COLLAPSE_GAP_S
) -> bool:
    """True when, while the link is up (rate > 0), no result arrives for more than `gap` s
    (also from the trace start to the first arrival and from the last one to the end)."""
    spans: list[list[float]] = []
    for s in steps:
        if s.kbps <= 0:
            continue
        if spans and abs(spans[-1][1] - s.start) < 1e-9:
            spans[-1][1] = s.end
        else:
            spans.append([s.start, s.end])
    times = sorted(arrivals)
    for a, b in spans:
        points = [a] + [t for t in times if a < t < b] + [b]
        if any(q - p > gap for p, q in itertools.pairwise(points)):
            return True
    return False


def _pct(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    v = sorted(values)
    k = (len(v) - 1) * q / 100
    lo, hi = math.floor(k), math.ceil(k)
    return round(v[lo] + (v[hi] - v[lo]) * (k - lo), 1)


def analyse(events: Sequence[dict], steps: Sequence[Step], t0: float, policy: str) -> dict:
    """Per-second records, per-step summaries and the --json result from the probe's events
    (wall-clock `t`; `t0` = the trace start)."""
    end = steps[-1].end
    sent = [e for e in events if e["e"] == "sent" and 0 <= e["t"] - t0 < end]
    back = {}
    for e in events:
        if e["e"] == "back":
            back.setdefault(e["seq"], e)
    arrived = [e for e in back.values() if 0 <= e["t"] - t0 < end]
    knobs = sorted((e for e in events if e["e"] == "knob"), key=lambda e: e["t"])
    # lost: sent (at least 2 s before the end, so it had time) and never came back
    lost = [e for e in sent if e["seq"] not in back and e["t"] - t0 < end - 2.0]

    def knob_at(t: float, frames: list[dict]) -> int | None:
        k = [e for e in knobs if e["t"] <= t]
        if k and k[-1]["scale"]:
            return k[-1]["scale"]
        return frames[-1]["scale"] if frames else None

    estimates = sorted((e["t"], e["acc"]) for e in back.values() if "acc" in e)
    queue = queue_delays(arrived)

    def accuracy_at(t: float) -> float | None:
        """The newest accuracy estimate from the cloud (profiling frames), None before one."""
        seen = [a for ts, a in estimates if ts <= t]
        return seen[-1] if seen else None

    seconds = []
    for k in range(math.ceil(end)):
        s_in = [e for e in sent if k <= e["t"] - t0 < k + 1]
        b_in = [e for e in arrived if k <= e["t"] - t0 < k + 1]
        seconds.append(
            {
                "t": k,
                "link_kbps": link_at(steps, k),
                "offered_kbps": round(8 * sum(e["bytes"] for e in s_in) / 1000, 1),
                "goodput_kbps": round(8 * sum(e["bytes"] for e in b_in) / 1000, 1),
                "sent": len(s_in),
                "arrived": len(b_in),
                "scale": knob_at(t0 + k + 1, s_in),
                "latency_ms": _pct([e["lat_ms"] for e in b_in], 50),
                "queue_ms": _pct([queue[e["seq"]] for e in b_in if e["seq"] in queue], 50),
                "lost": sum(1 for e in lost if k <= e["t"] - t0 < k + 1),
                "accuracy": accuracy_at(t0 + k + 1),
            }
        )
    summaries = []
    for s in steps:
        rows = [r for r in seconds if s.start <= r["t"] < s.end]
        b_in = [e for e in arrived if s.start <= e["t"] - t0 < s.end]
        scales = sorted({r["scale"] for r in rows if r["scale"] is not None})
        summaries.append(
            {
                "start_s": s.start,
                "seconds": s.seconds,
                "link_kbps": s.kbps,
                "offered_kbps": round(statistics.fmean(r["offered_kbps"] for r in rows), 1),
                "goodput_kbps": round(statistics.fmean(r["goodput_kbps"] for r in rows), 1),
                "sent": sum(r["sent"] for r in rows),
                "arrived": sum(r["arrived"] for r in rows),
                "lost": sum(1 for e in lost if s.start <= e["t"] - t0 < s.end),
                "scales": scales,
                "latency_ms_p50": _pct([e["lat_ms"] for e in b_in], 50),
                "latency_ms_p95": _pct([e["lat_ms"] for e in b_in], 95),
                "queue_ms_p95": _pct([queue[e["seq"]] for e in b_in if e["seq"] in queue], 95),
                "offered_over_link_max_1s": _ratio_max(rows, s),
            }
        )
    lat = [e["lat_ms"] for e in arrived]
    result = {
        "policy": policy,
        "steps": summaries,
        "collapsed": collapsed([e["t"] - t0 for e in arrived], steps),
        "offered_over_link_max": round(
            offered_over_link_max([(e["t"] - t0, e["bytes"]) for e in sent], steps), 3
        ),
        "latency_ms_p50": _pct(lat, 50),
        "latency_ms_p95": _pct(lat, 95),
        "frames_lost": len(lost),
        # the goals' figures: offered/link per 1-s window after the first 2 s of each step,
        # lost % of the frames sent, capture-to-stats p95 (above), queue delay p95
        "offered_over_link_max_1s": max(
            (x["offered_over_link_max_1s"] for x in summaries), default=0.0
        ),
        "frames_sent": len(sent),
        "lost_pct": round(100 * len(lost) / len(sent), 2) if sent else 0.0,
        "goodput_kbps": round(statistics.fmean(r["goodput_kbps"] for r in seconds), 1),
        "queue_ms_p95": _pct(list(queue.values()), 95),
        # of the frames lost, those the cloud received but skipped (it was busy: CPU, not link)
        "frames_skipped_by_cloud": _counted(arrived, "skip"),
    }
    return {"result": result, "seconds": seconds}


SETTLE_S = 2.0
"""The goal's 1-s windows start this long after a step starts."""


def _ratio_max(rows: Sequence[dict], step: Step, settle: float = SETTLE_S) -> float:
    """Largest offered/link over the 1-s rows that start `settle` s or more into `step`."""
    ratios = [
        r["offered_kbps"] / step.kbps
        for r in rows
        if r["t"] >= step.start + settle and r["t"] + 1 <= step.end + 1e-9
    ]
    return round(max(ratios, default=0.0), 3)


def _counted(arrived: Sequence[dict], key: str) -> int | None:
    """How much one of the cloud's counters (in the back events) grew over the run."""
    values = [e[key] for e in sorted(arrived, key=lambda e: e["seq"]) if key in e]
    return values[-1] - values[0] if values else None


def queue_delays(arrived: Sequence[dict]) -> dict[int, float]:
    """Per frame (seq) that came back with both times: its one-way delay (arrival at the
    cloud, cloud clock, minus send, vehicle clock) above the smallest in the run, ms: the time
    it spent in queues (the clocks' offset cancels; serialisation of the frame included)."""
    raw = {
        e["seq"]: (e["arr_ns"] - e["sent_ns"]) / 1e6
        for e in arrived
        if e.get("sent_ns") and e.get("arr_ns")
    }
    if not raw:
        return {}
    base = min(raw.values())
    return {seq: round(v - base, 1) for seq, v in raw.items()}


@dataclass
class WindowStats:
    """The probe's view of the last few seconds: frames sent, results back, latencies."""

    horizon: float = 3.0
    sent_events: deque = field(default_factory=deque)  # (t, seq, bytes)
    back_events: deque = field(default_factory=deque)  # (t, seq, latency ms)
    back_seqs: set = field(default_factory=set)
    first_back: int | None = None  # frames sent before the cloud was up do not count as lost

    def sent(self, t: float, seq: int, nbytes: int) -> None:
        self.sent_events.append((t, seq, nbytes))

    def back(self, t: float, seq: int, latency_ms: float) -> None:
        self.back_events.append((t, seq, latency_ms))
        self.back_seqs.add(seq)
        if self.first_back is None:
            self.first_back = seq

    def summary(self, now: float, span: float = 1.5, grace: float = 0.3) -> dict[str, float]:
        """offered and goodput kbit/s over the last `span` s; loss = the fraction of frames sent
        between `span + grace` and `grace` s ago with no result yet; p50 latency (ms)."""
        while self.sent_events and self.sent_events[0][0] < now - self.horizon - span:
            _, seq, _ = self.sent_events.popleft()
            self.back_seqs.discard(seq)
        while self.back_events and self.back_events[0][0] < now - self.horizon - span:
            self.back_events.popleft()
        sizes = {seq: b for _, seq, b in self.sent_events}
        offered = sum(b for t, _, b in self.sent_events if t >= now - span)
        good = sum(sizes.get(seq, 0) for t, seq, _ in self.back_events if t >= now - span)
        first = self.first_back if self.first_back is not None else 1 << 62
        due = [
            seq
            for t, seq, _ in self.sent_events
            if now - span - grace <= t < now - grace and seq >= first
        ]
        missing = sum(1 for seq in due if seq not in self.back_seqs)
        lat = [ms for t, _, ms in self.back_events if t >= now - span]
        return {
            "offered_kbps": 8 * offered / span / 1000,
            "goodput_kbps": 8 * good / span / 1000,
            "loss": missing / len(due) if due else 0.0,
            "latency_ms": statistics.median(lat) if lat else 0.0,
            "due": float(len(due)),
        }


@dataclass
class ResolutionPolicy:
    """Resolution-only adaptation (AWStream-like): the finest scale whose measured rate fits
    `margin` x the goodput once the link is congested (loss or rising latency); after `hold` s
    without congestion it probes the next finer scale, backing off (x2) after a failed probe."""

    scales: tuple[int, ...] = (1, 2, 4, 8)
    scale: int = 2
    margin: float = 0.8
    hold: float = 8.0
    max_hold: float = 48.0
    loss_limit: float = 0.1
    latency_limit_ms: float = 300.0
    rates: dict[int, float] = field(
        default_factory=lambda: {1: 9000.0, 2: 3000.0, 4: 1100.0, 8: 400.0}
    )
    quiet_s: float = 0.0
    backoff: float = 1.0
    probing: bool = False
    settle: float = 0.0

    def update(self, w: dict[str, float], dt: float = 1.0) -> int:
        """One call every `dt` s with `WindowStats.summary()`; returns the scale to use."""
        if self.settle > 0:  # after a step down the window still holds the old scale's frames
            self.settle -= dt
            return self.scale
        if w["offered_kbps"] > 0 and not self.probing:
            old = self.rates.get(self.scale, w["offered_kbps"])
            self.rates[self.scale] = 0.7 * old + 0.3 * w["offered_kbps"]
        congested = w["due"] > 0 and (
            w["loss"] > self.loss_limit or w["latency_ms"] > self.latency_limit_ms
        )
        if congested:
            fits = [s for s in self.scales if self.rates[s] <= self.margin * w["goodput_kbps"]]
            new = min(fits) if fits else max(self.scales)
            if self.probing:
                self.backoff = min(self.backoff * 2, self.max_hold / self.hold)
            self.probing = False
            self.quiet_s = 0.0
            new = max(new, self.scale)  # never finer while congested
            if new != self.scale:
                self.scale, self.settle = new, 1.5
            return self.scale
        if self.probing and w["offered_kbps"] > 0:
            old = self.rates.get(self.scale, w["offered_kbps"])
            self.rates[self.scale] = 0.7 * old + 0.3 * w["offered_kbps"]
        self.quiet_s += dt
        if self.probing and self.quiet_s >= 4:
            self.probing, self.backoff = False, 1.0  # the probe held
        finer = [s for s in self.scales if s < self.scale]
        if finer and self.quiet_s >= self.hold * self.backoff:
            self.scale, self.probing, self.quiet_s = max(finer), True, 0.0
        return self.scale


FIXED_POLICIES = ("full", "fixed4")
FIT_LOSS = 0.05
"""A fixed policy fits a step when at most this share of the frames it sent there was lost."""


def compare_to_fixed(runs: dict[str, dict]) -> None:
    """Per step of every adaptive run: the best mIoU among the fixed policies that fit that
    step (`best_fixed_miou`, `best_fixed_policy`) and the run's gap to it (`miou_gap`)."""
    fixed = {p: r["result"] for p, r in runs.items() if p in FIXED_POLICIES}
    for policy, run in runs.items():
        if policy in FIXED_POLICIES:
            continue
        for k, step in enumerate(run["result"]["steps"]):
            best = None
            for name, res in fixed.items():
                other = res["steps"][k]
                fits = other["sent"] and other["lost"] <= FIT_LOSS * other["sent"]
                better = best is None or (other.get("miou") or 0) > best[1]
                if fits and other.get("miou") is not None and better:
                    best = (name, other["miou"])
            if best is not None and step.get("miou") is not None:
                step["best_fixed_policy"], step["best_fixed_miou"] = best
                step["miou_gap"] = round(step["miou"] - best[1], 4)
