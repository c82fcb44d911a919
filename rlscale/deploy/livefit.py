"""`rlscale profiles fit --prometheus`: a `ServiceProfile`'s latency model from a live service.

What is read: the raw samples of the service's vLLM series over a range (both spellings, through
`rlscale.deploy.export.PrometheusRaw`, the same reader as `traces export`), cut into steps per
pod. Per (pod, step) with enough decoded tokens:

| quantity                      | from                                                            |
|-------------------------------|-----------------------------------------------------------------|
| T, mean time per output token | Δ`inter_token_latency_seconds_sum` / Δ`_count` (else the older `time_per_output_token_seconds`) |
| c, requests in the batch      | mean of `num_requests_running` samples in the step              |
| r, prompt tokens per second   | Δ`prompt_tokens_total` / step (over `time_scale`)               |
| prompt / output tokens        | Δ`prompt_tokens_total` / Δ`time_to_first_token_seconds_count` (one per admitted request); Δ`generation_tokens_total` / Δ`request_success_total` (aborts left out) |
| KV-cache usage                | mean of `kv_cache_usage_perc` (else `gpu_cache_usage_perc`)     |
| TTFT mean                     | Δ`time_to_first_token_seconds_sum` / Δ`_count`                   |

The fits, each in the serving model's own terms (`rlscale.serving.model`: an iteration of c
decoding requests of context ctx takes (base + (seq + kv_tok x ctx) x c) / (1 - pf x r), where
pf x r is the GPU share the prompts arriving alongside take):

1. **TPOT against running requests**: T = base + seq x c + kv_tok x (ctx x c) + pf x (r x T), a
   non-negative least-squares fit over the (pod, step) points weighted by their decoded tokens.
   `pf` is the prefill cost per prompt token: the **prefill throughput** is 1 / pf tokens/s per
   replica. A coefficient the range cannot tell apart from another (the sizes never varied, so
   ctx x c is c times a constant; the prompt rate moved in lockstep with c) is kept at the base
   profile's value and the rest is fitted around it; the profile's sources say which.
2. **KV-cache capacity**: `cache_config_info`'s `num_gpu_blocks` x `block_size` when vLLM exports
   it; else from the usage gauge, usage = c x ctx / capacity, a least-squares slope through 0 over
   the steps where the cache is neither idle (< 2 %) nor full (> 98 %).
3. **Prefill overhead** (`prefill_base_ms`, off the GPU: API server, tokenisation): the median of
   TTFT - (the rest of an iteration + the next one + the request's own prompt) over steps with
   nothing waiting.

`prefill_ms_per_token` (the profile's own closed-form TTFT reading) is scaled by the fitted pf
over the base's; `max_batch` is raised to the most requests a pod ran at once if that is more.
Everything else (cold start, price, GPU) is the base profile's: fit the cold start with
`rlscale profiles cold-start`.

Time: a `rlscale sandbox` runs `time_scale` times faster than the wall clock; its rates are
divided by it (`LiveFitRequest.time_scale`), latencies are in simulated seconds already.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rlscale.config import validate_model
from rlscale.deploy.export import (
    RawReader,
    SeriesSamples,
    _life,
    _scrape_interval,
    counter_cumulative,
    cumulative_at,
    vllm_matcher,
)
from rlscale.errors import InputError
from rlscale.profiles.model import ServiceProfile

COUNTERS: tuple[str, ...] = (
    "inter_token_latency_seconds_sum",
    "inter_token_latency_seconds_count",
    "time_per_output_token_seconds_sum",
    "time_per_output_token_seconds_count",
    "time_to_first_token_seconds_sum",
    "time_to_first_token_seconds_count",
    "prompt_tokens_total",
    "generation_tokens_total",
    "request_success_total",
)
GAUGES: tuple[str, ...] = (
    "num_requests_running",
    "num_requests_waiting",
    "kv_cache_usage_perc",
    "gpu_cache_usage_perc",
    "cache_config_info",
)
# a (pod, step) point needs this many decoded tokens: a mean of a few is noise
MIN_TOKENS_PER_POINT = 50.0
MIN_POINTS = 6
# a regressor is "not identifiable" when, after the others, it keeps less than this share of its
# own variation (1 - R^2 of it regressed on the other columns)
MIN_OWN_VARIATION = 0.02
KV_IDLE, KV_FULL = 0.02, 0.98
_POD_LABELS_DROPPED = ("finished_reason",)


@dataclass(frozen=True)
class LiveFitRequest:
    """The pods `selector` picks, from `start_s` to `end_s` (Unix seconds), in `step_s` steps."""

    selector: str
    start_s: float
    end_s: float
    step_s: float = 60.0
    time_scale: float = 1.0
    source: str = "prometheus"

    def __post_init__(self) -> None:
        if not (math.isfinite(self.step_s) and self.step_s > 0):
            raise InputError("--step-s", f"expected a step > 0 seconds, got {self.step_s}")
        if not self.end_s - self.start_s >= MIN_POINTS * self.step_s:
            raise InputError(
                "--end",
                f"the range {self.start_s:.3f}..{self.end_s:.3f} holds fewer than {MIN_POINTS} "
                f"steps of {self.step_s:g} s; widen it or shorten --step-s",
            )
        if not self.time_scale > 0:
            raise InputError("--time-scale", f"expected > 0, got {self.time_scale}")

    @property
    def edges_s(self) -> np.ndarray:
        n = int(math.floor((self.end_s - self.start_s) / self.step_s + 1e-9))
        return self.start_s + self.step_s * np.arange(n + 1)


@dataclass(frozen=True)
class PodSteps:
    """One row per (pod, step) with enough decoded tokens (module docstring's table)."""

    pod: list[str]
    tpot_s: np.ndarray
    tokens: np.ndarray  # decoded tokens behind tpot_s (the weight)
    running: np.ndarray
    waiting: np.ndarray
    prompt_tokens_per_s: np.ndarray
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    kv_usage: np.ndarray
    ttft_s: np.ndarray
    kv_capacity_tokens: list[float]  # from cache_config_info, one per pod that exports it
    tpot_metric: str

    @property
    def context_tokens(self) -> np.ndarray:
        return self.prompt_tokens + 0.5 * self.output_tokens

    def __len__(self) -> int:
        return len(self.tpot_s)


def _pod_key(s: SeriesSamples) -> tuple[tuple[str, str], ...]:
    return tuple((k, v) for k, v in s.labels if k not in _POD_LABELS_DROPPED)


def _pod_name(key: tuple[tuple[str, str], ...]) -> str:
    d = dict(key)
    return d.get("pod") or d.get("instance") or ",".join(f"{k}={v}" for k, v in key)


def pod_steps(series: Sequence[SeriesSamples], req: LiveFitRequest) -> PodSteps:
    """Cut every pod's series into the request's steps (see the module docstring)."""
    edges = req.edges_s
    n = len(edges) - 1
    fetch = (float(edges[0]), float(edges[-1]))
    pods: dict[tuple[tuple[str, str], ...], dict[str, list[SeriesSamples]]] = {}
    for s in series:
        # cache_config_info carries the engine's config as labels, so it is no pod's key
        if len(s.t_s) and s.name != "cache_config_info":
            pods.setdefault(_pod_key(s), {}).setdefault(s.name, []).append(s)
    every = [s for s in series if len(s.t_s) > 1]
    interval_s = _scrape_interval(every) if every else 15.0
    gap_s = 2.5 * interval_s

    def counter(group: dict[str, list[SeriesSamples]], name: str) -> np.ndarray | None:
        found = group.get(name)
        if not found:
            return None
        total = np.zeros(n)
        for s in found:
            life = _life(s, fetch, interval_s, gap_s)
            t, cum, resets = counter_cumulative(s, life)
            d = np.diff(cumulative_at(edges, t, cum))
            # only steps the series covers, with no reset and no scrape gap inside
            bad = (edges[:-1] < s.t_s[0]) | (edges[1:] > s.t_s[-1])
            for a, b in [*life.gaps, *((r - interval_s, r) for r in resets)]:
                bad |= (edges[:-1] < b) & (edges[1:] > a)
            total += np.where(bad, np.nan, d)
        return total

    def gauge(group: dict[str, list[SeriesSamples]], name: str) -> np.ndarray | None:
        found = group.get(name)
        if not found:
            return None
        out = np.zeros(n)
        for s in found:
            k = np.searchsorted(edges, s.t_s, side="right") - 1
            inside = (k >= 0) & (k < n)
            sums = np.bincount(k[inside], weights=s.value[inside], minlength=n)
            counts = np.bincount(k[inside], minlength=n)
            with np.errstate(invalid="ignore", divide="ignore"):
                out += np.where(counts > 0, sums / counts, np.nan)
        return out

    rows: dict[str, list[Any]] = {k: [] for k in PodSteps.__dataclass_fields__}
    rows.pop("kv_capacity_tokens")
    rows.pop("tpot_metric")
    kv_caps = _cache_capacity([s for s in series if s.name == "cache_config_info"])
    tpot_metric = ""
    for key, group in sorted(pods.items()):
        metric = (
            "inter_token_latency_seconds"
            if group.get("inter_token_latency_seconds_count")
            else "time_per_output_token_seconds"
        )
        tpot_sum = counter(group, f"{metric}_sum")
        tpot_count = counter(group, f"{metric}_count")
        running = gauge(group, "num_requests_running")
        if tpot_sum is None or tpot_count is None or running is None:
            continue
        tpot_metric = tpot_metric or metric
        nan = np.full(n, np.nan)
        waiting = _or(gauge(group, "num_requests_waiting"), np.zeros(n))
        kv = _or(
            gauge(group, "kv_cache_usage_perc"), _or(gauge(group, "gpu_cache_usage_perc"), nan)
        )
        prompt = _or(counter(group, "prompt_tokens_total"), nan)
        gen = _or(counter(group, "generation_tokens_total"), nan)
        ttft_sum = _or(counter(group, "time_to_first_token_seconds_sum"), nan)
        ttft_count = _or(counter(group, "time_to_first_token_seconds_count"), nan)
        done = _finished(group, counter, n)
        with np.errstate(invalid="ignore", divide="ignore"):
            tpot = tpot_sum / tpot_count
            isl = prompt / ttft_count
            osl = gen / done
            ttft = ttft_sum / ttft_count
        ok = (
            (tpot_count >= MIN_TOKENS_PER_POINT)
            & np.isfinite(tpot)
            & (tpot > 0)
            & np.isfinite(running)
            & np.isfinite(prompt)
        )
        name = _pod_name(key)
        for i in np.flatnonzero(ok):
            rows["pod"].append(name)
            rows["tpot_s"].append(tpot[i])
            rows["tokens"].append(tpot_count[i])
            rows["running"].append(running[i])
            rows["waiting"].append(waiting[i])
            rows["prompt_tokens_per_s"].append(prompt[i] / req.step_s / req.time_scale)
            rows["prompt_tokens"].append(isl[i])
            rows["output_tokens"].append(osl[i])
            rows["kv_usage"].append(kv[i])
            rows["ttft_s"].append(ttft[i])
    arrays = {k: np.asarray(v, dtype=float) for k, v in rows.items() if k != "pod"}
    return PodSteps(
        pod=rows["pod"],
        kv_capacity_tokens=kv_caps,
        tpot_metric=tpot_metric,
        **arrays,  # type: ignore[arg-type]
    )


def _or(a: np.ndarray | None, b: np.ndarray) -> np.ndarray:
    return b if a is None else a


def _finished(group: dict[str, list[SeriesSamples]], counter: Any, n: int) -> np.ndarray:
    """Δ requests finished with output (every finished_reason but abort) per step."""
    keep = [
        s
        for s in group.get("request_success_total", [])
        if dict(s.labels).get("finished_reason") != "abort"
    ]
    if not keep:
        return np.full(n, np.nan)
    return counter({"request_success_total": keep}, "request_success_total")


def _cache_capacity(series: Sequence[SeriesSamples]) -> list[float]:
    """num_gpu_blocks x block_size of every `cache_config_info` series (one per engine)."""
    out = []
    for s in series:
        d = dict(s.labels)
        try:
            out.append(float(d["num_gpu_blocks"]) * float(d["block_size"]))
        except (KeyError, ValueError):
            continue
    return out


# --- the fits ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class TpotFit:
    base_ms: float
    seq_ms: float
    seq_per_ktok_ms: float
    prefill_token_ms: float
    kept: tuple[str, ...]  # coefficients held at the base profile's value (not identifiable)
    mape: float
    points: int
    pods: int

    @property
    def prefill_tokens_per_s(self) -> float:
        return 1e3 / self.prefill_token_ms if self.prefill_token_ms > 0 else math.inf


_TPOT_TERMS = (
    "tpot_base_ms",
    "tpot_ms_per_seq",
    "tpot_ms_per_seq_per_ktok",
    "tpot_ms_per_prefill_token",
)


def _own_variation(x: np.ndarray, others: np.ndarray, w: np.ndarray) -> float:
    """1 - R^2 of column `x` regressed (weighted) on `others`: the share of it they do not explain."""
    sw = np.sqrt(w)
    coef, *_ = np.linalg.lstsq(others * sw[:, None], x * sw, rcond=None)
    resid = x - others @ coef
    total = np.average(np.square(x - np.average(x, weights=w)), weights=w)
    return float(np.average(np.square(resid), weights=w) / total) if total > 0 else 0.0


def fit_tpot(
    steps: PodSteps, base: ServiceProfile, prefill_token_ms: float | None = None
) -> TpotFit:
    """T = base + seq c + kv_tok (ctx c) + pf (r T), non-negative, weighted by decoded tokens;
    pf fixed at `prefill_token_ms` when given (a prefill benchmark of the same engine)."""
    from scipy.optimize import nnls

    if len(steps) < MIN_POINTS:
        raise InputError(
            "prometheus",
            f"{len(steps)} (pod, step) points with >= {MIN_TOKENS_PER_POINT:g} decoded tokens; "
            f"need {MIN_POINTS}: widen the range, shorten --step-s or pick busier pods",
            field="selector",
        )
    t, c, w = steps.tpot_s, steps.running, steps.tokens
    ctx = np.where(
        np.isfinite(steps.context_tokens),
        steps.context_tokens,
        base.typical_prompt_tokens + base.typical_output_tokens / 2,
    )
    # seconds per unit of each regressor, as the serving model's coefficients (`_Coeffs`)
    x = np.column_stack([np.ones_like(t), c, ctx * c, steps.prompt_tokens_per_s * t])
    lat = base.latency
    base_coef = np.array(
        [
            lat.tpot_base_ms / 1e3,
            lat.tpot_ms_per_seq / 1e3,
            lat.tpot_ms_per_seq_per_ktok / 1e6,
            lat.tpot_ms_per_prefill_token / 1e3,
        ]
    )
    if prefill_token_ms is not None:
        base_coef[3] = prefill_token_ms / 1e3
    free = [0, 1]
    kept = [3] if prefill_token_ms is not None else []
    for j in (2,) if prefill_token_ms is not None else (2, 3):
        if _own_variation(x[:, j], x[:, [0, 1]], w) >= MIN_OWN_VARIATION:
            free.append(j)
        else:
            kept.append(j)
    # a free pair that is collinear with each other: keep the prefill term at the base's
    if 2 in free and 3 in free and _own_variation(x[:, 3], x[:, [0, 1, 2]], w) < MIN_OWN_VARIATION:
        free.remove(3)
        kept.append(3)
    y = t - x[:, kept] @ base_coef[kept] if kept else t
    sw = np.sqrt(w)
    coef_free, _ = nnls(x[:, free] * sw[:, None], y * sw)
    coef = base_coef.copy()
    coef[free] = coef_free
    pred = x @ coef
    mape = float(np.average(np.abs(pred / t - 1), weights=w))
    return TpotFit(
        base_ms=float(coef[0] * 1e3),
        seq_ms=float(coef[1] * 1e3),
        seq_per_ktok_ms=float(coef[2] * 1e6),
        prefill_token_ms=float(coef[3] * 1e3),
        kept=tuple(_TPOT_TERMS[j] for j in sorted(kept) if j != 3 or prefill_token_ms is None),
        mape=mape,
        points=len(t),
        pods=len(set(steps.pod)),
    )


@dataclass(frozen=True)
class KvFit:
    tokens: float
    how: str
    error: float  # relative spread (config info across pods) or MAPE (usage fit)
    points: int


def fit_kv(steps: PodSteps) -> KvFit | None:
    """KV-cache capacity in tokens (module docstring, fit 2); None when nothing says."""
    if steps.kv_capacity_tokens:
        caps = np.array(steps.kv_capacity_tokens)
        med = float(np.median(caps))
        return KvFit(
            med,
            "cache_config_info num_gpu_blocks x block_size",
            float(np.max(np.abs(caps / med - 1))),
            len(caps),
        )
    load = steps.running * steps.context_tokens
    u = steps.kv_usage
    ok = np.isfinite(load) & np.isfinite(u) & (u > KV_IDLE) & (u < KV_FULL) & (load > 0)
    if ok.sum() < MIN_POINTS:
        return None
    a, b, w = load[ok], u[ok], steps.tokens[ok]
    slope = float(np.sum(w * a * b) / np.sum(w * a * a))  # usage per token in flight
    if not slope > 0:
        return None
    mape = float(np.average(np.abs(slope * a / b - 1), weights=w))
    return KvFit(
        1.0 / slope,
        "kv_cache_usage_perc against running x (prompt + output / 2) tokens",
        mape,
        int(ok.sum()),
    )


def fit_overhead_ms(steps: PodSteps, tpot: TpotFit) -> float | None:
    """Prefill overhead (ms): the median of TTFT - (1.5 T + pf x isl) over the steps with
    nothing waiting (the rest of the iteration in progress, T / 2 on average, the next one, T,
    carrying the prompt, and the prompt's own GPU time, pf from the TPOT fit)."""
    pf_s = tpot.prefill_token_ms / 1e3
    over = steps.ttft_s - 1.5 * steps.tpot_s - pf_s * steps.prompt_tokens
    ok = np.isfinite(over) & (steps.waiting < 0.5)
    if ok.sum() < 3:
        return None
    return float(max(_weighted_median(over[ok], steps.tokens[ok]) * 1e3, 0.0))


def _weighted_median(x: np.ndarray, w: np.ndarray) -> float:
    order = np.argsort(x)
    cum = np.cumsum(w[order])
    return float(x[order][np.searchsorted(cum, cum[-1] / 2)])


@dataclass(frozen=True)
class LiveFit:
    tpot: TpotFit
    kv: KvFit | None
    overhead_ms: float | None
    max_running: float
    tpot_metric: str
    request: LiveFitRequest
    meta: dict[str, Any] = field(default_factory=dict)

    def error_text(self) -> str:
        parts = [
            f"TPOT MAPE {100 * self.tpot.mape:.1f} % over {self.tpot.points} (pod, step) points "
            f"of {self.tpot.pods} pods"
        ]
        if self.kv is not None:
            parts.append(
                f"KV capacity {self.kv.tokens:,.0f} tokens ({self.kv.how}; error {100 * self.kv.error:.1f} %)"
            )
        return "; ".join(parts)


def fit_profile(
    reader: RawReader, req: LiveFitRequest, base: ServiceProfile
) -> tuple[ServiceProfile, LiveFit]:
    """`base` with its latency model fitted from the live service, validated, with sources."""
    series = reader.samples((*COUNTERS, *GAUGES), req.selector, req.start_s, req.end_s)
    if not any(
        s.name.endswith(
            ("inter_token_latency_seconds_count", "time_per_output_token_seconds_count")
        )
        for s in series
    ):
        raise InputError(
            req.source,
            f"no vLLM inter_token_latency / time_per_output_token histogram matches "
            f"{vllm_matcher(['...'], req.selector)} in the range",
            field="selector",
        )
    steps = pod_steps(series, req)
    tpot = fit_tpot(steps, base)
    fit = LiveFit(
        tpot=tpot,
        kv=fit_kv(steps),
        overhead_ms=fit_overhead_ms(steps, tpot),
        max_running=float(np.nanmax(steps.running)) if len(steps) else 0.0,
        tpot_metric=steps.tpot_metric,
        request=req,
    )
    return with_live_fit(base, fit), fit


def with_live_fit(base: ServiceProfile, fit: LiveFit) -> ServiceProfile:
    """`base` with the fitted latency coefficients and its sources saying where from."""
    from datetime import UTC, datetime

    lat = base.latency.model_dump()
    t = fit.tpot
    lat.update(
        tpot_base_ms=round(t.base_ms, 5),
        tpot_ms_per_seq=round(t.seq_ms, 6),
        tpot_ms_per_seq_per_ktok=round(t.seq_per_ktok_ms, 6),
        tpot_ms_per_prefill_token=round(t.prefill_token_ms, 6),
    )
    if "tpot_ms_per_prefill_token" not in t.kept and base.latency.tpot_ms_per_prefill_token > 0:
        ratio = t.prefill_token_ms / base.latency.tpot_ms_per_prefill_token
        lat["prefill_ms_per_token"] = round(max(base.latency.prefill_ms_per_token * ratio, 1e-6), 6)
    if fit.overhead_ms is not None:
        lat["prefill_base_ms"] = round(fit.overhead_ms, 3)
    if fit.kv is not None:
        lat["kv_cache_tokens"] = int(round(fit.kv.tokens))
    lat["max_batch"] = max(int(base.latency.max_batch), int(math.ceil(fit.max_running)))
    r = fit.request

    def iso(x: float) -> str:
        return (
            datetime.fromtimestamp(x, tz=UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        )

    sources = {
        k: v
        for k, v in base.sources.items()
        if not k.startswith(("latency", "tpot", "kv_cache", "prefill"))
    }
    sources["latency"] = (
        f"fitted from {r.source} {{{r.selector}}} {iso(r.start_s)}..{iso(r.end_s)}, {r.step_s:g} s "
        f"steps: TPOT ({fit.tpot_metric}) against running requests, context and prompt rate"
        + (f"; kept from {base.name}: {', '.join(t.kept)}" if t.kept else "")
        + f"; prefill throughput {t.prefill_tokens_per_s:,.0f} tokens/s per replica "
        + "(the TPOT fit's prompt-rate term)"
        + ("; prefill overhead from TTFT at no queue" if fit.overhead_ms is not None else "")
    )
    if fit.kv is not None:
        sources["kv_cache_tokens"] = f"{fit.kv.how}, {fit.kv.points} points"
    sources["latency_fit_error"] = fit.error_text()
    data = base.model_dump()
    data["latency"] = lat
    data["sources"] = sources
    return validate_model(data, ServiceProfile, where=f"live profile from {r.source}")
