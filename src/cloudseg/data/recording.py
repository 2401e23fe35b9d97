"""Recordings as `ros2 bag record -s mcap` writes them, in one `.mcap` file (`cloudseg record`).

The file follows the MCAP `ros2` profile: each schema is the type's full message definition
(`ros2msg`: the type's .msg text, then each type it uses after a line of 80 `=` and
`MSG: pkg/Type`, exactly as rosbag2's MCAP storage builds it from the installed .msg files),
messages are the CDR bytes as they came off the wire, each channel carries the publishers'
QoS (`offered_qos_profiles`) and type hash, and a `rosbag2` metadata record holds the bag
metadata (version 9, as Jazzy and Kilted write it). So Foxglove, the `mcap` tools and
`ros2 bag play` open it without this package.

Writer: `mcap.writer.Writer`, the MCAP authors' reference writer (chunked, indexed, a summary
with statistics; chunks go to disk as they fill), fed the raw CDR bytes. Not
`mcap_ros2.writer.Writer`: it serializes Python objects (no raw bytes) and writes no rosbag2
metadata. Not rosbags' rosbag2 Writer: it writes a bag folder (metadata.yaml beside the .mcap),
not one file Foxglove opens, and embeds definitions regenerated from its own parse rather than
the .msg text rosbag2 embeds.

No rclpy here: the recorder node (`cloudseg.nodes.recorder_node`) subscribes and hands over
bytes; QoS come in as rosbag2's dicts.
"""

from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any, BinaryIO

import yaml
from mcap.writer import CompressionType, Writer

from cloudseg.data.frames import DataError
from cloudseg.graph import (
    CAMERA_LABELS_COLOR_TOPIC,
    CAMERA_LABELS_INFO_TOPIC,
    CAMERA_LABELS_TOPIC,
    FFMPEG_TOPIC,
    FOXGLOVE_TOPIC,
    FRAMES_TOPIC,
    LABEL_INFO_TOPIC,
    LABELS_COLOR_TOPIC,
    LABELS_TOPIC,
    OVERLAY_TOPIC,
    STATS_TOPIC,
    TOPICS,
)

PROFILE = "ros2"
SCHEMA_ENCODING = "ros2msg"
MESSAGE_ENCODING = "cdr"
#: rosbag2 metadata version written (Jazzy, Kilted)
BAG_VERSION = 9
DELIMITER = "=" * 80 + "\n"

#: what a viewer shows: the stream the cloud gets (as Frame and in the viewers' formats), the
#: labels (ids, coloured, class names), the overlay, the cloud's timings and what the vehicle
#: holds; not the full-resolution camera images (megabytes a frame) nor the control topics
DEFAULT_TOPICS: tuple[str, ...] = (
    FRAMES_TOPIC,
    FOXGLOVE_TOPIC,
    FFMPEG_TOPIC,
    LABELS_TOPIC,
    LABELS_COLOR_TOPIC,
    LABEL_INFO_TOPIC,
    OVERLAY_TOPIC,
    STATS_TOPIC,
    CAMERA_LABELS_TOPIC,
    CAMERA_LABELS_COLOR_TOPIC,
    CAMERA_LABELS_INFO_TOPIC,
)

# rosbag2_storage_mcap's message_definition_cache: a type name, and the field types of a .msg
_TYPE_NAME = re.compile(r"^([a-zA-Z][a-zA-Z0-9_]*)/(?:(msg|srv)/)?([a-zA-Z][a-zA-Z0-9_]*)$")
_FIELD_TYPE = re.compile(r"(?:^|\n)\s*([a-zA-Z0-9_/]+)(?:\[[^\]]*\])?\s+")
_PRIMITIVES = frozenset(
    [
        "bool",
        "byte",
        "char",
        "float32",
        "float64",
        "int8",
        "uint8",
        "int16",
        "uint16",
        "int32",
        "uint32",
        "int64",
        "uint64",
        "string",
    ]
)


def parse_topics(names: list[str] | None) -> list[str]:
    """`--topics`: graph topic names (`cloudseg/labels`, a leading `/` allowed), `all`, or
    None for DEFAULT_TOPICS; DataError naming the choices for any other name."""
    if not names:
        return list(DEFAULT_TOPICS)
    if names == ["all"]:
        return list(TOPICS)
    chosen = []
    for name in names:
        topic = name.strip("/")
        if topic not in TOPICS:
            raise DataError(f"--topics: {name!r} is not a graph topic (one of {', '.join(TOPICS)})")
        if topic not in chosen:
            chosen.append(topic)
    return chosen


