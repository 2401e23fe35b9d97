"""The adaptive controller on recorded measurement sequences (pure, no ROS)."""

from __future__ import annotations

import itertools
import math
from dataclasses import replace

import pytest

from cloudseg.control.controller import Controller, ControllerSettings, rate_kbps
from cloudseg.control.profile import ProfileEntry
from cloudseg.control.window import Measurements, StatSample, Window, theil_sen_slope

PROFILE = [
    ProfileEntry(scale=4, crf=28, kbps=300, miou=0.45, cloud_ms=40),
    ProfileEntry(scale=4, crf=23, kbps=600, miou=0.50, cloud_ms=40),
    ProfileEntry(scale=2, crf=23, kbps=1500, miou=0.58, cloud_ms=60),
    ProfileEntry(scale=1, crf=23, kbps=4000, miou=0.65, cloud_ms=90),
    ProfileEntry(scale=4, crf=23, kbps=600, miou=0.44, cloud_ms=20, sr_bypass=True),  # dominated
]


def window(
    goodput: float,
    loss: float = 0.0,
    trend: float = 0.0,
    samples: int = 10,
    accuracy: float | None = None,
    silent: float = 0.1,
) -> Window:
    return Window(0, 1, samples, samples, goodput, loss, trend, 30.0, 100.0, 50.0, accuracy, silent)


def link(rate: float, capacity: float) -> Window:
    """One window of a sender at `rate` over a link of `capacity` kbit/s."""
    if rate <= capacity:
        return window(rate)
    return window(capacity, loss=1 - capacity / rate, trend=200.0)


def run(ctl: Controller, capacities: list[float], t0: float = 0.0) -> list:
    """Feed one window per second; returns the decisions."""
    out = []
    for i, c in enumerate(capacities):
        out.append(ctl.decide(t0 + i, link(rate_kbps(ctl.entry), c)))
    return out


def settings(**kw) -> ControllerSettings:
    return ControllerSettings(**{"full_frame_every_s": 0.0, **kw})


def test_starts_at_the_most_accurate_entry_under_start_kbps() -> None:
    assert Controller(PROFILE, settings()).entry.kbps == 300
    assert Controller(PROFILE, settings(start_kbps=2000)).entry.kbps == 1500


def test_steps_down_within_two_windows_after_a_bandwidth_drop() -> None:
    ctl = Controller(PROFILE, settings(start_kbps=10_000))
    assert ctl.entry.kbps == 4000
    run(ctl, [8000] * 5)
    assert ctl.entry.kbps == 4000
    ds = run(ctl, [3200] * 3, t0=5)  # 20% loss: bad, not severe
    assert not ds[0].changed and "bad window 1/2" in ds[0].reason
    assert ds[1].changed and ds[1].entry.kbps == 1500  # the best under 0.8 x 3200
    assert "step down" in ds[1].reason and "goodput 3200" in ds[1].reason
    assert not ds[2].changed
    ds = run(ctl, [400] * 2, t0=8)  # 73% loss: severe, at once
    assert ds[0].changed and ds[0].entry.kbps == 300


def test_steps_up_after_recovery_without_flapping() -> None:
    ctl = Controller(PROFILE, settings(start_kbps=10_000))
    run(ctl, [1000] * 4)
    assert ctl.entry.kbps == 600
    ds = run(ctl, [8000] * 40, t0=4)
    assert ctl.entry.kbps == 4000
    ups = [(i, d) for i, d in enumerate(ds) if d.changed]
    assert len(ups) == 2 and all("probe up" in d.reason for _, d in ups)
    assert ups[1][0] - ups[0][0] >= ctl.settings.hold_s  # one step at a time, held


def test_a_link_between_two_entries_does_not_flap() -> None:
    ctl = Controller(PROFILE, settings(start_kbps=600, probe_backoff_s=20.0))
    ds = run(ctl, [1000] * 120)
    changes = [d for d in ds if d.changed]
    # probes to 1500 fail and are backed off 20 s, 40 s, 80 s: 3 probes in 2 min
    assert len(changes) == 6
    assert all(d.entry.kbps in (600, 1500) for d in changes)  # never past the failed one
    assert any("probe failed" in d.reason for d in changes)
    assert ctl.entry.kbps == 600


