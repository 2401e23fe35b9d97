"""The Knob, checked in one place: every node that reads a Knob (compressor, frame_selector,
the cloud's sr node) calls :func:`check_knob` first, and refuses the whole Knob when it says
no (one log line; the previous settings stay in force). The ranges are the graph's parameter
ranges (:mod:`cloudseg.graph`), so a Knob can ask for nothing a parameter file could not.

Fields that mean "keep the current setting": ``codec`` "", ``selection_mode`` "", ``crf`` 0,
``quality`` 0 (with codec h264 or ""), ``key_threshold`` and ``useful_threshold`` both 0.
``scale`` has no "keep": it must be one of :data:`cloudseg.graph.SCALES`.
``max_frame_bytes`` 0 means no budget from the controller (the compressor's own
``max_frame_bytes`` parameter, a fixed cap, still holds: the lower of the two applies).

**One-shot requests.** ``request_full_frame`` asks for one full-resolution frame. Knobs are
reliable and transient-local, so a node that (re)starts gets the last Knob again; a request in
it was meant for the process before. :class:`OneShot` fires a request once per (seq, stamp),
and only when the Knob's ``header.stamp`` is not older than the node's start: the controller
stamps every Knob when it publishes it (it runs on the vehicle, on the compressor's clock). An
unstamped Knob (stamp 0) never fires a one-shot request.

Plain Python: no ROS import (a Knob is any object with the Knob's fields).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from cloudseg.graph import COMPRESSOR, FRAME_SELECTOR
from cloudseg.guard import BadInput, check_stamp

#: JPEG quality and PNG compression level a Knob may ask for, per codec.
QUALITY_RANGE = {"jpeg": (1, 100), "png": (0, 9)}


@dataclass(frozen=True)
class KnobSettings:
    """A checked Knob (plain values)."""

    seq: int
    stamp_ns: int
    scale: int
    max_fps: float
    key_threshold: float
    useful_threshold: float
    selection_mode: str
    codec: str
    bitrate_kbps: int
    crf: int
    quality: int
    sr_bypass: bool
    request_full_frame: bool
    max_frame_bytes: int = 0

    @property
    def h264_crf(self) -> int | None:
        """The CRF of an H.264 constant-quality stream this Knob sets, else None."""
        if self.codec in ("", "h264") and not self.bitrate_kbps and self.crf:
            return self.crf
        return None


def check_knob(knob: Any) -> KnobSettings:
    """Check every field of a Knob against the graph's ranges and each other; return the
    checked values, or raise BadInput (kind "knob") listing every problem."""
    problems: list[str] = []

    def field(name: str, check, value: Any) -> Any:
        try:
            return check(value)
        except (ValueError, TypeError, OverflowError) as exc:
            # "<parameter>=<value>: why" -> "<knob field> <value>: why"
            problems.append(re.sub(r"^\w+=", f"{name} ", str(exc)))
            return None

    def param(spec, name: str, convert):
        return lambda v: spec.param(name).check(convert(v))

    try:
        stamp_ns = check_stamp(knob.header.stamp, "header.stamp")
    except BadInput as exc:
        problems.append(str(exc))
        stamp_ns = 0
    scale = field("scale", param(COMPRESSOR, "scale", int), knob.scale)
    max_fps = field("max_fps", param(FRAME_SELECTOR, "max_fps", float), knob.max_fps)
    key = field("key_threshold", param(FRAME_SELECTOR, "key_threshold", float), knob.key_threshold)
    useful = field(
        "useful_threshold", param(FRAME_SELECTOR, "useful_threshold", float), knob.useful_threshold
    )
    if key is not None and useful is not None and (key or useful) and useful > key:
        problems.append(f"useful_threshold {useful:g} is above key_threshold {key:g}")
    mode = str(knob.selection_mode)
    if mode:
        field("selection_mode", FRAME_SELECTOR.param("mode").check, mode)
    codec = str(knob.codec)
    if codec:
        field("codec", COMPRESSOR.param("codec").check, codec)
    bitrate = field("bitrate_kbps", param(COMPRESSOR, "bitrate_kbps", int), knob.bitrate_kbps)
    crf = int(knob.crf)
    if crf:  # 0: keep
        field("crf", COMPRESSOR.param("crf").check, crf)
    budget = field(
        "max_frame_bytes",
        param(COMPRESSOR, "max_frame_bytes", int),
        getattr(knob, "max_frame_bytes", 0),  # a Knob built before the field existed: none
    )
    quality = int(knob.quality)
    if codec in QUALITY_RANGE:
        low, high = QUALITY_RANGE[codec]
        if not low <= quality <= high:
            what = "JPEG quality" if codec == "jpeg" else "PNG compression level (quality)"
            problems.append(f"{what} must be {low}..{high}, got {quality}")
    elif quality:  # h264 or keep: 0 keeps, else within the parameter's range
        field("quality", COMPRESSOR.param("quality").check, quality)
    if problems:
        raise BadInput(f"knob {int(knob.seq)} refused: {'; '.join(problems)}", "knob")
    return KnobSettings(
        seq=int(knob.seq),
        stamp_ns=stamp_ns,
        scale=scale,
        max_fps=max_fps,
        key_threshold=key,
        useful_threshold=useful,
        selection_mode=mode,
        codec=codec,
        bitrate_kbps=bitrate,
        crf=crf,
        quality=quality,
        sr_bypass=bool(knob.sr_bypass),
        request_full_frame=bool(knob.request_full_frame),
        max_frame_bytes=budget,
    )


def frame_budget(fixed: int, knob: int) -> int:
    """The per-frame budget in force: the lower of a fixed cap and the Knob's (0 = none)."""
    caps = [int(b) for b in (fixed, knob) if b]
    return min(caps) if caps else 0


