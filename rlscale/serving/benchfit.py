"""Serving benchmarks simulated in the request-level engine, and the iteration-time fit that
matches them to measured points (issue #11 part 2, issue #14 item 2a).

A measured TTFT/TPOT point is the result of a benchmark: `vllm bench serve` (or aiconfigurator's
silicon runs) holding `--max-concurrency` c requests in flight, or sending Poisson arrivals at
`--request-rate` r, with fixed prompt/output lengths. The point is not a service time: at
concurrency c its TTFT already contains the wait behind the other clients' prefills. So the
coefficients of the engine's iteration-time model (`serving.engine.IterationModel`: base, per
decode sequence, per KV token read, per prefill token, plus the off-GPU TTFT overhead) are fitted
by running *that benchmark* in the engine, on one replica, and matching its TTFT and TPOT:

    minimise  sum_points  log(sim_ttft / ttft)^2 + log(sim_tpot / tpot)^2

over the log of the coefficients (scipy `least_squares`, finite differences with a 5 % step:
the engine's schedule is piecewise in the coefficients, so a tiny step sees no slope). Each point
runs a small benchmark (`prompts_per_client` requests per client, fixed seed), a few
milliseconds of engine time, so a 40-point fit takes seconds to a minute.

The benchmark client is vLLM's: with a concurrency cap, a request is sent when a client is free
and its scheduled time (Poisson at the rate, or all at once for rate = inf) has come; TTFT is
measured from when it is sent. Statistics are vLLM's: mean, median and p99 (`np.percentile`) of
TTFT and TPOT over completed requests, ITL as the token-weighted mean of TPOT (the engine emits
one token per request per iteration, so for equal lengths that is vLLM's mean ITL), throughputs over the
benchmark's duration (first send to last completion).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from rlscale.profiles.model import LatencyModel
from rlscale.serving.engine import EngineConfig, FleetEngine

# the LatencyModel fields the engine's iteration model reads (engine module docstring)
ITERATION_FIELDS: tuple[str, ...] = (
    "tpot_base_ms",
    "tpot_ms_per_seq",
    "tpot_ms_per_seq_per_ktok",
    "tpot_ms_per_prefill_token",
    "prefill_base_ms",
)
# a coefficient fitted in log space cannot start at 0: a zero starts here (ms, ms/seq, ...)
START_FLOOR = {
    "tpot_base_ms": 0.1,
    "tpot_ms_per_seq": 1e-3,
    "tpot_ms_per_seq_per_ktok": 1e-3,
    "tpot_ms_per_prefill_token": 1e-4,
    "prefill_base_ms": 1.0,
}
# the fit may drive a coefficient this far below its start (effectively 0), not to exactly 0
LOG_SPAN = 12.0
BENCH_TIMEOUT_S = 1e9  # a benchmark client waits for its answer


@dataclass(frozen=True)
class BenchmarkSpec:
    """One `vllm bench serve` run against one replica."""

    prompt_tokens: int
    output_tokens: int
    max_concurrency: int | None  # None: no cap (open loop)
    request_rate_rps: float = math.inf  # inf: every request scheduled at t = 0
    num_prompts: int = 256
    # vLLM's `--random-range-ratio`: each length uniform in [x (1 - r), x (1 + r)]. With r = 0
    # and a concurrency cap the simulated clients stay in lock-step cohorts for ever (they
    # finish in the same iteration and re-send together), which a real client and server, whose
    # timings jitter by more than one iteration, do not.
    range_ratio: float = 0.0
    seed: int = 0
    # runs with seeds seed .. seed + repeats - 1, their requests pooled: the expected statistics
    # of a run whose own random draws (Poisson arrivals, lengths) are not known
    repeats: int = 1

    def __post_init__(self) -> None:
        if self.prompt_tokens < 1 or self.output_tokens < 1:
            raise ValueError("prompt_tokens and output_tokens must be >= 1")
        if self.max_concurrency is not None and self.max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {self.max_concurrency}")
        if not self.request_rate_rps > 0:
            raise ValueError(f"request_rate_rps must be > 0, got {self.request_rate_rps}")
        if self.max_concurrency is None and math.isinf(self.request_rate_rps):
            raise ValueError("an uncapped benchmark needs a finite request rate")
        if not 0.0 <= self.range_ratio < 1.0:
            raise ValueError(f"range_ratio must be in [0, 1), got {self.range_ratio}")
        if self.repeats < 1:
            raise ValueError(f"repeats must be >= 1, got {self.repeats}")
        if self.num_prompts < 1:
            raise ValueError(f"num_prompts must be >= 1, got {self.num_prompts}")

    def arrivals_s(self) -> np.ndarray:
        """Scheduled send times (vLLM: exponential gaps at the rate, burstiness 1)."""
        if math.isinf(self.request_rate_rps):
            return np.zeros(self.num_prompts)
        rng = np.random.default_rng(self.seed)
        gaps = rng.exponential(1.0 / self.request_rate_rps, self.num_prompts)
        gaps[0] = 0.0
        return np.cumsum(gaps)

    def sizes(self) -> tuple[np.ndarray, np.ndarray]:
        """Prompt and output lengths of the requests (tokens)."""
        n = self.num_prompts
        if self.range_ratio == 0.0:
            return np.full(n, self.prompt_tokens), np.full(n, self.output_tokens)
        rng = np.random.default_rng([self.seed, 1])

        def draw(x: int) -> np.ndarray:
            lo = max(1, int(x * (1.0 - self.range_ratio)))
            hi = max(lo, int(x * (1.0 + self.range_ratio)))
            return rng.integers(lo, hi + 1, n)

        return draw(self.prompt_tokens), draw(self.output_tokens)


@dataclass(frozen=True)
class BenchmarkResult:
    """What `vllm bench serve` reports, for one simulated run (ms, req/s, tok/s)."""

    completed: int
    duration_s: float
    ttft_ms_mean: float
    ttft_ms_median: float
    ttft_ms_p99: float
    tpot_ms_mean: float
    tpot_ms_median: float
    tpot_ms_p99: float
    itl_ms_mean: float
    request_throughput_rps: float
    output_throughput_tok_s: float
    total_input_tokens: int
    total_output_tokens: int

    def stat(self, metric: str, statistic: str) -> float:
        return float(getattr(self, f"{metric}_ms_{statistic}"))


def simulate_benchmark(
    latency: LatencyModel, spec: BenchmarkSpec, config: EngineConfig | None = None
) -> BenchmarkResult:
    """Run `spec` against one replica with `latency`'s iteration model, to the last answer
    (`spec.repeats` times, pooled)."""
    runs = [
        _run_once(latency, replace(spec, seed=spec.seed + k, repeats=1), config)
        for k in range(spec.repeats)
    ]
    ttft_ms = np.concatenate([r[0] for r in runs])
    tpot_ms = np.concatenate([r[1] for r in runs])
    duration_s = sum(r[2] for r in runs)
    out_tokens = sum(r[3] for r in runs)
    done = ttft_ms.size
    return BenchmarkResult(
        completed=done,
        duration_s=duration_s,
        ttft_ms_mean=float(ttft_ms.mean()),
        ttft_ms_median=float(np.median(ttft_ms)),
        ttft_ms_p99=float(np.percentile(ttft_ms, 99)),
        tpot_ms_mean=float(tpot_ms.mean()),
        tpot_ms_median=float(np.median(tpot_ms)),
        tpot_ms_p99=float(np.percentile(tpot_ms, 99)),
        # vLLM's mean ITL weighs each request's TPOT by its output - 1 gaps; the mean TPOT
        # is that for equal lengths and within the length spread otherwise
        itl_ms_mean=float(tpot_ms.mean()),
        request_throughput_rps=done / duration_s,
        output_throughput_tok_s=out_tokens / duration_s,
        total_input_tokens=sum(r[4] for r in runs),
        total_output_tokens=out_tokens,
    )


def _run_once(
    latency: LatencyModel, spec: BenchmarkSpec, config: EngineConfig | None
) -> tuple[np.ndarray, np.ndarray, float, int, int]:
    """TTFT and TPOT (ms) of the completed requests, duration (s), output and prompt tokens."""
    eng = FleetEngine(latency, config, timeout_s=BENCH_TIMEOUT_S, request_capacity=spec.num_prompts)
    eng.add_replica(0.0, now_s=0.0)
    prompt, output = spec.sizes()
    eng.add_requests(spec.arrivals_s(), prompt, output)
    if spec.max_concurrency is not None:
        eng.hold_concurrency(spec.max_concurrency)
    st = eng.advance(0.0, 1e12)
    done = st.done_ttft_s.size
    if done == 0:
        raise ValueError(f"no request completed: {spec}")
    return (
        st.done_ttft_s * 1e3,
        st.done_tpot_s * 1e3,
        max(eng.last_completion_s, 1e-9),
        int(st.generated_tokens),
        int(prompt.sum()),
    )


@dataclass(frozen=True)
class MeasuredPoint:
    """A measured benchmark: its spec and the TTFT/TPOT it reported (either may be missing)."""

    spec: BenchmarkSpec
    ttft_ms: float | None
    tpot_ms: float | None
    statistic: str = "mean"  # which of the run's statistics the numbers are: mean or median
    label: str = ""


def with_coefficients(latency: LatencyModel, coef: dict[str, float]) -> LatencyModel:
    return latency.model_copy(update={k: float(v) for k, v in coef.items()})


def coefficients(latency: LatencyModel) -> dict[str, float]:
    return {k: float(getattr(latency, k)) for k in ITERATION_FIELDS}


def simulate_points(
    latency: LatencyModel, points: Sequence[MeasuredPoint], config: EngineConfig | None = None
) -> list[BenchmarkResult]:
    return [simulate_benchmark(latency, p.spec, config) for p in points]


def log_errors(
    latency: LatencyModel, points: Sequence[MeasuredPoint], config: EngineConfig | None = None
) -> np.ndarray:
    """log(sim / measured) of each point's TTFT then TPOT (the measured ones only)."""
    res = []
    for p, r in zip(points, simulate_points(latency, points, config), strict=True):
        if p.ttft_ms is not None:
            res.append(math.log(r.stat("ttft", p.statistic) / p.ttft_ms))
        if p.tpot_ms is not None:
            res.append(math.log(r.stat("tpot", p.statistic) / p.tpot_ms))
    return np.asarray(res)


