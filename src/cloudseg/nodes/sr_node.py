"""SR node (cloud): decode Frames and restore full resolution.

On its own it publishes the restored image (`restore: sr` with CARN-M, or `bilinear`, the
paper's LR-bilinear baseline). In the cloud process (`cloud_node`) it super-resolves with the
shared pipeline and hands the pyramid, still on the GPU, to the segmentation node.

Frames come from the wire and are not trusted: stamps, codec, scale and claimed size are
checked (`cloudseg.guard.FrameLimits`: `max_width`, `max_height`, `scales`) before anything is
decoded or allocated, and a bad frame is dropped, counted and logged (rate-limited) without
leaving the callback. When the H.264 decoder waits for an IDR (a lost frame, a corrupt one, a
stream joined between IDRs) the node asks the vehicle for one on /cloudseg/keyframe_request
(`cloudseg.recovery`: at most one request per 200 ms while it waits).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from rclpy.node import Node
from rclpy.subscription import MessageInfo
from sensor_msgs.msg import Image

from cloudseg.control.knob import check_knob
from cloudseg.graph import (
    FRAMES_TOPIC,
    KEYFRAME_REQUEST_TOPIC,
    KNOB_TOPIC,
    RESTORED_TOPIC,
    SR,
    STATS_TOPIC,
)
from cloudseg.guard import BadInput, FrameLimits, check_stamp
from cloudseg.media.resize import upsample_bilinear
from cloudseg.media.stream import FrameRestorer
from cloudseg.msg import Frame, FrameStats, KeyframeRequest, Knob
from cloudseg.nodes.common import boundary, declare_parameters, drop_input, qos_for, run_node
from cloudseg.nodes.convert import numpy_to_image
from cloudseg.recovery import KeyframeRequester
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
        self.params = p = declare_parameters(self, SR)
        self.sr_bypass = p["restore"] == "bilinear"
        self.service, self.handoff = service, handoff
        self.frames_received = self.bytes_received = 0
        self.knob_scale, self.knob_crf = 0, None
        self.limits = FrameLimits(p["max_width"], p["max_height"], tuple(p["scales"]))
        # one decoder per codec for the stream, with the limits (also in the cloud process)
        self.restorer = FrameRestorer(self.limits)
        self.keyframes = KeyframeRequester()
        self.waiting_for_idr = False
        self.restored_pub = self.create_publisher(Image, RESTORED_TOPIC, qos_for(RESTORED_TOPIC))
        self.keyframe_pub = self.create_publisher(
            KeyframeRequest, KEYFRAME_REQUEST_TOPIC, qos_for(KEYFRAME_REQUEST_TOPIC)
        )
        self.create_subscription(Frame, FRAMES_TOPIC, self.on_frame, qos_for(FRAMES_TOPIC))
        self.worker: threading.Thread | None = None
        if handoff is None:  # on its own: restore here, publish the image and the timings
            self.sr_model = None
            if not self.sr_bypass:
                from cloudseg.models.registry import build_model

                self.sr_model = build_model("carn_m")
            self.stats_pub = self.create_publisher(FrameStats, STATS_TOPIC, qos_for(STATS_TOPIC))
            where = f"{RESTORED_TOPIC} ({p['restore']})"
        else:  # in the cloud process: SR on the shared pipeline, newest frame first
            service.limit_scales(self.limits.scales)
            self.create_subscription(Knob, KNOB_TOPIC, self.on_knob, qos_for(KNOB_TOPIC))
            self.latest: FrameJob | None = None
            self.skipped = 0
            self.wake = threading.Condition()
            self.stopping = False
            self.worker = threading.Thread(target=self.restore_loop, name="sr-worker", daemon=True)
            self.worker.start()
            where = "the segmentation node, in process"
        self.get_logger().info(
            f"restoring {FRAMES_TOPIC} -> {where}; frames up to {p['max_width']}x"
            f"{p['max_height']} at scales {', '.join(map(str, self.limits.scales))}"
        )

    def on_parameters(self, changes: dict) -> None:
        """`ros2 param set`: `restore` switches SR on or off from the next frame."""
        if "restore" not in changes:
            return
        bypass = changes["restore"] == "bilinear"
        if self.handoff is None:  # on its own: the CARN-M model is built when first needed
            if bypass:
                self.sr_model = None
            elif self.sr_model is None:
                from cloudseg.models.registry import build_model

                self.sr_model = build_model("carn_m")
        self.sr_bypass = bypass

    @boundary("knob")
    def on_knob(self, knob: Knob) -> None:
        k = check_knob(knob)  # refused as a whole: the previous settings stay
        self.knob_scale, self.knob_crf = k.scale, k.h264_crf
        if k.sr_bypass != self.sr_bypass:
            self.sr_bypass = k.sr_bypass
            self.get_logger().info(f"knob {k.seq}: SR {'bypassed' if self.sr_bypass else 'on'}")

    @boundary("frame")
    def on_frame(self, frame: Frame, info: MessageInfo) -> None:
        t0 = time.perf_counter()
        self.frames_received += 1
        self.bytes_received += len(frame.data)
        check_stamp(frame.header.stamp, "header.stamp")
        sent_ns = check_stamp(frame.sent_stamp, "sent_stamp")
        # transport: compressor publish to DDS arrival here, not to when this callback ran
        transport = (info["received_timestamp"] - sent_ns) / 1e6
        lr, decode_ms = self.decode_frame(frame)
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

    def decode_frame(self, frame: Frame) -> tuple[np.ndarray | None, float]:
        """(lr, decode_ms), or (None, 0) when the frame is dropped: a bad frame is counted and
        logged with its reason, a lost one once per gap; while the H.264 decoder waits for an
        IDR, the vehicle is asked for one."""
        seq = int(frame.seq)
        try:
            lr, ms = self.restorer.decode(
                frame.data, frame.codec, seq, int(frame.scale), int(frame.width), int(frame.height)
            )
        except BadInput as exc:  # CodecError included
            drop_input(self, "frame", exc, what=f"frame {seq}")
            if frame.codec == "h264" and self.restorer.waiting_for_idr():
                self.ask_for_keyframe(frame, undecodable=True)
            return None, 0.0
        if lr is None:
            if not self.waiting_for_idr:
                self.get_logger().warning(
                    f"frame {seq}: a frame was lost; waiting for the next IDR frame"
                )
            self.waiting_for_idr = True
            self.ask_for_keyframe(frame)
            return None, 0.0
        if self.waiting_for_idr:
            self.get_logger().info(f"frame {seq}: IDR received, decoding again")
        self.waiting_for_idr = False
        self.keyframes.decoded(seq)
        return lr, ms

    def ask_for_keyframe(self, frame: Frame, undecodable: bool = False) -> None:
        ask = self.keyframes.failed(int(frame.seq), undecodable)
        if ask is None:  # asked less than 200 ms ago
            return
        request = KeyframeRequest(
            seq=ask.seq, last_decoded_seq=ask.last_decoded_seq, reason=ask.reason
        )
        request.header.stamp = self.get_clock().now().to_msg()
        request.header.frame_id = frame.header.frame_id
        self.keyframe_pub.publish(request)
        text = f"frame {ask.seq}: asked the vehicle for an IDR ({ask.reason}; "
        text += f"request {self.keyframes.requests})"
        if ask.repeat:  # asked again while waiting: the first request or its IDR was lost
            self.get_logger().debug(text)
        else:
            self.get_logger().info(text)

    def restore_loop(self) -> None:
        while True:
            with self.wake:
                while self.latest is None and not self.stopping:
                    self.wake.wait()
                if self.stopping:
                    return
                job, self.latest = self.latest, None
            f = job.frame
            try:
                pyramid = self.service.restore(job.lr, int(f.scale), self.sr_bypass)
                result = self.handoff(pyramid, job)
                if result is not None and self.params["publish_restored"]:
                    self.restored_pub.publish(numpy_to_image(result.restored, "rgb8", f.header))
            except Exception as exc:  # keep serving; say what failed (rate-limited)
                drop_input(self, "restore", exc, what=f"frame {f.seq} restoration")

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the worker (it finishes the frame it holds) and wait for it."""
        if self.worker is None:
            return
        with self.wake:
            self.stopping = True
            self.wake.notify_all()
        self.worker.join(timeout)
        if self.worker.is_alive():
            self.get_logger().warning(f"the SR worker did not stop within {timeout:g} s")
        self.worker = None

    def destroy_node(self) -> None:
        self.stop()
        super().destroy_node()

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
