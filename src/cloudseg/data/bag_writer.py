"""Writing any frame source as an rgb8 image rosbag2 (``cloudseg convert``), through rosbags."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from rosbags.rosbag2 import StoragePlugin, Writer, WriterError
from tqdm import tqdm

from cloudseg.data.bag import IMAGE_TYPE, image_qos, rgb_to_image, typestore
from cloudseg.data.frames import DataError, one_line
from cloudseg.data.sources import open_source
from cloudseg.graph import BAG_IMAGE_TOPIC

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- writing


def convert_to_bag(
    input_path: str | Path | None,
    output_path: str | Path,
    storage: str = "mcap",
    fps: float = 17.0,
    topic: str = BAG_IMAGE_TOPIC,
    frame_id: str = "camera",
    progress: bool = True,
    *,
    limit: int | None = None,
    version: int = 9,
    input_topic: str = BAG_IMAGE_TOPIC,
) -> int:
    """Write the frames of ``input_path`` (anything open_source accepts) as an rgb8 image bag.

    Each frame becomes a ``sensor_msgs/msg/Image`` on ``topic`` whose header stamp and bag
    receive time are the frame's stamp: frame folders and the synthetic clip are stamped at
    ``fps``; videos and bags keep their own stamps. The topic records a reliable, volatile,
    keep-last offered QoS so ``ros2 bag play`` republishes it like a live camera. ``output_path``
    is the bag folder; an existing one is never overwritten. When the input is a bag, its
    image topic ``input_topic`` is read (any encoding the reader converts, or compressed).
    Returns the number of frames.
    """
    plugins = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
    if storage not in plugins:
        raise ValueError(f"storage must be 'mcap' or 'sqlite3', got {storage!r}")
    output = Path(output_path)
    if output.exists():
        raise DataError(f"output {output} exists already; not overwriting it")
    source = open_source(
        None if input_path is None else Path(input_path), fps=fps, limit=limit, topic=input_topic
    )
    ts = typestore()
    try:
        writer = Writer(output, version=version, storage_plugin=plugins[storage])
        writer.open()
    except WriterError as exc:
        raise DataError(f"cannot create bag {output}: {one_line(exc)}") from exc
    count = 0
    try:
        connection = writer.add_connection(
            topic, IMAGE_TYPE, typestore=ts, offered_qos_profiles=[image_qos()]
        )
        bar = tqdm(
            source,
            total=source.length,
            unit="frame",
            disable=not progress,
            desc=f"-> {output.name}",
        )
        for frame in bar:
            msg = rgb_to_image(frame.rgb, frame.stamp_ns, frame_id)
            writer.write(connection, frame.stamp_ns, ts.serialize_cdr(msg, IMAGE_TYPE))
            count += 1
        bar.close()
        writer.close()
    except BaseException:
        # The folder did not exist before: remove the partial bag instead of leaving it behind.
        writer.abort()
        shutil.rmtree(output, ignore_errors=True)
        raise
    if count == 0:
        shutil.rmtree(output, ignore_errors=True)
        raise DataError(f"input {input_path} yielded no frame; no bag written")
    log.info("wrote %d frames to %s (%s)", count, output, storage)
    return count
