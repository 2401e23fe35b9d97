"""Compressor node (vehicle): downsample + encode camera images into cloudseg Frames."""

from __future__ import annotations

from rclpy.node import Node
from sensor_msgs.msg import CompressedImage, Image

from cloudseg.graph import COMPRESSED_TOPIC, COMPRESSOR, FRAMES_TOPIC, IMAGE_TOPIC, KNOB_TOPIC
from cloudseg.media.codecs import CodecError, compressed_format
from cloudseg.media.stream import CompressorSettings, FrameCompressor
from cloudseg.msg import Frame, Knob
from cloudseg.nodes.common import declare_parameters, qos_for, run_node
from cloudseg.nodes.convert import ImageError, compressed_image, image_to_rgb
from cloudseg.selection.rate import RateCap


class CompressorNode(Node):
    def __init__(self) -> None:
        super().__init__(COMPRESSOR.name)
        self.params = declare_parameters(self, COMPRESSOR)
        self.compressor = FrameCompressor(CompressorSettings.from_params(self.params))
        self.rate_cap = RateCap(self.params["max_fps"])
        self.seq = 0
        self.knob_seq = 0
        self.full_frame_requested = False
        self.frame_pub = self.create_publisher(Frame, FRAMES_TOPIC, qos_for(FRAMES_TOPIC))
        self.compressed_pub = self.create_publisher(
            CompressedImage, COMPRESSED_TOPIC, qos_for(COMPRESSED_TOPIC)
        )
        self.create_subscription(Image, IMAGE_TOPIC, self.on_image, qos_for(IMAGE_TOPIC))
        self.create_subscription(Knob, KNOB_TOPIC, self.on_knob, qos_for(KNOB_TOPIC))
        self.get_logger().info(
            f"compressing {IMAGE_TOPIC} -> {FRAMES_TOPIC} with {self.compressor.settings}"
        )

    def on_knob(self, knob: Knob) -> None:
        s = self.compressor.settings
        try:
            new = s.with_changes(
                scale=int(knob.scale) or s.scale,
                codec=knob.codec or s.codec,
                bitrate_kbps=int(knob.bitrate_kbps),
                crf=int(knob.crf or s.crf),
                quality=int(knob.quality or s.quality),
            )
        except (CodecError, ValueError) as exc:
            self.get_logger().error(f"knob {knob.seq} refused: {exc}")
            return
        self.compressor.apply(new)
        self.knob_seq = int(knob.seq)
        self.full_frame_requested = bool(knob.request_full_frame)
        self.rate_cap.max_fps = max(float(knob.max_fps), 0.0)
        self.get_logger().info(f"knob {knob.seq} applies from the next frame: {new}")

    def on_image(self, msg: Image) -> None:
        stamp_ns = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        if not self.rate_cap.admit(stamp_ns):
            return  # over the frame-rate cap
        try:
            out = self.compressor.compress(image_to_rgb(msg), self.full_frame_requested)
            self.full_frame_requested = False
        except (ImageError, CodecError, ValueError) as exc:
            self.get_logger().warning(
                f"image {msg.header.stamp.sec}.{msg.header.stamp.nanosec:09d} dropped: {exc}"
            )
            return
        frame = Frame(
            header=msg.header,
            seq=self.seq,
            level=Frame.LEVEL_KEY,
            deviation=0.0,
            scale=out.scale,
            width=out.width,
            height=out.height,
            codec=out.codec,
            keyframe=out.keyframe,
            knob_seq=self.knob_seq,
            encode_ms=out.encode_ms,
        )
        frame.data = out.payload
        frame.sent_stamp = self.get_clock().now().to_msg()
        self.frame_pub.publish(frame)
        self.seq += 1
        if out.codec != "h264" and self.params["publish_compressed"]:
            self.compressed_pub.publish(
                compressed_image(out.payload, compressed_format(out.codec), msg.header)
            )


def main(args: list[str] | None = None) -> int:
    return run_node(CompressorNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
