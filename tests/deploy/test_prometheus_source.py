"""The Prometheus source: default PromQL, the combined query, missing/NaN/stale detection."""

from __future__ import annotations

import json
import math

import pytest

from rlscale.deploy import promql
from rlscale.deploy.config import TargetConfig
from rlscale.deploy.metrics import MetricsReading, PrometheusSource, parse_response, prepare
from rlscale.deploy.retry import PermanentError, TemporaryError
from tests.deploy.fakes import T0, FakeProm, healthy_values


def target(**metrics: object) -> TargetConfig:
    return TargetConfig.model_validate(
        {"namespace": "llm", "deployment": "llama", "metrics": metrics}
    )


@pytest.fixture
def source():
    made: list[PrometheusSource] = []

    def make(client) -> PrometheusSource:
        s = PrometheusSource(client, concurrency=2)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


def test_default_queries_accept_both_vllm_spellings_and_select_the_deployments_pods() -> None:
    q = prepare(target())
    assert sorted(q.collected) == sorted(promql.QUERY_FIELDS)
    assert (
        '{__name__=~"vllm[:_]num_requests_waiting",namespace="llm",pod=~"llama-[a-z0-9]+-[a-z0-9]+"}'
        in q.fields["requests_waiting"]
    )
    ttft, quantiles = q.histograms["ttft"]
    assert (
        ttft.startswith('sum by (le) (rate({__name__=~"vllm[:_]time_to_first_token_seconds_bucket"')
        and "[1m]" in ttft
    )
    assert quantiles == {"ttft_p50_s": 0.5, "ttft_p95_s": 0.95, "ttft_p99_s": 0.99}
    assert (
        "unless on() sum by (le)" in q.histograms["tpot"][0]
    )  # inter_token_latency only without the other
    assert 'DCGM_FI_DEV_GPU_UTIL{namespace="llm"' in q.fields["gpu_utilization_pct"]
    # 7 gauges/rates + 2 histograms + freshness + 4 pod-coverage checks (issue 12), in one query
    assert "{{" not in q.combined and q.combined.count(promql.FIELD_LABEL) == 14


def test_an_override_replaces_one_field_and_null_disables_it() -> None:
    q = prepare(
        target(
            queries={
                "kv_cache_usage": "max(my_kv{ {{selector}} })",
                "gpu_utilization_pct": None,
                "ttft_p99_s": "max(my_ttft_p99)",
                "tpot_p50_s": None,
            },
            rate_window="2m",
        )
    )
    assert q.fields["kv_cache_usage"].startswith('max(my_kv{ namespace="llm"')
    assert "gpu_utilization_pct" not in q.collected and "tpot_p50_s" not in q.collected
    assert "[2m]" in q.fields["arrival_rps"]
    assert q.fields["ttft_p99_s"] == "max(my_ttft_p99)"
    assert set(q.histograms["ttft"][1]) == {"ttft_p50_s", "ttft_p95_s"}


def test_reads_every_field_from_one_query(source) -> None:
    prom = FakeProm()
    r = source(prom).read(prepare(target()), T0)
    assert len(prom.queries) == 1
    assert r.trusted and r.missing == () and r.age_s == pytest.approx(1.0)
    assert r.values["ttft_p95_s"] == 0.4 and r.values["requests_running"] == 60.0


def test_a_missing_series_is_named(source) -> None:
    prom = FakeProm(healthy_values(kv_cache_usage=None))
    r = source(prom).read(prepare(target()), T0)
    assert r.missing == ("kv_cache_usage",) and math.isnan(r.values["kv_cache_usage"])
    assert not r.trusted and r.why == "missing kv_cache_usage"
    assert r.has(["arrival_rps", "requests_waiting"])


def test_nan_is_missing(source) -> None:
    r = source(FakeProm(healthy_values(requests_waiting=math.nan))).read(prepare(target()), T0)
    assert "requests_waiting" in r.missing and not r.trusted


