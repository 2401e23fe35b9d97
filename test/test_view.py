"""`cloudseg view`: a Foxglove WebSocket client (protocol foxglove.sdk.v1, spoken here with the
`websockets` package) sees the graph's channels, and the video it gets decodes from its first
message; the coloured labels are the labels topic's train ids in the Cityscapes palette."""

from __future__ import annotations

import base64
import json
import queue
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from cloudseg.data.cityscapes import colorize
from cloudseg.graph import (
    CAMERA_LABELS_INFO_TOPIC,
    FOXGLOVE_TOPIC,
    IMAGE_TOPIC,
    LABELS_COLOR_TOPIC,
    LABELS_TOPIC,
    OVERLAY_TOPIC,
    STATS_TOPIC,
    config_dir,
    resolve,
)
from cloudseg.launcher import NodeProcesses
from cloudseg.view import view_url
from cloudseg.view.channels import KeyframeGate, json_schema, message_to_dict
from support import wait_until

SUBPROTOCOL = "foxglove.sdk.v1"
NS = "car7"
SIZE = (256, 128)  # camera width, height
SCALE = 2
LAYOUT = Path(__file__).resolve().parents[1] / "config" / "cloudseg.foxglove-layout.json"


def test_keyframe_gate_holds_a_first_viewers_video_until_an_idr() -> None:
    gate = KeyframeGate()
    gate.subscribed()
    assert not gate.admit(keyframe=False)
    assert gate.admit(keyframe=True) and gate.admit(keyframe=False)
    gate.subscribed()  # a second viewer: the first one's stream goes on
    assert gate.admit(keyframe=False)
    gate.unsubscribed()
    gate.unsubscribed()
    gate.subscribed()  # nobody watched: wait for an IDR again
    assert not gate.admit(keyframe=False)


def test_label_png_decodes_to_the_cityscapes_colours() -> None:
    import cv2

    from cloudseg.view.channels import LABEL_PALETTE
    from cloudseg.view.png import palette_png

    ids = np.random.default_rng(1).integers(0, 19, (48, 80), np.uint8)
    ids[0, :10] = 255
    ids[1, 0] = 200  # not a train id: black, as colorize draws it
    png = palette_png(ids, LABEL_PALETTE)
    rgb = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)[..., ::-1]
    np.testing.assert_array_equal(rgb, colorize(ids))
    with pytest.raises(ValueError):
        palette_png(ids.astype(np.uint16), LABEL_PALETTE)


def test_nothing_is_converted_for_a_channel_nobody_watches() -> None:
    """Without a subscribed viewer the view encodes nothing; a subscription to the video calls
    back (the node asks for an IDR there) and holds the video until an IDR."""
    from types import SimpleNamespace

    from websockets.sync.client import connect

    from cloudseg.view.channels import ViewChannels

    channels = ViewChannels("car3")
    viewers = threading.Event()
    port = channels.start("127.0.0.1", 0, on_viewer=viewers.set)
    header = SimpleNamespace(stamp=SimpleNamespace(sec=1, nanosec=0), frame_id="camera")
    ids = np.zeros((8, 8), np.uint8)
    try:
        assert channels.send_labels(header, ids) is None
        assert not channels.send_frame(header, "h264", b"\x00\x00\x00\x01\x65")
        with connect(f"ws://127.0.0.1:{port}", subprotocols=[SUBPROTOCOL]) as ws:
            advertised = {}
            while resolve(FOXGLOVE_TOPIC, "car3") not in advertised:
                message = json.loads(ws.recv(timeout=10))
                advertised.update({c["topic"]: c["id"] for c in message.get("channels", [])})
            video = advertised[resolve(FOXGLOVE_TOPIC, "car3")]
            subscribe = [{"id": 1, "channelId": video}]
            ws.send(json.dumps({"op": "subscribe", "subscriptions": subscribe}))
            assert viewers.wait(10)
            assert wait_until(channels.video.has_sinks, 10)
            assert not channels.send_frame(header, "h264", b"\x00\x00\x00\x01\x41")  # P
            assert channels.send_frame(header, "h264", b"\x00\x00\x00\x01\x65")  # IDR
            assert channels.send_labels(header, ids) is None  # labels: still nobody
    finally:
        channels.stop()


