"""Compressor node (vehicle): downsample + encode camera images into cloudseg Frames.

In the vehicle process (`vehicle_node`) the frame_selector hands it the selected frames with
their level (KEY frames become H.264 IDRs) by a function call. On its own it compresses every
image on camera/image_raw (KEY whenever the encoder made an IDR). Topic names are relative: under
a namespace (`-r __ns:=/car1`) they are /car1/camera/image_raw, /car1/cloudseg/frames, ...

A Knob is checked as a whole (`cloudseg.control.knob`); a bad one is refused with one log line
and the previous settings stay. Its one-shot `request_full_frame` fires once, and not at all
when the Knob was stamped before this node started (a transient-local Knob delivered again to a
restarted compressor). A keyframe request from the cloud (cloudseg/keyframe_request) makes the
next frame an H.264 IDR, unless an IDR sent after the frame it names is already on its way.
JPEG/PNG frames also go, as sensor_msgs/CompressedImage, to cloudseg/lowres/compressed (the
image_transport 'compressed' topic of their own base topic, cloudseg/lowres) for stock viewers.
H.264 frames go, only while someone subscribes, as Foxglove's CompressedVideo to
cloudseg/lowres/foxglove and as image_transport's FFMPEGPacket to cloudseg/lowres/ffmpeg; a new
subscriber there asks for an IDR like the cloud does, and gets nothing before it
(`recovery.ViewerJoins`). Frames that fit: the lower of the `max_frame_bytes` parameter and the
Knob's caps every frame (`FrameCompressor`); a P-frame over it anyway is not sent (one line, then
rate-limited) and the next is an IDR.
"""

from __future__ import annotations

import numpy as np
from ffmpeg_image_transport_msgs.msg import FFMPEGPacket
from foxglove_msgs.msg import CompressedVideo
from rclpy.node import Node
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from cloudseg.control.knob import OneShot, check_knob, compressor_changes, frame_budget
from cloudseg.graph import (
    COMPRESSED_TOPIC,
    COMPRESSOR,
    FFMPEG_TOPIC,
    FOXGLOVE_TOPIC,
    FRAMES_TOPIC,
    IMAGE_TOPIC,
    KEYFRAME_REQUEST_TOPIC,
    KNOB_TOPIC,
)
from cloudseg.guard import BadInput
from cloudseg.media.codecs import CodecError
from cloudseg.media.image_codecs import compressed_format
from cloudseg.media.stream import CompressedFrame, CompressorSettings, FrameCompressor
from cloudseg.media.viewer_formats import check_access_unit
from cloudseg.msg import Frame, KeyframeRequest, Knob
from cloudseg.nodes.common import boundary, drop_input, qos_for, run_node
from cloudseg.nodes.convert import compressed_image, compressed_video, ffmpeg_packet, image_to_rgb
from cloudseg.nodes.parameters import declare_parameters
from cloudseg.recovery import KeyframeOnRequest, ViewerJoins


