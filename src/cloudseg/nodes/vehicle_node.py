"""The vehicle process: frame_selector, compressor and camera_labels composed in one process.

The frame_selector receives each camera image once over DDS; the frames it selects go to the
compressor by a function call with their level (KEY: an H.264 IDR), and every camera frame
goes to camera_labels, which publishes the newest labels for it. Each node keeps its name and
parameters, so config/vehicle.yaml configures them as if they ran apart.
"""

from __future__ import annotations

from cloudseg.nodes.camera_labels_node import CameraLabelsNode
from cloudseg.nodes.common import run_nodes
from cloudseg.nodes.compressor_node import CompressorNode
from cloudseg.nodes.frame_selector_node import FrameSelectorNode


def compose() -> list:
    """The three nodes, wired: the selector feeds the compressor and camera_labels."""
    compressor = CompressorNode(in_process=True)
    labels = CameraLabelsNode(in_process=True)

    def send(header, rgb, decision) -> None:
        compressor.send(header, rgb, int(decision.level), decision.deviation)

    selector = FrameSelectorNode(handoff=send, on_camera=labels.on_camera)
    return [selector, compressor, labels]


def main(args: list[str] | None = None) -> int:
    return run_nodes(compose, args, name="vehicle_node")


if __name__ == "__main__":
    raise SystemExit(main())
