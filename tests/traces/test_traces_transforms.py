"""Transforms: what each conserves or scales, and that none changes its input."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rlscale.errors import InputError
from rlscale.traces import (
    augment,
    compress_time,
    load_workload,
    scale_rate,
    scale_to_fleet,
    slice_window,
    superpose,
)
from rlscale.traces.workload import Workload


def _workload(
    arrivals: Sequence[float] | np.ndarray, interval_s: float = 1.0, start_s: float = 0.0
) -> Workload:
    a = np.asarray(arrivals, dtype=float)
    return Workload(
        name="w",
        source="test",
        interval_s=interval_s,
        arrivals=a,
        prompt_tokens=np.linspace(500, 1500, len(a)),
        output_tokens=np.full(len(a), 200.0),
        start_s=start_s,
    )


counts = st.lists(st.integers(min_value=0, max_value=1000), min_size=1, max_size=200)


@settings(max_examples=60, deadline=None)
@given(counts, st.sampled_from([0.5, 1.0, 2.0]), st.floats(min_value=0.3, max_value=500.0))
def test_rebinning_conserves_total_arrivals(
    arrivals: list[int], interval_s: float, new_interval_s: float
) -> None:
    w = _workload(arrivals, interval_s)
    r = w.rebin(new_interval_s)
    assert r.total_requests == pytest.approx(w.total_requests, rel=1e-9, abs=1e-6)
    assert r.duration_s >= w.duration_s - 1e-6


@settings(max_examples=60, deadline=None)
@given(counts, st.floats(min_value=1.0, max_value=100.0))
def test_compress_time_keeps_rates_and_divides_totals(arrivals: list[int], factor: float) -> None:
    w = _workload(arrivals)
    c = compress_time(w, factor)
    np.testing.assert_allclose(c.rate_rps, w.rate_rps)
    assert c.total_requests == pytest.approx(w.total_requests / factor)
    assert c.duration_s == pytest.approx(w.duration_s / factor)
    assert c.meta["transforms"] == [{"op": "compress_time", "factor": factor}]


@settings(max_examples=40, deadline=None)
@given(counts, counts, st.integers(min_value=-50, max_value=50))
def test_superpose_conserves_the_sum_of_totals(a: list[int], b: list[int], offset: int) -> None:
    wa, wb = _workload(a, 1.0, 1000.0), _workload(b, 2.0, 1000.0 + offset)
    s = superpose(wa, wb)
    assert s.total_requests == pytest.approx(
        wa.total_requests + wb.total_requests, rel=1e-9, abs=1e-6
    )
    assert s.interval_s == 1.0
    assert s.start_s == min(wa.start_s, wb.start_s)


def test_slice_window_is_relative_to_the_start() -> None:
    w = _workload(np.arange(100), interval_s=10.0, start_s=5_000.0)
    s = slice_window(w, 95.0, 200.0)
    assert s.start_s == 5_090.0
    assert list(s.arrivals) == list(range(9, 20))
    assert slice_window(w, 900.0, 10_000.0).n_bins == 10  # clipped at the end
    with pytest.raises(InputError, match="start_s"):
        slice_window(w, 50.0, 10.0)
    with pytest.raises(InputError, match="past the end"):
        slice_window(w, 1_000.0, 2_000.0)


def test_scale_rate_multiplies_every_bin() -> None:
    w = _workload([1, 2, 3])
    s = scale_rate(w, 2.5)
    assert list(s.arrivals) == [2.5, 5.0, 7.5]
    np.testing.assert_array_equal(s.prompt_tokens, w.prompt_tokens)
    with pytest.raises(InputError, match="factor"):
        scale_rate(w, 0)


def test_scale_to_fleet_sizes_the_peak_minute_for_the_replicas() -> None:
    rng = np.random.default_rng(0)
    w = _workload(rng.poisson(50 + 40 * np.sin(np.arange(7200) / 900.0)))
    s = scale_to_fleet(w, replicas_at_peak=12, replica_capacity_rps=15.0)
    per_minute = s.rebin(60.0).rate_rps
    assert np.quantile(per_minute, 0.99) == pytest.approx(180.0)
    step = s.meta["transforms"][-1]
    assert step["op"] == "scale_to_fleet" and step["factor"] == pytest.approx(
        s.total_requests / w.total_requests
    )
    raw = scale_to_fleet(w, 12, 15.0, peak_quantile=1.0, over_s=None)
    assert raw.rate_rps.max() == pytest.approx(180.0)


def test_superposed_sizes_are_request_weighted_with_pooled_cvs(shared_data: Path) -> None:
    import pandas as pd

    code = load_workload(shared_data / "azure_llm_2023_code.csv")
    conv = load_workload(shared_data / "azure_llm_2023_conv.csv")
    both = superpose(code, conv)
    raw = pd.concat(
        [
            pd.read_csv(shared_data / f)
            for f in ("azure_llm_2023_code.csv", "azure_llm_2023_conv.csv")
        ]
    )
    assert both.total_requests == pytest.approx(8_819 + 19_366)
    assert both.start_s == conv.start_s  # conv starts 77 s earlier
    assert np.average(both.prompt_tokens, weights=both.arrivals) == pytest.approx(
        raw.ContextTokens.mean()
    )
    assert both.prompt_tokens_cv == pytest.approx(
        raw.ContextTokens.std(ddof=0) / raw.ContextTokens.mean()
    )
    assert both.output_tokens_cv == pytest.approx(
        raw.GeneratedTokens.std(ddof=0) / raw.GeneratedTokens.mean()
    )


def test_superpose_by_start_lays_traces_over_each_other() -> None:
    a = _workload([1, 1, 1], start_s=0.0)
    b = _workload([2, 2], start_s=1.7e9)
    s = superpose(a, b, align="start")
    assert list(s.arrivals) == [3, 3, 1]
    with pytest.raises(InputError, match="align='start'"):
        superpose(a, b)


def test_augment_is_deterministic_given_the_rng() -> None:
    w = _workload(np.full(86_400 // 10, 100.0), interval_s=10.0)

    def draw(seed: int) -> Workload:
        return augment(
            w, np.random.default_rng(seed), rate_scale=(0.5, 2.0), noise_cv=0.2, bursts_per_day=10.0
        )

    a, b, c = draw(1), draw(1), draw(2)
    np.testing.assert_array_equal(a.arrivals, b.arrivals)
    assert a.meta == b.meta
    assert not np.array_equal(a.arrivals, c.arrivals)


def test_augment_scales_adds_noise_and_bursts_as_recorded() -> None:
    w = _workload(np.full(8_640, 100.0), interval_s=10.0)
    scaled = augment(w, np.random.default_rng(0), rate_scale=(2.0, 2.0))
    np.testing.assert_allclose(scaled.arrivals, 200.0)
    noisy = augment(w, np.random.default_rng(0), noise_cv=0.3)
    blocks = noisy.arrivals.reshape(-1, 6)  # 60-s noise blocks of six 10-s bins
    assert np.all(blocks.std(axis=1) < 1e-9 * blocks.mean())
    assert blocks[:, 0].std() / blocks[:, 0].mean() == pytest.approx(0.3, rel=0.2)
    bursty = augment(w, np.random.default_rng(0), bursts_per_day=20.0, burst_magnitude=(3.0, 3.0))
    bursts = bursty.meta["transforms"][-1]["bursts"]
    assert len(bursts) > 5
    assert bursty.total_requests > w.total_requests
    first = bursts[0]
    i = int(first["start_s"] // 10) + 1
    assert bursty.arrivals[i] > 200  # a rectangular or fresh decaying burst: ~3x the rate


def test_transforms_do_not_change_their_input() -> None:
    w = _workload([5, 5, 5, 5])
    w.meta["transforms"] = [{"op": "earlier"}]
    before = w.arrivals.copy()
    for out in (
        scale_rate(w, 2),
        compress_time(w, 2),
        slice_window(w, 1, 3),
        augment(w, np.random.default_rng(0), noise_cv=0.5),
        superpose(w, w),
    ):
        assert out.meta["transforms"][-1]["op"] != "earlier"
    np.testing.assert_array_equal(w.arrivals, before)
    assert w.meta["transforms"] == [{"op": "earlier"}]
