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


def _shim_dir(ws: Path) -> Path:
    """A `colcon` on PATH that runs this environment's colcon with this interpreter (a copied
    virtual environment's scripts may name another interpreter in their first line)."""
    colcon = shutil.which("colcon", path=str(VENV / "bin"))
    if colcon is None:
        pytest.skip("colcon is not installed in this environment (scripts/setup.sh installs it)")
    shim = ws / "shim"
    shim.mkdir(exist_ok=True)
    (shim / "colcon").write_text(f'#!/bin/sh\nexec "{sys.executable}" "{colcon}" "$@"\n')
    (shim / "colcon").chmod(0o755)
    return shim


def _env(ws: Path) -> dict[str, str]:
    """As after sourcing a ROS install: its prefix (here the venv, where the ROS wheels lay
    out one) on AMENT_PREFIX_PATH, CMAKE_PREFIX_PATH and PATH."""
    return {
        **os.environ,
        "PATH": f"{_shim_dir(ws)}:{VENV / 'bin'}:{os.environ['PATH']}",
        "AMENT_PREFIX_PATH": str(VENV),
        "CMAKE_PREFIX_PATH": str(VENV),
    }


def _colcon(ws: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["colcon", *args], cwd=ws, env=_env(ws), capture_output=True, text=True, timeout=600
    )


def readme_colcon_lines() -> list[str]:
    """The documented commands for a ROS 2 install (docs/running.md: the block after "With a ROS 2
    install")."""
    text = (REPO / "docs" / "running.md").read_text()
    block = text[text.index("With a ROS 2 install") :].split("```bash\n", 1)[1].split("```")[0]
    return [line.split("#")[0].strip() for line in block.splitlines() if line.strip()]


def test_colcon_list_finds_one_ament_cmake_package(workspace):
    result = _colcon(workspace, "list")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["cloudseg", "src/cloudseg", "(ros.ament_cmake)"]


def test_readme_colcon_lines_build_and_source_the_package(workspace):
    """`colcon build && source install/setup.bash`, exactly as docs/running.md has it, in bash:
    it builds, setup.bash exists (colcon-bash), and sourcing it puts the package (messages,
    code, executables, launch files) on the paths ROS tools and Python use."""
    first = readme_colcon_lines()[0]
    assert first == "colcon build && source install/setup.bash"
    probe = (
        "from cloudseg.msg import Frame; from rclpy.serialization import serialize_message;"
        "import cloudseg.nodes.sr_node, cloudseg;"
        "assert serialize_message(Frame(codec='h264'));"
        "print(cloudseg.__file__)"
    )
    script = (
        f"set -e; {first} > build.log 2>&1; "
        'echo "AMENT_PREFIX_PATH=$AMENT_PREFIX_PATH"; '
        f'cd /; python -c "{probe}"'
    )
    result = subprocess.run(
        ["bash", "-c", script],
        cwd=workspace,
        env=_env(workspace),
        capture_output=True,
        text=True,
        timeout=900,
    )
    log = workspace / "build.log"
    tail = log.read_text()[-3000:] if log.exists() else ""
    assert result.returncode == 0, tail + result.stdout[-2000:] + result.stderr[-3000:]
    prefix = workspace / "install" / "cloudseg"
    assert f"AMENT_PREFIX_PATH={prefix}:" in result.stdout
    site = next((prefix / "lib").glob("python3*/site-packages"))
    assert str(site / "cloudseg") in result.stdout.splitlines()[-1]
    assert (prefix / "share" / "ament_index" / "resource_index" / "packages" / "cloudseg").exists()
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
