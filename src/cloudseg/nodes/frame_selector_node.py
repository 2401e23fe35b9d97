"""Frame selector node (vehicle): KEY, USEFUL or STALE for every camera image.

Runs in the vehicle process (`vehicle_node`) in front of the compressor: each selected frame
goes to the compressor by a function call with its level and deviation (a KEY frame becomes an
H.264 IDR), and every camera frame goes to the camera_labels node. The logic is
:mod:`cloudseg.selection.selector`; a Knob changes the thresholds, the mode and the frame-rate
cap from the next frame (a Knob is checked as a whole, `cloudseg.control.knob`: a bad one is
refused with a log line, the previous settings kept).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from rclpy.node import Node
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from cloudseg.control.knob import check_knob
from cloudseg.graph import FRAME_SELECTOR, IMAGE_TOPIC, KNOB_TOPIC
from cloudseg.guard import BadInput, check_stamp
from cloudseg.msg import Knob
from cloudseg.nodes.common import boundary, qos_for
from cloudseg.nodes.convert import image_to_rgb
from cloudseg.nodes.parameters import declare_parameters
from cloudseg.selection.selector import Decision, FrameSelector, SelectorSettings

#: (camera header, RGB frame, decision) for a frame to send
Handoff = Callable[[Header, np.ndarray, Decision], object]
#: (camera header, RGB frame) for every camera frame
CameraHandoff = Callable[[Header, np.ndarray], object]

SUMMARY_EVERY = 100  # frames between "KEY / USEFUL / STALE" log lines


class FrameSelectorNode(Node):
    def __init__(self, handoff: Handoff, on_camera: CameraHandoff | None = None) -> None:
        super().__init__(FRAME_SELECTOR.name)
        self.params = p = declare_parameters(self, FRAME_SELECTOR)
        self.handoff, self.on_camera = handoff, on_camera
        try:
            settings = SelectorSettings.from_params(p)
            self.selector = FrameSelector(settings, learned_weights=p["learned_weights"])
        except Exception as exc:  # bad thresholds, learned weights missing: say why, go on
            self.get_logger().error(f"selection {p['mode']} cannot start: {exc}; using pixel")
            self.selector = FrameSelector(SelectorSettings(max_fps=p["max_fps"]))
        self.frames = 0
        self.create_subscription(Image, IMAGE_TOPIC, self.on_image, qos_for(IMAGE_TOPIC))
        self.create_subscription(Knob, KNOB_TOPIC, self.on_knob, qos_for(KNOB_TOPIC))
        image = self.resolve_topic_name(IMAGE_TOPIC)
        self.get_logger().info(f"selecting {image}: {self.selector.settings.describe()}")

    def on_parameters(self, changes: dict) -> None:
        """`ros2 param set`: thresholds, mode and bounds apply from the next frame."""
        names = SelectorSettings.__dataclass_fields__
        fields = {k: v for k, v in changes.items() if k in names}
        if fields:
            self.selector.apply(self.selector.next_settings.with_changes(**fields))

    @boundary("knob")
    def on_knob(self, knob: Knob) -> None:
        k = check_knob(knob)  # refused as a whole: the previous settings stay
        try:
            new = self.selector.next_settings.with_knob(
                k.key_threshold, k.useful_threshold, k.max_fps, k.selection_mode
            )
            if new == self.selector.next_settings:
                return
            self.selector.apply(new)
        except Exception as exc:  # SelectionError, missing learned weights
            raise BadInput(f"knob {k.seq} refused by the selector: {exc}", "knob") from exc
        self.get_logger().info(f"knob {k.seq} applies from the next frame: {new.describe()}")

    @boundary("camera image")
    def on_image(self, msg: Image) -> None:
        stamp = check_stamp(msg.header.stamp, "header.stamp")
        rgb = image_to_rgb(msg)
        decision = self.selector.select(rgb, stamp)
        if decision.send:
            self.handoff(msg.header, rgb, decision)
        if self.on_camera is not None:
            self.on_camera(msg.header, rgb)
        self.frames += 1
        if self.frames % SUMMARY_EVERY == 0:
            self.get_logger().info(f"{self.frames} frames: {self.selector.summary()}")