@dataclass(frozen=True)
class PointError:
    label: str
    metric: str  # ttft or tpot
    measured_ms: float
    simulated_ms: float

    @property
    def error_pct(self) -> float:
        return 100.0 * (self.simulated_ms - self.measured_ms) / self.measured_ms


def point_errors(
    latency: LatencyModel, points: Sequence[MeasuredPoint], config: EngineConfig | None = None
) -> list[PointError]:
    out = []
    for p, r in zip(points, simulate_points(latency, points, config), strict=True):
        for metric, measured in (("ttft", p.ttft_ms), ("tpot", p.tpot_ms)):
            if measured is not None:
                out.append(PointError(p.label, metric, measured, r.stat(metric, p.statistic)))
    return out


def mape_pct(errors: Sequence[PointError], metric: str) -> float:
    e = [abs(x.error_pct) for x in errors if x.metric == metric]
    return float(np.mean(e)) if e else math.nan


@dataclass(frozen=True)
class BenchFit:
    """The fitted coefficients (LatencyModel field names, ms) and how well they match."""

    coef: dict[str, float]
    start: dict[str, float]
    ttft_mape_pct: float
    tpot_mape_pct: float
    start_ttft_mape_pct: float
    start_tpot_mape_pct: float
    n_points: int
    evaluations: int
    fitted: tuple[str, ...] = field(default=ITERATION_FIELDS)

    def latency(self, base: LatencyModel) -> LatencyModel:
        return with_coefficients(base, self.coef)


