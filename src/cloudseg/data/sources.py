"""Frame sources: a folder of frames, a video file, a rosbag2, or a generated test clip.

Every source yields :class:`SourceFrame` (capture stamp in ns, an HxWx3 uint8 RGB array and a
running index). :func:`open_source` picks the right reader for a path and wraps it in a
:class:`FrameSource` with looping, a frame limit, a rate and a one-line description.
"""

from __future__ import annotations

import itertools
import logging
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

log = logging.getLogger(__name__)

DEFAULT_FPS = 17.0
"""Cityscapes' camera rate: stamps of folders and synthetic clips are made at this rate."""

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".tif", ".tiff", ".webp"})
VIDEO_SUFFIXES = frozenset(
    {".mp4", ".m4v", ".mkv", ".mov", ".avi", ".webm", ".ts", ".mts", ".h264", ".264", ".hevc"}
)
BAG_SUFFIXES = frozenset({".mcap", ".db3"})

# <city>_<seq>_<frame>_leftImg8bit.<ext>, as in Cityscapes' leftImg8bit_sequence.
_CITYSCAPES_FRAME = re.compile(
    r"^(?P<city>[A-Za-z]+)_(?P<seq>\d+)_(?P<frame>\d+)_leftImg8bit\.(?:png|jpe?g)$",
    re.IGNORECASE,
)


class DataError(Exception):
    """A missing or malformed input (bag, folder, video, dataset); the message says what and why."""


@dataclass(frozen=True)
class SourceFrame:
    """One frame of a source: capture stamp (ns), RGB pixels (HxWx3 uint8), running index."""

    stamp_ns: int
    rgb: np.ndarray
    index: int


def _stamp_ns(index: int, fps: float) -> int:
    return round(index * 1e9 / fps)


def _check_fps(fps: float) -> float:
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps!r}")
    return float(fps)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


# --------------------------------------------------------------------------- folder of frames


def _natural_key(name: str) -> list[object]:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def list_frame_files(path: str | Path) -> list[Path]:
    """The image files of a frame folder, in playback order.

    Files named like Cityscapes' ``<city>_<seq>_<frame>_leftImg8bit.png|jpg`` are ordered by
    (city, sequence, frame number); a folder without such names falls back to all its image
    files in natural name order. A folder without images of its own, such as a Cityscapes
    split (``leftImg8bit/val``), plays the Cityscapes-named frames of its subfolders (the
    cities). Raises DataError for a missing or empty folder.
    """
    folder = Path(path)
    if not folder.exists():
        raise DataError(f"frame folder {folder} does not exist")
    if not folder.is_dir():
        raise DataError(f"{folder} is not a folder of frames")
    images = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    if not images:  # a split folder: <split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png
        images = [
            p
            for sub in sorted(folder.iterdir())
            if sub.is_dir()
            for p in sub.iterdir()
            if p.is_file() and _CITYSCAPES_FRAME.match(p.name)
        ]
    named = []
    for p in images:
        if m := _CITYSCAPES_FRAME.match(p.name):
            named.append(((m["city"], int(m["seq"]), int(m["frame"])), p))
    if named:
        if len(named) < len(images):
            log.info(
                "%s: using %d Cityscapes-named frames, ignoring %d other images",
                folder,
                len(named),
                len(images) - len(named),
            )
        return [p for _, p in sorted(named)]
    if not images:
        raise DataError(
            f"frame folder {folder} holds no image files ({', '.join(sorted(IMAGE_SUFFIXES))})"
        )
    return sorted(images, key=lambda p: _natural_key(p.name))


def are_stills(files: list[Path]) -> bool:
    """True for Cityscapes-named frames of which no two in a row are consecutive frames of one
    sequence: the unrelated stills of a split (``leftImg8bit/val``), not a video sequence."""
    keys = []
    for file in files:
        m = _CITYSCAPES_FRAME.match(file.name)
        if m is None:
            return False
        keys.append((m["city"], int(m["seq"]), int(m["frame"])))
    return len(keys) > 1 and not any(
        a[:2] == b[:2] and b[2] == a[2] + 1 for a, b in itertools.pairwise(keys)
    )


