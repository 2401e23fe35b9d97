"""SR node (cloud): decode Frames and restore full resolution; publishes the restored image."""

from __future__ import annotations

import time

from rclpy.node import Node
from rclpy.time import Time
from sensor_msgs.msg import Image

from cloudseg.graph import FRAMES_TOPIC, RESTORED_TOPIC, SR, STATS_TOPIC
from cloudseg.media.codecs import CodecError
from cloudseg.media.stream import FrameRestorer
from cloudseg.msg import Frame, FrameStats
from cloudseg.nodes.common import declare_parameters, qos_for, run_node
from cloudseg.nodes.convert import numpy_to_image


class SRNode(Node):
    def __init__(self) -> None:
        super().__init__(SR.name)
        self.params = declare_parameters(self, SR)
        if self.params["restore"] != "bilinear":
            self.get_logger().warning("restore=sr is not available yet; using bilinear")
        self.restorer = FrameRestorer()
        self.restored_pub = self.create_publisher(Image, RESTORED_TOPIC, qos_for(RESTORED_TOPIC))
        self.stats_pub = self.create_publisher(FrameStats, STATS_TOPIC, qos_for(STATS_TOPIC))
        self.create_subscription(Frame, FRAMES_TOPIC, self.on_frame, qos_for(FRAMES_TOPIC))
        self.waiting = False
        self.get_logger().info(f"restoring {FRAMES_TOPIC} -> {RESTORED_TOPIC} (bilinear)")

    def on_frame(self, frame: Frame) -> None:
        received = self.get_clock().now()
        t0 = time.perf_counter()
        try:
            out = self.restorer.restore(frame.data, frame.codec, int(frame.seq), int(frame.scale),
                                        int(frame.width), int(frame.height))
        except (CodecError, ValueError) as exc:
            self.get_logger().warning(f"frame {frame.seq} dropped: {exc}")
            return
        if out is None:
            if not self.waiting:
                self.get_logger().warning(f"frame {frame.seq}: a frame was lost; waiting for the "
                                          "next IDR frame")
            self.waiting = True
            return
        if self.waiting:
            self.get_logger().info(f"frame {frame.seq}: IDR received, decoding again")
            self.waiting = False
        if self.params["publish_restored"]:
            self.restored_pub.publish(numpy_to_image(out.rgb, "rgb8", frame.header))
        transport = (received - Time.from_msg(frame.sent_stamp)).nanoseconds / 1e6
        self.stats_pub.publish(FrameStats(
            header=frame.header, seq=frame.seq, scale=frame.scale, codec=frame.codec,
            payload_bytes=len(frame.data), sr_bypass=True, decode_ms=out.decode_ms,
            sr_ms=out.restore_ms, segmentation_ms=0.0,
            total_ms=(time.perf_counter() - t0) * 1e3, transport_ms=transport))


def main(args: list[str] | None = None) -> int:
    return run_node(SRNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
