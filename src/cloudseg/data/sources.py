"""Frame sources: :func:`open_source` opens a folder of frames, a video file, a rosbag2 or the
generated test clip (one module each: folder, video, bag, synthetic) as a :class:`FrameSource`
with looping, a frame limit, a rate and a one-line description; :class:`Pacer` paces them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

from cloudseg.data.bag import is_bag, iter_bag, probe_bag
from cloudseg.data.folder import iter_folder, list_frame_files
from cloudseg.data.frames import DEFAULT_FPS, DataError, SourceFrame, check_fps
from cloudseg.data.synthetic import check_synthetic, iter_synthetic
from cloudseg.data.video import VIDEO_SUFFIXES, iter_video, probe_video
from cloudseg.graph import BAG_IMAGE_TOPIC

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
    topic: str = BAG_IMAGE_TOPIC,
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
    rate = check_fps(fps if fps is not None else DEFAULT_FPS)
    kw = {"loop": loop, "limit": limit}
    if path is None:
        check_synthetic(width, height, frames)
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
    """Check an input before anything starts: it opens, its first frame decodes (a bag of
    broken images is refused with the first one's reason), and a bag ``topic`` is asked only
    of a bag (and exists in it, else DataError listing the bag's image topics)."""
    if topic and not (path and is_bag(path)):
        raise DataError(
            f"--topic {topic} picks a rosbag2's image topic; {path or 'the input'} is not a bag"
        )
    if path:
        frames = iter(open_source(path, topic=topic or BAG_IMAGE_TOPIC, limit=1))
        try:
            next(frames, None)
        finally:
            frames.close()  # the reader's own cleanup (a bag's reader) runs now


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