def test_ignores_a_single_noisy_window() -> None:
    ctl = Controller(PROFILE, settings(start_kbps=10_000))
    ds = [ctl.decide(t, w) for t, w in enumerate([window(5000)] * 3 + [window(4000, 0.1, 300)])]
    ds += [ctl.decide(4 + t, window(5000)) for t in range(2)]
    assert not any(d.changed for d in ds)
    assert "bad window 1/2" in ds[3].reason


def test_a_severe_loss_steps_down_at_once() -> None:
    ctl = Controller(PROFILE, settings(start_kbps=1500))
    d = ctl.decide(0, window(500, loss=0.6))
    assert d.changed and d.entry.kbps == 300 and "loss 60%" in d.reason


def test_silence_steps_down_to_the_lowest_entry() -> None:
    ctl = Controller(PROFILE, settings(start_kbps=10_000))
    ctl.decide(0, window(4000))
    assert not ctl.decide(1, window(0, samples=0, silent=0.6)).changed  # a short gap
    d = ctl.decide(2, window(0, samples=0, silent=1.2))  # before best-effort UDP collapses
    assert d.changed and d.entry.kbps == 300 and "no stats for 1.2 s" in d.reason


def test_a_slow_cloud_is_not_a_stall() -> None:
    ctl = Controller(PROFILE, settings(start_kbps=10_000))
    slow = Window(0, 1, 1, 1, 4000, 0.0, 0.0, 30.0, 2000.0, 1500.0, None, 0.1)  # 1.5 s a frame
    ctl.decide(0, slow)
    assert not ctl.decide(4, window(0, samples=0, silent=4.0)).changed
    assert ctl.decide(5, window(0, samples=0, silent=5.0)).changed  # 3 x 1.5 s


def test_bypasses_sr_when_the_accuracy_estimate_collapses() -> None:
    ctl = Controller(PROFILE, settings(start_kbps=1500))
    first = ctl.decide(0, window(1500), accuracy=0.2)
    assert not first.changed and first.request_full_frame and "confirm" in first.reason
    d = ctl.decide(1, window(1500), accuracy=0.25)
    assert d.changed and d.entry.sr_bypass and d.entry.scale == 2
    assert "bypass SR" in d.reason
    # still below the floor with SR bypassed: raise the resolution (a finer scale that fits)
    ctl.decide(2, window(6000), accuracy=0.3)
    d = ctl.decide(3, window(6000), accuracy=0.3)
    assert d.changed and d.entry.scale == 1 and d.entry.sr_bypass
    assert "raise resolution" in d.reason
    # after the hold, SR comes back
    d = ctl.decide(3 + ctl.settings.accuracy_hold_s, window(6000))
    assert d.changed and not d.entry.sr_bypass and "SR allowed again" in d.reason


def test_one_low_estimate_then_a_good_one_changes_nothing() -> None:
    ctl = Controller(PROFILE, settings(start_kbps=1500))
    ctl.decide(0, window(1500), accuracy=0.2)
    d = ctl.decide(1, window(1500), accuracy=0.7)
    assert not d.changed and not ctl.entry.sr_bypass


def test_requests_a_full_frame_every_k_seconds() -> None:
    ctl = Controller(PROFILE, ControllerSettings(full_frame_every_s=5.0, full_frame_min_kbps=0))
    asked = [t for t in range(21) if ctl.decide(t, window(300)).request_full_frame]
    assert asked == [0, 5, 10, 15, 20]


def test_no_full_frame_while_the_link_is_thin() -> None:
    """A full-resolution IDR would block a thin link for about a second: profiling waits."""
    ctl = Controller(PROFILE, ControllerSettings(full_frame_every_s=5.0, full_frame_min_kbps=3000))
    goodput = [1000] * 10 + [4000] * 11
    asked = [t for t, g in enumerate(goodput) if ctl.decide(t, window(g)).request_full_frame]
    assert asked == [10, 15, 20]


def test_latency_bound_excludes_slow_entries() -> None:
    ctl = Controller(PROFILE, settings(start_kbps=1500, latency_bound_ms=100.0))
    # measured cloud time 50 ms vs. 60 profiled; transport 30 ms: 4000 kbit/s entry predicted
    # 30 + 90 x 50/60 = 105 ms > 100
    run(ctl, [8000] * 30)
    assert ctl.entry.kbps == 1500