def read_rgb(path: str | Path) -> np.ndarray | None:
    """Read an image file as HxWx3 uint8 RGB; None when OpenCV cannot decode it."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        return None
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def iter_folder(path: str | Path, fps: float = DEFAULT_FPS) -> Iterator[SourceFrame]:
    """Frames of a folder, stamped at ``fps`` from 0 by their position in the folder.

    Unreadable files are skipped with a warning (their time slot stays empty); a folder in
    which no file is readable raises DataError.
    """
    fps = _check_fps(fps)
    files = list_frame_files(path)
    produced = 0
    for position, file in enumerate(files):
        rgb = read_rgb(file)
        if rgb is None:
            log.warning("skipping unreadable image %s", file)
            continue
        yield SourceFrame(_stamp_ns(position, fps), rgb, produced)
        produced += 1
    if produced == 0:
        raise DataError(f"frame folder {path}: none of its {len(files)} image files is readable")


# --------------------------------------------------------------------------- video file


@dataclass(frozen=True)
class VideoInfo:
    """What a video file's first video stream says about itself."""

    path: Path
    codec: str
    width: int
    height: int
    fps: float
    frames: int | None


def _open_video(path: Path) -> av.container.InputContainer:
    if not path.exists():
        raise DataError(f"video file {path} does not exist")
    if not path.is_file():
        raise DataError(f"video path {path} is not a file")
    try:
        container = av.open(str(path), mode="r")
    except (av.FFmpegError, OSError) as exc:
        raise DataError(f"video file {path} cannot be opened: {_one_line(exc)}") from exc
    if not container.streams.video:
        container.close()
        raise DataError(f"video file {path} has no video stream")
    return container


def probe_video(path: str | Path) -> VideoInfo:
    """Codec, size, rate and frame count of a video file (DataError when it is not one)."""
    path = Path(path)
    with _open_video(path) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        return VideoInfo(
            path=path,
            codec=stream.codec_context.name,
            width=stream.codec_context.width,
            height=stream.codec_context.height,
            fps=float(rate) if rate else DEFAULT_FPS,
            frames=stream.frames or None,
        )


def iter_video(path: str | Path) -> Iterator[SourceFrame]:
    """Decode the first video stream of a file (audio and other streams are ignored).

    Stamps come from each frame's pts and the stream's time base (ns); a frame without a pts
    gets the previous stamp plus one frame period.
    """
    path = Path(path)
    container = _open_video(path)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = stream.average_rate or stream.guessed_rate or Fraction(int(DEFAULT_FPS))
        period_ns = round(1e9 / float(rate))
        time_base = stream.time_base or Fraction(1, 1)
        stamp_ns = -period_ns
        index = 0
        try:
            for frame in container.decode(stream):
                if frame.pts is not None:
                    stamp_ns = round(frame.pts * time_base * 1_000_000_000)
                else:
                    stamp_ns += period_ns
                yield SourceFrame(stamp_ns, frame.to_ndarray(format="rgb24"), index)
                index += 1
        except av.FFmpegError as exc:
            raise DataError(
                f"video file {path}: decoding failed after {index} frames: {_one_line(exc)}"
            ) from exc
        if index == 0:
            raise DataError(f"video file {path} holds no decodable video frame")
    finally:
        container.close()


# --------------------------------------------------------------------------- rosbag2


