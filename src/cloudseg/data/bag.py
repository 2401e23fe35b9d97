"""rosbag2 files without a ROS install (rosbags): image messages <-> numpy, bag writing.

Reading follows cv_bridge's conventions: ``step`` (row padding) is honoured and
``is_bigendian`` is irrelevant for 8-bit encodings. The one place that deserialises image
messages is :func:`read_bag_frames`; :func:`iter_bag` yields them as SourceFrames.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import cv2
import numpy as np
from rosbags.interfaces import (
    Qos,
    QosDurability,
    QosHistory,
    QosLiveliness,
    QosReliability,
    QosTime,
)
from rosbags.rosbag2 import Reader, ReaderError
from rosbags.serde import SerdeError
from rosbags.typesys import Stores, get_typestore
from rosbags.typesys.store import Typestore

from cloudseg.data.frames import DataError, SourceFrame, one_line
from cloudseg.graph import BAG_IMAGE_TOPIC
from cloudseg.media import image as media_image

log = logging.getLogger(__name__)

IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_TYPE = "sensor_msgs/msg/CompressedImage"
IMAGE_TYPES = (IMAGE_TYPE, COMPRESSED_TYPE)

# Encodings read as RGB: channels and the OpenCV conversion to RGB (None: already RGB).
# RMW_DURATION_INFINITE, as a live publisher's offered profile reports it in a recording.
_INFINITE = QosTime(9223372036, 854775807)


def image_qos(depth: int = 10) -> Qos:
    """The offered QoS recorded for the camera topic: reliable, volatile, keep-last ``depth``.

    ``ros2 bag play`` offers the first recorded profile (with its default history), so this is
    what subscribers of the replayed topic see; reliable+volatile matches both reliable and
    best-effort subscriptions.
    """
    return Qos(
        QosHistory.KEEP_LAST,
        depth,
        QosReliability.RELIABLE,
        QosDurability.VOLATILE,
        _INFINITE,
        _INFINITE,
        QosLiveliness.AUTOMATIC,
        _INFINITE,
        avoid_ros_namespace_conventions=False,
    )


@cache
def typestore() -> Typestore:
    """The rosbags typestore (ROS 2 Kilted definitions) used for every (de)serialisation here."""
    return get_typestore(Stores.ROS2_KILTED)


# --------------------------------------------------------------------------- message <-> numpy


def image_to_rgb(msg: object) -> np.ndarray:
    """A sensor_msgs/Image (rosbags object) as HxWx3 uint8 RGB; DataError when malformed."""
    try:
        return media_image.image_to_rgb(msg)
    except media_image.ImageError as exc:
        raise DataError(str(exc)) from None


def compressed_to_rgb(msg: object) -> np.ndarray:
    """A sensor_msgs/CompressedImage (jpeg/png...) as HxWx3 uint8 RGB; DataError if undecodable."""
    data = np.frombuffer(msg.data, np.uint8) if not isinstance(msg.data, np.ndarray) else msg.data
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if bgr is None:
        raise DataError(f"compressed image ({msg.format!r}, {data.size} bytes) cannot be decoded")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def rgb_to_image(rgb: np.ndarray, stamp_ns: int, frame_id: str = "camera") -> object:
    """An rgb8 sensor_msgs/Image (rosbags object) holding ``rgb`` (HxWx3 uint8) at ``stamp_ns``."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an HxWx3 uint8 RGB array, got {rgb.shape} {rgb.dtype}")
    ts = typestore()
    Image = ts.types[IMAGE_TYPE]
    Header = ts.types["std_msgs/msg/Header"]
    Time = ts.types["builtin_interfaces/msg/Time"]
    sec, nanosec = divmod(int(stamp_ns), 1_000_000_000)
    height, width = rgb.shape[:2]
    return Image(
        header=Header(stamp=Time(sec=sec, nanosec=nanosec), frame_id=frame_id),
        height=height,
        width=width,
        encoding="rgb8",
        is_bigendian=0,
        step=width * 3,
        data=np.ascontiguousarray(rgb).reshape(-1),
    )


def _header_stamp_ns(msg: object) -> int:
    stamp = msg.header.stamp
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class BagTopic:
    """One image topic of a bag: type, message count and rate (from the bag's log times)."""

    path: Path
    storage: str
    topic: str
    msgtype: str
    count: int
    fps: float | None


def _storage_name(path: Path) -> str:
    if path.is_dir():
        for suffix, name in ((".mcap", "mcap"), (".db3", "sqlite3")):
            if any(path.glob(f"*{suffix}*")):
                return name
        return "unknown storage"
    return {".mcap": "mcap", ".db3": "sqlite3"}.get(path.suffix.lower(), path.suffix)


def _open_reader(path: Path) -> Reader:
    if not path.exists():
        raise DataError(f"rosbag2 {path} does not exist")
    try:
        reader = Reader(path)
        reader.open()
    except (ReaderError, OSError, ValueError, KeyError) as exc:
        raise DataError(f"rosbag2 {path} cannot be read: {one_line(exc)}") from exc
    return reader


def _image_topics(reader: Reader) -> list[tuple[str, str, int]]:
    """(topic, message type, message count) of every image topic, by name."""
    return [
        (name, info.msgtype, sum(c.msgcount for c in info.connections))
        for name, info in sorted(reader.topics.items())
        if info.msgtype in IMAGE_TYPES
    ]


