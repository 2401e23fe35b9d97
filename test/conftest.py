"""Shared pytest fixtures: where the real data lives, and markers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from support import claim_ros_domain, release_ros_domain

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("CLOUDSEG_SHARED_DATA", REPO.parent / "shared" / "data"))


def pytest_configure(config: pytest.Config) -> None:
    """Every test process (the session, each xdist worker) talks on a DDS domain of its own,
    on this host only, whatever the shell says: before any test starts rclpy or a node."""
    os.environ["ROS_DOMAIN_ID"] = str(claim_ros_domain())
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ.pop("ROS_STATIC_PEERS", None)
    if os.environ.get("PYTEST_XDIST_WORKER"):
        # the workers outnumber the cores: one torch thread each, not a pool per worker all
        # fighting over the same cores (node processes a test starts keep their default)
        import torch

        torch.set_num_threads(1)


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto`: one worker more than there are cores, at most 4. Many tests spend their time
    waiting for DDS, timers and node processes, so a worker per core leaves the CPU idle."""
    return min(4, (os.cpu_count() or 1) + 1)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Slow tests first, then those over DDS, then the rest (stable order otherwise): the
    workers start the long runs (a colcon build, the benches over DDS) at once instead of
    finishing on one of them alone."""

    def rank(item: pytest.Item) -> int:
        return 0 if item.get_closest_marker("slow") else 1 if item.get_closest_marker("dds") else 2

    items.sort(key=rank)


@pytest.fixture
def fresh_ros_domain(monkeypatch: pytest.MonkeyPatch):
    """A DDS domain of this test's own: no participant left behind by an earlier test (killed,
    stopped) shares its discovery. Set before the test's rclpy context and node processes
    start; released when the test ends."""
    domain = claim_ros_domain()
    monkeypatch.setenv("ROS_DOMAIN_ID", str(domain))
    yield domain
    release_ros_domain(domain)


@pytest.fixture
def fastdds_local(monkeypatch: pytest.MonkeyPatch) -> None:
    """The one-host Fast DDS profile for the test's rclpy context and the node processes it
    starts (full-size images over shared memory); request it before `ros`."""
    from cloudseg.graph import config_dir

    monkeypatch.setenv("FASTDDS_DEFAULT_PROFILES_FILE", str(config_dir() / "fastdds_local.xml"))


@pytest.fixture
def ros(request: pytest.FixtureRequest, fresh_ros_domain: int):
    """A test's rclpy node (global context) on a DDS domain of the test's own; spin it with
    `support.spin_until` / `spin_for`. Shut down when the test ends."""
    import rclpy

    rclpy.init(args=[])
    node = rclpy.create_node(request.node.name.split("[")[0][:60])
    try:
        yield node
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The read-only folder of real Cityscapes frames, sequences and weights (never copied)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is missing (set CLOUDSEG_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture
def weights_env(shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Weights from shared/data (and the project's own): empty cache, no downloads."""
    monkeypatch.setenv("CLOUDSEG_WEIGHTS", str(shared_data / "weights"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("CLOUDSEG_OFFLINE", "1")
    return shared_data / "weights"
