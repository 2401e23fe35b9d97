"""``cloudseg profile``: the offline accuracy/bandwidth profile (AWStream-style, issue 8).

Runs configurations of the vehicle's knobs over real sequences and keeps the Pareto-optimal
ones in ``config/profile.json`` (:mod:`cloudseg.control.profile`), with a PNG plot of accuracy
against kbit/s. A configuration is a scale (1, 2, 4), an H.264 CRF (no maxrate cap: the CRF is
the knob), a frame-rate cap and SR on or off; everything else is the compressor's defaults
(``cloudseg.graph.COMPRESSOR``; ``--preset`` overrides the preset).

For each configuration and input, in stream order:

* frames are sent through the real :class:`~cloudseg.media.stream.FrameCompressor`; with a cap
  ``max_fps`` a frame is sent only when at least ``1/max_fps`` s have passed since the last
  sent one. kbit/s = bytes sent x 8 / clip duration;
* the cloud decodes every sent frame and restores + segments (bilinear or CARN-M SR, ESPNetv2
  at its trained 1024x512, or the frame itself at scale 1) those whose labels are needed;
* accuracy is scored on every ``--score-every``-th camera frame (offset 19 mod K, so Cityscapes
  frame 19, the annotated one, is among them): the labels the vehicle holds then (those of the
  last sent frame) against the segmenter's labels on the original full-resolution frame
  (reference ``"hr"``, one confusion matrix over all inputs). Where Cityscapes ground truth
  exists for a scored frame (``--gt``, gtFine labelTrainIds) a second mIoU against it is
  reported (few frames: noisy);
* cloud ms per frame = mean decode ms of the sent frames + mean restore + segment ms, on the
  CPU this runs on (no GPU).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from cloudseg.control.profile import (
    PROFILE_FILE,
    ProfileEntry,
    load_profile,
    pareto_front,
    save_profile,
)
from cloudseg.selection.held_labels import held_sources
from cloudseg.selection.rate import RateCap

Segment = Callable[[np.ndarray, int, bool], np.ndarray]
"""(decoded LR frame, scale, sr) -> labels at the reference labels' resolution."""

_FRAME = re.compile(r"^(?P<city>[A-Za-z]+)_(?P<seq>\d+)_(?P<frame>\d+)")
DEFAULT_GT = Path("/work/shared/data/cityscapes")
ANNOTATED = 19
"""Cityscapes annotates frame 19 of each 30-frame snippet: the scored frames include it."""


@dataclass
class Clip:
    """One input: frames in order, their fps, the reference labels and ground truth by index."""

    name: str
    frames: list[np.ndarray]
    fps: float
    labels: list[np.ndarray]
    gt: dict[int, np.ndarray] = field(default_factory=dict)


def sent_frames(n: int, fps: float, max_fps: float) -> list[int]:
    """Indices the vehicle sends with a frame-rate cap (0: all): the selector's RateCap on
    the capture stamps."""
    cap = RateCap(max_fps)
    return [i for i in range(n) if cap.admit(round(i * 1e9 / fps))]


def held(n: int, sent: Sequence[int]) -> list[int]:
    """For every frame, the sent frame whose labels the vehicle holds then."""
    return held_sources(n, sent)


def gt_labels(path: Path, n: int, size: tuple[int, int], root: Path) -> dict[int, np.ndarray]:
    """Cityscapes gtFine train ids (nearest-resized to ``size`` = (w, h)) for frames of ``path``
    that have them; frames are named by the folder's file names or a video's first frame."""
    if path.is_dir():
        names = sorted(p.name for p in path.iterdir() if _FRAME.match(p.name))
        ids = [_FRAME.match(name) for name in names][:n]
        keys = [(m["city"], m["seq"], int(m["frame"])) for m in ids if m]
    elif m := _FRAME.match(path.name):
        keys = [(m["city"], m["seq"], int(m["frame"]) + i) for i in range(n)]
    else:
        return {}
    out = {}
    for i, (city, seq, frame) in enumerate(keys):
        pattern = f"gtFine/*/{city}/{city}_{seq}_{frame:06d}_gtFine_labelTrainIds.png"
        for file in root.glob(pattern):
            gt = cv2.imread(str(file), cv2.IMREAD_GRAYSCALE)
            if gt is not None:
                out[i] = cv2.resize(gt, size, interpolation=cv2.INTER_NEAREST)
    return out


