"""A folder of frames (Cityscapes sequences or any images), read in natural order."""

from __future__ import annotations

import itertools
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from cloudseg.data.frames import DEFAULT_FPS, DataError, SourceFrame, check_fps, stamp_ns

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".tif", ".tiff", ".webp"})

# <city>_<seq>_<frame>_leftImg8bit.<ext>, as in Cityscapes' leftImg8bit_sequence.
_CITYSCAPES_FRAME = re.compile(
    r"^(?P<city>[A-Za-z]+)_(?P<seq>\d+)_(?P<frame>\d+)_leftImg8bit\.(?:png|jpe?g)$",
    re.IGNORECASE,
)


#: The split a Cityscapes root plays as an input (the split `cloudseg eval --data` scores).
CITYSCAPES_SPLIT = "val"


def is_cityscapes_root(path: str | Path) -> bool:
    """A Cityscapes root (``leftImg8bit/`` in it, ``gtFine/`` beside), as `cloudseg eval
    --data` takes one: every command that reads frames takes it too (`list_frame_files`)."""
    return (Path(path) / "leftImg8bit").is_dir()


def _natural_key(name: str) -> list[object]:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def list_frame_files(path: str | Path) -> list[Path]:
    """The image files of a frame folder, in playback order.

    Files named like Cityscapes' ``<city>_<seq>_<frame>_leftImg8bit.png|jpg`` are ordered by
    (city, sequence, frame number); a folder without such names falls back to all its image
    files in natural name order. A folder without images of its own, such as a Cityscapes
    split (``leftImg8bit/val``), plays the Cityscapes-named frames of its subfolders (the
    cities). A Cityscapes root plays its split `CITYSCAPES_SPLIT` (``leftImg8bit/val``).
    Raises DataError for a missing or empty folder.
    """
    folder = Path(path)
    if not folder.exists():
        raise DataError(f"frame folder {folder} does not exist")
    if not folder.is_dir():
        raise DataError(f"{folder} is not a folder of frames")
    if is_cityscapes_root(folder):
        split = folder / "leftImg8bit" / CITYSCAPES_SPLIT
        if not split.is_dir():
            raise DataError(f"Cityscapes root {folder} has no {CITYSCAPES_SPLIT} split ({split})")
        folder = split
    images = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    if not images:  # a split folder: <split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png
        images = [
            p
            for sub in sorted(folder.iterdir())
            if sub.is_dir()
            for p in sub.iterdir()
            if p.is_file() and _CITYSCAPES_FRAME.match(p.name)
        ]
    named = []
    for p in images:
        if m := _CITYSCAPES_FRAME.match(p.name):
            named.append(((m["city"], int(m["seq"]), int(m["frame"])), p))
    if named:
        if len(named) < len(images):
            log.info(
                "%s: using %d Cityscapes-named frames, ignoring %d other images",
                folder,
                len(named),
                len(images) - len(named),
            )
        return [p for _, p in sorted(named)]
    if not images:
        raise DataError(
            f"frame folder {folder} holds no image files ({', '.join(sorted(IMAGE_SUFFIXES))})"
        )
    return sorted(images, key=lambda p: _natural_key(p.name))


def are_stills(files: list[Path]) -> bool:
    """True for Cityscapes-named frames of which no two in a row are consecutive frames of one
    sequence: the unrelated stills of a split (``leftImg8bit/val``), not a video sequence."""
    keys = []
    for file in files:
        m = _CITYSCAPES_FRAME.match(file.name)
        if m is None:
            return False
        keys.append((m["city"], int(m["seq"]), int(m["frame"])))
    return len(keys) > 1 and not any(
        a[:2] == b[:2] and b[2] == a[2] + 1 for a, b in itertools.pairwise(keys)
    )


def read_rgb(path: str | Path) -> np.ndarray | None:
    """Read an image file as HxWx3 uint8 RGB; None when OpenCV cannot decode it."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        return None
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def iter_folder(path: str | Path, fps: float = DEFAULT_FPS) -> Iterator[SourceFrame]:
    """Frames of a folder, stamped at ``fps`` from 0 by their position in the folder.

    Unreadable files are skipped with a warning (their time slot stays empty); a folder in
    which no file is readable raises DataError.
    """
    fps = check_fps(fps)
    files = list_frame_files(path)
    produced = 0
    for position, file in enumerate(files):
        rgb = read_rgb(file)
        if rgb is None:
            log.warning("skipping unreadable image %s", file)
            continue
        yield SourceFrame(stamp_ns(position, fps), rgb, produced)
        produced += 1
    if produced == 0:
        raise DataError(f"frame folder {path}: none of its {len(files)} image files is readable")