def test_demo_view_address() -> None:
    from cloudseg.cli.commands import view_address

    assert view_address(None) is None
    assert view_address("9000") == ("127.0.0.1", 9000)
    assert view_address("0.0.0.0:9000") == ("0.0.0.0", 9000)
    with pytest.raises(ValueError):
        view_address("host:http")


def test_the_address_to_open() -> None:
    assert view_url("127.0.0.1", 8765) == "ws://127.0.0.1:8765"
    assert view_url("0.0.0.0", 9000) == "ws://127.0.0.1:9000"  # every interface, this one too


def test_ros_messages_become_json_with_a_schema() -> None:
    from cloudseg.msg import LabelAge

    age = LabelAge(source_seq=4, age_ms=12.5, warped=True)
    age.header.frame_id = "camera"
    data = message_to_dict(age)
    assert data["header"] == {"stamp": {"sec": 0, "nanosec": 0}, "frame_id": "camera"}
    assert data["source_seq"] == 4 and data["age_ms"] == 12.5 and data["warped"] is True
    json.dumps(data)
    schema = json_schema(LabelAge())["properties"]
    assert schema["age_ms"] == {"type": "number"} and schema["warped"] == {"type": "boolean"}
    assert schema["header"]["properties"]["stamp"]["properties"]["sec"] == {"type": "integer"}


def test_the_layout_file_shows_the_view_channels() -> None:
    """config/cloudseg.foxglove-layout.json (Foxglove's "Import from file" format) names the
    channels the view serves."""
    layout = json.loads(LAYOUT.read_text())
    text = json.dumps(layout["configById"])
    for topic in (FOXGLOVE_TOPIC, LABELS_COLOR_TOPIC, STATS_TOPIC, CAMERA_LABELS_INFO_TOPIC):
        assert resolve(topic) in text
    panels = json.dumps(layout["layout"])
    assert all(panel in panels for panel in layout["configById"])


