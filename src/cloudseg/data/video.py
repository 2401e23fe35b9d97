"""A video file (any container and codec FFmpeg reads, through PyAV), stamped by its pts."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av

from cloudseg.data.frames import DEFAULT_FPS, DataError, SourceFrame, one_line

VIDEO_SUFFIXES = frozenset(
    {".mp4", ".m4v", ".mkv", ".mov", ".avi", ".webm", ".ts", ".mts", ".h264", ".264", ".hevc"}
)


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
        raise DataError(f"video file {path} cannot be opened: {one_line(exc)}") from exc
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
                f"video file {path}: decoding failed after {index} frames: {one_line(exc)}"
            ) from exc
        if index == 0:
            raise DataError(f"video file {path} holds no decodable video frame")
    finally:
        container.close()
