"""Frame selection (KEY / USEFUL / STALE), the pixel measure and the labels held per frame."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cloudseg.data.sources import open_source
from cloudseg.media.stream import FrameCompressor, default_compressor_settings
from cloudseg.selection.held_labels import LabelHolder, flow_frame, warp_labels
from cloudseg.selection.pixel import PixelDeviation
from cloudseg.selection.selector import (
    DEFAULT_THRESHOLDS,
    FrameSelector,
    Level,
    SelectionError,
    SelectorSettings,
)

FPS = 17


def _stamp(i: int) -> int:
    return round(i * 1e9 / FPS)


def _picture(seed: int, shape=(128, 256, 3)) -> np.ndarray:
    """A smooth random picture (blurred noise), different for each seed."""
    import cv2

    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 255, (shape[0] // 8, shape[1] // 8, 3), dtype=np.uint8)
    return cv2.resize(noise, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)


def test_static_input_sends_only_the_forced_refreshes():
    settings = SelectorSettings(mode="pixel", max_key_interval=1.0, max_gap=0.5)
    selector = FrameSelector(settings)
    still = _picture(0)
    decisions = [selector.select(still, _stamp(i)) for i in range(3 * FPS)]  # three seconds
    sent = [(i, d) for i, d in enumerate(decisions) if d.send]
    assert {d.reason for _, d in sent} <= {"first", "max_key_interval", "max_gap"}
    keys = [i for i, d in sent if d.level == Level.KEY]
    assert keys == [0, FPS, 2 * FPS]  # the first frame, then one KEY a second
    gaps = np.diff([i for i, _ in sent]) / FPS
    assert gaps.max() <= 0.5 + 1 / FPS  # never more than max_gap without a frame
    assert len(sent) == 6  # KEY, USEFUL (0.5 s) per second: nothing else
    assert selector.counts["STALE"] == 3 * FPS - 6
    assert all(d.deviation == 0 for _, d in sent)


def test_a_cut_is_a_key_frame_at_once_and_an_idr():
    selector = FrameSelector(SelectorSettings(mode="pixel"))
    compressor = FrameCompressor(default_compressor_settings())
    a, b = _picture(1), _picture(2)
    frames = [a] * 5 + [b] + [b] * 3
    out = []
    for i, rgb in enumerate(frames):
        d = selector.select(rgb, _stamp(i))
        if d.send:
            sent = compressor.compress(rgb, keyframe=d.level == Level.KEY)
            out.append((i, d, sent.keyframe))
    cut = [(d, key) for i, d, key in out if i == 5]
    assert cut, out
    ((decision, idr),) = cut
    assert decision.level == Level.KEY and decision.reason == "cut" and idr
    assert decision.deviation >= DEFAULT_THRESHOLDS["pixel"][0]
    assert [i for i, _, _ in out] == [0, 5]  # the still frames between were STALE


def test_useful_frames_are_p_frames_between_key_frames():
    selector = FrameSelector(
        SelectorSettings(mode="pixel", key_threshold=0.5, useful_threshold=0.01)
    )
    compressor = FrameCompressor(default_compressor_settings())
    base = _picture(3).astype(np.int16)
    keyframes = []
    for i in range(10):  # a slow brightness drift: USEFUL, never KEY after the first
        rgb = np.clip(base + 4 * i, 0, 255).astype(np.uint8)
        d = selector.select(rgb, _stamp(i))
        if d.send:
            keyframes.append(
                (d.level, compressor.compress(rgb, keyframe=d.level == Level.KEY).keyframe)
            )
    assert keyframes[0] == (Level.KEY, True)
    assert len(keyframes) > 5 and all(k == (Level.USEFUL, False) for k in keyframes[1:])


def test_new_thresholds_from_a_knob_take_effect_on_the_next_frame():
    selector = FrameSelector(
        SelectorSettings(mode="pixel", key_threshold=0.9, useful_threshold=0.8)
    )
    base = _picture(4).astype(np.int16)
    frame = lambda i: np.clip(base + 6 * i, 0, 255).astype(np.uint8)  # noqa: E731
    assert selector.select(frame(0), _stamp(0)).level == Level.KEY
    assert not selector.select(frame(1), _stamp(1)).send  # 6/255 below 0.8
    new = selector.settings.with_knob(key_threshold=0.5, useful_threshold=0.01, max_fps=0)
    selector.apply(new)
    assert selector.settings.useful_threshold == 0.8  # not yet: from the next frame
    d = selector.select(frame(2), _stamp(2))
    assert d.level == Level.USEFUL and d.reason == "deviation"
    assert selector.settings.thresholds == (0.5, 0.01)


@pytest.mark.parametrize(
    ("key", "useful", "why"),
    [
        (0.1, 0.2, "must not be above"),
        (-0.1, 0.0, "0..1"),
        (math.nan, 0.01, "0..1"),
        (2.0, 0.1, "0..1"),
    ],
)
def test_bad_thresholds_in_a_knob_are_refused_and_the_old_ones_kept(key, useful, why):
    settings = SelectorSettings(mode="pixel", key_threshold=0.08, useful_threshold=0.03)
    with pytest.raises(SelectionError, match=why):
        settings.with_knob(key, useful, max_fps=0)
    assert settings.thresholds == (0.08, 0.03)
    with pytest.raises(SelectionError, match="mode"):
        settings.with_knob(0, 0, max_fps=0, mode="magic")
    assert settings.with_knob(0, 0, max_fps=5).thresholds == (0.08, 0.03)  # 0, 0: keep


def test_mode_off_sends_every_frame_with_a_key_frame_a_second():
    selector = FrameSelector(SelectorSettings(mode="off"))
    still = _picture(5)
    levels = [selector.select(still, _stamp(i)).level for i in range(2 * FPS)]
    assert Level.STALE not in levels
    assert [i for i, lv in enumerate(levels) if lv == Level.KEY] == [0, FPS]


def test_rate_cap_comes_before_selection():
    selector = FrameSelector(SelectorSettings(mode="off", max_fps=8.5))
    sent = [selector.select(_picture(6), _stamp(i)).send for i in range(FPS)]
    assert abs(sum(sent) - 9) <= 1


def test_pixel_deviation_grows_with_distance_on_real_frames(shared_data):
    frames = [f.rgb for f in open_source(shared_data / "sequences" / "aachen_seq0000", limit=30)]
    m = PixelDeviation()
    feats = [m.features(f) for f in frames]
    assert m.deviation(feats[0], feats[0]) == 0
    near = np.mean([m.deviation(feats[i], feats[i + 1]) for i in range(10)])
    far = np.mean([m.deviation(feats[i], feats[i + 15]) for i in range(10)])
    assert 0 < near < far < 1


def test_held_labels_report_the_right_age_and_source():
    holder = LabelHolder()
    assert holder.for_frame(_stamp(0)) is None  # nothing came back yet
    labels = np.zeros((4, 8), np.uint8)
    assert holder.add_labels(_stamp(2), labels, seq=1)
    held = holder.for_frame(_stamp(7))
    assert (held.source_seq, held.source_stamp_ns) == (1, _stamp(2))
    assert held.age_ms == pytest.approx(5 / FPS * 1e3, abs=0.01) and not held.warped
    assert not holder.add_labels(_stamp(1), labels + 1, seq=0)  # older than what is held
    assert holder.for_frame(_stamp(8)).source_seq == 1


def test_warping_moves_labels_with_the_picture():
    picture = _picture(7, (128, 256, 3))
    shifted = np.roll(picture, 6, axis=1)  # the camera panned: everything moved 6 px right
    labels = np.zeros((128, 256), np.uint8)
    labels[:, 100:140] = 1
    warped = warp_labels(labels, flow_frame(picture), flow_frame(shifted))
    columns = np.flatnonzero(warped[64] == 1)
    assert abs(columns.min() - 106) <= 2 and abs(columns.max() - 145) <= 2
    holder = LabelHolder(warp=True)
    holder.add_camera_frame(_stamp(0), picture)
    holder.add_labels(_stamp(0), labels, seq=0)
    held = holder.for_frame(_stamp(1), shifted)
    assert held.warped and np.array_equal(held.labels, warped)