@dataclass(frozen=True)
class Setting:
    """One configuration to measure."""

    scale: int
    crf: int
    max_fps: float
    sr: bool

    def entry(self, **measured: Any) -> ProfileEntry:
        return ProfileEntry(
            scale=self.scale,
            crf=self.crf,
            max_fps=self.max_fps,
            sr_bypass=not self.sr,
            **measured,
        )


def settings_grid(
    scales: Sequence[int],
    crfs: Sequence[int],
    caps: Sequence[float],
    sr_scales: Sequence[int],
    sr_crfs: Sequence[int],
) -> list[Setting]:
    """Bilinear everywhere, SR only at ``sr_scales`` x ``sr_crfs`` (CPU time)."""
    grid = [Setting(s, c, f, False) for s in scales for c in crfs for f in caps]
    grid += [Setting(s, c, f, True) for s in sr_scales if s > 1 for c in sr_crfs for f in caps]
    return grid


def measure(
    clips: Sequence[Clip],
    setting: Setting,
    segment: Segment,
    *,
    score_every: int = 3,
    base: dict[str, Any] | None = None,
    progress: tqdm | None = None,
) -> tuple[ProfileEntry, float]:
    """One configuration over all clips: its entry (reference "hr") and mIoU against gt (NaN
    where no scored frame has ground truth)."""
    from cloudseg.media.stream import FrameCompressor, StreamDecoder, default_compressor_settings
    from cloudseg.metrics import ConfusionMatrix

    knobs = {"scale": setting.scale, "crf": setting.crf, "bitrate_kbps": 0, "maxrate_kbps": 0}
    settings = default_compressor_settings(**{**(base or {}), **knobs})
    hr, gt = ConfusionMatrix(), ConfusionMatrix()
    total_bytes, seconds, decode_ms, seg_ms = 0, 0.0, [], []
    for clip in clips:
        n = len(clip.frames)
        sent = sent_frames(n, clip.fps, setting.max_fps)
        holder = held(n, sent)
        scored = list(range(ANNOTATED % score_every, n, score_every))
        needed = {holder[i] for i in scored}
        compressor, decoder = FrameCompressor(settings), StreamDecoder()
        labels: dict[int, np.ndarray] = {}
        for seq, i in enumerate(sent):
            c = compressor.compress(clip.frames[i])
            total_bytes += len(c.payload)
            lr, ms = decoder.decode(c.payload, c.codec, seq, c.scale, c.width, c.height)
            if lr is None:
                raise ValueError(f"{clip.name}: frame {i} was not decodable in a loss-free stream")
            decode_ms.append(ms)
            if i in needed:
                t0 = time.perf_counter()
                labels[i] = segment(lr, setting.scale, setting.sr)
                seg_ms.append((time.perf_counter() - t0) * 1e3)
            if progress is not None:
                progress.update(1)
        seconds += n / clip.fps
        for i in scored:
            hr.update(labels[holder[i]], clip.labels[i])
            if i in clip.gt:
                gt.update(labels[holder[i]], clip.gt[i])
    entry = setting.entry(
        kbps=total_bytes * 8 / seconds / 1000,
        miou=hr.miou(),
        cloud_ms=float(np.mean(decode_ms) + np.mean(seg_ms)),
        reference="hr",
    )
    return entry, (gt.miou() if gt.total else math.nan)


