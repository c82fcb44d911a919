"""Default PromQL for every `IntervalMetrics` field the controller reads from Prometheus, and the
small template language the config's overrides use.

Templates name their inputs as `{{selector}}`, `{{gpu_selector}}`, `{{window}}`, `{{namespace}}`
and `{{deployment}}` (double braces: PromQL's own `{...}` stays as written). The default
`selector` picks the target's pods by the name a Deployment gives them, `<deployment>-<rs hash>-
<suffix>`, and the namespace; Prometheus anchors regexes, so `llm` never matches `llm-large`'s
pods.

Spelling: vLLM names its series `vllm:...`, but prometheus_client >= 0.23 serves them as
`vllm_...` to an OpenMetrics scrape, so every vLLM selector matches both
(`{__name__=~"vllm[:_]num_requests_waiting"}`). The two never coexist for one pod.

| field | default | why |
|---|---|---|
| arrival_rps | finished + d(waiting)/dt + d(running)/dt | vLLM has no arrival counter; arrivals = requests that left + growth of the requests in the server (by conservation). "Left" is `request_success_total` over every `finished_reason`: stop and length, and `abort` for a client that gave up, which is what keeps the estimate true under overload, when the queue is full and as many clients give up as arrive beyond capacity. vLLM V1 has the `abort` label, but releases that never count client aborts exist (vLLM #31503, 0.13): with those the estimate reads completions only at saturation; override `arrival_rps` with a gateway's request counter there (the sandbox emulates both: `count_aborts`). Two `deriv`s, not one over a name regex: `deriv` drops the name and waiting/running of one pod would collide |
| prompt/output_tokens_per_s | rate of the token counters | |
| requests_waiting/running | sum over pods | |
| kv_cache_usage | mean over pods, `kv_` or the older `gpu_cache_usage_perc` | |
| gpu_utilization_pct | mean of `DCGM_FI_DEV_GPU_UTIL` | see `gpu_selector` in the README: DCGM's own pod labels arrive as `exported_pod` unless `honorLabels: true` |
| ttft/tpot p50/p95/p99 | `histogram_quantile` over the summed bucket rates | TPOT from `time_per_output_token`, else the newer `inter_token_latency` (never summed together: their buckets may differ). Not overridden, the three percentiles of a histogram come from one query of its bucket rates (`HISTOGRAMS`) |

Pod coverage (`coverage_queries`, not fields): how many pods report, how many have a rate
window covered by samples, how many were seen inside the window, how many are frozen; the
controller holds scale-down on partial windows and holds on frozen series (`decide`).

All fields of one target go to Prometheus as one query (`combined`): each field's expression is
labelled `rlscale_field="<field>"` with `label_replace` and the results joined with `or`, so a
100-target tick is 100 HTTP requests, not 1,400.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

# The IntervalMetrics fields that come from Prometheus (time and replica counts come from the
# clock and the API server).
QUERY_FIELDS: tuple[str, ...] = (
    "arrival_rps",
    "prompt_tokens_per_s",
    "output_tokens_per_s",
    "requests_waiting",
    "requests_running",
    "kv_cache_usage",
    "gpu_utilization_pct",
    "ttft_p50_s",
    "ttft_p95_s",
    "ttft_p99_s",
    "tpot_p50_s",
    "tpot_p95_s",
    "tpot_p99_s",
)
LATENCY_FIELDS: frozenset[str] = frozenset(
    f for f in QUERY_FIELDS if f.startswith(("ttft_", "tpot_"))
)
FRESHNESS = "__newest_sample_time_s"
FIELD_LABEL = "rlscale_field"
PLACEHOLDERS: frozenset[str] = frozenset(
    {"selector", "gpu_selector", "window", "namespace", "deployment"}
)

DEFAULT_SELECTOR = 'namespace="{{namespace}}",pod=~"{{deployment}}-[a-z0-9]+-[a-z0-9]+"'


def _vllm(name: str, selector: str = "{{selector}}") -> str:
    return '{__name__=~"vllm[:_]' + name + '",' + selector + "}"


def _buckets(histogram: str) -> str:
    return f"sum by (le) (rate({_vllm(histogram + '_bucket')}[{{{{window}}}}]))"


def _quantile(q: float, histograms: tuple[str, ...]) -> str:
    """histogram_quantile over the first of `histograms` that has series (`A or (B unless on() A)`:
    never a mix of two histograms whose buckets may differ)."""
    return f"histogram_quantile({q}, {_first(histograms)})"


def _first(histograms: tuple[str, ...]) -> str:
    expr = _buckets(histograms[0])
    for h in histograms[1:]:
        expr = f"{expr} or ({_buckets(h)} unless on() {expr})"
    return expr


_TTFT = ("time_to_first_token_seconds",)
_TPOT = ("time_per_output_token_seconds", "inter_token_latency_seconds")

DEFAULT_QUERIES: dict[str, str] = {
    "arrival_rps": (
        f"clamp_min(sum(rate({_vllm('request_success_total')}[{{{{window}}}}]))"
        f" + sum(deriv({_vllm('num_requests_waiting')}[{{{{window}}}}]))"
        f" + sum(deriv({_vllm('num_requests_running')}[{{{{window}}}}])), 0)"
    ),
    "prompt_tokens_per_s": f"sum(rate({_vllm('prompt_tokens_total')}[{{{{window}}}}]))",
    "output_tokens_per_s": f"sum(rate({_vllm('generation_tokens_total')}[{{{{window}}}}]))",
    "requests_waiting": f"sum({_vllm('num_requests_waiting')})",
    "requests_running": f"sum({_vllm('num_requests_running')})",
    "kv_cache_usage": f"avg({_vllm('(kv|gpu)_cache_usage_perc')})",
    "gpu_utilization_pct": "avg(DCGM_FI_DEV_GPU_UTIL{{{gpu_selector}}})",
    "ttft_p50_s": _quantile(0.5, _TTFT),
    "ttft_p95_s": _quantile(0.95, _TTFT),
    "ttft_p99_s": _quantile(0.99, _TTFT),
    "tpot_p50_s": _quantile(0.5, _TPOT),
    "tpot_p95_s": _quantile(0.95, _TPOT),
    "tpot_p99_s": _quantile(0.99, _TPOT),
}
# The percentile fields, when not overridden, come from one query per histogram: its bucket rates
# by `le`, from which the controller computes p50/p95/p99 as `histogram_quantile` does
# (`histogram_quantile` below). Three quantiles of one histogram then cost Prometheus one
# evaluation, not three: a 100-target tick asks it for 2 histograms per target instead of 9.
HISTOGRAMS: dict[str, tuple[str, dict[str, float]]] = {
    "ttft": (_first(_TTFT), {"ttft_p50_s": 0.5, "ttft_p95_s": 0.95, "ttft_p99_s": 0.99}),
    "tpot": (_first(_TPOT), {"tpot_p50_s": 0.5, "tpot_p95_s": 0.95, "tpot_p99_s": 0.99}),
}


def ttft_target_query(ttft_s: float, ttft_s_per_1k_tokens: float) -> str:
    """PromQL (a template, like DEFAULT_QUERIES) for an SLO class's TTFT target at the observed
    mean prompt: base + slope x prompt tokens / requests over the window / 1000. vLLM's TTFT
    histogram is not split by prompt length, so this is what a per-length SLO can be held to
    live (`rlscale.deploy.config.SLOConfig`); for a recording rule or an alert beside
    `ttft_p95_s`. A flat class is its number."""
    if ttft_s_per_1k_tokens == 0.0:
        return f"vector({ttft_s:g})"
    prompt = DEFAULT_QUERIES["prompt_tokens_per_s"]
    requests = f"sum(rate({_vllm('request_success_total')}[{{{{window}}}}]))"
    return (
        f"{ttft_s:g} + {ttft_s_per_1k_tokens:g} * ({prompt} / clamp_min({requests}, 1e-9)) / 1000"
    )


# The newest sample of the target's vLLM series: how old the data is (a Prometheus that stopped
# scraping still answers with the last values for its 5-minute lookback).
FRESHNESS_QUERY = f"max(timestamp({_vllm('num_requests_running')}))"

# Which pods the rate fields stand on (`rlscale.deploy.metrics.PodCoverage`), from one series
# every vLLM pod exposes (`coverage_series`), counted per pod (`max by (pod)`: vLLM V1 may add
# an `engine` label). `{{half}}` is half the rate window: a pod is covered when the older half
# holds samples, at most one fewer than the newer half (a gap, or a pod scraped only lately,
# leaves the older half short, and rate() then reads the part of the window it saw as if it
# were all of it). `or vector(0)`: no pod at all is a count of 0, not an unanswered check.
COVERAGE_FIELDS: tuple[str, ...] = ("reporting", "covered", "in_window", "frozen")


def coverage_queries(window_s: float, series: str) -> dict[str, str]:
    half = _duration(window_s / 2)
    s = _vllm(series)
    tokens = _vllm("generation_tokens_total")
    per_pod = lambda e: f"max by (pod) ({e})"  # noqa: E731 - four uses, one line each
    older = per_pod(f"count_over_time({s}[{half}] offset {half})")
    newer = per_pod(f"count_over_time({s}[{half}])")
    live = per_pod(s)
    # Frozen: a live pod with requests running at every sample of the newer half (at least two)
    # whose token counter never changed over it: a live engine with running requests makes
    # tokens between any two scrapes.
    busy = f"{per_pod(f'min_over_time({s}[{half}])')} > 0"
    moving = f"{per_pod(f'changes({tokens}[{half}])')} > 0"
    return {
        "reporting": f"count({live}) or vector(0)",
        "covered": f"count(({older} + 1 >= on(pod) {newer}) and on(pod) {live}) or vector(0)",
        "in_window": f"count({per_pod(f'count_over_time({s}[{{{{window}}}}])')}) or vector(0)",
        "frozen": f"count((({busy}) unless on(pod) ({moving})) and on(pod) ({newer} >= 2)"
        f" and on(pod) {live}) or vector(0)",
    }


def coverage_field(name: str) -> str:
    return f"__pods_{name}"


def _duration(seconds: float) -> str:
    """A PromQL duration in whole milliseconds (`1500ms`), at least 1 ms."""
    return f"{max(1, int(round(seconds * 1000)))}ms"


_TOKEN = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_DURATION = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")


def placeholders(template: str) -> set[str]:
    return set(_TOKEN.findall(template))


def unknown_placeholders(template: str) -> set[str]:
    return placeholders(template) - PLACEHOLDERS


def render(template: str, values: Mapping[str, str]) -> str:
    """Fill `{{name}}` tokens; a name missing from `values` raises KeyError (config validation
    rejects unknown names before anything renders)."""
    return _TOKEN.sub(lambda m: values[m.group(1)], template)


def is_duration(text: str) -> bool:
    """A PromQL duration such as `1m`, `90s`, `1m30s`."""
    return bool(_DURATION.match(text))


def duration_s(text: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
    if not is_duration(text):
        raise ValueError(f"{text!r} is not a PromQL duration (e.g. 1m, 90s)")
    return float(sum(int(n) * units[u] for n, u in re.findall(r"([0-9]+)(ms|s|m|h|d|w|y)", text)))


def labelled(field: str, expr: str) -> str:
    """`expr` with every result series labelled rlscale_field="<field>" (the `__name__` source is
    empty after aggregation, and `.*` matches the empty string)."""
    return f'label_replace(({expr}), "{FIELD_LABEL}", "{field}", "__name__", ".*")'


def combined(exprs: Mapping[str, str]) -> str:
    """One query for many fields: `labelled(f1, e1) or labelled(f2, e2) or ...`. Distinct
    `rlscale_field` values keep `or` from dropping any side."""
    return " or ".join(labelled(f, e) for f, e in exprs.items())


def histogram_field(name: str) -> str:
    return f"__{name}_buckets"


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """Prometheus's `histogram_quantile` (promql/quantile.go) over (upper bound, cumulative count)
    pairs: linear interpolation inside the bucket holding rank q x total; NaN without
    observations or without the +Inf bucket; the largest finite bound when the rank falls in
    the +Inf bucket. Worked example: buckets (0.1: 2, 0.5: 8, +Inf: 10), q = 0.5 -> rank 5 lies
    in (0.1, 0.5] holding 6 -> 0.1 + 0.4 x (5 - 2) / 6 = 0.3."""
    import math

    if math.isnan(q) or q < 0:
        return -math.inf if q < 0 else math.nan
    if q > 1:
        return math.inf
    b = sorted(buckets)
    if len(b) < 2 or b[-1][0] != math.inf:
        return math.nan
    # Counts are rates of counters summed over pods; make them monotonic as Prometheus does.
    mono, top = [], 0.0
    for bound, count in b:
        top = max(top, count)
        mono.append((bound, top))
    total = mono[-1][1]
    if not total > 0:
        return math.nan
    rank = q * total
    i = next(k for k, (_, c) in enumerate(mono) if c >= rank)
    if i == len(mono) - 1:
        return mono[-2][0]
    if i == 0 and mono[0][0] <= 0:
        return mono[0][0]
    start, below = (0.0, 0.0) if i == 0 else mono[i - 1]
    end, count = mono[i]
    count -= below
    rank -= below
    return start + (end - start) * (rank / count if count > 0 else 1.0)
