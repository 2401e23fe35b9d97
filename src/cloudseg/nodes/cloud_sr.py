"""SR node in the cloud process (`cloud_node`): serves many vehicles, in batches.

Streams are received and decoded as `cloudseg.nodes.cloud_ingest` says; they are discovered
in the ROS graph every `discovery_period_s` (or listed in `streams`), idle ones forgotten after
`stream_idle_s`. The newest decoded frame of each stream goes to a batcher
(`cloudseg.cloud.batcher`: `max_batch` frames or `max_wait_ms`, grouped by size, scale and
mode), each group to the `inference` (`cloudseg.cloud.inference`, on the segmentation node's
models), and each result back to its own stream (`cloudseg.cloud.router`): labels, overlay and
FrameStats on `<ns>/cloudseg/...` through the segmentation node's publishers, restored images
on `<ns>/cloudseg/restored`. The restored image and the overlay are made only while someone
subscribes to them. With `inference: triton` the batches go to Triton Inference Servers
(`triton_urls`, `cloudseg.triton.client`: failover between them): labels only, no restored
image or overlay (said once at start-up); a server that stops answering is logged and
skipped, and while every server is down each batch is dropped with one rate-limited log line
(the node keeps serving, and uses a server again once it is back).
"""

from __future__ import annotations

import numpy as np

from cloudseg.cloud.batcher import Batcher, Group
from cloudseg.cloud.engines import make_inference
from cloudseg.cloud.inference import Inference
from cloudseg.cloud.router import Routed, StreamFrame, route
from cloudseg.cloud.service import CloudService
from cloudseg.cloud.streams import FRAMES_SUFFIX, namespace_of, normalise_namespace
from cloudseg.control.accuracy import estimate_accuracy
from cloudseg.graph import RESTORED_TOPIC
from cloudseg.msg import FrameStats
from cloudseg.nodes.cloud_ingest import CloudIngest
from cloudseg.nodes.common import drop_input, forward_logs, stop_worker
from cloudseg.nodes.convert import numpy_to_image

FRAME_TYPE = "cloudseg/msg/Frame"


class CloudSRNode(CloudIngest):
    """``outputs``: the segmentation node (its `outputs(namespace)` gives a stream's
    labels/overlay/stats publishers; its `service` owns the models); ``inference``: instead of
    the one the `inference` parameter names (tests)."""

    def __init__(self, service: CloudService, outputs, inference: Inference | None = None):
        super().__init__(composed=True)
        self.batcher: Batcher[StreamFrame] | None = None  # once up
        p = self.params
        self.outputs = outputs
        service.limit_scales(self.limits.scales)
        self.service = service
        self.batch_frames = self.batch_count = 0
        self.batch_ms = 0.0
        forward_logs("cloudseg.triton", self)  # a Triton server down, back
        self.inference = inference or make_inference(
            p["inference"],
            service,
            outputs.params["overlay_alpha"],
            triton_urls=p["triton_urls"],
            triton_policy=p["triton_policy"],
            triton_timeout_s=p["triton_timeout_s"],
            max_batch=p["max_batch"],
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
        self.log_start(where)

    def stream_outputs(self, namespace: str) -> object:
        return self.outputs.outputs(namespace)

    def take(self, namespace: str, frame: StreamFrame) -> None:
        """The newest decoded frame of each stream only: one the batch had not taken yet is
        skipped (the controller's profiling frame is kept: it comes once)."""
        self.batcher.offer(namespace, frame)

    def remove_stream(self, namespace: str) -> None:
        ep = self.endpoints.pop(namespace, None)
        if ep is None:
            return
        for sub in ep.subscriptions:
            self.destroy_subscription(sub)
        self.destroy_publisher(ep.keyframe_pub)
        self.destroy_publisher(ep.restored_pub)
        self.outputs.drop_outputs(namespace)
        self.get_logger().info(f"stream {namespace}: gone (no publisher, idle): unsubscribed")

    def discover(self) -> None:
        """The discovery timer: serve new streams (every <ns>/cloudseg/frames topic of type
        Frame with a publisher, unless `streams` lists them), forget idle ones, unsubscribe
        discovered streams that are idle and have no publisher left."""
        for stream in self.streams.forget_idle():
            if self.batcher is not None:  # (None once stopped)
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
        new_route = self.service.new_route(first.lr.shape, first.scale, first.sr_bypass)
        if new_route:
            self.get_logger().info(new_route)
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
            out.labels.publish(r.labels, header)
            if r.overlay is not None and out.overlay.get_subscription_count() > 0:
                out.overlay.publish(numpy_to_image(r.overlay, "rgb8", header))
            if r.restored is not None and ep.restored_pub.get_subscription_count() > 0:
                ep.restored_pub.publish(numpy_to_image(r.restored, "rgb8", header))
            out.stats.publish(FrameStats(header=header, accuracy_estimate=accuracy, **r.stats))

    def profile(self, r: Routed) -> float:
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

    def destroy_node(self) -> None:
        stop_worker(self, "batcher", "the SR batcher")
        close = getattr(getattr(self, "inference", None), "close", None)
        if close is not None:  # the Triton client's channels and health thread
            close()
        super().destroy_node()
