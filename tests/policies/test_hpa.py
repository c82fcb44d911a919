"""The HPA: the replica calculator per metric, and the behaviour (through `safety.clamp` with the
manifest's limits) on hand-computed cases from the Kubernetes documentation
(kubernetes.io/docs/tasks/run-application/horizontal-pod-autoscale/)."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import yaml

from rlscale.contract import FIELDS, IntervalMetrics
from rlscale.errors import InputError
from rlscale.policies.hpa import (
    DEFAULT_MANIFEST,
    HPAPolicy,
    config_from_manifest,
    desired_replicas,
    load_hpa_manifest,
    parse_quantity,
)
from rlscale.safety import ClampState, clamp


def metrics(**kw: float) -> IntervalMetrics:
    base = {f: 0.0 for f in FIELDS}
    base.update(interval_s=15.0, replicas_ready=4.0, replicas_desired=4.0)
    base.update(kw)
    return IntervalMetrics(**base)


def manifest(
    metrics_: list[dict], behavior: dict | None = None, min_r: int = 1, max_r: int = 100
) -> dict:
    spec = {"minReplicas": min_r, "maxReplicas": max_r, "metrics": metrics_}
    if behavior is not None:
        spec["behavior"] = behavior
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "t"},
        "spec": spec,
    }


def pods_metric(name: str, target: str) -> dict:
    return {
        "type": "Pods",
        "pods": {
            "metric": {"name": name},
            "target": {"type": "AverageValue", "averageValue": target},
        },
    }


QUEUE_100M = config_from_manifest(manifest([pods_metric("request_queue_size", "100m")]))
QUEUE_100M_MISSING = config_from_manifest(
    manifest([pods_metric("request_queue_size", "100m")]), starting_pods="missing"
)


def test_quantities_parse_as_kubernetes_writes_them():
    assert parse_quantity("200m") == pytest.approx(0.2)
    assert parse_quantity("70") == 70.0
    assert parse_quantity("1.5k") == 1500.0
    assert parse_quantity("2Ki") == 2048.0
    assert parse_quantity(3) == 3.0
    with pytest.raises(ValueError):
        parse_quantity("ten")


def test_doubles_replicas_when_the_metric_is_twice_its_target():
    # docs: "if the current metric value is 200m, and the desired value is 100m, the number of
    # replicas will be doubled"; 4 pods averaging 0.2 queued -> ceil(4 x 2.0) = 8
    n, _, _ = desired_replicas(QUEUE_100M, metrics(requests_waiting=0.8))
    assert n == 8


def test_halves_replicas_when_the_metric_is_half_its_target():
    # docs: "If the current value is instead 50m, you'll halve the number of replicas"
    n, _, _ = desired_replicas(QUEUE_100M, metrics(requests_waiting=0.2))
    assert n == 2


def test_ratio_within_the_ten_percent_tolerance_keeps_the_current_count():
    n, reason, _ = desired_replicas(QUEUE_100M, metrics(requests_waiting=4 * 0.105))
    assert n == 4 and "tolerance" in reason
    # tolerance is on the ratio before rounding: 5 pods at 1.09x -> keep 5 (rounded first: 6)
    n, _, _ = desired_replicas(
        QUEUE_100M, metrics(replicas_ready=5, replicas_desired=5, requests_waiting=5 * 0.109)
    )
    assert n == 5
    n, _, _ = desired_replicas(
        QUEUE_100M, metrics(replicas_ready=5, replicas_desired=5, requests_waiting=5 * 0.111)
    )
    assert n == 6


def test_desired_is_the_max_over_metrics():
    cfg = config_from_manifest(
        manifest([pods_metric("gpu_utilization", "70"), pods_metric("request_queue_size", "10")])
    )
    # gpu 35% -> ceil(4 x 0.5) = 2; queue 60 total = 15/pod -> ceil(4 x 1.5) = 6
    n, reason, recs = desired_replicas(
        cfg, metrics(gpu_utilization_pct=35.0, requests_waiting=60.0)
    )
    assert [r.replicas for r in recs] == [2, 6] and n == 6
    assert "gpu_utilization" in reason and "request_queue_size" in reason


def test_starting_pods_count_as_missing_metrics():
    # starting_pods="missing" (running, not answering /metrics yet):
    # scale-down with 2 starting pods: they count at the target, u' = (0.5 x 4 + 2) / 6, ceil(4.0) = 4
    n, _, _ = desired_replicas(
        QUEUE_100M_MISSING,
        metrics(requests_waiting=4 * 0.05, replicas_starting=2, replicas_desired=6),
    )
    assert n == 4
    # scale-up with 2 starting pods: they count as 0, u' = 1.5 x 4 / 6 = 1.0 -> wait for them
    n, _, _ = desired_replicas(
        QUEUE_100M_MISSING,
        metrics(requests_waiting=4 * 0.15, replicas_starting=2, replicas_desired=6),
    )
    assert n == 6
    # a bigger surge still scales: u = 3 -> u' = 2, ceil(2 x 6) = 12
    n, _, _ = desired_replicas(
        QUEUE_100M_MISSING,
        metrics(requests_waiting=4 * 0.3, replicas_starting=2, replicas_desired=6),
    )
    assert n == 12


def test_starting_pods_are_pending_by_default():
    # upstream ignores Pending pods on a scale-down: u = 0.5 over the 4 ready pods -> ceil(2.0) = 2
    n, _, _ = desired_replicas(
        QUEUE_100M, metrics(requests_waiting=4 * 0.05, replicas_starting=2, replicas_desired=6)
    )
    assert n == 2
    # ... and counts them at 0 on a scale-up, as a missing pod: u' = 1.5 x 4 / 6 = 1.0 -> 6
    n, _, _ = desired_replicas(
        QUEUE_100M, metrics(requests_waiting=4 * 0.15, replicas_starting=2, replicas_desired=6)
    )
    assert n == 6


def test_starting_pods_option_from_the_annotation_and_refused_when_unknown():
    m = manifest([pods_metric("request_queue_size", "100m")])
    m["metadata"]["annotations"] = {"rlscale.io/starting-pods": "missing"}
    assert config_from_manifest(m).starting_pods == "missing"
    assert config_from_manifest(m, starting_pods="pending").starting_pods == "pending"
    m["metadata"]["annotations"] = {"rlscale.io/starting-pods": "loading"}
    with pytest.raises(InputError, match="'pending' or 'missing'") as e:
        config_from_manifest(m, "hpa.yaml")
    assert e.value.field == "metadata.annotations.rlscale.io/starting-pods"


def test_an_unreadable_metric_never_causes_a_scale_down():
    cfg = config_from_manifest(
        manifest([pods_metric("gpu_utilization", "70"), pods_metric("request_queue_size", "10")])
    )
    n, reason, _ = desired_replicas(
        cfg, metrics(gpu_utilization_pct=math.nan, requests_waiting=0.0)
    )
    assert n == 4 and "not scaling down" in reason
    # ... but a readable metric may still scale up
    n, _, _ = desired_replicas(cfg, metrics(gpu_utilization_pct=math.nan, requests_waiting=80.0))
    assert n == 8
    n, reason, _ = desired_replicas(
        cfg, metrics(gpu_utilization_pct=math.nan, requests_waiting=math.nan)
    )
    assert n == 4 and "no metric readable" in reason


def test_external_average_value_divides_the_total_by_the_target():
    ext = {
        "type": "External",
        "external": {
            "metric": {"name": "arrival_rate"},
            "target": {"type": "AverageValue", "averageValue": "20"},
        },
    }
    cfg = config_from_manifest(manifest([ext]))
    assert desired_replicas(cfg, metrics(arrival_rps=130.0))[0] == 7  # ceil(130 / 20)
    assert (
        desired_replicas(cfg, metrics(arrival_rps=82.0))[0] == 4
    )  # 82 / (20 x 4) = 1.025: tolerance


def run_clamp(cfg, proposals, current, period_s=15.0):
    """Clamp a proposal sequence (one per sync period) with the config's limits."""
    state = ClampState.empty(1, cfg.limits, period_s)
    out = []
    for i, p in enumerate(proposals):
        current = clamp(p, current, i * period_s, cfg.limits, state).replicas
        out.append(current)
    return out


