"""`rlscale traces export`: a service's traffic out of Prometheus, as a trace every command reads.

What is read: the raw samples (not `rate()`/`increase()`, whose extrapolation at series starts
and ends is exactly where a scale event puts them) of vLLM's series for the pods the label
selector picks, both spellings (`vllm:` and `vllm_`, see `promql.py`), merged per series:

| per step k of `[start, end)`  | from                                                             |
|-------------------------------|------------------------------------------------------------------|
| arrivals                      | completions + growth of the requests in the server: Δ`request_success_total` + Δ(`num_requests_waiting` + `num_requests_running`) summed over pods (vLLM has no arrival counter; the controller's `arrival_rps` is the same identity) |
| prompt_tokens (mean)          | Δ`request_prompt_tokens_sum` / Δ`_count` when the histogram is scraped, else Δ`prompt_tokens_total` / admitted requests (Δcompletions + Δrunning: vLLM counts prompt tokens at prefill) |
| output_tokens (mean)          | Δ`request_generation_tokens_sum` / Δ`_count`, else Δ`generation_tokens_total` / Δcompletions |

A counter's cumulative increase is interpolated between samples (monotone cubic, see
`cumulative_at`); a step gets the part that falls inside it. Gauges are linear between samples.
A counter that goes down restarted from zero (Prometheus' rule: the increase is the new value). A series that first appears inside the range (a new pod) starts
from zero before its first sample, as long before as its first value takes at its next samples'
rate (Prometheus discovers a pod a refresh plus a scrape after it turned Ready and took
traffic); one that ends (a pod gone) stops.

Gaps are marked, never filled here (`is_gap = 1`, `gap_reason`, values left empty):

    scrape_gap     a series has no sample for longer than `max_scrape_gap_s` (default 2.5 scrape
                   intervals) while it exists: a failed scrape, an unreachable pod, a restart
    counter_reset  a counter went down inside the step: what the server counted between its last
                   scrape and the restart is lost
    no_series      no series of the service exists during the step (no pod, or no scrape at all)

The loader fills marked steps when the file is read (as ServeGen's `is_gap` windows are filled,
`rlscale.traces.servegen.fill_gaps`) and records which in `meta['gap_bin_starts_s']`.

Request-size CVs: Prometheus counters give means only; the file carries the Azure conv defaults
(`rlscale.traces.loaders.DEFAULT_*_CV`) and says so in its metadata.

Time: Prometheus' clock (Unix seconds). A `rlscale sandbox` runs simulated time `time_scale`
times faster than its wall clock, so its export has `time_scale` times the simulated rate.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlencode

import numpy as np
import urllib3

from rlscale.errors import InputError
from rlscale.traces import loaders

# base name (both spellings) -> what it is
COUNTERS: tuple[str, ...] = (
    "request_success_total",
    "prompt_tokens_total",
    "generation_tokens_total",
    "request_prompt_tokens_sum",
    "request_prompt_tokens_count",
    "request_generation_tokens_sum",
    "request_generation_tokens_count",
)
GAUGES: tuple[str, ...] = ("num_requests_waiting", "num_requests_running")
GAP_REASONS: tuple[str, ...] = ("scrape_gap", "counter_reset", "no_series")
DEFAULT_CHUNK_S = 3600.0
# how far before its first sample a new series may have started counting (see counter_cumulative)
MAX_BORN_LEAD_S = 300.0
# fewer requests than this in a step: its sizes are the export's mean (as `bin_requests` does for
# an empty bin); a ratio of two tiny deltas is noise
_MIN_REQUESTS_FOR_MEAN = 0.5


@dataclass(frozen=True)
class SeriesSamples:
    """One series' raw samples, sorted by time; `name` is the base name (spelling removed)."""

    name: str
    labels: tuple[tuple[str, str], ...]
    t_s: np.ndarray
    value: np.ndarray


class RawReader(Protocol):
    """Raw samples of every series matching `{__name__=~"vllm[:_](names)", selector}` in
    [start_s, end_s]; raises InputError when Prometheus cannot be read."""

    def samples(
        self, names: Sequence[str], selector: str, start_s: float, end_s: float
    ) -> list[SeriesSamples]: ...


def vllm_matcher(names: Sequence[str], selector: str) -> str:
    """`{__name__=~"vllm[:_](a|b)",<selector>}`: both spellings of every name."""
    sel = selector.strip().strip("{}").strip()
    inner = f'__name__=~"vllm[:_]({"|".join(names)})"'
    return "{" + inner + ("," + sel if sel else "") + "}"