def test_latency_of_an_idle_service_is_zero_not_missing(source) -> None:
    prom = FakeProm(
        healthy_values(
            arrival_rps=0.0, output_tokens_per_s=0.0, ttft_p95_s=math.nan, tpot_p95_s=math.nan
        )
    )
    r = source(prom).read(prepare(target()), T0)
    assert r.trusted and r.values["ttft_p95_s"] == 0.0 and r.values["tpot_p95_s"] == 0.0


def test_nan_latency_under_load_is_missing(source) -> None:
    r = source(FakeProm(healthy_values(ttft_p95_s=math.nan))).read(prepare(target()), T0)
    assert set(r.missing) == {"ttft_p50_s", "ttft_p95_s", "ttft_p99_s"}


def test_percentiles_come_from_one_query_of_the_buckets(source) -> None:
    r = source(FakeProm(healthy_values(ttft_p50_s=0.3, ttft_p95_s=1.7, ttft_p99_s=4.0))).read(
        prepare(target()), T0
    )
    assert (
        r.values["ttft_p50_s"],
        r.values["ttft_p95_s"],
        r.values["ttft_p99_s"],
    ) == pytest.approx((0.3, 1.7, 4.0))
    assert r.values["tpot_p95_s"] == pytest.approx(0.03)


def test_a_missing_histogram_makes_its_percentiles_missing(source) -> None:
    r = source(FakeProm(healthy_values(tpot_p50_s=None))).read(prepare(target()), T0)
    assert set(r.missing) == {"tpot_p50_s", "tpot_p95_s", "tpot_p99_s"}
    assert "tpot histogram: no series" in r.notes


def test_an_overridden_latency_beyond_every_bucket_is_kept(source) -> None:
    q = prepare(target(queries={"ttft_p99_s": "max(my_ttft_p99)"}))
    r = source(FakeProm(healthy_values(ttft_p99_s=math.inf))).read(q, T0)
    assert r.trusted and r.values["ttft_p99_s"] == math.inf


@pytest.mark.parametrize(
    ("q", "buckets", "expected"),
    [
        (
            0.5,
            [(0.1, 2.0), (0.5, 8.0), (math.inf, 10.0)],
            0.3,
        ),  # rank 5 in (0.1, 0.5]: 0.1 + 0.4 x 3/6
        (
            0.95,
            [(0.1, 2.0), (0.5, 8.0), (math.inf, 10.0)],
            0.5,
        ),  # in the +Inf bucket: the largest bound
        (0.1, [(0.1, 2.0), (0.5, 8.0), (math.inf, 10.0)], 0.05),  # first bucket from 0
        (
            0.5,
            [(0.5, 8.0), (0.1, 2.0), (math.inf, 10.0)],
            0.3,
        ),  # order of the series does not matter
        (
            0.5,
            [(0.1, 2.0), (0.5, 1.0), (math.inf, 10.0)],
            0.5,
        ),  # non-monotonic counts are made monotonic
        (0.5, [(0.1, 0.0), (math.inf, 0.0)], math.nan),  # no observations
        (0.5, [(0.1, 1.0), (0.5, 2.0)], math.nan),  # no +Inf bucket
        (1.5, [(0.1, 1.0), (math.inf, 2.0)], math.inf),
    ],
)
def test_histogram_quantile_matches_prometheus(q: float, buckets: list, expected: float) -> None:
    got = promql.histogram_quantile(q, buckets)
    assert (math.isnan(got) and math.isnan(expected)) or got == pytest.approx(expected)


def test_old_samples_are_stale(source) -> None:
    prom = FakeProm()
    prom.newest_sample_age_s = 95.0
    r = source(prom).read(prepare(target(max_staleness_s=60)), T0)
    assert r.stale and not r.trusted and r.why == "newest sample is 95 s old"


def test_an_unreachable_prometheus_is_an_error_not_zeros(source) -> None:
    prom = FakeProm()
    prom.error = TemporaryError("Prometheus at http://x unreachable: NewConnectionError")
    r = source(prom).read(prepare(target()), T0)
    assert r.error and "unreachable" in r.error and not r.trusted
    assert set(r.missing) == set(promql.QUERY_FIELDS)
    assert len(prom.queries) == 2  # one retry, bounded