def test_settings_are_checked() -> None:
    for bad in ({"safety": 0}, {"climb_factor": 0.5}, {"ceiling_s": -1.0}):
        with pytest.raises(ValueError):
            ControllerSettings(**bad)


LADDER = [  # close entries, as a measured profile has them
    ProfileEntry(scale=4, crf=30 - i, kbps=kbps, miou=0.3 + 0.03 * i, cloud_ms=40)
    for i, kbps in enumerate([300, 400, 500, 650, 800, 1000, 1300, 1700, 2200, 2900, 3800])
]


def test_climbs_several_close_entries_at_once() -> None:
    ctl = Controller(LADDER, settings())
    ds = run(ctl, [10_000] * 40)
    ups = [d for d in ds if d.changed]
    assert ctl.entry.kbps == 3800
    assert len(ups) < len(LADDER) - 1 and all("probe up" in d.reason for d in ups)
    rates = [300.0] + [d.entry.kbps for d in ups]
    assert all(b <= 2 * a for a, b in itertools.pairwise(rates))  # at most 2x the current rate
    top = next(i for i, d in enumerate(ds) if d.entry.kbps == 3800) + 1
    one_step = Controller(LADDER, settings(climb_factor=1.0))
    run(one_step, [10_000] * top)
    assert one_step.entry.kbps < 3800  # in as many windows the one-entry climb is on its way


def test_no_climb_above_the_links_ceiling_after_a_drop() -> None:
    ctl = Controller(PROFILE, settings(start_kbps=10_000, ceiling_s=15.0))
    run(ctl, [8000] * 3)
    ds = run(ctl, [2000] * 40, t0=3)  # 50% loss at 4000: down to 1500 at once
    assert ds[0].changed and ds[0].entry.kbps == 1500
    probes = [i for i, d in enumerate(ds) if d.changed and "probe up" in d.reason]
    assert probes and probes[0] >= 15  # then it tries again
    ceiling = [i for i, d in enumerate(ds[: probes[0]]) if "link's ceiling 2000" in d.reason]
    assert ceiling and ceiling[-1] <= 15  # held under 0.8 x 2000 for ceiling_s
    no_ceiling = Controller(PROFILE, settings(start_kbps=10_000, ceiling_s=0.0))
    run(no_ceiling, [8000] * 3)
    ds = run(no_ceiling, [2000] * 15, t0=3)
    assert any(d.changed and "probe up" in d.reason for d in ds)  # after hold_s, not later


def test_a_long_silence_does_not_hold_the_climb_down() -> None:
    """Stall windows after the step to the lowest entry set no ceiling at the lowest rate."""
    ctl = Controller(PROFILE, settings(start_kbps=1500))
    ctl.decide(0, window(1500))
    silences = [ctl.decide(t, window(0, samples=0, silent=t - 0.5)) for t in (2, 3, 4, 5)]
    assert silences[0].changed and ctl.entry.kbps == 300
    assert not any(d.changed for d in silences[1:])
    ds = run(ctl, [8000] * 12, t0=6)
    ups = [i for i, d in enumerate(ds) if d.changed]
    assert ups and ups[0] <= 4  # after up_windows and hold_s, not ceiling_s
    assert ds[ups[0]].entry.kbps == 600  # 2 x 300: one entry (the ceiling of 0.8 x 1500 allows)


def test_stalled_after_stall_s_or_three_cloud_times() -> None:
    ctl = Controller(PROFILE, settings(stall_s=1.0))
    assert not ctl.stalled(0.0) and not ctl.stalled(0.9) and ctl.stalled(1.0)
    ctl.decide(0, Window(0, 1, 1, 1, 4000, 0.0, 0.0, 30.0, 2000.0, 1500.0, None, 0.1))
    assert not ctl.stalled(4.0) and ctl.stalled(4.5)  # a 1.5 s cloud is not a stall