def _protobuf_class(channel: dict):
    """The message class of a protobuf channel, from the schema the server advertised."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    files = descriptor_pb2.FileDescriptorSet.FromString(base64.b64decode(channel["schema"]))
    pool = descriptor_pool.DescriptorPool()
    for proto in files.file:
        pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(channel["schemaName"]))


def _start_view(tmp_path: Path) -> tuple[subprocess.Popen, str]:
    """`cloudseg view --port 0 --namespace car7` and the address it prints."""
    log = (tmp_path / "view.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "cloudseg.cli", "view", "--port", "0", "--namespace", NS],
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout], daemon=True).start()
    try:
        line = lines.get(timeout=60)
    except queue.Empty:
        proc.kill()
        pytest.fail(f"cloudseg view printed no address: {(tmp_path / 'view.log').read_text()}")
    assert line.startswith("cloudseg view: open ws://127.0.0.1:"), line
    return proc, line.split()[3]


@pytest.mark.dds
def test_a_foxglove_client_gets_decodable_video_and_the_coloured_labels(tmp_path, ros):
    """The vehicle streams H.264 with IDRs 200 frames apart; a client that connects mid-stream
    sees the channels advertised, subscribes, and its first video message is an IDR (the
    view asked the vehicle for one) that decodes to the low-resolution size; a label image it
    gets is the labels topic's train ids coloured, pixel for pixel."""
    import av
    import cv2
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header
    from websockets.sync.client import connect

    from cloudseg.media.h264 import is_h264_keyframe
    from cloudseg.nodes.common import qos_for
    from cloudseg.nodes.convert import numpy_to_image

    node = ros
    image_pub = node.create_publisher(Image, resolve(IMAGE_TOPIC, NS), qos_for(IMAGE_TOPIC))
    labels_pub = node.create_publisher(Image, resolve(LABELS_TOPIC, NS), qos_for(LABELS_TOPIC))
    overlay_pub = node.create_publisher(Image, resolve(OVERLAY_TOPIC, NS), qos_for(OVERLAY_TOPIC))
    rng = np.random.default_rng(3)
    labels_sent: dict[tuple[int, int], np.ndarray] = {}
    stop = threading.Event()

    def camera() -> None:
        """10 fps of moving noise, and made-up labels with the same header."""
        for i in range(100000):
            if stop.wait(0.1):
                return
            header = Header(frame_id="camera")
            header.stamp.sec, header.stamp.nanosec = 1000 + i // 10, (i % 10) * 100_000_000
            rgb = cv2.resize(rng.integers(0, 255, (16, 32, 3), np.uint8), SIZE)
            image_pub.publish(numpy_to_image(rgb, "rgb8", header))
            labels = rng.integers(0, 19, (SIZE[1] // 8, SIZE[0] // 8), np.uint8)
            labels = np.kron(labels, np.ones((8, 8), np.uint8))
            labels[:8, :8] = 255  # none: black
            labels_sent[(header.stamp.sec, header.stamp.nanosec)] = labels
            labels_pub.publish(numpy_to_image(labels, "mono8", header))
            overlay_pub.publish(numpy_to_image(rgb, "rgb8", header))

    vehicle = {"mode": "off", "gop": 200, "scale": SCALE}
    with NodeProcesses(log_dir=tmp_path, ns="/" + NS) as procs:
        procs.start("vehicle", config_dir() / "vehicle.yaml", vehicle)
        view, address = _start_view(tmp_path)
        feeder = threading.Thread(target=camera, daemon=True)
        try:
            deadline = time.monotonic() + 60
            while not image_pub.get_subscription_count() and time.monotonic() < deadline:
                time.sleep(0.1)
            feeder.start()
            time.sleep(3.0)  # the stream runs: a client joining now is between IDRs
            topics = {resolve(t, NS) for t in (FOXGLOVE_TOPIC, LABELS_COLOR_TOPIC, OVERLAY_TOPIC)}
            topics |= {resolve(t, NS) for t in (STATS_TOPIC, CAMERA_LABELS_INFO_TOPIC)}
            with connect(address, subprotocols=[SUBPROTOCOL], open_timeout=10) as ws:
                assert ws.subprotocol == SUBPROTOCOL
                channels: dict[str, dict] = {}
                while not topics <= set(channels):
                    message = json.loads(ws.recv(timeout=10))
                    if message["op"] == "advertise":
                        channels.update({c["topic"]: c for c in message["channels"]})
                video = channels[resolve(FOXGLOVE_TOPIC, NS)]
                labels = channels[resolve(LABELS_COLOR_TOPIC, NS)]
                assert video["schemaName"] == "foxglove.CompressedVideo"
                assert channels[resolve(STATS_TOPIC, NS)]["encoding"] == "json"
                overlay = channels[resolve(OVERLAY_TOPIC, NS)]
                age = channels[resolve(CAMERA_LABELS_INFO_TOPIC, NS)]
                subscribe = [
                    {"id": i, "channelId": c["id"]}
                    for i, c in enumerate((video, labels, overlay, age), start=1)
                ]
                ws.send(json.dumps({"op": "subscribe", "subscriptions": subscribe}))
                got: dict[int, list[bytes]] = {1: [], 2: [], 3: [], 4: []}
                subscribed = time.monotonic()
                first_video_s = None
                deadline = subscribed + 30
                while len(got[1]) < 3 or not all(got.values()):
                    if time.monotonic() > deadline:
                        break
                    data = ws.recv(timeout=30)
                    if isinstance(data, bytes) and data[0] == 1:  # message data
                        sub, _log_time = struct.unpack_from("<IQ", data, 1)
                        got[sub].append(data[13:])
                        if sub == 1 and first_video_s is None:
                            first_video_s = time.monotonic() - subscribed
        finally:
            stop.set()
            view.terminate()
            view.wait(timeout=30)
        vehicle_log = (tmp_path / "vehicle.log").read_text()
    view_log = (tmp_path / "view.log").read_text()
    assert len(got[1]) >= 3 and all(got.values()), ({k: len(v) for k, v in got.items()}, view_log)

    video_class = _protobuf_class(video)
    frames = [video_class.FromString(payload) for payload in got[1]]
    assert {f.format for f in frames} == {"h264"} and frames[0].frame_id == "camera"
    assert is_h264_keyframe(frames[0].data), "a viewer's first video message is an IDR"
    assert "joined" in vehicle_log, vehicle_log  # the view's KeyframeRequest reached it
    print(f"first video message {first_video_s:.2f} s after subscribing")
    assert first_video_s < 5.0  # not the 20 s to the next periodic IDR
    decoder = av.CodecContext.create("h264", "r")
    pictures = [p for f in frames for p in decoder.decode(av.Packet(f.data))]
    assert pictures and (pictures[0].width, pictures[0].height) == (
        SIZE[0] // SCALE,
        SIZE[1] // SCALE,
    )

    image_class = _protobuf_class(labels)
    label_image = image_class.FromString(got[2][0])
    assert label_image.format == "png"
    stamp = (label_image.timestamp.seconds, label_image.timestamp.nanos)
    bgr = cv2.imdecode(np.frombuffer(label_image.data, np.uint8), cv2.IMREAD_COLOR)
    np.testing.assert_array_equal(bgr[..., ::-1], colorize(labels_sent[stamp]))
    assert not bgr[:8, :8].any()  # 255: no class, black

    overlay_image = _protobuf_class(overlay).FromString(got[3][0])
    assert overlay_image.format == "jpeg"
    jpeg = cv2.imdecode(np.frombuffer(overlay_image.data, np.uint8), cv2.IMREAD_COLOR)
    assert jpeg.shape == (SIZE[1], SIZE[0], 3)
    label_age = json.loads(got[4][0])  # the vehicle's camera_labels: LabelAge as JSON
    assert label_age["header"]["frame_id"] == "camera" and "age_ms" in label_age
    assert view.returncode == 0, view_log


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.dds
def test_demo_view_serves_the_demo_stream(tmp_path, fresh_ros_domain, capfd):
    """run_demo(view=...) (`demo --view`): a client connected while the demo starts gets the
    demo's H.264 stream (decodable from its first message) and its FrameStats as JSON."""
    import av
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    from cloudseg.demo import run_demo

    port = _free_port()
    got: dict[str, list[bytes]] = {"video": [], "stats": []}
    advertised: dict[str, dict] = {}

    def client() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                ws = connect(f"ws://127.0.0.1:{port}", subprotocols=[SUBPROTOCOL])
                break
            except OSError:
                time.sleep(0.2)
        else:
            return
        with ws:
            wanted = {resolve(FOXGLOVE_TOPIC): "video", resolve(STATS_TOPIC): "stats"}
            ids: dict[int, str] = {}
            while len(ids) < len(wanted):
                message = json.loads(ws.recv(timeout=10))
                for c in message.get("channels", []):
                    advertised[c["topic"]] = c
                    if c["topic"] in wanted:
                        ids[c["id"]] = wanted[c["topic"]]
            subscribe = [{"id": i, "channelId": i} for i in ids]
            ws.send(json.dumps({"op": "subscribe", "subscriptions": subscribe}))
            try:
                while True:
                    data = ws.recv(timeout=20)
                    if isinstance(data, bytes) and data[0] == 1:
                        got[ids[struct.unpack_from("<I", data, 1)[0]]].append(data[13:])
            except (TimeoutError, OSError, ConnectionClosed):
                return  # the demo ended

    watcher = threading.Thread(target=client, daemon=True)
    watcher.start()
    stats = run_demo(
        None,
        limit=12,
        rate=6.0,
        quiet=True,
        log_dir=tmp_path,
        timeout=60,
        cloud="cloud_bilinear",
        select="off",
        view=("127.0.0.1", port),
    )
    watcher.join(timeout=30)
    assert f"view: open ws://127.0.0.1:{port}" in capfd.readouterr().err
    assert stats.frames_processed >= 1
    assert got["video"] and got["stats"], {k: len(v) for k, v in got.items()}
    from cloudseg.media.h264 import is_h264_keyframe

    first = _protobuf_class(advertised[resolve(FOXGLOVE_TOPIC)]).FromString(got["video"][0])
    assert is_h264_keyframe(first.data)
    assert av.CodecContext.create("h264", "r").decode(av.Packet(first.data))
    assert "seq" in json.loads(got["stats"][0])
