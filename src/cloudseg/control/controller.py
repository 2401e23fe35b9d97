"""The adaptive controller: measures the stream per window and picks a profile entry.

Plain Python (no ROS): the controller node feeds it the cloud's FrameStats and publishes what
it decides as a Knob. Per window (:mod:`cloudseg.control.window`) it takes goodput and loss of
the Frame stream, the trend of the transport latency, the cloud's time per frame, and the
accuracy estimate of online profiling (the agreement of labels from the restored
low-resolution frame with those of a full-resolution frame the vehicle sent once).

Rules (`Controller.decide`), in order:

1. Worst case (the paper's Figure 4): an accuracy estimate below ``accuracy_floor`` is confirmed
   with a second full frame; confirmed, SR is bypassed (bilinear restoration), and if it already
   was, the resolution is raised (a smaller scale that fits the rate). Held ``accuracy_hold_s``.
2. Step down, fast: a window is bad with loss above ``loss_bad`` (from MIN_LOSS_FRAMES frames),
   the latency rising faster than ``trend_bad_ms_per_s``, or delay over-use (GCC's detector,
   :mod:`cloudseg.control.delay`). After ``bad_windows`` bad windows in a row (one is noise)
   or one severe window (loss >= ``loss_severe``, over-use with a queue of ``queue_severe_ms``,
   which the node acts on at the stats that show it, or no stats for ``stall_s``) it moves to
   the most accurate entry under ``safety`` x the link (the cloud's arrival rate); with a
   queue, under ``1 - queue`` x the link so the queue drains (BBR's drain), and back under
   ``safety`` x the link as soon as it has; over-use and loss while it drains are that queue.
   A stall goes to the lowest entry (the stall time grows to 3x the cloud's time per frame on
   a slow cloud). A probe that fails blocks its rate and every higher one for
   ``probe_backoff_s`` (doubling with each failure up to MAX_BACKOFF x, back to the start
   when one holds).
3. Step up, paced: after ``up_windows`` good windows in a row and ``hold_s`` since the last
   change, it moves to the most accurate entry whose rate is at most ``climb_factor`` x the
   current one or the goodput, whichever is lower (the next entry up when none is), with its
   frames capped at ``probe_gain`` x what arrives; each good window raises the cap by that gain
   over what arrived under it, until the entry's own frames fit (BBR's paced probe). For
   ``ceiling_s`` after a step down it climbs no higher than ``safety`` x the link it measured
   then (its ceiling); above an old ceiling the probe's gain is CEILING_GAIN, until a probe
   holds there (then the ceiling, and the back-off, are forgotten).

Frames that fit (Salsify's idea): every decision carries a frame budget, ``frame_burst`` x the
entry's mean frame (its rate over the measured frame rate), or the probe's cap; the compressor
makes x264 fit each frame under it, IDRs included.
Entries whose predicted latency (measured transport + the entry's cloud time, corrected by the
ratio of measured to profiled cloud time) exceeds ``latency_bound_ms`` are not chosen, unless
none fits. The profile's rates are corrected online: a clean window (no loss, the entry in force
throughout) measures what the current entry really sends against its profiled rate, and that
ratio (smoothed, 0.5..2) scales every entry's rate where it is compared with the goodput or the
link's ceiling (a scene that costs more bits than the profiled clips makes every entry dearer).
Every decision carries a human-readable reason.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

from cloudseg.control.profile import ProfileEntry, pareto_front
from cloudseg.control.settings import ControllerSettings
from cloudseg.control.window import Window

__all__ = ["Controller", "ControllerSettings", "Decision", "rate_kbps"]


@dataclass(frozen=True)
class Decision:
    """The entry to use, why, and whether to ask for a full-resolution frame now."""

    entry: ProfileEntry
    reason: str
    request_full_frame: bool = False
    changed: bool = False  # the entry differs from the previous decision's
    frame_budget: int = 0  # the largest frame to send, bytes (0: no cap)


RATE_SCALE_MIN, RATE_SCALE_MAX = 0.5, 2.0
"""Bounds of the online correction of the profile's rates."""
RATE_SCALE_ALPHA = 0.3
"""Smoothing of the online correction (weight of one clean window)."""
DRAIN_MIN = 0.25
"""A step down that drains a queue keeps at least this share of the link."""
DRAINED_MS = 20.0
"""A queue estimate under this is drained."""
MAX_BACKOFF = 4
"""A failed probe's back-off doubles up to this x ``probe_backoff_s`` (a paced probe that
fails costs one window at its cap, so a link that grew is found again within seconds)."""
MIN_FRAME_BUDGET = 4000
"""No frame budget below this many bytes: under it x264 cannot fit a frame (a cold 512x256
IDR is ~800 B, a small camera's stream runs far under the profile's rates) and a P-frame over
budget is dropped."""
CEILING_GAIN = 1.15
"""A probe's gain per window above the link's last ceiling."""
RAMP_BINDS = 0.7
"""A probe's cap binds while what arrives is at least this share of it."""
MIN_LOSS_FRAMES = 4
"""A window's loss counts from this many frames sent (a window closed early has few)."""
DRAIN_GRACE_S = 0.5
"""After a step down, over-use is ignored while the queue it left drains (plus this)."""


