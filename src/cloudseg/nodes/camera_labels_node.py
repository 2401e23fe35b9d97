"""Camera labels node (vehicle): a label map for every camera frame, and how old it is.

With frame selection only some frames reach the cloud. For each camera frame this node
publishes the newest labels that came back (header: the camera frame's, so consumers can
synchronise with the image) on /cloudseg/camera_labels (mono8 train ids, named by the cloud's
/cloudseg/label_info in the same namespace: this node publishes no LabelInfo of its own) and
/cloudseg/camera_labels/color (the Cityscapes palette), each only while someone subscribes, and
a LabelAge on /cloudseg/camera_labels/info (the seq and stamp of the frame the labels came
from, their age, whether they were warped along optical flow). The logic is
:class:`cloudseg.selection.held_labels.LabelHolder`. In the vehicle process the frame_selector
hands it the camera frames; on its own it subscribes to /camera/image_raw.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
from rclpy.node import Node
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from cloudseg.graph import (
    CAMERA_LABELS,
    CAMERA_LABELS_COLOR_TOPIC,
    CAMERA_LABELS_INFO_TOPIC,
    CAMERA_LABELS_TOPIC,
    FRAMES_TOPIC,
    IMAGE_TOPIC,
    LABELS_TOPIC,
)
from cloudseg.msg import Frame, LabelAge
from cloudseg.nodes.common import boundary, qos_for, run_node, stamp_ns
from cloudseg.nodes.convert import ImageError, image_to_numpy, image_to_rgb
from cloudseg.nodes.label_topics import LabelPublishers
from cloudseg.nodes.parameters import declare_parameters
from cloudseg.selection.held_labels import LabelHolder

KEEP_SEQS = 256  # stamps of frames sent, to name the frame labels came from


class CameraLabelsNode(Node):
    def __init__(self, in_process: bool = False) -> None:
        super().__init__(CAMERA_LABELS.name)
        self.params = declare_parameters(self, CAMERA_LABELS)
        self.holder = LabelHolder(warp=self.params["warp"])
        self.seq_of: OrderedDict[int, int] = OrderedDict()  # capture stamp -> Frame.seq
        self.labels = LabelPublishers(
            self, CAMERA_LABELS_TOPIC, CAMERA_LABELS_COLOR_TOPIC, lazy=True
        )
        self.info_pub = self.create_publisher(
            LabelAge, CAMERA_LABELS_INFO_TOPIC, qos_for(CAMERA_LABELS_INFO_TOPIC)
        )
        self.create_subscription(Frame, FRAMES_TOPIC, self.on_frame, qos_for(FRAMES_TOPIC))
        self.create_subscription(Image, LABELS_TOPIC, self.on_labels, qos_for(LABELS_TOPIC))
        if not in_process:
            self.create_subscription(Image, IMAGE_TOPIC, self.on_image, qos_for(IMAGE_TOPIC))
        warp = " (warped along optical flow)" if self.params["warp"] else ""
        self.get_logger().info(
            f"the newest labels for every camera frame{warp} -> "
            f"{self.resolve_topic_name(CAMERA_LABELS_TOPIC)} (+ /color), "
            f"{self.resolve_topic_name(CAMERA_LABELS_INFO_TOPIC)}"
        )

    def on_parameters(self, changes: dict) -> None:
        if "warp" in changes:
            self.holder.warp = bool(changes["warp"])

    @boundary("frame")
    def on_frame(self, frame: Frame) -> None:
        self.seq_of[stamp_ns(frame.header)] = int(frame.seq)
        while len(self.seq_of) > KEEP_SEQS:
            self.seq_of.popitem(last=False)

    @boundary("labels")
    def on_labels(self, msg: Image) -> None:
        stamp = stamp_ns(msg.header)
        labels = image_to_numpy(msg)
        if labels.ndim != 2:
            raise ImageError(f"labels must be one channel (mono8), not {msg.encoding}")
        self.holder.add_labels(stamp, labels, self.seq_of.get(stamp, -1))

    @boundary("camera image")
    def on_image(self, msg: Image) -> None:
        self.on_camera(msg.header, image_to_rgb(msg))

    def on_camera(self, header: Header, rgb: np.ndarray) -> None:
        """One camera frame: publish the labels held for it (once any came back)."""
        stamp = stamp_ns(header)
        self.holder.add_camera_frame(stamp, rgb)
        wanted = self.labels.wanted()
        held = self.holder.for_frame(stamp, rgb if wanted else None)
        if held is None:
            return
        if wanted:
            self.labels.publish(held.labels, header)
        info = LabelAge(
            header=header,
            source_seq=max(held.source_seq, 0),
            age_ms=float(held.age_ms),
            warped=held.warped,
        )
        info.source_stamp.sec, info.source_stamp.nanosec = divmod(held.source_stamp_ns, 10**9)
        self.info_pub.publish(info)


def main(args: list[str] | None = None) -> int:
    return run_node(CameraLabelsNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