def compressor_changes(k: KnobSettings, fixed_budget: int = 0) -> dict[str, Any]:
    """What a checked Knob changes of the compressor's settings (`CompressorSettings`);
    ``fixed_budget``: the compressor's own max_frame_bytes parameter."""
    changes: dict[str, Any] = {
        "scale": k.scale,
        "bitrate_kbps": k.bitrate_kbps,
        "max_frame_bytes": frame_budget(fixed_budget, k.max_frame_bytes),
    }
    if k.codec:
        changes["codec"] = k.codec
    if k.crf:
        changes["crf"] = k.crf
    if k.quality or k.codec in QUALITY_RANGE:
        changes["quality"] = k.quality
    return changes


class OneShot:
    """Fires a Knob's one-shot request once, and never one made before this node started."""

    def __init__(self, start_ns: int) -> None:
        self.start_ns = int(start_ns)
        self.last: tuple[int, int] | None = None

    def fire(self, k: KnobSettings) -> bool:
        if not k.request_full_frame or k.stamp_ns < self.start_ns:
            return False
        key = (k.seq, k.stamp_ns)
        if key == self.last:
            return False
        self.last = key
        return True


# --------------------------------------------------------------------------- the knob log

#: The controller node's log line of a settings change: `knob SEQ: SETTINGS: REASON`, SETTINGS
#: as `ProfileEntry.describe()` writes it (`x2 crf 23, bilinear (1800 kbit/s, mIoU 0.61,
#: 40 ms)`). `knob_line` writes it, `knob_changes_in` reads it back (the demo's summary).
_KNOB_LINE = re.compile(
    r"\bknob (?P<seq>\d+): (?P<settings>x\d+ .*? ms\)(?: at \d+ kbit/s)?): (?P<reason>.*)$"
)


@dataclass(frozen=True)
class KnobChange:
    """One settings change of the controller: its Knob seq, the settings, and why."""

    seq: int
    settings: str
    reason: str

    @property
    def short(self) -> str:
        """The settings without the profile's figures: `x2 crf 23, bilinear`."""
        return self.settings.rsplit(" (", 1)[0]


def knob_line(seq: int, settings: str, reason: str) -> str:
    """The log line of a settings change (what `knob_changes_in` reads)."""
    return f"knob {seq}: {settings}: {reason}"


def knob_changes_in(log_text: str) -> list[KnobChange]:
    """The settings changes a controller's log records, in order (one-shot requests for a
    full frame are not changes)."""
    out = []
    for line in log_text.splitlines():
        m = _KNOB_LINE.search(line)
        if m:
            out.append(KnobChange(int(m["seq"]), m["settings"], m["reason"].strip()))
    return out


def describe_knob_changes(changes: list[KnobChange]) -> list[str]:
    """One line per change, `from -> to: reason` (the first: where it started, and why)."""
    lines = []
    for before, change in zip([None, *changes], changes, strict=False):
        where = change.settings if before is None else f"{before.short} -> {change.settings}"
        lines.append(f"knob {change.seq}: {where}: {change.reason}")
    return lines
