"""SR node (cloud): decode Frames and restore them, newest frame first.

Frames are decoded as they arrive, in the subscription callback (that keeps the H.264 reference
chain); restoration runs in a worker thread on the newest decoded frame only
(`cloudseg.newest.NewestFirst`: a frame that waited is worth less than a new one; frames
replaced before the worker took them are skipped and counted in FrameStats). SR (CARN-M) or
bilinear upsampling, as the `restore` parameter and then the Knob's `sr_bypass` say.

- In the cloud process (`cloud_node`) it serves many vehicles: each vehicle stream (its
  namespace: frames on `<ns>/cloudseg/frames`) has its own decoders, sequence tracking,
  keyframe requests and counters (`cloudseg.cloud.streams`); the streams are discovered in
  the ROS graph every `discovery_period_s` (or listed in `streams`), idle ones forgotten
  after `stream_idle_s`. The newest decoded frame of each stream goes to a batcher
  (`cloudseg.cloud.batcher`: `max_batch` frames or `max_wait_ms`, grouped by size, scale and
  mode), each group to the `inference` (`cloudseg.cloud.inference`, on the segmentation
  node's models), and each result back to its own stream (`cloudseg.cloud.router`): labels,
  overlay and FrameStats on `<ns>/cloudseg/...` through the segmentation node's publishers,
  restored images on `<ns>/cloudseg/restored`. The restored image and the overlay are made
  only while someone subscribes to them. With `inference: triton` the batches go to Triton
  Inference Servers (`triton_urls`, `cloudseg.triton.client`: failover between them): labels
  only, no restored image or overlay (said once at start-up); a server that stops answering
  is logged and skipped, and while every server is down each batch is dropped with one
  rate-limited log line (the node keeps serving, and uses a server again once it is back).
  A Frame whose `stream_id` names another namespace than its topic's is dropped (kind
  "stream").
- On its own (a split cloud, `cloud_split`; or `cloud_bilinear`, the LR-bilinear baseline:
  single-stream, the root namespace's only) it
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

import functools
import logging
import time
from dataclasses import dataclass, field

import numpy as np
from rclpy.node import Node
from rclpy.subscription import MessageInfo
from sensor_msgs.msg import Image

from cloudseg.cloud.batcher import Batcher, Group
from cloudseg.cloud.engines import make_inference
from cloudseg.cloud.inference import Inference
from cloudseg.cloud.router import StreamFrame, route
from cloudseg.cloud.service import CloudService
from cloudseg.cloud.streams import (
    FRAMES_SUFFIX,
    StreamTable,
    check_stream_id,
    namespace_of,
    normalise_namespace,
    stream_topic,
)
from cloudseg.control.accuracy import estimate_accuracy
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
from cloudseg.msg import Frame, FrameStats, KeyframeRequest, Knob, RestoredInfo
from cloudseg.newest import NewestFirst
from cloudseg.nodes.common import boundary, drop_input, qos_for, run_node
from cloudseg.nodes.convert import numpy_to_image
from cloudseg.nodes.parameters import declare_parameters
from cloudseg.recovery import Ask

FRAME_TYPE = "cloudseg/msg/Frame"


@dataclass
class StreamEndpoints:
    """A stream's topics on the sr node (and, in the cloud process, the segmentation node's
    publishers of its results), with the settings of its Knob."""

    namespace: str
    fixed: bool  # listed (or the root's): kept while the node runs
    subscriptions: list = field(default_factory=list)
    keyframe_pub: object = None
    restored_pub: object = None
    outputs: object = None  # the segmentation node's publishers (cloud process)
    knob_scale: int = 0  # the stream's Knob (0: none yet): a scale-1 frame is then profiling
    knob_crf: int | None = None
    sr_bypass: bool | None = None  # the Knob's; None: the node's `restore` setting

    def label(self, what: str) -> str:
        """`what` as the log names it: with the stream's namespace unless it is the root."""
        return what if self.namespace == "/" else f"{self.namespace} {what}"