def rate_kbps(e: ProfileEntry) -> float:
    """An entry's stream rate: measured, else its target bitrate, else unknown (inf)."""
    if math.isfinite(e.kbps):
        return e.kbps
    return float(e.bitrate_kbps) if e.bitrate_kbps else math.inf


@dataclass
class _State:
    bad: int = 0
    good: int = 0
    last_change_s: float = -math.inf
    probing: ProfileEntry | None = None  # the entry of the last probe up, until it holds
    backoff_s: float = 0.0  # the last failed probe's back-off (0: none failed since one held)
    blocked_kbps: float = math.inf  # a failed probe's rate: it and the rates above are blocked
    blocked_until_s: float = -math.inf
    next_full_s: float = 0.0
    confirming: bool = False  # an accuracy estimate below the floor awaits confirmation
    force_bypass: bool = False
    max_scale: int | None = None
    worst_until_s: float = -math.inf
    cloud_ms: float = 0.0  # the last window's median cloud time (a slow cloud is not a stall)
    ceiling_kbps: float = math.inf  # what the link carried when it was last overrun
    ceiling_until_s: float = -math.inf  # ... trusted until then
    rate_scale: float = 1.0  # measured / profiled rate of the entries (smoothed)
    fps: float = 0.0  # frames sent per second (smoothed; 0: not measured yet)
    draining: bool = False  # stepped below the link to drain its queue: climb back when empty
    frame_budget: int = 0  # the budget of the entry in force
    ramp_kbps: float = math.inf  # a paced probe's rate cap (inf: none)
    ramp_idle: int = 0  # windows in a row that sent well under the cap
    drain_until_s: float = -math.inf  # over-use before then is the queue of a step down


