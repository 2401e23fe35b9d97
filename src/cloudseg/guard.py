"""Input from the wire is untrusted: what the nodes check before using it, and how they count
what they drop. Plain Python (no ROS), shared by every node, the benchmarks and the tests.

* :class:`BadInput`: a message that cannot be used, with a short ``kind`` ("size", "scale",
  "codec", "stamp", "knob", ...) that groups drops of the same cause.
* :class:`BadInputCounter`: counts drops per (callback, kind) and says when to log one:
  the first of a kind, then at most every ``every_s`` seconds or every ``every_n`` drops, each
  line with the running count, so a flood of bad messages cannot flood the log.
* :class:`FrameLimits`: the claimed size and scale of a Frame against configured limits,
  before anything is allocated from them.
* :func:`check_stamp`: a ``builtin_interfaces/Time`` that a clock can represent.
* :func:`check_camera_size`: the camera size a split cloud's RestoredInfo claims for a
  restored image (the segmentation node scales its labels to it).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from cloudseg.graph import CODEC_CHOICES, SCALES

NS = 1_000_000_000


class BadInput(ValueError):
    """A message (or one of its fields) that cannot be used; ``kind`` groups the cause."""

    def __init__(self, message: str, kind: str = "invalid") -> None:
        super().__init__(message)
        self.kind = kind


def kind_of(exc: BaseException) -> str:
    """The group of a failure: a BadInput's (or CodecError's) kind, else its class name."""
    return getattr(exc, "kind", None) or type(exc).__name__


@dataclass
class _Tally:
    count: int = 0
    logged_count: int = 0
    logged_at: float = -math.inf


@dataclass
class LogRate:
    """Rate-limited log lines by key: :meth:`line` returns the text to log, or None when this
    event is only counted (the first of a key, then at most one per ``every_s`` seconds or per
    ``every_n`` events of that key; a line says how many it stands for)."""

    every_s: float = 10.0
    every_n: int = 1000
    clock: Callable[[], float] = time.monotonic
    tallies: dict[object, _Tally] = field(default_factory=dict)

    def line(self, key: object, text: str) -> str | None:
        tally = self.tallies.setdefault(key, _Tally())
        tally.count += 1
        now = self.clock()
        due = tally.count == 1 or (
            now - tally.logged_at >= self.every_s
            or tally.count - tally.logged_count >= self.every_n
        )
        if not due:
            return None
        since = tally.count - tally.logged_count - 1
        tally.logged_count, tally.logged_at = tally.count, now
        suffix = f"; {since} more of this kind since the last report" if since else ""
        return f"{text} [{tally.count} so far{suffix}]"


@dataclass
class BadInputCounter(LogRate):
    """Counts dropped inputs per (callback, kind); :meth:`drop` returns the log line to write,
    or None when this drop is only counted (rate-limited as :class:`LogRate`)."""

    def drop(self, callback: str, exc: BaseException | str, kind: str | None = None) -> str | None:
        """Count one dropped input of ``callback`` (e.g. "frame", "knob") failing with ``exc``."""
        kind = kind or (kind_of(exc) if isinstance(exc, BaseException) else "invalid")
        reason = str(exc) or type(exc).__name__
        if isinstance(exc, BaseException) and not isinstance(exc, BadInput):
            reason = f"{type(exc).__name__}: {reason}"
        return self.line((callback, kind), f"{callback} dropped ({kind}): {reason}")

    def count(self, callback: str | None = None) -> int:
        """Drops counted so far (of one callback, or all)."""
        return sum(t.count for (cb, _), t in self.tallies.items() if callback in (None, cb))

    def summary(self) -> dict[str, int]:
        """{"callback/kind": count} of everything dropped so far."""
        return {f"{cb}/{kind}": t.count for (cb, kind), t in sorted(self.tallies.items())}


def check_stamp(stamp: object, what: str = "stamp") -> int:
    """A ``builtin_interfaces/Time`` (fields ``sec``, ``nanosec``) in nanoseconds; negative
    seconds or nanoseconds >= 1e9 (which ROS clocks cannot hold) raise BadInput."""
    sec, nanosec = int(stamp.sec), int(stamp.nanosec)  # type: ignore[attr-defined]
    if sec < 0 or not 0 <= nanosec < NS:
        raise BadInput(f"{what} {sec}.{nanosec:09d} is not a valid time", "stamp")
    return sec * NS + nanosec


@dataclass(frozen=True)
class FrameLimits:
    """What the cloud accepts of a Frame's claims: full-resolution ``width`` x ``height`` at most
    ``max_width`` x ``max_height``, ``scale`` one of ``scales``, ``codec`` one of ``codecs``.
    The size the decoder may produce follows from these (``lr_size``), and the decoders are
    opened with it as their pixel limit."""

    max_width: int = 4096
    max_height: int = 4096
    scales: tuple[int, ...] = SCALES
    codecs: tuple[str, ...] = CODEC_CHOICES

    def __post_init__(self) -> None:
        if self.max_width < 1 or self.max_height < 1:
            raise ValueError(f"limits must be positive, got {self.max_width}x{self.max_height}")
        object.__setattr__(self, "scales", _scales(self.scales))

    @property
    def max_pixels(self) -> int:
        """Most pixels of any decoded picture (scale 1)."""
        return self.max_width * self.max_height

    def check(self, codec: str, scale: int, width: int, height: int) -> tuple[int, int]:
        """Check a Frame's claims; return the (width, height) its payload must decode to.
        Raises BadInput (kinds "codec", "scale", "size") without allocating anything."""
        if codec not in self.codecs:
            shown = codec if len(codec) <= 32 else codec[:32] + "..."
            raise BadInput(f"unknown codec {shown!r} (known: {', '.join(self.codecs)})", "codec")
        if scale not in self.scales:
            allowed = ", ".join(map(str, self.scales))
            raise BadInput(f"scale {scale} is not allowed (allowed: {allowed})", "scale")
        if not (1 <= width <= self.max_width and 1 <= height <= self.max_height):
            raise BadInput(
                f"claimed size {width}x{height} is outside 1x1..{self.max_width}x{self.max_height}",
                "size",
            )
        w, h = width // scale, height // scale
        if codec == "h264":  # the encoder dropped a last odd row/column
            w, h = w & ~1, h & ~1
        if w < 1 or h < 1:
            raise BadInput(f"claimed size {width}x{height} is empty at scale {scale}", "size")
        return w, h


#: The largest camera side any node accepts (the range of the sr node's max_width/max_height).
MAX_SIDE = 16384


def check_camera_size(
    width: int, height: int, reduced_by: int, image_width: int, image_height: int
) -> tuple[int, int]:
    """(width, height) of the camera a restored image of ``image_width`` x ``image_height``
    comes from, as a RestoredInfo claims it: the image must be 1/``reduced_by`` of it (the sr
    node restores to ``width // reduced_by`` x ``height // reduced_by``) and the camera at
    most :data:`MAX_SIDE` a side. BadInput ("size") otherwise, before anything is allocated."""
    k = int(reduced_by)
    if not (1 <= width <= MAX_SIDE and 1 <= height <= MAX_SIDE) or k < 1:
        raise BadInput(f"camera size {width}x{height} (1/{k}) is out of range", "size")
    if (width // k, height // k) != (image_width, image_height):
        raise BadInput(
            f"camera size {width}x{height} at 1/{k} is not the image's {image_width}x"
            f"{image_height}",
            "size",
        )
    return int(width), int(height)


def _scales(values: Iterable[int]) -> tuple[int, ...]:
    values = list(values)
    out = tuple(sorted({int(s) for s in values}))
    if not out or out[0] < 1:
        raise ValueError(f"scales must be positive integers, got {values}")
    return out


#: Limits for offline use on trusted input (evaluation, training): any scale up to 64.
TRUSTED = FrameLimits(max_width=1 << 16, max_height=1 << 16, scales=tuple(range(1, 65)))