def test_scale_down_percent_and_pods_policies_select_the_biggest_change():
    # docs: Pods 4 / 60 s and Percent 10 / 60 s, selectPolicy Max; from 80 towards 10 the Percent
    # policy removes 8 (80 -> 72), then 72 * 0.9 = 64.8 -> 64, ...; at 40 or fewer Pods (4) wins
    beh = {
        "scaleDown": {
            "stabilizationWindowSeconds": 0,
            "policies": [
                {"type": "Pods", "value": 4, "periodSeconds": 60},
                {"type": "Percent", "value": 10, "periodSeconds": 60},
            ],
        }
    }
    cfg = config_from_manifest(manifest([pods_metric("request_queue_size", "10")], beh))
    got = run_clamp(cfg, [10] * 60, 80)
    per_minute = got[::4]
    assert per_minute[:14] == [72, 64, 57, 51, 45, 40, 36, 32, 28, 24, 20, 16, 12, 10]
    assert got[1:4] == [72, 72, 72]  # nothing more inside the 60 s period


def test_select_policy_min_takes_the_smallest_change():
    beh = {
        "scaleDown": {
            "stabilizationWindowSeconds": 0,
            "selectPolicy": "Min",
            "policies": [
                {"type": "Pods", "value": 4, "periodSeconds": 60},
                {"type": "Percent", "value": 10, "periodSeconds": 60},
            ],
        }
    }
    cfg = config_from_manifest(manifest([pods_metric("request_queue_size", "10")], beh))
    got = run_clamp(cfg, [10] * 88, 80)[::4]
    # Min keeps the smaller change: 4 pods while 10 % > 4 (80 -> 76, not 72); below 40 the 10 %
    # (rounded down: 28 -> 25.2 -> 25) is smaller
    assert got == [
        76,
        72,
        68,
        64,
        60,
        56,
        52,
        48,
        44,
        40,
        36,
        32,
        28,
        25,
        22,
        19,
        17,
        15,
        13,
        11,
        10,
        10,
    ]