def interface_prefixes() -> list[Path]:
    """Where installed interface packages live: the ROS workspaces on $AMENT_PREFIX_PATH (a
    ROS install), then this Python's prefix (the pip venv, where setup.sh installs them)."""
    prefixes = [Path(p) for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    return [*prefixes, Path(sys.prefix)]


def _interface_file(type_name: str, suffix: str) -> Path:
    """The installed `share/<pkg>/msg/<Type><suffix>` of `pkg/msg/Type` (or `pkg/Type`)."""
    m = _TYPE_NAME.match(type_name)
    if not m:
        raise DataError(f"message type {type_name!r} is not a pkg/msg/Type name")
    package, kind, name = m[1], m[2] or "msg", m[3]
    for prefix in interface_prefixes():
        path = prefix / "share" / package / kind / f"{name}{suffix}"
        if path.is_file():
            return path
    raise DataError(f"no {name}{suffix} of package {package} installed (share/{package}/{kind})")


def message_definition(type_name: str) -> str:
    """The full `ros2msg` definition of `type_name` as rosbag2 embeds it: the .msg text, then
    each type it depends on (depth first, each once, in sorted order) after a delimiter line
    and `MSG: pkg/Type` (the name as the using .msg spells it)."""
    seen: set[str] = set()

    def text_with_dependencies(name: str, depth: int) -> str:
        if depth <= 0:
            raise DataError(f"message definition of {type_name} nests too deeply")
        text = _interface_file(name, ".msg").read_text()
        package = name.split("/")[0]
        out = text
        for dep in sorted(_dependencies(text, package)):
            if dep not in seen:
                seen.add(dep)
                out += "\n" + DELIMITER + f"MSG: {dep}\n" + text_with_dependencies(dep, depth - 1)
        return out

    return text_with_dependencies(type_name, 50)


def _dependencies(text: str, package: str) -> set[str]:
    """The non-primitive field types of a .msg text (`Header` in package p: `p/Header`)."""
    out = set()
    for found in _FIELD_TYPE.finditer(text):
        name = found[1]
        if name not in _PRIMITIVES:
            out.add(name if "/" in name else f"{package}/{name}")
    return out


def type_hash(type_name: str) -> str:
    """The type's RIHS01 hash from the type description rosidl installed beside the .msg
    (what `ros2 bag record` stores as `topic_type_hash`); '' when there is none."""
    try:
        description = json.loads(_interface_file(type_name, ".json").read_text())
    except (DataError, OSError, ValueError):
        return ""
    full = type_name if "/msg/" in type_name else type_name.replace("/", "/msg/", 1)
    hashes = description.get("type_hashes", [])
    return next((h["hash_string"] for h in hashes if h.get("type_name") == full), "")


def check_output(path: str | Path) -> Path:
    """The recording's path, checked before anything starts: an `.mcap` file that does not
    exist yet, in a folder that exists and can be written. DataError saying what is wrong."""
    path = Path(path)
    if path.suffix != ".mcap":
        raise DataError(f"recording {path}: the file name must end in .mcap")
    if path.exists():
        raise DataError(f"recording {path} exists already; not overwriting it")
    folder = path.parent
    if not folder.is_dir():
        raise DataError(f"recording {path}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise DataError(f"recording {path}: folder {folder} is not writable")
    return path


@dataclass
class RecordedTopic:
    """One channel of a recording."""

    name: str
    type: str
    qos: dict[str, Any]
    channel_id: int
    count: int = 0
    first_ns: int | None = None
    last_ns: int | None = None


class McapRecording:
    """A `.mcap` recording being written; `add_topic`, `write` the CDR bytes, `close` (also
    on Ctrl-C: the summary and the rosbag2 metadata are then written and the file is whole).
    DataError at once when `path` cannot be written."""

    def __init__(self, path: str | Path) -> None:
        self.path = check_output(path)
        self.topics: dict[str, RecordedTopic] = {}
        self._schemas: dict[str, int] = {}
        try:
            self._file: BinaryIO = open(self.path, "xb")  # noqa: SIM115 (closed in close())
        except OSError as exc:
            raise DataError(f"recording {self.path}: {exc.strerror or exc}") from None
        self._writer: Writer | None = Writer(self._file, compression=CompressionType.ZSTD)
        self._writer.start(
            profile=PROFILE, library=f"cloudseg (mcap {version('mcap')}, rosbag2 layout)"
        )

    @property
    def closed(self) -> bool:
        return self._writer is None

    def add_topic(self, name: str, type_name: str, qos: dict[str, Any]) -> None:
        """A channel for topic `name` (fully qualified) of `type_name` (`pkg/msg/Type`)
        offered with `qos` (rosbag2's QoS dict); its type's schema once per type."""
        if self._writer is None or name in self.topics:
            return
        if type_name not in self._schemas:
            self._schemas[type_name] = self._writer.register_schema(
                name=type_name,
                encoding=SCHEMA_ENCODING,
                data=message_definition(type_name).encode(),
            )
        channel_id = self._writer.register_channel(
            topic=name,
            message_encoding=MESSAGE_ENCODING,
            schema_id=self._schemas[type_name],
            metadata={
                "offered_qos_profiles": yaml.safe_dump([qos], sort_keys=False),
                "topic_type_hash": type_hash(type_name),
            },
        )
        self.topics[name] = RecordedTopic(name, type_name, qos, channel_id)

    def write(self, topic: str, data: bytes, log_time_ns: int, publish_time_ns: int = 0) -> None:
        """One message of `topic` (added before): its CDR bytes, received at `log_time_ns`,
        sent at `publish_time_ns` (0: unknown, the receive time is used)."""
        if self._writer is None:
            return
        t = self.topics[topic]
        self._writer.add_message(
            t.channel_id,
            log_time=log_time_ns,
            data=bytes(data),
            publish_time=publish_time_ns or log_time_ns,
            sequence=t.count,
        )
        t.count += 1
        t.first_ns = log_time_ns if t.first_ns is None else min(t.first_ns, log_time_ns)
        t.last_ns = log_time_ns if t.last_ns is None else max(t.last_ns, log_time_ns)

    def bag_metadata(self) -> dict[str, Any]:
        """The rosbag2 bag metadata (as `ros2 bag` writes it into an MCAP file)."""
        firsts = [t.first_ns for t in self.topics.values() if t.first_ns is not None]
        lasts = [t.last_ns for t in self.topics.values() if t.last_ns is not None]
        start = min(firsts, default=0)
        duration = max(lasts, default=0) - start if firsts else 0
        count = sum(t.count for t in self.topics.values())
        return {
            "version": BAG_VERSION,
            "storage_identifier": "mcap",
            "duration": {"nanoseconds": duration},
            "starting_time": {"nanoseconds_since_epoch": start},
            "message_count": count,
            "topics_with_message_count": [
                {
                    "topic_metadata": {
                        "name": t.name,
                        "type": t.type,
                        "serialization_format": MESSAGE_ENCODING,
                        "offered_qos_profiles": [t.qos],
                        "type_description_hash": type_hash(t.type),
                    },
                    "message_count": t.count,
                }
                for t in self.topics.values()
            ],
            "compression_format": "",
            "compression_mode": "",
            "relative_file_paths": [self.path.name],
            "files": [
                {
                    "path": self.path.name,
                    "starting_time": {"nanoseconds_since_epoch": start},
                    "duration": {"nanoseconds": duration},
                    "message_count": count,
                }
            ],
            "custom_data": {},
            "ros_distro": os.environ.get("ROS_DISTRO", "kilted"),
        }

    def close(self) -> None:
        """Write the rosbag2 metadata and the summary, close the file (once; later calls do
        nothing)."""
        writer, self._writer = self._writer, None
        if writer is None:
            return
        try:
            metadata = yaml.safe_dump(self.bag_metadata(), sort_keys=False)
            writer.add_metadata("rosbag2", {"serialized_metadata": metadata})
            writer.finish()
        finally:
            self._file.close()

    def describe(self, missing: list[str] = ()) -> str:
        """What the file holds, for the user: its path, size and per-topic counts; topics
        subscribed to that carried nothing (`missing`) said too."""
        count = sum(t.count for t in self.topics.values())
        size = self.path.stat().st_size if self.path.exists() else 0
        lines = [
            f"recording {self.path}: {count} messages on {len(self.topics)} "
            f"topic{'' if len(self.topics) == 1 else 's'}, "
            f"{size / 1e6:.1f} MB (open it in Foxglove, `mcap info`, `ros2 bag play`)"
        ]
        for t in self.topics.values():
            lines.append(f"  {t.name:<40} {t.type:<45} {t.count}")
        if missing:
            lines.append(f"  nothing received on: {', '.join(missing)}")
        return "\n".join(lines)
