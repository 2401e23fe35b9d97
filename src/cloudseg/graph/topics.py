"""The graph's topics: each name defined once, with its message type and QoS role.

Topic names are relative (`cloudseg/frames`): a node started in a namespace
(`--ros-args -r __ns:=/car1`, `Node(namespace=...)` in a launch file, `cloudseg run vehicle
--namespace car1`) uses `/car1/cloudseg/frames`, and one in the root namespace `/cloudseg/frames`.
Whatever compares them with names from the ROS graph resolves them first (`resolve`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

IMAGE_TOPIC = "camera/image_raw"
#: image_transport base topic of the compressor's low-resolution stream, for viewers: its
#: 'compressed' (JPEG/PNG), 'foxglove' and 'ffmpeg' (H.264) transports are published, each only
#: while someone subscribes
LOWRES_TOPIC = "cloudseg/lowres"
COMPRESSED_TOPIC = f"{LOWRES_TOPIC}/compressed"
FOXGLOVE_TOPIC = f"{LOWRES_TOPIC}/foxglove"
FFMPEG_TOPIC = f"{LOWRES_TOPIC}/ffmpeg"
FRAMES_TOPIC = "cloudseg/frames"
KNOB_TOPIC = "cloudseg/knob"
KEYFRAME_REQUEST_TOPIC = "cloudseg/keyframe_request"
RESTORED_TOPIC = "cloudseg/restored"
RESTORED_INFO_TOPIC = "cloudseg/restored/info"
LABELS_TOPIC = "cloudseg/labels"
LABELS_COLOR_TOPIC = f"{LABELS_TOPIC}/color"
LABEL_INFO_TOPIC = "cloudseg/label_info"
OVERLAY_TOPIC = "cloudseg/overlay"
STATS_TOPIC = "cloudseg/stats"
CAMERA_LABELS_TOPIC = "cloudseg/camera_labels"
CAMERA_LABELS_INFO_TOPIC = "cloudseg/camera_labels/info"
CAMERA_LABELS_COLOR_TOPIC = f"{CAMERA_LABELS_TOPIC}/color"

#: the image topic read from a rosbag2 file by default (bags hold fully qualified names)
BAG_IMAGE_TOPIC = "/" + IMAGE_TOPIC


@dataclass(frozen=True)
class Topic:
    """A topic name with the QoS role it is published with (see `nodes.qos`)."""

    name: str
    type: str
    qos: str  # "frames" | "sensor" | "knob" | "request" | "results" | "latched"
    description: str


TOPICS: dict[str, Topic] = {
    t.name: t
    for t in (
        Topic(IMAGE_TOPIC, "sensor_msgs/msg/Image", "sensor", "camera images (rgb8)"),
        Topic(
            COMPRESSED_TOPIC,
            "sensor_msgs/msg/CompressedImage",
            "sensor",
            "the low-resolution JPEG/PNG stream the cloud gets, for stock viewers: the "
            f"'compressed' image_transport of the base topic {LOWRES_TOPIC} (its own base "
            f"topic: {IMAGE_TOPIC}/compressed would have to carry the camera's image)",
        ),
        Topic(
            FOXGLOVE_TOPIC,
            "foxglove_msgs/msg/CompressedVideo",
            "sensor",
            "the low-resolution H.264 stream the cloud gets, for Foxglove (the 'foxglove' "
            f"transport of {LOWRES_TOPIC}): Annex B, one frame per message; a new subscriber "
            "gets a key frame",
        ),
        Topic(
            FFMPEG_TOPIC,
            "ffmpeg_image_transport_msgs/msg/FFMPEGPacket",
            "sensor",
            "the low-resolution H.264 stream the cloud gets, for image_transport's 'ffmpeg' "
            f"transport of {LOWRES_TOPIC} (RViz, rqt, republish); a new subscriber gets a key "
            "frame",
        ),
        Topic(FRAMES_TOPIC, "cloudseg/msg/Frame", "frames", "encoded frames over the WAN"),
        Topic(KNOB_TOPIC, "cloudseg/msg/Knob", "knob", "the controller's settings"),
        Topic(
            KEYFRAME_REQUEST_TOPIC,
            "cloudseg/msg/KeyframeRequest",
            "request",
            "cloud -> vehicle: make the next frame an H.264 IDR (after a lost or undecodable "
            "frame; at most one every 200 ms while the cloud waits)",
        ),
        Topic(
            RESTORED_TOPIC,
            "sensor_msgs/msg/Image",
            "results",
            "restored images (rgb8): at the size the cloud segments at (cloud, cloud_split), "
            "at the camera size (cloud_bilinear)",
        ),
        Topic(
            RESTORED_INFO_TOPIC,
            "cloudseg/msg/RestoredInfo",
            "results",
            "split cloud: for each restored image, its frame's seq, scale and camera size",
        ),
        Topic(
            LABELS_TOPIC,
            "sensor_msgs/msg/Image",
            "results",
            f"mono8 train ids 0..18 (255: none); their names on {LABEL_INFO_TOPIC}",
        ),
        Topic(
            LABELS_COLOR_TOPIC,
            "sensor_msgs/msg/Image",
            "results",
            "the labels in the Cityscapes palette (rgb8), published only with subscribers",
        ),
        Topic(
            LABEL_INFO_TOPIC,
            "vision_msgs/msg/LabelInfo",
            "latched",
            "the segmenter's class ids (train ids) and names, threshold 0 (argmax) "
            "(reliable, transient local: once per segmenter and stream, a late subscriber "
            "still gets it)",
        ),
        Topic(OVERLAY_TOPIC, "sensor_msgs/msg/Image", "results", "rgb8 colour overlay"),
        Topic(STATS_TOPIC, "cloudseg/msg/FrameStats", "results", "per-frame timings"),
        Topic(
            CAMERA_LABELS_TOPIC,
            "sensor_msgs/msg/Image",
            "results",
            "vehicle: for every camera frame the newest labels (mono8 train ids, the camera "
            f"frame's stamp; their names: the cloud's {LABEL_INFO_TOPIC}, not re-published)",
        ),
        Topic(
            CAMERA_LABELS_COLOR_TOPIC,
            "sensor_msgs/msg/Image",
            "results",
            "vehicle: the camera labels in the Cityscapes palette (rgb8), only with subscribers",
        ),
        Topic(
            CAMERA_LABELS_INFO_TOPIC,
            "cloudseg/msg/LabelAge",
            "results",
            "vehicle: for every camera frame, which frame its labels came from and their age",
        ),
    )
}

_NS_TOKEN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def namespace(text: str | None) -> str:
    """A ROS namespace as a fully qualified one: `car1`, `/car1/` -> `/car1`; empty or None ->
    `/` (the root). ValueError for a name ROS refuses (tokens of letters, digits and `_`, not
    starting with a digit)."""
    tokens = [t for t in (text or "").strip().split("/") if t]
    for token in tokens:
        if not _NS_TOKEN.fullmatch(token):
            raise ValueError(
                f"namespace {text!r}: {token!r} is not a valid name (letters, digits and _, "
                f"not starting with a digit)"
            )
    return "/" + "/".join(tokens)


def resolve(topic: str, ns: str | None = "/") -> str:
    """The fully qualified name of a graph topic for a node in namespace `ns`
    (`cloudseg/frames`, `car1` -> `/car1/cloudseg/frames`); an absolute name is kept."""
    if topic.startswith("/"):
        return topic
    base = namespace(ns)
    return f"{base.rstrip('/')}/{topic}"