def base_name(metric_name: str) -> str:
    for prefix in ("vllm:", "vllm_"):
        if metric_name.startswith(prefix):
            return metric_name[len(prefix) :]
    return metric_name


class PrometheusRaw:
    """`RawReader` over Prometheus' HTTP API: instant queries of a range selector
    (`matcher[<chunk>s]` at the chunk's end: a matrix of raw samples), `chunk_s` at a time, so
    a week at a 15 s scrape never asks for more than an hour of samples per request."""

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = 30.0,
        bearer_token_file: str | None = None,
        chunk_s: float = DEFAULT_CHUNK_S,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise InputError(url, "expected an http:// or https:// URL", field="prometheus")
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self.chunk_s = chunk_s
        headers = {"Accept": "application/json"}
        if bearer_token_file:
            headers["Authorization"] = f"Bearer {Path(bearer_token_file).read_text().strip()}"
        self._pool = urllib3.PoolManager(retries=False, headers=headers)

    def samples(
        self, names: Sequence[str], selector: str, start_s: float, end_s: float
    ) -> list[SeriesSamples]:
        matcher = vllm_matcher(names, selector)
        merged: dict[tuple[str, tuple[tuple[str, str], ...]], dict[float, float]] = {}
        t = start_s
        while t < end_s:
            t1 = min(t + self.chunk_s, end_s)
            # Prometheus 2.x selects [t1 - w, t1], 3.x (t1 - w, t1]: duplicates at the shared
            # edge are merged by timestamp below.
            width_ms = max(1, int(math.ceil((t1 - t) * 1000)))
            for metric, values in self._matrix(f"{matcher}[{width_ms}ms]", t1):
                own = tuple(sorted((k, v) for k, v in metric.items() if k != "__name__"))
                key = (base_name(metric.get("__name__", "")), own)
                bucket = merged.setdefault(key, {})
                for ts, v in values:
                    bucket[float(ts)] = float(v)
            t = t1
        out = []
        for (name, series_labels), points in sorted(merged.items()):
            ts = np.array(sorted(points))
            vals = np.array([points[x] for x in ts])
            out.append(SeriesSamples(name, series_labels, ts, vals))
        return out

    def _matrix(self, expr: str, time_s: float) -> list[tuple[dict[str, str], list[Any]]]:
        body = urlencode({"query": expr, "time": f"{time_s:.3f}"})
        where = f"{self.url}/api/v1/query"
        try:
            r = self._pool.request(
                "POST",
                where,
                body=body,
                headers={"Content-Type": "application/x-www-form-urlencoded"},
                timeout=urllib3.Timeout(total=self.timeout_s),
            )
        except urllib3.exceptions.HTTPError as e:
            raise InputError(where, f"Prometheus unreachable ({e.__class__.__name__})") from None
        try:
            doc = json.loads(r.data)
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            raise InputError(where, f"answered {r.status} with a body that is not JSON")
        if doc.get("status") != "success":
            raise InputError(
                where, f"answered {r.status}: {doc.get('errorType')}: {doc.get('error')}"
            )
        data = doc.get("data") or {}
        if data.get("resultType") != "matrix":
            raise InputError(
                where, f"expected a matrix of raw samples, got {data.get('resultType')}"
            )
        return [(dict(s.get("metric") or {}), list(s.get("values") or [])) for s in data["result"]]

    def close(self) -> None:
        self._pool.clear()


@dataclass(frozen=True)
class ExportRequest:
    """What to export: the pods `selector` picks, steps of `step_s` from `start_s` to `end_s`
    (Unix seconds; the last step may be cut at `end_s` only if it is whole)."""

    selector: str
    start_s: float
    end_s: float
    step_s: float = 60.0
    max_scrape_gap_s: float | None = None  # default 2.5 x the median scrape interval
    name: str = "prometheus-export"
    source: str = "prometheus"

    def __post_init__(self) -> None:
        if not (math.isfinite(self.step_s) and self.step_s > 0):
            raise InputError("--step-s", f"expected a step > 0 seconds, got {self.step_s}")
        if not self.end_s - self.start_s >= self.step_s:
            raise InputError(
                "--end",
                f"the range {self.start_s:.3f}..{self.end_s:.3f} holds no whole step of "
                f"{self.step_s:g} s",
            )

    @property
    def n_steps(self) -> int:
        return int(math.floor((self.end_s - self.start_s) / self.step_s + 1e-9))

    @property
    def edges_s(self) -> np.ndarray:
        return self.start_s + self.step_s * np.arange(self.n_steps + 1)


