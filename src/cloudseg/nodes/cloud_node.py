"""The cloud process: the sr and segmentation nodes composed in one process, serving many
vehicles.

The sr node (`cloudseg.nodes.cloud_sr`) keeps every vehicle stream apart (its namespace: own
decoders, sequence, keyframe requests, statistics), batches the newest decoded frame of each
stream and runs each batch on the segmentation node's models by a function call, on the GPU,
never through DDS (as Isaac ROS type adaptation does for C++ components); each result goes back
on its own stream's topics (`<ns>/cloudseg/labels`, `overlay`, `stats`, `restored`). See
`cloudseg.cloud`. Both nodes keep their names and parameters, so config/cloud.yaml configures
them as if they ran apart.
"""

from __future__ import annotations

from cloudseg.nodes.cloud_sr import CloudSRNode
from cloudseg.nodes.common import run_nodes
from cloudseg.nodes.segmentation_node import SegmentationNode


def compose() -> list:
    """Both nodes, wired: segmentation owns the models and the result publishers, sr batches
    the streams' frames on them."""
    segmentation = SegmentationNode(in_process=True)
    sr = CloudSRNode(service=segmentation.service, outputs=segmentation)
    return [sr, segmentation]


def main(args: list[str] | None = None) -> int:
    return run_nodes(compose, args, name="cloud_node")


if __name__ == "__main__":
    raise SystemExit(main())
