"""The nodes by name, the process graphs the launch files and `cloudseg run` start, and the
folder of their config files."""

from __future__ import annotations

from pathlib import Path

from cloudseg.graph.cloud import CLOUD, SEGMENTATION, SR
from cloudseg.graph.controller import CONTROLLER
from cloudseg.graph.schema import PACKAGE, Endpoint, NodeSpec
from cloudseg.graph.vehicle import CAMERA_LABELS, COMPRESSOR, FRAME_SELECTOR, SOURCE, VEHICLE

NODES: dict[str, NodeSpec] = {
    n.name: n
    for n in (
        SOURCE,
        FRAME_SELECTOR,
        COMPRESSOR,
        CAMERA_LABELS,
        VEHICLE,
        SR,
        SEGMENTATION,
        CLOUD,
        CONTROLLER,
    )
}

CONFIG_DIR_NAME = "config"

#: Which nodes each launch file / `cloudseg run` target starts, and with which config file.
GRAPHS: dict[str, tuple[tuple[str, str], ...]] = {
    "vehicle": (("vehicle", "vehicle.yaml"),),
    "cloud": (("cloud", "cloud.yaml"),),
    "cloud_split": (("sr", "cloud_split.yaml"), ("segmentation", "cloud_split.yaml")),
    "cloud_bilinear": (("sr", "cloud_bilinear.yaml"),),  # the LR-bilinear baseline
    "pipeline": (
        ("source", "source.yaml"),
        ("vehicle", "vehicle.yaml"),
        ("cloud", "cloud.yaml"),
        ("controller", "controller.yaml"),
    ),
    "controller": (("controller", "controller.yaml"),),
}


def ready_endpoints(processes: list[str]) -> list[Endpoint]:
    """What the started `processes` (graph entries) have once they are up: `cloudseg run`, the
    demo and the source's `wait_for_graph` wait for these before the first frame."""
    return [e for p in processes for e in NODES[p].ready]


def config_dir() -> Path:
    """The folder holding the parameter files: the source tree's, or the installed share/."""
    package_dir = Path(__file__).resolve().parents[1]  # .../cloudseg
    for candidate in (
        package_dir.parents[1] / CONFIG_DIR_NAME,  # source checkout: <repo>/src/cloudseg
        # installed: <prefix>/lib/pythonX/site-packages/cloudseg
        package_dir.parents[3] / "share" / PACKAGE / CONFIG_DIR_NAME,
    ):
        if candidate.is_dir():
            return candidate
    try:  # a sourced ROS workspace
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory(PACKAGE)) / CONFIG_DIR_NAME
    except Exception as exc:
        raise FileNotFoundError(f"cannot find the {PACKAGE} config folder") from exc