@dataclass(frozen=True)
class ExportedTrace:
    """Per step: arrivals and mean sizes (NaN on gap steps), the gap mark and its reason."""

    request: ExportRequest
    arrivals: np.ndarray
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    is_gap: np.ndarray
    gap_reason: list[str]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def bin_start_s(self) -> np.ndarray:
        return self.request.edges_s[:-1]

    def gap_counts(self) -> dict[str, int]:
        return {
            r: sum(1 for g in self.gap_reason if g == r)
            for r in GAP_REASONS
            if r in self.gap_reason
        }


# --- per-series arithmetic ------------------------------------------------------------------


@dataclass(frozen=True)
class _Life:
    """Whether a series began (a new pod) or ended (a pod gone) inside the fetched range, the
    scrape interval, and the spans between two samples further apart than the gap limit."""

    born: bool
    died: bool
    interval_s: float
    gaps: list[tuple[float, float]]


def _life(s: SeriesSamples, fetch: tuple[float, float], interval_s: float, gap_s: float) -> _Life:
    t = s.t_s
    spacing = np.diff(t)
    gaps = [(float(t[i]), float(t[i + 1])) for i in np.flatnonzero(spacing > gap_s)]
    return _Life(
        born=bool(t[0] > fetch[0] + gap_s),
        died=bool(t[-1] < fetch[1] - gap_s),
        interval_s=interval_s,
        gaps=gaps,
    )


def counter_cumulative(s: SeriesSamples, life: _Life) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """(knot times, cumulative increase at them, times of resets). A drop is a restart from 0.
    A new series starts from 0 before its first sample: as long before as its first value
    takes at the rate of its next few samples (a pod serves from Ready on, but Prometheus
    discovers it up to a refresh plus a scrape later), at least one scrape interval, at most
    `MAX_BORN_LEAD_S`."""
    v = s.value
    d = np.diff(v)
    inc = np.where(d >= 0, d, v[1:])  # a drop: the counter restarted, the increase is the value
    resets = [float(s.t_s[i + 1]) for i in np.flatnonzero(d < 0)]
    cum = np.concatenate([[0.0], np.cumsum(inc)])
    t = s.t_s
    if life.born:
        t = np.concatenate([[t[0] - _born_lead_s(s, life.interval_s)], t])
        cum = np.concatenate([[0.0], cum + v[0]])
    return t, cum, resets


def _born_lead_s(s: SeriesSamples, interval_s: float) -> float:
    v, t = s.value, s.t_s
    k = min(4, len(v) - 1)
    if k < 1 or v[0] <= 0 or np.any(np.diff(v[: k + 1]) < 0):
        return interval_s
    rate = (v[k] - v[0]) / (t[k] - t[0])
    if rate <= 0:
        return interval_s
    return float(np.clip(v[0] / rate, interval_s, MAX_BORN_LEAD_S))


def gauge_curve(s: SeriesSamples, life: _Life) -> tuple[np.ndarray, np.ndarray]:
    """(knot times, values): zero before a new series and after an ended one, one interval away."""
    t, v = s.t_s, s.value
    if life.born:
        t, v = np.concatenate([[t[0] - life.interval_s], t]), np.concatenate([[0.0], v])
    if life.died:
        t, v = np.concatenate([t, [t[-1] + life.interval_s]]), np.concatenate([v, [0.0]])
    return t, v


def cumulative_at(edges: np.ndarray, t: np.ndarray, cum: np.ndarray) -> np.ndarray:
    """A counter's cumulative increase at `edges`: monotone cubic (PCHIP) between samples, 0
    before the first, the last value after. PCHIP, not linear: where the rate changes inside a
    scrape interval, the slopes of the neighbouring intervals place the change, so an interval
    that straddles a step edge is not split in proportion to time (linear interpolation smears
    up to a quarter scrape interval of the rate jump across the edge); it never overshoots."""
    if len(t) < 3:
        return np.interp(edges, t, cum, left=0.0, right=cum[-1])
    from scipy.interpolate import PchipInterpolator

    inside = (edges >= t[0]) & (edges <= t[-1])
    out = np.where(edges < t[0], 0.0, cum[-1])
    out[inside] = PchipInterpolator(t, cum)(edges[inside])
    return out


def _overlaps(edges: np.ndarray, a: float, b: float) -> np.ndarray:
    """Steps whose [e_k, e_k+1) intersects the open span (a, b)."""
    return (edges[:-1] < b) & (edges[1:] > a)


