"""The compressor's H.264 stream as viewers decode it: Foxglove's CompressedVideo and
image_transport's ffmpeg FFMPEGPacket, key frames for late joiners, nothing without a viewer."""

from __future__ import annotations

from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from cloudseg.media.codecs import CodecError
from cloudseg.media.h264 import NAL_IDR, NAL_PPS, NAL_SPS, nal_unit_types
from cloudseg.media.stream import CompressorSettings, FrameCompressor
from cloudseg.media.viewer_formats import (
    AV_PKT_FLAG_KEY,
    FFMPEG_ENCODING,
    check_access_unit,
    ffmpeg_flags,
    idr_has_parameter_sets,
)
from cloudseg.recovery import ViewerJoins

CAMERA = (256, 128)  # (width, height) the real frames are shrunk to; x4: a 64x32 stream
LOWRES = (64, 32)


def _frames(shared_data: Path, n: int) -> list[np.ndarray]:
    """The first `n` frames of a real Cityscapes sequence at CAMERA size, RGB."""
    files = sorted((shared_data / "sequences" / "aachen_seq0000").glob("*.jpg"))[:n]
    assert len(files) == n
    return [
        cv2.resize(cv2.imread(str(f))[:, :, ::-1], CAMERA, interpolation=cv2.INTER_AREA)
        for f in files
    ]


@pytest.fixture(scope="module")
def frames(shared_data: Path) -> list[np.ndarray]:
    return _frames(shared_data, 16)


def _decode_all(payloads: list[bytes]) -> list[av.VideoFrame]:
    ctx = av.CodecContext.create("h264", "r")
    ctx.thread_count = 1  # a picture out for each packet in
    pictures = []
    for payload in payloads:
        pictures += ctx.decode(av.Packet(bytes(payload)))
    return pictures


@pytest.mark.parametrize("intra_refresh", [False, True])
def test_every_idr_carries_sps_and_pps_and_there_are_no_b_frames(frames, intra_refresh):
    """The compressor's settings (gop 5 here) with periodic IDRs or intra refresh, and a forced
    key frame: each IDR is SPS, PPS, ..., IDR slice; every access unit is Annex B; the decoder
    sees I and P pictures only, one per packet, in order."""
    compressor = FrameCompressor(CompressorSettings(gop=5, intra_refresh=intra_refresh))
    sent = [compressor.compress(rgb, keyframe=i == 8) for i, rgb in enumerate(frames[:12])]
    idrs = [check_access_unit(s.payload) for s in sent]
    assert idrs == [s.keyframe for s in sent]
    expected = {0, 8} if intra_refresh else {0, 5, 8, 13}  # the forced IDR restarts the gop
    assert {i for i, idr in enumerate(idrs) if idr} == expected & set(range(12))
    for s in sent:
        types = nal_unit_types(s.payload)
        if NAL_IDR in types:
            assert types[:2] == [NAL_SPS, NAL_PPS], types
        assert s.encoded_size == LOWRES
    pictures = _decode_all([s.payload for s in sent])
    assert len(pictures) == len(sent)
    kinds = {av.video.frame.PictureType(p.pict_type).name for p in pictures}
    assert kinds == {"I", "P"}
    assert all((p.width, p.height) == LOWRES for p in pictures)


def test_access_units_without_start_code_or_headers_are_refused(frames):
    first = FrameCompressor(CompressorSettings()).compress(frames[0]).payload
    types = nal_unit_types(first)
    assert idr_has_parameter_sets(types) and not idr_has_parameter_sets([NAL_IDR, NAL_SPS])
    with pytest.raises(CodecError, match="start code"):
        check_access_unit(first[4:])  # the start code gone
    without_sps = first[first.index(b"\x00\x00\x01", 4) :]  # from the PPS on
    assert nal_unit_types(without_sps)[0] == NAL_PPS
    with pytest.raises(CodecError, match="without SPS and PPS"):
        check_access_unit(without_sps)
    assert ffmpeg_flags(True) == AV_PKT_FLAG_KEY == 1 and ffmpeg_flags(False) == 0


def test_a_new_viewer_asks_for_an_idr_and_gets_nothing_before_it():
    joins = ViewerJoins(["fox", "ffmpeg"])
    assert not joins.joined({"fox": 0, "ffmpeg": 0}) and joins.targets(True) == []
    assert joins.joined({"fox": 1, "ffmpeg": 0})  # a viewer on fox: ask for an IDR
    assert joins.targets(False) == []  # the IDR is not this frame: fox waits
    assert joins.targets(True) == ["fox"]
    assert not joins.joined({"fox": 1, "ffmpeg": 0}) and joins.targets(False) == ["fox"]
    assert joins.joined({"fox": 1, "ffmpeg": 1})
    assert joins.targets(False) == ["fox"]  # fox's viewer goes on; ffmpeg's waits
    assert joins.targets(True) == ["fox", "ffmpeg"]
    assert not joins.joined({"fox": 0, "ffmpeg": 1})  # one left: nothing to ask
    assert joins.joined({"fox": 1, "ffmpeg": 1})  # a viewer again: a new IDR
    assert joins.sent == {"fox": 4, "ffmpeg": 1}


