"""Training source for low-resolution labelled frames, coded on the fly as the stream codes them.

The layout is ``../shared/data/cityscapes_lr`` (see its README): ``leftImg8bit/<split>/<city>/
<id>_leftImg8bit.png`` at the stream's low resolution (512x256 for a x4 stream of 2048x1024),
``gtFine/<split>/<city>/<id>_gtFine_labelTrainIds.png`` at the camera resolution, and list files
(``train.txt``, ``val.txt``) of ``split/city/id`` lines. There is no full-resolution image: what
is learned from it is the segmentation, not an image loss.

Each sample is what the cloud receives for that frame: the compressor's H.264 encoder at a CRF
drawn around the default, then the cloud's decoder (:class:`~cloudseg.media.stream.
StreamRoundTrip`, at scale 1: the frame is already low resolution). Most of the stream is
P-frames, so with probability ``p_frame`` the frame is coded as the P-frame after a slightly
shifted and scaled copy of itself (the ego-motion of the previous frame); else as an IDR. Every
sample's random draws come from its own generator seeded with ``(seed, sample number)``, so a
resumed run sees exactly the samples an uninterrupted one would.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from cloudseg.data.cityscapes import load_label_train_ids, load_rgb
from cloudseg.data.frames import DataError
from cloudseg.media.resize import resize_labels
from cloudseg.media.stream import StreamRoundTrip, default_compressor_settings

__all__ = [
    "LowResFrame",
    "StreamCodec",
    "StreamSample",
    "is_low_res_root",
    "list_low_res_frames",
    "sample_batch",
]

IGNORE_ID = 255


@dataclass(frozen=True)
class LowResFrame:
    """One low-resolution frame: its id (``split/city/name``), image and label paths."""

    id: str
    image_path: Path
    label_path: Path

    def load(self) -> tuple[np.ndarray, np.ndarray]:
        """(HxWx3 uint8 RGB at low resolution, train ids at the camera resolution)."""
        rgb, label = load_rgb(self.image_path), load_label_train_ids(self.label_path)
        ratio_w, ratio_h = label.shape[1] / rgb.shape[1], label.shape[0] / rgb.shape[0]
        if ratio_w != ratio_h or ratio_w < 1 or ratio_w != int(ratio_w):
            raise DataError(
                f"{self.id}: label {label.shape[1]}x{label.shape[0]} is not a whole multiple of "
                f"the image {rgb.shape[1]}x{rgb.shape[0]}"
            )
        return rgb, label


def is_low_res_root(path: Path) -> bool:
    """A folder in the low-resolution layout (a ``train.txt`` beside Cityscapes folders)."""
    return (path / "train.txt").is_file() and (path / "leftImg8bit").is_dir()


def list_low_res_frames(root: str | Path, list_name: str = "train.txt") -> list[LowResFrame]:
    """The frames a list file of ``root`` names (``split/city/id`` per line), in its order.
    DataError for a missing list, image or label."""
    root = Path(root).expanduser()
    listing = root / list_name
    if not listing.is_file():
        raise DataError(f"{listing} is missing (the layout's list of frames)")
    frames = []
    for line in listing.read_text().splitlines():
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        split, city, name = entry.split("/")
        image = root / "leftImg8bit" / split / city / f"{name}_leftImg8bit.png"
        label = root / "gtFine" / split / city / f"{name}_gtFine_labelTrainIds.png"
        for path in (image, label):
            if not path.is_file():
                raise DataError(f"{listing}: {entry} has no {path.relative_to(root)}")
        frames.append(LowResFrame(entry, image, label))
    if not frames:
        raise DataError(f"{listing} names no frames")
    return frames


@dataclass(frozen=True)
class StreamCodec:
    """How samples are coded: CRFs drawn from ``crfs``, P-frames with probability ``p_frame``
    after a copy shifted by up to ``max_shift`` pixels and scaled by up to ``max_zoom``."""

    crfs: tuple[int, ...] = (21, 23, 25, 27, 29)
    p_frame: float = 0.75
    max_shift: float = 6.0
    max_zoom: float = 0.03
    preset: str | None = None  # None: the compressor's default

    def settings(self, crf: int):
        changes = {"scale": 1, "crf": int(crf)}
        if self.preset is not None:
            changes["preset"] = self.preset
        return default_compressor_settings(**changes)

    def describe(self) -> dict:
        s = self.settings(self.crfs[0])
        return {
            "codec": s.codec,
            "encoder": f"libx264 {s.preset}, gop {s.gop} (the compressor's)",
            "crfs": list(self.crfs),
            "p_frames": f"{self.p_frame:.0%} coded as the P-frame after a copy shifted by up to "
            f"{self.max_shift:g} px and scaled by up to {self.max_zoom:.0%}; the rest as IDRs",
        }

    def code(self, rgb: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, int, bool]:
        """(the decoded frame, its payload bytes, whether it was a P-frame)."""
        crf = int(rng.choice(self.crfs))
        roundtrip = StreamRoundTrip(self.settings(crf))
        p_frame = bool(rng.random() < self.p_frame)
        if p_frame:
            roundtrip(_ego_motion(rgb, rng, self.max_shift, self.max_zoom))
        decoded = roundtrip(rgb)
        return decoded, roundtrip.payload_bytes[-1], p_frame


def _ego_motion(
    rgb: np.ndarray, rng: np.random.Generator, max_shift: float, max_zoom: float
) -> np.ndarray:
    """``rgb`` as the previous frame of a moving camera: scaled about the centre, shifted."""
    h, w = rgb.shape[:2]
    zoom = 1.0 + rng.uniform(-max_zoom, max_zoom)
    dx, dy = rng.uniform(-max_shift, max_shift), rng.uniform(-max_shift, max_shift) / 2
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), 0.0, zoom)
    matrix[:, 2] += (dx, dy)
    return cv2.warpAffine(
        rgb, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT
    )


@dataclass
class StreamSample:
    """A batch: decoded crops (float NCHW [0, 1], the low resolution), labels (N, h, w) long at
    ``label_factor`` times the crop size, payload bytes and P-frame flags."""

    lr: torch.Tensor
    clean: torch.Tensor  # the same crops before coding
    labels: torch.Tensor
    payload_bytes: list[int]
    p_frames: list[bool]


def _to_tensor(images: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div_(255.0)


def sample_batch(
    frames: Sequence[tuple[np.ndarray, np.ndarray]],
    codec: StreamCodec,
    crop: tuple[int, int],
    label_factor: int,
    seed: int,
    first_sample: int,
    batch_size: int,
) -> StreamSample:
    """``batch_size`` samples numbered from ``first_sample``: a frame (a fresh permutation per
    epoch), coded as the stream codes it, a random ``crop`` = (width, height) of it in
    low-resolution pixels, flipped half the time, and its labels at ``label_factor`` times the
    crop size (nearest neighbour from the camera-resolution labels)."""
    cw, ch = crop
    lrs, cleans, labels, sizes, kinds = [], [], [], [], []
    for g in range(first_sample, first_sample + batch_size):
        epoch, index = divmod(g, len(frames))
        order = np.random.default_rng([seed, epoch, 7]).permutation(len(frames))
        rgb, label = frames[int(order[index])]
        rng = np.random.default_rng([seed, g])
        decoded, size, p_frame = codec.code(rgb, rng)
        h, w = decoded.shape[:2]
        if w < cw or h < ch:
            raise DataError(f"frame {w}x{h} is smaller than the crop {cw}x{ch}")
        x, y = int(rng.integers(w - cw + 1)), int(rng.integers(h - ch + 1))
        r = label.shape[1] // rgb.shape[1]
        lab = label[y * r : (y + ch) * r, x * r : (x + cw) * r]
        lab = resize_labels(lab, (cw * label_factor, ch * label_factor))
        img, clean = decoded[y : y + ch, x : x + cw], rgb[y : y + ch, x : x + cw]
        if rng.random() < 0.5:
            img, clean, lab = img[:, ::-1], clean[:, ::-1], lab[:, ::-1]
        lrs.append(np.ascontiguousarray(img))
        cleans.append(np.ascontiguousarray(clean))
        labels.append(np.ascontiguousarray(lab))
        sizes.append(size)
        kinds.append(p_frame)
    return StreamSample(
        _to_tensor(lrs),
        _to_tensor(cleans),
        torch.from_numpy(np.stack(labels)).long(),
        sizes,
        kinds,
    )
