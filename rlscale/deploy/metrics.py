"""The Prometheus metrics source: fills the PromQL fields of `IntervalMetrics` for a target and
says whether the reading can be trusted (Knative's "no data is a named outcome").

A `MetricsReading` is untrusted when Prometheus cannot be read (`error`), when its newest sample
is older than `max_staleness_s` (`stale`: a Prometheus that stopped scraping still answers with
the last values for its 5-minute lookback), or when a required field is `missing` (no series,
NaN, more than one series, or its query failed). A latency percentile that is NaN because no
request arrived in the window is 0, not missing: `histogram_quantile` of all-zero bucket rates
is NaN, and an idle service has no latency problem.

One HTTP request per target per tick (`promql.combined`); if Prometheus rejects the combined
query (a bad override), the fields are queried one by one so the error names the field.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlencode

import urllib3

from rlscale.deploy import promql
from rlscale.deploy.config import MetricsConfig, PrometheusConfig, TargetConfig
from rlscale.deploy.retry import PermanentError, TemporaryError

Sample = tuple[dict[str, str], float]


class PromQuery(Protocol):
    """An instant query at an explicit time; raises TemporaryError / PermanentError."""

    def query(self, expr: str, time_s: float) -> list[Sample]: ...


def _value(text: str) -> float:
    # Prometheus writes NaN, +Inf, -Inf as strings; float() reads all three.
    return float(text)


def parse_response(
    status: int, body: bytes, headers: Mapping[str, str] | None = None
) -> list[Sample]:
    """Samples of an /api/v1/query answer, or the error it carries, classified for retry."""
    try:
        doc = json.loads(body)
    except ValueError:
        doc = None
    if status == 404:
        # not a query problem: every field would read "missing"; say what is wrong once
        raise TemporaryError(
            "Prometheus answered 404 for /api/v1/query: prometheus.url must be the server's root "
            "(e.g. http://prometheus-operated.monitoring:9090, with any route prefix it serves under)",
            status=status,
        )
    if status == 429 or status >= 500:
        retry_after = (headers or {}).get("Retry-After")
        delay = float(retry_after) if retry_after and retry_after.isdigit() else None
        detail = doc.get("error") if isinstance(doc, dict) else body[:200].decode(errors="replace")
        raise TemporaryError(
            f"Prometheus answered {status}: {detail}", status=status, delay_s=delay
        )
    if not isinstance(doc, dict):
        raise TemporaryError(
            f"Prometheus answered {status} with a body that is not JSON", status=status
        )
    if doc.get("status") != "success":
        raise PermanentError(
            f"Prometheus rejected the query ({doc.get('errorType')}): {doc.get('error')}",
            status=status,
        )
    data = doc.get("data") or {}
    kind = data.get("resultType")
    result: Any = data.get("result")  # a [time, value] pair or a list of samples, by kind
    if kind == "scalar":
        return [({}, _value(result[1]))]
    if kind != "vector":
        raise PermanentError(f"expected an instant vector, got a {kind}")
    return [(dict(s.get("metric") or {}), _value(s["value"][1])) for s in result or []]


class PrometheusHttp:
    """`PromQuery` over HTTP (urllib3, thread-safe pool, no hidden retries: the caller decides)."""

    def __init__(self, config: PrometheusConfig) -> None:
        self.url = config.url
        self.timeout_s = config.timeout_s
        headers = {"Accept": "application/json"}
        if config.bearer_token_file:
            token = Path(config.bearer_token_file).read_text().strip()
            headers["Authorization"] = f"Bearer {token}"
        self._headers = headers
        self._pool = urllib3.PoolManager(maxsize=config.concurrency, retries=False, headers=headers)

    def query(self, expr: str, time_s: float) -> list[Sample]:
        body = urlencode({"query": expr, "time": f"{time_s:.3f}"})
        try:
            r = self._pool.request(
                "POST",
                f"{self.url}/api/v1/query",
                body=body,
                headers={**self._headers, "Content-Type": "application/x-www-form-urlencoded"},
                timeout=urllib3.Timeout(total=self.timeout_s),
            )
        except urllib3.exceptions.HTTPError as e:
            raise TemporaryError(
                f"Prometheus at {self.url} unreachable: {e.__class__.__name__}"
            ) from None
        return parse_response(r.status, r.data, r.headers)

    def close(self) -> None:
        self._pool.clear()


@dataclass(frozen=True)
class PodCoverage:
    """Which pods the rate fields stand on (None: that check is not configured or gave no
    answer). A Ready pod that is not `reporting` yet, a reporting pod whose rate window is not
    `covered` by samples, and a pod seen `in_window` that is gone make the rate fields partial:
    low because pods are missing from them, not because load fell. `frozen`: pods with requests
    in them whose token counter did not move in the whole window (a wedged engine still
    answering scrapes)."""

    reporting: int | None = None
    covered: int | None = None
    in_window: int | None = None
    frozen: int | None = None


@dataclass(frozen=True)
class MetricsReading:
    """One target's PromQL fields at `time_s`: every field in `values` (NaN when not observed)."""

    time_s: float
    values: Mapping[str, float]
    missing: tuple[str, ...] = ()
    required: tuple[str, ...] = ()
    age_s: float | None = None  # now - newest sample
    stale: bool = False
    error: str | None = None  # Prometheus could not be read at all
    notes: tuple[str, ...] = ()
    coverage: PodCoverage = PodCoverage()

    @property
    def frozen(self) -> bool:
        return bool(self.coverage.frozen)

    def has(self, fields: Sequence[str]) -> bool:
        """Fresh, readable, not frozen, and none of `fields` missing."""
        return (
            self.error is None
            and not self.stale
            and not self.frozen
            and not set(fields) & set(self.missing)
        )

    @property
    def trusted(self) -> bool:
        return self.has(self.required)

    @property
    def why(self) -> str:
        """Why it is untrusted (for the decision record), "" when trusted."""
        if self.error is not None:
            return self.error
        if self.stale:
            return f"newest sample is {self.age_s:.0f} s old"
        if self.frozen:
            return (
                f"{self.coverage.frozen} pod(s) hold requests but their token counter did not "
                "move in the rate window (frozen series)"
            )
        lacking = [f for f in self.required if f in self.missing]
        return f"missing {', '.join(lacking)}" if lacking else ""

    @classmethod
    def unavailable(cls, time_s: float, error: str, required: Sequence[str] = ()) -> MetricsReading:
        values = {f: math.nan for f in promql.QUERY_FIELDS}
        return cls(time_s, values, tuple(promql.QUERY_FIELDS), tuple(required), error=error)


