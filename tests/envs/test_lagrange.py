"""The SLO-target knob: the multiplier table's dual ascent (`envs.lagrange`) and its reading."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pydantic import ValidationError

from rlscale.contract import slo_weight_at_target
from rlscale.envs.core import AutoscaleCore, EnvConfig
from rlscale.envs.lagrange import SLOMultipliers, SLOTargetKnob
from rlscale.safety import SafetyLimits
from tests.conftest import make_profile
from tests.envs.test_envs import diurnal


def test_grid_spans_the_range_log_spaced_in_the_miss_budget() -> None:
    g = SLOTargetKnob(range=(0.95, 0.999), points=3).grid()
    assert g[0] == pytest.approx(0.95) and g[-1] == pytest.approx(0.999)
    # budgets 0.05, sqrt(0.05 x 0.001), 0.001
    assert 1 - g[1] == pytest.approx(math.sqrt(0.05 * 0.001))


def test_weight_is_log_linear_between_grid_points_and_flat_beyond() -> None:
    grid, weights = [0.9, 0.99], [1.0, 100.0]
    assert slo_weight_at_target(0.9, grid, weights) == pytest.approx(1.0)
    assert slo_weight_at_target(0.99, grid, weights) == pytest.approx(100.0)
    # budget 0.1 -> 0.01: halfway in log budget is 1 - sqrt(0.001), halfway in log weight is 10
    assert slo_weight_at_target(1 - math.sqrt(0.001), grid, weights) == pytest.approx(10.0)
    assert slo_weight_at_target(0.5, grid, weights) == pytest.approx(1.0)
    assert slo_weight_at_target(0.9999, grid, weights) == pytest.approx(100.0)


def _misses(m: SLOMultipliers, miss_share: np.ndarray) -> None:
    """One update's worth of steps with each episode missing `miss_share` of 100 requests."""
    for _ in range(m.knob.every_steps):
        m.record(miss_share * 100.0, np.full(miss_share.size, 100.0))


def test_price_rises_while_misses_exceed_the_budget_and_falls_with_headroom() -> None:
    knob = SLOTargetKnob(range=(0.95, 0.999), points=2, every_steps=4, lr=0.1)
    m = SLOMultipliers(knob, batch=2)
    m.sample(np.arange(2), np.random.default_rng(0))
    m.episode_target[:] = [0.95, 0.999]
    m._point[:] = [0, 1]
    _misses(m, np.array([0.2, 0.0]))  # 0.95 misses 20 % (> 5 %); 0.999 misses nothing
    w = np.exp(m.log_weight)
    assert w[0] > knob.initial_weight  # priced up
    # priced down, but never below a looser target's price (monotone in the target)
    assert w[1] == pytest.approx(w[0])
    _misses(m, np.array([0.0, 0.0]))
    assert np.exp(m.log_weight[0]) < w[0]


def test_price_stays_within_its_bounds() -> None:
    knob = SLOTargetKnob(points=2, every_steps=1, lr=1.0, weight_bounds=(0.5, 20.0))
    m = SLOMultipliers(knob, batch=1)
    m._point[:] = 0
    for _ in range(50):
        _misses(m, np.array([0.5]))
    assert np.exp(m.log_weight).max() == pytest.approx(20.0)
    for _ in range(50):
        _misses(m, np.array([0.0]))
    assert np.exp(m.log_weight).min() == pytest.approx(0.5)


def test_one_knob_only_and_a_valid_range() -> None:
    with pytest.raises(ValidationError, match="not both"):
        EnvConfig(slo_weight_range=(1.0, 10.0), slo_target=SLOTargetKnob())
    with pytest.raises(ValidationError, match="0 < low < high < 1"):
        SLOTargetKnob(range=(0.99, 0.95))


@pytest.mark.parametrize("engine", ["numba", "numpy"])
def test_env_learns_a_higher_price_when_the_fleet_cannot_hold_the_target(engine: str) -> None:
    """A fleet capped far below the load misses most requests at every target: every price
    rises, and the episodes' weights and observed knob feature (log weight) follow the table;
    a fleet far above the load misses none: every price falls."""

    def run(min_replicas: int, max_replicas: int) -> np.ndarray:
        knob = SLOTargetKnob(points=3, every_steps=5, lr=0.2)
        cfg = EnvConfig(
            episode_s=3600.0,
            slo_target=knob,
            limits=SafetyLimits(min_replicas=min_replicas, max_replicas=max_replicas),
        )
        core = AutoscaleCore(make_profile(), [diurnal(peak_rps=400)], 16, cfg, engine=engine)
        for _ in range(20):
            core.step(np.zeros((16, 2)))
        m = core.multipliers
        assert m is not None
        assert np.allclose(core.slo_weight, m.weights())
        assert np.allclose(core.observe()[:, -1], np.log(m.weights()), atol=1e-5)
        return np.exp(m.log_weight)

    assert (run(min_replicas=1, max_replicas=1) > 10.0).all()
    assert (run(min_replicas=32, max_replicas=32) < 10.0).all()
