"""The adaptive controller: measures the stream per window and picks a profile entry.

Plain Python (no ROS): the controller node feeds it the cloud's FrameStats and publishes what
it decides as a Knob. Per window (:mod:`cloudseg.control.window`) it takes goodput and loss of
the Frame stream, the trend of the transport latency, the cloud's time per frame, and the
accuracy estimate of online profiling (the agreement of labels from the restored
low-resolution frame with those of a full-resolution frame the vehicle sent once).

Rules, in order:

1. Worst case (the paper's Figure 4): an accuracy estimate below ``accuracy_floor`` is confirmed
   with a second full frame; confirmed, SR is bypassed, and if it already was, the resolution
   is raised. Held ``accuracy_hold_s``.
2. Delay over-use (:mod:`cloudseg.control.delay`; `Controller.overuse`, called by the node at
   once from the stats callback, or a window that carries the signal): back off to
   ``overuse_backoff`` x the rate reaching the cloud, not again within ``overuse_hold_s``.
3. Loss and stalls, the last line of defence: a window is bad with loss above ``loss_bad`` or
   the latency rising faster than ``trend_bad_ms_per_s``; ``bad_windows`` in a row, one severe
   window (``loss_severe``) or ``stall_s`` without stats step down to ``safety`` x goodput (a
   stall: the lowest entry), and set the link's ceiling for ``ceiling_s``.
4. Probe (BBR-like), after ``up_windows`` good windows and ``hold_s``: to ``probe_gain`` x
   min(rate in force, goodput) (squared after two probes held far from any over-use), under a
   failed probe's rate (``probe_backoff_s``, doubling to 4x) and the ceiling; a probe that
   meets over-use or loss failed, and the back-off drains it.

With ``rate_steps`` every decision carries an H.264 bitrate: the entry (scale) in force is
kept while the target lies in its scale's range, else the most accurate entry that fits
(`_pick`); what a bitrate really sends is learned per entry. ``max_frame_bytes`` = the target
x ``frame_budget_s``. Entries whose predicted latency exceeds ``latency_bound_ms`` are not
chosen unless none fits; the profile's rates are corrected online by what clean windows
measure (smoothed, 0.5..2). Every decision carries a human-readable reason.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from cloudseg.control.profile import ProfileEntry, pareto_front
from cloudseg.control.window import Window


@dataclass(frozen=True)
class ControllerSettings:
    """The controller's parameters (the controller node's, see cloudseg.graph.CONTROLLER)."""

    safety: float = 0.8  # use at most this fraction of the measured goodput
    latency_bound_ms: float = 500.0  # transport + cloud time per frame (0: no bound)
    start_kbps: float = 0.0  # start at the most accurate entry under this (0: the lowest)
    hold_s: float = 5.0  # no step up sooner than this after a change
    up_windows: int = 3  # good windows in a row before a probe up
    bad_windows: int = 2  # bad windows in a row before a step down (1 is noise)
    loss_bad: float = 0.05  # a window with more loss is bad
    loss_severe: float = 0.3  # ... and with this much, step down at once
    trend_bad_ms_per_s: float = 50.0  # a window whose transport latency rises faster is bad
    stall_s: float = 1.0  # no stats for this long (after some arrived): step to the lowest entry
    probe_backoff_s: float = 20.0  # a failed probe is not repeated for this long (doubling)
    accuracy_floor: float = 0.6  # worst case below this accuracy estimate (0: off)
    accuracy_hold_s: float = 30.0  # how long the worst-case setting is kept
    full_frame_every_s: float = 10.0  # online profiling: a full frame this often (0: never)
    full_frame_min_kbps: float = 3000.0  # ... only while the goodput is at least this: a
    # full-resolution IDR (~100 kB) blocks a thin link for about a second
    climb_factor: float = 2.0  # a step up reaches at most this x the current rate (1: one entry)
    ceiling_s: float = 15.0  # after a step down, no step up above the link's ceiling this long
    probe_gain: float = 1.25  # a probe aims at this x the measured goodput (BBR's probe gain)
    overuse_backoff: float = 0.85  # on delay over-use: this x the rate reaching the cloud
    overuse_hold_s: float = 1.0  # after a back-off, over-use is not acted on again this long
    rate_steps: bool = False  # within a scale, follow the target with H.264 bitrate steps
    frame_budget_s: float = 0.0  # Knob.max_frame_bytes = target rate x this (0: no cap)

    def __post_init__(self) -> None:
        if not 0 < self.safety <= 1:
            raise ValueError(f"safety must be in (0, 1], got {self.safety}")
        if self.up_windows < 1 or self.bad_windows < 1:
            raise ValueError("up_windows and bad_windows must be >= 1")
        if not self.climb_factor >= 1:
            raise ValueError(f"climb_factor must be >= 1, got {self.climb_factor}")
        if not self.ceiling_s >= 0:
            raise ValueError(f"ceiling_s must be >= 0, got {self.ceiling_s}")
        if not 1 <= self.probe_gain <= self.climb_factor:
            raise ValueError(f"probe_gain must be in [1, climb_factor], got {self.probe_gain}")
        if not 0 < self.overuse_backoff < 1:
            raise ValueError(f"overuse_backoff must be in (0, 1), got {self.overuse_backoff}")


@dataclass(frozen=True)
class Decision:
    """The entry to use, why, and whether to ask for a full-resolution frame now."""

    entry: ProfileEntry
    reason: str
    request_full_frame: bool = False
    changed: bool = False  # the entry (or bitrate) differs from the previous decision's
    bitrate_kbps: int = 0  # H.264 bitrate step within the entry's scale (0: the entry's own)
    max_frame_bytes: int = 0  # per-frame size budget for the compressor (0: none)


RATE_SCALE_MIN, RATE_SCALE_MAX = 0.5, 2.0
"""Bounds of the online correction of the profile's rates."""
RATE_SCALE_ALPHA = 0.3
"""Smoothing of the online correction (weight of one clean window)."""


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
    probing: tuple[ProfileEntry, int] | None = None  # the last probe up (entry, bitrate)
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
    # per entry: measured rate / H.264 bitrate of its bitrate steps (smoothed; the selector
    # drops frames the encoder counted on, more under an fps cap); 1 until measured (CBR
    # sends at most its bitrate, so 1 never under-estimates)
    bitrate_scales: dict = field(default_factory=dict)
    bitrate_kbps: int = 0  # the bitrate step in force (0: the entry's own rate control)
    overuse_until_s: float = -math.inf  # over-use is not acted on before this (queue drains)
    overuse_s: float = -math.inf  # the last back-off on delay over-use
    held: int = 0  # probes in a row that held (two: the next probe aims at probe_gain**2)


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

    def start(self) -> Decision:
        """The first decision: the start entry, with its per-frame budget."""
        return self._decision("start", changed=True)

    # -- helpers ------------------------------------------------------------------------------
    def _effective(self, e: ProfileEntry) -> ProfileEntry:
        """An entry with the worst-case override applied."""
        return replace(e, sr_bypass=True) if self.state.force_bypass and not e.sr_bypass else e

    def _candidates(self, w: Window) -> tuple[list[ProfileEntry], str]:
        """The entries allowed now (scale cap of the worst case, latency bound), by rate."""
        s = self.settings
        es = self._allowed()
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

    def _change(
        self, now: float, entry: ProfileEntry, reason: str, full: bool, bitrate: int = 0
    ) -> Decision:
        entry = self._effective(entry)
        st = self.state
        changed = entry != self.entry or bitrate != st.bitrate_kbps
        if changed:
            self.entry, st.bitrate_kbps = entry, bitrate
            st.last_change_s = now
        return self._decision(reason, full, changed)

    def _decision(self, reason: str, full: bool = False, changed: bool = False) -> Decision:
        """A decision for the entry and bitrate in force, with the per-frame budget."""
        budget = int(self.current_kbps() * 1000 / 8 * self.settings.frame_budget_s)
        if not math.isfinite(self.current_kbps()):
            budget = 0
        bitrate = self.state.bitrate_kbps
        return Decision(self.entry, reason, full, changed, bitrate, budget)

    def current_kbps(self) -> float:
        """The rate the stream is set to send: the bitrate step, else the entry's rate."""
        st = self.state
        base = self._base()
        return st.bitrate_kbps * self.bitrate_scale(base) if st.bitrate_kbps else self.rate(base)

    def bitrate_scale(self, e: ProfileEntry) -> float:
        """What a bitrate step of entry `e` really sends per kbit/s asked (1 until measured)."""
        return self.state.bitrate_scales.get(e, 1.0)

    def _range(self, scale: int, cands: list[ProfileEntry]) -> tuple[float, float]:
        """A scale's bitrate range (rates as sent): from its cheapest entry on the Pareto front
        to its dearest profiled entry."""
        low = min((self.rate(e) for e in cands if e.scale == scale), default=math.inf)
        return low, max(self.rate(e) for e in self.all_entries if e.scale == scale)

    def _pick(self, target: float, cands: list[ProfileEntry]) -> tuple[ProfileEntry, int]:
        """The entry (and bitrate step) for a target rate. Without ``rate_steps``: the most
        accurate entry whose rate fits it (the lowest when none does). With them, always a
        bitrate (so the encoder never sends more than asked): the entry in force while the
        target is within its scale's range (a scale change costs an IDR and a new restoration
        path), else that most accurate entry, up to its scale's top or across a gap up to the
        next more accurate entry."""
        fitting = [e for e in cands if self.rate(e) <= target]
        entry = max(fitting, key=lambda e: (e.miou, -rate_kbps(e))) if fitting else cands[0]
        if not self.settings.rate_steps:
            return entry, 0
        base = self._base()
        if base in cands:
            low, top = self._range(base.scale, cands)
            if low <= target <= top:
                return base, max(round(target / self.bitrate_scale(base)), 1)  # sends: target
        _, top = self._range(entry.scale, cands)
        above = [self.rate(e) for e in cands if e.miou > entry.miou and self.rate(e) > target]
        top = max([top, min(above)] if above else [top])
        return entry, max(round(min(target, top) / self.bitrate_scale(entry)), 1)

    def overuse(self, now: float, incoming_kbps: float, why: str = "") -> Decision:
        """The delay detector says a queue is growing: back off at once to ``overuse_backoff``
        x the rate reaching the cloud (at least one step down), unless a back-off happened
        within ``overuse_hold_s`` (its queue is still draining)."""
        s, st = self.settings, self.state
        if now < st.overuse_until_s:
            return self._decision(f"over-use: backed off {s.overuse_hold_s:g} s ago, draining")
        current = self.current_kbps()
        measured = incoming_kbps if math.isfinite(incoming_kbps) and incoming_kbps > 0 else current
        target = s.overuse_backoff * min(measured, current)
        st.overuse_until_s, st.overuse_s = now + s.overuse_hold_s, now
        st.bad, st.good, st.held = 0, 0, 0
        note = self._fail_probe(now)
        entry, bitrate = self._pick(target, self._allowed())  # no ceiling: a failed probe blocks
        if (entry, bitrate) == (self._base(), st.bitrate_kbps):
            return self._decision(f"over-use{why}: already at the lowest entry{note}")
        return self._change(
            now,
            entry,
            f"back off (delay over-use{why}): {s.overuse_backoff:g} x {measured:.0f} kbit/s "
            f"reaching the cloud = {target:.0f} kbit/s{note}",
            False,
            bitrate,
        )

    def _allowed(self) -> list[ProfileEntry]:
        """The entries the worst case's scale cap allows (all when it allows none)."""
        cap = self.state.max_scale
        return [e for e in self.entries if cap is None or e.scale <= cap] or list(self.entries)

    def _fail_probe(self, now: float) -> str:
        """When the entry in force is a probe, it failed: block its rate for a back-off."""
        s, st = self.settings, self.state
        if st.probing is None or st.probing != (self._base(), st.bitrate_kbps):
            return ""
        # doubling, at most 4x: a link that grew is found again within a minute
        st.backoff_s = min(2 * st.backoff_s, 4 * s.probe_backoff_s) or s.probe_backoff_s
        if now >= st.blocked_until_s:
            st.blocked_kbps = math.inf
        st.blocked_kbps = min(st.blocked_kbps, self.current_kbps())
        st.blocked_until_s = now + st.backoff_s
        st.probing = None
        return f"; probe failed, not retried for {st.backoff_s:.0f} s"

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
                return self._decision(
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
                cap = s.safety * w.goodput_kbps if w.samples else None
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
                return self._decision(
                    f"{floor} with SR bypassed; no finer entry fits the rate", full
                )

        # 2. step down, fast
        stalled = self.stalled(w.silent_s)  # also when stats stopped within the window
        bad_why = []
        if w.samples and w.loss > s.loss_bad:
            bad_why.append(f"loss {w.loss:.0%}")
        if w.samples and w.trend_ms_per_s > s.trend_bad_ms_per_s:
            bad_why.append(f"latency rising {w.trend_ms_per_s:.0f} ms/s")
        if stalled:
            bad_why.append(f"no stats for {w.silent_s:.1f} s")
        if bad_why:
            st.bad += 1
            st.good = 0
            severe = stalled or w.loss >= s.loss_severe
            if not severe and st.bad < s.bad_windows:
                return self._decision(
                    f"bad window {st.bad}/{s.bad_windows} ({', '.join(bad_why)}): holding",
                    full,
                )
            return self._step_down(now, w, ", ".join(bad_why), stalled, full)
        if w.overuse:  # the node acts on the signal at once; a window fed alone acts here
            return self.overuse(now, w.incoming_kbps, " in the window")
        if w.samples == 0:
            return self._decision("no stats in this window: holding", full)

        # 3. step up, carefully
        st.bad = 0
        st.good += 1
        if st.probing is not None and st.good >= s.up_windows:  # the probe held
            if self._probe_kbps() >= st.blocked_kbps:  # where one failed: the link grew
                st.backoff_s, st.blocked_kbps = 0.0, math.inf
            if w.goodput_kbps > st.ceiling_kbps:
                st.ceiling_kbps, st.ceiling_until_s = math.inf, -math.inf
            st.probing = None
            st.held += 1
        cands, note = self._candidates(w)
        base = self._base()
        if base not in cands:  # the latency bound no longer admits the current entry
            lower = [e for e in cands if rate_kbps(e) <= rate_kbps(base)] or cands[:1]
            best = max(lower, key=lambda e: e.miou)
            return self._change(
                now, best, f"latency: predicted over {s.latency_bound_ms:.0f} ms{note}", full
            )
        if st.good < s.up_windows or now - st.last_change_s < s.hold_s:
            return self._decision(f"holding: {w.describe()}", full)
        # BBR's probe: a little above what really arrives (x probe_gain; x probe_gain**2
        # after two probes in a row held far from any over-use, at most climb_factor)
        # near a rate where a queue grew (an over-use within ceiling_s): the plain gain
        far = now - st.overuse_s > s.ceiling_s
        gain = min(s.probe_gain ** (2 if st.held >= 2 and far else 1), s.climb_factor)
        current = self.current_kbps()
        target = gain * min(current, w.goodput_kbps)
        caps = []
        if now < st.blocked_until_s:  # a failed probe blocks its rate and the ones above
            target = min(target, 0.97 * st.blocked_kbps)
            caps.append(f"under the failed probe's {st.blocked_kbps:.0f} kbit/s")
        if now < st.ceiling_until_s:  # the link's ceiling when it was last overrun
            target = min(target, s.safety * st.ceiling_kbps)
            caps.append(f"under {s.safety:g} x the link's ceiling {st.ceiling_kbps:.0f} kbit/s")
        entry, bitrate = self._pick(target, cands)
        rate = bitrate * self.bitrate_scale(entry) if bitrate else self.rate(entry)
        better = entry.miou > base.miou or (entry == base and bitrate > st.bitrate_kbps)
        if not better or rate <= current * 1.02:  # without rate steps: the next entry up,
            # if within climb_factor x what arrives (else a sparse profile never climbs)
            reach = s.climb_factor * min(current, w.goodput_kbps)
            up = [e for e in cands if e.miou > base.miou and current < self.rate(e) <= reach]
            up = [e for e in up if self.rate(e) <= target / gain * s.climb_factor]
            if up and not caps and not s.rate_steps:
                entry, bitrate = min(up, key=self.rate), 0
                rate, better = self.rate(entry), True
        if not better or rate <= current * 1.02:
            why = f" ({'; '.join(caps)})" if caps else ""
            return self._decision(f"at the top that fits{why}{note}: {w.describe()}", full)
        st.good = 0
        st.probing = (entry, bitrate)
        return self._change(
            now,
            entry,
            f"probe up to {rate:.0f} kbit/s ({gain:.2f} x min(rate, goodput)): {s.up_windows} "
            f"good windows (loss {w.loss:.0%}, latency trend {w.trend_ms_per_s:+.0f} ms/s, "
            f"goodput {w.goodput_kbps:.0f} kbit/s, queue {w.queue_ms:.0f} ms)"
            f"{self._rates_note()}{note}",
            full,
            bitrate,
        )

    def _probe_kbps(self) -> float:
        probe = self.state.probing
        if probe is None:
            return math.nan
        return probe[1] * self.bitrate_scale(probe[0]) if probe[1] else self.rate(probe[0])

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
        clean = w.samples >= 3 and w.loss == 0 and st.last_change_s <= w.start_s
        clean = clean and not w.overuse and w.goodput_kbps > 0
        if clean and st.bitrate_kbps:  # a bitrate step: what it really sends (the selector
            # drops frames the encoder's rate control counted on), 0.3..1
            ratio = min(max(w.goodput_kbps / st.bitrate_kbps, 0.3), 1.0)
            base = self._base()
            old = self.bitrate_scale(base)
            st.bitrate_scales[base] = old + RATE_SCALE_ALPHA * (ratio - old)
            return
        nominal = rate_kbps(self._base())
        if clean and math.isfinite(nominal) and nominal > 0:
            ratio = min(max(w.goodput_kbps / nominal, RATE_SCALE_MIN), RATE_SCALE_MAX)
            st.rate_scale += RATE_SCALE_ALPHA * (ratio - st.rate_scale)

    def stalled(self, silent_s: float) -> bool:
        """Whether `silent_s` without stats is a stall (the node checks between windows, so a
        collapse is met within ``stall_s``, not up to a window later)."""
        st = self.state
        return silent_s >= max(self.settings.stall_s, 3 * st.cloud_ms / 1e3)  # 0: no stats yet

    def _step_down(self, now: float, w: Window, why: str, stalled: bool, full: bool) -> Decision:
        s, st = self.settings, self.state
        st.bad, st.held = 0, 0
        current = self.current_kbps()
        why += self._fail_probe(now)
        cands, note = self._candidates(w)
        if stalled:
            target, bitrate = cands[0], 0
            fit = "the lowest entry"
        else:
            cap = s.safety * w.goodput_kbps
            target, bitrate = self._pick(cap, cands)
            fit = (
                f"fits {s.safety:g} x goodput {w.goodput_kbps:.0f} = {cap:.0f} kbit/s"
                f"{self._rates_note()}"
            )
            if (bitrate * self.bitrate_scale(target) or self.rate(target)) >= current:
                lower = [e for e in cands if self.rate(e) < current]
                if not lower:
                    return self._decision(f"{why}: already at the lowest entry", full)
                target, bitrate = max(lower, key=self.rate), 0
                fit = f"nothing fits {cap:.0f} kbit/s: the next lower entry"
        if (bitrate * self.bitrate_scale(target) or self.rate(target)) >= current:
            return self._decision(f"{why}: already at the lowest entry", full)
        if s.ceiling_s > 0:  # what the link carried when overrun: no climb above it for a while
            st.ceiling_kbps = current if stalled else w.goodput_kbps
            st.ceiling_until_s = now + s.ceiling_s
        return self._change(now, target, f"step down ({why}): {fit}{note}", full, bitrate)