def fit_iteration_model(
    base: LatencyModel,
    points: Sequence[MeasuredPoint],
    *,
    fit: Sequence[str] = ITERATION_FIELDS,
    config: EngineConfig | None = None,
    max_nfev: int = 60,
) -> BenchFit:
    """Choose `fit` (LatencyModel fields of the iteration model) so the engine's simulated
    benchmarks match `points`; the other fields stay as in `base`."""
    from scipy.optimize import least_squares

    unknown = set(fit) - set(ITERATION_FIELDS)
    if unknown:
        raise ValueError(f"not iteration-model fields: {sorted(unknown)}")
    if not points:
        raise ValueError("no points to fit")
    names = tuple(fit)
    start = coefficients(base)
    x0 = np.array([math.log(max(start[k], START_FLOOR[k])) for k in names])
    lo, hi = x0 - LOG_SPAN, x0 + 6.0

    def model(x: np.ndarray) -> LatencyModel:
        return with_coefficients(base, dict(zip(names, np.exp(x), strict=True)))

    def resid(x: np.ndarray) -> np.ndarray:
        return log_errors(model(x), points, config)

    sol = least_squares(resid, x0, bounds=(lo, hi), diff_step=0.05, x_scale=1.0, max_nfev=max_nfev)
    coef = dict(start)
    for k, v in zip(names, np.exp(sol.x), strict=True):
        # a coefficient driven to the floor of its range is 0 (the data see no such term)
        coef[k] = (
            0.0
            if v <= math.exp(math.log(max(start[k], START_FLOOR[k])) - LOG_SPAN + 0.5)
            else float(v)
        )
    fitted = with_coefficients(base, coef)
    e_fit = point_errors(fitted, points, config)
    e_start = point_errors(base, points, config)
    return BenchFit(
        coef=coef,
        start=start,
        ttft_mape_pct=mape_pct(e_fit, "ttft"),
        tpot_mape_pct=mape_pct(e_fit, "tpot"),
        start_ttft_mape_pct=mape_pct(e_start, "ttft"),
        start_tpot_mape_pct=mape_pct(e_start, "tpot"),
        n_points=len(points),
        evaluations=int(sol.nfev),
        fitted=names,
    )
