"""`rlscale profiles fit --prometheus`: a profile's latency model from a live service's vLLM series.

The unit tests feed `fit_profile` series made from known coefficients through the serving
model's own iteration law (a fake Prometheus); the sandbox test lets a real Prometheus scrape
`rlscale sandbox`'s emulated vLLM pods serving a known profile and fits it back.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from rlscale.deploy.export import SeriesSamples
from rlscale.deploy.livefit import LiveFitRequest, fit_profile
from rlscale.errors import InputError
from rlscale.profiles.model import ServiceProfile, load_profile

T0 = 1_700_000_000.0
STEP_S = 60.0
SCRAPE_S = 15.0
TRUTH = dict(base=0.0062, seq=0.00002, kv_tok=4.8e-8, pf=2.1e-5, overhead=0.040, kv=444_336)


class FakeReader:
    def __init__(self, series: Sequence[SeriesSamples]) -> None:
        self.series = list(series)

    def samples(
        self, names: Sequence[str], selector: str, start_s: float, end_s: float
    ) -> list[SeriesSamples]:
        out = []
        for s in self.series:
            keep = (s.t_s >= start_s) & (s.t_s <= end_s)
            if s.name in names and keep.any():
                out.append(SeriesSamples(s.name, s.labels, s.t_s[keep], s.value[keep]))
        return out


def _pod(
    name: str,
    c: np.ndarray,
    isl: np.ndarray,
    osl: np.ndarray,
    prompt_rate: np.ndarray,
    *,
    config_info: bool = False,
) -> list[SeriesSamples]:
    """One pod's series over len(c) steps: per step constant batch c, sizes, prompt tokens/s;
    TPOT from the iteration law T = (base + (seq + kv_tok ctx) c) / (1 - pf r)."""
    tr = TRUTH
    ctx = isl + osl / 2
    tpot = (tr["base"] + (tr["seq"] + tr["kv_tok"] * ctx) * c) / (1 - tr["pf"] * prompt_rate)
    tokens = 400.0 * c  # decoded tokens per step
    prompt = prompt_rate * STEP_S
    admitted = prompt / isl
    ttft = tr["overhead"] + 1.5 * tpot + tr["pf"] * isl
    done = admitted
    per_step = {
        "inter_token_latency_seconds_sum": tpot * tokens,
        "inter_token_latency_seconds_count": tokens,
        "time_to_first_token_seconds_sum": ttft * admitted,
        "time_to_first_token_seconds_count": admitted,
        "prompt_tokens_total": prompt,
        "generation_tokens_total": osl * done,
        "request_success_total": done,
    }
    n = len(c)
    times = np.arange(T0 - 300, T0 + n * STEP_S + 300.1, SCRAPE_S)
    edges = T0 + STEP_S * np.arange(n + 1)
    labels = (("namespace", "prod"), ("pod", name))
    out = []
    for metric, inc in per_step.items():
        # constant within a step; the pod ran at step 0's rate before, step n-1's after
        cum_edges = 1000.0 + np.concatenate([[0.0], np.cumsum(inc)])
        value = np.interp(
            times,
            np.concatenate([[edges[0] - 600], edges, [edges[-1] + 600]]),
            np.concatenate(
                [[cum_edges[0] - inc[0] * 10], cum_edges, [cum_edges[-1] + inc[-1] * 10]]
            ),
        )
        lbl = (
            (*labels, ("finished_reason", "stop")) if metric == "request_success_total" else labels
        )
        out.append(SeriesSamples(metric, lbl, times, value))
    k = np.clip(((times - T0) // STEP_S).astype(int), 0, n - 1)
    out.append(SeriesSamples("num_requests_running", labels, times, c[k]))
    out.append(SeriesSamples("num_requests_waiting", labels, times, np.zeros(len(times))))
    out.append(SeriesSamples("kv_cache_usage_perc", labels, times, (c * ctx / tr["kv"])[k]))
    if config_info:
        info = (*labels, ("block_size", "16"), ("num_gpu_blocks", "30000"))
        out.append(SeriesSamples("cache_config_info", info, times, np.ones(len(times))))
    return out


def _varied(n: int = 12, seed: int = 0) -> list[SeriesSamples]:
    rng = np.random.default_rng(seed)
    series = []
    for pod in ("llm-a", "llm-b"):
        c = rng.uniform(2, 60, n)
        isl = rng.uniform(300, 3000, n)
        osl = rng.uniform(80, 500, n)
        r = rng.uniform(500, 15_000, n)
        series += _pod(pod, c, isl, osl, r)
    return series


def _request(n: int = 12, **kw: object) -> LiveFitRequest:
    return LiveFitRequest(
        selector='namespace="prod"', start_s=T0, end_s=T0 + n * STEP_S, step_s=STEP_S, **kw
    )  # type: ignore[arg-type]


BASE = load_profile("llama-3.1-70b-fp8-4xh100")  # far from the truth: nothing is copied


def test_known_coefficients_come_back() -> None:
    fitted, fit = fit_profile(FakeReader(_varied()), _request(), BASE)
    lat = fitted.latency
    assert fit.tpot.kept == () and fit.tpot.points == 24 and fit.tpot.pods == 2
    assert lat.tpot_base_ms == pytest.approx(TRUTH["base"] * 1e3, rel=1e-3)
    assert lat.tpot_ms_per_seq == pytest.approx(TRUTH["seq"] * 1e3, rel=1e-3)
    assert lat.tpot_ms_per_seq_per_ktok == pytest.approx(TRUTH["kv_tok"] * 1e6, rel=1e-3)
    assert lat.tpot_ms_per_prefill_token == pytest.approx(TRUTH["pf"] * 1e3, rel=1e-3)
    assert fit.tpot.prefill_tokens_per_s == pytest.approx(1 / TRUTH["pf"], rel=1e-3)
    assert lat.prefill_base_ms == pytest.approx(TRUTH["overhead"] * 1e3, rel=1e-3)
    assert lat.kv_cache_tokens == pytest.approx(TRUTH["kv"], rel=1e-3)
    assert fit.tpot.mape < 1e-3
    # the rest is the base profile's, and the sources say where each number came from
    assert fitted.cold_start == BASE.cold_start and fitted.gpu_usd_per_hour == BASE.gpu_usd_per_hour
    assert "fitted from prometheus" in fitted.sources["latency"]
    assert fitted.sources["kv_cache_tokens"].startswith("kv_cache_usage_perc")
    assert "TPOT MAPE" in fitted.sources["latency_fit_error"]
    assert fitted.latency.max_batch >= 60


def test_cache_config_info_gives_the_capacity_directly() -> None:
    rng = np.random.default_rng(1)
    n = 12
    series = _pod(
        "llm-a",
        rng.uniform(2, 60, n),
        rng.uniform(300, 3000, n),
        rng.uniform(80, 500, n),
        rng.uniform(500, 15_000, n),
        config_info=True,
    )
    fitted, fit = fit_profile(FakeReader(series), _request(), BASE)
    assert fitted.latency.kv_cache_tokens == 30000 * 16
    assert fit.kv is not None and fit.kv.how.startswith("cache_config_info")


def test_what_the_range_cannot_tell_apart_is_kept_from_the_base() -> None:
    # every request the same size and the prompt rate proportional to the batch: the context
    # and prefill terms are c times a constant, indistinguishable from tpot_ms_per_seq
    rng = np.random.default_rng(2)
    n = 12
    c = rng.uniform(2, 60, n)
    series = _pod("llm-a", c, np.full(n, 1000.0), np.full(n, 200.0), 150.0 * c)
    fitted, fit = fit_profile(FakeReader(series), _request(), BASE)
    assert set(fit.tpot.kept) == {"tpot_ms_per_seq_per_ktok", "tpot_ms_per_prefill_token"}
    assert fitted.latency.tpot_ms_per_seq_per_ktok == BASE.latency.tpot_ms_per_seq_per_ktok
    assert "kept from llama-3.1-70b-fp8-4xh100" in fitted.sources["latency"]
    # the TPOT the fitted profile predicts at the observed operating points still matches
    assert fit.tpot.mape < 0.02


def test_too_little_is_one_clear_error() -> None:
    with pytest.raises(InputError, match="no vLLM inter_token_latency"):
        fit_profile(FakeReader([]), _request(), BASE)
    idle = [
        SeriesSamples(s.name, s.labels, s.t_s, s.value * 0 + 1) if "count" in s.name else s
        for s in _varied()
    ]
    with pytest.raises(InputError, match=r"points with >= 50 decoded tokens"):
        fit_profile(FakeReader(idle), _request(), BASE)
    with pytest.raises(InputError, match="fewer than 6 steps"):
        LiveFitRequest(selector="", start_s=T0, end_s=T0 + 120, step_s=60)


def _app() -> typer.Typer:
    from rlscale.cli.profiles import register

    app = typer.Typer()
    register(app)
    return app


def test_cli_needs_an_output_and_a_selector(tmp_path: Path) -> None:
    base = ["profiles", "fit", "--prometheus", "http://127.0.0.1:9", "--start", "now-1h"]
    r = CliRunner().invoke(_app(), [*base, "--selector", 'app="llm"'])
    assert isinstance(r.exception, InputError) and "--out" in str(r.exception)
    r = CliRunner().invoke(_app(), [*base, "--out", str(tmp_path / "p.yaml")])
    assert isinstance(r.exception, InputError) and "label matchers" in str(r.exception)
    r = CliRunner().invoke(
        _app(), [*base, "--selector", 'app="llm"', "--out", str(tmp_path / "p.yaml")]
    )
    assert isinstance(r.exception, InputError) and "Prometheus unreachable" in str(r.exception)
    assert not (tmp_path / "p.yaml").exists()


# --- against the sandbox's real Prometheus --------------------------------------------------

TIME_SCALE = 20.0
BIN_SIM_S = 60.0  # 3 s of wall time
LIVE_STEP_S = 1.5  # wall seconds: 3 scrapes at 0.5 s
RATES = [4, 12, 2, 18, 8, 25, 6, 15, 3, 20, 10, 22]
PROMPTS = [600, 1400, 900, 2500, 500, 1600, 3000, 1200, 800, 2000, 700, 1100]
OUTPUTS = [120, 300, 200, 150, 400, 100, 180, 220, 500, 250, 90, 350]
# Stated tolerances, against the emulated pods' own profile. Measured in 5 runs on the shared
# 2-core box: TPOT over the grid max 12-14 % / mean 9.5-11 % (the fitted intercept reads ~13 %
# high), KV capacity 1-2.5 %, prefill per-token cost 4-14 % (34 % with 3 s steps), overhead
# 14-20 %. The emulated histograms carry each interval's percentiles, not requests, and a
# (pod, step) point averages a few replay intervals whose batch moved: TPOT is read to ~15 %,
# the capacity far better; the split between the per-sequence and the context term is not
# asserted (over one context range they trade off).
TPOT_GRID_TOL = 0.20  # every (c in 2..40, observed size pair)
KV_TOL = 0.05
PREFILL_TOL = 0.40
OVERHEAD_TOL = 0.30


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    from rlscale.sandbox.prometheus import INSTALL_HINT, PrometheusProcess, find_binary

    binary = find_binary()
    if binary is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the prometheus binary is missing (install it: {INSTALL_HINT})")
        pytest.skip(f"the prometheus binary is missing (install it: {INSTALL_HINT})")
    prom = PrometheusProcess(
        tmp_path_factory.mktemp("prometheus"), binary=binary, scrape_interval_s=0.5, raw_job=True
    )
    try:
        prom.start(timeout_s=60.0)
        yield prom
    finally:
        prom.stop()


def _truth_profile() -> ServiceProfile:
    p = load_profile("llama-3.1-8b-h100")
    fast = [{"name": "engine", "low_s": 20.0, "mode_s": 30.0, "high_s": 40.0}]
    return ServiceProfile.model_validate({**p.model_dump(), "name": "livefit", "cold_start": fast})


@pytest.mark.prometheus
@pytest.mark.slow
def test_the_sandbox_pods_profile_is_recovered(prometheus: object, tmp_path: Path) -> None:
    """Replay traffic with varying rates and sizes through 2 emulated vLLM pods serving a known
    profile; fit a profile from the real Prometheus with the command (the 70B profile as the
    base) and compare with the pods' own."""
    from rlscale.sandbox.runner import Sandbox
    from rlscale.traces.workload import Workload

    truth = _truth_profile()
    w = Workload(
        name="varied",
        source="test",
        interval_s=BIN_SIM_S,
        arrivals=np.array(RATES, float) * BIN_SIM_S,
        prompt_tokens=np.array(PROMPTS, float),
        output_tokens=np.array(OUTPUTS, float),
    )
    sb = Sandbox(
        truth,
        w,
        replicas=2,
        time_scale=TIME_SCALE,
        prometheus=prometheus,  # type: ignore[arg-type]
        namespace="livefit",
        replay_period_s=0.05,
    )
    selector = 'namespace="livefit",job="vllm"'
    try:
        sb.start()
        sb.wait_for_ready(2, timeout_s=60)
        sb.wait_for_query(
            f"count(vllm:num_requests_running{{{selector}}})",
            lambda r: bool(r) and float(r[0]["value"][1]) >= 2,
            timeout_s=60,
        )
        start = time.time()
        time.sleep(len(RATES) * BIN_SIM_S / TIME_SCALE + 1.5)  # one lap of the trace
        end = time.time() - 1.0
    finally:
        sb.stop()
    out = tmp_path / "live.yaml"
    result = CliRunner().invoke(
        _app(),
        [
            "profiles",
            "fit",
            "--prometheus",
            prometheus.url,  # type: ignore[attr-defined]
            "--selector",
            selector,
            "--start",
            f"{start:.3f}",
            "--end",
            f"{end:.3f}",
            "--step-s",
            str(LIVE_STEP_S),
            "--time-scale",
            str(TIME_SCALE),
            "--profile",
            "llama-3.1-70b-fp8-4xh100",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    fitted = load_profile(out)
    errs = [
        abs(fitted.tpot_ms(c, i + o / 2, i / o) / truth.tpot_ms(c, i + o / 2, i / o) - 1)
        for c in (2, 5, 10, 20, 40)
        for i, o in zip(PROMPTS, OUTPUTS, strict=True)
    ]
    ft, tt = fitted.latency, truth.latency
    report = dict(
        tpot_grid_max=max(errs),
        tpot_grid_mean=float(np.mean(errs)),
        kv=abs(ft.kv_cache_tokens / tt.kv_cache_tokens - 1),
        prefill=abs(ft.tpot_ms_per_prefill_token / tt.tpot_ms_per_prefill_token - 1),
        overhead=abs(ft.prefill_base_ms / tt.prefill_base_ms - 1),
    )
    print("live fit:", report, result.output)
    assert report["tpot_grid_max"] <= TPOT_GRID_TOL, report
    assert report["kv"] <= KV_TOL, report
    assert report["prefill"] <= PREFILL_TOL, report
    assert report["overhead"] <= OVERHEAD_TOL, report
    assert math.isfinite(ft.tpot_base_ms) and ft.max_batch == tt.max_batch
