"""Compressor node (vehicle): downsample + encode camera images into cloudseg Frames.

In the vehicle process (`vehicle_node`) the frame_selector hands it the selected frames with
their level (KEY frames become H.264 IDRs) by a function call. On its own it compresses every
image on /camera/image_raw (KEY whenever the encoder made an IDR).
"""

from __future__ import annotations

import numpy as np
from rclpy.node import Node
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from cloudseg.graph import COMPRESSED_TOPIC, COMPRESSOR, FRAMES_TOPIC, IMAGE_TOPIC, KNOB_TOPIC
from cloudseg.media.codecs import CodecError, compressed_format
from cloudseg.media.stream import CompressorSettings, FrameCompressor
from cloudseg.msg import Frame, Knob
from cloudseg.nodes.common import declare_parameters, qos_for, run_node
from cloudseg.nodes.convert import ImageError, compressed_image, image_to_rgb


class CompressorNode(Node):
    def __init__(self, in_process: bool = False) -> None:
        super().__init__(COMPRESSOR.name)
        self.params = declare_parameters(self, COMPRESSOR)
        self.compressor = FrameCompressor(CompressorSettings.from_params(self.params))
        self.seq = 0
        self.knob_seq = 0
        self.full_frame_requested = False
        self.frame_pub = self.create_publisher(Frame, FRAMES_TOPIC, qos_for(FRAMES_TOPIC))
        self.compressed_pub = self.create_publisher(
            CompressedImage, COMPRESSED_TOPIC, qos_for(COMPRESSED_TOPIC)
        )
        if not in_process:
            self.create_subscription(Image, IMAGE_TOPIC, self.on_image, qos_for(IMAGE_TOPIC))
        self.create_subscription(Knob, KNOB_TOPIC, self.on_knob, qos_for(KNOB_TOPIC))
        source = "the frame_selector's frames, in process" if in_process else IMAGE_TOPIC
        self.get_logger().info(
            f"compressing {source} -> {FRAMES_TOPIC} with {self.compressor.settings}"
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
        self.get_logger().info(f"knob {knob.seq} applies from the next frame: {new}")

    def on_image(self, msg: Image) -> None:
        try:
            rgb = image_to_rgb(msg)
        except ImageError as exc:
            self.get_logger().warning(f"image {_stamp(msg.header)} dropped: {exc}")
            return
        self.send(msg.header, rgb)

    def send(
        self, header: Header, rgb: np.ndarray, level: int | None = None, deviation: float = 0.0
    ) -> Frame | None:
        """Compress and publish one frame; `level` from the selector (KEY: an IDR), or None to
        call it KEY when the encoder made an IDR. Returns the Frame, None when dropped."""
        try:
            out = self.compressor.compress(
                rgb, self.full_frame_requested, keyframe=level == Frame.LEVEL_KEY
            )
            self.full_frame_requested = False
        except (CodecError, ValueError) as exc:
            self.get_logger().warning(f"image {_stamp(header)} dropped: {exc}")
            return None
        if level is None:
            level = Frame.LEVEL_KEY if out.keyframe else Frame.LEVEL_USEFUL
        frame = Frame(
            header=header,
            seq=self.seq,
            level=int(level),
            deviation=float(deviation),
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
                compressed_image(out.payload, compressed_format(out.codec), header)
            )
        return frame


def _stamp(header: Header) -> str:
    return f"{header.stamp.sec}.{header.stamp.nanosec:09d}"


def main(args: list[str] | None = None) -> int:
    return run_node(CompressorNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