@dataclass(frozen=True)
class TargetQueries:
    """A target's rendered PromQL (prepared once at start-up)."""

    key: str
    fields: dict[str, str]  # field -> PromQL
    freshness: str | None
    combined: str
    config: MetricsConfig = field(repr=False)
    # histogram -> (PromQL of its bucket rates by le, {field: quantile})
    histograms: dict[str, tuple[str, dict[str, float]]] = field(default_factory=dict)
    coverage: dict[str, str] = field(default_factory=dict)  # PodCoverage field -> PromQL

    @property
    def collected(self) -> list[str]:
        return [*self.fields, *(f for _, fs in self.histograms.values() for f in fs)]

    def exprs(self) -> dict[str, str]:
        """Every expression of the target, by its `rlscale_field` label."""
        out = dict(self.fields)
        out.update({promql.histogram_field(h): e for h, (e, _) in self.histograms.items()})
        if self.freshness:
            out[promql.FRESHNESS] = self.freshness
        out.update({promql.coverage_field(c): e for c, e in self.coverage.items()})
        return out


def prepare(target: TargetConfig) -> TargetQueries:
    m = target.metrics
    base = {"namespace": target.namespace, "deployment": target.deployment, "window": m.rate_window}
    values = {
        **base,
        "selector": promql.render(m.selector, base),
        "gpu_selector": promql.render(m.gpu_selector, base),
    }
    fields = {f: promql.render(t, values) for f, t in m.templates().items()}
    histograms = {h: (promql.render(t, values), qs) for h, (t, qs) in m.histograms().items()}
    freshness = promql.render(m.freshness_query, values) if m.freshness_query else None
    coverage = (
        {
            c: promql.render(t, values)
            for c, t in promql.coverage_queries(m.rate_window_s, m.coverage_series).items()
        }
        if m.coverage_series
        else {}
    )
    q = TargetQueries(target.key, fields, freshness, "", m, histograms, coverage)
    return TargetQueries(
        target.key, fields, freshness, promql.combined(q.exprs()), m, histograms, coverage
    )


class PrometheusSource:
    """Reads targets' metrics, `concurrency` queries at a time."""

    def __init__(
        self, client: PromQuery, *, concurrency: int = 8, retry_temporary: int = 1
    ) -> None:
        self.client = client
        self.retry_temporary = retry_temporary
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="rlscale-prom")
        self._closed = threading.Event()

    def close(self) -> None:
        if not self._closed.is_set():
            self._closed.set()
            self._pool.shutdown(wait=True, cancel_futures=True)

    def read_many(self, queries: Sequence[TargetQueries], now_s: float) -> list[MetricsReading]:
        return list(self._pool.map(lambda q: self.read(q, now_s), queries))

    def _query(self, expr: str, now_s: float) -> list[Sample]:
        for attempt in range(self.retry_temporary + 1):
            try:
                return self.client.query(expr, now_s)
            except TemporaryError:
                if attempt == self.retry_temporary:
                    raise
        raise AssertionError("unreachable")

    def read(self, q: TargetQueries, now_s: float) -> MetricsReading:
        required = q.config.required_fields
        fetched = self._fetch(q, now_s)
        if fetched.error is not None:
            return MetricsReading.unavailable(now_s, fetched.error, required)
        fields = _Fields({f: math.nan for f in promql.QUERY_FIELDS})
        fields.gauges(q, fetched)
        fields.histograms(q, fetched)
        fields.drop_non_finite(q)
        age_s, stale = fields.freshness(q, fetched, now_s)
        coverage = fields.coverage(q, fetched)
        return MetricsReading(
            time_s=now_s,
            values=fields.values,
            missing=tuple(fields.missing),
            required=tuple(required),
            age_s=age_s,
            stale=stale,
            notes=tuple(fields.notes),
            coverage=coverage,
        )

    def _fetch(self, q: TargetQueries, now_s: float) -> _Fetched:
        """Samples by `rlscale_field` from the combined query (or, when Prometheus rejects it,
        from each expression on its own)."""
        fetched = _Fetched()
        try:
            for labels, value in self._query(q.combined, now_s):
                name = labels.pop(promql.FIELD_LABEL, None)
                if name is not None:
                    fetched.by_field.setdefault(name, []).append((labels, value))
        except TemporaryError as e:
            return _Fetched(error=str(e))
        except PermanentError:
            # One bad expression fails the whole combined query: find which, field by field.
            for name, expr in q.exprs().items():
                try:
                    fetched.by_field[name] = self._query(expr, now_s)
                except TemporaryError as e:
                    return _Fetched(error=str(e))
                except PermanentError as e:
                    fetched.failed[name] = str(e)
        return fetched


