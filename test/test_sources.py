"""Frame sources: folder of frames, video, synthetic clip, open_source dispatch, Pacer."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

from cloudseg.data.folder import iter_folder
from cloudseg.data.frames import DataError
from cloudseg.data.sources import Pacer, open_source
from cloudseg.data.synthetic import iter_synthetic, synthetic_frame
from cloudseg.data.video import iter_video

PERIOD_17 = 1e9 / 17


def _write_png(path: Path, value: int, size: tuple[int, int] = (24, 16)) -> None:
    w, h = size
    img = np.full((h, w, 3), value, np.uint8)
    img[0, 0] = (value, 0, 255 - value)  # channel order check
    cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))


# --------------------------------------------------------------------------- folder


def test_folder_sequence_real_frames(shared_data: Path) -> None:
    folder = shared_data / "sequences" / "aachen_seq0000"
    full = open_source(folder)
    assert len(full) == 30
    assert full.fps == 17.0
    assert "30 frames" in full.describe() and str(folder) in full.describe()

    src = open_source(folder, limit=3)
    assert len(src) == 3
    frames = list(src)
    assert [f.index for f in frames] == [0, 1, 2]
    assert [f.stamp_ns for f in frames] == [round(i * PERIOD_17) for i in range(3)]
    assert all(f.rgb.shape == (1024, 2048, 3) and f.rgb.dtype == np.uint8 for f in frames)
    # The first frame is file ..._000000 decoded to RGB (OpenCV reads BGR).
    bgr = cv2.imread(str(folder / "aachen_000000_000000_leftImg8bit.jpg"))
    np.testing.assert_array_equal(frames[0].rgb, bgr[..., ::-1])
    assert not np.array_equal(frames[0].rgb, frames[1].rgb)


def test_folder_sorted_by_frame_number(tmp_path: Path) -> None:
    # Unpadded numbers: lexical order would put 10 before 9.
    for frame, value in ((10, 30), (9, 20), (2, 10)):
        _write_png(tmp_path / f"city_0_{frame}_leftImg8bit.png", value)
    (tmp_path / "notes.txt").write_text("not an image")
    frames = list(iter_folder(tmp_path))
    assert [int(f.rgb[5, 5, 0]) for f in frames] == [10, 20, 30]
    assert tuple(frames[0].rgb[0, 0]) == (10, 0, 245)


def test_folder_skips_unreadable_with_warning(tmp_path: Path, caplog) -> None:
    _write_png(tmp_path / "c_0_0_leftImg8bit.png", 50)
    (tmp_path / "c_0_1_leftImg8bit.png").write_bytes(b"\x89PNG broken")
    _write_png(tmp_path / "c_0_2_leftImg8bit.png", 70)
    with caplog.at_level(logging.WARNING):
        frames = list(open_source(tmp_path))
    assert "c_0_1_leftImg8bit.png" in caplog.text
    assert [f.index for f in frames] == [0, 1]
    # The broken file keeps its time slot: stamps follow file positions.
    assert [f.stamp_ns for f in frames] == [0, round(2 * PERIOD_17)]


def test_folder_none_readable(tmp_path: Path) -> None:
    (tmp_path / "c_0_0_leftImg8bit.jpg").write_bytes(b"garbage")
    with pytest.raises(DataError, match="none of its 1 image files is readable"):
        list(open_source(tmp_path))


def test_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        open_source(tmp_path / "nope")
    with pytest.raises(DataError, match="does not exist"):
        list(iter_folder(tmp_path / "nope"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match=f"{empty}.*no image files"):
        open_source(empty)
    other = tmp_path / "file.txt"
    other.write_text("x")
    with pytest.raises(DataError, match="not a frame folder"):
        open_source(other)


# --------------------------------------------------------------------------- video


def test_video_dashcam(shared_data: Path) -> None:
    clip = shared_data / "video" / "solidWhiteRight.mp4"  # has an AAC audio track too
    src = open_source(clip, limit=4)
    assert src.fps == 25.0
    assert len(src) == 4
    assert "960x540" in src.describe() and "221 frames" in src.describe()
    frames = list(src)
    assert [f.stamp_ns for f in frames] == [0, 40_000_000, 80_000_000, 120_000_000]
    assert all(f.rgb.shape == (540, 960, 3) and f.rgb.dtype == np.uint8 for f in frames)
    assert frames[0].rgb.std() > 10  # real picture, not a blank frame
    # iter_video on its own stops with the file; spot-check it agrees with the source.
    first = next(iter_video(clip))
    np.testing.assert_array_equal(first.rgb, frames[0].rgb)


def test_video_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(np.random.default_rng(0).bytes(4000))
    with pytest.raises(DataError, match=r"bad\.mp4 cannot be opened"):
        open_source(bad)
    with pytest.raises(DataError, match="does not exist"):
        list(iter_video(tmp_path / "missing.mp4"))


# --------------------------------------------------------------------------- synthetic


def test_synthetic_clip_deterministic() -> None:
    src = open_source(None)
    assert len(src) == 34 and src.fps == 17.0
    assert "synthetic" in src.describe() and "1024x512" in src.describe()
    a = list(iter_synthetic(64, 32, frames=3))
    b = list(iter_synthetic(64, 32, frames=3))
    assert all(np.array_equal(x.rgb, y.rgb) for x, y in zip(a, b, strict=True))
    assert a[0].rgb.shape == (32, 64, 3)
    assert not np.array_equal(a[0].rgb, a[2].rgb)  # things move
    big = synthetic_frame(0)
    assert big.shape == (512, 1024, 3) and big.std() > 20
    with pytest.raises(ValueError):
        open_source(None, width=8)


def test_loop_and_limit_keep_stamps_steady() -> None:
    src = open_source(None, width=32, height=16, frames=3, loop=True, limit=8)
    assert len(src) == 8
    frames = list(src)
    assert [f.index for f in frames] == list(range(8))
    stamps = np.array([f.stamp_ns for f in frames])
    # One steady 17 fps stream across the loop boundary (within 1 ns of rounding).
    np.testing.assert_allclose(stamps, np.arange(8) * PERIOD_17, atol=1.0)
    np.testing.assert_array_equal(frames[3].rgb, frames[0].rgb)  # second pass
    endless = open_source(None, width=32, height=16, frames=3, loop=True)
    with pytest.raises(TypeError):
        len(endless)
    assert endless.length is None


# --------------------------------------------------------------------------- pacer


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_pacer_rate() -> None:
    clock = FakeClock()
    pacer = Pacer(10.0, clock=clock, sleep=clock.sleep)
    for _ in range(4):
        pacer.wait()
        clock.now += 0.02  # work per frame
    assert clock.slept == pytest.approx([0.08, 0.08, 0.08])
    clock.now += 5.0  # far behind: no burst, restart the schedule
    assert pacer.wait() == 0.0
    pacer.wait()
    assert clock.slept[-1] == pytest.approx(0.1)


def test_pacer_stamps_and_speed() -> None:
    clock = FakeClock()
    pacer = Pacer(clock=clock, sleep=clock.sleep, speed=2.0)
    for stamp in (0, 100_000_000, 300_000_000):
        pacer.wait(stamp)
    assert clock.slept == pytest.approx([0.05, 0.1])
    pacer.wait(0)  # stamps jumped back (loop): restart, no sleep
    assert len(clock.slept) == 2
    with pytest.raises(ValueError):
        Pacer().wait()
