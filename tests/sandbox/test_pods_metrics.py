"""The emulated vLLM pods' /metrics and the workload replay that drives them."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from rlscale.sandbox.pods import (
    TTFT_BUCKETS_S,
    PodMetrics,
    bucket_fractions,
    quantile_points,
    render,
)
from rlscale.sandbox.replay import WorkloadCursor, constant_workload
from rlscale.sandbox.runner import Sandbox
from rlscale.traces.workload import Workload

OPENMETRICS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
    "text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)  # what Prometheus 2.42 sends


@dataclass
class Snap:
    """The fields of rlscale.serving.model.ServingSnapshot the pods read."""

    requests_waiting: float = 8.0
    requests_running: float = 40.0
    kv_cache_usage: float = 0.5
    gpu_utilization_pct: float = 90.0
    ttft_p50_s: float = 0.2
    ttft_p95_s: float = 0.6
    ttft_p99_s: float = 1.2
    tpot_p50_s: float = 0.02
    tpot_p95_s: float = 0.03
    tpot_p99_s: float = 0.05
    started: float = 10.0
    completed: float = 10.0
    dropped: float = 0.0
    prompt_tokens_served: float = 10_240.0
    output_tokens_served: float = 2_560.0


class RecordingModel:
    """A fake serving model: records the ready replicas it is asked to serve with."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, float, float]] = []

    def step(
        self,
        ready_replicas: int,
        arrivals: float,
        prompt_tokens: float,
        output_tokens: float,
        dt_s: float,
    ) -> Snap:
        self.calls.append((ready_replicas, arrivals, dt_s))
        return Snap(requests_waiting=4.0 * max(arrivals, 0.0) / max(ready_replicas, 1))


def families(text: str) -> dict[str, object]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def sample(text: str, name: str, **labels: str) -> float:
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    raise KeyError(name)


def scrape(url: str, accept: str | None = None) -> tuple[str, str]:
    req = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    with urllib.request.urlopen(req, timeout=5) as r:
        return r.read().decode(), r.headers["Content-Type"]


def test_pod_metrics_use_vllm_and_dcgm_names_labels_and_buckets() -> None:
    m = PodMetrics("meta-llama/Llama-3.1-8B-Instruct", gpus=2)
    m.apply(Snap(), share=0.5, output_tokens=256)
    body, ctype = render(m, "text/plain")
    assert ctype.startswith("text/plain; version=0.0.4")
    fams = families(body.decode())
    expected = {
        "vllm:num_requests_waiting": "gauge",
        "vllm:num_requests_running": "gauge",
        "vllm:gpu_cache_usage_perc": "gauge",
        "vllm:kv_cache_usage_perc": "gauge",
        "vllm:time_to_first_token_seconds": "histogram",
        "vllm:time_per_output_token_seconds": "histogram",
        "vllm:inter_token_latency_seconds": "histogram",
        "vllm:e2e_request_latency_seconds": "histogram",
        "vllm:prompt_tokens": "counter",
        "vllm:generation_tokens": "counter",
        "vllm:request_success": "counter",
        "DCGM_FI_DEV_GPU_UTIL": "gauge",
    }
    assert {name: fams[name].type for name in expected} == expected  # type: ignore[attr-defined]
    text = body.decode()
    model = {"model_name": "meta-llama/Llama-3.1-8B-Instruct"}
    assert sample(text, "vllm:num_requests_waiting", **model) == 4.0  # 8 waiting over 2 pods
    assert sample(text, "vllm:kv_cache_usage_perc", **model) == 0.5  # a per-replica mean, not split
    assert sample(text, "vllm:prompt_tokens_total", **model) == 5120.0
    assert sample(text, "vllm:request_success_total", finished_reason="stop", **model) == 5.0
    ttft_les = [
        s.labels["le"]
        for s in fams["vllm:time_to_first_token_seconds"].samples
        if s.name.endswith("_bucket")
    ]  # type: ignore[attr-defined]
    assert [float(le) for le in ttft_les[:-1]] == list(TTFT_BUCKETS_S) and ttft_les[-1] == "+Inf"
    gpus = [s.labels for s in fams["DCGM_FI_DEV_GPU_UTIL"].samples]  # type: ignore[attr-defined]
    assert [g["gpu"] for g in gpus] == ["0", "1"] and all(
        g["UUID"].startswith("GPU-") for g in gpus
    )
    assert sample(text, "DCGM_FI_DEV_GPU_UTIL", gpu="0") == 90.0
    assert "pod" not in text  # pod/namespace are target labels, added by Prometheus


