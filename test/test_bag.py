"""rosbag2 writing (convert_to_bag) and reading (iter_bag / open_source) through rosbags."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from rosbags.rosbag2 import Reader, StoragePlugin, Writer

from cloudseg.data.bag import image_to_rgb, iter_bag, typestore
from cloudseg.data.bag_writer import convert_to_bag
from cloudseg.data.folder import iter_folder
from cloudseg.data.frames import DataError
from cloudseg.data.sources import open_source
from cloudseg.data.synthetic import synthetic_frame

TOPIC = "/camera/image_raw"


def _synthetic_folder(folder: Path, n: int = 4) -> Path:
    folder.mkdir()
    for i in range(n):
        rgb = synthetic_frame(i, 96, 48)
        cv2.imwrite(
            str(folder / f"syn_0_{i}_leftImg8bit.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        )
    return folder


def _msg_image(encoding, height, width, step, data, stamp_ns, bigendian=0):
    ts = typestore()
    Header = ts.types["std_msgs/msg/Header"]
    Time = ts.types["builtin_interfaces/msg/Time"]
    sec, nsec = divmod(stamp_ns, 1_000_000_000)
    return ts.types["sensor_msgs/msg/Image"](
        header=Header(stamp=Time(sec=sec, nanosec=nsec), frame_id="cam"),
        height=height, width=width, encoding=encoding, is_bigendian=bigendian, step=step,
        data=np.asarray(data, np.uint8).reshape(-1),
    )  # fmt: skip


def _write_bag(path: Path, messages, topic: str = TOPIC, storage=StoragePlugin.MCAP) -> Path:
    """Write (log_time, msg) pairs with rosbags directly, as a foreign recorder would."""
    ts = typestore()
    msgtype = type(messages[0][1]).__msgtype__
    with Writer(path, version=9, storage_plugin=storage) as writer:
        conn = writer.add_connection(topic, msgtype, typestore=ts)
        for log_time, msg in messages:
            writer.write(conn, log_time, ts.serialize_cdr(msg, msgtype))
    return path


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_convert_synthetic_folder_roundtrip(tmp_path: Path, storage: str) -> None:
    folder = _synthetic_folder(tmp_path / "frames")
    out = tmp_path / "bag"
    assert convert_to_bag(folder, out, storage=storage, progress=False) == 4
    expected = list(iter_folder(folder))

    with Reader(out) as reader:
        assert reader.topics[TOPIC].msgtype == "sensor_msgs/msg/Image"
        assert reader.topics[TOPIC].msgcount == 4
        qos = reader.topics[TOPIC].connections[0].ext.offered_qos_profiles[0]
        assert (qos.reliability.name, qos.durability.name, qos.history.name) == (
            "RELIABLE", "VOLATILE", "KEEP_LAST")  # fmt: skip
        assert qos.depth > 0
        log_times = [t for _, t, _ in reader.messages()]
    assert log_times == [f.stamp_ns for f in expected]

    src = open_source(out)
    assert len(src) == 4
    assert src.fps == pytest.approx(17.0)
    assert storage in src.describe() and "sensor_msgs/msg/Image" in src.describe()
    got = list(src)
    assert [f.stamp_ns for f in got] == [round(i * 1e9 / 17) for i in range(4)]
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_array_equal(a.rgb, b.rgb)

    # The storage file on its own is a bag too.
    storage_file = next(out.glob("*.mcap" if storage == "mcap" else "*.db3"))
    assert [f.stamp_ns for f in iter_bag(storage_file)] == [f.stamp_ns for f in expected]


def test_convert_real_frames(tmp_path: Path, shared_data: Path) -> None:
    frames = tmp_path / "frames"
    frames.mkdir()
    seq = shared_data / "sequences" / "aachen_seq0000"
    for i in range(3):
        name = f"aachen_000000_{i:06d}_leftImg8bit.jpg"
        shutil.copy(seq / name, frames / name)
    out = tmp_path / "real_bag"
    assert convert_to_bag(frames, out, storage="mcap", progress=False) == 3
    expected = list(iter_folder(frames))
    got = list(iter_bag(out))
    assert [f.stamp_ns for f in got] == [f.stamp_ns for f in expected]
    assert got[0].rgb.shape == (1024, 2048, 3)
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_array_equal(a.rgb, b.rgb)


def test_convert_synthetic_default_and_refuse_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "syn"
    assert convert_to_bag(None, out, storage="sqlite3", progress=False, limit=2) == 2
    got = list(open_source(out))
    np.testing.assert_array_equal(got[1].rgb, synthetic_frame(1))
    with pytest.raises(DataError, match="exists already"):
        convert_to_bag(None, out, progress=False, limit=1)
    with pytest.raises(ValueError, match="storage"):
        convert_to_bag(None, tmp_path / "x", storage="rosbag1", progress=False)
    with pytest.raises(DataError, match="does not exist"):
        convert_to_bag(tmp_path / "missing", tmp_path / "y", progress=False)
    assert not (tmp_path / "y").exists()


def test_bgr8_mono8_padded_step_and_header_stamps(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (4, 5, 3), np.uint8)
    # bgr8 with a 16-byte step (one padding byte, not a multiple of 3), big-endian flag set.
    bgr_rows = np.zeros((4, 16), np.uint8)
    bgr_rows[:, :15] = rgb[..., ::-1].reshape(4, 15)
    bgr_rows[:, 15] = 77
    gray = rng.integers(0, 256, (4, 5), np.uint8)
    mono_rows = np.full((4, 8), 200, np.uint8)  # step 8 for width 5
    mono_rows[:, :5] = gray
    msgs = [
        (5, _msg_image("bgr8", 4, 5, 16, bgr_rows, 1_700_000_000_250_000_000, bigendian=1)),
        (6, _msg_image("rgb8", 4, 5, 15, rgb, 1_700_000_000_300_000_000)),
    ]
    bag = _write_bag(tmp_path / "color", msgs)
    got = list(iter_bag(bag))
    assert [f.stamp_ns for f in got] == [1_700_000_000_250_000_000, 1_700_000_000_300_000_000]
    np.testing.assert_array_equal(got[0].rgb, rgb)
    np.testing.assert_array_equal(got[1].rgb, rgb)

    mono = _write_bag(
        tmp_path / "mono",
        [(9, _msg_image("mono8", 4, 5, 8, mono_rows, 0))],
        storage=StoragePlugin.SQLITE3,
    )
    (frame,) = list(iter_bag(mono))
    assert frame.stamp_ns == 9  # zero header stamp: falls back to the receive time
    np.testing.assert_array_equal(frame.rgb, np.repeat(gray[..., None], 3, axis=2))


def test_compressed_image_bag(tmp_path: Path) -> None:
    ts = typestore()
    rgb = synthetic_frame(3, 64, 32)
    ok, png = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    header = ts.types["std_msgs/msg/Header"](
        stamp=ts.types["builtin_interfaces/msg/Time"](sec=2, nanosec=5), frame_id="cam"
    )
    msg = ts.types["sensor_msgs/msg/CompressedImage"](header=header, format="png", data=png)
    bag = _write_bag(tmp_path / "cmp", [(1, msg)], topic="/cam/compressed")
    (frame,) = list(open_source(bag, topic="/cam/compressed"))
    assert frame.stamp_ns == 2_000_000_005
    np.testing.assert_array_equal(frame.rgb, rgb)


def test_malformed_image_messages() -> None:
    with pytest.raises(DataError, match="step 10 is shorter"):
        image_to_rgb(_msg_image("rgb8", 2, 5, 10, np.zeros(20), 0))
    with pytest.raises(DataError, match="needs 30"):
        image_to_rgb(_msg_image("rgb8", 2, 5, 15, np.zeros(29), 0))
    with pytest.raises(DataError, match="unsupported image encoding '32FC1'"):
        image_to_rgb(_msg_image("32FC1", 2, 5, 20, np.zeros(40), 0))


def test_a_bag_of_broken_images_says_why_in_its_one_line(tmp_path: Path) -> None:
    """Every image broken: the error names the count and the first one's reason (before, the
    reason was only in the node's log); the check before a command starts decodes a frame."""
    from cloudseg.data.sources import check_input

    short_step = _msg_image("rgb8", 2, 5, 10, np.zeros(20), 1)
    bag = _write_bag(tmp_path / "broken", [(1, short_step), (2, short_step)])
    why = r"2 messages failed to decode; the first: image step 10 is shorter than a 5-pixel"
    with pytest.raises(DataError, match=why):
        list(iter_bag(bag))
    with pytest.raises(DataError, match=why):
        check_input(bag)