def iter_bag(path: str | Path, topic: str = "/camera/image_raw") -> Iterator[SourceFrame]:
    """Frames of one image topic of a rosbag2 (folder, .mcap or .db3), stamped by their header.

    sensor_msgs/Image (rgb8, bgr8, mono8, rgba8, bgra8) and sensor_msgs/CompressedImage are
    converted to RGB. A missing topic raises DataError listing the topics the bag has.
    """
    from cloudseg.data.bag import read_bag_frames  # bag.py imports this module

    for index, (stamp_ns, rgb) in enumerate(read_bag_frames(path, topic)):
        yield SourceFrame(stamp_ns, rgb, index)


def is_bag(path: str | Path) -> bool:
    """True for a rosbag2 folder (holds metadata.yaml) or a .mcap/.db3 storage file."""
    path = Path(path)
    if path.is_dir():
        return (path / "metadata.yaml").is_file()
    return path.suffix.lower() in BAG_SUFFIXES


# --------------------------------------------------------------------------- synthetic clip


def synthetic_frame(index: int, width: int = 1024, height: int = 512) -> np.ndarray:
    """Frame ``index`` of the generated test clip: gradient, moving shapes and a caption."""
    ys = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]
    xs = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :]
    img = np.empty((height, width, 3), np.uint8)
    img[..., 0] = (60 + 120 * ys + 40 * xs).astype(np.uint8)  # sky-to-road gradient
    img[..., 1] = (110 + 60 * xs * (1 - ys) + 40 * ys).astype(np.uint8)
    img[..., 2] = (200 - 110 * ys).astype(np.uint8)
    horizon = height // 2
    img[horizon:] = (img[horizon:].astype(np.uint16) * 2 // 3).astype(np.uint8)  # darker road

    s = min(width, height) / 512.0
    t = index / DEFAULT_FPS
    # A car-like box driving right, a ball bouncing, a pole-like bar sliding left.
    x0 = int((0.05 + 0.12 * t) % 1.0 * width)
    cv2.rectangle(
        img,
        (x0, int(horizon + 40 * s)),
        (x0 + int(160 * s), int(horizon + 110 * s)),
        (0, 0, 142),
        thickness=-1,
    )
    cx = int(width * (0.7 + 0.2 * np.sin(1.3 * t)))
    cy = int(horizon - abs(np.sin(2.1 * t)) * 150 * s)
    cv2.circle(img, (cx, cy), int(40 * s), (220, 20, 60), thickness=-1, lineType=cv2.LINE_AA)
    xb = int((0.9 - 0.08 * t) % 1.0 * width)
    cv2.rectangle(
        img,
        (xb, int(horizon - 180 * s)),
        (xb + int(14 * s), horizon + int(30 * s)),
        (153, 153, 153),
        thickness=-1,
    )
    tri = np.array(
        [
            [int(width * 0.35 + 60 * s * np.cos(t)), int(horizon + 150 * s)],
            [int(width * 0.45), int(horizon + 60 * s)],
            [int(width * 0.55 - 60 * s * np.cos(t)), int(horizon + 150 * s)],
        ],
        np.int32,
    )
    cv2.fillPoly(img, [tri], (244, 35, 232), lineType=cv2.LINE_AA)
    font = cv2.FONT_HERSHEY_SIMPLEX
    cv2.putText(
        img,
        "cloudseg test clip",
        (int(20 * s), int(50 * s)),
        font,
        1.4 * s,
        (255, 255, 255),
        max(1, int(3 * s)),
        cv2.LINE_AA,
    )
    cv2.putText(
        img,
        f"frame {index:04d}",
        (int(20 * s), int(95 * s)),
        font,
        1.0 * s,
        (255, 255, 0),
        max(1, int(2 * s)),
        cv2.LINE_AA,
    )
    return img


def _check_synthetic(width: int, height: int, frames: int) -> None:
    if width < 16 or height < 16 or frames < 1:
        raise ValueError(
            f"synthetic clip needs width, height >= 16 and frames >= 1, "
            f"got {width}x{height}, {frames} frames"
        )


def iter_synthetic(
    width: int = 1024, height: int = 512, frames: int = 34, fps: float = DEFAULT_FPS
) -> Iterator[SourceFrame]:
    """A deterministic generated clip (for demos and tests when no input is given)."""
    fps = _check_fps(fps)
    _check_synthetic(width, height, frames)
    for index in range(frames):
        yield SourceFrame(_stamp_ns(index, fps), synthetic_frame(index, width, height), index)


# --------------------------------------------------------------------------- FrameSource


class FrameSource:
    """An iterable of SourceFrame with a rate, an optional length, looping and a frame limit.

    Looping continues stamps one frame period after the last frame and keeps counting indices,
    so a looped source looks like one long, steady stream.
    """

    def __init__(
        self,
        kind: str,
        path: Path | None,
        frames: Callable[[], Iterator[SourceFrame]],
        *,
        fps: float,
        length: int | None,
        detail: str = "",
        loop: bool = False,
        limit: int | None = None,
    ) -> None:
        if limit is not None and limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        self.kind = kind
        self.path = path
        self.fps = float(fps)
        self.loop = loop
        self.limit = limit
        self._frames = frames
        self._base_length = length
        self._detail = detail

    @property
    def length(self) -> int | None:
        """Number of frames one iteration yields, or None when unknown or endless."""
        n = self._base_length
        if self.loop:
            return self.limit if n != 0 else 0
        if n is None:
            return None
        return n if self.limit is None else min(n, self.limit)

    def __len__(self) -> int:
        n = self.length
        if n is None:
            raise TypeError(f"length of {self.kind} source is not known")
        return n

    def describe(self) -> str:
        """One line: what the source is, where, how many frames, at what rate."""
        what = {
            "folder": "frame folder",
            "video": "video",
            "bag": "rosbag2",
            "synthetic": "synthetic test clip",
        }.get(self.kind, self.kind)
        parts = [what if self.path is None else f"{what} {self.path}"]
        if self._detail:
            parts.append(self._detail)
        if self._base_length is not None:
            parts.append(f"{self._base_length} frames")
        parts.append(f"{self.fps:g} fps")
        if self.loop:
            parts.append("looping")
        if self.limit is not None:
            parts.append(f"limit {self.limit}")
        return ", ".join(parts)

    def __repr__(self) -> str:
        return f"FrameSource({self.describe()})"

    def __iter__(self) -> Iterator[SourceFrame]:
        period_ns = round(1e9 / self.fps)
        index = 0
        last_stamp: int | None = None
        while True:
            offset: int | None = None
            produced = 0
            for frame in self._frames():
                if self.limit is not None and index >= self.limit:
                    return
                if offset is None:  # first frame of a pass: continue after the previous pass
                    offset = 0 if last_stamp is None else last_stamp + period_ns - frame.stamp_ns
                last_stamp = frame.stamp_ns + offset
                yield SourceFrame(last_stamp, frame.rgb, index)
                index += 1
                produced += 1
            if not self.loop or produced == 0:
                return


def open_source(
    path: str | Path | None,
    *,
    loop: bool = False,
    limit: int | None = None,
    fps: float | None = None,
    topic: str = "/camera/image_raw",
    width: int = 1024,
    height: int = 512,
    frames: int = 34,
) -> FrameSource:
    """Open whatever ``path`` is as a FrameSource (checks it now; DataError when unusable).

    - None: the synthetic test clip (``width`` x ``height``, ``frames`` frames, ``fps``).
    - a rosbag2 folder (has metadata.yaml) or a .mcap/.db3 file: image ``topic``.
    - a video file (by extension): its first video stream.
    - a folder of frames: stamped at ``fps`` (default 17).
    ``fps`` only sets the rate of sources without their own timing (folders, synthetic).
    """
    rate = _check_fps(fps if fps is not None else DEFAULT_FPS)
    kw = {"loop": loop, "limit": limit}
    if path is None:
        _check_synthetic(width, height, frames)
        return FrameSource(
            "synthetic",
            None,
            lambda: iter_synthetic(width, height, frames, rate),
            fps=rate,
            length=frames,
            detail=f"{width}x{height}",
            **kw,
        )

    p = Path(path)
    if not p.exists():
        raise DataError(f"input {p} does not exist")
    if is_bag(p):
        from cloudseg.data.bag import probe_bag

        info = probe_bag(p, topic)
        return FrameSource(
            "bag",
            p,
            lambda: iter_bag(p, topic),
            fps=info.fps or DEFAULT_FPS,
            length=info.count,
            detail=f"{info.storage}, {topic} ({info.msgtype})",
            **kw,
        )
    if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES:
        v = probe_video(p)
        return FrameSource(
            "video",
            p,
            lambda: iter_video(p),
            fps=v.fps,
            length=v.frames,
            detail=f"{v.codec} {v.width}x{v.height}",
            **kw,
        )
    if p.is_dir():
        files = list_frame_files(p)
        return FrameSource(
            "folder", p, lambda: iter_folder(p, rate), fps=rate, length=len(files), **kw
        )
    raise DataError(
        f"input {p} is not a frame folder, a rosbag2 (folder with metadata.yaml, .mcap, .db3) "
        f"or a video file ({', '.join(sorted(VIDEO_SUFFIXES))})"
    )


def check_input(path: str | Path | None, topic: str | None = None) -> None:
    """Check an input before anything starts: it opens, and a bag ``topic`` is asked only of
    a bag (and exists in it, else DataError listing the bag's image topics)."""
    if topic and not (path and is_bag(path)):
        raise DataError(
            f"--topic {topic} picks a rosbag2's image topic; {path or 'the input'} is not a bag"
        )
    if path:
        open_source(path, topic=topic or "/camera/image_raw")


# --------------------------------------------------------------------------- pacing


class Pacer:
    """Sleeps so that successive frames go out at ``rate_hz``, or at the pace of their stamps.

    Call :meth:`wait` once per frame (with the frame's stamp when ``rate_hz`` is None). When the
    caller falls behind by more than ``max_lag_s`` (or stamps jump back, as on a loop), the
    schedule restarts from now instead of bursting to catch up.
    """

    def __init__(
        self,
        rate_hz: float | None = None,
        *,
        speed: float = 1.0,
        max_lag_s: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate_hz is not None and not rate_hz > 0:
            raise ValueError(f"rate_hz must be positive, got {rate_hz!r}")
        if not speed > 0:
            raise ValueError(f"speed must be positive, got {speed!r}")
        self.rate_hz = rate_hz
        self.speed = speed
        self.max_lag_s = max_lag_s
        self._clock = clock
        self._sleep = sleep
        self._t0: float | None = None
        self._stamp0 = 0
        self._last_stamp = 0
        self._count = 0

    def _anchor(self, now: float, stamp_ns: int) -> None:
        self._t0, self._stamp0, self._last_stamp, self._count = now, stamp_ns, stamp_ns, 0

    def wait(self, stamp_ns: int | None = None) -> float:
        """Sleep until this frame is due; returns the seconds slept."""
        if self.rate_hz is None and stamp_ns is None:
            raise ValueError("Pacer without rate_hz needs the frame stamp")
        now = self._clock()
        stamp = 0 if stamp_ns is None else stamp_ns
        if self._t0 is None or (self.rate_hz is None and stamp < self._last_stamp):
            self._anchor(now, stamp)
            return 0.0
        self._count += 1
        self._last_stamp = stamp
        if self.rate_hz is not None:
            due = self._t0 + self._count / self.rate_hz
        else:
            due = self._t0 + (stamp - self._stamp0) / 1e9 / self.speed
        delay = due - now
        if delay > 0:
            self._sleep(delay)
            return delay
        if -delay > self.max_lag_s:
            self._anchor(now, stamp)
        return 0.0