def test_openmetrics_scrape_spells_vllm_names_with_underscores_like_prometheus_client(
    tiny_metrics: PodMetrics,
) -> None:
    body, ctype = render(tiny_metrics, OPENMETRICS_ACCEPT)
    text = body.decode()
    assert ctype.startswith("application/openmetrics-text")
    assert "\nvllm_num_requests_waiting{" in text and "\nvllm:num_requests_waiting{" not in text
    assert text.rstrip().endswith("# EOF")
    pinned, _ = render(tiny_metrics, OPENMETRICS_ACCEPT, spelling="colon")
    assert "\nvllm:num_requests_waiting{" in pinned.decode()
    underscore, _ = render(tiny_metrics, "text/plain", spelling="underscore")
    assert (
        "\nvllm_num_requests_waiting{" in underscore.decode() and "vllm:" not in underscore.decode()
    )


@pytest.fixture
def tiny_metrics() -> PodMetrics:
    m = PodMetrics("test/tiny-llm")
    m.apply(Snap(), share=1.0, output_tokens=256)
    return m


def test_counters_and_histograms_only_grow_and_histograms_are_cumulative() -> None:
    m = PodMetrics("m")
    previous = None
    for i in range(20):
        m.apply(
            Snap(completed=float(i % 3), started=float(i % 4), ttft_p50_s=0.1 * (i + 1)),
            share=1 / 3,
            output_tokens=200,
        )
        current = (
            m.prompt_tokens,
            m.generation_tokens,
            m.request_success,
            m.ttft.count,
            m.e2e.count,
            m.ttft.total,
        )
        if previous is not None:
            assert all(c >= p for c, p in zip(current, previous, strict=True))
        previous = current
        for h in (m.ttft, m.tpot, m.e2e):
            assert np.all(np.diff(h.cumulative) >= -1e-9)
            assert h.cumulative[-1] <= h.count + 1e-9


def test_bucket_shares_follow_the_percentiles() -> None:
    q = quantile_points(0.2, 0.6, 1.2)
    cdf, mean = bucket_fractions(q, (0.2, 0.6, 1.2, 1e9))
    assert cdf == pytest.approx([0.5, 0.95, 0.99, 1.0])
    assert 0.2 < mean < 0.6
    flat = quantile_points(0.05, 0.05, 0.05)
    cdf, mean = bucket_fractions(flat, (0.04, 0.06))
    assert cdf == pytest.approx([0.0, 1.0]) and mean == pytest.approx(0.05)


def test_workload_cursor_conserves_arrivals_across_steps_and_laps() -> None:
    w = Workload(
        name="w",
        source="test",
        interval_s=10.0,
        arrivals=np.array([10.0, 0.0, 30.0]),
        prompt_tokens=np.array([100.0, 500.0, 300.0]),
        output_tokens=np.array([10.0, 50.0, 30.0]),
    )
    cursor = WorkloadCursor(w)
    edges = np.linspace(0.0, 75.0, 41)
    total = sum(cursor.take(a, b)[0] for a, b in zip(edges[:-1], edges[1:], strict=True))
    assert total == pytest.approx(
        40.0 * 2 + 10.0
    )  # two 30 s laps, then 15 s: bin 0 and half of empty bin 1
    arrivals, prompt, output = cursor.take(0.0, 30.0)
    assert arrivals == pytest.approx(40.0) and prompt == pytest.approx((10 * 100 + 30 * 300) / 40)
    assert cursor.take(12.0, 18.0) == (0.0, 500.0, 50.0)  # an empty bin keeps its sizes
    assert WorkloadCursor(w, loop=False).take(30.0, 60.0)[0] == 0.0


