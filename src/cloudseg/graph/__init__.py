"""The node graph, defined once: topics, QoS roles, nodes and their parameters.

Nodes declare their parameters from here, the launch files and the `cloudseg` command start
the nodes listed here with the config files named here, the command line takes its choices and
defaults from here, and the tests check against it. Nothing here imports ROS.

- `topics`: topic names, types and QoS roles; namespaces.
- `schema`: `Param`, `Endpoint`, `NodeSpec`.
- `vehicle`, `cloud`, `controller`: the nodes of each side.
- `graphs`: `NODES`, the process graphs (`GRAPHS`) and their config folder.
"""

from cloudseg.graph.cloud import (
    ALLOW_UNTRAINED,
    BACKEND,
    CLOUD,
    DEVICE,
    DTYPE,
    FLEET_PARAMS,
    INFERENCE_CHOICES,
    SEG_WEIGHTS,
    SEGMENTATION,
    SR,
    SR_WEIGHTS,
    TRITON_POLICIES,
)
from cloudseg.graph.controller import CONTROLLER
from cloudseg.graph.graphs import CONFIG_DIR_NAME, GRAPHS, NODES, config_dir, ready_endpoints
from cloudseg.graph.schema import PACKAGE, Endpoint, NodeSpec, Param
from cloudseg.graph.topics import (
    BAG_IMAGE_TOPIC,
    CAMERA_LABELS_COLOR_TOPIC,
    CAMERA_LABELS_INFO_TOPIC,
    CAMERA_LABELS_TOPIC,
    COMPRESSED_TOPIC,
    FFMPEG_TOPIC,
    FOXGLOVE_TOPIC,
    FRAMES_TOPIC,
    IMAGE_TOPIC,
    KEYFRAME_REQUEST_TOPIC,
    KNOB_TOPIC,
    LABEL_INFO_TOPIC,
    LABELS_COLOR_TOPIC,
    LABELS_TOPIC,
    LOWRES_TOPIC,
    OVERLAY_TOPIC,
    RESTORED_INFO_TOPIC,
    RESTORED_TOPIC,
    STATS_TOPIC,
    TOPICS,
    Topic,
    namespace,
    resolve,
)
from cloudseg.graph.vehicle import (
    CAMERA_LABELS,
    CODEC_CHOICES,
    COMPRESSOR,
    DOWNSAMPLE_KERNELS,
    FRAME_SELECTOR,
    SCALES,
    SOURCE,
    VEHICLE,
)

__all__ = [
    "ALLOW_UNTRAINED",
    "BACKEND",
    "BAG_IMAGE_TOPIC",
    "CAMERA_LABELS",
    "CAMERA_LABELS_COLOR_TOPIC",
    "CAMERA_LABELS_INFO_TOPIC",
    "CAMERA_LABELS_TOPIC",
    "CLOUD",
    "CODEC_CHOICES",
    "COMPRESSED_TOPIC",
    "COMPRESSOR",
    "CONFIG_DIR_NAME",
    "CONTROLLER",
    "DEVICE",
    "DOWNSAMPLE_KERNELS",
    "DTYPE",
    "FFMPEG_TOPIC",
    "FLEET_PARAMS",
    "FOXGLOVE_TOPIC",
    "FRAMES_TOPIC",
    "FRAME_SELECTOR",
    "GRAPHS",
    "IMAGE_TOPIC",
    "INFERENCE_CHOICES",
    "KEYFRAME_REQUEST_TOPIC",
    "KNOB_TOPIC",
    "LABELS_COLOR_TOPIC",
    "LABELS_TOPIC",
    "LABEL_INFO_TOPIC",
    "LOWRES_TOPIC",
    "NODES",
    "OVERLAY_TOPIC",
    "PACKAGE",
    "RESTORED_INFO_TOPIC",
    "RESTORED_TOPIC",
    "SCALES",
    "SEGMENTATION",
    "SEG_WEIGHTS",
    "SOURCE",
    "SR",
    "SR_WEIGHTS",
    "STATS_TOPIC",
    "TOPICS",
    "TRITON_POLICIES",
    "VEHICLE",
    "Endpoint",
    "NodeSpec",
    "Param",
    "Topic",
    "config_dir",
    "namespace",
    "ready_endpoints",
    "resolve",
]