def test_a_disabled_direction_never_moves():
    beh = {"scaleDown": {"selectPolicy": "Disabled"}}
    cfg = config_from_manifest(manifest([pods_metric("request_queue_size", "10")], beh))
    assert run_clamp(cfg, [3] * 30, 10) == [10] * 30


def test_scale_down_stabilisation_follows_the_highest_recommendation_in_the_window():
    # docs: "uses the highest value from the specified interval"; window 300 s, sync 15 s
    beh = {
        "scaleDown": {
            "stabilizationWindowSeconds": 300,
            "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}],
        }
    }
    cfg = config_from_manifest(manifest([pods_metric("request_queue_size", "10")], beh))
    props = [10] + [4] * 30
    got = run_clamp(cfg, props, 10)
    # the 10 recommended at t=0 holds while it is inside the window (strictly younger than 300 s)
    assert got[:20] == [10] * 20
    assert got[20] == 4  # t = 300 s: the t=0 recommendation has left the window


def test_scale_up_stabilisation_waits_for_a_sustained_rise():
    beh = {"scaleUp": {"stabilizationWindowSeconds": 60}}
    cfg = config_from_manifest(manifest([pods_metric("request_queue_size", "10")], beh))
    # a one-interval blip to 12 is never acted on; a sustained 12 is, once the 60 s window
    # (strictly younger samples) holds only 12s: at t = 60 s, then at the default rate
    # (+max(100 %, 4 pods) per 15 s): 4 -> 8 -> 12
    assert run_clamp(cfg, [4, 12, 4, 4, 4, 4], 4) == [4] * 6
    assert run_clamp(cfg, [4] + [12] * 6, 4) == [4, 4, 4, 4, 8, 12, 12]


def test_without_behavior_the_legacy_normalisation_applies():
    # upstream leaves a missing `behavior` nil and normalises with the legacy rules: a 300 s
    # down window over recommendations, at most max(2 x current, 4) per sync
    cfg = config_from_manifest(manifest([pods_metric("request_queue_size", "10")]))
    assert cfg.limits.legacy_behavior and cfg.limits.scale_down.stabilization_window_s == 300
    # 1 -> 4 -> 8 -> 16 -> 32 (was 1 -> 5 -> 10 -> 20 -> 40 under the v2 `behavior` defaults)
    assert run_clamp(cfg, [50] * 4, 1) == [4, 8, 16, 32]
    assert cfg.limits.tolerance == 0  # the policy applies tolerance to the ratio itself


