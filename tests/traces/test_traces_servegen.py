"""ServeGen rate traces: totals, gap masking, and the rebuilt per-client burstiness."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rlscale.traces import load_workload
from rlscale.traces.servegen import fill_gaps, load_servegen
from rlscale.traces.workload import Workload

CLIENT_HEADER = "client_id,window_start_s,rate_rps,iat_cv,iat_family,iat_shape,iat_scale\n"


@pytest.fixture(scope="module")
def m_large_clients(shared_data: Path) -> tuple[Workload, float]:
    t0 = time.perf_counter()
    w = load_workload(shared_data / "servegen_language_m-large_clients_10min.csv")
    return w, time.perf_counter() - t0


@pytest.fixture(scope="module")
def m_mid_clients(shared_data: Path) -> Workload:
    return load_workload(shared_data / "servegen_language_m-mid_clients_10min.csv")


def _per_window_dispersion(w: Workload, window_s: float = 600.0) -> np.ndarray:
    k = int(round(window_s / w.interval_s))
    counts = w.arrivals[: w.n_bins // k * k].reshape(-1, k)
    mean = counts.mean(axis=1)
    ok = mean > 0
    return counts[ok].var(axis=1) / mean[ok]


def test_servegen_totals_keep_the_mean_rate(shared_data: Path) -> None:
    w = load_workload(shared_data / "servegen_language_m-large_total_10min.csv")
    assert w.start_s == 0.0  # t = 0 is 00:00 of day 0
    assert w.n_bins == 14 * 86_400
    assert w.rate_rps.mean() == pytest.approx(195.8, rel=0.01)
    # Poisson counts: per-bin dispersion ~1 inside each window
    assert np.median(_per_window_dispersion(w)) == pytest.approx(1.0, abs=0.1)


def test_m_mid_gaps_are_masked_so_no_window_is_empty(shared_data: Path) -> None:
    w = load_workload(shared_data / "servegen_language_m-mid_total_10min.csv", interval_s=600.0)
    assert w.meta["gaps_masked"] == 84
    assert len(w.meta["gap_windows"]) == 84
    # the partial windows around the gaps are masked too (2,000 req/s neighbours, ~14 req/s)
    assert w.meta["collapses_masked"] == 18
    assert set(range(1386, 1398)) - {1392} <= set(w.meta["collapse_windows"])
    # README: p5 945 req/s; a masked window must look like traffic, not like a hole
    assert w.rate_rps.min() > 300


def test_m_mid_clients_use_the_sibling_totals_to_mask_gaps(m_mid_clients: Workload) -> None:
    w = m_mid_clients
    assert w.meta["gaps_masked"] == 84
    ten = w.rebin(600.0).rate_rps
    assert ten.min() > 300
    gaps = np.array(w.meta["gap_windows"])
    assert np.all(ten[gaps] > 300)


def test_clients_rebuild_keeps_every_window_total(
    shared_data: Path, m_large_clients: tuple[Workload, float]
) -> None:
    w, _ = m_large_clients
    rows = pd.read_csv(shared_data / "servegen_language_m-large_clients_10min.csv")
    expected = float((rows.rate_rps * 600).sum())
    assert w.total_requests == pytest.approx(expected, rel=0.001)
    per_window = w.rebin(600.0).arrivals
    by_rows = rows.groupby("window_start_s").rate_rps.sum().to_numpy() * 600
    np.testing.assert_allclose(per_window, by_rows, rtol=0.001, atol=2)


def test_clients_rebuild_is_burstier_than_poisson(m_large_clients: tuple[Workload, float]) -> None:
    w, _ = m_large_clients
    # Most m-large clients have IAT CV > 1: 1-s counts inside a window vary more than Poisson.
    assert np.median(_per_window_dispersion(w)) > 2.0


def test_loading_m_large_clients_at_1s_for_14_days_takes_seconds(
    m_large_clients: tuple[Workload, float],
) -> None:
    w, elapsed_s = m_large_clients
    assert w.n_bins == 1_209_600
    # ~3 s on 2 shared cores; the bound leaves room for a busy machine
    assert elapsed_s < 20.0, f"took {elapsed_s:.1f} s"


def _clients_file(tmp_path: Path, rows: list[str], name: str = "x_clients_10min.csv") -> Path:
    f = tmp_path / name
    f.write_text(CLIENT_HEADER + "".join(r + "\n" for r in rows))
    return f


@pytest.mark.parametrize(
    ("rate_rps", "path"),
    [
        (1.0, "exact"),
        (5.0, "solo"),
    ],  # 600 requests per window (exact) and 3,000 (Dirichlet-multinomial)
)
def test_bursty_clients_are_overdispersed_and_regular_ones_are_not(
    tmp_path: Path, rate_rps: float, path: str
) -> None:
    windows = range(0, 6 * 600, 600)
    bursty = _clients_file(
        tmp_path, [f"0,{t},{rate_rps},3.16,Gamma,0.1,1.0" for t in windows], "b_clients_10min.csv"
    )
    regular = _clients_file(
        tmp_path, [f"0,{t},{rate_rps},0.5,Gamma,4.0,1.0" for t in windows], "r_clients_10min.csv"
    )
    wb, wr = load_workload(bursty), load_workload(regular)
    key = "client_windows_exact" if path == "exact" else "client_windows_solo"
    assert wb.meta[key] == 6
    for w in (wb, wr):
        assert w.total_requests == 6 * 600 * rate_rps
    # gamma(a) IATs: index of dispersion ≈ CV² = 1/a (10 and 0.25)
    assert np.mean(_per_window_dispersion(wb)) > 4.0
    assert np.mean(_per_window_dispersion(wr)) < 0.6


def test_pooled_regular_clients_are_underdispersed(tmp_path: Path) -> None:
    f = _clients_file(tmp_path, [f"{c},0,3.0,0.5,Gamma,4.0,1.0" for c in range(4)])
    w = load_workload(f)
    assert w.meta["client_windows_pooled"] == 4
    assert w.total_requests == 4 * 1800
    assert np.mean(_per_window_dispersion(w)) == pytest.approx(0.25, abs=0.1)


def test_a_client_without_a_fitted_family_arrives_as_poisson(tmp_path: Path) -> None:
    f = _clients_file(tmp_path, [f"0,{t},1.0,,,," for t in range(0, 3000, 600)])
    w = load_workload(f)
    assert w.total_requests == 5 * 600
    assert np.mean(_per_window_dispersion(w)) == pytest.approx(1.0, abs=0.2)


def test_requests_stay_inside_their_window(tmp_path: Path) -> None:
    f = _clients_file(tmp_path, ["0,0,0.1,1,Gamma,1.0,1.0", "0,1200,2.0,8.0,Weibull,0.3,1.0"])
    w = load_workload(f)
    assert w.n_bins == 1800
    assert w.arrivals[:600].sum() == 60
    assert w.arrivals[600:1200].sum() == 0  # no rows, no sibling totals: silence, not a gap
    assert w.arrivals[1200:].sum() == 1200
    assert w.meta["gaps_masked"] == 0


def test_a_sibling_totals_file_turns_an_empty_window_into_a_masked_gap(tmp_path: Path) -> None:
    _clients_file(tmp_path, ["0,0,2.0,1,Gamma,1.0,1.0", "0,1200,2.0,1,Gamma,1.0,1.0"])
    (tmp_path / "x_total_10min.csv").write_text(
        "window_start_s,day,hour_of_day,total_rate_rps,active_clients,is_gap\n0,0,0,2.0,1,0\n600,0,0.17,0,0,1\n1200,0,0.33,2.0,1,0\n"
    )
    w = load_workload(tmp_path / "x_clients_10min.csv")
    assert w.meta["gaps_masked"] == 1 and w.meta["gap_windows"] == [1]
    assert w.arrivals[600:1200].sum() == 1200  # interpolated between its 2-req/s neighbours


def test_the_clients_rebuild_is_deterministic_given_the_seed(tmp_path: Path) -> None:
    f = _clients_file(
        tmp_path, [f"{c},0,{r},2.0,Weibull,0.5,1.0" for c, r in enumerate((0.5, 3.0, 9.0))]
    )
    a, b, c = (load_servegen(f, seed=s) for s in (7, 7, 8))
    np.testing.assert_array_equal(a.arrivals, b.arrivals)
    assert not np.array_equal(a.arrivals, c.arrivals)


def test_a_bin_width_that_does_not_divide_ten_minutes_is_rebinned(tmp_path: Path) -> None:
    f = _clients_file(tmp_path, ["0,0,1.0,1,Gamma,1.0,1.0", "0,600,1.0,1,Gamma,1.0,1.0"])
    w = load_workload(f, interval_s=7.0)
    assert w.interval_s == 7.0
    assert w.total_requests == pytest.approx(1200)


def test_servegen_sizes_default_to_azure_conv_and_can_be_overridden(tmp_path: Path) -> None:
    f = _clients_file(tmp_path, ["0,0,1.0,1,Gamma,1.0,1.0"])
    w = load_workload(f)
    assert set(w.prompt_tokens) == {1155.0} and set(w.output_tokens) == {211.0}
    assert (w.prompt_tokens_cv, w.output_tokens_cv) == (0.96, 0.77)
    v = load_workload(f, prompt_tokens=4000, output_tokens=50, output_tokens_cv=2.0)
    assert set(v.prompt_tokens) == {4000.0} and v.output_tokens_cv == 2.0


def test_fill_gaps_follows_the_same_time_a_day_earlier() -> None:
    per_day = 24
    t = np.arange(3 * per_day)
    rate = 100 + 50 * np.sin(2 * np.pi * t / per_day)
    rate[per_day:] *= 1.2  # day 2 and 3 busier: the fill must meet its neighbours, not copy day 1
    gap = np.zeros(len(t), dtype=bool)
    gap[30:36] = True
    truth = rate.copy()
    holed = np.where(gap, 0.0, rate)
    filled = fill_gaps(holed, gap, per_day=per_day)
    np.testing.assert_allclose(filled[gap], truth[gap], rtol=1e-9)
    np.testing.assert_array_equal(filled[~gap], rate[~gap])


def test_fill_gaps_interpolates_when_there_is_no_other_day() -> None:
    rate = np.array([10.0, 0.0, 0.0, 40.0])
    filled = fill_gaps(rate, rate == 0, per_day=144)
    np.testing.assert_allclose(filled, [10, 20, 30, 40])
