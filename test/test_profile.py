"""`cloudseg profile`: frame-rate cap, held labels, measuring on synthetic clips, Pareto file."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from cloudseg.cli import main as cli_main
from cloudseg.control.profile import PROFILE_FILE, ProfileEntry, load_profile, pareto_front
from cloudseg.control.profile_run import (
    Clip,
    Setting,
    format_table,
    gt_labels,
    held,
    measure,
    sent_frames,
    settings_grid,
    write_plot,
)

REPO = Path(__file__).resolve().parents[1]


def test_sent_frames_with_and_without_a_cap():
    assert sent_frames(6, 17.0, 0.0) == list(range(6))
    assert sent_frames(7, 17.0, 8.5) == [0, 2, 4, 6]
    assert sent_frames(5, 17.0, 30.0) == list(range(5))


def test_held_labels_are_the_last_sent_frame():
    assert held(6, [0, 2, 4]) == [0, 0, 2, 2, 4, 4]


def test_grid_runs_sr_only_where_asked():
    grid = settings_grid([1, 2, 4], [23, 28], [0.0, 8.5], [1, 4], [23])
    assert sum(not s.sr for s in grid) == 12
    assert [s for s in grid if s.sr] == [Setting(4, 23, 0.0, True), Setting(4, 23, 8.5, True)]


def _clip(n: int = 8, w: int = 128, h: int = 64) -> Clip:
    rng = np.random.default_rng(0)
    scene = cv2.GaussianBlur(rng.integers(0, 256, (h, w + n, 3), np.uint8), (5, 5), 0)
    frames = [np.ascontiguousarray(scene[:, i : i + w]) for i in range(n)]
    labels = [(f[::2, ::2, 0] > 128).astype(np.uint8) for f in frames]
    return Clip("synthetic", frames, 17.0, labels, gt={1: labels[1]})


def _fake_segment(lr: np.ndarray, scale: int, sr: bool) -> np.ndarray:
    """Threshold the red channel at half the camera size (like the real labels)."""
    rgb = cv2.resize(lr, (64, 32), interpolation=cv2.INTER_AREA)
    return (rgb[..., 0] > 128).astype(np.uint8)


def test_measure_on_a_synthetic_clip():
    clip = _clip()
    full, gt = measure([clip], Setting(2, 23, 0.0, False), _fake_segment, score_every=2)
    capped, _ = measure([clip], Setting(2, 23, 8.5, False), _fake_segment, score_every=2)
    worse, _ = measure([clip], Setting(2, 45, 0.0, False), _fake_segment, score_every=2)
    assert full.reference == "hr" and full.sr_bypass and full.max_fps == 0
    assert 0.5 < full.miou <= 1 and 0 <= gt <= 1 and full.cloud_ms > 0
    assert capped.kbps < full.kbps and capped.max_fps == 8.5
    assert worse.kbps < full.kbps
    table = format_table([(full, gt), (capped, math.nan)], pareto_front([full, capped]))
    assert "| 2 | 23 | 8.5 | bilinear |" in table


def test_pareto_front_keeps_only_undominated_entries():
    a = ProfileEntry(scale=4, kbps=300, miou=0.5)
    b = ProfileEntry(scale=4, crf=20, kbps=600, miou=0.6)
    c = ProfileEntry(scale=2, kbps=900, miou=0.55)  # more bits, less accurate than b
    d = ProfileEntry(scale=1, kbps=5000, miou=0.8)
    assert pareto_front([d, c, b, a]) == [a, b, d]


def test_plot_is_written(tmp_path):
    entries = [
        ProfileEntry(scale=4, kbps=300, miou=0.5),
        ProfileEntry(scale=4, max_fps=8.5, kbps=200, miou=0.45, sr_bypass=False),
    ]
    out = write_plot(entries, pareto_front(entries), tmp_path / "p.png", "test")
    assert out.stat().st_size > 1000


def test_gt_labels_for_a_video_named_after_its_first_frame(tmp_path):
    city = tmp_path / "gtFine" / "val" / "frankfurt"
    city.mkdir(parents=True)
    gt = np.full((8, 16), 7, np.uint8)
    cv2.imwrite(str(city / "frankfurt_000000_000294_gtFine_labelTrainIds.png"), gt)
    video = tmp_path / "frankfurt_000000_000275.mp4"
    found = gt_labels(video, 30, (8, 4), tmp_path)
    assert list(found) == [19] and found[19].shape == (4, 8) and (found[19] == 7).all()


def test_profile_help_exits_0():
    with pytest.raises(SystemExit) as exc:
        cli_main(["profile", "--help"])
    assert exc.value.code == 0


def test_committed_profile_loads_and_is_a_pareto_front():
    entries = load_profile(REPO / "config" / PROFILE_FILE)
    assert entries == pareto_front(entries)
    assert all(e.reference in ("gt", "hr") and e.cloud_ms > 0 for e in entries)