def test_an_empty_behavior_gets_the_v2_defaults():
    cfg = config_from_manifest(manifest([pods_metric("request_queue_size", "10")], behavior={}))
    up, down = cfg.limits.scale_up, cfg.limits.scale_down
    assert not cfg.limits.legacy_behavior
    assert up.stabilization_window_s == 0 and down.stabilization_window_s == 300
    assert {(p.type, p.value, p.period_s) for p in up.policies} == {
        ("Percent", 100, 15),
        ("Pods", 4, 15),
    }
    # +max(100 %, 4 pods) per 15 s: 1 -> 5 -> 10 -> 20 -> 40
    assert run_clamp(cfg, [50] * 4, 1) == [5, 10, 20, 40]


def test_the_shipped_manifest_is_the_issue_baseline():
    cfg = load_hpa_manifest(DEFAULT_MANIFEST)
    lim = cfg.limits
    assert (lim.min_replicas, lim.max_replicas) == (2, 20)
    assert [(m.name, m.source.field, m.target) for m in cfg.metrics] == [
        ("gpu_utilization", "gpu_utilization_pct", 70.0),
        ("request_queue_size", "requests_waiting", 10.0),
    ]
    assert (
        lim.scale_up.stabilization_window_s == 60 and lim.scale_down.stabilization_window_s == 300
    )
    assert [(p.type, p.value, p.period_s) for p in lim.scale_up.policies] == [("Pods", 4, 60)]
    assert [(p.type, p.value, p.period_s) for p in lim.scale_down.policies] == [
        ("Percent", 10, 120)
    ]


def test_the_shipped_hpa_adds_four_pods_a_minute_under_a_sustained_surge():
    pol = HPAPolicy.from_manifest()
    state = ClampState.empty(1, pol.limits, 15.0)
    cur, got = 4, []
    for i in range(17):
        # busy GPUs (95 % > 70 % target): desired ceil(4 x 95/70) grows with the ready count
        m = metrics(
            time_s=15.0 * i, replicas_ready=cur, replicas_desired=cur, gpu_utilization_pct=95.0
        )
        d = pol.decide([m])
        cur = clamp(d.replicas, cur, 15.0 * i, pol.limits, state).replicas
        got.append(cur)
    # t=0: ceil(4 x 95/70) = 6. The 60 s up-window keeps the min of the last minute's
    # recommendations, so each new count waits a minute: 9 = ceil(6 x 1.357) at t=60, 13 at
    # t=120; at t=180 the recommendation 18 exceeds Pods 4 per 60 s (13 + 4 = 17); then maxReplicas
    assert got == [6, 6, 6, 6, 9, 9, 9, 9, 13, 13, 13, 13, 17, 17, 17, 17, 20]


def test_policy_reason_names_each_metric():
    d = HPAPolicy.from_manifest().decide([metrics(gpu_utilization_pct=100.0, requests_waiting=8.0)])
    assert d.replicas == 6 and "gpu_utilization 100/pod vs 70" in d.reason


def write(tmp_path, data, name="hpa.yaml"):
    p = tmp_path / name
    p.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return p


def test_an_unsupported_metric_name_is_an_error_naming_file_field_and_metric(tmp_path):
    p = write(
        tmp_path, manifest([pods_metric("gpu_utilization", "70"), pods_metric("cpu_load", "3")])
    )
    with pytest.raises(InputError) as e:
        load_hpa_manifest(p)
    msg = str(e.value)
    assert str(p) in msg and "spec.metrics.1.pods.metric.name" in msg and "'cpu_load'" in msg
    assert "request_queue_size" in msg  # lists what is supported


def test_a_resource_metric_is_refused_with_the_alternative(tmp_path):
    res = {
        "type": "Resource",
        "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 60}},
    }
    with pytest.raises(InputError, match="Resource.*not supported"):
        load_hpa_manifest(write(tmp_path, manifest([res])))


