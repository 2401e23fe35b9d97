"""The Foxglove channels of `cloudseg view`, and the conversions that fill them (no rclpy).

One Foxglove WebSocket server (the `foxglove-sdk` package, protocol `foxglove.sdk.v1`) with a
channel per thing worth watching, each named like the ROS topic it mirrors (resolved in the
view's namespace), so one layout serves the live view and a recording of the topics:

* `cloudseg/lowres/foxglove`: the H.264 stream the vehicle sends (`cloudseg/frames`), as
  `foxglove.CompressedVideo` (the same Annex B bytes, one access unit per message);
* `cloudseg/lowres/compressed`: a JPEG/PNG stream's frames, as `foxglove.CompressedImage`;
* `cloudseg/labels/color`: the labels in the Cityscapes palette, as an indexed PNG (lossless:
  the pixels are the palette colours of the train ids on `cloudseg/labels`);
* `cloudseg/overlay`: the segmentation overlay, JPEG;
* `cloudseg/stats` (FrameStats) and `cloudseg/camera_labels/info` (LabelAge) as JSON.

Nothing is converted while no viewer subscribes to a channel. A viewer's first video message is
an IDR when it is the only viewer (`KeyframeGate`); the node asks the vehicle for one as soon as
a viewer subscribes.
"""

from __future__ import annotations

import array
import threading
from collections.abc import Callable, Sequence
from typing import Any

import foxglove
import numpy as np
from foxglove.channels import CompressedImageChannel, CompressedVideoChannel
from foxglove.messages import CompressedImage, CompressedVideo, Timestamp

from cloudseg.data.cityscapes import colorize
from cloudseg.graph.topics import (
    COMPRESSED_TOPIC,
    FOXGLOVE_TOPIC,
    LABELS_COLOR_TOPIC,
    OVERLAY_TOPIC,
    namespace,
    resolve,
)
from cloudseg.media.h264 import is_h264_keyframe
from cloudseg.media.image_codecs import encode_image
from cloudseg.view.png import palette_png

#: zlib level of the label PNGs: flat colours compress well even at the fastest level.
LABELS_PNG_LEVEL = 1
#: train id -> Cityscapes colour, for all 256 values (255 and anything unknown: black)
LABEL_PALETTE = colorize(np.arange(256, dtype=np.uint8)[None])[0]
OVERLAY_JPEG_QUALITY = 80


def _timestamp(header: Any) -> Timestamp:
    return Timestamp(int(header.stamp.sec), int(header.stamp.nanosec))


def message_to_dict(msg: Any) -> Any:
    """A ROS message (any object with `get_fields_and_field_types`) as JSON-ready values:
    nested messages as objects, arrays as lists."""
    if hasattr(msg, "get_fields_and_field_types"):
        return {
            name: message_to_dict(getattr(msg, name)) for name in msg.get_fields_and_field_types()
        }
    if isinstance(msg, (bytes, bytearray, array.array, np.ndarray)):
        return list(msg)
    if isinstance(msg, (list, tuple)):
        return [message_to_dict(v) for v in msg]
    return msg


def json_schema(msg: Any) -> dict[str, Any]:
    """A JSON schema of a ROS message instance (its default values give the field types), so
    Foxglove's panels offer the fields by name."""
    if hasattr(msg, "get_fields_and_field_types"):
        return {
            "type": "object",
            "properties": {
                name: json_schema(getattr(msg, name)) for name in msg.get_fields_and_field_types()
            },
        }
    if isinstance(msg, bool):
        return {"type": "boolean"}
    if isinstance(msg, int):
        return {"type": "integer"}
    if isinstance(msg, float):
        return {"type": "number"}
    if isinstance(msg, str):
        return {"type": "string"}
    if isinstance(msg, (Sequence, array.array, np.ndarray)):
        return {"type": "array"}
    return {}


