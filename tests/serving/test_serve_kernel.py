"""`serve_kernel.serve_interval_fast` held to `serving.model.serve_interval` on random
intervals across the whole range: empty and idle fleets, nothing ready, backlogs past the
timeout, overload, jittered latency coefficients, carried size mixes. They differ only in the
last ulps (numpy's SIMD exp/log vs libm, scipy's ndtr vs erf/erfc, the SLO-share sum order)."""

from __future__ import annotations

import inspect

import numpy as np

from rlscale.contract import DEFAULT_TPOT_SLO_S, DEFAULT_TTFT_SLO_S
from rlscale.profiles.model import load_profile
from rlscale.serving.model import LatencyArrays, serve_interval
from rlscale.serving.serve_kernel import serve_interval_fast


def test_kernel_serves_every_interval_as_the_numpy_reference_to_1e_12():
    rng = np.random.default_rng(0)
    b = 5000
    lat = LatencyArrays.from_profile(load_profile("llama-3.1-8b-h100"), b)
    lat.jitter(rng, 0.3)
    queue = rng.exponential(2000.0, b) * (rng.random(b) < 0.5)
    ready = rng.integers(0, 12, b).astype(float)
    args = (
        queue, rng.uniform(0, 400, b), ready, rng.exponential(3000.0, b) * (rng.random(b) < 0.9),
        rng.uniform(20, 6000, b), rng.uniform(5, 1500, b), 15.0, lat,
    )  # fmt: skip
    kw = dict(
        prompt_cv=rng.uniform(0, 2, b), output_cv=rng.uniform(0, 2, b), arrival_scv=2.5,
        timeout_s=45.0, running_prompt_tokens=rng.uniform(20, 6000, b),
        running_output_tokens=rng.uniform(5, 1500, b),
    )  # fmt: skip
    ref = serve_interval(*args, **kw)
    fast = serve_interval_fast(*args, **kw)
    assert (ref.dropped > 0).sum() > 20 and (ready == 0).sum() > 100
    for name in ref.__dataclass_fields__:
        a, f = getattr(ref, name), getattr(fast, name)
        assert a.shape == f.shape, name
        rel = np.abs(a - f) / np.maximum(np.abs(a), 1e-6)
        assert rel.max() < 1e-12, (name, rel.max())
    # most numbers are bit-identical
    assert np.mean(ref.ttft_q == fast.ttft_q) > 0.9


def test_kernel_defaults_match_the_reference_without_a_carried_mix():
    lat = LatencyArrays.from_profile(load_profile("llama-3.1-8b-h100"), 3)
    args = (
        np.array([0.0, 50.0, 0.0]), np.zeros(3), np.array([4.0, 2.0, 0.0]),
        np.array([600.0, 900.0, 30.0]), np.full(3, 1000.0), np.full(3, 200.0), 15.0, lat,
    )  # fmt: skip
    ref, fast = serve_interval(*args), serve_interval_fast(*args)
    np.testing.assert_allclose(fast.ttft_q, ref.ttft_q, rtol=1e-13)
    np.testing.assert_allclose(fast.slo_ok, ref.slo_ok, rtol=1e-13)
    np.testing.assert_array_equal(fast.dropped, ref.dropped)


def test_kernel_holds_a_per_length_ttft_slo_as_the_numpy_reference_to_1e_12():
    rng = np.random.default_rng(1)
    b = 3000
    lat = LatencyArrays.from_profile(load_profile("llama-3.1-70b-fp8-4xh100"), b)
    lat.jitter(rng, 0.3)
    ready = rng.integers(0, 16, b).astype(float)
    args = (
        rng.exponential(200.0, b) * (rng.random(b) < 0.3), rng.uniform(0, 200, b), ready,
        rng.exponential(300.0, b), rng.uniform(200, 40_000, b), rng.uniform(5, 1500, b), 15.0,
        lat,
    )  # fmt: skip
    kw = dict(prompt_cv=rng.uniform(0, 2, b), arrival_scv=2.0, ttft_slo_s_per_1k_tokens=0.2)
    ref = serve_interval(*args, **kw)
    fast = serve_interval_fast(*args, **kw)
    flat = serve_interval(*args, prompt_cv=kw["prompt_cv"], arrival_scv=2.0)
    rel = np.abs(ref.slo_ok - fast.slo_ok) / np.maximum(np.abs(ref.slo_ok), 1e-6)
    assert rel.max() < 1e-12, rel.max()
    # the slope only loosens the TTFT target: never fewer requests within it, many more
    assert (ref.slo_ok >= flat.slo_ok - 1e-9).all()
    assert (ref.slo_ok > flat.slo_ok + 1e-6).mean() > 0.2


def test_kernel_slo_defaults_are_the_contracts_like_the_references():
    for fn in (serve_interval_fast, serve_interval):
        params = inspect.signature(fn).parameters
        assert params["ttft_slo_s"].default == DEFAULT_TTFT_SLO_S, fn.__name__
        assert params["tpot_slo_s"].default == DEFAULT_TPOT_SLO_S, fn.__name__
