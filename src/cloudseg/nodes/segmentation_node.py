"""Segmentation node (cloud): labels, colour overlay and timings for every frame.

In the cloud process (`cloud_node`) it owns the models and segments the pyramid the sr node
hands over on the device. On its own it segments the images on /cloudseg/restored.
"""

from __future__ import annotations

import time

from rclpy.node import Node
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from cloudseg.control.accuracy import estimate_accuracy
from cloudseg.graph import LABELS_TOPIC, OVERLAY_TOPIC, RESTORED_TOPIC, SEGMENTATION, STATS_TOPIC
from cloudseg.msg import FrameStats
from cloudseg.nodes.common import boundary, declare_parameters, qos_for, run_node
from cloudseg.nodes.convert import image_to_rgb, numpy_to_image
from cloudseg.restore.pipeline import Pyramid
from cloudseg.restore.service import CloudResult, CloudService


class SegmentationNode(Node):
    def __init__(self, in_process: bool = False) -> None:
        super().__init__(SEGMENTATION.name)
        self.params = p = declare_parameters(self, SEGMENTATION)
        self.service = CloudService(
            sr_model=None if p["sr_model"] == "none" else p["sr_model"],
            sr_weights=p["sr_weights"],
            backend=p["backend"],
            device=p["device"],
            dtype=p["dtype"],
            cpu_max_width=p["cpu_max_width"] or None,
            allow_untrained=p["allow_untrained"],
        )
        self.labels_pub = self.create_publisher(Image, LABELS_TOPIC, qos_for(LABELS_TOPIC))
        self.overlay_pub = self.create_publisher(Image, OVERLAY_TOPIC, qos_for(OVERLAY_TOPIC))
        self.stats_pub = self.create_publisher(FrameStats, STATS_TOPIC, qos_for(STATS_TOPIC))
        if not in_process:
            self.create_subscription(
                Image, RESTORED_TOPIC, self.on_restored, qos_for(RESTORED_TOPIC)
            )
        untrained = self.service.first.untrained
        if untrained:
            self.get_logger().warning(
                f"UNTRAINED weights in use ({', '.join(untrained)}): labels are meaningless"
            )
        source = "the sr node's pyramid, in process" if in_process else RESTORED_TOPIC
        self.get_logger().info(
            f"segmenting {source} -> {LABELS_TOPIC}, {OVERLAY_TOPIC}: {self.service.describe()}"
        )

    def segment_pyramid(self, pyramid: Pyramid, job) -> CloudResult:
        """The in-process hand-over from the sr node (job: its FrameJob)."""
        f = job.frame
        result = self.service.segment(pyramid, int(f.width), int(f.height), job.decode_ms)
        accuracy = -1.0
        if int(f.scale) == 1 and job.stream_scale > 1:  # the controller's profiling frame
            try:
                accuracy = estimate_accuracy(
                    self.service,
                    job.lr,
                    result.labels,
                    job.stream_scale,
                    job.sr_bypass,
                    job.stream_crf,
                )
            except Exception as exc:  # the estimate is optional: say why it is missing
                self.get_logger().warning(f"frame {f.seq}: no accuracy estimate: {exc}")
            else:
                self.get_logger().info(
                    f"frame {f.seq}: profiling frame, labels at x{job.stream_scale} agree "
                    f"{accuracy:.1%} with full resolution"
                )
        self.publish(
            result,
            f.header,
            job.t0,
            seq=int(f.seq),
            scale=int(f.scale),
            codec=f.codec,
            payload_bytes=len(f.data),
            transport_ms=job.transport_ms,
            frames_received=job.frames_received,
            bytes_received=job.bytes_received,
            accuracy_estimate=accuracy,
        )
        return result

    @boundary("restored image")
    def on_restored(self, msg: Image) -> None:
        t0 = time.perf_counter()
        result = self.service.segment_restored(image_to_rgb(msg))
        self.publish(
            result, msg.header, t0, seq=0, scale=1, codec="", payload_bytes=0, transport_ms=0.0
        )

    def publish(self, result: CloudResult, header: Header, t0: float, **stats) -> None:
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
