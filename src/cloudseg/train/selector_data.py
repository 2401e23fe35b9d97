"""Training pairs of the learned frame selector: sequences reduced to the network's input, the
changed-label fraction of each pair of frames, and the epochs of samples (pairs of different
frames, synthetic warps, identical pairs) with their batches."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
import torch

from cloudseg.models.selector_net import INPUT_SIZE, prepare
from cloudseg.train.checkpoint import TrainError

__all__ = [
    "IDENTICAL_SHARE",
    "Sample",
    "SequencePairs",
    "changed_fraction",
    "epoch_samples",
    "load_sequence",
    "pair_batch",
    "pair_targets",
]

IDENTICAL_SHARE = 0.05  # identical pairs (target 0) per pair of different frames


def changed_fraction(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of pixels whose label differs between two label maps of one size."""
    if a.shape != b.shape:
        raise ValueError(f"label maps of different sizes: {a.shape} and {b.shape}")
    return float(np.count_nonzero(a != b)) / a.size


def pair_targets(labels: Sequence[np.ndarray], max_gap: int) -> np.ndarray:
    """NxN fractions of changed labels for frames up to ``max_gap`` apart (NaN further)."""
    n = len(labels)
    out = np.full((n, n), np.nan, dtype=np.float32)
    for i in range(n):
        out[i, i] = 0.0
        for j in range(i + 1, min(n, i + max_gap + 1)):
            out[i, j] = out[j, i] = changed_fraction(labels[i], labels[j])
    return out


@dataclass
class SequencePairs:
    """One sequence reduced to the network's input, with the targets of its pairs."""

    name: str
    frames: torch.Tensor  # N x 3 x H x W uint8 at INPUT_SIZE
    large: np.ndarray  # N x 2H x 2W x 3 uint8: what synthetic pairs warp
    labels: list[np.ndarray]  # the backend's labels of each frame
    targets: np.ndarray  # N x N changed-label fractions (NaN beyond max_gap)
    pixel: list[np.ndarray]  # the pixel measure's features of each frame (its baseline)

    def pairs(self, max_gap: int, both_orders: bool = True) -> np.ndarray:
        """(i, j) of frames 1..max_gap apart: K x 2 int array."""
        n = len(self.frames)
        out = [
            (i, j)
            for i in range(n)
            for j in range(n)
            if 0 < abs(i - j) <= max_gap and (both_orders or i < j)
        ]
        return np.array(out, dtype=np.int64).reshape(-1, 2)


def load_sequence(
    path: Path, backend: str, device: str, max_gap: int, limit: int | None, progress: bool
) -> SequencePairs:
    """Read ``path``, the backend's labels on its frames, and the pair targets."""
    from cloudseg.selection.pixel import PixelDeviation
    from cloudseg.selection.reference import load_labelled_sequence

    if not path.exists():
        raise TrainError(f"no such sequence: {path}")
    seq = load_labelled_sequence(path, backend, device, limit, progress=progress)
    if len(seq) < 2:
        raise TrainError(f"{path}: {len(seq)} frame(s); a sequence needs at least 2")
    pixel = PixelDeviation()
    small = np.stack([prepare(rgb) for rgb in seq.frames])
    frames = torch.from_numpy(small).permute(0, 3, 1, 2).contiguous()
    large = (2 * INPUT_SIZE[0], 2 * INPUT_SIZE[1])
    return SequencePairs(
        name=seq.name,
        frames=frames,
        large=np.stack(
            [cv2.resize(rgb, large, interpolation=cv2.INTER_AREA) for rgb in seq.frames]
        ),
        labels=list(seq.labels),
        targets=pair_targets(seq.labels, max_gap),
        pixel=[pixel.features(rgb) for rgb in seq.frames],
    )


class Sample(NamedTuple):
    """One training pair: frames i and j of sequence ``seq``; a synthetic pair is frame i and
    frame i warped by ``warp`` (zoom, shift x and y as fractions of the size, degrees)."""

    seq: int
    i: int
    j: int
    flip: bool
    warp: tuple[float, float, float, float] | None = None


def epoch_samples(
    data: list[SequencePairs], max_gap: int, total: int, synthetic: float, seed: int, epoch: int
) -> list[Sample]:
    """One epoch: ``total`` pairs of different frames (each sequence drawn equally often),
    ``synthetic * total`` warped frames, a few identical pairs; fixed by (seed, epoch), so
    resuming repeats it."""
    rng = np.random.default_rng([seed, epoch])
    pairs = [d.pairs(max_gap) for d in data]
    samples = []
    for s in rng.integers(0, len(data), size=total):
        i, j = pairs[s][rng.integers(len(pairs[s]))]
        samples.append(Sample(int(s), int(i), int(j), bool(rng.random() < 0.5)))
    for k in range(round(total * synthetic) + max(1, round(total * IDENTICAL_SHARE))):
        s = int(rng.integers(len(data)))
        i = int(rng.integers(len(data[s].frames)))
        warp = None
        if k < round(total * synthetic):
            zoom, tx, ty, angle = rng.uniform((1.0, -0.04, -0.015, -1.5), (1.15, 0.04, 0.015, 1.5))
            warp = (float(zoom), float(tx), float(ty), float(angle))
        samples.append(Sample(s, i, i, bool(rng.random() < 0.5), warp))
    order = rng.permutation(len(samples))
    return [samples[k] for k in order]


def _warp(image: np.ndarray, warp: tuple[float, float, float, float], nearest: bool) -> np.ndarray:
    """``image`` zoomed about its centre, rotated and shifted (mirrored at the borders)."""
    h, w = image.shape[:2]
    zoom, tx, ty, angle = warp
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, zoom)
    m[:, 2] += (tx * w, ty * h)
    flags = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
    return cv2.warpAffine(image, m, (w, h), flags=flags, borderMode=cv2.BORDER_REFLECT_101)


def _pair(seq: SequencePairs, sample: Sample) -> tuple[torch.Tensor, torch.Tensor, float]:
    """The two input frames (3 x H x W uint8) of a sample and its target."""
    if sample.warp is None:
        return seq.frames[sample.i], seq.frames[sample.j], float(seq.targets[sample.i, sample.j])
    warped = cv2.resize(_warp(seq.large[sample.i], sample.warp, False), INPUT_SIZE,
                        interpolation=cv2.INTER_AREA)  # fmt: skip
    labels = seq.labels[sample.i]
    target = changed_fraction(labels, _warp(labels, sample.warp, True))
    return seq.frames[sample.i], torch.from_numpy(warped).permute(2, 0, 1), target


def pair_batch(
    data: list[SequencePairs], samples: list[Sample], gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Frames (2B x 3 x H x W float: the B first frames, then the B second ones) and targets."""
    a, b, target = [], [], []
    for sample in samples:
        fa, fb, t = _pair(data[sample.seq], sample)
        if sample.flip:
            fa, fb = fa.flip(-1), fb.flip(-1)
        a.append(fa)
        b.append(fb)
        target.append(t)
    x = torch.stack(a + b).float()
    n = len(samples)
    gain = (0.75 + 0.5 * torch.rand(n, 1, 1, 1, generator=gen)).repeat(2, 1, 1, 1)
    shift = (20.0 * (torch.rand(n, 1, 1, 1, generator=gen) - 0.5)).repeat(2, 1, 1, 1)
    x = (x * gain + shift).clamp_(0, 255)  # the same jitter for both frames of a pair
    return x, torch.tensor(target, dtype=torch.float32)