def test_more_than_one_series_is_missing_with_a_hint(source) -> None:
    class TwoSeries(FakeProm):
        def query(self, expr, time_s):
            out = super().query(expr, time_s)
            return out + [({promql.FIELD_LABEL: "kv_cache_usage", "pod": "b"}, 0.2)]

    r = source(TwoSeries()).read(prepare(target()), T0)
    assert "kv_cache_usage" in r.missing
    assert any("aggregate" in n for n in r.notes)


def test_a_rejected_override_is_found_field_by_field(source) -> None:
    class Picky:
        def __init__(self):
            self.inner = FakeProm()
            self.queries: list[str] = []

        def query(self, expr, time_s):
            self.queries.append(expr)
            if "broken_metric" in expr:
                raise PermanentError("Prometheus rejected the query (bad_data): parse error")
            if promql.FIELD_LABEL in expr:
                return self.inner.query(expr, time_s)
            if expr.startswith("sum by (le)"):
                return [({"le": "0.5"}, 1.0), ({"le": "+Inf"}, 2.0)]
            return [({}, 1.0)]

    client = Picky()
    q = prepare(target(queries={"kv_cache_usage": "sum(broken_metric{"}))
    r = source(client).read(q, T0)
    assert r.missing == ("kv_cache_usage",)
    assert any(n.startswith("kv_cache_usage: Prometheus rejected") for n in r.notes)
    assert len(client.queries) == 1 + len(q.exprs())


def test_read_many_reads_targets_in_parallel(source) -> None:
    prom = FakeProm()
    prom.set("other", arrival_rps=7.0)
    t2 = TargetConfig.model_validate({"namespace": "llm", "deployment": "other"})
    a, b = source(prom).read_many([prepare(target()), prepare(t2)], T0)
    assert (a.values["arrival_rps"], b.values["arrival_rps"]) == (40.0, 7.0)


def test_parse_response_classifies_errors() -> None:
    ok = json.dumps(
        {
            "status": "success",
            "data": {
                "resultType": "vector",
                "result": [
                    {"metric": {"a": "1"}, "value": [T0, "NaN"]},
                    {"metric": {}, "value": [T0, "+Inf"]},
                ],
            },
        }
    ).encode()
    out = parse_response(200, ok)
    assert math.isnan(out[0][1]) and out[1][1] == math.inf and out[0][0] == {"a": "1"}
    bad = json.dumps(
        {"status": "error", "errorType": "bad_data", "error": "parse error at char 3"}
    ).encode()
    with pytest.raises(PermanentError, match="bad_data"):
        parse_response(400, bad)
    with pytest.raises(TemporaryError) as e:
        parse_response(503, b"overloaded", {"Retry-After": "3"})
    assert e.value.delay_s == 3
    with pytest.raises(TemporaryError):
        parse_response(200, b"<html>")
    scalar = json.dumps(
        {"status": "success", "data": {"resultType": "scalar", "result": [T0, "2"]}}
    ).encode()
    assert parse_response(200, scalar) == [({}, 2.0)]


def test_an_unavailable_reading_names_every_field() -> None:
    r = MetricsReading.unavailable(T0, "boom", ("arrival_rps",))
    assert not r.trusted and r.why == "boom" and all(math.isnan(v) for v in r.values.values())


def test_a_wrong_prometheus_url_is_one_reason_not_every_field_missing() -> None:
    """Issue 12: a URL answering 404 (a path behind a gateway, a missing route prefix) used to
    show as every metric missing; it is one unavailable reading naming the setting."""
    for body in (
        b"404 page not found",
        json.dumps({"status": "error", "error": "not found"}).encode(),
    ):
        with pytest.raises(TemporaryError, match="prometheus.url must be the server's root"):
            parse_response(404, body)
