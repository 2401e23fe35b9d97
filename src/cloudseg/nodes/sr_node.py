"""SR node (cloud): decode Frames and restore them, newest frame first.

Frames are decoded as they arrive, in the subscription callback (that keeps the H.264 reference
chain); restoration runs in a worker thread on the newest decoded frame only
(`cloudseg.newest.NewestFirst`: a frame that waited is worth less than a new one; frames
replaced before the worker took them are skipped and counted in FrameStats). SR (CARN-M) or
bilinear upsampling, as the `restore` parameter and then the Knob's `sr_bypass` say.

- In the cloud process (`cloud_node`) the worker restores on the shared pipeline
  (`CloudService`, owned by the segmentation node) and hands the pyramid, still on the
  device, to the segmentation node.
- On its own (a split cloud, `cloud_split`; or `cloud_bilinear`, the LR-bilinear baseline) it
  builds the same pipeline restoring only (`CloudService(restore_only=True)`: no segmenter) on
  its `device`, and publishes the restored image (rgb8) on /cloudseg/restored, with a
  `RestoredInfo` (seq, scale, camera size; published just before the image, same header) on
  /cloudseg/restored/info and the FrameStats of the frame. With `restored_size: segmenter`
  (the split cloud) the image has the size the segmentation node segments at, as the cloud
  process restores it: the backend's trained resolution (1024x512 for ESPNetv2 from a
  2048x1024 camera: SR x2 from a x4 stream), at most `cpu_max_width` wide on a CPU. The
  segmentation node then segments it as it is and scales its labels back to the camera size
  the RestoredInfo gives. With `restored_size: camera` (the bilinear baseline) it has the
  camera size (at most `cpu_max_width` wide on a CPU; 0 = no cap).

Frames come from the wire and are not trusted: stamps, codec, scale and claimed size are
checked (`cloudseg.guard.FrameLimits`: `max_width`, `max_height`, `scales`) before anything is
decoded or allocated, and a bad frame is dropped, counted and logged (rate-limited) without
leaving the callback. When the H.264 decoder waits for an IDR (a lost frame, a corrupt one, a
stream joined between IDRs) the node asks the vehicle for one on /cloudseg/keyframe_request
(`cloudseg.recovery`: at most one request per 200 ms while it waits).
"""

from __future__ import annotations

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
    RESTORED_INFO_TOPIC,
    RESTORED_TOPIC,
    SR,
    STATS_TOPIC,
)
from cloudseg.guard import BadInput, FrameLimits, check_stamp
from cloudseg.media.resize import upsample_bilinear
from cloudseg.media.stream import FrameRestorer
from cloudseg.msg import Frame, FrameStats, KeyframeRequest, Knob, RestoredInfo
from cloudseg.newest import NewestFirst
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
    frames_skipped: int = 0  # of this stream so far, when the worker took this frame


#: What the SR node hands over in process: (pyramid on the device, the frame) -> result
Handoff = Callable[[Pyramid, FrameJob], CloudResult | None]