def test_unsupported_encoding_in_bag(tmp_path: Path) -> None:
    bag = _write_bag(tmp_path / "f32", [(1, _msg_image("32FC1", 2, 2, 8, np.zeros(16), 1))])
    with pytest.raises(DataError, match="unsupported image encoding '32FC1'"):
        list(iter_bag(bag))


def test_bayer_and_16_bit_bags_are_read_as_cv_bridge_converts(tmp_path: Path) -> None:
    """A machine-vision camera's bayer_rggb8 topic and a depth camera's 16UC1 (little-endian)
    or mono16 (big-endian) topic become RGB: demosaiced, and 16 bits scaled by 255/65535."""
    mosaic = np.zeros((4, 6), np.uint8)
    mosaic[0::2, 0::2], mosaic[0::2, 1::2], mosaic[1::2, 0::2], mosaic[1::2, 1::2] = 200, 90, 90, 30
    depth = np.array([[0, 257, 65535], [514, 1000, 25700]], np.uint16)
    msgs = [
        (1, _msg_image("bayer_rggb8", 4, 6, 6, mosaic, 1)),
        (2, _msg_image("16UC1", 2, 3, 6, depth.astype("<u2").view(np.uint8), 2)),
        (3, _msg_image("mono16", 2, 3, 6, depth.astype(">u2").view(np.uint8), 3, bigendian=1)),
    ]
    bayer = _write_bag(tmp_path / "bayer", msgs[:1], topic="/cam/image_raw")
    (frame,) = list(open_source(bayer, topic="/cam/image_raw"))
    np.testing.assert_array_equal(
        frame.rgb[1:3, 2:4], cv2.cvtColor(mosaic, cv2.COLOR_BayerBG2RGB)[1:3, 2:4]
    )
    assert frame.rgb[1, 2].tolist() == [200, 90, 30]
    grey = np.array([[0, 1, 255], [2, 4, 100]], np.uint8)
    for i, msg in enumerate(msgs[1:]):
        (frame,) = list(iter_bag(_write_bag(tmp_path / f"depth{i}", [msg])))
        np.testing.assert_array_equal(frame.rgb, np.repeat(grey[..., None], 3, axis=2))


