"""Monitor node: watches the stream end to end and fills a StreamStats (used by the demo)."""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING

import numpy as np
from rclpy.node import Node
from rclpy.qos import QoSProfile
from rclpy.subscription import MessageInfo
from sensor_msgs.msg import Image

from cloudseg.graph import (
    CAMERA_LABELS_INFO_TOPIC,
    CAMERA_LABELS_TOPIC,
    FRAMES_TOPIC,
    IMAGE_TOPIC,
    KNOB_TOPIC,
    LABELS_TOPIC,
    RESTORED_TOPIC,
    STATS_TOPIC,
)
from cloudseg.media.quality import psnr
from cloudseg.media.resize import downsample
from cloudseg.msg import Frame, FrameStats, Knob, LabelAge
from cloudseg.nodes.common import boundary, qos_for, stamp_ns
from cloudseg.nodes.convert import image_to_numpy, image_to_rgb
from cloudseg.stream_stats import StreamStats, receiver_report

if TYPE_CHECKING:
    from cloudseg.scoring import LabelScorer


def _key(header) -> tuple[int, int]:
    return (header.stamp.sec, header.stamp.nanosec)


#: Queue depth of the monitor's subscriptions to small messages (Frames, stats, label ages):
#: it is busy with images at times, and a best-effort reader drops what overflows its queue.
SMALL_DEPTH = 200


def _deep(topic: str) -> QoSProfile:
    qos = qos_for(topic)
    return QoSProfile(
        history=qos.history,
        depth=SMALL_DEPTH,
        reliability=qos.reliability,
        durability=qos.durability,
    )


class MonitorNode(Node):
    """Counts frames, bytes and latencies; PSNR of restored images against the originals.

    End-to-end latency (capture stamp to restored image here) is meaningful when the source
    stamps frames as it publishes them (`stamp_mode: now`). With a `scorer` (demo --score) it
    also hands every original image and every label map to it, by stamp.
    """

    def __init__(
        self,
        stats: StreamStats,
        keep_originals: int = 64,
        scorer: LabelScorer | None = None,
        namespace: str = "/",
    ) -> None:
        super().__init__("cloudseg_monitor", namespace=namespace)  # the graph's topics in it
        self.stats = stats
        self.scorer = scorer
        self.keep = keep_originals
        self.labelled: set[tuple[int, int]] = set()  # frames whose labels came back
        self.last_sent: tuple[int, int] | None = None  # the last frame the compressor sent
        self.originals: OrderedDict[tuple[int, int], object] = OrderedDict()
        self.create_subscription(Image, IMAGE_TOPIC, self.on_image, qos_for(IMAGE_TOPIC))
        self.create_subscription(Frame, FRAMES_TOPIC, self.on_frame, _deep(FRAMES_TOPIC))
        self.create_subscription(FrameStats, STATS_TOPIC, self.on_stats, _deep(STATS_TOPIC))
        self.create_subscription(Knob, KNOB_TOPIC, self.on_knob, qos_for(KNOB_TOPIC))
        self.last_knob: tuple | None = None
        self.create_subscription(Image, RESTORED_TOPIC, self.on_restored, qos_for(RESTORED_TOPIC))
        self.create_subscription(Image, LABELS_TOPIC, self.on_labels, qos_for(LABELS_TOPIC))
        self.create_subscription(
            LabelAge, CAMERA_LABELS_INFO_TOPIC, self.on_label_age, _deep(CAMERA_LABELS_INFO_TOPIC)
        )
        if scorer is not None:  # the labels the vehicle holds for every camera frame
            self.create_subscription(
                Image, CAMERA_LABELS_TOPIC, self.on_camera_labels, qos_for(CAMERA_LABELS_TOPIC)
            )

    @staticmethod
    def ms_since(header, info: MessageInfo) -> float:
        """Milliseconds from a header's stamp to when DDS handed us the message (not counting
        the time it then waited for this single-threaded monitor)."""
        return (info["received_timestamp"] - stamp_ns(header)) / 1e6

    @property
    def reported(self) -> set[tuple[int, int]]:
        """Frames the cloud reported (by the node that received them)."""
        return self.stats.reported

    @boundary("camera image")
    def on_image(self, msg: Image) -> None:
        self.stats.add_camera_frame()
        self.originals[_key(msg.header)] = rgb = image_to_rgb(msg)
        if self.scorer is not None:
            self.scorer.add_original(_key(msg.header), rgb)
        while len(self.originals) > self.keep:
            self.originals.popitem(last=False)

    @boundary("frame")
    def on_frame(self, frame: Frame) -> None:
        key = frame.level == Frame.LEVEL_KEY
        self.stats.add_sent(int(frame.seq), key, len(frame.data), frame.encode_ms)
        self.last_sent = _key(frame.header)

    @boundary("stats")
    def on_stats(self, msg: FrameStats) -> None:
        # a split cloud reports a frame twice: the sr node (codec, seq, transport, decode and
        # restoration) and the segmentation node (segmentation only); count each once
        self.stats.add_cloud_report(
            _key(msg.header),
            receiver=receiver_report(msg.codec),
            seq=int(msg.seq),
            frames_received=int(msg.frames_received),
            transport_ms=msg.transport_ms,
            decode_restore_ms=msg.decode_ms + msg.sr_ms,
            segmentation_ms=msg.segmentation_ms,
        )
        if msg.accuracy_estimate >= 0:
            self.stats.accuracy_estimates.append(float(msg.accuracy_estimate))

    @boundary("knob")
    def on_knob(self, k: Knob) -> None:
        """Count the controller's changes of settings and its full-frame requests."""
        fields = (
            k.scale,
            k.codec,
            k.bitrate_kbps,
            k.crf,
            k.max_fps,
            k.key_threshold,
            k.useful_threshold,
            k.sr_bypass,
        )
        if self.last_knob is not None and fields != self.last_knob:
            self.stats.knob_changes += 1
        self.last_knob = fields
        self.stats.full_frames_asked += bool(k.request_full_frame)

    @boundary("label age")
    def on_label_age(self, msg: LabelAge) -> None:
        self.stats.label_age_ms.append(float(msg.age_ms))
        self.stats.max_seq = max(self.stats.max_seq, int(msg.source_seq))

    @boundary("camera labels")
    def on_camera_labels(self, msg: Image) -> None:
        self.scorer.add_labels(_key(msg.header), image_to_numpy(msg), stream="held")

    @boundary("labels")
    def on_labels(self, msg: Image, info: MessageInfo) -> None:
        self.stats.labels_received += 1
        self.labelled.add(_key(msg.header))
        self.stats.labels_sizes.append((msg.width, msg.height))
        self.stats.add_latency("labels_end_to_end", self.ms_since(msg.header, info))
        labels = image_to_numpy(msg)
        self.stats.label_values.update(np.unique(labels).tolist())
        if self.scorer is not None:
            self.scorer.add_labels(_key(msg.header), labels)

    @boundary("restored image")
    def on_restored(self, msg: Image, info: MessageInfo) -> None:
        self.stats.restored_stamps_ns.append(
            msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
        )
        self.stats.restored_sizes.append((msg.width, msg.height))
        self.stats.add_latency("end_to_end", self.ms_since(msg.header, info))
        original = self.originals.pop(_key(msg.header), None)
        if original is not None:
            restored = image_to_rgb(msg)
            factor = original.shape[1] // restored.shape[1]
            if factor > 1:  # restored at reduced size (CPU mode): compare at that size
                original = downsample(original, factor)[: restored.shape[0], : restored.shape[1]]
            if original.shape == restored.shape:
                self.stats.psnr_db.append(psnr(original, restored))
