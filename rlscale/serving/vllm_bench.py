"""`vllm bench serve` result files (`--save-result`): read one into the benchmark it ran and what
it measured, and write one from a simulated run (test fixtures).

The fields are vLLM's (vllm/benchmarks/serve.py, `benchmarks/benchmark_serving.py` before it):
`request_rate` (a number, or the string "inf"), `max_concurrency` (an int, or null), `completed`,
`total_input_tokens`, `total_output_tokens`, `duration`, `request_throughput`,
`output_throughput`, and `{mean,median,p99}_{ttft,tpot,itl}_ms`. The request lengths are the
run's means (total tokens / completed): a result file does not say how they were spread, which
the caller supplies as vLLM's `--random-range-ratio`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from rlscale.errors import InputError
from rlscale.profiles.model import ServiceProfile
from rlscale.serving.benchfit import BenchFit, BenchmarkResult, BenchmarkSpec, MeasuredPoint

STATS = ("mean", "median", "p99")


@dataclass(frozen=True)
class VllmBenchRun:
    """One result file: the benchmark it describes and what it measured (ms)."""

    path: str
    spec: BenchmarkSpec
    measured_ms: dict[str, float]  # e.g. "mean_ttft_ms" -> 123.4
    request_throughput_rps: float
    output_throughput_tok_s: float

    def point(self, statistic: str = "mean", open_loop_repeats: int = 8) -> MeasuredPoint:
        """The run as a point to fit. An uncapped (Poisson) run is simulated `open_loop_repeats`
        times with different arrival samples, pooled: its own sample is unknown, and one
        simulated sample of 64 requests is a noisy estimate of the run's statistics (in the
        fixture test, 7 % TTFT MAPE and 13 % off in the TTFT overhead)."""
        spec = self.spec
        if spec.max_concurrency is None:
            spec = replace(spec, repeats=open_loop_repeats)
        return MeasuredPoint(
            spec,
            self.measured_ms[f"{statistic}_ttft_ms"],
            self.measured_ms[f"{statistic}_tpot_ms"],
            statistic,
            f"{Path(self.path).name}: {self.describe()}",
        )

    def describe(self) -> str:
        s = self.spec
        load = (
            f"max_concurrency {s.max_concurrency}"
            if s.max_concurrency is not None
            else f"request_rate {s.request_rate_rps:g}/s"
        )
        if s.max_concurrency is not None and not math.isinf(s.request_rate_rps):
            load += f", request_rate {s.request_rate_rps:g}/s"
        return f"{load}, {s.prompt_tokens}/{s.output_tokens} tokens, {s.num_prompts} requests"


def _number(data: dict[str, Any], path: str, key: str, *, positive: bool = True) -> float:
    if key not in data:
        raise InputError(path, "missing (a vllm bench serve --save-result file has it)", field=key)
    v = data[key]
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise InputError(path, f"expected a finite number, got {v!r}", field=key)
    if positive and v <= 0:
        raise InputError(path, f"expected a number > 0, got {v!r}", field=key)
    return float(v)


def parse_vllm_bench(
    data: Any, path: str, *, range_ratio: float = 0.0, seed: int = 0
) -> VllmBenchRun:
    if not isinstance(data, dict):
        raise InputError(path, f"expected a JSON object, got {type(data).__name__}")
    rate_raw = data.get("request_rate", "inf")
    if rate_raw == "inf" or (isinstance(rate_raw, float) and math.isinf(rate_raw)):
        rate = math.inf
    else:
        rate = _number(data, path, "request_rate")
    conc_raw = data.get("max_concurrency")
    if conc_raw is None:
        conc = None
    elif isinstance(conc_raw, int) and not isinstance(conc_raw, bool) and conc_raw >= 1:
        conc = conc_raw
    else:
        raise InputError(
            path, f"expected an integer >= 1 or null, got {conc_raw!r}", field="max_concurrency"
        )
    if conc is None and math.isinf(rate):
        raise InputError(
            path,
            "request_rate is inf and max_concurrency is null: the run's load is not known",
            field="request_rate",
        )
    completed = _number(data, path, "completed")
    if not completed.is_integer():
        raise InputError(path, f"expected a whole number, got {completed!r}", field="completed")
    isl = _number(data, path, "total_input_tokens") / completed
    osl = _number(data, path, "total_output_tokens") / completed
    measured = {}
    for m in ("ttft", "tpot"):
        for s in STATS:
            key = f"{s}_{m}_ms"
            measured[key] = _number(data, path, key)
    for s in STATS:  # ITL is reported but not fitted; a run without it is still usable
        key = f"{s}_itl_ms"
        if key in data:
            measured[key] = _number(data, path, key, positive=False)
    spec = BenchmarkSpec(
        prompt_tokens=max(1, round(isl)),
        output_tokens=max(1, round(osl)),
        max_concurrency=conc,
        request_rate_rps=rate,
        num_prompts=int(completed),
        range_ratio=range_ratio,
        seed=seed,
    )
    return VllmBenchRun(
        path=path,
        spec=spec,
        measured_ms=measured,
        request_throughput_rps=_number(data, path, "request_throughput"),
        output_throughput_tok_s=_number(data, path, "output_throughput"),
    )


def read_vllm_bench(path: Path | str, *, range_ratio: float = 0.0, seed: int = 0) -> VllmBenchRun:
    p = str(path)
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise InputError(p, "file not found") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise InputError(p, f"not JSON: {e}") from None
    return parse_vllm_bench(data, p, range_ratio=range_ratio, seed=seed)


def vllm_bench_json(spec: BenchmarkSpec, result: BenchmarkResult) -> dict[str, Any]:
    """A result file as `vllm bench serve --save-result` writes it, for a simulated run."""
    out: dict[str, Any] = {
        "backend": "vllm",
        "num_prompts": spec.num_prompts,
        "request_rate": "inf" if math.isinf(spec.request_rate_rps) else spec.request_rate_rps,
        "burstiness": 1.0,
        "max_concurrency": spec.max_concurrency,
        "duration": result.duration_s,
        "completed": result.completed,
        "total_input_tokens": result.total_input_tokens,
        "total_output_tokens": result.total_output_tokens,
        "request_throughput": result.request_throughput_rps,
        "output_throughput": result.output_throughput_tok_s,
        "total_token_throughput": (result.total_input_tokens + result.total_output_tokens)
        / result.duration_s,
    }
    for m in ("ttft", "tpot"):
        for s in STATS:
            out[f"{s}_{m}_ms"] = float(getattr(result, f"{m}_ms_{s}"))
    # the engine keeps no per-token gaps, so of ITL's statistics only the mean is written
    out["mean_itl_ms"] = result.itl_ms_mean
    return out


def fitted_profile(
    base: ServiceProfile, runs: Sequence[VllmBenchRun], fit: BenchFit, name: str | None = None
) -> ServiceProfile:
    """`base` with the fitted iteration coefficients, its sources naming the files and the fit
    error (validated: a coefficient the fit cannot make valid is an error, not a file)."""
    files = ", ".join(Path(r.path).name for r in runs)
    data = base.model_dump(mode="json")
    data["latency"].update({k: float(f"{v:.5g}") for k, v in fit.coef.items()})
    if name:
        data["name"] = name
    data["sources"] = {
        **base.sources,
        "latency.tpot_*": (
            f"vllm bench serve results {files}: each run simulated in the request-level engine "
            "(rlscale.serving.benchfit), least squares on log errors of mean TTFT and TPOT"
        ),
        "latency.prefill_base_ms": (
            "same fit: the TTFT overhead off the GPU; prefill_ms_per_token and "
            f"prefill_interference are {base.name}'s (the engine does not use them)"
        ),
        "latency.kv_cache_tokens": f"from the base profile {base.name} (a result file does not say)",
        "latency.max_batch": f"from the base profile {base.name} (a result file does not say)",
        "fit_error": (
            f"{len(runs)} runs: TTFT MAPE {fit.ttft_mape_pct:.1f} %, TPOT MAPE "
            f"{fit.tpot_mape_pct:.1f} % (base profile's coefficients: "
            f"{fit.start_ttft_mape_pct:.1f} %, {fit.start_tpot_mape_pct:.1f} %)"
        ),
    }
    return ServiceProfile.model_validate(data)
