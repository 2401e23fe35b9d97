"""Which of a graph's expected endpoints (cloudseg.graph `ready`) a node can see yet."""

from __future__ import annotations

from rclpy.node import Node

from cloudseg.graph import Endpoint, namespace, resolve


def missing_endpoints(node: Node, endpoints: list[Endpoint], ns: str = "/") -> list[Endpoint]:
    """The endpoints `node` does not see in the ROS graph yet: the graph's nodes running in
    namespace `ns` (by node name and namespace), their topics resolved in it
    (`cloudseg/frames` in `car1`: /car1/cloudseg/frames), whatever the watching node's own."""
    ns = namespace(ns)
    seen: dict[tuple[str, str], set[tuple[str, str]]] = {}
    out = []
    for e in endpoints:
        key = (e.kind, resolve(e.topic, ns))
        if key not in seen:
            lookup = (
                node.get_publishers_info_by_topic
                if e.kind == "pub"
                else node.get_subscriptions_info_by_topic
            )
            seen[key] = {(info.node_name, info.node_namespace) for info in lookup(key[1])}
        if (e.node, ns) not in seen[key]:
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

    def missing(self, endpoints: list[Endpoint], ns: str = "/") -> list[Endpoint]:
        return missing_endpoints(self.node, endpoints, ns)

    def close(self) -> None:
        import rclpy

        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)

    def __enter__(self) -> GraphWatcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
