"""Monitor node: watches the stream end to end and fills a StreamStats (used by the demo)."""

from __future__ import annotations

from collections import OrderedDict

from rclpy.node import Node
from rclpy.time import Time
from sensor_msgs.msg import Image

from cloudseg.graph import FRAMES_TOPIC, IMAGE_TOPIC, RESTORED_TOPIC, STATS_TOPIC
from cloudseg.media.quality import psnr
from cloudseg.msg import Frame, FrameStats
from cloudseg.nodes.common import qos_for
from cloudseg.nodes.convert import image_to_rgb
from cloudseg.stream_stats import StreamStats


def _key(header) -> tuple[int, int]:
    return (header.stamp.sec, header.stamp.nanosec)


class MonitorNode(Node):
    """Counts frames, bytes and latencies; PSNR of restored images against the originals.

    End-to-end latency (capture stamp to restored image here) is meaningful when the source
    stamps frames as it publishes them (`stamp_mode: now`).
    """

    def __init__(self, stats: StreamStats, keep_originals: int = 64) -> None:
        super().__init__("cloudseg_monitor")
        self.stats = stats
        self.keep = keep_originals
        self.originals: OrderedDict[tuple[int, int], object] = OrderedDict()
        self.create_subscription(Image, IMAGE_TOPIC, self.on_image, qos_for(IMAGE_TOPIC))
        self.create_subscription(Frame, FRAMES_TOPIC, self.on_frame, qos_for(FRAMES_TOPIC))
        self.create_subscription(FrameStats, STATS_TOPIC, self.on_stats, qos_for(STATS_TOPIC))
        self.create_subscription(Image, RESTORED_TOPIC, self.on_restored,
                                 qos_for(RESTORED_TOPIC))

    def ms_since(self, stamp) -> float:
        return (self.get_clock().now() - Time.from_msg(stamp)).nanoseconds / 1e6

    def on_image(self, msg: Image) -> None:
        self.stats.frames_in += 1
        self.originals[_key(msg.header)] = image_to_rgb(msg)
        while len(self.originals) > self.keep:
            self.originals.popitem(last=False)

    def on_frame(self, frame: Frame) -> None:
        self.stats.frames_sent += 1
        self.stats.payload_bytes += len(frame.data)
        self.stats.add_latency("encode", frame.encode_ms)

    def on_stats(self, msg: FrameStats) -> None:
        self.stats.frames_received += 1
        self.stats.add_latency("transport", msg.transport_ms)
        self.stats.add_latency("decode_restore", msg.decode_ms + msg.sr_ms)

    def on_restored(self, msg: Image) -> None:
        self.stats.restored_stamps_ns.append(msg.header.stamp.sec * 10**9
                                             + msg.header.stamp.nanosec)
        self.stats.restored_sizes.append((msg.width, msg.height))
        self.stats.add_latency("end_to_end", self.ms_since(msg.header.stamp))
        original = self.originals.pop(_key(msg.header), None)
        if original is not None:
            self.stats.psnr_db.append(psnr(original, image_to_rgb(msg)))
