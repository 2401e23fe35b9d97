"""`cloudseg view`: the graph's stream, labels and statistics for Foxglove over a WebSocket,
without a ROS install on the viewing side. The channels and conversions are
`cloudseg.view.channels` (plain: no rclpy); the node is `cloudseg.nodes.view_node`. This
package's top level stays light (the command line's defaults), the SDK loads with `channels`."""

from __future__ import annotations

#: Where the view listens by default: this host only (`--host 0.0.0.0` exposes the stream).
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765


def view_url(host: str, port: int) -> str:
    """The address to open in Foxglove ("Open connection"); a wildcard host is shown as this
    host's loopback address (the server also answers there)."""
    shown = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
    return f"ws://{shown}:{port}"
