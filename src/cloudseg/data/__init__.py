"""Data: frame sources (one module each: folder, video, bag, synthetic; `sources` opens any
of them), rosbag2 writing (bag_writer), the Cityscapes layout."""

from __future__ import annotations

from cloudseg.data.bag import iter_bag, probe_bag, read_bag_frames
from cloudseg.data.bag_writer import convert_to_bag
from cloudseg.data.cityscapes import (
    TRAIN_ID_COLORS,
    CityscapesPair,
    colorize,
    list_pairs,
    load_label_train_ids,
    load_rgb,
)
from cloudseg.data.folder import iter_folder
from cloudseg.data.frames import DataError, SourceFrame
from cloudseg.data.sources import FrameSource, Pacer, open_source
from cloudseg.data.synthetic import iter_synthetic
from cloudseg.data.video import iter_video

__all__ = [
    "TRAIN_ID_COLORS",
    "CityscapesPair",
    "DataError",
    "FrameSource",
    "Pacer",
    "SourceFrame",
    "colorize",
    "convert_to_bag",
    "iter_bag",
    "iter_folder",
    "iter_synthetic",
    "iter_video",
    "list_pairs",
    "load_label_train_ids",
    "load_rgb",
    "open_source",
    "probe_bag",
    "read_bag_frames",
]
