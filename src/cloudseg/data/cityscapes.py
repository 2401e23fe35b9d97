"""The Cityscapes layout: image/label pairs, label ids -> train ids, the train-id colours.

Label tables come from cityscapesScripts (``cityscapesscripts.helpers.labels``), the single
source of truth for ids, train ids and colours in this project; it is imported when a table is
first used, so that the modules importing this one run on a host without it.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from cloudseg.data.folder import read_rgb
from cloudseg.data.frames import DataError

log = logging.getLogger(__name__)

NUM_CLASSES = 19
IGNORE_ID = 255

IMAGE_SUFFIX = "_leftImg8bit.png"
TRAIN_IDS_SUFFIX = "_gtFine_labelTrainIds.png"
LABEL_IDS_SUFFIX = "_gtFine_labelIds.png"


_VALID_TRAIN_ID = np.zeros(256, bool)
_VALID_TRAIN_ID[:NUM_CLASSES] = True
_VALID_TRAIN_ID[IGNORE_ID] = True


@functools.cache
def _tables() -> dict[str, Any]:
    """The label tables, built on first use: cityscapesScripts is imported only then (this
    module, and so training and inference, import without it)."""
    from cityscapesscripts.helpers.labels import id2label, trainId2label

    label_lut = np.full(256, IGNORE_ID, np.uint8)
    for label_id, label in id2label.items():
        if 0 <= label_id < 256 and 0 <= label.trainId < NUM_CLASSES:
            label_lut[label_id] = label.trainId
    colors = np.array([trainId2label[i].color for i in range(NUM_CLASSES)], dtype=np.uint8)
    palette = np.zeros((256, 3), np.uint8)
    palette[:NUM_CLASSES] = colors
    palette[IGNORE_ID] = trainId2label[IGNORE_ID].color  # 'unlabeled': black
    return {
        # (256,) uint8: Cityscapes label id -> train id (0..18; 255 for ignored and unknown ids)
        "LABEL_ID_TO_TRAIN_ID": label_lut,
        # (19, 3) uint8 RGB colour of each train id (road, sidewalk, ..., bicycle)
        "TRAIN_ID_COLORS": colors,
        # class name of each train id
        "TRAIN_ID_NAMES": tuple(trainId2label[i].name for i in range(NUM_CLASSES)),
        # (256, 3) uint8 RGB of every mono8 label value: the Cityscapes colours of train ids
        # 0..18, black for 255 (cityscapes' 'unlabeled') and every other value. The one palette.
        "TRAIN_ID_PALETTE": palette,
    }


_LAZY_TABLES = ("LABEL_ID_TO_TRAIN_ID", "TRAIN_ID_COLORS", "TRAIN_ID_NAMES", "TRAIN_ID_PALETTE")


def __getattr__(name: str) -> Any:
    """``LABEL_ID_TO_TRAIN_ID``, ``TRAIN_ID_COLORS``, ``TRAIN_ID_NAMES``, ``TRAIN_ID_PALETTE``:
    built on first use."""
    if name not in _LAZY_TABLES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return _tables()[name]


@dataclass(frozen=True)
class CityscapesPair:
    """A frame and its fine label: ``name`` like ``frankfurt_000000_000576``."""

    name: str
    image_path: Path
    label_path: Path


def list_pairs(root: str | Path, split: str = "val") -> list[CityscapesPair]:
    """Image/label pairs of ``split`` under a Cityscapes ``root``, sorted by name.

    Images are ``leftImg8bit/{split}/{city}/*_leftImg8bit.png``; each one's label is
    ``gtFine/{split}/{city}/*_gtFine_labelTrainIds.png`` or else ``*_gtFine_labelIds.png``
    (converted by :func:`load_label_train_ids`). Images without a label are skipped with a
    warning. Missing folders, or a split without any labelled image, raise DataError.
    """
    root = Path(root)
    image_dir = root / "leftImg8bit" / split
    label_dir = root / "gtFine" / split
    for folder in (image_dir, label_dir):
        if not folder.is_dir():
            raise DataError(f"Cityscapes folder {folder} is missing")
    images = sorted(image_dir.glob(f"*/*{IMAGE_SUFFIX}"))
    if not images:
        raise DataError(f"no *{IMAGE_SUFFIX} images under {image_dir}/<city>/")
    pairs = []
    for image in images:
        name = image.name[: -len(IMAGE_SUFFIX)]
        city = image.parent.name
        for suffix in (TRAIN_IDS_SUFFIX, LABEL_IDS_SUFFIX):
            label = label_dir / city / f"{name}{suffix}"
            if label.is_file():
                pairs.append(CityscapesPair(name, image, label))
                break
        else:
            log.warning(
                "skipping %s: no %s or %s in %s",
                image.name,
                TRAIN_IDS_SUFFIX,
                LABEL_IDS_SUFFIX,
                label_dir / city,
            )
    if not pairs:
        raise DataError(f"none of the {len(images)} images under {image_dir} has a label")
    return sorted(pairs, key=lambda p: p.name)


def load_label_train_ids(path: str | Path) -> np.ndarray:
    """A label PNG as HxW uint8 train ids (0..18, 255 = ignore).

    ``*_labelIds.png`` is converted with cityscapesScripts' id -> trainId table; any other
    single-channel 8-bit PNG (``*_labelTrainIds.png``) is read as train ids and checked.
    """
    path = Path(path)
    labels = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if labels is None:
        raise DataError(f"label file {path} is missing or not an image")
    if labels.ndim != 2 or labels.dtype != np.uint8:
        raise DataError(
            f"label file {path} is {labels.dtype} with shape {labels.shape}, "
            "expected a single-channel 8-bit label image"
        )
    if path.name.endswith("_labelIds.png"):
        return _tables()["LABEL_ID_TO_TRAIN_ID"][labels]
    if not _VALID_TRAIN_ID[labels].all():
        bad = sorted(set(np.unique(labels).tolist()) - set(range(NUM_CLASSES)) - {IGNORE_ID})
        raise DataError(
            f"label file {path} holds values {bad[:8]} that are not train ids "
            f"(0..{NUM_CLASSES - 1}, {IGNORE_ID})"
        )
    return labels


def load_rgb(path: str | Path) -> np.ndarray:
    """An image file as HxWx3 uint8 RGB (DataError when missing or unreadable)."""
    rgb = read_rgb(path)
    if rgb is None:
        raise DataError(f"image file {path} is missing or cannot be decoded")
    return rgb


def colorize(train_ids: np.ndarray) -> np.ndarray:
    """HxW train ids -> HxWx3 uint8 RGB in Cityscapes colours; 255 (and anything >18) black."""
    train_ids = np.asarray(train_ids)
    if train_ids.dtype != np.uint8:
        train_ids = np.where((train_ids >= 0) & (train_ids < NUM_CLASSES), train_ids, IGNORE_ID)
        train_ids = train_ids.astype(np.uint8)
    return np.take(_tables()["TRAIN_ID_PALETTE"], train_ids, axis=0)  # 4x faster than [ids]
