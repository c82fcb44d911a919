"""The request-level engine: hand-computed latencies and invariants, then agreement with the fluid
model where the fluid model is known to be right."""

from __future__ import annotations

import numpy as np
import pytest

from rlscale.profiles.model import LatencyModel, load_profile
from rlscale.serving.capacity import replica_capacity_rps
from rlscale.serving.engine import EngineConfig, FleetEngine, IterationModel

# round numbers: 10 ms per forward pass, +0.5 ms per decoding sequence, +1 ms per 1k KV tokens
# read, +0.02 ms per prompt token; 40 ms request overhead to the first token
TOY = LatencyModel(
    tpot_base_ms=10.0,
    tpot_ms_per_seq=0.5,
    tpot_ms_per_seq_per_ktok=1.0,
    tpot_ms_per_prefill_token=0.02,
    prefill_base_ms=40.0,
    prefill_ms_per_token=0.06,
    prefill_interference=5.0,
    kv_cache_tokens=100_000,
    max_batch=8,
)


def _engine(lat: LatencyModel = TOY, replicas: int = 1, **kw) -> FleetEngine:
    e = FleetEngine(lat, EngineConfig(**kw.pop("config", {})), **kw)
    for _ in range(replicas):
        e.add_replica(0.0, 0.0)
    return e


def _it_s(lat: LatencyModel, prefill: float, decode: float, kv: float) -> float:
    return (
        lat.tpot_base_ms
        + lat.tpot_ms_per_seq * decode
        + lat.tpot_ms_per_seq_per_ktok * kv / 1000
        + lat.tpot_ms_per_prefill_token * prefill
    ) / 1000


def test_iteration_time_is_the_tpot_fit_read_per_forward_pass():
    it = IterationModel.from_latency(TOY)
    # 100 prompt tokens, 4 decodes reading 2,000 KV tokens: 10 + 0.5*4 + 1*2 + 0.02*100 = 16 ms
    assert it.iteration_s(100, 4, 2000) == pytest.approx(0.016)
    assert it.ttft_overhead_s == pytest.approx(0.040)
    # the TTFT fit's slope only on request (a sensitivity check), never the interference term
    assert IterationModel.from_latency(
        TOY, EngineConfig(prefill_cost="ttft_fit")
    ).per_prefill_token_s == pytest.approx(6e-5)


def test_a_single_request_takes_one_prefill_then_one_decode_iteration_per_further_token():
    e = _engine()
    e.add_requests(np.array([0.0]), np.array([100]), np.array([5]))
    st = e.advance(0.0, 10.0)
    prefill = _it_s(TOY, 100, 0, 0)  # 12 ms, samples token 1
    decodes = [_it_s(TOY, 0, 1, 100 + k) for k in range(4)]  # tokens 2..5, KV 100..103 read
    assert st.ttft_s[0] == pytest.approx(prefill + 0.040)
    assert st.done_tpot_s[0] == pytest.approx(sum(decodes) / 4)
    assert st.generated_tokens == 5 and st.iterations == 5
    assert e.kv_used_tokens()[0] == 0  # freed on completion


def test_a_long_prompt_is_prefilled_in_chunks_of_the_token_budget():
    e = _engine(config={"max_num_batched_tokens": 2048})
    e.add_requests(np.array([0.0]), np.array([5000]), np.array([1]))
    st = e.advance(0.0, 10.0)
    chunks = [2048, 2048, 904]
    assert st.iterations == 3
    assert st.ttft_s[0] == pytest.approx(sum(_it_s(TOY, c, 0, 0) for c in chunks) + 0.040)


def test_requests_start_first_come_first_served():
    lat = TOY.model_copy(update={"max_batch": 2})
    e = _engine(lat, request_capacity=1024)
    t = np.sort(np.random.default_rng(0).uniform(0, 1.0, 50))
    e.add_requests(t, np.full(50, 300), np.full(50, 30))
    e.advance(0.0, 60.0)
    first = e.rq_first[:50]
    assert np.all(first > 0) and np.all(np.diff(first) >= 0)


def test_a_client_waiting_past_the_timeout_is_dropped():
    # 10 ms per iteration, a request of 1 prompt + 5,000 output tokens holds the only batch slot
    # for 50 s: request 3 starts at 100 s (< 120 s), 4 and 5 would start at 150 s and are dropped
    lat = LatencyModel(
        tpot_base_ms=10.0,
        tpot_ms_per_seq=0.0,
        tpot_ms_per_prefill_token=1e-9,
        prefill_base_ms=0.0,
        prefill_ms_per_token=1e-9,
        kv_cache_tokens=100_000,
        max_batch=1,
    )
    e = _engine(lat, timeout_s=120.0)
    e.add_requests(np.zeros(5), np.ones(5, dtype=np.int64), np.full(5, 5000))
    st = e.advance(0.0, 400.0)
    assert st.dropped == 2 and st.done_ttft_s.size == 3
    assert st.done_ttft_s[2] == pytest.approx(100.01, abs=1e-3)  # admitted at 100 s, 10-ms prefill


