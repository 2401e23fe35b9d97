"""ros2 launch cloudseg cloud_bilinear.launch.py: bilinear restoration only (no segmentation).

Arguments: `ros2 launch -s cloudseg cloud_bilinear.launch.py` (launch/_common.py makes them).
"""

import sys
from pathlib import Path

from launch import LaunchDescription

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import graph_launch_description


def generate_launch_description() -> LaunchDescription:
    return graph_launch_description("cloud_bilinear")