def test_messages_carry_the_access_unit_and_the_fields_viewers_read(frames):
    from rclpy.serialization import deserialize_message, serialize_message
    from std_msgs.msg import Header

    from cloudseg.nodes.convert import compressed_video, ffmpeg_packet

    payload = FrameCompressor(CompressorSettings()).compress(frames[0]).payload
    header = Header(frame_id="camera")
    header.stamp.sec, header.stamp.nanosec = 12, 345
    video = compressed_video(payload, header)
    assert (video.timestamp, video.frame_id, video.format) == (header.stamp, "camera", "h264")
    packet = ffmpeg_packet(payload, header, LOWRES, 7, True)
    assert packet.header == header and (packet.width, packet.height) == LOWRES
    assert (packet.encoding, packet.pts, packet.flags) == (FFMPEG_ENCODING, 7, 1)
    assert FFMPEG_ENCODING.split(";") == ["h264", "yuv420p", "bgr8", "rgb8"]
    assert packet.is_bigendian is False
    for msg in (video, packet):  # as it travels
        back = deserialize_message(serialize_message(msg), type(msg))
        assert bytes(back.data) == payload


@pytest.mark.dds
def test_late_viewers_start_at_an_idr_and_decode_and_none_costs_nothing(shared_data, ros):
    """The compressor node (in this process, fed real frames as the vehicle's selector feeds
    it) over DDS: without viewers nothing is built; a Foxglove viewer that subscribes
    mid-stream, and later an ffmpeg one, each get an IDR with SPS first (not a periodic one:
    gop 17), the exact bytes of the Frame, and PyAV decodes every message at 64x32."""
    from ffmpeg_image_transport_msgs.msg import FFMPEGPacket
    from foxglove_msgs.msg import CompressedVideo
    from rclpy.executors import SingleThreadedExecutor
    from std_msgs.msg import Header

    from cloudseg.graph import FFMPEG_TOPIC, FOXGLOVE_TOPIC, FRAMES_TOPIC
    from cloudseg.msg import Frame
    from cloudseg.nodes.common import qos_for
    from cloudseg.nodes.compressor_node import CompressorNode
    from support import wait_until

    viewer = ros
    compressor = CompressorNode(in_process=True)
    executor = SingleThreadedExecutor()
    for node in (viewer, compressor):
        executor.add_node(node)

    def spin(seconds: float) -> None:
        wait_until(lambda: False, seconds, lambda: executor.spin_once(timeout_sec=0.02))

    frames: dict[int, bytes] = {}
    got: dict[str, list] = {FOXGLOVE_TOPIC: [], FFMPEG_TOPIC: []}
    viewer.create_subscription(
        Frame, FRAMES_TOPIC, lambda m: frames.update({m.seq: bytes(m.data)}), qos_for(FRAMES_TOPIC)
    )
    pictures = _frames(shared_data, 16)
    sent = 0

    def send(n: int) -> None:
        nonlocal sent
        for _ in range(n):
            h = Header(frame_id="camera")
            h.stamp.sec, h.stamp.nanosec = 100 + sent, 0
            assert compressor.send(h, pictures[sent]) is not None
            sent += 1
            spin(0.1)  # 10 fps: the forced-IDR interval (200 ms) passes between joins

    def join(topic: str, kind) -> None:
        viewer.create_subscription(kind, topic, got[topic].append, qos_for(topic))
        pub = compressor.viewer_pubs[topic]
        assert wait_until(pub.get_subscription_count, 20, lambda: spin(0.05))
        spin(0.5)  # discovery is not symmetric: let the viewer match the compressor too

    try:
        assert wait_until(
            lambda: compressor.frame_pub.get_subscription_count(), 20, lambda: spin(0.05)
        )
        spin(0.5)
        send(4)
        assert compressor.viewers.sent == {FOXGLOVE_TOPIC: 0, FFMPEG_TOPIC: 0}
        join(FOXGLOVE_TOPIC, CompressedVideo)
        send(5)  # frames 4..8
        join(FFMPEG_TOPIC, FFMPEGPacket)
        send(5)  # frames 9..13
        assert wait_until(lambda: len(frames) >= sent, 10, lambda: spin(0.05))
        spin(0.3)
    finally:
        executor.shutdown()
        compressor.destroy_node()

    videos, packets = got[FOXGLOVE_TOPIC], got[FFMPEG_TOPIC]
    assert compressor.viewers.sent == {FOXGLOVE_TOPIC: len(videos), FFMPEG_TOPIC: len(packets)}
    assert len(videos) == 10 and len(packets) == 5, (len(videos), len(packets))
    first_video, first_packet = videos[0], packets[0]
    assert first_video.timestamp.sec == 104 and first_packet.pts == 9  # the frame after a join
    for first in (first_video, first_packet):
        assert nal_unit_types(bytes(first.data))[:2] == [NAL_SPS, NAL_PPS]
        assert NAL_IDR in nal_unit_types(bytes(first.data))
    assert first_packet.flags & AV_PKT_FLAG_KEY
    assert [p.flags for p in packets[1:]] == [0] * 4
    assert [p.header.stamp.sec - 100 for p in packets] == [p.pts for p in packets]
    for video in videos:
        assert bytes(video.data) == frames[video.timestamp.sec - 100]  # exactly Frame.data
        assert (video.frame_id, video.format) == ("camera", "h264")
    for packet in packets:
        assert bytes(packet.data) == frames[packet.pts]
        assert (packet.width, packet.height, packet.encoding) == (*LOWRES, FFMPEG_ENCODING)
    for stream in (videos, packets):
        decoded = _decode_all([m.data for m in stream])
        assert len(decoded) == len(stream)
        assert all((p.width, p.height) == LOWRES for p in decoded)
