"""Which of a graph's expected endpoints (cloudseg.graph `ready`) a node can see yet."""

from __future__ import annotations

from rclpy.node import Node

from cloudseg.graph import Endpoint


def missing_endpoints(node: Node, endpoints: list[Endpoint]) -> list[Endpoint]:
    """The endpoints `node` does not see in the ROS graph yet (by node name and topic)."""
    seen: dict[tuple[str, str], set[str]] = {}
    out = []
    for e in endpoints:
        key = (e.kind, e.topic)
        if key not in seen:
            lookup = (
                node.get_publishers_info_by_topic
                if e.kind == "pub"
                else node.get_subscriptions_info_by_topic
            )
            seen[key] = {info.node_name for info in lookup(e.topic)}
        if e.node not in seen[key]:
            out.append(e)
    return out


class GraphWatcher:
    """A bare node (own rclpy context) that looks at the ROS graph, for `cloudseg run`."""

    def __init__(self, name: str = "cloudseg_run") -> None:
        import rclpy
        from rclpy.context import Context

        self.context = Context()
        rclpy.init(args=[], context=self.context)
        self.node = rclpy.create_node(name, context=self.context)

    def missing(self, endpoints: list[Endpoint]) -> list[Endpoint]:
        return missing_endpoints(self.node, endpoints)

    def close(self) -> None:
        import rclpy

        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)

    def __enter__(self) -> GraphWatcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
