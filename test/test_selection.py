"""The frame-rate cap of the Knob."""

from __future__ import annotations

import itertools

import pytest

from cloudseg.selection.rate import RateCap

FRAME_NS = round(1e9 / 17)


def _kept(cap: RateCap, frames: int, jitter_ns: int = 0) -> list[int]:
    return [i for i in range(frames) if cap.admit(i * FRAME_NS + (jitter_ns if i % 2 else 0))]


def test_no_cap_keeps_everything():
    assert _kept(RateCap(0), 34) == list(range(34))


def test_cap_at_camera_rate_keeps_every_frame_despite_jitter():
    assert len(_kept(RateCap(17), 34, jitter_ns=-2_000_000)) == 34


@pytest.mark.parametrize(("cap", "expected"), [(8.5, 17), (5, 10), (1, 2)])
def test_cap_keeps_about_max_fps(cap, expected):
    kept = _kept(RateCap(cap), 34)  # two seconds of a 17 fps camera
    assert abs(len(kept) - expected) <= 1
    gaps = [b - a for a, b in itertools.pairwise(kept)]
    assert min(gaps) * FRAME_NS >= 1e9 / cap * (1 - RateCap.TOLERANCE)


def test_stamps_going_back_restart_the_cap_and_negative_cap_is_refused():
    cap = RateCap(1)
    assert cap.admit(10 * FRAME_NS)
    assert cap.admit(0)  # a loop of the input: do not hold frames for a long time
    with pytest.raises(ValueError):
        RateCap(-1)
