"""Cold-start stages from pod conditions -> a validated `ServiceProfile.cold_start`.

`fixtures/coldstart_pods.json` is what `rlscale sandbox`'s API served for 10 pods started at time
scale 1 (regenerate with `fixtures/make_coldstart_fixture.py`); `coldstart_truth.json` holds the
cold starts the sandbox drew for them. Timestamps are whole seconds, so every comparison with the
truth allows 1 s.
"""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from rlscale.cli.profiles import register
from rlscale.errors import InputError
from rlscale.profiles.coldstart import (
    fit_cold_start,
    ks_distance,
    parse_k8s_time,
    pod_times,
    pods_of,
    triangular,
    with_cold_start,
)
from rlscale.profiles.model import ServiceProfile, load_profile

FIXTURES = Path(__file__).parent / "fixtures"
STAMP_S = 1.0  # Kubernetes timestamps are whole seconds


@pytest.fixture(scope="module")
def pods() -> list[dict[str, Any]]:
    return pods_of(json.loads((FIXTURES / "coldstart_pods.json").read_text()))


@pytest.fixture(scope="module")
def truth() -> dict[str, Any]:
    return json.loads((FIXTURES / "coldstart_truth.json").read_text())


def _stamp(t_s: float) -> str:
    return datetime.fromtimestamp(t_s, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _shift(pod: dict[str, Any], seconds: float, *, keep_created: bool = True) -> dict[str, Any]:
    """The pod with every status time `seconds` later (creation kept)."""
    p = copy.deepcopy(pod)
    for c in p["status"]["conditions"]:
        c["lastTransitionTime"] = _stamp(parse_k8s_time(c["lastTransitionTime"]) + seconds)
    for cs in p["status"]["containerStatuses"]:
        run = cs["state"]["running"]
        run["startedAt"] = _stamp(parse_k8s_time(run["startedAt"]) + seconds)
    if not keep_created:
        created = parse_k8s_time(p["metadata"]["creationTimestamp"])
        p["metadata"]["creationTimestamp"] = _stamp(created + seconds)
    return p


def test_stages_of_the_sandbox_pods_match_the_cold_starts_it_drew(
    pods: list[dict[str, Any]], truth: dict[str, Any]
) -> None:
    fit = fit_cold_start(pods)
    assert len(fit.pods) == 10 and fit.skipped == {}
    assert [s.name for s in fit.stages] == ["scheduling", "container_start", "engine_ready"]
    for t in fit.pods:
        drawn = truth["pods"][t.name]
        assert t.total_s == pytest.approx(drawn["cold_start_s"], abs=STAMP_S)
        assert t.stages()["container_start"] == pytest.approx(drawn["pending_s"], abs=STAMP_S)
        assert t.stages()["scheduling"] == 0.0  # the sandbox schedules at creation
    true_mean = np.mean([p["cold_start_s"] for p in truth["pods"].values()])
    assert fit.observed_mean_s == pytest.approx(true_mean, abs=STAMP_S)
    # the mode that keeps a stage's mean can fall outside [low, high] (skewed samples): clipped,
    # the fitted mean moves; that is part of the fit error the profile records
    assert fit.fitted_mean_s == pytest.approx(fit.observed_mean_s, abs=0.5)
    # 10 whole-second samples against the fitted sum: a KS distance well below 0.4
    assert 0.0 < fit.ks_distance < 0.4
    for s in fit.stages:
        assert s.low_s <= s.mode_s <= s.high_s and s.probability == 1.0


def test_written_into_a_validated_profile_with_sources(pods: list[dict[str, Any]]) -> None:
    base = load_profile("llama-3.1-8b-h100")
    fit = fit_cold_start(pods)
    out = with_cold_start(base, fit, "the sandbox API, namespace default")
    assert out.latency == base.latency and out.name == base.name
    assert [s.name for s in out.cold_start] == [s.name for s in fit.stages]
    assert out.mean_cold_start_s == pytest.approx(fit.fitted_mean_s)
    assert out.sources["cold_start"].startswith("10 pods from the sandbox API")
    assert out.sources["cold_start_fit_error"].startswith("KS distance")
    assert "llama" not in out.sources["cold_start"]
    kept = {k for k in base.sources if not k.startswith("cold_start")}
    assert kept < set(out.sources) and kept != set(base.sources)  # old stage notes dropped
    assert {k for k in out.sources if k.startswith("cold_start")} == {
        "cold_start",
        "cold_start_fit_error",
    }
    ServiceProfile.model_validate(out.model_dump())  # round-trips


def test_a_new_node_is_its_own_stage_with_its_probability(pods: list[dict[str, Any]]) -> None:
    """4 of 10 pods waited for a node the cluster autoscaler created (Unschedulable, then
    scheduled 5 s after the node turned Ready, 55 s after the pod was created)."""
    edited = []
    created = parse_k8s_time(pods[0]["metadata"]["creationTimestamp"])
    for i, pod in enumerate(pods):
        if i < 4:
            p = _shift(pod, 60.0)
            p["spec"]["nodeName"] = "gpu-node-new"
            edited.append(p)
        else:
            edited.append(pod)
    node = {
        "kind": "Node",
        "metadata": {"name": "gpu-node-new", "creationTimestamp": _stamp(created + 20)},
        "status": {
            "conditions": [
                {"type": "Ready", "status": "True", "lastTransitionTime": _stamp(created + 55)}
            ]
        },
    }
    old_node = {
        "kind": "Node",
        "metadata": {"name": "sandbox-node", "creationTimestamp": _stamp(created - 86400)},
    }
    fit = fit_cold_start(edited, {"gpu-node-new": node, "sandbox-node": old_node})
    stages = {s.name: s for s in fit.stages}
    assert list(stages) == ["node_provisioning", "scheduling", "container_start", "engine_ready"]
    node_stage = stages["node_provisioning"]
    assert node_stage.probability == 0.4
    assert node_stage.low_s == node_stage.high_s == pytest.approx(55.0, abs=STAMP_S)
    assert stages["scheduling"].high_s == pytest.approx(5.0, abs=STAMP_S)
    assert stages["scheduling"].low_s == 0.0
    # the fitted sum has the mixture's mean
    assert fit.fitted_mean_s == pytest.approx(fit.observed_mean_s, abs=0.5)


def test_pods_that_say_nothing_reliable_are_left_out_and_counted(
    pods: list[dict[str, Any]],
) -> None:
    not_ready = copy.deepcopy(pods[0])
    for c in not_ready["status"]["conditions"]:
        if c["type"] == "Ready":
            c["status"] = "False"
    restarted = copy.deepcopy(pods[1])
    restarted["status"]["containerStatuses"][0]["restartCount"] = 2
    terminating = copy.deepcopy(pods[2])
    terminating["metadata"]["deletionTimestamp"] = terminating["metadata"]["creationTimestamp"]
    unstamped = copy.deepcopy(pods[3])
    del unstamped["status"]["containerStatuses"][0]["state"]["running"]["startedAt"]
    assert pod_times(not_ready) == "not_ready"
    assert pod_times(restarted) == "restarted"
    assert pod_times(terminating) == "terminating"
    assert pod_times(unstamped) == "missing_timestamp"
    fit = fit_cold_start([not_ready, restarted, terminating, unstamped, *pods[4:]])
    assert len(fit.pods) == 6
    assert fit.skipped == {
        "not_ready": 1,
        "restarted": 1,
        "terminating": 1,
        "missing_timestamp": 1,
    }
    out = with_cold_start(load_profile("llama-3.1-8b-h100"), fit, "x")
    assert (
        "left out: 1 missing timestamp, 1 not ready, 1 restarted, 1 terminating"
        in (out.sources["cold_start"])
    )
    with pytest.raises(ValueError, match="no pod reached Ready"):
        fit_cold_start([not_ready, restarted])


def test_triangular_keeps_the_mean_and_ks() -> None:
    s = triangular("x", np.array([10.0, 12.0, 20.0]))
    assert (s.low_s, s.high_s) == (10.0, 20.0) and s.mean_s == pytest.approx(14.0)
    skew = triangular("x", np.array([10.0, 10.0, 10.0, 30.0]))  # mean 15 -> mode clipped to low
    assert skew.mode_s == 10.0
    assert ks_distance(np.array([1.0, 2.0]), np.array([1.0, 2.0])) == 0.0
    assert ks_distance(np.array([1.0]), np.array([5.0])) == 1.0
    assert parse_k8s_time("2026-12-03T07:37:53Z") == pytest.approx(1796283473.0)
    assert parse_k8s_time("soon") is None


def _app() -> typer.Typer:
    app = typer.Typer()
    register(app)

    @app.command("noop")
    def noop() -> None:
        pass

    return app


def test_cli_from_a_kubectl_dump_writes_a_profile_that_loads(tmp_path: Path) -> None:
    out = tmp_path / "mine.yaml"
    result = CliRunner().invoke(
        _app(),
        [
            "profiles",
            "cold-start",
            "--pods-json",
            str(FIXTURES / "coldstart_pods.json"),
            "--out",
            str(out),
            "--name",
            "mine",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "engine_ready" in result.output and "KS distance" in result.output
    p = load_profile(out)
    assert p.name == "mine" and len(p.cold_start) == 3
    assert "coldstart_pods.json" in p.sources["cold_start"]


def test_cli_bad_dump_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "pods.json"
    bad.write_text('{"kind": "Deployment"}')
    result = CliRunner().invoke(
        _app(), ["profiles", "cold-start", "--pods-json", str(bad), "--out", str(tmp_path / "o")]
    )
    assert isinstance(result.exception, InputError)
    assert "kubectl get pods -o json" in str(result.exception)


@pytest.mark.slow
def test_cli_reads_the_sandbox_api(tmp_path: Path) -> None:
    """`rlscale profiles cold-start` against a running sandbox (official client, kubeconfig):
    three pods at time scale 1, their stages within a second of what the sandbox drew."""
    from rlscale.sandbox.runner import Sandbox

    truth_profile = json.loads((FIXTURES / "coldstart_truth.json").read_text())["profile"]
    truth_profile["cold_start"] = [{"name": "e", "low_s": 2.0, "mode_s": 3.0, "high_s": 4.0}]
    with Sandbox(
        ServiceProfile.model_validate(truth_profile),
        replicas=3,
        time_scale=1.0,
        prometheus=False,
        pending_share=0.5,
        namespace="coldstart",
    ) as sb:
        sb.wait_for(lambda: sb.ready_count() == 3, timeout_s=60)
        assert sb.controller is not None
        drawn = {
            p["metadata"]["name"]: sb.controller.timelines[p["metadata"]["uid"]].cold_start_s
            for p in sb.pods()
        }
        out = tmp_path / "live.yaml"
        result = CliRunner().invoke(
            _app(),
            [
                "profiles",
                "cold-start",
                "--kubeconfig",
                str(sb.kubeconfig_path),
                "--namespace",
                "coldstart",
                "--selector",
                "app=llm",
                "--out",
                str(out),
            ],
        )
    assert result.exit_code == 0, result.output
    p = load_profile(out)
    assert p.mean_cold_start_s == pytest.approx(np.mean(list(drawn.values())), abs=STAMP_S)
    assert p.sources["cold_start"].startswith("3 pods from the Kubernetes API, namespace coldstart")
    assert {s.name for s in p.cold_start} == {"scheduling", "container_start", "engine_ready"}