# --- the export -----------------------------------------------------------------------------


def export_trace(reader: RawReader, req: ExportRequest) -> ExportedTrace:
    """Read the service's vLLM series and turn them into per-step arrivals and sizes, gaps
    marked (see the module docstring)."""
    lookback_s = max(2 * req.step_s, 300.0)
    fetch = (req.start_s - lookback_s, req.end_s + min(req.step_s, 60.0))
    series = reader.samples((*COUNTERS, *GAUGES), req.selector, *fetch)
    by_name: dict[str, list[SeriesSamples]] = {}
    for s in series:
        if len(s.t_s):
            by_name.setdefault(s.name, []).append(s)
    if not by_name.get("request_success_total"):
        raise InputError(
            req.source,
            f"no vLLM request_success_total series match {vllm_matcher(['...'], req.selector)} "
            f"between {_iso(fetch[0])} and {_iso(fetch[1])}",
            field="selector",
        )
    interval_s = _scrape_interval(by_name["request_success_total"])
    # a series "ends" only before the newest sample Prometheus has (an export up to now)
    newest = max(float(s.t_s[-1]) for group in by_name.values() for s in group)
    fetch = (fetch[0], min(fetch[1], newest))
    gap_s = req.max_scrape_gap_s or 2.5 * interval_s
    edges = req.edges_s
    n = req.n_steps
    reason = np.array([""] * n, dtype=object)
    covered = np.zeros(n, dtype=bool)

    def mark(mask: np.ndarray, why: str) -> None:
        # the first reason found stays (a reset inside a scrape gap is a scrape gap)
        reason[mask & (reason == "")] = why

    def counter_delta(name: str) -> np.ndarray | None:
        found = by_name.get(name)
        if not found:
            return None
        total = np.zeros(n)
        for s in found:
            life = _life(s, fetch, interval_s, gap_s)
            t, cum, resets = counter_cumulative(s, life)
            total += np.diff(cumulative_at(edges, t, cum))
            for a, b in life.gaps:
                mark(_overlaps(edges, a, b), "scrape_gap")
            for r in resets:
                i = int(np.searchsorted(s.t_s, r))
                mark(_overlaps(edges, float(s.t_s[i - 1]), r), "counter_reset")
            covered[_overlaps(edges, float(t[0]), float(t[-1]) + (0 if life.died else gap_s))] = (
                True
            )
        return total

    def gauge_delta(names: Sequence[str]) -> np.ndarray:
        level = np.zeros(n + 1)
        for name in names:
            for s in by_name.get(name, []):
                life = _life(s, fetch, interval_s, gap_s)
                t, v = gauge_curve(s, life)
                level += np.interp(edges, t, v, left=0.0 if life.born else v[0], right=v[-1])
                for a, b in life.gaps:
                    mark(_overlaps(edges, a, b), "scrape_gap")
        return np.diff(level)

    completed = counter_delta("request_success_total")
    assert completed is not None
    mark(~covered, "no_series")
    d_running = gauge_delta(["num_requests_running"])
    d_waiting = gauge_delta(["num_requests_waiting"])
    arrivals = np.maximum(completed + d_running + d_waiting, 0.0)
    admitted = np.maximum(completed + d_running, 0.0)

    sizes, how = {}, {}
    for key, hist, counter, per in (
        ("prompt", "request_prompt_tokens", "prompt_tokens_total", admitted),
        ("output", "request_generation_tokens", "generation_tokens_total", completed),
    ):
        h_sum, h_count = counter_delta(f"{hist}_sum"), counter_delta(f"{hist}_count")
        if h_sum is not None and h_count is not None:
            tokens, requests = h_sum, h_count
            how[key] = f"vllm {hist} histogram (sum / count)"
        else:
            c = counter_delta(counter)
            if c is None:
                tokens, requests = np.full(n, np.nan), per
                how[key] = f"none ({counter} not scraped): the Azure conv default"
            else:
                tokens, requests = c, per
                how[key] = f"{counter} / " + (
                    "admitted requests" if key == "prompt" else "completions"
                )
        sizes[key] = _means(tokens, requests, ~reason.astype(bool), key)

    gap = reason != ""
    for arr in (arrivals, sizes["prompt"], sizes["output"]):
        arr[gap] = np.nan
    meta = {
        "format": "prometheus-export",
        "prometheus": req.source,
        "selector": req.selector,
        "start": _iso(req.start_s),
        "end": _iso(req.start_s + n * req.step_s),
        "step_s": req.step_s,
        "scrape_interval_s": interval_s,
        "max_scrape_gap_s": gap_s,
        "series": {k: len(v) for k, v in sorted(by_name.items())},
        "arrivals_from": "request_success_total + num_requests_waiting + num_requests_running",
        "prompt_tokens_from": how["prompt"],
        "output_tokens_from": how["output"],
        "sizes_cv": "defaults (Azure conv): Prometheus counters carry means only",
        "gap_reasons": {r: int((reason == r).sum()) for r in GAP_REASONS if (reason == r).any()},
    }
    return ExportedTrace(
        req, arrivals, sizes["prompt"], sizes["output"], gap, [str(r) for r in reason], meta
    )


