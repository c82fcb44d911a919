"""Shared fixtures. Real data comes from ../shared/data beside the repository (never copied in)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def skip_or_fail(reason: str) -> None:
    """Skip a test whose prerequisite is missing, except under CI (`CI=true`), which always has
    it (../shared/data beside the clone, Prometheus and the dev tools from scripts/setup.sh):
    there a missing one fails the test instead of silently skipping it."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: CI must have it)")
    pytest.skip(reason)


def _shared_data_dir() -> Path:
    env = os.environ.get("RLSCALE_SHARED_DATA")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (or $RLSCALE_SHARED_DATA): the real traces and calibration tables. Every
    test that reads them takes this fixture, so a clone without them skips those tests."""
    path = _shared_data_dir()
    if not path.is_dir():
        skip_or_fail(f"needs {path} (../shared/data beside the repository)")
    return path


@pytest.fixture(scope="session")
def lint_imports() -> Path:
    """The `lint-imports` command of the running Python's environment (import-linter, a dev extra)."""
    beside = Path(sys.executable).parent / "lint-imports"
    found = beside if beside.exists() else shutil.which("lint-imports")
    if found is None:
        skip_or_fail("needs lint-imports (pip install -e '.[dev]')")
    return Path(found)


def make_profile(cold_start_s: tuple[float, float, float] = (60.0, 60.0, 60.0), **latency: float):
    """A small hand-checkable profile: 8B-like latency, a fixed or triangular cold start."""
    from rlscale.profiles.model import ServiceProfile

    lat = dict(
        tpot_base_ms=6.7,
        tpot_ms_per_seq=0.12,
        tpot_ms_per_seq_per_ktok=0.0,
        prefill_base_ms=40.0,
        prefill_ms_per_token=0.08,
        prefill_interference=0.0,
        kv_cache_tokens=450_000,
        max_batch=256,
    )
    lat.update(latency)
    lo, mode, hi = cold_start_s
    return ServiceProfile.model_validate(
        dict(
            name="toy-8b",
            model="toy",
            gpu="h100",
            gpus_per_replica=1,
            latency=lat,
            cold_start=[dict(name="engine", low_s=lo, mode_s=mode, high_s=hi)],
            warm_wake=dict(name="wake", low_s=5, mode_s=5, high_s=5),
            gpu_usd_per_hour=3.0,
            typical_prompt_tokens=1000,
            typical_output_tokens=200,
        )
    )


def constant_workload(
    rate_rps: float,
    bins: int,
    interval_s: float = 15.0,
    prompt: float = 1000.0,
    output: float = 200.0,
):
    import numpy as np

    from rlscale.traces.workload import Workload

    return Workload(
        name=f"const-{rate_rps:g}",
        source="test",
        interval_s=interval_s,
        arrivals=np.full(bins, rate_rps * interval_s),
        prompt_tokens=np.full(bins, prompt),
        output_tokens=np.full(bins, output),
        prompt_tokens_cv=0.5,
        output_tokens_cv=0.5,
    )