class SRNode(Node):
    def __init__(self, service: CloudService | None = None, handoff: Handoff | None = None):
        super().__init__(SR.name)
        self.worker: NewestFirst[FrameJob] | None = None  # set once the node is up
        composed = handoff is not None
        self.params = p = declare_parameters(self, SR, composed=composed)
        self.sr_bypass = p["restore"] == "bilinear"
        self.handoff = handoff
        self.frames_received = self.bytes_received = 0
        self.knob_scale, self.knob_crf = 0, None
        self.limits = FrameLimits(p["max_width"], p["max_height"], tuple(p["scales"]))
        if composed:  # in the cloud process: SR on the shared pipeline, newest frame first
            service.limit_scales(self.limits.scales)
        else:  # on its own: the same pipeline, restoring only (no segmenter), on `device`
            service = CloudService.from_params(
                p,
                scales=self.limits.scales,
                restore_only=True,
                seg_size="full" if p["restored_size"] == "camera" else "trained",
            )
        self.service = service
        # one decoder per codec for the stream, with the limits (also in the cloud process)
        self.restorer = FrameRestorer(self.limits)
        self.keyframes = KeyframeRequester()
        self.waiting_for_idr = False
        self.restored_pub = self.create_publisher(Image, RESTORED_TOPIC, qos_for(RESTORED_TOPIC))
        self.keyframe_pub = self.create_publisher(
            KeyframeRequest, KEYFRAME_REQUEST_TOPIC, qos_for(KEYFRAME_REQUEST_TOPIC)
        )
        if composed:
            where = "the segmentation node, in process"
        else:
            self.info_pub = self.create_publisher(
                RestoredInfo, RESTORED_INFO_TOPIC, qos_for(RESTORED_INFO_TOPIC)
            )
            self.stats_pub = self.create_publisher(FrameStats, STATS_TOPIC, qos_for(STATS_TOPIC))
            where = f"{RESTORED_TOPIC} ({p['restore']}) at the {p['restored_size']} size: "
            where += service.describe()
        self.worker = NewestFirst(
            self.restore_job,
            name="sr-worker",
            keep=_profiling,
            on_error=lambda job, exc: drop_input(
                self, "restore", exc, what=f"frame {job.frame.seq} restoration"
            ),
        )
        self.create_subscription(Knob, KNOB_TOPIC, self.on_knob, qos_for(KNOB_TOPIC))
        self.create_subscription(Frame, FRAMES_TOPIC, self.on_frame, qos_for(FRAMES_TOPIC))
        self.get_logger().info(
            f"restoring {FRAMES_TOPIC} -> {where}; SR {'bypassed' if self.sr_bypass else 'on'}"
            f"; frames up to {p['max_width']}x{p['max_height']} at scales "
            f"{', '.join(map(str, self.limits.scales))}"
        )

    def on_parameters(self, changes: dict) -> None:
        """`ros2 param set`: `restore` switches SR on or off from the next frame."""
        if "restore" in changes:
            self.sr_bypass = changes["restore"] == "bilinear"

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
        # Restoration (and, in the cloud process, segmentation) runs in the worker on the
        # newest decoded frame only; a frame replaced before the worker took it is skipped
        # (the controller's profiling frame is kept: it comes once).
        self.worker.offer(job)

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

    def restore_job(self, job: FrameJob, skipped: int) -> None:
        """The worker: restore one frame (the newest when the worker was free)."""
        job.frames_skipped = skipped
        f = job.frame
        if self.handoff is not None:  # in the cloud process: the pyramid to the segmenter
            pyramid = self.service.restore(job.lr, int(f.scale), self.sr_bypass)
            result = self.handoff(pyramid, job)
            if result is not None and self.params["publish_restored"]:
                self.restored_pub.publish(numpy_to_image(result.restored, "rgb8", f.header))
            return
        image = self.service.restore_image(job.lr, int(f.scale), self.sr_bypass)
        k = image.reduced_by
        size = (max(1, int(f.width) // k), max(1, int(f.height) // k))
        rgb = upsample_bilinear(image.rgb, size)  # exactly 1/k of the camera (x3: 682 -> 2046)
        if self.params["publish_restored"]:
            info = RestoredInfo(
                header=f.header,
                seq=f.seq,
                scale=f.scale,
                width=f.width,
                height=f.height,
                reduced_by=min(k, 255),
                sr_bypass=image.mode != "sr",
            )
            self.info_pub.publish(info)  # first: the segmentation node looks it up by stamp
            self.restored_pub.publish(numpy_to_image(rgb, "rgb8", f.header))
        self.stats_pub.publish(
            FrameStats(
                header=f.header,
                seq=f.seq,
                scale=f.scale,
                codec=f.codec,
                payload_bytes=len(f.data),
                sr_bypass=image.mode != "sr",
                decode_ms=job.decode_ms,
                sr_ms=image.sr_ms,
                segmentation_ms=0.0,
                total_ms=(time.perf_counter() - job.t0) * 1e3,
                transport_ms=job.transport_ms,
                untrained=bool(image.untrained),
                frames_received=job.frames_received,
                bytes_received=job.bytes_received,
                frames_skipped=skipped,
            )
        )

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the worker (it finishes the frame it holds) and wait for it."""
        if getattr(self, "worker", None) is None:  # also when the start failed
            return
        if not self.worker.stop(timeout):
            self.get_logger().warning(f"the SR worker did not stop within {timeout:g} s")
        self.worker = None

    def destroy_node(self) -> None:
        self.stop()
        super().destroy_node()


def _profiling(job: FrameJob) -> bool:
    """The controller's profiling frame: full resolution while the stream runs at k > 1."""
    return int(job.frame.scale) == 1 and job.stream_scale > 1


def main(args: list[str] | None = None) -> int:
    return run_node(SRNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
