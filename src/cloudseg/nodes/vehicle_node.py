"""The vehicle process: frame_selector, compressor and camera_labels composed in one process.

The frame_selector receives each camera image once over DDS; the frames it selects go to the
compressor by a function call with their level (KEY: an H.264 IDR), and every camera frame
goes to camera_labels, which publishes the newest labels for it. Each node keeps its name and
parameters, so config/vehicle.yaml configures them as if they ran apart.

Connection health (`cloudseg.link_health`): the compressor also subscribes to the cloud's
FrameStats and, once a second, tells `LinkHealth` what it sent, what came back and what matched.
A down link is one warning line, its return one line; when TCP discovery has not matched while
the cloud listens, the process starts again in place (a new DDS participant: `run_nodes`,
RESTART_CONTEXT).
"""

from __future__ import annotations

import os
import time

from rclpy.task import Future

from cloudseg.fastdds import PEER_ADDRESS_ENV, PEER_PORT_ENV, wait_for_tcp_peer
from cloudseg.graph import STATS_TOPIC
from cloudseg.link_health import LinkHealth
from cloudseg.msg import FrameStats
from cloudseg.nodes.camera_labels_node import CameraLabelsNode
from cloudseg.nodes.common import RESTART_CONTEXT, qos_for, run_nodes
from cloudseg.nodes.compressor_node import CompressorNode
from cloudseg.nodes.frame_selector_node import FrameSelectorNode

#: The link's state handed to the process that replaces this one (`LinkHealth.state`).
LINK_STATE_ENV = "CLOUDSEG_LINK_STATE"


class LinkWatch:
    """Feeds the compressor's counters to `LinkHealth` once a second and acts on it."""

    def __init__(self, compressor: CompressorNode, health: LinkHealth) -> None:
        self.node, self.health, self.stats = compressor, health, 0
        self.sub = compressor.create_subscription(
            FrameStats, STATS_TOPIC, self.on_stats, qos_for(STATS_TOPIC)
        )
        compressor.finished = Future()  # run_nodes waits on it: RESTART_CONTEXT re-creates
        compressor.create_timer(1.0, self.check)

    def peer_listens(self) -> bool:
        """The TCP profile's cloud accepts connections (no peer configured: False, nothing to
        re-create against)."""
        host, port = os.environ.get(PEER_ADDRESS_ENV), os.environ.get(PEER_PORT_ENV)
        return bool(host and port) and wait_for_tcp_peer(host, int(port), timeout=0.5)

    def on_stats(self, _msg: FrameStats) -> None:
        self.stats += 1

    def remote_subscribers(self) -> int:
        """Subscribers of the frames topic outside this process (camera_labels here reads the
        frames too): those of another DDS participant (GUID prefix: the first 12 bytes)."""
        node, topic = self.node, self.node.frame_pub.topic_name
        own = {
            bytes(i.endpoint_gid[:12])
            for i in node.get_publishers_info_by_topic(topic)
            if (i.node_name, i.node_namespace) == (node.get_name(), node.get_namespace())
        }
        subs = node.get_subscriptions_info_by_topic(topic)
        return sum(bytes(i.endpoint_gid[:12]) not in own for i in subs)

    def check(self) -> None:
        now, node = time.time(), self.node
        event = self.health.observe(
            now,
            node.seq,
            self.stats,
            self.remote_subscribers(),
            self.sub.get_publisher_count(),
        )
        if event is not None:
            if event.up:  # one call site per severity (rclpy refuses a mix)
                node.get_logger().info(event.line)
            else:
                node.get_logger().warning(event.line)
        if (
            self.health.up is False
            and not node.finished.done()
            and self.peer_listens()
            and self.health.recreate_due(now)
        ):
            os.environ[LINK_STATE_ENV] = self.health.state()  # for the restarted process
            node.finished.set_result(RESTART_CONTEXT)


def compose(health: LinkHealth | None = None) -> list:
    """The three nodes, wired: the selector feeds the compressor and camera_labels; with
    `health`, the compressor watches the link."""
    compressor = CompressorNode(in_process=True)
    labels = CameraLabelsNode(in_process=True)

    def send(header, rgb, decision) -> None:
        compressor.send(header, rgb, int(decision.level), decision.deviation)

    selector = FrameSelectorNode(handoff=send, on_camera=labels.on_camera)
    if health is not None:
        LinkWatch(compressor, health)
    return [selector, compressor, labels]


def main(args: list[str] | None = None) -> int:
    resumed = os.environ.pop(LINK_STATE_ENV, "")  # set by the process this one replaced

    def factory() -> list:
        nodes = compose()
        timeout, retry = (nodes[1].params[k] for k in ("link_timeout", "link_retry"))
        if timeout > 0:
            health = LinkHealth(timeout, retry, recreate=PEER_ADDRESS_ENV in os.environ)
            if resumed:
                health.resume(resumed, time.time())
            LinkWatch(nodes[1], health)
        return nodes

    return run_nodes(factory, args, name="vehicle_node")


if __name__ == "__main__":
    raise SystemExit(main())