class Controller:
    """Picks a profile entry per window (see the module docstring for the rules)."""

    def __init__(self, profile: Sequence[ProfileEntry], settings: ControllerSettings) -> None:
        self.entries = pareto_front(list(profile)) or sorted(profile, key=rate_kbps)
        if not self.entries:
            raise ValueError("the profile has no usable entries")
        self.all_entries = list(profile)
        self.settings = settings
        self.state = _State()
        s = settings
        fits = [e for e in self.entries if rate_kbps(e) <= s.start_kbps]
        self.entry = max(fits, key=lambda e: e.miou) if fits else self.entries[0]

    # -- helpers ------------------------------------------------------------------------------
    def _effective(self, e: ProfileEntry) -> ProfileEntry:
        """An entry with the worst-case override applied."""
        return replace(e, sr_bypass=True) if self.state.force_bypass and not e.sr_bypass else e

    def _candidates(self, w: Window) -> tuple[list[ProfileEntry], str]:
        """The entries allowed now (scale cap of the worst case, latency bound), by rate."""
        st, s = self.state, self.settings
        es = [e for e in self.entries if st.max_scale is None or e.scale <= st.max_scale]
        if st.max_scale is not None and not es:
            es = list(self.entries)
        if s.latency_bound_ms <= 0 or not math.isfinite(w.transport_ms):
            return es, ""
        ratio = 1.0
        if math.isfinite(w.cloud_ms) and math.isfinite(self.entry.cloud_ms) and self.entry.cloud_ms:
            ratio = w.cloud_ms / self.entry.cloud_ms
        fit = [
            e
            for e in es
            if not math.isfinite(e.cloud_ms)
            or w.transport_ms + e.cloud_ms * ratio <= s.latency_bound_ms
        ]
        if fit:
            return fit, ""
        return es, f" (no entry fits the {s.latency_bound_ms:.0f} ms latency bound)"

    def _base(self) -> ProfileEntry:
        """The current entry without the worst-case override (its place in the profile)."""
        for e in self.entries:
            if replace(e, sr_bypass=self.entry.sr_bypass) == self.entry or e == self.entry:
                return e
        return self.entry

    def _change(self, now: float, entry: ProfileEntry, reason: str, full: bool) -> Decision:
        entry = self._effective(entry)
        changed = entry != self.entry
        if changed:
            self.entry = entry
            self.state.last_change_s = now
            self.state.frame_budget = self.frame_budget(entry)
        return Decision(entry, reason, full, changed, self.state.frame_budget)

    def _hold(self, reason: str, full: bool = False) -> Decision:
        return Decision(self.entry, reason, full, False, self.state.frame_budget)

    def frame_budget(self, e: ProfileEntry) -> int:
        """Frames that fit: at most ``frame_burst`` x the entry's mean frame (its rate over the
        frame rate it sends at), so one frame (an IDR after a change included) never fills the
        link's queue for long. 0 (no cap) until the frame rate is measured."""
        fps = self.state.fps
        if e.max_fps > 0:
            fps = min(fps, e.max_fps)
        burst = self.settings.frame_burst * self.rate(e)
        rate = min(burst, self.state.ramp_kbps) if burst > 0 else self.state.ramp_kbps
        if fps <= 0 or not math.isfinite(rate):
            return 0
        return max(int(rate * 1000 / 8 / fps), MIN_FRAME_BUDGET)

    def _gain(self) -> float:
        """A probe's gain: ``probe_gain``; above a link's ceiling (what it carried when last
        overrun) at most CEILING_GAIN, so a link that did not grow is overrun by little."""
        g = self.settings.probe_gain
        return min(g, CEILING_GAIN) if math.isfinite(self.state.ceiling_kbps) else g

    def _ramp(self, w: Window, full: bool) -> Decision | None:
        """A paced probe's next step: after a good window its rate cap grows by
        ``probe_gain``, until the entry's own frames fit (the probe then counts its good
        windows). None when no probe is ramping."""
        st = self.state
        if not math.isfinite(st.ramp_kbps):
            return None
        binds = w.goodput_kbps >= RAMP_BINDS * st.ramp_kbps
        st.ramp_idle = 0 if binds else st.ramp_idle + 1
        # what arrived under the cap came through: the next cap is the gain above it (a
        # per-frame cap sends less than it on average, so the cap, not the goodput, grows)
        ramp = st.ramp_kbps * self._gain() if binds else st.ramp_kbps
        st.good = 0
        if ramp >= self.rate(self.entry) or st.ramp_idle >= 2:  # the cap no longer binds
            st.ramp_kbps = math.inf
            st.frame_budget = self.frame_budget(self.entry)
            return self._hold(f"probe ramp done: the entry's own rate fits ({w.describe()})", full)
        if ramp > st.ramp_kbps:  # a new budget only when the cap moves (a lower one is an IDR)
            st.ramp_kbps = ramp
            st.frame_budget = self.frame_budget(self.entry)
        return self._hold(
            f"probe ramp: up to {st.ramp_kbps:.0f} kbit/s, frames up to {st.frame_budget} B "
            f"({w.describe()})",
            full,
        )

    # -- the decision -------------------------------------------------------------------------
    def decide(self, now: float, w: Window, accuracy: float | None = None) -> Decision:
        """One window's decision; `accuracy` overrides the window's own estimate if given."""
        s, st = self.settings, self.state
        accuracy = w.accuracy if accuracy is None else accuracy
        full = False
        link_fits_full = w.samples and w.goodput_kbps >= s.full_frame_min_kbps
        if s.full_frame_every_s > 0 and now >= st.next_full_s and link_fits_full:
            full = True
            st.next_full_s = now + s.full_frame_every_s
        if w.samples and math.isfinite(w.cloud_ms):
            st.cloud_ms = w.cloud_ms
        self._learn_rate(w)
        self._learn_fps(w)

        # 1. the worst case: the accuracy estimate below the floor
        if st.worst_until_s != -math.inf and now >= st.worst_until_s:
            st.force_bypass, st.max_scale, st.worst_until_s = False, None, -math.inf
            d = self._change(now, self._base(), "accuracy hold over: SR allowed again", full)
            if d.changed:
                return d
        if accuracy is not None and s.accuracy_floor > 0:
            if accuracy >= s.accuracy_floor:
                st.confirming = False
            elif not st.confirming:
                st.confirming = True
                st.next_full_s = now + s.full_frame_every_s if s.full_frame_every_s > 0 else 0
                return self._hold(
                    f"accuracy estimate {accuracy:.2f} below the floor {s.accuracy_floor:.2f}: "
                    "asking for another full frame to confirm",
                    True,
                )
            else:
                st.confirming = False
                st.worst_until_s = now + s.accuracy_hold_s
                floor = f"accuracy estimate {accuracy:.2f} below the floor {s.accuracy_floor:.2f}"
                if not self.entry.sr_bypass:
                    st.force_bypass = True
                    return self._change(
                        now, self._base(), f"{floor} twice: bypass SR (bilinear)", full
                    )
                cands, _ = self._candidates(w)
                cap = self._capacity(w)
                finer = [
                    e
                    for e in cands
                    if e.scale < self.entry.scale and (cap is None or self.rate(e) <= cap)
                ]
                if finer:
                    best = max(finer, key=lambda e: (e.miou, -rate_kbps(e)))
                    st.max_scale = best.scale
                    return self._change(
                        now, best, f"{floor} with SR bypassed: raise resolution", full
                    )
                return self._hold(f"{floor} with SR bypassed; no finer entry fits the rate", full)

        # 2. step down, fast
        stalled = self.stalled(w.silent_s)  # also when stats stopped within the window
        bad_why = []
        counted = w.samples and w.frames_sent >= MIN_LOSS_FRAMES  # 1 of 2 lost is no rate
        counted = counted and now >= st.drain_until_s  # loss of the overrun a step down ended
        if counted and w.loss > s.loss_bad:
            bad_why.append(f"loss {w.loss:.0%}")
        if w.samples and w.trend_ms_per_s > s.trend_bad_ms_per_s:
            bad_why.append(f"latency rising {w.trend_ms_per_s:.0f} ms/s")
        if w.samples and w.overuse and now >= st.drain_until_s:
            bad_why.append(f"delay over-use, queue {w.queue_ms:.0f} ms")
        if stalled:
            bad_why.append(f"no stats for {w.silent_s:.1f} s")
        if bad_why:
            st.bad += 1
            st.good = 0
            queued = w.overuse and w.queue_ms >= s.queue_severe_ms and now >= st.drain_until_s
            severe = stalled or (counted and w.loss >= s.loss_severe) or queued
            if not severe and st.bad < s.bad_windows:
                return self._hold(
                    f"bad window {st.bad}/{s.bad_windows} ({', '.join(bad_why)}): holding",
                    full,
                )
            return self._step_down(now, w, ", ".join(bad_why), stalled, full)
        if w.samples == 0:
            return self._hold("no stats in this window: holding", full)

        if (w.overuse or w.loss > s.loss_bad) and now < st.drain_until_s:  # neither good nor bad
            st.bad = st.good = 0
            return self._hold(f"draining the queue the step down left: {w.describe()}", full)

        # 3. step up, carefully
        st.bad = 0
        st.good += 1
        ramp = self._ramp(w, full)
        if ramp is not None:
            return ramp
        if st.probing is not None and st.good >= s.up_windows:  # the probe held
            if rate_kbps(st.probing) >= st.blocked_kbps:  # where one failed: the link grew
                st.backoff_s, st.blocked_kbps = 0.0, math.inf
            if w.goodput_kbps > st.ceiling_kbps:
                st.ceiling_kbps, st.ceiling_until_s = math.inf, -math.inf
            st.probing = None
        cands, note = self._candidates(w)
        base = self._base()
        if st.draining and w.queue_ms < DRAINED_MS:
            return self._after_drain(now, w, cands, full)
        if base not in cands:  # the latency bound no longer admits the current entry
            lower = [e for e in cands if rate_kbps(e) <= rate_kbps(base)] or cands[:1]
            best = max(lower, key=lambda e: e.miou)
            return self._change(
                now, best, f"latency: predicted over {s.latency_bound_ms:.0f} ms{note}", full
            )
        if st.good < s.up_windows or now - st.last_change_s < s.hold_s:
            return self._hold(f"holding: {w.describe()}", full)
        up = [e for e in cands if rate_kbps(e) > rate_kbps(base) and e.miou > base.miou]
        if not up:
            return self._hold(f"at the top that fits{note}: {w.describe()}", full)
        if now < st.blocked_until_s:  # a failed probe blocks its rate and the ones above
            up = [e for e in up if rate_kbps(e) < st.blocked_kbps]
            if not up:
                return self._hold(
                    f"holding: the probe up failed, next try in {st.blocked_until_s - now:.0f} s",
                    full,
                )
        if now < st.ceiling_until_s:
            cap = s.safety * st.ceiling_kbps
            up = [e for e in up if self.rate(e) <= cap]
            if not up:
                return self._hold(
                    f"holding: at the top under {s.safety:g} x the link's ceiling "
                    f"{st.ceiling_kbps:.0f} kbit/s for {st.ceiling_until_s - now:.0f} s more",
                    full,
                )
        reach = s.climb_factor * min(self.rate(base), w.goodput_kbps)  # what really arrives
        near = [e for e in up if self.rate(e) <= reach]
        nxt = max(near, key=lambda e: e.miou) if near else min(up, key=rate_kbps)
        st.good = 0
        st.probing = nxt
        if s.probe_gain > 0:  # paced: frames capped at probe_gain x what arrives, then raised
            st.ramp_kbps, st.ramp_idle = self._gain() * w.goodput_kbps, 0
        return self._change(
            now,
            nxt,
            f"probe up: {s.up_windows} good windows (loss {w.loss:.0%}, latency trend "
            f"{w.trend_ms_per_s:+.0f} ms/s, goodput {w.goodput_kbps:.0f} kbit/s)"
            f"{self._rates_note()}{note}",
            full,
        )

    def rate(self, e: ProfileEntry) -> float:
        """An entry's rate as this stream sends it: the profiled rate x the measured ratio."""
        return rate_kbps(e) * self.state.rate_scale

    def _rates_note(self) -> str:
        scale = self.state.rate_scale
        return f" (profile rates x{scale:.2f}, as measured)" if abs(scale - 1) > 0.1 else ""

    def _learn_rate(self, w: Window) -> None:
        """A clean window (no loss, the entry in force throughout, a few stats) measures what
        the current entry really sends; every entry's rate is scaled by the smoothed ratio."""
        st = self.state
        nominal = rate_kbps(self._base())
        clean = w.samples >= 3 and w.loss == 0 and st.last_change_s <= w.start_s
        clean = clean and not math.isfinite(st.ramp_kbps)  # a probe's cap, not the entry
        if clean and math.isfinite(nominal) and nominal > 0 and w.goodput_kbps > 0:
            ratio = min(max(w.goodput_kbps / nominal, RATE_SCALE_MIN), RATE_SCALE_MAX)
            st.rate_scale += RATE_SCALE_ALPHA * (ratio - st.rate_scale)

    def _learn_fps(self, w: Window) -> None:
        """The frame rate the vehicle sends at (frame budgets divide an entry's rate by it)."""
        duration = w.end_s - w.start_s
        if w.samples >= 2 and w.frames_sent > 0 and duration > 0:
            fps = w.frames_sent / duration
            st = self.state
            st.fps = fps if st.fps <= 0 else st.fps + 0.3 * (fps - st.fps)

    def _after_drain(
        self, now: float, w: Window, cands: list[ProfileEntry], full: bool
    ) -> Decision:
        """The queue a step down left has drained: back to the most accurate entry under
        ``safety`` x the link's ceiling, without waiting for ``hold_s``."""
        s, st = self.settings, self.state
        st.draining = False
        cap = s.safety * st.ceiling_kbps
        fits = [e for e in cands if self.rate(e) <= cap and e.miou > self._base().miou]
        if not fits:
            return self._hold(f"queue drained: {w.describe()}", full)
        best = max(fits, key=lambda e: (e.miou, -rate_kbps(e)))
        return self._change(
            now,
            best,
            f"queue drained: back to {s.safety:g} x the link's {st.ceiling_kbps:.0f} "
            f"kbit/s = {cap:.0f} kbit/s",
            full,
        )

    def stalled(self, silent_s: float) -> bool:
        """Whether `silent_s` without stats is a stall (the node checks between windows, so a
        collapse is met within ``stall_s``, not up to a window later)."""
        st = self.state
        return silent_s >= max(self.settings.stall_s, 3 * st.cloud_ms / 1e3)  # 0: no stats yet

    def _capacity(self, w: Window) -> float | None:
        """The rate that fits: safety x goodput, when the window measured one."""
        return self.settings.safety * w.goodput_kbps if w.samples else None

    def _step_down(self, now: float, w: Window, why: str, stalled: bool, full: bool) -> Decision:
        s, st = self.settings, self.state
        st.bad = 0
        if math.isfinite(st.ramp_kbps):  # a paced probe failed: its cap goes with it
            st.ramp_kbps = math.inf
            st.frame_budget = self.frame_budget(self.entry)
        base = self._base()
        if st.probing is not None and st.probing == base:  # the probe failed: back off
            doubled = min(2 * st.backoff_s, MAX_BACKOFF * s.probe_backoff_s)
            st.backoff_s = doubled if st.backoff_s else s.probe_backoff_s
            if now >= st.blocked_until_s:
                st.blocked_kbps = math.inf
            st.blocked_kbps = min(st.blocked_kbps, rate_kbps(base))
            st.blocked_until_s = now + st.backoff_s
            st.probing = None
            why += f"; probe failed, not retried for {st.backoff_s:.0f} s"
        cands, note = self._candidates(w)
        lower = [e for e in cands if rate_kbps(e) < rate_kbps(base)]
        link = w.goodput_kbps if w.samples else math.inf  # what arrives in the window, or
        if math.isfinite(w.incoming_kbps) and w.incoming_kbps > 0:  # the last second's (a
            link = w.incoming_kbps  # window closed early at an over-use is too short to tell)
        # drain what queued (within about a second: BBR's drain; after a stall, at the lowest
        # entry), then climb back at once
        share = max(DRAIN_MIN, min(s.safety, 1 - w.queue_ms / 1000)) if w.overuse else s.safety
        st.draining = (share < s.safety or stalled) and s.ceiling_s > 0
        # the queue drains at (1 - share) x the link: until then over-use is that queue
        st.drain_until_s = now + DRAIN_GRACE_S + w.queue_ms / 1000 / max(1 - share, 0.2)
        if stalled:
            target = cands[0]
            fit = "the lowest entry"
        else:
            cap = share * link
            fitting = [e for e in lower if self.rate(e) <= cap]
            if fitting:
                target = max(fitting, key=lambda e: (e.miou, -rate_kbps(e)))
                fit = (
                    f"fits {share:.2g} x goodput {link:.0f} = {cap:.0f} kbit/s"
                    f"{' (draining the queue)' if st.draining else ''}{self._rates_note()}"
                )
            elif lower:
                target = lower[0]
                fit = f"nothing fits {cap:.0f} kbit/s: the lowest entry"
            else:
                return self._hold(f"{why}: already at the lowest entry", full)
        if rate_kbps(target) >= rate_kbps(base):
            return self._hold(f"{why}: already at the lowest entry", full)
        if s.ceiling_s > 0:  # what the link carried when overrun: no climb above it for a while
            st.ceiling_kbps = min(link, self.rate(base)) if stalled else link
            st.ceiling_until_s = now + s.ceiling_s
        return self._change(now, target, f"step down ({why}): {fit}{note}", full)
