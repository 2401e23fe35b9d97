"""Delay-based over-use detection (pure, no ROS), on frames sent through a simulated
bottleneck (a FIFO at the link rate, IDRs every 17 frames). The detector drives the bench's
`gcc` policy; the controller node does not act on it yet (issue 19, in progress)."""

from __future__ import annotations

import random

from cloudseg.control.delay import DelayDetector, Usage

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