def _check_invariants(e: FleetEngine, completed: int) -> None:
    assert e.arrived == completed + e.running + e.waiting + e.dropped
    assert np.all(e.rp_kv <= e.kv_cache_tokens)
    for r in np.flatnonzero(e.rp_exists):
        # KV is allocated when an iteration is scheduled: computed tokens plus those in flight
        s = e.run[r, : e.nrun[r]] & (e.rq_arr.shape[0] - 1)
        assert e.rp_kv[r] == (e.rq_c[s] + e.rq_n[s]).sum()


def test_requests_are_conserved_and_the_kv_cache_never_overflows_under_preemption():
    # a KV cache of 6,000 tokens, requests of ~400 + ~600 tokens, 3 replicas at overload
    lat = TOY.model_copy(update={"kv_cache_tokens": 6000, "max_batch": 16})
    e = _engine(lat, replicas=3, timeout_s=5.0)
    rng = np.random.default_rng(1)
    n = 3000
    t = np.sort(rng.uniform(0, 30.0, n))
    e.add_requests(t, rng.integers(50, 800, n), rng.integers(1, 1200, n))
    completed = 0
    for k in range(400):
        st = e.advance(0.1 * k, 0.1 * (k + 1))
        completed += st.done_ttft_s.size
        _check_invariants(e, completed)
    assert e.preemptions > 0 and e.dropped > 0
    completed += e.advance(40.0, 400.0).done_ttft_s.size
    _check_invariants(e, completed)
    assert e.running == 0 and e.waiting == 0 and completed + e.dropped == n


def test_least_outstanding_router_spreads_and_round_robin_alternates():
    for router in ("least_outstanding", "round_robin", "waiting_weighted"):
        e = _engine(replicas=3, config={"router": router})
        e.add_requests(np.linspace(0, 0.001, 6), np.full(6, 100), np.full(6, 1000))
        e.advance(0.0, 0.002)
        assert list(e.nrun[:3] + e.qlen[:3]) == [2, 2, 2]


def test_the_waiting_weighted_router_counts_a_waiting_request_as_four_running():
    picked = {}
    for router in ("least_outstanding", "waiting_weighted"):
        e = _engine(replicas=2, config={"router": router})
        # mid-iteration until t = 10 s: replica 0 runs 3 and has 1 waiting, replica 1 runs 6
        e.nrun[:2] = [3, 6]
        e.qlen[:2] = [1, 0]
        e.rp_busy[:2] = True
        e.rp_end[:2] = 10.0
        e.add_requests(np.array([0.5]), np.array([100]), np.array([10]))
        e.advance(0.0, 1.0)
        picked[router] = int(e.rq_rep[0])
    assert picked == {"least_outstanding": 0, "waiting_weighted": 1}  # 4 < 6; 3 + 4 x 1 > 6


def _constant_fleet_p95(router: str, replicas: int, seconds: float = 600.0):
    """8B, 1,155 / 211 tokens each, Poisson at 70 % of each replica's knee: (TTFT p95 over the
    requests after the first minute, requests per replica)."""
    prof = load_profile("llama-3.1-8b-h100")
    rng = np.random.default_rng(0)
    rate = 0.7 * replicas * replica_capacity_rps(prof, 1155, 211)
    n = rng.poisson(rate * seconds)
    t = np.sort(rng.uniform(0.0, seconds, n))
    e = FleetEngine(prof.latency, EngineConfig(router=router), request_capacity=n + 16)
    for _ in range(replicas):
        e.add_replica(0.0, 0.0)
    e.add_requests(t, np.full(n, 1155), np.full(n, 211))
    e.advance(0.0, seconds + 60.0)
    ttft = e.rq_first[:n] - e.rq_arr[:n] + e.iteration.ttft_overhead_s
    assert np.all(e.rq_first[:n] > 0)  # all served
    return float(np.percentile(ttft[t > 60.0], 95)), np.bincount(e.rq_rep[:n], minlength=replicas)


def test_identical_requests_herd_under_least_outstanding_but_not_waiting_weighted_routing():
    """At equal per-replica load a pooled fleet's TTFT tail is no worse than one replica's when
    the router steers away from prefill queues (waiting-weighted); least outstanding, which counts
    a waiting request as one running, herds identical requests (their cohorts complete together
    and the emptied replica takes the next several arrivals), so its tail grows with the fleet.
    Per-replica counts stay balanced under both: the herding is in time, not in totals."""
    one, _ = _constant_fleet_p95("least_outstanding", 1)
    ww4, counts_ww = _constant_fleet_p95("waiting_weighted", 4)
    lor4, counts_lor = _constant_fleet_p95("least_outstanding", 4)
    assert ww4 <= one
    assert lor4 > 1.3 * one
    for c in (counts_ww, counts_lor):
        assert c.max() - c.min() <= 0.01 * c.mean()


