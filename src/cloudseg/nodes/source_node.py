"""Source node: publishes sensor_msgs/Image (rgb8) from a bag, a frame folder or a video."""

from __future__ import annotations

import threading
import time

from rclpy.node import Node
from rclpy.task import Future
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from cloudseg.data.frames import DataError, SourceFrame
from cloudseg.data.sources import Pacer, open_source
from cloudseg.graph import GRAPHS, IMAGE_TOPIC, SOURCE, ready_endpoints
from cloudseg.nodes.common import qos_for, run_node
from cloudseg.nodes.convert import numpy_to_image
from cloudseg.nodes.graph_watch import missing_endpoints
from cloudseg.nodes.parameters import declare_parameters

#: After our publisher sees a subscriber, the subscriber may not have matched us yet (DDS
#: discovery is not symmetric); best-effort frames sent in that window are lost.
MATCH_GRACE_S = 0.5


class SourceNode(Node):
    """Replays an input at a fixed rate or at the pace of its own stamps; ends when done."""

    def __init__(self) -> None:
        super().__init__(SOURCE.name)
        self.params = p = declare_parameters(self, SOURCE)
        self.finished = Future()
        self.publisher = self.create_publisher(Image, IMAGE_TOPIC, qos_for(IMAGE_TOPIC))
        self.count = 0
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
        # rate 0: follow the input's own stamps (bag, video); else a fixed rate
        self.stopping = threading.Event()
        # sleeps end early when the node stops
        self.pacer = Pacer(p["rate"] or None, sleep=lambda s: self.stopping.wait(max(s, 0.0)))
        pace = f"{p['rate']:.1f} Hz" if p["rate"] else "the input's stamps"
        self.get_logger().info(
            f"publishing {self.source.describe()} on {self.publisher.topic_name} at {pace}"
            f" (stamps: {p['stamp_mode']})"
        )
        self.thread = threading.Thread(target=self.play, daemon=True)
        self.thread.start()

    def wait_for_graph(self, deadline: float) -> None:
        """Hold the first frame until the other processes of the graph `wait_for_graph` names
        are up: their `ready` endpoints (cloudseg.graph, as `cloudseg run` waits for them) seen
        in this node's namespace. A launch file starts every node at once; without this the
        cloud, still loading its models, would miss the first frames (and the H.264 IDR)."""
        graph = self.params["wait_for_graph"]
        if not graph:
            return
        if graph not in GRAPHS:
            self.get_logger().warning(f"wait_for_graph: no graph {graph!r}; not waiting")
            return
        processes = [process for process, _ in GRAPHS[graph] if process != SOURCE.name]
        endpoints, ns = ready_endpoints(processes), self.get_namespace()
        t0 = time.monotonic()
        while missing := missing_endpoints(self, endpoints, ns):
            if self.stopping.is_set():
                return
            if time.monotonic() > deadline:
                waiting = ", ".join(e.describe(ns) for e in missing)
                self.get_logger().warning(
                    f"the {graph} graph is not up after {self.params['wait_timeout']} s "
                    f"(missing: {waiting}); starting anyway"
                )
                return
            time.sleep(0.1)
        self.get_logger().info(f"{graph} graph up after {time.monotonic() - t0:.1f} s")

    def wait_for_subscribers(self) -> None:
        deadline = time.monotonic() + self.params["wait_timeout"]
        self.wait_for_graph(deadline)
        wanted = self.params["wait_for_subscribers"]
        if not wanted:
            return
        while self.publisher.get_subscription_count() < wanted and not self.stopping.is_set():
            if time.monotonic() > deadline:
                self.get_logger().warning(
                    f"only {self.publisher.get_subscription_count()} of {wanted} subscribers "
                    f"after {self.params['wait_timeout']} s; starting anyway"
                )
                return
            time.sleep(0.05)
        time.sleep(MATCH_GRACE_S)

    def publish_frame(self, frame: SourceFrame) -> None:
        header = Header(frame_id=self.params["frame_id"])
        if self.params["stamp_mode"] == "now":
            header.stamp = self.get_clock().now().to_msg()
        else:
            header.stamp.sec, header.stamp.nanosec = divmod(int(frame.stamp_ns), 1_000_000_000)
        self.publisher.publish(numpy_to_image(frame.rgb, "rgb8", header))
        self.count += 1

    def play(self) -> None:
        code = 0
        try:
            self.wait_for_subscribers()
            for frame in self.source:
                self.pacer.wait(frame.stamp_ns)
                if self.stopping.is_set():
                    return
                self.publish_frame(frame)
            self.get_logger().info(f"input finished: {self.count} frames published")
        except DataError as exc:
            self.get_logger().error(f"input failed after {self.count} frames: {exc}")
            code = 1
        except Exception as exc:  # the player's boundary: say why, end the node
            if self.stopping.is_set():
                return
            self.get_logger().error(
                f"input failed after {self.count} frames: {type(exc).__name__}: {exc}"
            )
            code = 1
        if not self.finished.done():
            self.finished.set_result(code)

    def destroy_node(self) -> None:
        """Stop the player (it ends its sleep at once) and wait for it before the publisher
        goes away."""
        thread = getattr(self, "thread", None)
        if thread is not None:
            self.stopping.set()
            thread.join(5.0)
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    return run_node(SourceNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