def pipeline_segment(backend: str = "espnetv2") -> Segment:
    """The cloud's restoration + segmentation on the CPU, one pipeline per (scale, SR); SR only
    at the scales CARN-M has heads for (2, 3, 4), bilinear elsewhere, as the cloud does."""
    import torch

    from cloudseg.models.registry import get_spec
    from cloudseg.restore.pipeline import RestorationPipeline

    spec = get_spec("carn_m")
    sr_scales = spec.weights[spec.default_weights].meta["scales"]
    pipelines: dict[tuple[int, bool], RestorationPipeline] = {}

    def segment(lr: np.ndarray, scale: int, sr: bool) -> np.ndarray:
        sr = sr and scale in sr_scales  # as the cloud: bilinear where SR has no head
        if (scale, sr) not in pipelines:
            model = "carn_m" if sr else None
            pipelines[scale, sr] = RestorationPipeline(model, backend, device="cpu", scale=scale)
        mode = "full" if scale == 1 else ("sr" if sr else "bilinear")
        with torch.inference_mode():
            out = pipelines[scale, sr].process(lr[None], mode).labels[0]
        return out.cpu().numpy().astype(np.uint8)

    return segment


def write_plot(
    entries: Sequence[ProfileEntry], front: Sequence[ProfileEntry], path: Path, title: str
) -> Path:
    """Accuracy against kbit/s (log x): every configuration, the Pareto front as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for sr, marker in ((False, "o"), (True, "^")):
        for cap, colour in ((0.0, "tab:blue"), (None, "tab:orange")):
            pts = [
                e for e in entries if (not e.sr_bypass) == sr and ((e.max_fps == 0) == (cap == 0.0))
            ]
            if pts:
                label = f"{'SR' if sr else 'bilinear'}, {'all frames' if cap == 0 else 'fps cap'}"
                ax.scatter(
                    [e.kbps for e in pts], [e.miou for e in pts], c=colour, marker=marker,
                    label=label, alpha=0.7,
                )  # fmt: skip
    ax.plot([e.kbps for e in front], [e.miou for e in front], "k--", lw=1, label="Pareto front")
    for e in front:
        text = f"x{e.scale} crf{e.crf}" + (f" {e.max_fps:g}fps" if e.max_fps else "")
        text += "" if e.sr_bypass else " SR"
        ax.annotate(text, (e.kbps, e.miou), fontsize=7, xytext=(3, -9), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("kbit/s (17 fps camera)")
    ax.set_ylabel("mIoU vs full-resolution labels")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def format_table(rows: Sequence[tuple[ProfileEntry, float]], front: Sequence[ProfileEntry]) -> str:
    """A markdown table of every configuration; Pareto members marked."""
    lines = [
        "| scale | crf | fps cap | restore | kbit/s | mIoU (hr) | mIoU (gt) | cloud ms | Pareto |",
        "|---:|---:|---:|---|---:|---:|---:|---:|---|",
    ]
    for e, gt in sorted(rows, key=lambda r: r[0].kbps):
        lines.append(
            f"| {e.scale} | {e.crf} | {e.max_fps:g} | {'bilinear' if e.sr_bypass else 'SR'} | "
            f"{e.kbps:.0f} | {e.miou:.3f} | {gt:.3f} | {e.cloud_ms:.0f} | "
            f"{'yes' if e in front else ''} |".replace("nan", "-")
        )
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cloudseg profile",
        description=(
            "Offline profile: scale x CRF x frame-rate cap x SR on/off over real sequences; "
            "kbit/s (through the compressor), mIoU of the labels held at every K-th camera frame "
            "against the segmenter's labels on the original frames (and against Cityscapes "
            "ground truth where it exists) and cloud ms per frame on this machine's CPU. "
            "Writes the Pareto-optimal entries (config/profile.json) and a PNG plot."
        ),
    )
    parser.add_argument("--input", nargs="+", required=True, type=Path, metavar="PATH")
    parser.add_argument("--json", action="store_true", help="also print all entries as JSON")
    parser.add_argument("--out", type=Path, default=Path("config") / PROFILE_FILE)
    parser.add_argument("--plot", type=Path, default=Path("docs/profile.png"), metavar="PNG")
    parser.add_argument("--frames", type=int, default=30, metavar="N", help="frames per input")
    parser.add_argument("--scales", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--crfs", type=int, nargs="+", default=[20, 25, 30])
    parser.add_argument("--max-fps", type=float, nargs="+", default=[0.0, 8.5])
    parser.add_argument(
        "--sr-scales", type=int, nargs="*", default=[4], help="scales also run with SR"
    )
    parser.add_argument("--sr-crfs", type=int, nargs="*", default=[25], help="CRFs run with SR")
    parser.add_argument("--score-every", type=int, default=3, metavar="K")
    parser.add_argument("--gt", type=Path, default=DEFAULT_GT, help="Cityscapes root (gtFine)")
    parser.add_argument("--backend", default="espnetv2")
    parser.add_argument("--preset", help="libx264 preset (default: the compressor's)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the profile; 0 on success, 2 on bad arguments or unreadable input."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.frames < 1 or args.score_every < 1 or min(args.scales) < 1:
        parser.error("--frames, --score-every and --scales must be >= 1")
    for path in args.input:
        if not path.exists():
            parser.error(f"input {path} does not exist")
    from cloudseg.data.frames import DataError
    from cloudseg.media.codecs import CodecError
    from cloudseg.selection.reference import load_labelled_sequence

    try:
        clips = []
        for path in args.input:
            seq = load_labelled_sequence(path, args.backend, "cpu")
            frames, labels = seq.frames[: args.frames], seq.labels[: args.frames]
            size = (labels[0].shape[1], labels[0].shape[0])
            gt = gt_labels(path, len(frames), size, args.gt) if args.gt.is_dir() else {}
            clips.append(Clip(seq.name, frames, seq.fps, labels, gt))
        grid = settings_grid(args.scales, args.crfs, args.max_fps, args.sr_scales, args.sr_crfs)
        segment = pipeline_segment(args.backend)
        base = {"preset": args.preset} if args.preset else {}
        total = sum(len(sent_frames(len(c.frames), c.fps, s.max_fps)) for s in grid for c in clips)
        rows = []
        with tqdm(total=total, desc="profile", unit="frame", file=sys.stderr) as progress:
            for setting in grid:
                progress.set_postfix_str(f"x{setting.scale} crf{setting.crf} {setting.max_fps:g}")
                rows.append(measure(clips, setting, segment, score_every=args.score_every,
                                    base=base, progress=progress))  # fmt: skip
    except (DataError, CodecError, ValueError, OSError) as exc:
        print(f"cloudseg profile: error: {exc}", file=sys.stderr)
        return 2
    entries = [e for e, _ in rows]
    front = pareto_front(entries)
    from cloudseg.media.stream import default_compressor_settings

    meta = {
        "inputs": [c.name for c in clips],
        "frames": sum(len(c.frames) for c in clips),
        "score_every": args.score_every,
        "reference": "hr: the segmenter's labels on the original full-resolution frames",
        "held_labels": "frames skipped by the fps cap hold the last sent frame's labels",
        "compressor": default_compressor_settings(**base, maxrate_kbps=0).as_dict(),
        "cloud": f"{args.backend} at its trained resolution, CPU (no GPU), decode + restore + seg",
        "gt_miou": {e.describe(): gt for e, gt in rows if math.isfinite(gt)},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_profile(args.out, front, meta)
    load_profile(args.out)  # check it reads back
    title = f"cloudseg profile: {', '.join(meta['inputs'])} ({meta['frames']} frames)"
    write_plot(entries, front, args.plot, title)
    print(format_table(rows, front))
    print(f"Pareto front ({len(front)} of {len(entries)}) -> {args.out}; plot {args.plot}")
    if args.json:
        print(json.dumps({"entries": [dict(asdict(e), gt_miou=g) for e, g in rows]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
