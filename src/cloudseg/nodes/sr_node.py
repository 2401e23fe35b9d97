"""SR node (cloud): decode Frames and restore full resolution; publishes the restored image.

`restore: bilinear` is the paper's LR-bilinear baseline; `restore: sr` super-resolves with
CARN-M (for a split cloud where segmentation runs in another process).
"""

from __future__ import annotations

import time

from rclpy.node import Node
from rclpy.subscription import MessageInfo
from rclpy.time import Time
from sensor_msgs.msg import Image

from cloudseg.graph import FRAMES_TOPIC, RESTORED_TOPIC, SR, STATS_TOPIC
from cloudseg.media.resize import upsample_bilinear
from cloudseg.media.stream import FrameRestorer
from cloudseg.msg import Frame, FrameStats
from cloudseg.nodes.common import declare_parameters, decode_frame, qos_for, run_node
from cloudseg.nodes.convert import numpy_to_image


class SRNode(Node):
    def __init__(self) -> None:
        super().__init__(SR.name)
        self.params = declare_parameters(self, SR)
        self.restorer = FrameRestorer()
        self.sr_model = None
        if self.params["restore"] == "sr":
            from cloudseg.models.registry import build_model

            self.sr_model = build_model("carn_m")
        self.restored_pub = self.create_publisher(Image, RESTORED_TOPIC, qos_for(RESTORED_TOPIC))
        self.stats_pub = self.create_publisher(FrameStats, STATS_TOPIC, qos_for(STATS_TOPIC))
        self.create_subscription(Frame, FRAMES_TOPIC, self.on_frame, qos_for(FRAMES_TOPIC))
        self.get_logger().info(
            f"restoring {FRAMES_TOPIC} -> {RESTORED_TOPIC} ({self.params['restore']})"
        )

    def upscale(self, lr, scale: int, width: int, height: int):
        if self.sr_model is not None and scale in self.sr_model.scales:
            from cloudseg.models.carn import upscale_image

            rgb = upscale_image(self.sr_model, lr, scale)
            if rgb.shape[:2] == (height, width):
                return rgb
        return lr if lr.shape[:2] == (height, width) else upsample_bilinear(lr, (width, height))

    def on_frame(self, frame: Frame, info: MessageInfo) -> None:
        received = info["received_timestamp"]  # DDS arrival, not when this callback ran
        t0 = time.perf_counter()
        lr, decode_ms = decode_frame(self, frame, self.restorer.decode)
        if lr is None:
            return
        t1 = time.perf_counter()
        rgb = self.upscale(lr, int(frame.scale), int(frame.width), int(frame.height))
        restore_ms = (time.perf_counter() - t1) * 1e3
        if self.params["publish_restored"]:
            self.restored_pub.publish(numpy_to_image(rgb, "rgb8", frame.header))
        transport = (received - Time.from_msg(frame.sent_stamp).nanoseconds) / 1e6
        self.stats_pub.publish(
            FrameStats(
                header=frame.header,
                seq=frame.seq,
                scale=frame.scale,
                codec=frame.codec,
                payload_bytes=len(frame.data),
                sr_bypass=self.sr_model is None,
                decode_ms=decode_ms,
                sr_ms=restore_ms,
                segmentation_ms=0.0,
                total_ms=(time.perf_counter() - t0) * 1e3,
                transport_ms=transport,
            )
        )


def main(args: list[str] | None = None) -> int:
    return run_node(SRNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
