"""Segmentation node (cloud): labels, colour overlay and timings for every frame.

Labels go out as ROS users expect (`cloudseg.nodes.label_topics`): mono8 train ids, the same
in the Cityscapes palette on `labels/color` while someone subscribes, and the class names once
per stream on `label_info` (vision_msgs/LabelInfo, transient local).

In the cloud process (`cloud_node`) it owns the models and the publishers of every stream's
results (`outputs`: labels, overlay, stats under the stream's namespace); the sr node
(`cloudseg.nodes.cloud_sr`) batches the streams' frames and runs them on these models
(`cloudseg.cloud`).

On its own (a split cloud: single-stream, the root namespace's vehicle only) it segments the
images on /cloudseg/restored, newest first: the subscription callback only hands the newest
image to a worker thread (`cloudseg.newest.NewestFirst`; images replaced before the worker
took them are skipped and counted in FrameStats.frames_skipped), which segments it as it is
(the sr node restored it to the size the segmenter runs at, or smaller) and publishes labels
at the camera size that the image's RestoredInfo (/cloudseg/restored/info, same stamp) gives;
without one (another publisher, or the info was lost) the labels have the image's size. The
worker is stopped and joined before the node is destroyed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from rclpy.node import Node
from rclpy.publisher import Publisher
from sensor_msgs.msg import Image

from cloudseg.cloud.router import frame_stats
from cloudseg.cloud.service import CloudService
from cloudseg.cloud.streams import normalise_namespace, stream_topic
from cloudseg.graph import (
    LABEL_INFO_TOPIC,
    LABELS_COLOR_TOPIC,
    LABELS_TOPIC,
    OVERLAY_TOPIC,
    RESTORED_INFO_TOPIC,
    RESTORED_TOPIC,
    SEGMENTATION,
    STATS_TOPIC,
)
from cloudseg.guard import BadInput, check_camera_size
from cloudseg.msg import FrameStats, RestoredInfo
from cloudseg.newest import NewestFirst, Recent
from cloudseg.nodes.common import (
    boundary,
    drop_input,
    qos_for,
    run_node,
    stamp_ns,
    stop_worker,
)
from cloudseg.nodes.convert import image_to_rgb, numpy_to_image
from cloudseg.nodes.label_topics import LabelPublishers, publish_label_info
from cloudseg.nodes.parameters import declare_parameters


@dataclass
class Outputs:
    """A stream's result publishers: labels (mono8, `/color` for subscribers), overlay, stats,
    and its LabelInfo (published once, transient local)."""

    labels: LabelPublishers
    overlay: Publisher
    stats: Publisher
    label_info: Publisher

    @classmethod
    def create(cls, node: SegmentationNode, ns: str | None = None) -> Outputs:
        """The publishers under stream namespace `ns` (None: the node's own names)."""

        def name(topic: str) -> str:
            return topic if ns is None else stream_topic(ns, topic)

        return cls(
            LabelPublishers(node, LABELS_TOPIC, LABELS_COLOR_TOPIC, name),
            node.create_publisher(Image, name(OVERLAY_TOPIC), qos_for(OVERLAY_TOPIC)),
            node.create_publisher(FrameStats, name(STATS_TOPIC), qos_for(STATS_TOPIC)),
            publish_label_info(node, node.service.class_names, name),
        )

    def destroy(self, node: Node) -> None:
        self.labels.destroy(node)
        for pub in (self.overlay, self.stats, self.label_info):
            node.destroy_publisher(pub)


class SegmentationNode(Node):
    def __init__(self, in_process: bool = False) -> None:
        super().__init__(SEGMENTATION.name)
        self.worker: NewestFirst[tuple[Image, float]] | None = None  # on its own, once up
        self.params = p = declare_parameters(self, SEGMENTATION)
        self.service = CloudService.from_params(p)
        self.own = Outputs.create(self)  # its own namespace's stream
        self._outputs: dict[str, Outputs] = {}  # other streams' (cloud process)
        if not in_process:  # on its own: newest restored image first, in a worker thread
            self.infos: Recent[int, RestoredInfo] = Recent(64)
            self.worker = NewestFirst(
                self.segment_job,
                name="segmentation-worker",
                on_error=lambda item, exc: drop_input(
                    self, "restored image", exc, what=f"restored image {stamp_ns(item[0].header)}"
                ),
            )
            self.create_subscription(
                RestoredInfo, RESTORED_INFO_TOPIC, self.on_info, qos_for(RESTORED_INFO_TOPIC)
            )
            self.create_subscription(
                Image, RESTORED_TOPIC, self.on_restored, qos_for(RESTORED_TOPIC)
            )
        untrained = self.service.first.untrained
        if untrained:
            self.get_logger().warning(
                f"UNTRAINED weights in use ({', '.join(untrained)}): labels are meaningless"
            )
        source = "the sr node's batches, in process" if in_process else RESTORED_TOPIC
        self.get_logger().info(
            f"segmenting {source} -> {LABELS_TOPIC} (+ /color), {OVERLAY_TOPIC}, "
            f"{LABEL_INFO_TOPIC} ({len(self.service.class_names)} classes): "
            f"{self.service.describe()}"
        )

    def outputs(self, namespace: str) -> Outputs:
        """The publishers of one stream's results (cloud process): `<ns>/cloudseg/labels`
        (+ `/color`), `overlay`, `stats` and `label_info`; its own namespace's stream's are the
        node's own."""
        ns = normalise_namespace(namespace)
        if ns == normalise_namespace(self.get_namespace()):
            return self.own
        out = self._outputs.get(ns)
        if out is None:
            out = self._outputs[ns] = Outputs.create(self, ns)
        return out

    def drop_outputs(self, namespace: str) -> None:
        """Destroy the publishers of a stream that went away."""
        out = self._outputs.pop(normalise_namespace(namespace), None)
        if out is not None:
            out.destroy(self)

    @boundary("restored info")
    def on_info(self, msg: RestoredInfo) -> None:
        self.infos.put(stamp_ns(msg.header), msg)

    @boundary("restored image")
    def on_restored(self, msg: Image) -> None:
        stamp_ns(msg.header)  # a stamp no clock can hold is dropped here
        self.worker.offer((msg, time.perf_counter()))

    def segment_job(self, item: tuple[Image, float], skipped: int) -> None:
        """The worker: segment one restored image (the newest when the worker was free)."""
        msg, t0 = item
        rgb = image_to_rgb(msg)
        # published just before the image: here unless lost (then labels at the image's
        # size); not waited for while none ever came (a publisher without RestoredInfo)
        info = self.infos.get(stamp_ns(msg.header), timeout=0.2 if len(self.infos) else 0.0)
        camera, seq, scale, sr_bypass = None, 0, 1, None  # the frame, as its info says
        if info is not None:
            try:
                camera = check_camera_size(
                    int(info.width), int(info.height), int(info.reduced_by), msg.width, msg.height
                )
            except BadInput as exc:
                drop_input(self, "restored info", exc, what=f"restored info {info.seq}")
            else:
                seq, scale, sr_bypass = info.seq, info.scale, info.sr_bypass
        result = self.service.segment_restored(rgb, camera)
        header = msg.header
        self.own.labels.publish(result.labels, header)
        self.own.overlay.publish(
            numpy_to_image(result.overlay(self.params["overlay_alpha"]), "rgb8", header)
        )
        # segmentation only: the sr node reports the frame (codec, transport, decode, restoration)
        stats = frame_stats(
            None,
            t0=t0,
            seq=seq,
            scale=scale,
            sr_bypass=result.mode != "sr" if sr_bypass is None else sr_bypass,
            decode_ms=result.decode_ms,
            sr_ms=result.sr_ms,
            segmentation_ms=result.segmentation_ms,
            untrained=bool(result.untrained),
            frames_skipped=skipped,
        )
        self.own.stats.publish(FrameStats(header=header, **stats))

    def destroy_node(self) -> None:
        stop_worker(self, "worker", "the segmentation worker")
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    return run_node(SegmentationNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
