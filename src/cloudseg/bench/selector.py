"""``cloudseg bench selector``: frames sent, kbit/s and held-label accuracy of frame selection.

On one real sequence, the vehicle's :class:`~cloudseg.selection.selector.FrameSelector` runs
over every camera frame (with its capture stamps) once per USEFUL threshold of a sweep; the KEY
threshold is ``--key-ratio`` times the USEFUL one (by default the ratio of the mode's default
thresholds). For each point it reports:

* ``sent_fraction``: frames sent (KEY + USEFUL) / camera frames;
* ``kbps``: the H.264 stream of the frames sent, encoded in order as the compressor would
  (a fresh :class:`~cloudseg.media.stream.FrameCompressor` with the default settings per point,
  KEY frames forced to IDR, USEFUL frames P-frames), total payload bits / camera duration
  (``frames / fps``) / 1000;
* ``miou_vs_every_frame``: the labels the vehicle holds at each camera frame (those of the last
  frame sent at or before it, ``--warp``: moved to the current frame along optical flow)
  against the backend's labels computed on that frame, one confusion matrix over all frames.
  The held labels are the backend's labels of the *original* frame sent, which isolates the
  effect of selection; what the codec and SR do to labels is Table 1
  (docs/benchmarks/accuracy.md).

Beside each point, fixed-interval skipping at the same number of frames ``m`` (AWStream's
frame-rate knob): frames ``round(j * n / m)``, ``j = 0..m-1``, encoded with the same compressor
and the same IDR rule a frame-rate cap gives in the graph (selection ``off`` with ``max_fps``):
an IDR at the first frame sent and at the first frame sent ``max_key_interval`` or more after
the last one, P-frames otherwise (x264's own GOP of 17 coded frames applies to both).

The selector's cost per frame (``select``: features + comparison) is the process CPU time per
call, mean and median over every call of the sweep (CPU time, not wall time, so that other
work on a shared machine does not count); OpenCV may spread a call over several cores, so
measure the one-core figure under ``taskset -c 0``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cloudseg.bench.selector_results import (
    Point,
    SweepResult,
    describe,
    format_markdown,
    format_table,
    write_plot,
)
from cloudseg.media.stream import CompressorSettings, FrameCompressor, default_compressor_settings
from cloudseg.metrics import ConfusionMatrix
from cloudseg.selection.held_labels import held_sources
from cloudseg.selection.selector import (
    DEFAULT_THRESHOLDS,
    MODES,
    DeviationMeasure,
    FrameSelector,
    Level,
    SelectionError,
    SelectorSettings,
    make_measure,
)

__all__ = [
    "DEFAULT_SWEEP",
    "HeldLabelScorer",
    "encode_kbps",
    "fixed_interval",
    "interval_keyframes",
    "main",
    "run_selector",
    "sweep",
]

DEFAULT_SWEEP: tuple[float, ...] = (
    0.005,
    0.0075,
    0.01,
    0.0125,
    0.015,
    0.02,
    0.025,
    0.03,
    0.035,
    0.04,
    0.05,
    0.06,
    0.08,
    0.1,
    0.15,
    0.3,
)
"""USEFUL thresholds swept by default (pixel deviation; the same scale suits ``learned``)."""


def fixed_interval(n: int, m: int) -> list[int]:
    """``m`` of ``n`` frame indices evenly spaced, the first one 0: ``round(j * n / m)``."""
    if not 1 <= m <= n:
        raise ValueError(f"cannot send {m} of {n} frames")
    return [math.floor(j * n / m + 0.5) for j in range(m)]


def interval_keyframes(stamps_ns: Sequence[int], sent: Sequence[int], max_key_interval: float):
    """The IDR rule of a frame-rate cap: KEY at the first frame sent and at the first frame
    sent ``max_key_interval`` s or more after the last KEY (as selection ``off`` does)."""
    keys, last = [], None
    for i in sent:
        key = last is None or (stamps_ns[i] - last) / 1e9 >= max_key_interval
        keys.append(key)
        if key:
            last = stamps_ns[i]
    return keys


class HeldLabelScorer:
    """mIoU of held labels against every frame's own labels.

    The confusion counts of one (source frame, camera frame, warped) pair are the same at every
    sweep point that holds that pair, so they are computed once and summed.
    """

    def __init__(
        self, labels: Sequence[np.ndarray], greys: Sequence[np.ndarray] | None = None
    ) -> None:
        self.labels = labels
        self.greys = greys
        self._pairs: dict[tuple[int, int, bool], ConfusionMatrix] = {}

    def _pair(self, source: int, target: int, warp: bool) -> ConfusionMatrix:
        key = (source, target, warp and source != target)
        if key not in self._pairs:
            held = self.labels[source]
            if key[2]:
                from cloudseg.selection.held_labels import warp_labels

                if self.greys is None:
                    raise ValueError("warping needs the frames' flow copies")
                held = warp_labels(held, self.greys[source], self.greys[target])
            matrix = ConfusionMatrix()
            matrix.update(held, self.labels[target])
            self._pairs[key] = matrix
        return self._pairs[key]

    def score(self, sent: Sequence[int], warp: bool = False) -> ConfusionMatrix:
        """One confusion matrix over every camera frame (held labels vs its own)."""
        total = ConfusionMatrix()
        for target, source in enumerate(held_sources(len(self.labels), sent)):
            total.merge(self._pair(source, target, warp))
        return total

    def miou(self, sent: Sequence[int], warp: bool = False) -> float:
        return self.score(sent, warp).miou()


def encode_kbps(
    frames: Sequence[np.ndarray],
    sent: Sequence[int],
    keyframes: Sequence[bool],
    seconds: float,
    settings: CompressorSettings | None = None,
) -> float:
    """kbit/s of the stream of the frames sent (KEY frames forced to IDR) over ``seconds``."""
    compressor = FrameCompressor(settings or default_compressor_settings())
    bits = 0
    for i, key in zip(sent, keyframes, strict=True):
        bits += 8 * len(compressor.compress(frames[i], keyframe=key).payload)
    return bits / seconds / 1000


def run_selector(
    frames: Sequence[np.ndarray],
    stamps_ns: Sequence[int],
    settings: SelectorSettings,
    measure: DeviationMeasure | None,
) -> tuple[list[int], list[bool], list[float]]:
    """Frames sent, their KEY flags and the CPU ms of each ``select`` call (process CPU time,
    so other processes on a shared machine do not count)."""
    selector = FrameSelector(settings, measures={settings.mode: measure})
    sent, keys, ms = [], [], []
    for i, (rgb, stamp) in enumerate(zip(frames, stamps_ns, strict=True)):
        t0 = time.process_time()
        decision = selector.select(rgb, stamp)
        ms.append((time.process_time() - t0) * 1e3)
        if decision.send:
            sent.append(i)
            keys.append(decision.level == Level.KEY)
    return sent, keys, ms


def sweep(
    frames: Sequence[np.ndarray],
    stamps_ns: Sequence[int],
    labels: Sequence[np.ndarray],
    fps: float,
    mode: str = "pixel",
    thresholds: Sequence[float] = DEFAULT_SWEEP,
    key_ratio: float | None = None,
    key_threshold: float | None = None,
    warp: bool = False,
    measure: DeviationMeasure | None = None,
    max_key_interval: float = SelectorSettings.max_key_interval,
    max_gap: float = SelectorSettings.max_gap,
    compressor: CompressorSettings | None = None,
    name: str = "input",
    progress: bool = False,
) -> SweepResult:
    """The selector's curve over ``thresholds`` (plus the mode's default USEFUL threshold) and
    fixed-interval skipping at the same frame counts, on frames already loaded.

    The KEY threshold of a point is ``key_threshold`` when given, else ``key_ratio`` (default:
    the ratio of the mode's defaults) times its USEFUL threshold, at most 1; the default point
    keeps the mode's default KEY threshold.
    """
    from tqdm import tqdm

    n = len(frames)
    if n == 0:
        raise ValueError(f"{name}: no frames")
    if len(stamps_ns) != n or len(labels) != n:
        raise ValueError(f"{name}: {n} frames, {len(stamps_ns)} stamps, {len(labels)} labels")
    if fps <= 0:
        raise ValueError(f"{name}: frame rate must be > 0, got {fps}")
    if mode == "off":
        raise SelectionError("mode off has no thresholds to sweep (it sends every frame)")
    default_key, default_useful = DEFAULT_THRESHOLDS[mode]
    ratio = default_key / default_useful if key_ratio is None else float(key_ratio)
    if not math.isfinite(ratio) or ratio < 1:
        raise SelectionError(f"--key-ratio must be >= 1, got {ratio!r}")
    if key_threshold is not None and not 0 < key_threshold <= 1:
        raise SelectionError(f"--key-threshold must be in (0, 1], got {key_threshold!r}")
    values = sorted({round(float(t), 6) for t in thresholds} | {default_useful})
    if key_threshold is not None:
        values = [v for v in values if v <= key_threshold]
    if values[0] <= 0:
        raise SelectionError("thresholds must be > 0 (0 and 0 mean the mode's defaults)")
    if measure is None:
        measure = make_measure(mode)
    seconds = n / fps
    compressor = compressor or default_compressor_settings()

    greys = None
    if warp:
        from cloudseg.selection.held_labels import flow_frame

        greys = [flow_frame(rgb) for rgb in frames]
    scorer = HeldLabelScorer(labels, greys)

    curve, fixed, all_ms = [], [], []
    fixed_cache: dict[int, Point] = {}
    for useful in tqdm(values, desc=f"selector {name}", unit="point", disable=not progress):
        if key_threshold is not None:
            key = key_threshold
        elif useful == default_useful:
            key = default_key
        else:
            key = min(1.0, useful * ratio)
        settings = SelectorSettings(
            mode=mode,
            key_threshold=key,
            useful_threshold=useful,
            max_key_interval=max_key_interval,
            max_gap=max_gap,
        )
        sent, keys, ms = run_selector(frames, stamps_ns, settings, measure)
        all_ms += ms
        kbps = encode_kbps(frames, sent, keys, seconds, compressor)
        point = Point(sent, keys, n, kbps, math.nan, threshold=useful, key_threshold=key)
        curve.append(point.scored(scorer.score(sent)))
        m = len(sent)
        if m not in fixed_cache:
            f_sent = fixed_interval(n, m)
            f_keys = interval_keyframes(stamps_ns, f_sent, max_key_interval)
            f_kbps = encode_kbps(frames, f_sent, f_keys, seconds, compressor)
            point = Point(f_sent, f_keys, n, f_kbps, math.nan)
            fixed_cache[m] = point.scored(scorer.score(f_sent))
        fixed.append(fixed_cache[m])

    result = SweepResult(
        input=name,
        mode=mode,
        frames=n,
        fps=fps,
        frame_size=f"{frames[0].shape[1]}x{frames[0].shape[0]}",
        key_ratio=ratio,
        max_key_interval=max_key_interval,
        max_gap=max_gap,
        curve=curve,
        fixed=fixed,
        default_index=next(
            (
                i
                for i, p in enumerate(curve)
                if (p.key_threshold, p.threshold) == (default_key, default_useful)
            ),
            None,
        ),
        selector_ms=float(np.mean(all_ms)),
        selector_ms_median=float(np.median(all_ms)),
        selector_calls=len(all_ms),
    )
    if warp:
        warped_points = tqdm(curve, desc=f"warp {name}", unit="point", disable=not progress)
        result.curve_warped = [p.scored(scorer.score(p.sent, warp=True)) for p in warped_points]
        result.fixed_warped = [p.scored(scorer.score(p.sent, warp=True)) for p in fixed]
    return result


def _thresholds(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.replace(",", " ").split()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a list of numbers: {text!r}") from exc
    if not values or any(not 0 < v <= 1 for v in values):
        raise argparse.ArgumentTypeError(f"thresholds must be in (0, 1]: {text!r}")
    return values


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cloudseg bench selector",
        description=(
            "Sweep the frame selector's thresholds on one sequence: fraction of frames sent, "
            "kbit/s of the H.264 stream of what is sent, and mIoU of the labels held at every "
            "camera frame against the backend's labels on every frame; beside fixed-interval "
            "skipping at the same frames sent. Writes a PNG plot of both curves."
        ),
    )
    parser.add_argument(
        "--input", required=True, type=Path, metavar="PATH", help="frame folder, video or bag"
    )
    parser.add_argument(
        "--mode", default="pixel", help="deviation measure: pixel or learned (default pixel)"
    )
    parser.add_argument(
        "--weights", default=None, metavar="PATH", help="learned mode: the regressor's weights"
    )
    parser.add_argument(
        "--thresholds",
        type=_thresholds,
        default=list(DEFAULT_SWEEP),
        metavar="LIST",
        help="USEFUL thresholds to sweep, comma-separated (default "
        + ",".join(f"{t:g}" for t in DEFAULT_SWEEP)
        + "; the mode's default is always added)",
    )
    parser.add_argument(
        "--key-ratio",
        type=float,
        default=None,
        metavar="R",
        help="KEY threshold = R x USEFUL (default: the ratio of the mode's default thresholds)",
    )
    parser.add_argument(
        "--key-threshold",
        type=float,
        default=None,
        metavar="K",
        help="one KEY threshold for every point instead of --key-ratio",
    )
    parser.add_argument(
        "--max-key-interval",
        type=float,
        default=SelectorSettings.max_key_interval,
        metavar="S",
        help="a KEY frame at least every S seconds (default %(default)g)",
    )
    parser.add_argument(
        "--max-gap",
        type=float,
        default=SelectorSettings.max_gap,
        metavar="S",
        help="a frame sent at least every S seconds (default %(default)g)",
    )
    parser.add_argument(
        "--warp", action="store_true", help="also score labels warped along optical flow"
    )
    parser.add_argument(
        "--plot",
        type=Path,
        default=None,
        metavar="PNG",
        help="where to write the plot (default: selector_<input>_<mode>.png here)",
    )
    parser.add_argument("--no-plot", action="store_true", help="write no plot")
    parser.add_argument("--backend", default="espnetv2", help="reference labels' segmenter")
    parser.add_argument("--device", default="auto", help="device for the reference labels")
    parser.add_argument("--limit", type=int, default=None, metavar="N", help="first N frames")
    parser.add_argument(
        "--json", action="store_true", help="print one JSON line instead of the table"
    )
    parser.add_argument("--markdown", action="store_true", help="print a markdown table")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the sweep on one input; 0 on success, 1 on bad input (one line on stderr)."""
    args = build_parser().parse_args(argv)
    try:
        from cloudseg.data.frames import DataError
        from cloudseg.selection.reference import load_labelled_sequence

        if not args.input.exists():
            raise ValueError(f"input {args.input} does not exist")
        if args.limit is not None and args.limit < 1:
            raise ValueError(f"--limit must be >= 1, got {args.limit}")
        if args.mode not in MODES or args.mode == "off":
            raise SelectionError(f"unknown selection mode {args.mode!r}; known: pixel, learned")
        try:
            measure = make_measure(args.mode, args.weights)
        except Exception as exc:  # ImportError, WeightsError: one line, not a traceback
            raise SelectionError(f"{args.mode} selection is not available: {exc}") from exc
        try:
            seq = load_labelled_sequence(args.input, args.backend, args.device, args.limit)
        except DataError as exc:
            raise ValueError(str(exc)) from exc
        result = sweep(
            seq.frames,
            seq.stamps_ns,
            seq.labels,
            seq.fps,
            mode=args.mode,
            thresholds=args.thresholds,
            key_ratio=args.key_ratio,
            key_threshold=args.key_threshold,
            warp=args.warp,
            measure=measure,
            max_key_interval=args.max_key_interval,
            max_gap=args.max_gap,
            name=args.input.stem if args.input.is_file() else args.input.name,
            progress=True,
        )
        plot = None
        if not args.no_plot:
            plot = args.plot or Path(f"selector_{result.input}_{args.mode}.png")
            write_plot(result, plot)
            result.extra["plot"] = str(plot)
    except (ValueError, OSError) as exc:  # SelectionError, DataError and MetricsError included
        print(f"cloudseg bench selector: error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result.to_json()))
    else:
        print(
            describe(result) + "\n\n" + format_markdown(result)
            if args.markdown
            else format_table(result)
        )
    if plot is not None:
        print(f"plot written to {plot}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