class SRNode(Node):
    """``outputs``: in the cloud process, the segmentation node (its `outputs(namespace)`
    gives a stream's labels/overlay/stats publishers; its `service` owns the models)."""

    def __init__(self, service: CloudService | None = None, outputs=None, inference=None):
        super().__init__(SR.name)
        #: the stream of the node's own namespace (topics by their relative names): the root
        #: stream "/" unless the node runs under a namespace
        self.home = normalise_namespace(self.get_namespace())
        self.worker: NewestFirst[StreamFrame] | None = None  # on its own, once up
        self.batcher: Batcher[StreamFrame] | None = None  # in the cloud process, once up
        composed = outputs is not None
        self.params = p = declare_parameters(self, SR, composed=composed)
        self.sr_bypass = p["restore"] == "bilinear"
        self.outputs = outputs
        self.limits = FrameLimits(p["max_width"], p["max_height"], tuple(p["scales"]))
        if composed:  # in the cloud process: the segmentation node's models, batched
            service.limit_scales(self.limits.scales)
        else:  # on its own: the same pipeline, restoring only (no segmenter), on `device`
            service = CloudService.from_params(
                p,
                scales=self.limits.scales,
                restore_only=True,
                seg_size="full" if p["restored_size"] == "camera" else "trained",
            )
        self.service = service
        idle_s = p.get("stream_idle_s", SR.param("stream_idle_s").default)
        self.streams = StreamTable(self.limits, idle_s)
        self.endpoints: dict[str, StreamEndpoints] = {}
        self.batch_frames = self.batch_count = 0
        self.batch_ms = 0.0
        if composed:
            self._forward_logs()
            self.inference: Inference = inference or make_inference(
                p["inference"],
                service,
                outputs.params["overlay_alpha"],
                triton_urls=p["triton_urls"],
                triton_policy=p["triton_policy"],
                triton_timeout_s=p["triton_timeout_s"],
            )
            self.makes_images = getattr(self.inference, "makes_images", True)
            self.batcher = Batcher(
                self.infer_group,
                key=StreamFrame.batch_key,
                max_batch=p["max_batch"],
                max_wait_ms=p["max_wait_ms"],
                keep=lambda f: f.profiling,
                on_error=self._batch_failed,
                name="cloud-batcher",
            )
            listed = [normalise_namespace(n) for n in p["streams"].split(",") if n.strip()]
            for ns in listed or [self.home]:  # its own namespace's is served when discovering
                self.add_stream(ns, fixed=True)
            where = (
                f"streams {', '.join(listed)}"
                if listed
                else f"every <ns>/{FRAMES_SUFFIX} (discovered every {p['discovery_period_s']:g} s)"
            )
            describe = getattr(self.inference, "describe", lambda: p["inference"])
            where += f" -> batches of up to {p['max_batch']} frames or {p['max_wait_ms']:g} ms"
            if p["inference"] == "local":
                where += f" -> the segmentation node, in process ({describe()})"
            else:
                where += f" -> {describe()}"
            if not self.makes_images:
                where += (
                    "; labels only: no restored image or overlay with this inference "
                    f"(<ns>/{RESTORED_TOPIC} and the overlay topics stay silent)"
                )
            self.batcher.start()
            self.discover()
            self.create_timer(p["discovery_period_s"], self.discover)
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
                keep=lambda f: f.profiling,
                on_error=lambda job, exc: drop_input(
                    self, "restore", exc, what=f"frame {job.seq} restoration"
                ),
            )
            self.add_stream(self.home, fixed=True)
        self.get_logger().info(
            f"restoring {FRAMES_TOPIC} -> {where}; SR {'bypassed' if self.sr_bypass else 'on'}"
            f"; frames up to {p['max_width']}x{p['max_height']} at scales "
            f"{', '.join(map(str, self.limits.scales))}"
        )

    # --- streams ------------------------------------------------------------------------------

    def add_stream(self, namespace: str, fixed: bool = False) -> StreamEndpoints:
        """Subscribe to a stream's frames and Knob and create its publishers."""
        ns = normalise_namespace(namespace)
        ep = self.endpoints.get(ns)
        if ep is not None:
            return ep
        ep = StreamEndpoints(ns, fixed)
        topic = functools.partial(stream_topic, ns)
        ep.keyframe_pub = self.create_publisher(
            KeyframeRequest, topic(KEYFRAME_REQUEST_TOPIC), qos_for(KEYFRAME_REQUEST_TOPIC)
        )
        ep.restored_pub = self.create_publisher(
            Image, topic(RESTORED_TOPIC), qos_for(RESTORED_TOPIC)
        )
        if self.outputs is not None:
            ep.outputs = self.outputs.outputs(ns)
        self.endpoints[ns] = ep  # before the subscriptions: a frame may come at once
        ep.subscriptions = [
            self.create_subscription(
                Knob, topic(KNOB_TOPIC), functools.partial(self.on_knob, ns), qos_for(KNOB_TOPIC)
            ),
            self.create_subscription(
                Frame,
                topic(FRAMES_TOPIC),
                functools.partial(self.on_frame, ns),
                qos_for(FRAMES_TOPIC),
            ),
        ]
        if ns != self.home or not fixed:
            self.get_logger().info(f"stream {ns}: serving {topic(FRAMES_TOPIC)}")
        return ep

    def remove_stream(self, namespace: str) -> None:
        ep = self.endpoints.pop(namespace, None)
        if ep is None:
            return
        for sub in ep.subscriptions:
            self.destroy_subscription(sub)
        self.destroy_publisher(ep.keyframe_pub)
        self.destroy_publisher(ep.restored_pub)
        if self.outputs is not None:
            self.outputs.drop_outputs(namespace)
        self.get_logger().info(f"stream {namespace}: gone (no publisher, idle): unsubscribed")

    def discover(self) -> None:
        """The discovery timer (cloud process): serve new streams (every <ns>/cloudseg/frames
        topic of type Frame with a publisher, unless `streams` lists them), forget idle ones,
        unsubscribe discovered streams that are idle and have no publisher left."""
        for stream in self.streams.forget_idle():
            if self.batcher is not None:
                self.batcher.forget(stream.id)
            self.get_logger().info(
                f"stream {stream.id}: no frame for {self.streams.idle_s:g} s: forgotten "
                f"(decoders freed; {stream.frames_received} frames received, "
                f"{stream.frames_done} results)"
            )
        live: set[str] = set()
        if not self.params.get("streams"):
            for name, types in self.get_topic_names_and_types():
                ns = namespace_of(name)
                if ns is None or FRAME_TYPE not in types or self.count_publishers(name) == 0:
                    continue
                live.add(ns)
                self.add_stream(ns)
        for ns, ep in list(self.endpoints.items()):
            if not ep.fixed and ns not in live and ns not in self.streams:
                self.remove_stream(ns)

    # --- callbacks ----------------------------------------------------------------------------

    def on_parameters(self, changes: dict) -> None:
        """`ros2 param set`: `restore` switches SR on or off from the next frame (of every
        stream, overriding what their Knobs said)."""
        if "restore" in changes:
            self.sr_bypass = changes["restore"] == "bilinear"
            for ep in self.endpoints.values():
                ep.sr_bypass = None

    @boundary("knob")
    def on_knob(self, namespace: str, knob: Knob) -> None:
        k = check_knob(knob)  # refused as a whole: the previous settings stay
        ep = self.endpoints.get(namespace)
        if ep is None:
            return
        ep.knob_scale, ep.knob_crf = k.scale, k.h264_crf
        if k.sr_bypass != self.bypass(ep):
            self.get_logger().info(
                ep.label(f"knob {k.seq}: SR {'bypassed' if k.sr_bypass else 'on'}")
            )
        ep.sr_bypass = k.sr_bypass

    def bypass(self, ep: StreamEndpoints) -> bool:
        return self.sr_bypass if ep.sr_bypass is None else ep.sr_bypass

    @boundary("frame")
    def on_frame(self, namespace: str, frame: Frame, info: MessageInfo) -> None:
        t0 = time.perf_counter()
        ep = self.endpoints.get(namespace)
        if ep is None:
            return
        seq = int(frame.seq)
        try:
            check_stream_id(frame.stream_id, namespace)
        except BadInput as exc:
            drop_input(self, "frame", exc, what=ep.label(f"frame {seq}"))
            return
        check_stamp(frame.header.stamp, "header.stamp")
        sent_ns = check_stamp(frame.sent_stamp, "sent_stamp")
        # transport: compressor publish to DDS arrival here, not to when this callback ran
        transport = (info["received_timestamp"] - sent_ns) / 1e6
        stream = self.streams.seen(namespace)
        try:
            decoded = stream.decode(
                frame.data, frame.codec, seq, int(frame.scale), int(frame.width), int(frame.height)
            )
        except BadInput as exc:  # CodecError included
            drop_input(self, "frame", exc, what=ep.label(f"frame {seq}"))
            self.ask_for_keyframe(ep, frame, stream.take_ask())
            return
        if decoded.log is not None and decoded.lr is None:  # (one severity per call site)
            self.get_logger().warning(ep.label(decoded.log))
        elif decoded.log is not None:
            self.get_logger().info(ep.label(decoded.log))
        self.ask_for_keyframe(ep, frame, decoded.ask)
        if decoded.lr is None:
            return
        job = StreamFrame(
            stream_id=namespace,
            header=frame.header,
            seq=seq,
            scale=int(frame.scale),
            codec=frame.codec,
            width=int(frame.width),
            height=int(frame.height),
            payload_bytes=len(frame.data),
            lr=decoded.lr,
            decode_ms=decoded.decode_ms,
            transport_ms=transport,
            t0=t0,
            frames_received=stream.frames_received,
            bytes_received=stream.bytes_received,
            sr_bypass=self.bypass(ep),
            stream_scale=ep.knob_scale,
            stream_crf=ep.knob_crf,
        )
        # the newest decoded frame of each stream only; a frame replaced before the worker or
        # the batch took it is skipped (the controller's profiling frame is kept: it comes once)
        if self.batcher is not None:
            self.batcher.offer(namespace, job)
        else:
            self.worker.offer(job)

    def ask_for_keyframe(self, ep: StreamEndpoints, frame: Frame, ask: Ask | None) -> None:
        if ask is None:  # not waiting, or asked less than 200 ms ago
            return
        request = KeyframeRequest(
            seq=ask.seq, last_decoded_seq=ask.last_decoded_seq, reason=ask.reason
        )
        request.header.stamp = self.get_clock().now().to_msg()
        request.header.frame_id = frame.header.frame_id
        ep.keyframe_pub.publish(request)
        stream = self.streams.get(ep.namespace)
        requests = stream.keyframes.requests if stream is not None else 0
        text = ep.label(f"frame {ask.seq}: asked the vehicle for an IDR ({ask.reason}; ")
        text += f"request {requests})"
        # asked again while waiting (the first request or its IDR was lost): debug; the first
        # of a wait: info, at most one line per 10 s per stream (a hostile or very lossy
        # stream asks up to 5 times a second)
        line = (
            None
            if ask.repeat or stream is None
            else stream.log_rate.line(("ask", ask.reason), text)
        )
        if line is None:
            self.get_logger().debug(text)
        else:
            self.get_logger().info(line)

    # --- the cloud process: batches -----------------------------------------------------------

    def infer_group(self, group: Group[StreamFrame]) -> None:
        """The batcher's worker: one inference call for a group of frames (one per stream),
        each result back to its own stream. The restored image and the overlay are asked for
        only when someone subscribes to them on a stream of the group."""
        frames = [e.item for e in group.entries]
        eps = [self.endpoints.get(f.stream_id) for f in frames]
        want_restored = (
            self.makes_images
            and self.params["publish_restored"]
            and any(ep is not None and ep.restored_pub.get_subscription_count() > 0 for ep in eps)
        )
        want_overlay = self.makes_images and any(
            ep is not None and ep.outputs.overlay.get_subscription_count() > 0 for ep in eps
        )
        if hasattr(self.inference, "overlay_alpha"):
            self.inference.overlay_alpha = self.outputs.params["overlay_alpha"]
        first = frames[0]
        result = self.inference.infer(
            np.stack([f.lr for f in frames]),
            first.scale,
            first.sr_bypass,
            want_restored=want_restored,
            want_overlay=want_overlay,
        )
        self.batch_count += 1
        self.batch_frames += len(frames)
        self.batch_ms += result.ms
        routed = route(frames, result, group.batch_size, [e.skipped for e in group.entries])
        for r, ep in zip(routed, eps, strict=True):
            stream = self.streams.get(r.stream_id)
            if ep is None:  # the stream went away meanwhile
                continue
            if stream is not None:
                stream.frames_done += 1
            header = r.frame.header
            accuracy = self.profile(r) if r.frame.profiling else -1.0
            out = ep.outputs
            out.labels.publish(numpy_to_image(r.labels, "mono8", header))
            if r.overlay is not None and out.overlay.get_subscription_count() > 0:
                out.overlay.publish(numpy_to_image(r.overlay, "rgb8", header))
            if r.restored is not None and ep.restored_pub.get_subscription_count() > 0:
                ep.restored_pub.publish(numpy_to_image(r.restored, "rgb8", header))
            out.stats.publish(FrameStats(header=header, accuracy_estimate=accuracy, **r.stats))

    def profile(self, r) -> float:
        """The controller's profiling frame: agreement of the labels at the stream's scale with
        the full frame's (-1 when it cannot be estimated)."""
        f = r.frame
        try:
            accuracy = estimate_accuracy(
                self.service, f.lr, r.labels, f.stream_scale, f.sr_bypass, f.stream_crf
            )
        except Exception as exc:  # the estimate is optional: say why it is missing
            self.get_logger().warning(f"frame {f.seq}: no accuracy estimate: {exc}")
            return -1.0
        self.get_logger().info(
            f"frame {f.seq}: profiling frame, labels at x{f.stream_scale} agree "
            f"{accuracy:.1%} with full resolution"
        )
        return accuracy

    def _batch_failed(self, group: Group[StreamFrame], exc: Exception) -> None:
        from cloudseg.triton.client import NoServerError  # (no tritonclient import)

        if isinstance(exc, NoServerError):  # one rate-limited line per batch, no traceback
            streams = ", ".join(sorted({e.stream_id for e in group.entries}))
            what = f"batch of {len(group.entries)} frame(s) of {streams}"
            drop_input(self, "batch", exc, what=what, kind="no_server")
            return
        for e in group.entries:
            ep = self.endpoints.get(e.stream_id)
            what = ep.label(f"frame {e.item.seq}") if ep else f"frame {e.item.seq}"
            drop_input(self, "restore", exc, what=f"{what} restoration")

    def restore_job(self, f: StreamFrame, skipped: int) -> None:
        """The worker (on its own): restore one frame (the newest when the worker was free)."""
        image = self.service.restore_image(f.lr, f.scale, f.sr_bypass)
        k = image.reduced_by
        size = (max(1, f.width // k), max(1, f.height // k))
        rgb = upsample_bilinear(image.rgb, size)  # exactly 1/k of the camera (x3: 682 -> 2046)
        ep = self.endpoints[self.home]
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
            ep.restored_pub.publish(numpy_to_image(rgb, "rgb8", f.header))
        self.stats_pub.publish(
            FrameStats(
                header=f.header,
                seq=f.seq,
                scale=f.scale,
                codec=f.codec,
                payload_bytes=f.payload_bytes,
                sr_bypass=image.mode != "sr",
                decode_ms=f.decode_ms,
                sr_ms=image.sr_ms,
                segmentation_ms=0.0,
                total_ms=(time.perf_counter() - f.t0) * 1e3,
                transport_ms=f.transport_ms,
                untrained=bool(image.untrained),
                frames_received=f.frames_received,
                bytes_received=f.bytes_received,
                frames_skipped=skipped,
                stream_id=f.stream_id,
            )
        )

    def _forward_logs(self) -> None:
        """The Triton client's log lines (a server down, back) into this node's log."""
        node_logger = self.get_logger()

        class _ToNode(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                text = record.getMessage()
                if record.levelno >= logging.ERROR:
                    node_logger.error(text)
                elif record.levelno >= logging.WARNING:
                    node_logger.warning(text)
                else:
                    node_logger.info(text)

        logger = logging.getLogger("cloudseg.triton")
        logger.setLevel(logging.INFO)
        logger.addHandler(_ToNode())
        logger.propagate = False

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the worker or the batcher (each finishes what it holds) and wait for it."""
        for attr in ("worker", "batcher"):
            worker = getattr(self, attr, None)
            if worker is None:  # also when the start failed
                continue
            if not worker.stop(timeout):
                self.get_logger().warning(f"the SR {attr} did not stop within {timeout:g} s")
            setattr(self, attr, None)

    def destroy_node(self) -> None:
        self.stop()
        close = getattr(getattr(self, "inference", None), "close", None)
        if close is not None:  # the Triton client's channels and health thread
            close()
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    return run_node(SRNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
