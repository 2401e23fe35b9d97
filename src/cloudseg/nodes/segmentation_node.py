"""Segmentation node (cloud): labels, colour overlay and timings for every frame.

With `input: frames` (the default cloud graph) it decodes Frames and runs super-resolution and
segmentation in this one process: CARN's pyramid goes to the segmenter on the device, never
through DDS. With `input: restored` it segments the images a separate sr node publishes.
"""

from __future__ import annotations

import threading
import time

from rclpy.node import Node
from rclpy.subscription import MessageInfo
from rclpy.time import Time
from sensor_msgs.msg import Image

from cloudseg.graph import (
    FRAMES_TOPIC,
    KNOB_TOPIC,
    LABELS_TOPIC,
    OVERLAY_TOPIC,
    RESTORED_TOPIC,
    SEGMENTATION,
    STATS_TOPIC,
)
from cloudseg.msg import Frame, FrameStats, Knob
from cloudseg.nodes.common import declare_parameters, decode_frame, qos_for, run_node
from cloudseg.nodes.convert import ImageError, image_to_rgb, numpy_to_image
from cloudseg.restore.service import CloudResult, CloudService


class SegmentationNode(Node):
    def __init__(self) -> None:
        super().__init__(SEGMENTATION.name)
        self.params = p = declare_parameters(self, SEGMENTATION)
        self.sr_bypass = p["sr_bypass"]
        self.service = CloudService(
            sr_model=None if p["sr_model"] == "none" else p["sr_model"],
            backend=p["backend"],
            device=p["device"],
            dtype=p["dtype"],
            cpu_max_width=p["cpu_max_width"] or None,
            allow_untrained=p["allow_untrained"],
        )
        self.labels_pub = self.create_publisher(Image, LABELS_TOPIC, qos_for(LABELS_TOPIC))
        self.overlay_pub = self.create_publisher(Image, OVERLAY_TOPIC, qos_for(OVERLAY_TOPIC))
        self.stats_pub = self.create_publisher(FrameStats, STATS_TOPIC, qos_for(STATS_TOPIC))
        self.restored_pub = None
        if p["input"] == "frames":
            if p["publish_restored"]:
                self.restored_pub = self.create_publisher(
                    Image, RESTORED_TOPIC, qos_for(RESTORED_TOPIC)
                )
            self.create_subscription(Frame, FRAMES_TOPIC, self.on_frame, qos_for(FRAMES_TOPIC))
            self.create_subscription(Knob, KNOB_TOPIC, self.on_knob, qos_for(KNOB_TOPIC))
        else:
            self.create_subscription(
                Image, RESTORED_TOPIC, self.on_restored, qos_for(RESTORED_TOPIC)
            )
        # Frames are decoded as they arrive (keeps the H.264 chain); SR + segmentation run in a
        # worker on the latest decoded frame only: a frame that waited is worth less than a new
        # one. `skipped` counts frames decoded but not segmented.
        self.latest: tuple | None = None
        self.skipped = 0
        self.wake = threading.Condition()
        self.worker = threading.Thread(target=self.segment_loop, daemon=True)
        self.worker.start()
        untrained = self.service.pipelines[4].untrained
        if untrained:
            self.get_logger().warning(
                f"UNTRAINED weights in use ({', '.join(untrained)}): labels are meaningless"
            )
        self.get_logger().info(
            f"segmenting {'Frames' if p['input'] == 'frames' else 'restored'}"
            f" -> {LABELS_TOPIC}, {OVERLAY_TOPIC}: {self.service.describe()}"
        )

    def on_knob(self, knob: Knob) -> None:
        if bool(knob.sr_bypass) != self.sr_bypass:
            self.sr_bypass = bool(knob.sr_bypass)
            self.get_logger().info(f"knob {knob.seq}: SR {'bypassed' if self.sr_bypass else 'on'}")

    def on_frame(self, frame: Frame, info: MessageInfo) -> None:
        received = info["received_timestamp"]  # DDS arrival, not when this callback ran
        t0 = time.perf_counter()
        lr, decode_ms = decode_frame(self, frame, self.service.decode)
        if lr is None:
            return
        transport = (received - Time.from_msg(frame.sent_stamp).nanoseconds) / 1e6
        with self.wake:
            if self.latest is not None:
                self.skipped += 1
            self.latest = (lr, frame, decode_ms, transport, t0)
            self.wake.notify()

    def segment_loop(self) -> None:
        while True:
            with self.wake:
                while self.latest is None:
                    self.wake.wait()
                lr, frame, decode_ms, transport, t0 = self.latest
                self.latest = None
            try:
                result = self.service.segment_lr(
                    lr,
                    int(frame.scale),
                    int(frame.width),
                    int(frame.height),
                    self.sr_bypass,
                    decode_ms,
                )
            except Exception as exc:
                self.get_logger().error(f"frame {frame.seq}: segmentation failed: {exc}")
                continue
            if self.restored_pub is not None:
                self.restored_pub.publish(numpy_to_image(result.restored, "rgb8", frame.header))
            self.publish(
                result,
                frame.header,
                t0,
                seq=int(frame.seq),
                scale=int(frame.scale),
                codec=frame.codec,
                payload_bytes=len(frame.data),
                transport_ms=transport,
            )

    def on_restored(self, msg: Image) -> None:
        t0 = time.perf_counter()
        try:
            result = self.service.segment_restored(image_to_rgb(msg))
        except (ImageError, ValueError) as exc:
            self.get_logger().warning(f"restored image dropped: {exc}")
            return
        self.publish(
            result, msg.header, t0, seq=0, scale=1, codec="", payload_bytes=0, transport_ms=0.0
        )

    def publish(self, result: CloudResult, header, t0: float, **stats) -> None:
        self.labels_pub.publish(numpy_to_image(result.labels, "mono8", header))
        self.overlay_pub.publish(
            numpy_to_image(result.overlay(self.params["overlay_alpha"]), "rgb8", header)
        )
        self.stats_pub.publish(
            FrameStats(
                header=header,
                sr_bypass=result.mode != "sr",
                decode_ms=result.decode_ms,
                sr_ms=result.sr_ms,
                segmentation_ms=result.segmentation_ms,
                total_ms=(time.perf_counter() - t0) * 1e3,
                untrained=bool(result.untrained),
                **stats,
            )
        )


def main(args: list[str] | None = None) -> int:
    return run_node(SegmentationNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
