"""Data: frame sources (folder, video, rosbag2, synthetic), rosbag2 writing, Cityscapes layout."""

from __future__ import annotations

from cloudseg.data.bag import convert_to_bag, probe_bag, read_bag_frames
from cloudseg.data.cityscapes import (
    TRAIN_ID_COLORS,
    CityscapesPair,
    colorize,
    list_pairs,
    load_label_train_ids,
    load_rgb,
)
from cloudseg.data.sources import (
    DataError,
    FrameSource,
    Pacer,
    SourceFrame,
    iter_bag,
    iter_folder,
    iter_synthetic,
    iter_video,
    open_source,
)

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
