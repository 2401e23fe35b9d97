"""The results of ``cloudseg bench selector``: curve points, one run's sweep, and its tables,
JSON and plot."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cloudseg.metrics import ConfusionMatrix

__all__ = [
    "ENTRY_KEYS",
    "Point",
    "SweepResult",
    "describe",
    "format_markdown",
    "format_table",
    "write_plot",
]

ENTRY_KEYS = ("sent_fraction", "kbps", "miou_vs_every_frame")
"""Keys of every entry of the JSON lists (curve entries also have ``threshold``)."""


@dataclass
class Point:
    """One point of a curve: which frames were sent and what that gave."""

    sent: list[int]  # indices of the frames sent, in order
    keyframes: list[bool]  # per frame sent: forced IDR (KEY)
    frames: int
    kbps: float
    miou: float
    pixel_accuracy: float = math.nan
    threshold: float | None = None  # USEFUL threshold (selector points only)
    key_threshold: float | None = None

    @property
    def sent_fraction(self) -> float:
        return len(self.sent) / self.frames

    @property
    def n_key(self) -> int:
        return sum(self.keyframes)

    @property
    def n_useful(self) -> int:
        return len(self.sent) - self.n_key

    def entry(self) -> dict[str, float]:
        """The JSON entry (``threshold`` first for selector points)."""
        out: dict[str, float] = {}
        if self.threshold is not None:
            out["threshold"] = round(self.threshold, 6)
        out["sent_fraction"] = round(self.sent_fraction, 6)
        out["kbps"] = round(self.kbps, 3)
        out["miou_vs_every_frame"] = round(self.miou, 6)
        return out

    def scored(self, matrix: ConfusionMatrix) -> Point:
        """This point with the mIoU and pixel accuracy of ``matrix``."""
        return replace(self, miou=matrix.miou(), pixel_accuracy=matrix.pixel_accuracy())


@dataclass
class SweepResult:
    """Everything one run measured on one input."""

    input: str
    mode: str
    frames: int
    fps: float
    frame_size: str
    key_ratio: float
    max_key_interval: float
    max_gap: float
    curve: list[Point]
    fixed: list[Point]
    default_index: int | None  # the curve point at the mode's default thresholds (if any)
    selector_ms: float
    selector_ms_median: float
    selector_calls: int
    curve_warped: list[Point] | None = None  # the same points, labels warped along flow
    fixed_warped: list[Point] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def default(self) -> Point | None:
        return None if self.default_index is None else self.curve[self.default_index]

    def _lists(self) -> dict[str, list[Point]]:
        out = {"curve": self.curve, "fixed_interval": self.fixed}
        if self.curve_warped is not None and self.fixed_warped is not None:
            out.update(curve_warped=self.curve_warped, fixed_interval_warped=self.fixed_warped)
        return out

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "curve": [p.entry() for p in self.curve],
            "fixed_interval": [p.entry() for p in self.fixed],
        }
        if self.curve_warped is not None and self.fixed_warped is not None:
            out["curve_warped"] = [p.entry() for p in self.curve_warped]
            out["fixed_interval_warped"] = [p.entry() for p in self.fixed_warped]
        default = self.default
        out.update(
            input=self.input,
            mode=self.mode,
            frames=self.frames,
            fps=self.fps,
            frame_size=self.frame_size,
            key_ratio=round(self.key_ratio, 6),
            max_key_interval=self.max_key_interval,
            max_gap=self.max_gap,
            default=None
            if default is None
            else {
                "index": self.default_index,
                "threshold": default.threshold,
                "key_threshold": default.key_threshold,
            },
            key_frames=[p.n_key for p in self.curve],
            useful_frames=[p.n_useful for p in self.curve],
            pixel_accuracy={
                name: [round(p.pixel_accuracy, 6) for p in points]
                for name, points in self._lists().items()
            },
            selector_ms=round(self.selector_ms, 4),
            selector_ms_median=round(self.selector_ms_median, 4),
            held_labels="backend labels of the last original frame sent (selection only)",
        )
        out.update(self.extra)
        return out


def _rows(result: SweepResult) -> tuple[list[str], list[list[str]]]:
    header = ["", "USEFUL", "KEY th", "sent", "KEY/USEFUL", "kbit/s", "mIoU"]
    header += ["pix acc", "fixed kbit/s", "fixed mIoU", "fixed pix acc", "dmIoU"]
    if result.curve_warped is not None:
        header += ["warp mIoU", "fixed warp mIoU"]
    rows = []
    for i, (p, f) in enumerate(zip(result.curve, result.fixed, strict=True)):
        row = [
            "*" if i == result.default_index else "",
            f"{p.threshold:g}",
            f"{p.key_threshold:.3g}",
            f"{len(p.sent)}/{p.frames} ({100 * p.sent_fraction:.0f}%)",
            f"{p.n_key}/{p.n_useful}",
            f"{p.kbps:.0f}",
            f"{p.miou:.3f}",
            f"{p.pixel_accuracy:.3f}",
            f"{f.kbps:.0f}",
            f"{f.miou:.3f}",
            f"{f.pixel_accuracy:.3f}",
            f"{p.miou - f.miou:+.3f}",
        ]
        if result.curve_warped is not None and result.fixed_warped is not None:
            row += [f"{result.curve_warped[i].miou:.3f}", f"{result.fixed_warped[i].miou:.3f}"]
        rows.append(row)
    return header, rows


def describe(result: SweepResult) -> str:
    """What was run, in three lines."""
    d = result.default
    keys = sorted({p.key_threshold for p in result.curve if p is not d})
    rule = (
        f"KEY threshold {keys[0]:g}"
        if len(keys) == 1
        else f"KEY threshold = {result.key_ratio:.3g} x USEFUL"
    )
    default = "" if d is None else f"; default *: KEY {d.key_threshold:g}, USEFUL {d.threshold:g}"
    return (
        f"{result.input}: {result.frames} frames at {result.fps:g} fps ({result.frame_size}), "
        f"{result.mode} selection, {rule}{default}, "
        f"KEY at least every {result.max_key_interval:g} s, a frame at least every "
        f"{result.max_gap:g} s\n"
        f"selector cost: {result.selector_ms:.3f} ms/frame mean, "
        f"{result.selector_ms_median:.3f} median ({result.selector_calls} calls; one core: "
        "run under taskset -c 0)\n"
        "held labels: the backend's labels of the last original frame sent (selection only; "
        "the codec's effect on labels is Table 1); fixed: every n/m-th frame, same encoder"
    )


def format_table(result: SweepResult) -> str:
    """An aligned plain-text table, one line per threshold (``*``: the default)."""
    header, rows = _rows(result)
    widths = [max(len(x) for x in col) for col in zip(header, *rows, strict=True)]
    lines = ["  ".join(v.rjust(w) for v, w in zip(r, widths, strict=True)) for r in [header]]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.rjust(w) for v, w in zip(r, widths, strict=True)) for r in rows]
    return describe(result) + "\n" + "\n".join(lines)


def format_markdown(result: SweepResult) -> str:
    """The same table in markdown (for docs/benchmarks/selector.md)."""
    header, rows = _rows(result)
    header[0] = "def."
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---:"] * len(header)) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def write_plot(result: SweepResult, path: Path) -> Path:
    """mIoU against fraction sent and against kbit/s, selector and fixed interval (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), dpi=80)
    series = [("selector", result.curve, "C0", "o-"), ("fixed interval", result.fixed, "C1", "s--")]
    if result.curve_warped is not None and result.fixed_warped is not None:
        series.append(("selector + warp", result.curve_warped, "C2", "o-"))
        series.append(("fixed + warp", result.fixed_warped, "C3", "s--"))
    for label, points, colour, style in series:
        y = [p.miou for p in points]
        axes[0].plot([p.sent_fraction for p in points], y, style, color=colour, ms=3, label=label)
        axes[1].plot([p.kbps for p in points], y, style, color=colour, ms=3, label=label)
    d = result.default
    if d is not None:
        axes[0].plot([d.sent_fraction], [d.miou], "k*", ms=11, label="default")
        axes[1].plot([d.kbps], [d.miou], "k*", ms=11, label="default")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.set_ylabel("mIoU vs every frame")
    axes[0].set_xlabel("fraction of frames sent")
    axes[1].set_xlabel("kbit/s (H.264, default compressor)")
    axes[0].legend(fontsize=7, loc="lower right")
    default = "" if d is None else f"; default KEY {d.key_threshold:g}, USEFUL {d.threshold:g}"
    fig.suptitle(f"{result.input} ({result.frames} frames, {result.mode}{default})", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
