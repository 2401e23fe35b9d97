"""Segmentation training data: the published ICNet augmentation and a resumable sample order.

:class:`SegAugment` is liminn/ICNet-pytorch's ``_sync_transform`` on numpy arrays: random
horizontal flip, random rescale (the short side drawn uniformly from ``base_size`` times 0.5
to 2.0; image bilinear, labels nearest), padding up to the crop (image 0, labels ignore 255),
a random crop, and a Gaussian blur of random radius with probability 0.5 (as in PSPNet).

:class:`SegTrainSet` maps a *global sample number* ``g`` (``step * batch_size + i``) to a
frame and an augmentation: frames are visited in a fresh permutation per epoch, and each
sample's random draws come from its own generator seeded with ``(seed, g)``. Nothing depends
on what ran before, so a resumed run sees exactly the samples an uninterrupted one would, with
any number of loader workers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from cloudseg.data.cityscapes import CityscapesPair, load_label_train_ids, load_rgb
from cloudseg.data.frames import DataError

__all__ = ["SegAugment", "SegTrainSet", "resize_short_side", "sample_rng"]

IGNORE_ID = 255


def resize_short_side(
    image: np.ndarray, short: int, interpolation: int = cv2.INTER_LINEAR
) -> np.ndarray:
    """``image`` resized so that its shorter side is ``short`` pixels (aspect kept, the long
    side rounded down as the reference does)."""
    h, w = image.shape[:2]
    if h > w:
        ow, oh = short, int(h * short / w)
    else:
        oh, ow = short, int(w * short / h)
    if (oh, ow) == (h, w):
        return image
    return cv2.resize(image, (ow, oh), interpolation=interpolation)


def sample_rng(seed: int, index: int) -> np.random.Generator:
    """The random generator of global sample ``index`` of a run seeded with ``seed``."""
    return np.random.default_rng([int(seed) % 2**32, int(index)])


@dataclass(frozen=True)
class SegAugment:
    """Random flip, rescale, pad, crop and blur of an image and its labels (see module doc).

    ``crop`` is (width, height); ``base_size`` the short side at scale 1.0 (1024 = Cityscapes'
    full 2048x1024); ``scale_range`` the factors the short side is drawn between.
    """

    crop: tuple[int, int] = (960, 960)
    base_size: int = 1024
    scale_range: tuple[float, float] = (0.5, 2.0)
    flip: bool = True
    blur_p: float = 0.5
    ignore_index: int = IGNORE_ID
    pad_value: int = 0

    def __post_init__(self) -> None:
        cw, ch = self.crop
        lo, hi = self.scale_range
        if cw < 1 or ch < 1 or self.base_size < 1:
            raise ValueError(f"crop {self.crop} and base_size {self.base_size} must be positive")
        if not 0 < lo <= hi:
            raise ValueError(f"scale_range must be 0 < low <= high, got {self.scale_range}")
        if not 0.0 <= self.blur_p <= 1.0:
            raise ValueError(f"blur_p must be 0..1, got {self.blur_p}")

    def short_side_range(self) -> tuple[int, int]:
        """The inclusive range the rescaled short side is drawn from."""
        lo, hi = self.scale_range
        return max(1, int(self.base_size * lo)), max(1, int(self.base_size * hi))

    def __call__(
        self, image: np.ndarray, label: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """(image HxWx3 uint8, label HxW uint8) -> the augmented crop pair, crop-sized."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise DataError(f"image must be HxWx3 uint8, got {image.dtype} {image.shape}")
        if label.shape != image.shape[:2] or label.dtype != np.uint8:
            raise DataError(
                f"label must be {image.shape[:2]} uint8, got {label.dtype} {label.shape}"
            )
        if self.flip and rng.random() < 0.5:
            image, label = image[:, ::-1], label[:, ::-1]
        lo, hi = self.short_side_range()
        short = int(rng.integers(lo, hi, endpoint=True))
        image = resize_short_side(np.ascontiguousarray(image), short, cv2.INTER_LINEAR)
        label = resize_short_side(np.ascontiguousarray(label), short, cv2.INTER_NEAREST)
        cw, ch = self.crop
        h, w = label.shape
        pad_h, pad_w = max(0, ch - h), max(0, cw - w)
        if pad_h or pad_w:
            image = cv2.copyMakeBorder(
                image, 0, pad_h, 0, pad_w, cv2.BORDER_CONSTANT, value=(self.pad_value,) * 3
            )
            label = cv2.copyMakeBorder(
                label, 0, pad_h, 0, pad_w, cv2.BORDER_CONSTANT, value=self.ignore_index
            )
            h, w = label.shape
        x = int(rng.integers(0, w - cw, endpoint=True))
        y = int(rng.integers(0, h - ch, endpoint=True))
        image = image[y : y + ch, x : x + cw]
        label = label[y : y + ch, x : x + cw]
        if self.blur_p and rng.random() < self.blur_p:
            sigma = float(rng.random())  # PIL GaussianBlur(radius=random()), radius ~ sigma
            if sigma > 0:
                image = cv2.GaussianBlur(np.ascontiguousarray(image), (0, 0), sigma)
        return np.ascontiguousarray(image), np.ascontiguousarray(label)

    def describe(self) -> dict[str, object]:
        """The augmentation as JSON-ready settings (for the model card)."""
        return {
            "flip": "horizontal, p=0.5" if self.flip else "none",
            "rescale": f"short side uniform in {list(self.short_side_range())} px "
            f"({self.scale_range[0]:g}..{self.scale_range[1]:g} x base_size {self.base_size}); "
            "image bilinear, labels nearest",
            "pad": f"to the crop: image {self.pad_value}, labels {self.ignore_index} (ignored)",
            "crop": f"random {self.crop[0]}x{self.crop[1]}",
            "blur": f"Gaussian, sigma uniform 0..1, p={self.blur_p:g}",
        }


class SegTrainSet(Dataset):
    """Augmented (image, label) crops of labelled frames, indexed by global sample number.

    Item ``g`` is frame ``permutation(epoch)[g % n]`` with ``epoch = g // n``, augmented with
    :func:`sample_rng` ``(seed, g)``. Returns uint8 tensors (crop_h, crop_w, 3) and
    (crop_h, crop_w); normalisation happens on the training device.
    """

    def __init__(self, pairs: Sequence[CityscapesPair], augment: SegAugment, seed: int) -> None:
        if not pairs:
            raise DataError("no training frames")
        self.pairs = list(pairs)
        self.augment = augment
        self.seed = int(seed)
        self._perm_epoch = -1
        self._perm = np.arange(len(self.pairs))

    def __len__(self) -> int:
        return len(self.pairs)

    def frame_index(self, g: int) -> int:
        """Which frame global sample ``g`` uses."""
        epoch, pos = divmod(int(g), len(self.pairs))
        if epoch != self._perm_epoch:
            rng = np.random.default_rng([self.seed % 2**32, epoch, 1])
            self._perm = rng.permutation(len(self.pairs))
            self._perm_epoch = epoch
        return int(self._perm[pos])

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Frame ``index`` as (RGB uint8, train ids uint8), unaugmented."""
        pair = self.pairs[index]
        image = load_rgb(pair.image_path)
        label = load_label_train_ids(pair.label_path)
        if label.shape != image.shape[:2]:
            raise DataError(f"{pair.name}: label {label.shape} and image {image.shape[:2]} differ")
        return image, label

    def __getitem__(self, g: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, label = self.load(self.frame_index(g))
        image, label = self.augment(image, label, sample_rng(self.seed, g))
        return torch.from_numpy(image), torch.from_numpy(label)
