"""ros2 launch cloudseg cloud_split.launch.py: sr and segmentation as separate processes.

Arguments: `ros2 launch -s cloudseg cloud_split.launch.py` (launch/_common.py makes them).
"""

import sys
from pathlib import Path

from launch import LaunchDescription

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import graph_launch_description


def generate_launch_description() -> LaunchDescription:
    return graph_launch_description("cloud_split")
