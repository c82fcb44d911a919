"""Per-request and rate loaders, format detection and the workload Parquet round trip."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rlscale.traces import detect_format, load_workload, save_workload
from rlscale.traces.workload import Workload


def test_azure_loader_counts_every_request(shared_data: Path) -> None:
    code = load_workload(shared_data / "azure_llm_2023_code.csv")
    conv = load_workload(shared_data / "azure_llm_2023_conv.csv")
    assert code.total_requests == 8_819
    assert conv.total_requests == 19_366
    assert code.meta["requests"] == 8_819
    # README: code 18:17:03 → 19:14:19 (57 min), conv 18:15:46 → 19:14:08 (58 min)
    assert 56 * 60 <= code.duration_s <= 58 * 60
    assert 57 * 60 <= conv.duration_s <= 59 * 60


def test_azure_bins_start_on_the_clock_in_utc(shared_data: Path) -> None:
    w = load_workload(shared_data / "azure_llm_2023_code.csv")
    # 2023-11-16 18:17:03.97996 UTC, floored to the 1-s bin
    assert w.start_s == pd.Timestamp("2023-11-16 18:17:03", tz="UTC").timestamp()
    assert w.interval_s == 1.0
    assert w.arrivals[0] >= 1


def test_azure_sizes_are_request_weighted_means_with_the_trace_cvs(shared_data: Path) -> None:
    raw = pd.read_csv(shared_data / "azure_llm_2023_conv.csv")
    w = load_workload(shared_data / "azure_llm_2023_conv.csv", interval_s=60.0)
    assert np.average(w.prompt_tokens, weights=w.arrivals) == pytest.approx(
        raw.ContextTokens.mean()
    )
    assert np.average(w.output_tokens, weights=w.arrivals) == pytest.approx(
        raw.GeneratedTokens.mean()
    )
    assert w.prompt_tokens_cv == pytest.approx(
        raw.ContextTokens.std(ddof=0) / raw.ContextTokens.mean()
    )
    assert w.output_tokens_cv == pytest.approx(0.77, abs=0.01)
    assert w.total_requests == 19_366


def _write_requests_csv(path: Path, t: list[float], p: list[float], o: list[float]) -> Path:
    pd.DataFrame({"timestamp": t, "prompt_tokens": p, "output_tokens": o}).to_csv(path, index=False)
    return path


def test_empty_bins_get_the_workload_mean_size(tmp_path: Path) -> None:
    f = _write_requests_csv(tmp_path / "r.csv", [10.2, 10.7, 13.1], [100, 300, 800], [10, 30, 50])
    w = load_workload(f)
    assert w.start_s == 10.0
    assert list(w.arrivals) == [2, 0, 0, 1]
    assert list(w.prompt_tokens) == [200, 400, 400, 800]  # bins 1-2 empty: mean of all requests
    assert list(w.output_tokens) == [20, 30, 30, 50]


def test_requests_parquet_loads_like_the_csv(tmp_path: Path) -> None:
    t = [0.5, 1.5, 1.6, 4.0]
    df = pd.DataFrame(
        {"timestamp": t, "prompt_tokens": [1, 2, 3, 4], "output_tokens": [5, 6, 7, 8]}
    )
    df.to_parquet(tmp_path / "r.parquet")
    df.to_csv(tmp_path / "r.csv", index=False)
    a, b = load_workload(tmp_path / "r.parquet"), load_workload(tmp_path / "r.csv")
    assert detect_format(tmp_path / "r.parquet") == "requests"
    np.testing.assert_array_equal(a.arrivals, b.arrivals)
    np.testing.assert_array_equal(a.prompt_tokens, b.prompt_tokens)


def test_jsonl_loader_reads_millisecond_timestamps(tmp_path: Path) -> None:
    recs = [
        {"timestamp": 0, "input_length": 1000, "output_length": 10, "hash_ids": [1, 2]},
        {"timestamp": 400, "input_length": 2000, "output_length": 20},
        {"timestamp": 2500, "input_length": 3000, "output_length": 30},
    ]
    f = tmp_path / "mooncake.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in recs) + "\n\n")
    w = load_workload(f)
    assert w.meta["format"] == "jsonl"
    assert list(w.arrivals) == [2, 0, 1]
    assert w.prompt_tokens[0] == 1500 and w.output_tokens[2] == 30


def test_rate_loader_draws_poisson_counts_around_the_rate(tmp_path: Path) -> None:
    f = tmp_path / "rate.csv"
    pd.DataFrame({"timestamp": [0, 600, 1200], "rps": [10.0, 30.0, 20.0]}).to_csv(f, index=False)
    w = load_workload(f, seed=3, prompt_tokens=500)
    assert detect_format(f) == "rate"
    assert w.n_bins == 1800  # the last rate lasts as long as the step before it
    assert w.meta["expected_requests"] == pytest.approx(600 * 60)
    minutes = w.rebin(600).rate_rps
    np.testing.assert_allclose(minutes, [10, 30, 20], rtol=0.05)
    assert set(w.prompt_tokens) == {500.0}
    again = load_workload(f, seed=3, prompt_tokens=500)
    np.testing.assert_array_equal(w.arrivals, again.arrivals)
    assert not np.array_equal(w.arrivals, load_workload(f, seed=4).arrivals)


def test_a_saved_workload_loads_back_unchanged(tmp_path: Path, shared_data: Path) -> None:
    w = load_workload(shared_data / "azure_llm_2023_code.csv", interval_s=10.0)
    out = save_workload(w, tmp_path / "code.parquet")
    assert detect_format(out) == "workload"
    back = load_workload(out)
    assert back.name == w.name and back.source == w.source
    assert back.interval_s == 10.0 and back.start_s == w.start_s
    np.testing.assert_array_equal(back.arrivals, w.arrivals)
    np.testing.assert_array_equal(back.prompt_tokens, w.prompt_tokens)
    np.testing.assert_array_equal(back.output_tokens, w.output_tokens)
    assert back.prompt_tokens_cv == w.prompt_tokens_cv
    assert back.meta == w.meta
    assert load_workload(out, interval_s=60.0).total_requests == w.total_requests


def test_workload_files_keep_their_bins_unless_asked(tmp_path: Path) -> None:
    w = Workload("w", "test", 30.0, np.array([3.0, 0.0, 6.0]), np.full(3, 100.0), np.full(3, 10.0))
    out = save_workload(w, tmp_path / "w.parquet")
    assert load_workload(out).interval_s == 30.0
    assert load_workload(out, name="renamed").name == "renamed"
    assert load_workload(out, interval_s=90.0).arrivals.tolist() == [9.0]


@pytest.mark.parametrize(
    ("filename", "fmt"),
    [
        ("azure_llm_2023_code.csv", "azure"),
        ("servegen_language_m-large_clients_10min.csv", "servegen"),
        ("servegen_language_m-mid_total_10min.csv", "servegen"),
    ],
)
def test_format_is_detected_from_the_header(shared_data: Path, filename: str, fmt: str) -> None:
    assert detect_format(shared_data / filename) == fmt


def test_an_explicit_format_name_is_case_insensitive(shared_data: Path) -> None:
    w = load_workload(shared_data / "azure_llm_2023_code.csv", "Azure")
    assert w.meta["format"] == "azure"