@dataclass
class _Fetched:
    by_field: dict[str, list[Sample]] = field(default_factory=dict)
    failed: dict[str, str] = field(
        default_factory=dict
    )  # field -> Prometheus's error for its query
    error: str | None = None  # Prometheus could not be read at all


@dataclass
class _Fields:
    """The reading being built: values (NaN until read), what is missing, and why (notes)."""

    values: dict[str, float]
    missing: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def _lack(self, name: str, note: str) -> None:
        self.notes.append(note)
        self.missing.append(name)

    def gauges(self, q: TargetQueries, f: _Fetched) -> None:
        """A field's own query must answer with exactly one series."""
        for name in q.fields:
            samples = f.by_field.get(name, [])
            if name in f.failed:
                self._lack(name, f"{name}: {f.failed[name]}")
            elif not samples:
                self._lack(name, f"{name}: no series")
            elif len(samples) > 1:
                self._lack(
                    name,
                    f"{name}: {len(samples)} series, expected one (aggregate the query with sum/avg)",
                )
            else:
                self.values[name] = samples[0][1]

    def histograms(self, q: TargetQueries, f: _Fetched) -> None:
        """Percentile fields from one histogram's bucket rates (a bucket whose `le` is not a number
        is skipped)."""
        for hist, (_, quantiles) in q.histograms.items():
            key = promql.histogram_field(hist)
            samples = f.by_field.get(key, [])
            problem = f.failed.get(key) or ("" if samples else "no series")
            if problem:
                self.notes.append(f"{hist} histogram: {problem}")
                self.missing.extend(quantiles)
                continue
            buckets = []
            for labels, value in samples:
                try:
                    buckets.append((float(labels.get("le", "nan")), value))
                except ValueError:
                    continue
            for name, quantile in quantiles.items():
                self.values[name] = promql.histogram_quantile(quantile, buckets)

    def drop_non_finite(self, q: TargetQueries) -> None:
        """A non-finite value is missing, except a latency beyond the largest bucket (+Inf: very
        slow, not unknown) and a latency of an idle window (NaN -> 0)."""
        window_s = q.config.rate_window_s
        for name in q.collected:
            v = self.values[name]
            if name in self.missing or math.isfinite(v):
                continue
            if name in promql.LATENCY_FIELDS:
                if v == math.inf:
                    continue
                if math.isnan(v) and _idle(name, self.values, window_s):
                    self.values[name] = 0.0
                    continue
            self.values[name] = math.nan
            self._lack(name, f"{name}: {v}")

    def freshness(self, q: TargetQueries, f: _Fetched, now_s: float) -> tuple[float | None, bool]:
        """(age of the newest sample, stale); (None, False) when there is no freshness query or
        it gave no finite answer."""
        if not q.freshness:
            return None, False
        fresh = f.by_field.get(promql.FRESHNESS, [])
        if promql.FRESHNESS in f.failed:
            self.notes.append(f"freshness: {f.failed[promql.FRESHNESS]}")
        elif fresh and math.isfinite(fresh[0][1]):
            age_s = max(0.0, now_s - fresh[0][1])
            return age_s, age_s > q.config.max_staleness_s
        return None, False

    def coverage(self, q: TargetQueries, f: _Fetched) -> PodCoverage:
        """Pod counts behind the rate fields; a check without a finite answer is None."""
        counts: dict[str, int | None] = {}
        for name in q.coverage:
            key = promql.coverage_field(name)
            samples = f.by_field.get(key, [])
            if key in f.failed:
                self.notes.append(f"{name}: {f.failed[key]}")
            value = samples[0][1] if len(samples) == 1 else math.nan
            counts[name] = int(value) if math.isfinite(value) else None
        return PodCoverage(**counts)


def _idle(name: str, values: Mapping[str, float], window_s: float) -> bool:
    """No request (TTFT) or no output token (TPOT) in the rate window, by the rate fields."""
    rate = values["arrival_rps"] if name.startswith("ttft_") else values["output_tokens_per_s"]
    return math.isfinite(rate) and rate * window_s < 0.5
