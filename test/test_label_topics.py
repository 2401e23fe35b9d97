"""Labels in the ROS standard form: mono8 train ids, the same in the Cityscapes palette (rgb8,
only while someone subscribes) and vision_msgs/LabelInfo (transient local), from the cloud's
segmentation node and the vehicle's camera_labels node."""

from __future__ import annotations

import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
from cityscapesscripts.helpers.labels import trainId2label

from cloudseg.graph import (
    CAMERA_LABELS_COLOR_TOPIC,
    CAMERA_LABELS_TOPIC,
    FRAMES_TOPIC,
    IMAGE_TOPIC,
    LABEL_INFO_TOPIC,
    LABELS_COLOR_TOPIC,
    LABELS_TOPIC,
    TOPICS,
    config_dir,
    resolve,
)
from cloudseg.restore.labels import LABEL_THRESHOLD, class_names, palette
from support import spin_for, spin_until

CITYSCAPES_NAMES = [trainId2label[i].name for i in range(19)]
REPO = Path(__file__).resolve().parents[1]


def test_palette_is_cityscapes_train_id_colours_and_black_elsewhere() -> None:
    lut = palette()
    assert lut.shape == (256, 3) and lut.dtype == np.uint8
    for train_id in range(19):
        assert tuple(lut[train_id]) == trainId2label[train_id].color, train_id
    assert tuple(lut[255]) == trainId2label[255].color == (0, 0, 0)  # 'unlabeled'
    assert not lut[19:255].any()  # no class: black too
    labels = np.array([[0, 13, 255], [18, 7, 200]], np.uint8)
    assert palette()[labels].tolist() == [
        [[128, 64, 128], [0, 0, 142], [0, 0, 0]],
        [[119, 11, 32], [220, 220, 0], [0, 0, 0]],  # bicycle, traffic sign,
    ]


def test_class_names_are_cityscapes_train_ids_unless_the_weights_name_theirs() -> None:
    assert list(class_names()) == CITYSCAPES_NAMES
    assert class_names()[:2] == ("road", "sidewalk") and class_names()[18] == "bicycle"
    # the catalog's metadata describes its classes in words: not a list of names
    assert list(class_names({"classes": "Cityscapes trainIds 0..18"})) == CITYSCAPES_NAMES
    assert class_names({"class_names": ["sky", "not sky"]}) == ("sky", "not sky")


def test_label_info_message_names_each_train_id() -> None:
    from std_msgs.msg import Header

    from cloudseg.nodes.label_topics import label_info

    msg = label_info(class_names(), Header(frame_id="camera"))
    assert [(c.class_id, c.class_name) for c in msg.class_map] == list(enumerate(CITYSCAPES_NAMES))
    assert msg.threshold == LABEL_THRESHOLD == 0.0 and msg.header.frame_id == "camera"


def test_rviz_config_shows_the_coloured_labels_and_only_graph_image_topics() -> None:
    import yaml

    config = yaml.safe_load((REPO / "config" / "cloudseg.rviz").read_text())
    shown = {d["Topic"]["Value"]: d["Enabled"] for d in config["Visualization Manager"]["Displays"]}
    assert shown[resolve(LABELS_COLOR_TOPIC)] is True
    assert resolve(LABELS_TOPIC) not in shown  # mono8 train ids: nearly black in RViz
    images = {resolve(t.name) for t in TOPICS.values() if t.type == "sensor_msgs/msg/Image"}
    assert set(shown) <= images, set(shown) - images


