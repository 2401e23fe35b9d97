"""The H.264 stream as the viewers' transports carry it: Foxglove's CompressedVideo and
image_transport's ffmpeg FFMPEGPacket (the messages are built in `cloudseg.nodes.convert`).

Both want one Annex B access unit per message, SPS and PPS in front of every IDR (a viewer that
joins decodes from its first key frame) and no B-frames (decode order = display order). The
compressor's libx264 gives that (`cloudseg.media.h264`: in-band headers, ``tune=zerolatency``);
`check_access_unit` checks each payload before it goes out. Plain Python, no ROS.
"""

from __future__ import annotations

from cloudseg.media.codecs import CodecError
from cloudseg.media.h264 import NAL_IDR, NAL_PPS, NAL_SPS, nal_unit_types

#: CompressedVideo.format (foxglove schemas: "h264", "h265", "av1", ...)
FOXGLOVE_FORMAT = "h264"

#: FFMPEGPacket.encoding: "codec;av_source_pixel_format;cv_bridge_target_format;ros_encoding"
#: (ros-misc-utilities/ffmpeg_image_transport_msgs msg/FFMPEGPacket.msg @ 17c64d9e63d9bb39b8f
#: 01d39d82cb1100ffa97a1). ffmpeg_image_transport's publisher (src/ffmpeg_publisher.cpp @
#: 0fa99406059862540068065776b93e5f69f71957) writes what its ffmpeg_encoder_decoder Encoder
#: reports and never sets the cv_bridge target, so the Encoder's default "bgr8" stands
#: (include/ffmpeg_encoder_decoder/encoder.hpp: `cvBridgeTargetFormat_ = "bgr8"`); libx264 is
#: fed yuv420p and our camera images are rgb8. The subscriber picks its decoder by the first
#: token and restores the last one.
FFMPEG_ENCODING = "h264;yuv420p;bgr8;rgb8"

#: FFMPEGPacket.flags: libavcodec's AV_PKT_FLAG_KEY. The ffmpeg subscriber drops packets
#: until one has it, so only an IDR (decodable alone) carries it, not an intra-refresh start.
AV_PKT_FLAG_KEY = 1


def is_annex_b(payload: bytes) -> bool:
    """The payload starts with an Annex B start code (00 00 01 or 00 00 00 01)."""
    head = bytes(payload[:4])
    return head.startswith(b"\x00\x00\x01") or head == b"\x00\x00\x00\x01"


def idr_has_parameter_sets(types: list[int]) -> bool:
    """An access unit's NAL types: its first IDR slice comes after an SPS and a PPS."""
    if NAL_IDR not in types:
        return False
    before = types[: types.index(NAL_IDR)]
    return NAL_SPS in before and NAL_PPS in before


def check_access_unit(payload: bytes) -> bool:
    """Check one H.264 access unit for the viewers; True when it is an IDR. Raises
    `CodecError` for a payload that is not Annex B or an IDR without SPS/PPS in front."""
    data = bytes(payload)
    if not is_annex_b(data):
        raise CodecError(f"H.264 payload of {len(data)} bytes does not start with a start code")
    types = nal_unit_types(data)
    if NAL_IDR not in types:
        return False
    if not idr_has_parameter_sets(types):
        raise CodecError(f"H.264 IDR without SPS and PPS in front (NAL types {types})")
    return True


def ffmpeg_flags(keyframe: bool) -> int:
    """FFMPEGPacket.flags for an access unit (`check_access_unit`'s answer)."""
    return AV_PKT_FLAG_KEY if keyframe else 0