def test_a_replica_that_is_not_ready_gets_nothing_until_it_is():
    e = FleetEngine(TOY)
    e.add_replica(5.0, 0.0)  # ready at 5 s
    e.add_requests(np.array([1.0, 2.0]), np.array([100, 100]), np.array([2, 2]))
    st = e.advance(0.0, 10.0)
    assert np.all(e.rq_first[:2] > 5.0)  # held by the router until 5 s
    assert e.arrived == 2 and st.done_ttft_s.size == 2


def test_a_draining_replica_finishes_what_it_holds_and_takes_nothing_new():
    e = _engine(replicas=2)
    e.add_requests(np.array([0.0, 0.0]), np.array([100, 100]), np.array([200, 200]))
    e.advance(0.0, 0.1)
    busy = int(np.flatnonzero(e.nrun[:2] > 0)[0])
    e.drain(busy, 0.1)
    e.add_requests(np.array([0.2, 0.3]), np.array([100, 100]), np.array([2, 2]))
    st = e.advance(0.1, 20.0)
    assert st.done_ttft_s.size == 4
    assert e.rp_idle_at[busy] > 0.1


# --- agreement with the fluid model where it is known to be right --------------------------


def _engine_run(
    profile_name: str, rate_rps: float, replicas: int, seconds: float, cv: float, seed: int = 0
):
    from rlscale.envs.requests import RequestSim
    from rlscale.traces.workload import Workload

    prof = load_profile(profile_name)
    bins = int(seconds / 15)
    w = Workload(
        "t",
        "t",
        15.0,
        np.full(bins, rate_rps * 15),
        np.full(bins, 1155.0),
        np.full(bins, 211.0),
        prompt_tokens_cv=cv,
        output_tokens_cv=cv,
    )
    sim = RequestSim(prof, [w], seed=seed, record_requests=True)
    sim.reset(initial_replicas=replicas)
    for _ in range(bins):
        sim.step(np.array([float(replicas)]))
    return prof, sim


@pytest.mark.parametrize("profile_name", ["llama-3.1-8b-h100", "llama-3.1-70b-fp8-4xh100"])
def test_at_light_load_tpot_and_slo_attainment_agree_with_the_fluid_model(profile_name):
    """Light load (30 % of 4 replicas' knee, constant sizes): the batch is small and nothing
    queues, where the fluid TPOT (base + slope x Little's-law concurrency) holds. Tolerance: TPOT
    p50 within 15 %, attainment within 1 pp (both ~100 %)."""
    from rlscale.serving.model import LatencyArrays, serve_interval

    prof = load_profile(profile_name)
    rate = 0.3 * 4 * replica_capacity_rps(prof, 1155, 211)
    _, sim = _engine_run(profile_name, rate, 4, 600.0, 0.0)
    _, tpot = sim.request_log()
    r = serve_interval(
        np.zeros(1),
        np.zeros(1),
        np.full(1, 4.0),
        np.array([rate * 15]),
        np.array([1155.0]),
        np.array([211.0]),
        15.0,
        LatencyArrays.from_profile(prof, 1),
        prompt_cv=1e-3,
    )
    assert np.median(tpot) == pytest.approx(float(r.tpot_p50_s[0]), rel=0.15)
    att_engine = sim.totals.slo_ok[0] / sim.totals.arrived[0]
    assert abs(att_engine - float(r.slo_ok[0] / (rate * 15))) < 0.01


def test_a_saturated_replica_serves_about_the_fluid_models_knee_rate():
    """Overload (150 % of one 8B replica's knee): the batch is full and the engine serves at its
    own knee; the fluid knee (`replica_capacity_rps`) is within 10 % of it."""
    cap = replica_capacity_rps(load_profile("llama-3.1-8b-h100"), 1155, 211)
    _, sim = _engine_run("llama-3.1-8b-h100", 1.5 * cap, 1, 300.0, 0.0)
    served_rps = sim.totals.completed[0] / 300.0
    assert served_rps == pytest.approx(cap, rel=0.10)


@pytest.mark.slow
def test_the_fidelity_benchmark_runs_in_quick_mode(tmp_path, shared_data):
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    out = tmp_path / "fidelity"
    env = {**os.environ, "PYTHONPATH": str(root)}
    subprocess.run(
        [
            sys.executable,
            str(root / "benchmarks" / "fidelity.py"),
            "--quick",
            "--speed-requests",
            "20000",
            "--out",
            str(out),
        ],
        check=True,
        env=env,
        cwd=root,
        capture_output=True,
        timeout=600,
    )
    result = json.loads(out.with_suffix(".json").read_text())
    assert result["rows"] and result["knees"] and result["policies"]
    assert "| llama-3.1-8b-h100 | poisson-conv | 1 | 0.50 |" in out.with_suffix(".md").read_text()
