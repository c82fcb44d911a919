"""Fixtures for the sandbox tests: sandboxes that are always stopped, the official client and
kubectl pointed at them, and one session-wide Prometheus process."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from rlscale.profiles.model import ServiceProfile
from rlscale.sandbox.prometheus import INSTALL_HINT, PrometheusProcess, find_binary
from rlscale.sandbox.runner import Sandbox

# Cold start 20-40 s: at time_scale 60 a pod turns Ready after 0.33-0.67 s of wall time.
TINY_PROFILE = {
    "name": "tiny-test",
    "model": "test/tiny-llm",
    "gpu": "H100-SXM-80GB",
    "gpus_per_replica": 1,
    "latency": {
        "tpot_base_ms": 6.7,
        "tpot_ms_per_seq": 0.15,
        "prefill_base_ms": 20.0,
        "prefill_ms_per_token": 0.1,
        "kv_cache_tokens": 400_000,
        "max_batch": 256,
    },
    "cold_start": [{"name": "weights_and_engine", "low_s": 20.0, "mode_s": 30.0, "high_s": 40.0}],
    "warm_wake": {"name": "warm_wake", "low_s": 3.0, "mode_s": 5.0, "high_s": 8.0},
    "gpu_usd_per_hour": 3.0,
    "typical_prompt_tokens": 1024,
    "typical_output_tokens": 256,
}
TIME_SCALE = 60.0


@pytest.fixture(scope="session")
def tiny_profile() -> ServiceProfile:
    return ServiceProfile.model_validate(TINY_PROFILE)


@pytest.fixture
def make_sandbox(tiny_profile: ServiceProfile) -> Iterator[Callable[..., Sandbox]]:
    """Start sandboxes (no Prometheus unless given) that are stopped after the test, pass or fail."""
    started: list[Sandbox] = []

    def make(**kwargs: Any) -> Sandbox:
        kwargs.setdefault("prometheus", False)
        kwargs.setdefault("time_scale", TIME_SCALE)
        sb = Sandbox(kwargs.pop("profile", tiny_profile), kwargs.pop("workload", None), **kwargs)
        started.append(sb)
        return sb.start()

    try:
        yield make
    finally:
        for sb in started:
            sb.stop()


@pytest.fixture
def sandbox(make_sandbox: Callable[..., Sandbox]) -> Sandbox:
    return make_sandbox()


def api_client_for(sb: Sandbox) -> k8s.ApiClient:
    """The official client configured from the sandbox's kubeconfig, as a user would."""
    cfg = k8s.Configuration()
    k8s_config.load_kube_config(config_file=str(sb.kubeconfig_path), client_configuration=cfg)
    cfg.retries = 0  # tests see each answer, not urllib3's retries
    return k8s.ApiClient(cfg)


@pytest.fixture
def client_for() -> Iterator[Callable[[Sandbox], k8s.ApiClient]]:
    """Official clients for any sandbox, closed after the test."""
    made: list[k8s.ApiClient] = []

    def make(sb: Sandbox) -> k8s.ApiClient:
        made.append(api_client_for(sb))
        return made[-1]

    try:
        yield make
    finally:
        for c in made:
            c.close()


@pytest.fixture
def api(sandbox: Sandbox, client_for: Callable[[Sandbox], k8s.ApiClient]) -> k8s.ApiClient:
    return client_for(sandbox)


@pytest.fixture(scope="session")
def kubectl_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # kubectl caches discovery under $HOME/.kube/cache; keep it out of the real home.
    return tmp_path_factory.mktemp("kubectl-home")


@pytest.fixture
def kubectl(kubectl_home: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    binary = shutil.which("kubectl")
    if binary is None:
        pytest.fail("kubectl is not on PATH (the image ships client-go 1.32's kubectl)")

    def run(
        sb: Sandbox, *args: str, timeout_s: float = 30.0, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [binary, "--kubeconfig", str(sb.kubeconfig_path), *args],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            env={**os.environ, "HOME": str(kubectl_home)},
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} failed ({result.returncode}): {result.stderr}"
            )
        return result

    return run


def require_prometheus_binary() -> str:
    """The binary, or skip — but fail under CI=true, where a missing binary is a broken image."""
    binary = find_binary()
    if binary is None:
        message = f"the prometheus binary is missing (install it: {INSTALL_HINT})"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return binary


@pytest.fixture(scope="session")
def prometheus_binary() -> str:
    return require_prometheus_binary()


@pytest.fixture(scope="session")
def prometheus(
    tmp_path_factory: pytest.TempPathFactory, prometheus_binary: str
) -> Iterator[PrometheusProcess]:
    """One Prometheus for the whole session (startup and the first scrape take seconds); each
    test's sandbox adds its own file_sd file and uses its own namespace. It also runs the
    `vllm-raw` job, which scrapes without the relabel rule."""
    binary = prometheus_binary
    prom = PrometheusProcess(
        tmp_path_factory.mktemp("prometheus"), binary=binary, scrape_interval_s=0.5, raw_job=True
    )
    try:
        prom.start()
        yield prom
    finally:
        prom.stop()
