"""A per-length TTFT SLO in the serving models: the flat class reads exactly as the single number,
the request engine holds each request to its own target, the fluid model reads its TTFT
distribution against the targets by rank, and an idle fleet's attainable share says when no
policy can meet the SLO."""

from __future__ import annotations

import numpy as np

from rlscale.profiles.model import load_profile
from rlscale.serving.capacity import idle_slo_share, slo_capacity_rps
from rlscale.serving.engine import EngineConfig, FleetEngine
from rlscale.serving.model import (
    P_GRID,
    LatencyArrays,
    _share_within,
    _share_within_class,
    serve_interval,
    steady_running,
)
from rlscale.serving.shield import Shield, ShieldConfig

P70 = load_profile("llama-3.1-70b-fp8-4xh100")


def _interval(slope: float, isl: float = 12_000.0, replicas: float = 8.0, load: float = 0.6):
    lat = LatencyArrays.from_profile(P70, 1)
    n, i, o = np.array([replicas]), np.array([isl]), np.array([200.0])
    arr = np.array([load * replicas * 1.2 * 60.0])
    run = steady_running(n, arr, i, o, 60.0, lat)
    return serve_interval(np.zeros(1), run, n, arr, i, o, 60.0, lat, ttft_slo_s_per_1k_tokens=slope)


def test_a_flat_class_is_the_single_number_bit_for_bit():
    rng = np.random.default_rng(0)
    q = np.sort(rng.exponential(2.0, (200, len(P_GRID))), axis=1)
    isl = rng.uniform(100, 30_000, 200)
    own = 4e-5 * isl
    np.testing.assert_array_equal(
        _share_within_class(q, 2.0, 0.0, isl, 1.0, own), _share_within(q, 2.0)
    )
    a, b = _interval(0.0), _interval(0.0)
    assert a.slo_ok[0] == b.slo_ok[0]


def test_with_equal_prompts_the_class_is_its_target_at_that_length():
    # prompt CV 0: every request has the mean prompt, so the class is a flat SLO at its target
    rng = np.random.default_rng(1)
    q = np.sort(rng.exponential(3.0, (100, len(P_GRID))), axis=1)
    isl = rng.uniform(100, 30_000, 100)
    got = _share_within_class(q, 2.0, 0.25, isl, 0.0, 4e-5 * isl)
    want = np.array(
        [_share_within(q[k : k + 1], 2.0 + 0.25 * isl[k] / 1000)[0] for k in range(100)]
    )
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_a_steeper_slope_never_lowers_attainment():
    shares = [_interval(s).slo_ok[0] for s in (0.0, 0.05, 0.1, 0.25, 1.0)]
    assert all(b >= a - 1e-12 for a, b in zip(shares, shares[1:], strict=False))
    assert shares[-1] > shares[0] + 0.01


def test_long_prompts_miss_a_flat_ttft_even_on_idle_replicas_and_a_slope_fixes_it():
    isl, osl = np.array([1_155.0, 11_550.0, 35_000.0]), np.full(3, 211.0)
    flat = idle_slo_share(P70, isl, osl, replicas=12)
    per_length = idle_slo_share(P70, isl, osl, replicas=12, ttft_slo_s_per_1k_tokens=0.25)
    assert flat[0] > 0.999 and flat[2] < 0.9  # chat sizes meet 2 s; 35k-token prompts do not
    assert (per_length > 0.999).all()
    # no fleet size reaches 99 % for the flat SLO at 12k prompts, the per-length one is sized
    assert slo_capacity_rps(P70, 11_550.0, 211.0, replicas=12) == 0.0
    assert slo_capacity_rps(P70, 11_550.0, 211.0, replicas=12, ttft_slo_s_per_1k_tokens=0.25) > 0


def test_the_request_engine_reports_each_finished_requests_prompt():
    e = FleetEngine(P70.latency, EngineConfig())
    e.add_replica(0.0, 0.0)
    prompts = np.array([100, 5_000, 30_000])
    e.add_requests(np.array([0.0, 0.1, 0.2]), prompts, np.array([3, 3, 3]))
    st = e.advance(0.0, 60.0)
    assert sorted(st.done_prompt_tokens.tolist()) == sorted(prompts.tolist())
    assert len(st.done_prompt_tokens) == len(st.done_ttft_s)


def test_the_request_engine_holds_every_request_to_its_own_target(shared_data):
    from rlscale.evaluation.evaluate import load_source
    from rlscale.evaluation.rollout import rollout
    from rlscale.policies.registry import make_policy
    from rlscale.serving.model import SimConfig
    from rlscale.slo import SLOClass

    # 6 minutes of Azure conv with 10x prompts (~11.5k tokens) at its own rate on 4 replicas
    w = load_source(f"{shared_data}/azure_llm_2023_conv.csv@0:0.004", 15.0)
    w = w.with_(prompt_tokens=w.prompt_tokens * 10)
    out = {}
    for slope in (0.0, 0.5):
        cfg = SimConfig.with_slo(SLOClass(2.0, slope))
        f = make_policy("static:4", profile=P70, workload=w, config=cfg)
        res = rollout(f, P70, w, config=cfg, engine="requests", initial_replicas=4)
        out[slope] = res.summaries[0].slo_attainment
    # the same requests, served identically: only the targets differ
    assert out[0.5] > out[0.0] + 0.01, out


def test_the_shield_holds_the_p95_to_the_target_at_the_observed_mean_prompt():
    from rlscale.contract import FIELD_INDEX, N_FIELDS

    rows = np.zeros((2, N_FIELDS))
    rows[:, FIELD_INDEX["arrival_rps"]] = 10.0
    rows[:, FIELD_INDEX["prompt_tokens_per_s"]] = [10_000.0, 120_000.0]  # 1k and 12k mean prompts
    flat = Shield(ShieldConfig(), P70, 2, interval_s=15.0, ttft_slo_s=2.0, tpot_slo_s=0.1)
    cls = Shield(
        ShieldConfig(),
        P70,
        2,
        interval_s=15.0,
        ttft_slo_s=2.0,
        tpot_slo_s=0.1,
        ttft_slo_s_per_1k_tokens=0.5,
    )
    assert flat.ttft_limit_s(rows) == 2.0
    np.testing.assert_allclose(cls.ttft_limit_s(rows), [2.5, 8.0])
    rows[:, FIELD_INDEX["arrival_rps"]] = np.nan  # unobserved: the profile's typical prompt
    lim = cls.ttft_limit_s(rows)
    assert np.allclose(lim, 2.0 + 0.5 * P70.typical_prompt_tokens / 1000)