def _means(tokens: np.ndarray, requests: np.ndarray, ok: np.ndarray, key: str) -> np.ndarray:
    """Tokens per request per step; steps with too few requests get the export's mean (the
    request-weighted mean of the steps that are not gaps), else the Azure default."""
    default = loaders.DEFAULT_PROMPT_TOKENS if key == "prompt" else loaders.DEFAULT_OUTPUT_TOKENS
    use = ok & np.isfinite(tokens) & (requests >= _MIN_REQUESTS_FOR_MEAN)
    overall = float(tokens[use].sum() / requests[use].sum()) if use.any() else default
    with np.errstate(invalid="ignore", divide="ignore"):
        per = np.where(use, tokens / np.where(use, requests, 1.0), overall)
    return np.maximum(per, 0.0)


def _scrape_interval(series: list[SeriesSamples]) -> float:
    spacing = np.concatenate([np.diff(s.t_s) for s in series])
    spacing = spacing[spacing > 0]
    return float(np.median(spacing)) if len(spacing) else 15.0


def _iso(t_s: float) -> str:
    return (
        datetime.fromtimestamp(t_s, tz=UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


# --- the file -------------------------------------------------------------------------------


def write_trace(trace: ExportedTrace, path: str | Path) -> Path:
    """Write the `workload` format (`bin_start_s, arrivals, prompt_tokens, output_tokens`) plus
    `is_gap` and `gap_reason`; Parquet (header in the schema metadata, as `save_workload`) or CSV
    by the extension. Gap rows have empty values."""
    import pyarrow as pa

    p = Path(path)
    ext = p.suffix.lower()
    if ext not in (".parquet", ".pq", ".csv"):
        raise InputError(str(p), "expected an output path ending in .parquet or .csv")
    table = pa.table(
        {
            "bin_start_s": trace.bin_start_s,
            "arrivals": pa.array(trace.arrivals, from_pandas=True),
            "prompt_tokens": pa.array(trace.prompt_tokens, from_pandas=True),
            "output_tokens": pa.array(trace.output_tokens, from_pandas=True),
            "is_gap": trace.is_gap.astype(np.int8),
            "gap_reason": trace.gap_reason,
        }
    )
    if ext == ".csv":
        # pandas, not pyarrow.csv: pyarrow quotes the header names, which the loader's header
        # sniffing (and most people's `head`) does not expect; NaN is written empty
        table.to_pandas().to_csv(p, index=False)
        return p
    import pyarrow.parquet as pq

    header = {
        "name": trace.request.name,
        "source": trace.request.source,
        "interval_s": trace.request.step_s,
        "start_s": trace.request.start_s,
        "prompt_tokens_cv": loaders.DEFAULT_PROMPT_TOKENS_CV,
        "output_tokens_cv": loaders.DEFAULT_OUTPUT_TOKENS_CV,
        "meta": trace.meta,
    }
    blob = json.dumps(header, default=str).encode()
    pq.write_table(table.replace_schema_metadata({loaders.WORKLOAD_META_KEY: blob}), p)
    return p


def parse_time(text: str, field_name: str, now_s: float) -> float:
    """Unix seconds, RFC 3339 (`2026-12-03T07:00:00Z`), `now` or `now-<PromQL duration>`."""
    from rlscale.deploy.promql import duration_s

    s = text.strip()
    if s == "now":
        return now_s
    if s.startswith("now-"):
        try:
            return now_s - duration_s(s[4:])
        except ValueError:
            raise InputError(
                field_name, f"expected now-<duration> like now-1h, got {text!r}"
            ) from None
    try:
        return float(s)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(s.replace("Z", "+00:00"))
    except ValueError:
        raise InputError(
            field_name, f"expected Unix seconds, RFC 3339, now or now-1h; got {text!r}"
        ) from None
    return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp()
