"""Source node: publishes sensor_msgs/Image (rgb8) from a bag, a frame folder or a video."""

from __future__ import annotations

import time

from rclpy.node import Node
from rclpy.task import Future
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from cloudseg.data.sources import DataError, open_source
from cloudseg.graph import IMAGE_TOPIC, SOURCE
from cloudseg.nodes.common import declare_parameters, qos_for, run_node
from cloudseg.nodes.convert import numpy_to_image


class SourceNode(Node):
    """Replays an input at a fixed rate (or its own stamps) and ends when it is done."""

    def __init__(self) -> None:
        super().__init__(SOURCE.name)
        self.params = p = declare_parameters(self, SOURCE)
        self.finished = Future()
        self.publisher = self.create_publisher(Image, IMAGE_TOPIC, qos_for(IMAGE_TOPIC))
        try:
            self.source = open_source(
                p["input"] or None,
                loop=p["loop"],
                limit=p["limit"] or None,
                topic=p["topic_in_bag"],
            )
        except DataError as exc:
            self.get_logger().error(f"cannot open input: {exc}")
            self.finished.set_result(1)
            return
        if not p["input"]:
            self.get_logger().warning(
                "no input given: publishing a generated test clip. Real data: a rosbag2 "
                "(`cloudseg convert`), a Cityscapes leftImg8bit_sequence folder or a video"
            )
        rate = p["rate"] or self.source.fps or 17.0
        self.frames = iter(self.source)
        self.count = 0
        self.get_logger().info(
            f"publishing {self.source.describe()} on {IMAGE_TOPIC} at "
            f"{rate:.1f} Hz (stamps: {p['stamp_mode']})"
        )
        self.wait_until = time.monotonic() + p["wait_timeout"]
        self.timer = self.create_timer(1.0 / rate, self.tick)

    def tick(self) -> None:
        if self.finished.done():
            return
        if self.count == 0 and self.params["wait_for_subscribers"]:
            matched = self.publisher.get_subscription_count()
            if matched < self.params["wait_for_subscribers"]:
                if time.monotonic() < self.wait_until:
                    return
                self.get_logger().warning(
                    f"only {matched} subscribers after "
                    f"{self.params['wait_timeout']} s; starting anyway"
                )
            self.params["wait_for_subscribers"] = 0
        try:
            frame = next(self.frames)
        except StopIteration:
            self.get_logger().info(f"input finished: {self.count} frames published")
            self.timer.cancel()
            self.finished.set_result(0)
            return
        except DataError as exc:
            self.get_logger().error(f"input failed: {exc}")
            self.timer.cancel()
            self.finished.set_result(1)
            return
        header = Header(frame_id=self.params["frame_id"])
        if self.params["stamp_mode"] == "now":
            header.stamp = self.get_clock().now().to_msg()
        else:
            header.stamp.sec, header.stamp.nanosec = divmod(int(frame.stamp_ns), 1_000_000_000)
        self.publisher.publish(numpy_to_image(frame.rgb, "rgb8", header))
        self.count += 1


def main(args: list[str] | None = None) -> int:
    return run_node(SourceNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