class KeyframeGate:
    """Video for viewers from an IDR on. The Foxglove server sends a channel's messages to all
    its subscribers alike (no per-client sending), so: when the first viewer subscribes (none
    watched before), nothing goes until the next IDR; a viewer that joins while others watch
    gets the stream as it is (dropping frames then would break the others' decoding) and
    waits for the IDR its subscription asked for, as Foxglove's decoder does."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.viewers = 0
        self.waiting = True

    def subscribed(self) -> None:
        with self._lock:
            if self.viewers == 0:
                self.waiting = True
            self.viewers += 1

    def unsubscribed(self) -> None:
        with self._lock:
            self.viewers = max(0, self.viewers - 1)

    def admit(self, keyframe: bool) -> bool:
        """Whether to send this frame (an IDR, or a frame after the first IDR)."""
        with self._lock:
            if self.waiting and not keyframe:
                return False
            self.waiting = False
            return True


class _Listener:
    """The server's subscribe events for the video channel (called on the SDK's thread)."""

    def __init__(self, video_id: int, gate: KeyframeGate, on_viewer: Callable[[], None]) -> None:
        self.video_id, self.gate, self.on_viewer = video_id, gate, on_viewer

    def on_subscribe(self, client: Any, channel: Any) -> None:
        if channel.id == self.video_id:
            self.gate.subscribed()
            self.on_viewer()

    def on_unsubscribe(self, client: Any, channel: Any) -> None:
        if channel.id == self.video_id:
            self.gate.unsubscribed()


class ViewChannels:
    """The view's channels in a Foxglove context of their own, and its server once `start`ed.
    `json_messages`: graph topic -> a default instance of its ROS message (its JSON schema)."""

    def __init__(self, ns: str | None = "/", json_messages: dict[str, Any] | None = None) -> None:
        self.ns = namespace(ns)
        self.context = foxglove.Context()
        self.gate = KeyframeGate()
        self.server: Any = None
        ctx = self.context
        self.video = CompressedVideoChannel(self.topic(FOXGLOVE_TOPIC), context=ctx)
        self.stills = CompressedImageChannel(self.topic(COMPRESSED_TOPIC), context=ctx)
        self.labels = CompressedImageChannel(self.topic(LABELS_COLOR_TOPIC), context=ctx)
        self.overlay = CompressedImageChannel(self.topic(OVERLAY_TOPIC), context=ctx)
        self.json = {
            topic: foxglove.Channel(self.topic(topic), schema=json_schema(example), context=ctx)
            for topic, example in (json_messages or {}).items()
        }

    def topic(self, graph_topic: str) -> str:
        """The channel name of a graph topic: the topic resolved in the view's namespace."""
        return resolve(graph_topic, self.ns)

    def start(self, host: str, port: int, on_viewer: Callable[[], None] = lambda: None) -> int:
        """Start the WebSocket server; `on_viewer` runs (on the server's thread) whenever a
        viewer subscribes to the video. Returns the port (useful with port 0: any free one)."""
        try:
            self.server = foxglove.start_server(
                name=f"cloudseg view {self.ns}",
                host=host,
                port=port,
                server_listener=_Listener(self.video.id(), self.gate, on_viewer),
                context=self.context,
            )
        except RuntimeError as exc:  # FoxgloveError: e.g. the port is taken
            detail = str(exc).removeprefix("FoxgloveError: ")
            raise OSError(f"cannot serve on {host}:{port}: {detail}") from None
        return int(self.server.port)

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def send_frame(self, header: Any, codec: str, data: bytes) -> bool:
        """One encoded frame of the vehicle's stream (a cloudseg Frame's header, codec and
        payload); True when it went to a viewer."""
        if codec == "h264":
            if not self.video.has_sinks() or not self.gate.admit(is_h264_keyframe(data)):
                return False
            msg = CompressedVideo(
                timestamp=_timestamp(header), frame_id=header.frame_id, data=data, format="h264"
            )
            self.video.log(msg)
            return True
        if not self.stills.has_sinks():
            return False
        still = CompressedImage(
            timestamp=_timestamp(header), frame_id=header.frame_id, data=data, format=codec
        )
        self.stills.log(still)
        return True

    def wants_labels(self) -> bool:
        return self.labels.has_sinks()

    def send_labels(self, header: Any, train_ids: np.ndarray) -> bytes | None:
        """Train ids (HxW uint8) in the Cityscapes palette as PNG; the PNG sent, or None."""
        if not self.labels.has_sinks():
            return None
        png = palette_png(train_ids, LABEL_PALETTE, LABELS_PNG_LEVEL)
        msg = CompressedImage(
            timestamp=_timestamp(header), frame_id=header.frame_id, data=png, format="png"
        )
        self.labels.log(msg)
        return png

    def wants_overlay(self) -> bool:
        return self.overlay.has_sinks()

    def send_overlay(self, header: Any, rgb: np.ndarray) -> bool:
        if not self.overlay.has_sinks():
            return False
        jpeg = encode_image(rgb, "jpeg", OVERLAY_JPEG_QUALITY)
        msg = CompressedImage(
            timestamp=_timestamp(header), frame_id=header.frame_id, data=jpeg, format="jpeg"
        )
        self.overlay.log(msg)
        return True

    def send_json(self, topic: str, msg: Any) -> bool:
        """A ROS message on the JSON channel of graph topic `topic`."""
        channel = self.json[topic]
        if not channel.has_sinks():
            return False
        channel.log(message_to_dict(msg))
        return True
