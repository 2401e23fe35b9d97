"""ros2 launch cloudseg controller.launch.py: the 'controller' graph of cloudseg.graph.GRAPHS."""

import sys
from pathlib import Path

from launch import LaunchDescription

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import graph_nodes


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription(graph_nodes("controller"))