def test_bag_errors(tmp_path: Path) -> None:
    bag = _write_bag(
        tmp_path / "other", [(1, _msg_image("rgb8", 1, 1, 3, [1, 2, 3], 1))], topic="/front/image"
    )
    with pytest.raises(DataError, match=r"no image topic '/camera/image_raw'.*/front/image"):
        open_source(bag)
    with pytest.raises(DataError, match=r"its image topics: /front/image \(Image, 1 messages\)"):
        list(iter_bag(bag))

    corrupt = tmp_path / "corrupt.mcap"
    corrupt.write_bytes(np.random.default_rng(2).bytes(3000))
    with pytest.raises(DataError, match=r"corrupt\.mcap cannot be read"):
        open_source(corrupt)
    with pytest.raises(DataError, match="cannot be read"):
        list(iter_bag(corrupt))
    with pytest.raises(DataError, match="does not exist"):
        list(iter_bag(tmp_path / "missing.mcap"))
    with pytest.raises(DataError, match="does not exist"):
        open_source(tmp_path / "missing_bag")


def test_a_robot_bags_topics_are_listed_when_the_topic_is_missing(tmp_path: Path) -> None:
    """A bag from a real robot: colour on /camera/color/image_raw, its compressed twin, and a
    non-image topic. The default topic is missing: the error lists the image topics only; each
    image topic can be read."""
    ts = typestore()
    rgb = synthetic_frame(1, 32, 16)
    _, png = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    header = ts.types["std_msgs/msg/Header"](
        stamp=ts.types["builtin_interfaces/msg/Time"](sec=1, nanosec=0), frame_id="cam"
    )
    compressed = ts.types["sensor_msgs/msg/CompressedImage"](header=header, format="png", data=png)
    raw = _msg_image("rgb8", 16, 32, 96, rgb, 1_000_000_000)
    text = ts.types["std_msgs/msg/String"](data="hello")
    path = tmp_path / "robot"
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        for topic, msg in (
            ("/camera/color/image_raw", raw),
            ("/camera/color/image_raw/compressed", compressed),
            ("/rosout_like", text),
        ):
            conn = writer.add_connection(topic, msg.__msgtype__, typestore=ts)
            writer.write(conn, 1, ts.serialize_cdr(msg, msg.__msgtype__))
    with pytest.raises(DataError) as err:
        open_source(path)
    message = str(err.value)
    assert "no image topic '/camera/image_raw'" in message
    assert "/camera/color/image_raw (Image, 1 messages)" in message
    assert "/camera/color/image_raw/compressed (CompressedImage, 1 messages)" in message
    assert "rosout_like" not in message
    with pytest.raises(DataError, match=r"carries std_msgs/msg/String.*its image topics"):
        open_source(path, topic="/rosout_like")
    for topic in ("/camera/color/image_raw", "/camera/color/image_raw/compressed"):
        (frame,) = list(open_source(path, topic=topic))
        np.testing.assert_array_equal(frame.rgb, rgb)
