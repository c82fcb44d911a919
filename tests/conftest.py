"""Shared fixtures. Real data comes from ../shared/data beside the repository (never copied in)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def _shared_data_dir() -> Path:
    env = os.environ.get("RLSCALE_SHARED_DATA")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data: the real traces and calibration tables. CI always has it beside the repo."""
    path = _shared_data_dir()
    if not path.is_dir():
        pytest.fail(f"{path} not found: tests need ../shared/data beside the repository")
    return path
