"""The cloud process: the sr and segmentation nodes composed in one process.

The sr node decodes each Frame and super-resolves it; the pyramid (LR, x2, x4) goes to the
segmentation node by a function call, on the GPU, never through DDS (as Isaac ROS type
adaptation does for C++ components). Both nodes keep their names and parameters, so
config/cloud.yaml configures them as if they ran apart.
"""

from __future__ import annotations

from cloudseg.nodes.common import run_nodes
from cloudseg.nodes.segmentation_node import SegmentationNode
from cloudseg.nodes.sr_node import SRNode


def compose() -> list:
    """Both nodes, wired: segmentation owns the models, sr hands it the pyramid."""
    segmentation = SegmentationNode(in_process=True)
    sr = SRNode(service=segmentation.service, handoff=segmentation.segment_pyramid)
    return [sr, segmentation]


def main(args: list[str] | None = None) -> int:
    return run_nodes(compose, args, name="cloud_node")


if __name__ == "__main__":
    raise SystemExit(main())
