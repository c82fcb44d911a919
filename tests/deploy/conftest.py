"""Fixtures for the controller tests; the fakes themselves are in tests/deploy/fakes.py."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.deploy.fakes import HarnessFactory


@pytest.fixture
def make_harness() -> Iterator[HarnessFactory]:
    """Build controllers around fakes with an explicit clock; all are closed after the test."""
    factory = HarnessFactory()
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture
def make_sandbox_no_prom() -> Iterator[Callable[..., Any]]:
    """Sandboxes without Prometheus (API stand-in + emulated pods), stopped after the test."""
    from rlscale.sandbox.runner import Sandbox

    started: list[Sandbox] = []

    def make(**kwargs: Any) -> Sandbox:
        kwargs.setdefault("prometheus", False)
        kwargs.setdefault("time_scale", 60.0)
        sb = Sandbox(
            kwargs.pop("profile", "llama-3.1-8b-h100"), kwargs.pop("workload", None), **kwargs
        )
        started.append(sb)
        return sb.start()

    try:
        yield make
    finally:
        for sb in started:
            sb.stop()