def describe_image_topics(reader: Reader) -> str:
    """The bag's image topics in one line, e.g. for an error message."""
    images = _image_topics(reader)
    if not images:
        others = ", ".join(
            f"{name} ({info.msgtype})" for name, info in sorted(reader.topics.items())
        )
        return f"it has no {IMAGE_TYPE} or {COMPRESSED_TYPE} topic (topics: {others or 'none'})"
    listing = ", ".join(
        f"{name} ({msgtype.rsplit('/', 1)[-1]}, {n} messages)" for name, msgtype, n in images
    )
    return f"its image topics: {listing}"


def _topic_connections(reader: Reader, path: Path, topic: str) -> list:
    topics = reader.topics
    if topic not in topics:
        raise DataError(
            f"rosbag2 {path} has no image topic {topic!r}; {describe_image_topics(reader)}"
        )
    info = topics[topic]
    if info.msgtype not in IMAGE_TYPES:
        raise DataError(
            f"rosbag2 {path}: topic {topic!r} carries {info.msgtype}, not {IMAGE_TYPE} or "
            f"{COMPRESSED_TYPE}; {describe_image_topics(reader)}"
        )
    return info.connections


def bag_image_topics(path: str | Path) -> list[tuple[str, str, int]]:
    """(topic, message type, message count) of every image topic of the bag at ``path``."""
    reader = _open_reader(Path(path))
    try:
        return _image_topics(reader)
    finally:
        reader.close()


def probe_bag(path: str | Path, topic: str = BAG_IMAGE_TOPIC) -> BagTopic:
    """Check that ``path`` is a readable bag with image ``topic``; return what it holds."""
    path = Path(path)
    reader = _open_reader(path)
    try:
        connections = _topic_connections(reader, path, topic)
        count = sum(c.msgcount for c in connections)
        duration = reader.end_time - reader.start_time if reader.message_count else 0
        only_topic = len(reader.connections) == len(connections)
        fps = None
        if count > 1 and duration > 1 and only_topic:
            fps = round((count - 1) * 1e9 / duration, 3)
        return BagTopic(path, _storage_name(path), topic, connections[0].msgtype, count, fps)
    finally:
        reader.close()


def read_bag_frames(
    path: str | Path, topic: str = BAG_IMAGE_TOPIC
) -> Iterator[tuple[int, np.ndarray]]:
    """(header stamp in ns, HxWx3 uint8 RGB) for every image message of ``topic``, in bag order.

    A message whose header stamp is zero falls back to the bag's receive time. A message that
    cannot be decoded is skipped with a warning; a topic none of whose messages decodes, a
    truncated bag or an unsupported encoding raise DataError.
    """
    path = Path(path)
    reader = _open_reader(path)
    ts = typestore()
    decoded = failed = 0
    first_failure = ""  # the reason of the first message that failed: in the error line
    try:
        connections = _topic_connections(reader, path, topic)
        try:
            for connection, log_time, raw in reader.messages(connections=connections):
                try:
                    msg = ts.deserialize_cdr(raw, connection.msgtype)
                except SerdeError as exc:
                    failed += 1
                    first_failure = first_failure or one_line(exc)
                    log.warning(
                        "%s: skipping undecodable %s message: %s", path, topic, one_line(exc)
                    )
                    continue
                if connection.msgtype == IMAGE_TYPE:
                    if msg.encoding not in media_image.ENCODINGS:
                        raise DataError(
                            f"rosbag2 {path}, topic {topic}: unsupported image encoding "
                            f"{msg.encoding!r} (supported: {', '.join(media_image.ENCODINGS)})"
                        )
                    convert = image_to_rgb
                else:
                    convert = compressed_to_rgb
                try:
                    rgb = convert(msg)
                except DataError as exc:
                    failed += 1
                    first_failure = first_failure or one_line(exc)
                    log.warning("%s: skipping %s message: %s", path, topic, exc)
                    continue
                stamp = _header_stamp_ns(msg) or log_time
                decoded += 1
                yield stamp, rgb
        except (ReaderError, OSError, ValueError, KeyError) as exc:
            raise DataError(
                f"rosbag2 {path} broke off after {decoded} messages: {one_line(exc)}"
            ) from exc
        if decoded == 0:
            raise DataError(
                f"rosbag2 {path}: topic {topic} has no readable image "
                f"({failed} messages failed to decode"
                + (f"; the first: {first_failure})" if first_failure else ")")
            )
    finally:
        reader.close()


BAG_SUFFIXES = frozenset({".mcap", ".db3"})


def iter_bag(path: str | Path, topic: str = BAG_IMAGE_TOPIC) -> Iterator[SourceFrame]:
    """Frames of one image topic of a rosbag2 (folder, .mcap or .db3), stamped by their header.

    sensor_msgs/Image (rgb8, bgr8, mono8, rgba8, bgra8) and sensor_msgs/CompressedImage are
    converted to RGB. A missing topic raises DataError listing the topics the bag has.
    """
    for index, (stamp_ns, rgb) in enumerate(read_bag_frames(path, topic)):
        yield SourceFrame(stamp_ns, rgb, index)


def is_bag(path: str | Path) -> bool:
    """True for a rosbag2 folder (holds metadata.yaml) or a .mcap/.db3 storage file."""
    path = Path(path)
    if path.is_dir():
        return (path / "metadata.yaml").is_file()
    return path.suffix.lower() in BAG_SUFFIXES
