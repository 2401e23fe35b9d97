"""Training data for SR: frames, degraded exactly as serving degrades them, and random crops.

Frames come from Cityscapes-layout folders (with fine labels), frame folders, videos and
rosbag2 files (:func:`cloudseg.data.sources.open_source`). Each input is one camera stream:
its frames go, in order, through :class:`cloudseg.media.stream.StreamRoundTrip` (the
compressor's downsampling and encoder, then the cloud's decoder), once per sampled encoder
setting, so the LR inputs carry the real IDR and P-frame artifacts of the stream. The unrelated
stills of a Cityscapes split are each a stream of their own (an IDR).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from cloudseg.data.frames import DataError
from cloudseg.media.resize import downsample, resize_labels
from cloudseg.media.stream import CompressorSettings, StreamRoundTrip
from cloudseg.train.checkpoint import TrainError
from cloudseg.train.segmenter import RgbSegmenter, segmenter_labels

__all__ = [
    "CropBatch",
    "DegradedFrames",
    "TrainFrame",
    "label_targets",
    "load_streams",
    "sample_crops",
]

log = logging.getLogger(__name__)


@dataclass
class TrainFrame:
    """One camera frame: its name, RGB pixels (HxWx3 uint8) and train-id labels if any."""

    name: str
    rgb: np.ndarray
    label: np.ndarray | None = None


def _is_cityscapes_root(path: Path) -> bool:
    return (path / "leftImg8bit").is_dir() and (path / "gtFine").is_dir()


def load_streams(
    inputs: Sequence[str | Path],
    *,
    split: str = "train",
    max_frames: int = 0,
    every: int = 1,
) -> list[list[TrainFrame]]:
    """Streams of frames from ``inputs``: a Cityscapes root (its ``split``, labelled, one stream
    per still), or anything the source node plays (one stream; ``every``-th frame of it, at most
    ``max_frames``, 0 = all). Raises DataError for a missing or empty input."""
    from cloudseg.data.cityscapes import list_pairs, load_label_train_ids, load_rgb
    from cloudseg.data.sources import open_source  # lazy: bags need rosbags, videos PyAV

    if every < 1:
        raise DataError(f"every must be >= 1, got {every}")
    streams: list[list[TrainFrame]] = []
    for raw in inputs:
        path = Path(raw).expanduser()
        if not path.exists():
            raise DataError(f"training input {path} does not exist")
        if _is_cityscapes_root(path):
            if split == "val":
                log.warning("training on the val split: its scores then say nothing")
            pairs = list_pairs(path, split)
            for pair in pairs[: max_frames or None]:
                streams.append(
                    [
                        TrainFrame(
                            pair.name,
                            load_rgb(pair.image_path),
                            load_label_train_ids(pair.label_path),
                        )
                    ]
                )
            continue
        frames = []
        for frame in open_source(path):
            if frame.index % every:
                continue
            frames.append(TrainFrame(f"{path.name}#{frame.index}", frame.rgb))
            if max_frames and len(frames) >= max_frames:
                break
        if not frames:
            raise DataError(f"training input {path} has no frames")
        streams.append(frames)
    if not streams:
        raise DataError("no training inputs")
    return streams


@dataclass
class DegradedFrames:
    """Frames with their LR versions through the real stream, one per encoder setting, and
    targets at the sizes the training needs (``targets[factor]``: the frame area-downsampled by
    ``factor``; ``labels``: per frame train ids at the segmentation size or None)."""

    frames: list[TrainFrame]
    lr: list[list[np.ndarray]]  # [frame][setting]
    targets: dict[int, list[np.ndarray]] = field(default_factory=dict)
    labels: list[np.ndarray | None] = field(default_factory=list)
    settings: list[CompressorSettings] = field(default_factory=list)
    kbps: list[float] = field(default_factory=list)  # per setting

    @classmethod
    def build(
        cls,
        streams: Sequence[Sequence[TrainFrame]],
        settings: Sequence[CompressorSettings],
        target_factors: Sequence[int] = (1,),
        progress: bool = True,
    ) -> DegradedFrames:
        """Send every stream through the real round trip once per setting."""
        frames = [f for stream in streams for f in stream]
        lr: list[list[np.ndarray]] = [[] for _ in frames]
        kbps = []
        total = len(frames) * len(settings)
        bar = tqdm(total=total, desc="degrade", unit="frame", file=sys.stderr, disable=not progress)
        for setting in settings:
            roundtrip = StreamRoundTrip(setting)
            i = 0
            for stream in streams:
                roundtrip.restart()  # each stream starts with an IDR
                for frame in stream:
                    lr[i].append(roundtrip(frame.rgb))
                    i += 1
                    bar.update()
            kbps.append(roundtrip.kbps() or 0.0)
        bar.close()
        scale = settings[0].scale
        if any(s.scale != scale for s in settings):
            raise ValueError("all settings must share one downsampling scale")
        out = cls(frames, lr, settings=list(settings), kbps=kbps)
        for factor in target_factors:
            out.targets[factor] = [
                _crop_to(downsample(f.rgb, factor), lr[i][0], scale // factor)
                for i, f in enumerate(frames)
            ]
        return out

    @property
    def scale(self) -> int:
        return self.settings[0].scale


def _crop_to(image: np.ndarray, lr: np.ndarray, factor: int) -> np.ndarray:
    """``image`` cropped to exactly ``factor`` times the LR size (the encoder drops odd rows)."""
    return np.ascontiguousarray(image[: lr.shape[0] * factor, : lr.shape[1] * factor])


@dataclass
class CropBatch:
    """A batch of aligned crops: LR input and the targets (float NCHW in [0, 1]), labels."""

    lr: torch.Tensor
    targets: dict[int, torch.Tensor]
    labels: torch.Tensor | None  # (N, h, w) long train ids at the segmentation size


def _to_tensor(images: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div_(255.0)


def _cut(image: np.ndarray, box: tuple[int, int, int, int, bool], r: int) -> np.ndarray:
    """The crop ``box`` = (x, y, width, height, flip) in LR pixels, of an image ``r`` times the
    LR size."""
    x, y, cw, ch, flip = box
    crop = image[y * r : (y + ch) * r, x * r : (x + cw) * r]
    return np.ascontiguousarray(crop[:, ::-1] if flip else crop)


def sample_crops(
    data: DegradedFrames,
    batch_size: int,
    lr_crop: tuple[int, int],
    rng: np.random.Generator | None = None,
    label_factor: int | None = None,
    frame_weights: np.ndarray | None = None,
) -> CropBatch:
    """Random aligned crops (``lr_crop`` = (width, height) in LR pixels) with horizontal
    flips: the LR input of a random frame and encoder setting, and its targets. Labels (when
    ``label_factor`` is given) are cropped from ``data.labels`` at ``data.scale //
    label_factor`` times the LR size; frames without labels are then not sampled."""
    rng = rng or np.random.default_rng(int(np.random.randint(2**31)))
    cw, ch = lr_crop
    weights = frame_weights
    if label_factor is not None:
        has = np.array([lab is not None for lab in data.labels], float)
        if not has.any():
            raise DataError("no training frame has labels for these targets")
        weights = has if weights is None else weights * has
    p = None if weights is None else weights / weights.sum()
    lrs, labels = [], []
    targets: dict[int, list[np.ndarray]] = {f: [] for f in data.targets}
    for _ in range(batch_size):
        i = int(rng.choice(len(data.frames), p=p))
        lr = data.lr[i][int(rng.integers(len(data.settings)))]
        h, w = lr.shape[:2]
        if w < cw or h < ch:
            raise DataError(f"LR frame {w}x{h} is smaller than the crop {cw}x{ch}")
        x, y = int(rng.integers(w - cw + 1)), int(rng.integers(h - ch + 1))
        flip = bool(rng.integers(2))

        box = (x, y, cw, ch, flip)
        lrs.append(_cut(lr, box, 1))
        for factor, images in data.targets.items():
            targets[factor].append(_cut(images[i], box, data.scale // factor))
        if label_factor is not None:
            labels.append(_cut(data.labels[i], box, data.scale // label_factor))
    return CropBatch(
        _to_tensor(lrs),
        {f: _to_tensor(v) for f, v in targets.items()},
        torch.from_numpy(np.stack(labels)).long() if labels else None,
    )


def label_targets(
    data: DegradedFrames,
    segmenter: RgbSegmenter,
    targets: str,
    k: int,
    device: torch.device,
) -> list[np.ndarray | None]:
    """Per frame: train ids at the segmentation size (1/k of the camera), or None. ``targets``:
    "gt" (fine labels), "hr" (the segmenter's labels on the original), "both" (gt, else hr)."""
    out: list[np.ndarray | None] = []
    for i, frame in enumerate(data.frames):
        hr = data.targets[k][i]
        if frame.label is not None and targets in ("gt", "both"):
            label = frame.label[: hr.shape[0] * k, : hr.shape[1] * k]
            out.append(resize_labels(label, hr.shape[1::-1]))
        elif targets in ("hr", "both"):
            out.append(segmenter_labels(segmenter, hr, device))
        else:
            out.append(None)
    if all(v is None for v in out):
        raise TrainError(
            f"--targets {targets}: none of the {len(out)} training frames has fine labels "
            f"(give a Cityscapes root with gtFine, or use --targets hr)"
        )
    return out