def test_a_kv_cache_target_in_percent_is_caught(tmp_path):
    with pytest.raises(InputError, match="800m"):
        load_hpa_manifest(write(tmp_path, manifest([pods_metric("kv_cache_usage", "80")])))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("spec: [unclosed", "not valid YAML"),
        ("", "empty file"),
        (
            yaml.safe_dump(
                {
                    "apiVersion": "autoscaling/v2",
                    "kind": "HorizontalPodAutoscaler",
                    "spec": {"metrics": [pods_metric("request_queue_size", "1")]},
                }
            ),
            "spec.maxReplicas",
        ),
        (yaml.safe_dump(manifest([pods_metric("request_queue_size", "lots")])), "quantity"),
        (
            yaml.safe_dump(
                {
                    **manifest([pods_metric("request_queue_size", "1")]),
                    "apiVersion": "autoscaling/v1",
                }
            ),
            "apiVersion",
        ),
    ],
)
def test_unreadable_manifests_get_one_line_errors(tmp_path, text, expected):
    with pytest.raises(InputError, match=expected):
        load_hpa_manifest(write(tmp_path, text))


def test_a_missing_manifest_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_hpa_manifest(tmp_path / "nope.yaml")


def test_decide_uses_only_the_last_interval():
    pol = HPAPolicy.from_manifest()
    old = metrics(gpu_utilization_pct=100.0, requests_waiting=500.0)
    new = replace(old, gpu_utilization_pct=70.0, requests_waiting=40.0)
    assert pol.decide([old, new]).replicas == 4


def test_a_misspelt_behaviour_field_is_an_error_naming_the_field(tmp_path):
    # `stabilisationWindowSeconds` (British spelling) used to be ignored: a 0 s window, silently
    beh = {"scaleUp": {"stabilisationWindowSeconds": 120}}
    p = write(tmp_path, manifest([pods_metric("request_queue_size", "10")], behavior=beh))
    with pytest.raises(InputError) as e:
        load_hpa_manifest(p)
    assert e.value.field == "spec.behavior.scaleUp.stabilisationWindowSeconds"
    assert (
        str(e.value)
        == f"{p}, field 'spec.behavior.scaleUp.stabilisationWindowSeconds': unknown field"
    )


@pytest.mark.parametrize(
    ("where", "field"),
    [
        (lambda m: m["spec"].update(maxReplica=5), "spec.maxReplica"),
        (
            lambda m: m["spec"]["metrics"][0]["pods"]["target"].update(averagevalue="3"),
            "spec.metrics.0.pods.target.averagevalue",
        ),
        (lambda m: m.update(specs={}), "specs"),
    ],
)
def test_unknown_fields_anywhere_in_the_modelled_spec_are_errors(where, field):
    m = manifest([pods_metric("request_queue_size", "10")])
    where(m)
    with pytest.raises(InputError, match="unknown field") as e:
        config_from_manifest(m, "hpa.yaml")
    assert e.value.field == field


def test_a_manifest_as_the_cluster_returns_it_still_loads():
    m = manifest(
        [pods_metric("request_queue_size", "10")],
        behavior={"scaleDown": {"stabilizationWindowSeconds": 60}},
    )
    m["metadata"].update(
        namespace="llm",
        labels={"app": "llm"},
        uid="1234",
        resourceVersion="42",
        annotations={"note": "x"},
        managedFields=[{"manager": "kubectl"}],
    )
    m["spec"]["scaleTargetRef"] = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "llm"}
    m["spec"]["metrics"][0]["pods"]["metric"]["selector"] = {"matchLabels": {"model": "8b"}}
    m["spec"]["metrics"].append(
        {
            "type": "Object",
            "object": {
                "describedObject": {"apiVersion": "v1", "kind": "Service", "name": "llm"},
                "metric": {"name": "arrival_rate"},
                "target": {"type": "Value", "value": "100"},
            },
        }
    )
    m["status"] = {"currentReplicas": 3, "desiredReplicas": 3}
    cfg = config_from_manifest(m, "hpa.yaml")
    assert cfg.limits.scale_down.stabilization_window_s == 60.0 and len(cfg.metrics) == 2


