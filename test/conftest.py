"""Shared pytest fixtures: where the real data lives, and markers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("CLOUDSEG_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session", autouse=True)
def _isolated_ros_domain():
    """Each test session talks on its own DDS domain, on this host only."""
    os.environ.setdefault("ROS_DOMAIN_ID", str(100 + os.getpid() % 100))
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")


_domains = iter(range(1, 100))


@pytest.fixture
def fresh_ros_domain(monkeypatch: pytest.MonkeyPatch) -> int:
    """A DDS domain of this test's own (1..99, apart from the session's 100..199): no
    participant left behind by an earlier test (killed, stopped) shares its discovery.
    Set it before the test's rclpy context and node processes start."""
    domain = 1 + (os.getpid() + next(_domains)) % 99
    monkeypatch.setenv("ROS_DOMAIN_ID", str(domain))
    return domain


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
