"""A GPU host with only PyTorch, numpy and OpenCV: the inference and training modules import
without rclpy, rosbags, mcap, cityscapesScripts or PyAV (each blocked in a fresh interpreter by
a `sys.meta_path` finder that refuses them), and the blocking itself works (a node module, which
needs rclpy, fails to import under it)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

BLOCKED = ("rclpy", "rosbags", "mcap", "cityscapesscripts", "av")

#: What the cloud's GPU work and the trainers need on such a host.
GPU_PATH_MODULES = (
    "cloudseg.devices",
    "cloudseg.cloud.local",
    "cloudseg.cloud.service",
    "cloudseg.cloud.inference",
    "cloudseg.cloud.batcher",
    "cloudseg.restore",
    "cloudseg.restore.pipeline",
    "cloudseg.restore.backends",
    "cloudseg.restore.labels",
    "cloudseg.models.registry",
    "cloudseg.models.carn",
    "cloudseg.models.espnetv2",
    "cloudseg.models.icnet",
    "cloudseg.models.selector_net",
    "cloudseg.media.stream",
    "cloudseg.data",
    "cloudseg.data.cityscapes",
    "cloudseg.train.checkpoint",
    "cloudseg.train.data",
    "cloudseg.train.sr",
    "cloudseg.train.stream",
    "cloudseg.train.icnet",
    "cloudseg.train.selector",
    "cloudseg.triton.export",
)

_RUNNER = textwrap.dedent(
    """
    import importlib, sys

    BLOCKED = {blocked!r}

    class Refuse:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{{name}} is blocked (a GPU host without ROS)")
            return None

    sys.meta_path.insert(0, Refuse())
    failed = []
    for name in sys.argv[1:]:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            failed.append(f"{{name}}: {{exc}}")
    leaked = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    print("\\n".join(failed + [f"leaked: {{m}}" for m in leaked]))
    sys.exit(1 if failed or leaked else 0)
    """
).format(blocked=BLOCKED)


def _import_blocked(*modules: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", _RUNNER, *modules],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_gpu_path_modules_import_without_ros_and_media_packages() -> None:
    done = _import_blocked(*GPU_PATH_MODULES)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]


def test_the_blocking_works() -> None:
    for module, blocked in (
        ("cloudseg.nodes.segmentation_node", "rclpy"),
        ("cloudseg.data.bag", "rosbags"),
        ("cloudseg.media.h264", "av"),
    ):
        done = _import_blocked(module)
        assert done.returncode == 1 and f"{blocked} is blocked" in done.stdout, done.stdout