def test_profile_rates_are_corrected_by_what_the_stream_really_sends() -> None:
    """The scene costs 1.3x the profiled bits: the corrected controller settles on the entry
    that really fits instead of probing one that only fits on paper."""

    def run_dear(ctl: Controller, seconds: int) -> list:
        out = []
        for t in range(1, seconds + 1):
            w = replace(link(1.3 * rate_kbps(ctl.entry), 1000), start_s=t - 1, end_s=t)
            out.append(ctl.decide(t, w))
        return out

    ctl = Controller(LADDER, settings(start_kbps=500))
    ds = run_dear(ctl, 120)
    assert ctl.state.rate_scale == pytest.approx(1.3, abs=0.05)
    assert any("profile rates x1.3" in d.reason for d in ds if d.changed)
    downs = [d.entry.kbps for d in ds if d.changed and "step down" in d.reason]
    assert downs and all(1.3 * r <= 1000 for r in downs)  # every step down really fits
    naive = Controller(LADDER, settings(start_kbps=500))
    naive.rate = rate_kbps  # no correction
    naive_downs = [d.entry.kbps for d in run_dear(naive, 120) if "step down" in d.reason]
    assert any(1.3 * r > 1000 for r in naive_downs)  # 800 "fits" 0.8 x 1000 on paper only


def test_above_an_old_ceiling_the_probe_is_gentler() -> None:
    ctl = Controller(LADDER, settings(start_kbps=2200, probe_backoff_s=20.0, ceiling_s=15.0))
    run(ctl, [1000] * 30)  # overrun: the ceiling is 1000
    assert ctl.entry.kbps <= 800 and math.isfinite(ctl.state.ceiling_kbps)
    t, before = 30, ctl.entry.kbps
    while not (d := ctl.decide(t, timed(t, before))).changed:
        t += 1
    assert "probe up" in d.reason  # capped at 1.15 x what arrives, not probe_gain (1.5)
    assert d.frame_budget == int(1.15 * before * 1000 / 8 / 10)
    ds = run(ctl, [10_000] * 40, t0=t + 1)
    assert ctl.entry.kbps == 3800 and not math.isfinite(ctl.state.ceiling_kbps)
    assert any("probe up" in d.reason for d in ds)


def test_a_failed_probe_blocks_the_entries_above_it() -> None:
    ctl = Controller(LADDER, settings(start_kbps=800, climb_factor=3.0, ceiling_s=0.0))
    ds = run(ctl, [1200] * 60)  # 1300 and up do not fit
    ups = [d.entry.kbps for d in ds if d.changed and "probe up" in d.reason]
    # each failure blocks its rate and those above: the probes come down until one holds
    assert ups[:4] == [2200, 1700, 1300, 1000]
    assert ctl.entry.kbps == 1000


# -- Measurements -----------------------------------------------------------------------------


def sample(seq: int, t: float, size: int = 1000, transport: float = 20.0, **kw) -> StatSample:
    return StatSample(seq, size, t - 0.1, t, transport, 50.0, **kw)


def test_measurements_goodput_and_loss_from_seq_gaps() -> None:
    m = Measurements()
    for seq in range(10):  # 10 frames of 1000 bytes in 1 s
        m.add(sample(seq, seq * 0.1))
    w = m.take(1.0)
    assert w.samples == 10 and w.loss == 0.0
    assert w.goodput_kbps == pytest.approx(9 * 8000 / 1000 / 1.0, rel=0.01)  # first: baseline
    for seq in (10, 12, 14, 16, 18):  # every other frame lost
        m.add(sample(seq, 1 + (seq - 10) * 0.1))
    w = m.take(2.0)
    assert w.frames_sent == 9 and w.loss == pytest.approx(1 - 5 / 9)
    assert w.goodput_kbps == pytest.approx(5 * 8.0)
    assert w.transport_ms == 20.0 and w.latency_ms == pytest.approx(100.0)


def test_measurements_use_the_clouds_counters() -> None:
    m = Measurements()
    m.add(sample(0, 0.0, frames_received=1, bytes_received=1000))
    m.take(1.0)
    # the cloud processed only seq 10 but received 8 of the 10 frames sent, 16 kB
    m.add(sample(10, 1.9, frames_received=9, bytes_received=17_000))
    w = m.take(2.0)
    assert w.loss == pytest.approx(0.2)
    assert w.goodput_kbps == pytest.approx(128.0)


