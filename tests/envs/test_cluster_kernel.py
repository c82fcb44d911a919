"""The numba step (`envs.cluster_kernel`) held to the numpy reference (`engine="numpy"`): same
seeds, same workloads, same targets, thousands of intervals through cold starts, the warm pool,
draining, timeouts and overload. Replica counts and costs must agree exactly; the served
numbers within 1e-11 relative (numpy's SIMD exp/log vs libm, 1 ulp a call, carried by the
queue and the batch from interval to interval)."""

from __future__ import annotations

import numpy as np
import pytest

from rlscale.envs.cluster import ClusterSim
from rlscale.envs.gym_env import default_workloads
from rlscale.profiles.model import load_profile
from rlscale.serving.model import SimConfig
from tests.conftest import constant_workload

EXACT = ("arrived", "cost_usd", "gpu_hours", "cold_starts", "scale_events", "replica_intervals")


def _pair(cfg: SimConfig, batch: int, workloads=None) -> list[ClusterSim]:
    prof = load_profile("llama-3.1-8b-h100")
    wl = workloads or default_workloads(prof)
    return [
        ClusterSim(prof, wl, batch=batch, seed=7, config=cfg, engine=e) for e in ("numpy", "numba")
    ]


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(a), 1e-6)))


@pytest.mark.parametrize(
    "cfg",
    [
        SimConfig(),
        SimConfig(latency_jitter=0.2, cold_start_jitter=0.3, timeout_s=30.0, arrival_scv=3.0),
        SimConfig(ttft_slo_s_per_1k_tokens=0.3),  # an SLO class with a per-length TTFT
        # the standby tiers: their own fill and wake pools, waking through a cold start's stages
        SimConfig(standby_tier="warm_node", cold_start_jitter=0.3),
        SimConfig(standby_tier="preloaded_node"),
    ],
)
def test_numba_step_matches_the_numpy_reference_over_thousands_of_intervals(cfg):
    ref, fast = _pair(cfg, batch=16)
    rng = np.random.default_rng(0)
    saw_drops = saw_warm = saw_draining = saw_starting = False
    for step in range(1500):
        # 0..24 replicas: from nothing ready (everything times out) to a large idle fleet;
        # the warm pool every other step, so it grows, wakes and is cancelled
        target = rng.integers(0, 25, 16).astype(float)
        warm = rng.integers(0, 5, 16).astype(float) if step % 2 else None
        m_ref = ref.step(target, warm).copy()
        m_fast = fast.step(target, warm)
        assert _rel(m_ref, m_fast) < 1e-11, step
        saw_drops |= bool((ref.last.dropped > 0).any())
        saw_warm |= bool((ref.warm > 0).any())
        saw_draining |= bool(ref.draining.sum() > 0)
        saw_starting |= bool(ref.starting.total().sum() > 0)
        for sim in (ref, fast):
            if step % 400 == 399:
                sim.reset(mask=np.arange(16) % 3 == 0)
    assert saw_drops and saw_warm and saw_draining and saw_starting
    for name in EXACT:
        assert np.array_equal(getattr(ref.totals, name), getattr(fast.totals, name)), name
    for name in ("completed", "dropped", "slo_ok"):
        assert _rel(getattr(ref.totals, name), getattr(fast.totals, name)) < 1e-11, name
    assert np.array_equal(ref.ready, fast.ready) and np.array_equal(ref.warm, fast.warm)
    assert np.array_equal(ref.starting.count, fast.starting.count)
    assert _rel(ref.last.ttft_q, fast.last.ttft_q) < 1e-11
    # same random numbers drawn: the generators are in the same state
    assert ref.rng.integers(1 << 62) == fast.rng.integers(1 << 62)


def test_numba_step_matches_the_reference_at_b1_under_overload_and_a_steady_fleet():
    # ~12 replicas' worth of load against 2..14 replicas: backlog, timeouts, then recovery
    w = constant_workload(12 * 22.0, bins=3000)
    ref, fast = _pair(SimConfig(timeout_s=60.0), batch=1, workloads=[w])
    for t in range(3000):
        target = np.array([2.0 if (t // 200) % 2 else 14.0])
        assert _rel(ref.step(target).copy(), fast.step(target)) < 1e-11, t
    assert ref.totals.dropped[0] > 0
    assert np.array_equal(ref.totals.cost_usd, fast.totals.cost_usd)


def test_an_unknown_engine_is_refused():
    prof = load_profile("llama-3.1-8b-h100")
    with pytest.raises(ValueError, match="engine"):
        ClusterSim(prof, default_workloads(prof), engine="cuda")  # type: ignore[arg-type]
