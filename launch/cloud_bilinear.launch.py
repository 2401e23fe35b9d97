"""ros2 launch cloudseg cloud_bilinear.launch.py: bilinear restoration only (no segmentation)."""

import sys
from pathlib import Path

from launch import LaunchDescription

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import graph_nodes


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription(graph_nodes("cloud_bilinear"))