def test_every_shipped_manifest_loads():
    from rlscale.policies.hpa import MANIFEST_DIR

    paths = sorted(MANIFEST_DIR.glob("*.yaml"))
    assert paths
    for p in paths:
        assert load_hpa_manifest(p).metrics


def test_a_per_direction_tolerance_is_read():
    m = manifest(
        [pods_metric("request_queue_size", "10")], behavior={"scaleUp": {"tolerance": "50m"}}
    )
    cfg = config_from_manifest(m, "hpa.yaml")
    assert cfg.tolerances.scale_up == pytest.approx(0.05) and cfg.tolerances.scale_down == 0.1
    # 10 pods at 1.07 x target: outside the 5 % scale-up band -> ceil(10.7) = 11 (10 % would hold)
    ten = metrics(replicas_ready=10, replicas_desired=10, requests_waiting=10 * 10.7)
    assert desired_replicas(cfg, ten)[0] == 11
    assert (
        desired_replicas(
            config_from_manifest(manifest([pods_metric("request_queue_size", "10")], behavior={})),
            ten,
        )[0]
        == 10
    )


def test_a_negative_or_unreadable_tolerance_is_an_error():
    for bad, expected in (("-1", "greater than or equal to 0"), ("lots", "quantity")):
        m = manifest(
            [pods_metric("request_queue_size", "10")], behavior={"scaleUp": {"tolerance": bad}}
        )
        with pytest.raises(InputError, match=expected) as e:
            config_from_manifest(m, "hpa.yaml")
        assert e.value.field == "spec.behavior.scaleUp.tolerance"


def test_a_ratio_of_exactly_one_with_missing_pods_holds():
    # upstream fills missing pods only when u < 1 or u > 1: 4 pods at the target and 2 starting
    # (running, no sample) hold 6; filling them at 0 would scale down to ceil(4 / 6 x 6) = 4
    n, _, _ = desired_replicas(
        QUEUE_100M_MISSING,
        metrics(requests_waiting=4 * 0.1, replicas_starting=2, replicas_desired=6),
    )
    assert n == 6


def test_the_tolerance_band_includes_its_edges():
    # (1 - down) <= u <= (1 + up): 10 pods at exactly 1.1 x target stay 10 (|1 - u| <= 0.1 in
    # floats is 0.10000000000000009 > 0.1 and scaled to 11)
    ten = metrics(replicas_ready=10, replicas_desired=10)
    assert desired_replicas(QUEUE_100M, replace(ten, requests_waiting=10 * 0.11))[0] == 10
    assert desired_replicas(QUEUE_100M, replace(ten, requests_waiting=10 * 0.09))[0] == 10


def test_average_value_divides_by_the_pods_not_spec_replicas():
    # spec.replicas 6 but only 4 pods exist: 42 / (10 x 4) = 1.05 is within tolerance -> 4 pods
    # (dividing by spec.replicas gave 42 / 60 = 0.7 -> ceil(4.2) = 5)
    ext = {
        "type": "External",
        "external": {
            "metric": {"name": "arrival_rate"},
            "target": {"type": "AverageValue", "averageValue": "10"},
        },
    }
    cfg = config_from_manifest(manifest([ext]))
    r = desired_replicas(cfg, metrics(arrival_rps=42.0, replicas_ready=4, replicas_desired=6))[2][0]
    assert r.replicas == 4 and r.note == "within tolerance"


def test_decide_takes_an_optional_pod_view():
    from rlscale.policies.hpa import PodSample

    pol = HPAPolicy(QUEUE_100M)
    m = metrics(requests_waiting=0.2, replicas_ready=4, replicas_desired=4)
    # fleet view: 0.2 / 4 ready = 0.05 per pod -> ceil(2.0) = 2
    assert pol.decide([m]).replicas == 2
    # pod view: only 2 of the 4 pods were scraped (0.1 each): u = 1 exactly -> hold 4
    pods = [
        PodSample("a", values={"requests_waiting": 0.1}),
        PodSample("b", values={"requests_waiting": 0.1}),
        PodSample("c"),
        PodSample("d"),
    ]
    assert pol.decide([m], pods=pods).replicas == 4
