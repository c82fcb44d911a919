"""The request-level fleet simulator: ClusterSim's interface, the replica lifecycle and its cost,
synthesised and replayed requests."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rlscale.contract import FIELD_INDEX as F
from rlscale.contract import N_FIELDS
from rlscale.envs.requests import RequestSim, RequestTrace, load_azure_requests
from rlscale.errors import InputError
from rlscale.serving.model import P_GRID, SimConfig
from tests.conftest import constant_workload
from tests.conftest import make_profile as _toy


def make_profile(**kw):
    """The shared toy profile with the prefill term of a real fit (0.02 ms per prompt token in a
    forward pass; the 8B profile has 0.021)."""
    return _toy(tpot_ms_per_prefill_token=0.02, **kw)


def _conserved(sim: RequestSim, i: int) -> None:
    eng = sim.clusters[i].engine
    assert (
        sim.totals.arrived[i]
        == sim.totals.completed[i] + sim.totals.dropped[i] + eng.waiting + eng.running
    )


def test_a_rollout_like_loop_reads_rows_in_contract_order_and_conserves_requests():
    prof = make_profile(cold_start_s=(30.0, 45.0, 60.0))
    cap = prof.capacity_rps()
    w = constant_workload(2.5 * cap, bins=24)
    sim = RequestSim(prof, [w], batch=2, seed=3)
    sim.reset(initial_replicas=1)
    assert sim.metrics.shape == (2, N_FIELDS)
    for _ in range(24):
        # the rule a target-utilisation policy applies: replicas for the last rate at 70 %
        target = np.ceil(sim.metrics[:, F["arrival_rps"]] / (0.7 * cap))
        m = sim.step(target)
        assert np.all(np.isfinite(m))
        assert sim.last.ttft_q.shape == (2, len(P_GRID)) and np.all(
            np.diff(sim.last.ttft_q, axis=1) >= 0
        )
        for i in range(2):
            _conserved(sim, i)
    assert np.all(sim.done) and np.all(sim.t == sim.t_end)
    assert np.all(m[:, F["replicas_ready"]] == 4)  # ceil(2.5 / 0.7)
    assert np.all(sim.totals.slo_ok <= sim.totals.completed) and np.all(sim.totals.cost_usd > 0)
    # the two clusters are independent draws of the same load
    assert sim.totals.arrived[0] != sim.totals.arrived[1]


def test_the_evaluators_rollout_runs_on_the_request_engine(monkeypatch):
    import rlscale.evaluation.rollout as ro
    from rlscale.policies.static import StaticPolicy

    prof = make_profile(cold_start_s=(0.0, 0.0, 0.0))
    w = constant_workload(1.5 * prof.capacity_rps(), bins=20)
    monkeypatch.setattr(ro, "ClusterSim", RequestSim)
    out = ro.rollout(lambda seed: StaticPolicy(3), prof, w, seeds=(0, 1), record=True)
    for s in out.summaries:
        assert s.requests > 0 and 0.99 <= s.slo_attainment <= 1.0
        assert s.mean_replicas == pytest.approx(3.0)
        assert s.cost_usd == pytest.approx(3 * 20 * 15 * 3.0 / 3600)
        assert 0 < s.ttft_p50_s < s.ttft_p99_s < 2.0
    assert out.timeline.shape == (20, 2, N_FIELDS)


def test_cold_started_replicas_serve_from_the_second_their_start_ends_and_cost_while_starting():
    prof = make_profile(cold_start_s=(60.0, 60.0, 60.0))  # exactly 60 s = 4 intervals
    w = constant_workload(0.0, bins=10)
    sim = RequestSim(prof, [w], seed=0)
    sim.reset(initial_replicas=1)
    rows = [sim.step(np.array([3.0])).copy() for _ in range(4)]
    assert [r[0, F["replicas_starting"]] for r in rows] == [2, 2, 2, 0]
    assert [r[0, F["replicas_ready"]] for r in rows] == [1, 1, 1, 3]
    assert sim.totals.cold_starts[0] == 2
    usd_per_replica_s = 3.0 / 3600
    assert sim.totals.cost_usd[0] == pytest.approx(3 * 60 * usd_per_replica_s)
    # scale down to 1: the idle replicas drain at once and stop costing
    m = sim.step(np.array([1.0]))
    assert m[0, F["replicas_ready"]] == 1 and m[0, F["replicas_draining"]] == 0
    assert sim.totals.cost_usd[0] == pytest.approx((3 * 60 + 15) * usd_per_replica_s)


def test_a_scale_down_cancels_starting_replicas_before_draining_ready_ones():
    prof = make_profile(cold_start_s=(60.0, 60.0, 60.0))
    sim = RequestSim(prof, [constant_workload(0.0, bins=5)], seed=0)
    sim.reset(initial_replicas=2)
    sim.step(np.array([4.0]))
    m = sim.step(np.array([2.0]))
    assert m[0, F["replicas_starting"]] == 0 and m[0, F["replicas_ready"]] == 2
    assert sim.totals.scale_events[0] == 2


def test_a_draining_replica_finishes_its_requests_and_is_paid_until_then():
    prof = make_profile(cold_start_s=(0.0, 0.0, 0.0))
    # 2,000-token outputs: ~16 s per request at ~8 ms a token, longer than an interval
    w = constant_workload(0.5 * prof.capacity_rps(1000, 2000), bins=12, output=2000.0)
    sim = RequestSim(prof, [w], seed=0)
    sim.reset(initial_replicas=2)
    sim.step(np.array([2.0]))
    m = sim.step(np.array([1.0]))
    assert m[0, F["replicas_ready"]] == 1 and m[0, F["replicas_draining"]] == 1
    draining, paid = [1.0], [sim.last_paid[0]]
    for _ in range(8):
        m = sim.step(np.array([1.0]))
        draining.append(m[0, F["replicas_draining"]])
        paid.append(sim.last_paid[0])
    assert paid[0] == 2.0 and draining[-1] == 0
    # the interval it empties in is paid for the part it was still serving
    last = draining.index(0)
    assert 1.0 < paid[last] < 2.0 and paid[last + 1] == 1.0
    _conserved(sim, 0)


def test_a_scale_up_takes_a_warm_replica_first_which_wakes_in_seconds():
    prof = make_profile(cold_start_s=(30.0, 30.0, 30.0))  # wake 5 s
    sim = RequestSim(prof, [constant_workload(1.0, bins=10)], seed=0)
    sim.reset(initial_replicas=1)
    for _ in range(2):
        m = sim.step(np.array([1.0]), np.array([1.0]))
    assert m[0, F["replicas_warm"]] == 0  # loading: ready at 30 s, warm from the third interval
    m = sim.step(np.array([1.0]), np.array([1.0]))
    assert m[0, F["replicas_warm"]] == 1
    m = sim.step(np.array([2.0]), np.array([0.0]))
    assert m[0, F["replicas_ready"]] == 2 and m[0, F["replicas_warm"]] == 0
    assert sim.totals.cold_starts[0] == 1  # the warm load only


def test_the_same_seed_gives_the_same_rows():
    prof = make_profile()
    w = constant_workload(30.0, bins=8)
    rows = []
    for _ in range(2):
        sim = RequestSim(prof, [w], seed=11)
        sim.reset(initial_replicas=2)
        rows.append(np.stack([sim.step(np.array([2.0])).copy() for _ in range(8)]))
    np.testing.assert_array_equal(rows[0], rows[1])


@pytest.mark.parametrize("scv", [1.0, 4.0])
def test_synthesised_arrivals_have_the_bins_rate_at_any_burstiness(scv):
    prof = make_profile()
    w = constant_workload(4.0, bins=200)  # 60 per bin
    sim = RequestSim(prof, [w], config=SimConfig(arrival_scv=scv), seed=0)
    sim.reset(initial_replicas=1)
    counts = [sim.step(np.array([1.0]))[0, F["arrival_rps"]] * 15 for _ in range(200)]
    assert np.mean(counts) == pytest.approx(60.0, rel=0.05)
    # a renewal process's counts over long windows have variance ~ scv x mean
    assert np.var(counts) / 60.0 == pytest.approx(scv, rel=0.4)


def test_a_request_trace_is_replayed_request_by_request():
    rng = np.random.default_rng(0)
    t = np.sort(rng.uniform(0, 300.0, 900))
    trace = RequestTrace("toy", t, rng.integers(100, 2000, 900), rng.integers(10, 400, 900))
    w = trace.to_workload(15.0)
    assert w.total_requests == 900 and w.n_bins == math.ceil(t[-1] / 15.0)
    sim = RequestSim(make_profile(), [trace], seed=0)
    sim.reset(initial_replicas=2)
    while not sim.done[0]:
        sim.step(np.array([2.0]))
    assert sim.totals.arrived[0] == 900
    big = trace.scaled(2.5, np.random.default_rng(1))
    assert len(big.arrival_s) == pytest.approx(2250, rel=0.05)
    assert (
        big.arrival_s[0] >= 0 and big.arrival_s[-1] <= t[-1] and np.all(np.diff(big.arrival_s) >= 0)
    )


def test_a_shifted_trace_scales_each_requests_prompt_and_steps_the_rate_from_the_cut():
    rng = np.random.default_rng(0)
    t = np.sort(rng.uniform(0, 600.0, 3000))
    trace = RequestTrace("toy", t, rng.integers(100, 2000, 3000), rng.integers(10, 400, 3000))
    long = trace.with_prompt_scale(4.0)
    assert np.array_equal(long.prompt_tokens, trace.prompt_tokens * 4)
    assert np.array_equal(long.arrival_s, t) and np.array_equal(
        long.output_tokens, trace.output_tokens
    )
    step = trace.with_rate_step(300.0, 2.0, np.random.default_rng(1))
    before, after = step.arrival_s < 300.0, step.arrival_s >= 300.0
    assert np.array_equal(step.arrival_s[before], t[t < 300.0])  # as recorded before the cut
    assert after.sum() == 2 * (t >= 300.0).sum()  # an integer factor keeps every request twice
    assert np.all(np.diff(step.arrival_s) >= 0) and step.arrival_s[-1] <= t[-1]
    with pytest.raises(InputError, match="prompt_scale"):
        trace.with_prompt_scale(0.0)


def test_a_trace_out_of_order_is_refused_naming_the_field():
    with pytest.raises(InputError, match="arrival_s"):
        RequestTrace("bad", np.array([2.0, 1.0]), np.array([1, 1]), np.array([1, 1]))


def test_the_azure_conv_hour_loads_every_request(shared_data):
    trace = load_azure_requests(shared_data / "azure_llm_2023_conv.csv")
    assert len(trace.arrival_s) == 19366
    assert float(np.mean(trace.prompt_tokens)) == pytest.approx(1154.7, abs=0.1)
    assert 3500 < trace.duration_s < 3700


def test_latency_jitter_gives_each_cluster_its_own_coefficients():
    sim = RequestSim(
        make_profile(),
        [constant_workload(5.0, bins=4)],
        batch=3,
        config=SimConfig(latency_jitter=0.2, cold_start_jitter=0.2),
        seed=0,
    )
    fps = np.stack([c.engine.fp for c in sim.clusters])
    assert len({tuple(r) for r in fps.round(12)}) == 3
    assert len({c.cold_scale for c in sim.clusters}) == 3
    sim.step(np.full(3, 2.0))
    assert np.all(np.isfinite(sim.metrics))