@pytest.mark.dds
def test_coloured_labels_and_label_info_reach_ros_subscribers(
    shared_data, weights_env, monkeypatch
):
    """The cloud's nodes and camera_labels in this process over real Fast DDS, a real street
    frame: with nobody on the colour topics nothing is coloured; a subscriber then gets rgb8
    labels equal to palette[labels] of the mono8 labels with the same stamp, from the cloud and
    from camera_labels; a subscriber that joins after the segmenter published still gets the
    LabelInfo (transient local) naming the 19 Cityscapes classes."""
    import rclpy
    from rclpy.executors import MultiThreadedExecutor
    from sensor_msgs.msg import Image
    from vision_msgs.msg import LabelInfo

    from cloudseg.media.image_codecs import encode_image
    from cloudseg.msg import Frame
    from cloudseg.nodes.camera_labels_node import CameraLabelsNode
    from cloudseg.nodes.cloud_sr import CloudSRNode
    from cloudseg.nodes.common import qos_for
    from cloudseg.nodes.convert import image_to_numpy as image_pixels
    from cloudseg.nodes.convert import numpy_to_image
    from cloudseg.nodes.segmentation_node import SegmentationNode

    monkeypatch.setenv("FASTDDS_DEFAULT_PROFILES_FILE", str(config_dir() / "fastdds_local.xml"))
    clip = sorted((shared_data / "sequences" / "aachen_seq0000").glob("*.jpg"))[0]
    camera = cv2.resize(
        cv2.cvtColor(cv2.imread(str(clip)), cv2.COLOR_BGR2RGB), (512, 256), cv2.INTER_AREA
    )
    payload = encode_image(cv2.resize(camera, (128, 64), interpolation=cv2.INTER_AREA), "jpeg", 90)
    rclpy.init(args=["--ros-args", "-p", "device:=cpu", "-p", "cpu_max_width:=256"])
    seg = SegmentationNode(in_process=True)
    sr = CloudSRNode(service=seg.service, outputs=seg)
    cam = CameraLabelsNode()
    node = rclpy.create_node("label_topics_test")
    executor = MultiThreadedExecutor(num_threads=2)
    for n in (seg, sr, cam):
        executor.add_node(n)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    got: dict[str, list] = {t: [] for t in (LABELS_TOPIC, CAMERA_LABELS_TOPIC)}
    frame_pub = node.create_publisher(Frame, FRAMES_TOPIC, qos_for(FRAMES_TOPIC))
    image_pub = node.create_publisher(Image, IMAGE_TOPIC, qos_for(IMAGE_TOPIC))

    def subscribe(topic: str, kind=Image, ns: str = "/") -> None:
        got[topic] = []
        node.create_subscription(kind, resolve(topic, ns), got[topic].append, qos_for(topic))

    def send(seq: int) -> None:
        """One frame to the cloud; once its labels are back, the camera image of that frame."""
        stamp = node.get_clock().now().to_msg()
        f = Frame(seq=seq, scale=4, width=512, height=256, codec="jpeg", keyframe=True)
        f.header.stamp, f.header.frame_id, f.sent_stamp, f.data = stamp, "camera", stamp, payload
        frame_pub.publish(f)
        assert spin_until(node, lambda: any(m.header.stamp == stamp for m in got[LABELS_TOPIC]), 30)
        image_pub.publish(numpy_to_image(camera, "rgb8", f.header))
        assert spin_until(
            node, lambda: any(m.header.stamp == stamp for m in got[CAMERA_LABELS_TOPIC]), 10
        )

    try:
        for topic in (LABELS_TOPIC, CAMERA_LABELS_TOPIC):
            subscribe(topic)
        assert spin_until(
            node,
            lambda: (
                frame_pub.get_subscription_count() >= 2  # sr, camera_labels
                and image_pub.get_subscription_count() >= 1
                and seg.own.labels.labels.get_subscription_count() >= 2
                and cam.labels.labels.get_subscription_count() >= 1
            ),
            30,
        )
        for seq in range(2):
            send(seq)
        assert seg.own.labels.colored == 0 and cam.labels.colored == 0  # nobody asked for colour

        for topic in (LABELS_COLOR_TOPIC, CAMERA_LABELS_COLOR_TOPIC):
            subscribe(topic)
        assert spin_until(
            node,
            lambda: (
                seg.own.labels.color.get_subscription_count() >= 1
                and cam.labels.color.get_subscription_count() >= 1
            ),
            30,
        )
        for seq in range(2, 4):
            send(seq)
        assert spin_until(
            node, lambda: got[LABELS_COLOR_TOPIC] and got[CAMERA_LABELS_COLOR_TOPIC], 10
        )
        for mono_topic, color_topic in (
            (LABELS_TOPIC, LABELS_COLOR_TOPIC),
            (CAMERA_LABELS_TOPIC, CAMERA_LABELS_COLOR_TOPIC),
        ):
            mono = {(m.header.stamp.sec, m.header.stamp.nanosec): m for m in got[mono_topic]}
            for colour in got[color_topic]:
                labels = mono[(colour.header.stamp.sec, colour.header.stamp.nanosec)]
                assert colour.header == labels.header and colour.encoding == "rgb8"
                assert (colour.width, colour.height) == (labels.width, labels.height) == (512, 256)
                ids = image_pixels(labels)
                assert len(np.unique(ids)) >= 3, color_topic  # a street scene, not one class
                np.testing.assert_array_equal(image_pixels(colour), palette()[ids])
        assert seg.own.labels.colored >= 1 and cam.labels.colored >= 1

        subscribe(LABEL_INFO_TOPIC, LabelInfo)  # late: the segmenter published at start
        assert spin_until(node, lambda: got[LABEL_INFO_TOPIC], 10)
        spin_for(node, 0.3)
        [info] = got[LABEL_INFO_TOPIC]
        assert [(c.class_id, c.class_name) for c in info.class_map] == list(
            enumerate(CITYSCAPES_NAMES)
        )
        assert info.threshold == 0.0 and info.header.stamp.sec > 0

        seg.outputs("car1")  # another stream of the cloud process: its own LabelInfo
        subscribe(LABEL_INFO_TOPIC, LabelInfo, "car1")
        assert spin_until(node, lambda: got[LABEL_INFO_TOPIC], 10)
        assert got[LABEL_INFO_TOPIC][0].class_map == info.class_map
    finally:
        executor.shutdown(timeout_sec=2.0)
        for n in (sr, seg, cam, node):
            n.destroy_node()
        rclpy.try_shutdown()