def test_ready_pods_serve_metrics_and_not_ready_pods_refuse_scrapes(
    make_sandbox: Callable[..., Sandbox],
) -> None:
    sb = make_sandbox(replicas=1, time_scale=20)
    (pod,) = sb.pods()
    port = int(pod["metadata"]["annotations"]["prometheus.io/port"])
    assert pod["spec"]["containers"][0]["ports"] == [
        {
            "name": "http",
            "containerPort": port,
            "protocol": "TCP",
        }
    ]  # vLLM serves the API, /metrics and sleep mode on one port, replacing the template's 8000
    with pytest.raises(urllib.error.URLError):
        scrape(f"http://127.0.0.1:{port}/metrics")  # still cold-starting: nothing listens yet
    sb.wait_for_ready(1, timeout_s=10)
    text, _ = scrape(f"http://127.0.0.1:{port}/metrics")
    assert "vllm:num_requests_waiting{" in text
    assert list(sb.pod_metrics_urls()) == [f"default/{pod['metadata']['name']}"]
    assert scrape(f"http://127.0.0.1:{port}/health")[0] == ""


def test_replay_serves_with_the_ready_pods_only_and_splits_totals_evenly(
    make_sandbox: Callable[..., Sandbox],
) -> None:
    model = RecordingModel()
    # time_scale 20: the pods need at least 1 s to turn Ready, so the first steps see none.
    sb = make_sandbox(
        replicas=2,
        time_scale=20,
        workload=constant_workload(10.0),
        model_factory=lambda _p: model,
        replay_period_s=0.05,
    )
    sb.wait_for(lambda: len(model.calls) >= 3, timeout_s=5)
    assert {c[0] for c in model.calls[:3]} == {0}  # nothing Ready yet: the model sees 0 replicas
    sb.wait_for_ready(2, timeout_s=10)
    n = len(model.calls)
    sb.wait_for(lambda: len(model.calls) >= n + 3, timeout_s=5)
    assert model.calls[-1][0] == 2
    # Arrivals follow the simulated clock: 10 req/s x dt.
    ready, arrivals, dt = model.calls[-1]
    assert arrivals == pytest.approx(10.0 * dt)
    step = sb.last_step
    assert step is not None and step.ready_replicas == 2
    texts = [scrape(url)[0] for url in sb.pod_metrics_urls().values()]
    assert all("vllm:num_requests_waiting{" in t for t in texts) and len(texts) == 2
    # Read both pods between two replay steps (on the sandbox's loop) to compare their shares.
    names = [p["metadata"]["name"] for p in sb.pods()]

    def shares(_store: object) -> list[float]:
        assert sb.fleet is not None and sb.last_step is not None
        per_pod = [sb.fleet.metrics_of(sb.namespace, n) for n in names]
        return [m.waiting for m in per_pod if m is not None] + [
            sb.last_step.snapshot.requests_waiting
        ]

    a, b, total = sb.call(shares)
    assert a == pytest.approx(b) and a + b == pytest.approx(total)


def test_the_sandbox_runs_the_real_serving_model_against_the_profile(
    make_sandbox: Callable[..., Sandbox],
) -> None:
    sb = make_sandbox(replicas=1, workload=constant_workload(5.0), replay_period_s=0.05)
    sb.wait_for_ready(1, timeout_s=10)
    sb.wait_for(
        lambda: (
            sb.last_step is not None
            and sb.last_step.ready_replicas == 1
            and sb.last_step.snapshot.completed > 0
        ),
        timeout_s=5,
    )
    snap = sb.last_step.snapshot  # type: ignore[union-attr]
    assert snap.requests_running > 0 and 0 < snap.kv_cache_usage <= 1
