"""View node (`cloudseg view`, `demo --view`): the graph's topics on a Foxglove WebSocket server.

A thin bridge: it subscribes to the vehicle's H.264 stream (cloudseg/frames: the same Annex B
bytes the compressor's `lowres/foxglove` topic carries, and present on every graph), the
labels (mono8, coloured here), the overlay, FrameStats and LabelAge, and hands them to
`cloudseg.view.ViewChannels`, which converts only what a viewer subscribes to. When a viewer
subscribes to the video it asks the vehicle for an IDR (a KeyframeRequest, reason "joined"), so
the picture appears within one round trip even with long GOPs or intra refresh.
"""

from __future__ import annotations

import os

from rclpy.node import Node
from sensor_msgs.msg import Image

from cloudseg.fastdds import one_host_env
from cloudseg.graph import (
    CAMERA_LABELS_INFO_TOPIC,
    FRAMES_TOPIC,
    KEYFRAME_REQUEST_TOPIC,
    LABELS_TOPIC,
    OVERLAY_TOPIC,
    STATS_TOPIC,
)
from cloudseg.msg import Frame, FrameStats, KeyframeRequest, LabelAge
from cloudseg.nodes.common import boundary, qos_for, run_nodes
from cloudseg.nodes.convert import ImageError, image_to_numpy, image_to_rgb
from cloudseg.recovery import JOINED
from cloudseg.view import view_url
from cloudseg.view.channels import ViewChannels

NODE_NAME = "cloudseg_view"


class ViewNode(Node):
    """Bridges the graph's topics in namespace `ns` to a Foxglove server on `host`:`port`
    (port 0: any free one; the one taken is `self.port`), started with the node."""

    def __init__(self, host: str, port: int, ns: str | None = "/") -> None:
        self.channels = ViewChannels(
            ns, json_messages={STATS_TOPIC: FrameStats(), CAMERA_LABELS_INFO_TOPIC: LabelAge()}
        )
        super().__init__(NODE_NAME, namespace=self.channels.ns)
        self.last_seq = 0
        self.keyframe_pub = self.create_publisher(
            KeyframeRequest, KEYFRAME_REQUEST_TOPIC, qos_for(KEYFRAME_REQUEST_TOPIC)
        )
        self.create_subscription(Frame, FRAMES_TOPIC, self.on_frame, qos_for(FRAMES_TOPIC))
        self.create_subscription(Image, LABELS_TOPIC, self.on_labels, qos_for(LABELS_TOPIC))
        self.create_subscription(Image, OVERLAY_TOPIC, self.on_overlay, qos_for(OVERLAY_TOPIC))
        for topic, kind in ((STATS_TOPIC, FrameStats), (CAMERA_LABELS_INFO_TOPIC, LabelAge)):
            self.create_subscription(
                kind, topic, lambda msg, t=topic: self.on_json(t, msg), qos_for(topic)
            )
        self.port = self.channels.start(host, port, on_viewer=self.ask_for_keyframe)
        self.url = view_url(host, self.port)
        self.get_logger().info(f"Foxglove view of {self.channels.ns} on {self.url}")

    def ask_for_keyframe(self) -> None:
        """A viewer subscribed to the video (the server's thread): the vehicle's next frame
        should be an IDR. Named after the newest frame seen, so an IDR already sent after it
        is not doubled (cloudseg.recovery.KeyframeOnRequest)."""
        request = KeyframeRequest(seq=self.last_seq, last_decoded_seq=0, reason=JOINED)
        request.header.stamp = self.get_clock().now().to_msg()
        self.keyframe_pub.publish(request)
        self.get_logger().info(
            f"a viewer subscribed to the video: asked for an IDR after frame {self.last_seq}"
        )

    @boundary("frame")
    def on_frame(self, frame: Frame) -> None:
        self.last_seq = int(frame.seq)  # the newest (a restarted vehicle counts from 0 again)
        self.channels.send_frame(frame.header, frame.codec, bytes(frame.data))

    @boundary("labels")
    def on_labels(self, msg: Image) -> None:
        if not self.channels.wants_labels():
            return
        if msg.encoding != "mono8":
            raise ImageError(f"labels must be mono8 train ids, got {msg.encoding}")
        self.channels.send_labels(msg.header, image_to_numpy(msg))

    @boundary("overlay")
    def on_overlay(self, msg: Image) -> None:
        if self.channels.wants_overlay():
            self.channels.send_overlay(msg.header, image_to_rgb(msg))

    @boundary("json")
    def on_json(self, topic: str, msg: object) -> None:
        self.channels.send_json(topic, msg)

    def destroy_node(self) -> None:
        self.channels.stop()
        super().destroy_node()


def serve_view(host: str, port: int, ns: str | None = "/") -> int:
    """`cloudseg view`: the view node until Ctrl-C; prints the address to open. Large images
    need the large-message Fast DDS profile (one host), unless the environment names one."""
    profile = "FASTDDS_DEFAULT_PROFILES_FILE"
    os.environ.setdefault(profile, one_host_env()[profile])

    def make() -> list[Node]:
        node = ViewNode(host, port, ns)
        print(f"cloudseg view: open {node.url} in Foxglove (Open connection)", flush=True)
        return [node]

    return run_nodes(make, args=[], name="cloudseg view")
