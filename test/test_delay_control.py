"""Delay-based over-use detection and the controller's probes (pure, no ROS), on frames sent
through a simulated bottleneck (a FIFO at the link rate, IDRs every 17 frames)."""

from __future__ import annotations

import itertools
import random

from cloudseg.control.controller import Controller, ControllerSettings
from cloudseg.control.delay import DelayDetector, Usage
from cloudseg.control.profile import ProfileEntry
from cloudseg.control.window import Window

FPS = 17


def bottleneck(
    rates: list[float], link_kbps: float, jitter_ms: float = 0.0, offset_ns: int = 0
) -> list[tuple[int, str, float]]:
    """(seq, detector state, queue ms) per frame; frames that would wait over 0.4 s are
    dropped (tbf's queue), state 'lost'."""
    rnd, detector, free, out = random.Random(1), DelayDetector(), 0.0, []
    for i, kbps in enumerate(rates):
        sent = i / FPS
        p_frame = kbps * 1000 / 8 / FPS * 17 / 21  # an IDR is 5 P-frames
        size = int(p_frame * (5 if i % 17 == 0 else 1))
        wire = size * 8 / (link_kbps * 1000)
        arrival = max(sent, free) + wire
        if arrival - sent > 0.4 + wire:
            out.append((i, "lost", 0.0))
            continue
        free = arrival
        seen = arrival + 0.05 + rnd.uniform(-jitter_ms, jitter_ms) / 1e3
        state = detector.update(i, int(sent * 1e9) + 1, int(seen * 1e9) + offset_ns, size)
        out.append((i, state.value, (arrival - sent) * 1e3))
    return out


def test_a_growing_queue_is_over_use_within_a_few_frames_before_any_loss() -> None:
    for over in (1.1, 1.25, 1.5):
        out = bottleneck([700.0] * 200 + [1000 * over] * 60, 1000)
        assert all(s != "overuse" for _, s, _ in out[:200]), over
        first = next(i for i, s, _ in out if s == "overuse")
        lost = [i for i, s, _ in out if s == "lost"]
        assert first - 200 <= 14, (over, first)  # ~0.8 s at 17 fps
        if over < 1.5:  # at 1.5x tbf's 0.4 s queue is full after ~10 frames
            assert not lost or first < lost[0], (over, first, lost[:1])


def test_a_constant_clock_offset_changes_nothing() -> None:
    rates = [700.0] * 200 + [1250.0] * 60
    base = bottleneck(rates, 1000)
    shifted = bottleneck(rates, 1000, offset_ns=3_600 * 10**9 + 123_456_789)
    assert [s for _, s, _ in base] == [s for _, s, _ in shifted]


def test_jitter_and_idrs_without_a_trend_are_not_over_use() -> None:
    for rate, jitter in ((800.0, 0.0), (800.0, 10.0), (500.0, 20.0)):
        out = bottleneck([rate] * 400, 1000, jitter_ms=jitter)
        assert not any(s == "overuse" for _, s, _ in out), (rate, jitter)


def test_detector_ignores_frames_without_times_or_out_of_order() -> None:
    d = DelayDetector()
    assert d.update(1, 0, 5, 100) is Usage.NORMAL and d.deltas == 0
    d.update(2, 10**9, 2 * 10**9, 1000)
    d.update(3, 10**9 + 60_000_000, 2 * 10**9 + 60_000_000, 1000)
    d.update(2, 10**9, 2 * 10**9, 1000)  # late: ignored
    assert d.deltas == 1 and d.queue_ms == 0.0
    assert d.incoming_kbps() > 0


LADDER = [  # one scale per band of rates, as config/profile.json (x4 / x2 / x1)
    ProfileEntry(scale=4, crf=30, kbps=250, miou=0.26, cloud_ms=40),
    ProfileEntry(scale=4, crf=25, kbps=470, miou=0.39, cloud_ms=40),
    ProfileEntry(scale=4, crf=20, kbps=930, miou=0.40, cloud_ms=40),
    ProfileEntry(scale=2, crf=25, kbps=1360, miou=0.51, cloud_ms=60),
    ProfileEntry(scale=1, crf=30, kbps=2270, miou=0.56, cloud_ms=90),
    ProfileEntry(scale=1, crf=20, kbps=8900, miou=0.70, cloud_ms=90),
]


def window(goodput: float, overuse: bool = False, loss: float = 0.0) -> Window:
    return Window(
        0, 1, 10, 10, goodput, loss, 0.0, 30.0, 100.0, 50.0, None, 0.1, overuse, goodput, 0.0
    )


def controller(**kw) -> Controller:
    s = {"full_frame_every_s": 0.0, "rate_steps": True, "hold_s": 2.0, "up_windows": 2}
    return Controller(LADDER, ControllerSettings(**{**s, **kw}))


def test_probes_stay_within_the_gain_of_the_measured_goodput() -> None:
    ctl = controller(start_kbps=500)
    rates = [ctl.current_kbps()]
    for t in range(60):  # a link of 8 Mbit/s: everything sent arrives
        ctl.decide(t, window(ctl.current_kbps()))
        rates.append(ctl.current_kbps())
    ups = [(a, b) for a, b in itertools.pairwise(rates) if b > a]
    assert ups and all(b <= 1.25**2 * a + 1 for a, b in ups)  # never far above what arrives
    assert rates[-1] >= 4000  # yet it climbs: bitrate steps bridge the gaps between entries
    assert ctl.state.bitrate_kbps > 0 or ctl.entry.kbps == 8900


def test_over_use_backs_off_at_once_and_ends_a_probe() -> None:
    ctl = controller(start_kbps=1400)
    for t in range(4):
        ctl.decide(t, window(ctl.current_kbps()))
    probe = ctl.current_kbps()
    assert probe > 1400  # a probe is in force
    d = ctl.overuse(4.2, incoming_kbps=1500.0)
    assert d.changed and "delay over-use" in d.reason and "probe failed" in d.reason
    assert ctl.current_kbps() <= 0.85 * 1500 + 1
    assert d.max_frame_bytes == int(ctl.current_kbps() * 1000 / 8 * ctl.settings.frame_budget_s)
    again = ctl.overuse(4.5, incoming_kbps=1200.0)  # within overuse_hold_s: the queue drains
    assert not again.changed and "draining" in again.reason
    # a window that carries the over-use flag acts the same, when the node has not
    ctl2 = controller(start_kbps=1400)
    d2 = ctl2.decide(0, window(1300, overuse=True))
    assert d2.changed and ctl2.current_kbps() < 1300


def test_loss_is_still_the_last_line_of_defence() -> None:
    ctl = controller(start_kbps=2300)
    d = ctl.decide(0, window(900, loss=0.5))
    assert d.changed and ctl.current_kbps() <= 0.8 * 900 + 1
