"""The repository is a ROS 2 package that colcon finds and builds in a workspace."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
VENV = Path(sys.prefix)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """A colcon workspace holding this repository's tracked files under src/cloudseg."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("needs a git checkout to know the tracked files")
    ws = tmp_path_factory.mktemp("ws")
    files = (
        subprocess.run(["git", "ls-files", "-z"], cwd=REPO, check=True, capture_output=True)
        .stdout.decode()
        .split("\0")
    )
    for name in filter(None, files):
        target = ws / "src" / "cloudseg" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, target)
    return ws


def _env() -> dict[str, str]:
    return {
        **os.environ,
        "PATH": f"{VENV / 'bin'}:{os.environ['PATH']}",
        "AMENT_PREFIX_PATH": str(VENV),
        "CMAKE_PREFIX_PATH": str(VENV),
    }


def _colcon(ws: Path, *args: str) -> subprocess.CompletedProcess:
    colcon = shutil.which("colcon", path=str(VENV / "bin"))
    if colcon is None:
        pytest.skip("colcon is not installed in this environment (scripts/setup.sh installs it)")
    return subprocess.run(
        [colcon, *args], cwd=ws, env=_env(), capture_output=True, text=True, timeout=600
    )


def test_colcon_list_finds_one_ament_cmake_package(workspace):
    result = _colcon(workspace, "list")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["cloudseg", "src/cloudseg", "(ros.ament_cmake)"]


def test_colcon_build_installs_messages_code_and_executables(workspace):
    result = _colcon(
        workspace,
        "build",
        "--cmake-args",
        f"-DPython3_EXECUTABLE={sys.executable}",
        "-DBUILD_TESTING=OFF",
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    prefix = workspace / "install" / "cloudseg"
    for exe in (
        "source_node",
        "compressor_node",
        "sr_node",
        "segmentation_node",
        "cloud_node",
        "cloudseg",
    ):
        assert os.access(prefix / "lib" / "cloudseg" / exe, os.X_OK), exe
    for name in ("vehicle", "cloud", "cloud_split", "cloud_bilinear", "pipeline"):
        assert (prefix / "share" / "cloudseg" / "launch" / f"{name}.launch.py").is_file()
    site = next((prefix / "lib").glob("python3*/site-packages"))
    probe = (
        "from cloudseg.msg import Frame; from rclpy.serialization import serialize_message;"
        "import cloudseg.nodes.sr_node, cloudseg, sys;"
        "assert serialize_message(Frame(codec='h264'));"
        "print(cloudseg.__file__)"
    )
    env = {
        **_env(),
        "PYTHONPATH": str(site),
        "LD_LIBRARY_PATH": f"{prefix / 'lib'}:{os.environ.get('LD_LIBRARY_PATH', '')}",
    }
    out = subprocess.run(
        [sys.executable, "-c", probe],
        env=env,
        capture_output=True,
        text=True,
        cwd=workspace,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert str(site) in out.stdout
