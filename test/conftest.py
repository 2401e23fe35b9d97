"""Shared pytest fixtures: where the real data lives, and markers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("CLOUDSEG_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The read-only folder of real Cityscapes frames, sequences and weights (never copied)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is missing (set CLOUDSEG_SHARED_DATA)")
    return SHARED_DATA
