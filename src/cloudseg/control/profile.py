"""The offline accuracy/bandwidth profile the adaptive controller picks from (AWStream-style).

A profile is a list of :class:`ProfileEntry`: one configuration of the knobs (scale, codec
rate, frame-rate cap, selection thresholds, SR on or off) with what `cloudseg profile` measured
for it on real sequences: kbit/s, accuracy (mIoU against ground truth where it exists, else
against full-resolution segmentation) and cloud time per frame. Only the Pareto-optimal entries
are kept (no other entry is at least as accurate for at most the bits). Stored as JSON
(``config/profile.json``), read by the controller node. Plain Python.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

PROFILE_FILE = "profile.json"
"""The profile's file name in the config folder (cloudseg.graph.config_dir())."""


class ProfileError(ValueError):
    """A profile file that cannot be used (missing, malformed, empty); says what and why."""


@dataclass(frozen=True)
class ProfileEntry:
    """One configuration and what it measured."""

    scale: int  # downsampling factor
    crf: int = 23  # H.264 CRF (used when bitrate_kbps is 0)
    bitrate_kbps: int = 0  # H.264 target rate (0: crf)
    max_fps: float = 0.0  # frame-rate cap (0: every frame the selector keeps)
    key_threshold: float = 0.0  # selection thresholds (both 0: the selector's defaults)
    useful_threshold: float = 0.0
    sr_bypass: bool = False  # True: bilinear restoration instead of SR
    kbps: float = math.nan  # measured stream rate
    miou: float = math.nan  # measured accuracy
    cloud_ms: float = math.nan  # measured cloud time per frame (decode, restore, segment)
    reference: str = ""  # what miou was measured against: "gt" or "hr"

    def __post_init__(self) -> None:
        if self.scale < 1:
            raise ProfileError(f"scale must be >= 1, got {self.scale}")
        if not 0 <= self.crf <= 51:
            raise ProfileError(f"crf must be 0..51, got {self.crf}")

    def knobs(self) -> dict[str, Any]:
        """The Knob fields this entry sets."""
        return {
            k: getattr(self, k)
            for k in (
                "scale",
                "crf",
                "bitrate_kbps",
                "max_fps",
                "key_threshold",
                "useful_threshold",
                "sr_bypass",
            )
        }

    def describe(self) -> str:
        rate = f"{self.bitrate_kbps} kbit/s" if self.bitrate_kbps else f"crf {self.crf}"
        fps = f", <= {self.max_fps:g} fps" if self.max_fps else ""
        sr = ", bilinear" if self.sr_bypass else ""
        return (
            f"x{self.scale} {rate}{fps}{sr} ({self.kbps:.0f} kbit/s, mIoU {self.miou:.3f}, "
            f"{self.cloud_ms:.0f} ms)"
        )


def pareto_front(entries: list[ProfileEntry]) -> list[ProfileEntry]:
    """The entries no other entry dominates (as accurate or more, for as few bits or fewer,
    better in one), sorted by kbit/s."""
    usable = [e for e in entries if math.isfinite(e.kbps) and math.isfinite(e.miou)]
    front = []
    for e in usable:
        dominated = any(
            o.kbps <= e.kbps and o.miou >= e.miou and (o.kbps < e.kbps or o.miou > e.miou)
            for o in usable
        )
        if not dominated:
            front.append(e)
    return sorted(front, key=lambda e: (e.kbps, -e.miou))


def save_profile(path: str | Path, entries: list[ProfileEntry], meta: dict[str, Any]) -> None:
    """Write a profile file: ``{"meta": {...}, "entries": [...]}`` (JSON)."""
    data = {"meta": meta, "entries": [asdict(e) for e in entries]}
    Path(path).write_text(json.dumps(data, indent=1) + "\n")


def load_profile(path: str | Path) -> list[ProfileEntry]:
    """Read a profile file; ProfileError saying why when it cannot be used."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ProfileError(f"profile {path} does not exist (make one: cloudseg profile)") from None
    except (OSError, ValueError) as exc:
        raise ProfileError(f"profile {path} is not readable JSON: {exc}") from None
    names = {f.name for f in fields(ProfileEntry)}
    try:
        entries = [
            ProfileEntry(**{k: v for k, v in e.items() if k in names}) for e in data["entries"]
        ]
    except (KeyError, TypeError) as exc:
        raise ProfileError(f"profile {path} is malformed: {exc}") from None
    if not entries:
        raise ProfileError(f"profile {path} has no entries")
    return entries
