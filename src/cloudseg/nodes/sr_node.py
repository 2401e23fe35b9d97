"""SR node (cloud): decode Frames and restore full resolution.

On its own it publishes the restored image (`restore: sr` with CARN-M, or `bilinear`, the
paper's LR-bilinear baseline). In the cloud process (`cloud_node`) it super-resolves with the
shared pipeline and hands the pyramid, still on the GPU, to the segmentation node.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from rclpy.node import Node
from rclpy.subscription import MessageInfo
from rclpy.time import Time
from sensor_msgs.msg import Image

from cloudseg.graph import FRAMES_TOPIC, KNOB_TOPIC, RESTORED_TOPIC, SR, STATS_TOPIC
from cloudseg.media.resize import upsample_bilinear
from cloudseg.media.stream import FrameRestorer
from cloudseg.msg import Frame, FrameStats, Knob
from cloudseg.nodes.common import declare_parameters, decode_frame, qos_for, run_node
from cloudseg.nodes.convert import numpy_to_image
from cloudseg.restore.pipeline import Pyramid
from cloudseg.restore.service import CloudResult, CloudService


@dataclass
class FrameJob:
    """A decoded frame on its way through the cloud process."""

    frame: Frame
    lr: np.ndarray
    decode_ms: float
    transport_ms: float
    t0: float  # perf_counter when the frame arrived
    frames_received: int = 0  # of this stream so far, processed or skipped (FrameStats)
    bytes_received: int = 0
    stream_scale: int = 0  # the Knob's scale (0: no Knob): a scale-1 frame is a profiling frame
    stream_crf: int | None = None  # the Knob's CRF when the stream is H.264 constant quality
    sr_bypass: bool = False


#: What the SR node hands over in process: (pyramid on the device, the frame) -> result
Handoff = Callable[[Pyramid, FrameJob], CloudResult | None]


class SRNode(Node):
    def __init__(self, service: CloudService | None = None, handoff: Handoff | None = None):
        super().__init__(SR.name)
        self.params = declare_parameters(self, SR)
        self.sr_bypass = self.params["restore"] == "bilinear"
        self.service, self.handoff = service, handoff
        self.frames_received = self.bytes_received = 0
        self.knob_scale, self.knob_crf = 0, None
        self.restored_pub = self.create_publisher(Image, RESTORED_TOPIC, qos_for(RESTORED_TOPIC))
        self.create_subscription(Frame, FRAMES_TOPIC, self.on_frame, qos_for(FRAMES_TOPIC))
        if handoff is None:  # on its own: restore here, publish the image and the timings
            self.restorer = FrameRestorer()
            self.decode = self.restorer.decode
            self.sr_model = None
            if not self.sr_bypass:
                from cloudseg.models.registry import build_model

                self.sr_model = build_model("carn_m")
            self.stats_pub = self.create_publisher(FrameStats, STATS_TOPIC, qos_for(STATS_TOPIC))
            where = f"{RESTORED_TOPIC} ({self.params['restore']})"
        else:  # in the cloud process: SR on the shared pipeline, newest frame first
            self.decode = service.decode
            self.create_subscription(Knob, KNOB_TOPIC, self.on_knob, qos_for(KNOB_TOPIC))
            self.latest: FrameJob | None = None
            self.skipped = 0
            self.wake = threading.Condition()
            threading.Thread(target=self.restore_loop, daemon=True).start()
            where = "the segmentation node, in process"
        self.get_logger().info(f"restoring {FRAMES_TOPIC} -> {where}")

    def on_knob(self, knob: Knob) -> None:
        self.knob_scale = int(knob.scale)
        h264_crf = knob.codec in ("", "h264") and not knob.bitrate_kbps and knob.crf
        self.knob_crf = int(knob.crf) if h264_crf else None
        if bool(knob.sr_bypass) != self.sr_bypass:
            self.sr_bypass = bool(knob.sr_bypass)
            self.get_logger().info(f"knob {knob.seq}: SR {'bypassed' if self.sr_bypass else 'on'}")

    def on_frame(self, frame: Frame, info: MessageInfo) -> None:
        t0 = time.perf_counter()
        # transport: compressor publish to DDS arrival here, not to when this callback ran
        transport = (info["received_timestamp"] - Time.from_msg(frame.sent_stamp).nanoseconds) / 1e6
        self.frames_received += 1
        self.bytes_received += len(frame.data)
        lr, decode_ms = decode_frame(self, frame, self.decode)
        if lr is None:
            return
        job = FrameJob(
            frame,
            lr,
            decode_ms,
            transport,
            t0,
            self.frames_received,
            self.bytes_received,
            self.knob_scale,
            self.knob_crf,
            self.sr_bypass,
        )
        if self.handoff is None:
            self.restore_and_publish(job)
            return
        # Frames are decoded as they arrive (keeps the H.264 chain); SR + segmentation run in a
        # worker on the newest decoded frame only: a frame that waited is worth less than a new
        # one. `skipped` counts frames decoded but not processed.
        with self.wake:
            if self.latest is not None:
                self.skipped += 1
                pending = self.latest
                if int(pending.frame.scale) == 1 and pending.stream_scale > 1:
                    return  # keep the controller's profiling frame: it comes once
            self.latest = job
            self.wake.notify()

    def restore_loop(self) -> None:
        while True:
            with self.wake:
                while self.latest is None:
                    self.wake.wait()
                job, self.latest = self.latest, None
            f = job.frame
            try:
                pyramid = self.service.restore(job.lr, int(f.scale), self.sr_bypass)
                result = self.handoff(pyramid, job)
            except Exception as exc:  # keep serving; say what failed
                self.get_logger().error(f"frame {f.seq}: restoration failed: {exc}")
                continue
            if result is not None and self.params["publish_restored"]:
                self.restored_pub.publish(numpy_to_image(result.restored, "rgb8", f.header))

    def upscale(self, lr: np.ndarray, scale: int, width: int, height: int) -> np.ndarray:
        if self.sr_model is not None and scale in self.sr_model.scales:
            from cloudseg.models.carn import upscale_image

            rgb = upscale_image(self.sr_model, lr, scale)
            if rgb.shape[:2] == (height, width):
                return rgb
        return lr if lr.shape[:2] == (height, width) else upsample_bilinear(lr, (width, height))

    def restore_and_publish(self, job: FrameJob) -> None:
        f = job.frame
        t1 = time.perf_counter()
        rgb = self.upscale(job.lr, int(f.scale), int(f.width), int(f.height))
        restore_ms = (time.perf_counter() - t1) * 1e3
        if self.params["publish_restored"]:
            self.restored_pub.publish(numpy_to_image(rgb, "rgb8", f.header))
        self.stats_pub.publish(
            FrameStats(
                header=f.header,
                seq=f.seq,
                scale=f.scale,
                codec=f.codec,
                payload_bytes=len(f.data),
                sr_bypass=self.sr_model is None,
                decode_ms=job.decode_ms,
                sr_ms=restore_ms,
                segmentation_ms=0.0,
                total_ms=(time.perf_counter() - job.t0) * 1e3,
                transport_ms=job.transport_ms,
                frames_received=job.frames_received,
                bytes_received=job.bytes_received,
            )
        )


def main(args: list[str] | None = None) -> int:
    return run_node(SRNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