def test_measurements_latency_trend_is_robust_to_one_outlier() -> None:
    m = Measurements()
    for i in range(10):
        m.add(sample(i, i * 0.1, transport=20 + 100 * i * 0.1))  # +100 ms per second
    assert m.take(1.0).trend_ms_per_s == pytest.approx(100.0)
    for i in range(10):
        m.add(sample(10 + i, 1 + i * 0.1, transport=500.0 if i == 3 else 20.0))
    assert m.take(2.0).trend_ms_per_s == pytest.approx(0.0)
    assert theil_sen_slope([0], [1]) == 0.0


def test_measurements_empty_window_and_accuracy() -> None:
    m = Measurements()
    m.add(sample(0, 0.5, accuracy=0.8))
    w = m.take(1.0)
    assert w.accuracy == 0.8 and w.samples == 1
    w = m.take(2.0)
    assert w.samples == 0 and w.accuracy is None and w.silent_s == pytest.approx(1.5)
    assert math.isnan(w.transport_ms)


def test_the_compressor_refuses_out_of_range_knob_values() -> None:
    from cloudseg.media.stream import CompressorSettings

    for bad in ({"crf": 60}, {"quality": 101}, {"scale": 0}):
        with pytest.raises(ValueError):
            CompressorSettings().with_changes(**bad)


# -- the accuracy estimate (cloud side) -------------------------------------------------------


def test_accuracy_estimate_compares_the_streamed_frame_with_the_full_one() -> None:
    import numpy as np

    from cloudseg.control.accuracy import as_streamed, estimate_accuracy, label_agreement

    rgb = np.zeros((64, 128, 3), np.uint8)
    rgb[:, 64:] = 200
    assert as_streamed(rgb, 4, None).shape == (16, 32, 3)
    coded = as_streamed(rgb, 2, 23)
    assert coded.shape == (32, 64, 3) and abs(int(coded[0, 40, 0]) - 200) < 10

    class Service:  # labels: bright pixels are class 1, restored bilinearly
        def segment_lr(self, lr, scale, width, height, sr_bypass):
            import cv2

            up = cv2.resize(lr, (width, height), interpolation=cv2.INTER_LINEAR)
            return type("R", (), {"labels": (up[..., 0] > 100).astype(np.uint8)})()

    full = (rgb[..., 0] > 100).astype(np.uint8)
    assert estimate_accuracy(Service(), rgb, full, 4, False, 23) > 0.95
    assert label_agreement(full, 1 - full) == 0.0
    with pytest.raises(ValueError):
        label_agreement(full, full[:10])


def timed(
    t: float,
    goodput: float,
    *,
    loss: float = 0.0,
    frames: int = 10,
    overuse: bool = False,
    incoming: float = math.nan,
    queue_ms: float = 0.0,
) -> Window:
    """The window [t, t + 1) of a stream at 10 frames/s, with the delay detector's view."""
    return Window(
        t, t + 1, frames, frames, goodput, loss, 0.0, 30.0, 100.0, 50.0, None, 0.1,
        overuse=overuse, incoming_kbps=incoming, queue_ms=queue_ms,
    )  # fmt: skip


def test_overuse_with_a_queue_steps_down_at_once_drains_and_climbs_back() -> None:
    ctl = Controller(PROFILE, settings(start_kbps=10_000))
    ctl.decide(0, timed(0, 4000))
    down = ctl.decide(1, timed(1, 3000, overuse=True, incoming=2000, queue_ms=400))
    # one window suffices; under (1 - 0.4) x 2000 = 1200 kbit/s, so the queue drains
    assert down.changed and down.entry.kbps == 600
    assert "delay over-use, queue 400 ms" in down.reason and "draining the queue" in down.reason
    held = ctl.decide(2, timed(2, 600, overuse=True, incoming=1500, queue_ms=200, loss=0.1))
    assert not held.changed and "draining" in held.reason  # that queue: neither good nor bad
    back = ctl.decide(3, timed(3, 600, incoming=900, queue_ms=5))
    assert back.changed and back.entry.kbps == 1500  # at once under 0.8 x 2000, no hold_s
    assert "queue drained" in back.reason