class CompressorNode(Node):
    def __init__(self, in_process: bool = False) -> None:
        super().__init__(COMPRESSOR.name)
        self.params = declare_parameters(self, COMPRESSOR)
        self.compressor = FrameCompressor(CompressorSettings.from_params(self.params))
        self.seq = 0
        self.knob_seq = 0
        self.knob_budget = 0  # the last Knob's max_frame_bytes
        self.full_frame_requested = False
        self.one_shot = OneShot(self.get_clock().now().nanoseconds)
        self.keyframes = KeyframeOnRequest()
        self.frame_pub = self.create_publisher(Frame, FRAMES_TOPIC, qos_for(FRAMES_TOPIC))
        self.compressed_pub = self.create_publisher(
            CompressedImage, COMPRESSED_TOPIC, qos_for(COMPRESSED_TOPIC)
        )
        self.viewer_pubs = {
            topic: self.create_publisher(kind, topic, qos_for(topic))
            for topic, kind in ((FOXGLOVE_TOPIC, CompressedVideo), (FFMPEG_TOPIC, FFMPEGPacket))
        }
        self.viewers = ViewerJoins(self.viewer_pubs)
        if not in_process:
            self.create_subscription(Image, IMAGE_TOPIC, self.on_image, qos_for(IMAGE_TOPIC))
        self.create_subscription(Knob, KNOB_TOPIC, self.on_knob, qos_for(KNOB_TOPIC))
        self.create_subscription(
            KeyframeRequest,
            KEYFRAME_REQUEST_TOPIC,
            self.on_keyframe_request,
            qos_for(KEYFRAME_REQUEST_TOPIC),
        )
        source = (
            "the frame_selector's frames, in process"
            if in_process
            else self.resolve_topic_name(IMAGE_TOPIC)
        )
        self.get_logger().info(
            f"compressing {source} -> {self.frame_pub.topic_name} with {self.compressor.settings}"
        )

    def on_parameters(self, changes: dict) -> None:
        """`ros2 param set`: the codec settings apply from the next frame (checked together
        here: a refused combination changes nothing)."""
        names = CompressorSettings.__dataclass_fields__
        codec = {k: v for k, v in changes.items() if k in names}
        if "max_frame_bytes" in codec:  # the fixed cap; a Knob's budget may lower it
            codec["max_frame_bytes"] = frame_budget(codec["max_frame_bytes"], self.knob_budget)
        if codec:
            self.compressor.apply(self.compressor.next_settings.with_changes(**codec))

    @boundary("knob")
    def on_knob(self, knob: Knob) -> None:
        k = check_knob(knob)  # refused as a whole: the previous settings stay
        changes = compressor_changes(k, self.params["max_frame_bytes"])
        new = self.compressor.next_settings.with_changes(**changes)
        self.compressor.apply(new)
        self.knob_seq, self.knob_budget = k.seq, k.max_frame_bytes
        if self.one_shot.fire(k):
            self.full_frame_requested = True
            self.get_logger().info(f"knob {k.seq}: the next frame goes at full resolution")
        elif k.request_full_frame:
            self.get_logger().info(
                f"knob {k.seq}: its full-frame request predates this node or was fired; ignored"
            )
        self.get_logger().info(f"knob {k.seq} applies from the next frame: {new}")

    @boundary("keyframe request")
    def on_keyframe_request(self, request: KeyframeRequest) -> None:
        if self.keyframes.request(int(request.seq)):
            self.get_logger().info(
                f"the cloud asks for an IDR ({request.reason} at frame {request.seq}): "
                "the next frame is one",
                throttle_duration_sec=1.0,
            )

    @boundary("image")
    def on_image(self, msg: Image) -> None:
        self.send(msg.header, image_to_rgb(msg))

    def send(
        self, header: Header, rgb: np.ndarray, level: int | None = None, deviation: float = 0.0
    ) -> Frame | None:
        """Compress and publish one frame; `level` from the selector (KEY: an IDR), or None to
        call it KEY when the encoder made an IDR. Returns the Frame, None when dropped."""
        counts = {t: p.get_subscription_count() for t, p in self.viewer_pubs.items()}
        if self.viewers.joined(counts) and self.keyframes.request(self.seq):
            self.get_logger().info(
                "a viewer subscribed to the stream: the next frame is an IDR",
                throttle_duration_sec=1.0,
            )
        asked = self.keyframes.take()
        try:
            out = self.compressor.compress(
                rgb, self.full_frame_requested, keyframe=level == Frame.LEVEL_KEY or asked
            )
            self.full_frame_requested = False
        except (CodecError, ValueError) as exc:
            self.keyframes.pending |= asked  # still owed at the next frame
            drop_input(self, "image", exc, what=f"image {_stamp(header)}")
            return None
        if out.droppable:  # over budget, not sent: the next is an IDR (FrameCompressor asked)
            budget = self.compressor.settings.max_frame_bytes
            why = f"{len(out.payload)} bytes, over the {budget}-byte budget; the next is an IDR"
            drop_input(self, "frame", BadInput(why, "budget"), what=f"frame {_stamp(header)}")
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
            stream_id=self.get_namespace(),  # the vehicle's namespace: its stream in the cloud
        )
        frame.data = out.payload
        frame.sent_stamp = self.get_clock().now().to_msg()
        self.frame_pub.publish(frame)
        self.keyframes.sent(self.seq, out.keyframe)
        self.seq += 1
        if out.codec == "h264":
            self.publish_viewers(header, out, frame.seq)
        elif self.params["publish_compressed"]:
            self.compressed_pub.publish(
                compressed_image(out.payload, compressed_format(out.codec), header)
            )
        return frame

    def publish_viewers(self, header: Header, out: CompressedFrame, seq: int) -> None:
        """H.264 frame `seq` to the viewer topics that have subscribers (none: nothing built)."""
        try:
            idr = check_access_unit(out.payload)
        except CodecError as exc:  # not what a viewer decodes: the Frame went, this does not
            drop_input(self, "viewer frame", exc, what=f"viewer frame {seq}")
            return
        for topic in self.viewers.targets(idr):
            if topic == FOXGLOVE_TOPIC:
                msg = compressed_video(out.payload, header)
            else:
                msg = ffmpeg_packet(out.payload, header, out.encoded_size, seq, idr)
            self.viewer_pubs[topic].publish(msg)


def _stamp(header: Header) -> str:
    return f"{header.stamp.sec}.{header.stamp.nanosec:09d}"


def main(args: list[str] | None = None) -> int:
    return run_node(CompressorNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
