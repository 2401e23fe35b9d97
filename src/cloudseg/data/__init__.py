"""Data: frame sources (one module each: folder, video, bag, synthetic; `sources` opens any
of them), rosbag2 writing (bag_writer), the Cityscapes layout.

The names below are imported from their module on first use: importing one module of this
package (e.g. `cloudseg.data.frames` in training) does not need rosbags, mcap, PyAV or
cityscapesScripts, which only the modules using them import.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

_MODULE_OF = {
    "iter_bag": "bag",
    "probe_bag": "bag",
    "read_bag_frames": "bag",
    "convert_to_bag": "bag_writer",
    "TRAIN_ID_COLORS": "cityscapes",
    "CityscapesPair": "cityscapes",
    "colorize": "cityscapes",
    "list_pairs": "cityscapes",
    "load_label_train_ids": "cityscapes",
    "load_rgb": "cityscapes",
    "iter_folder": "folder",
    "DataError": "frames",
    "SourceFrame": "frames",
    "FrameSource": "sources",
    "Pacer": "sources",
    "open_source": "sources",
    "iter_synthetic": "synthetic",
    "iter_video": "video",
}

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


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