def test_overuse_without_a_queue_needs_two_windows() -> None:
    ctl = Controller(PROFILE, settings(start_kbps=10_000))
    ctl.decide(0, timed(0, 4000))
    first = ctl.decide(1, timed(1, 4000, overuse=True, incoming=4000, queue_ms=20))
    assert not first.changed and "bad window 1/2" in first.reason
    second = ctl.decide(2, timed(2, 4000, overuse=True, incoming=4000, queue_ms=20))
    assert second.changed and second.entry.kbps == 1500  # under 0.8 x 4000


def test_loss_in_a_window_of_few_frames_is_not_counted() -> None:
    ctl = Controller(PROFILE, settings(start_kbps=10_000))
    ctl.decide(0, timed(0, 4000))
    d = ctl.decide(1, timed(1, 4000, loss=0.5, frames=2))  # 1 of 2: a window closed early
    assert not d.changed and "bad window" not in d.reason
    assert ctl.decide(2, timed(2, 4000, loss=0.5)).changed  # 5 of 10 is a rate


def test_every_entry_gets_a_frame_budget_of_frame_burst_mean_frames() -> None:
    ctl = Controller(PROFILE, settings(start_kbps=600))
    assert ctl.decide(0, timed(0, 600)).frame_budget == 0  # no frame rate measured yet
    assert ctl.frame_budget(ctl.entry) == 3 * 600 * 1000 // 8 // 10  # 3 mean frames at 10 fps
    d = ctl.decide(1, timed(1, 100, loss=0.6))
    assert d.changed and d.frame_budget == 3 * 300 * 1000 // 8 // 10
    assert Controller(PROFILE, settings(frame_burst=0.0)).frame_budget(PROFILE[0]) == 0
    tiny = Controller(PROFILE, settings(start_kbps=600))
    tiny.decide(0, timed(0, 20))  # a small camera's stream: 20 kbit/s
    tiny.state.ramp_kbps = 30.0  # a probe's cap at 1.5 x that: 375 B a frame
    assert tiny.frame_budget(tiny.entry) == 4000  # the floor: x264 could not fit the frames


def test_a_probe_is_paced_by_its_frame_budget() -> None:
    ctl = Controller(PROFILE, settings(start_kbps=600))
    t, d = 0, None
    while d is None or not d.changed:  # good windows at 600 kbit/s until it probes up
        d = ctl.decide(t, timed(t, 600))
        t += 1
    assert d.entry.kbps == 1500 and "probe up" in d.reason
    assert d.frame_budget == 900 * 1000 // 8 // 10  # 1.5 x what arrived, not 1500 kbit/s
    ramp = ctl.decide(t, timed(t, 880))  # the cap binds: raised by 1.5
    assert not ramp.changed and "probe ramp: up to 1350 kbit/s" in ramp.reason
    assert ramp.frame_budget == 1350 * 1000 // 8 // 10
    done = ctl.decide(t + 1, timed(t + 1, 1300))  # 1.5 x 1350 is over the entry's rate
    assert "probe ramp done" in done.reason
    assert done.frame_budget == ctl.frame_budget(ctl.entry) > ramp.frame_budget


def test_a_failed_paced_probe_drops_its_cap() -> None:
    ctl = Controller(PROFILE, settings(start_kbps=600))
    t, d = 0, None
    while d is None or not d.changed:
        d = ctl.decide(t, timed(t, 600))
        t += 1
    down = ctl.decide(t, timed(t, 700, loss=0.5))
    assert down.changed and down.entry.kbps <= 600 and "probe failed" in down.reason
    assert down.frame_budget == ctl.frame_budget(down.entry)


def test_a_probe_cap_that_does_not_bind_ends_the_ramp() -> None:
    """Frames well under the cap for two windows: the entry's own frames fit; the budget
    never goes down while the cap holds (a lower budget costs an IDR)."""
    ctl = Controller(PROFILE, settings(start_kbps=600))
    t, d = 0, None
    while d is None or not d.changed:
        d = ctl.decide(t, timed(t, 600))
        t += 1
    first = ctl.decide(t, timed(t, 400, frames=11))  # under 0.7 x 900, the frame rate moved
    assert "probe ramp: up to 900" in first.reason and first.frame_budget == d.frame_budget
    done = ctl.decide(t + 1, timed(t + 1, 400))
    assert "probe ramp done" in done.reason
