"""The frames one evaluation streams, in order, and which of them are scored against what."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cloudseg.data.bag import is_bag
from cloudseg.data.cityscapes import list_pairs
from cloudseg.data.folder import is_cityscapes_root
from cloudseg.data.sources import open_source
from cloudseg.eval.config import EvalConfig, EvalError
from cloudseg.train.stream_data import is_low_res_root, list_low_res_frames

__all__ = ["EvalFrame", "eval_frames"]


@dataclass
class EvalFrame:
    """One frame to stream: pixels (or their file), its label file, its stream, and whether
    it is scored (every frame of a stream is encoded; with --gt-root only labelled ones count)."""

    name: str
    image: Any  # np.ndarray or a Path
    label: Path | None
    stream: str
    scored: bool = True


_CITYSCAPES_ID = re.compile(r"^(?P<city>[a-z]+)_(?P<seq>\d{6})_(?P<frame>\d{6})", re.IGNORECASE)


def _gt_label(gt_root: Path, city: str, seq: str, frame: int) -> Path | None:
    """The fine label of a Cityscapes frame id under any split of ``gt_root``/gtFine, if any."""
    for suffix in ("_gtFine_labelTrainIds.png", "_gtFine_labelIds.png"):
        hits = sorted((gt_root / "gtFine").glob(f"*/{city}/{city}_{seq}_{frame:06d}{suffix}"))
        if hits:
            return hits[0]
    return None


def _sequence_frames(path: Path, config: EvalConfig) -> list[EvalFrame]:
    """A sequence in order (one stream). With --gt-root, frames whose Cityscapes id (from the
    file names of a frame folder, or a video named <city>_<seq>_<first frame>) has a fine label
    are scored against it and the others only pass through the stream."""
    from cloudseg.data.folder import list_frame_files

    names: list[str] | None = None
    if path.is_dir() and not is_bag(path):  # a frame folder (a rosbag2 folder is a bag)
        names = [f.name for f in list_frame_files(path)]
    frames = []
    for frame in open_source(path, limit=config.limit or None):
        label = None
        if config.gt_root is not None:
            match = _CITYSCAPES_ID.match(names[frame.index] if names else path.stem)
            if match:
                number = int(match["frame"]) + (0 if names else frame.index)
                label = _gt_label(config.gt_root, match["city"].lower(), match["seq"], number)
        name = f"{path.stem}_{frame.index:06d}"
        scored = config.gt_root is None or label is not None
        frames.append(EvalFrame(name, frame.rgb, label, str(path), scored))
    return frames


def eval_frames(config: EvalConfig) -> tuple[str, list[EvalFrame]]:
    """("gt", the labelled stills of a Cityscapes root, each a stream of its own), or the
    frames of the sequences (each one stream, in order): scored against fine labels with
    --gt-root ("gt"), else against the segmenter's labels on the original frames ("hr")."""
    if any(is_low_res_root(p) for p in config.data):
        if len(config.data) > 1:
            raise EvalError("give one low-resolution root on its own")
        listed = list_low_res_frames(config.data[0], config.low_res_list)[: config.limit or None]
        return "gt", [EvalFrame(f.id, f.image_path, f.label_path, f.id) for f in listed]
    roots = [p for p in config.data if is_cityscapes_root(p)]
    if roots:
        if len(config.data) > 1:
            raise EvalError("give one Cityscapes root, or any number of sequences")
        pairs = list_pairs(roots[0], config.split)[: config.limit or None]
        return "gt", [EvalFrame(p.name, p.image_path, p.label_path, p.name) for p in pairs]
    frames = [f for path in config.data for f in _sequence_frames(path, config)]
    if config.gt_root is not None:
        if not any(f.scored for f in frames):
            raise EvalError(f"--gt-root {config.gt_root}: no frame of the input has a fine label")
        return "gt", frames
    return "hr", frames
