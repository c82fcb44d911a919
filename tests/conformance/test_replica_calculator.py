"""Upstream `pkg/controller/podautoscaler/replica_calculator_test.go`, ported case by case where
rlscale models the feature (see tests/conformance/README.md for what is not ported and why).

Each case id is the upstream test name (and sub-test name). Values are upstream's, in milli-units.
"""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from rlscale.policies.hpa import (
    PodGroups,
    PodSample,
    Tolerances,
    desired_replicas,
    group_pods,
    metric_recommendation,
    plain_metric_replicas,
)
from tests.conformance.upstream import (
    POD_FIELD,
    Pod,
    cpu_pods,
    desired,
    external_metric,
    fixture_pods,
    hpa,
    interval,
    milli,
    object_metric,
    pod_samples,
    pods_metric,
)

T, F = True, False
R, P, X = "Running", "Pending", "Failed"


# --- CPU Resource cases that are the same computation as a Pods metric ------------------------

# (upstream name, currentReplicas, pods, target %, tolerances or None, expected replicas)
RESOURCE_CASES = [
    ("TestReplicaCalcResourceScale/scale up", 3, cpu_pods([300, 500, 700], 1000), 30, None, 5),
    (
        "TestReplicaCalcResourceScale/scale up: failed pods ignored",
        2,
        cpu_pods([500, 700], 1000, 4, ready=[T, T, F, F], phase=[R, R, X, X]),
        30,
        None,
        4,
    ),
    (
        "TestReplicaCalcResourceScale/scale up: pods being deleted are ignored",
        2,
        cpu_pods([500, 700], 1000, 4, ready=[T, T, F, F], deleting=[F, F, T, T]),
        30,
        None,
        4,
    ),
    (
        "TestReplicaCalcResourceScale/scale down",
        5,
        cpu_pods([100, 300, 500, 250, 250], 1000),
        50,
        None,
        3,
    ),
    # item 6 of issue 12: Pending pods are unready, ignored on a scale-down (was: missing at the
    # target -> 5)
    (
        "TestReplicaCalcResourceScale/scale down: exclude unscheduled pods",
        5,
        cpu_pods([100], 1000, 5, ready=[T, F, F, F, F], phase=[R, P, P, P, P]),
        50,
        None,
        1,
    ),
    (
        "TestReplicaCalcResourceScale/scale down: failed pods ignored",
        5,
        cpu_pods(
            [100, 300, 500, 250, 250], 1000, 7, ready=[T] * 5 + [F, F], phase=[R] * 5 + [X, X]
        ),
        50,
        None,
        3,
    ),
    (
        "TestReplicaCalcResourceScale/scale down: pods being deleted are ignored",
        5,
        cpu_pods(
            [100, 300, 500, 250, 250], 1000, 7, ready=[T] * 5 + [F, F], deleting=[F] * 5 + [T, T]
        ),
        50,
        None,
        3,
    ),
    # requests 0.9/1.0/1.1: sum/sum utilisation = mean usage / mean request, no pod missing
    ("TestReplicaCalcTolerance", 3, cpu_pods([1010, 1030, 1020], 1000), 100, None, 3),
    # item 2: two of four Running pods have no sample -> missing, at 100 % of the request on a
    # scale-down (= the target here): (495 + 2000) / 4000 -> ceil(2.495) = 3
    ("TestReplicaCalcMissingMetrics", 4, cpu_pods([400, 95], 1000, 4), 100, None, 3),
    ("TestReplicaCalcMissingMetricsNoChangeEq", 2, cpu_pods([1000], 1000, 2), 100, None, 2),
    ("TestReplicaCalcMissingMetricsNoChangeGt", 2, cpu_pods([1900], 1000, 2), 100, None, 2),
    ("TestReplicaCalcMissingMetricsNoChangeLt", 2, cpu_pods([600], 1000, 2), 100, None, 2),
    # item 4: per-direction tolerances, upstream Tolerances{scaleDown, scaleUp}
    (
        "TestReplicaCalcConfigurableTolerance/Outside of a 0% tolerance",
        3,
        cpu_pods([909, 1010, 1111], 1000),
        100,
        (0.0, 0.0),
        4,
    ),
    (
        "TestReplicaCalcConfigurableTolerance/Within a 200% scale-up tolerance",
        3,
        cpu_pods([1890, 1910, 1900], 1000),
        100,
        (0.1, 2.0),
        3,
    ),
    (
        "TestReplicaCalcConfigurableTolerance/Outside 8% scale-up tolerance (and superfuous scale-down tolerance)",
        3,
        cpu_pods([1100, 1080, 1090], 1000),
        100,
        (2.0, 0.08),
        4,
    ),
    (
        "TestReplicaCalcConfigurableTolerance/Within a 36% scale-down tolerance",
        3,
        cpu_pods([660, 640, 650], 1000),
        100,
        (0.36, 0.1),
        3,
    ),
    (
        "TestReplicaCalcConfigurableTolerance/Outside a 34% scale-down tolerance",
        3,
        cpu_pods([660, 640, 650], 1000),
        100,
        (0.34, 0.1),
        2,
    ),
]


@pytest.mark.parametrize(
    ("current", "pods", "target_pct", "tolerances", "expected"),
    [c[1:] for c in RESOURCE_CASES],
    ids=[c[0] for c in RESOURCE_CASES],
)
def test_resource_cases_as_a_pods_metric(current, pods, target_pct, tolerances, expected):
    cfg = hpa([pods_metric(str(target_pct))], tolerances=tolerances)
    assert desired(cfg, current, pods) == expected


def test_computed_tolerance_alg_implementation():
    """TestReplicaCalcComputedToleranceAlgImplementation: 10 pods at 150m, requests averaging
    300m (50 % used); a target just past the tolerance scales to ceil(0.884 x 10) = 9, one just
    inside it (0.4 % closer) holds 10. The target is a truncated percentage, as upstream's."""
    start, used, requested = 10, 150, 300
    tol = 0.1
    for bump, expected in ((0.01, None), (0.004, start)):
        target = abs(1 / ((requested / used) * (1 - tol))) + bump
        target_pct = int(target * 100)
        want = expected if expected is not None else math.ceil(used / (requested * target) * start)
        pods = cpu_pods([used] * start, requested)
        assert desired(hpa([pods_metric(str(target_pct))]), start, pods) == want


# --- custom metrics (Pods, Object, External) -----------------------------------------------------

# (upstream name, currentReplicas, pods, metric spec, fleet value (milli) or nan, tolerances, expected)
NAN = float("nan")
CM_CASES = [
    (
        "TestReplicaCalcScaleUpCM",
        3,
        fixture_pods(3, [20000, 10000, 30000]),
        pods_metric(milli(15000)),
        NAN,
        None,
        4,
    ),
    # readiness does not matter to a non-CPU metric (groupPods checks it for CPU only)
    (
        "TestReplicaCalcScaleUpCMUnreadyHotCpuNoLessScale",
        3,
        fixture_pods(3, [50000, 10000, 30000], ready=[T, T, F]),
        pods_metric(milli(15000)),
        NAN,
        None,
        6,
    ),
    (
        "TestReplicaCalcScaleUpCMUnreadyHotCpuScaleWouldScaleDown",
        3,
        fixture_pods(3, [50000, 15000, 30000], ready=[F, T, F]),
        pods_metric(milli(15000)),
        NAN,
        None,
        7,
    ),
    (
        "TestReplicaCalcScaleUpCMObject",
        3,
        fixture_pods(3, []),
        object_metric(milli(15000)),
        20000,
        None,
        4,
    ),
    (
        "TestReplicaCalcScaleUpCMPerPodObject",
        3,
        fixture_pods(3, []),
        object_metric(milli(5000), "AverageValue"),
        20000,
        None,
        4,
    ),
    # Value targets scale the ready pods: ceil(5 x 1) = 5, not 15
    (
        "TestReplicaCalcScaleUpCMObjectIgnoresUnreadyPods",
        3,
        fixture_pods(3, [], ready=[F, T, F]),
        object_metric(milli(10000)),
        50000,
        None,
        5,
    ),
    (
        "TestReplicaCalcScaleUpCMExternalIgnoresUnreadyPods",
        3,
        fixture_pods(3, [], ready=[F, T, F]),
        external_metric(milli(4400)),
        8600,
        None,
        2,
    ),
    (
        "TestReplicaCalcScaleUpPerPodCMExternal",
        3,
        fixture_pods(3, []),
        external_metric(milli(2150), "AverageValue"),
        8600,
        None,
        4,
    ),
    (
        "TestReplicaCalcScaleDownCM",
        5,
        fixture_pods(5, [12000] * 5),
        pods_metric(milli(20000)),
        NAN,
        None,
        3,
    ),
    (
        "TestReplicaCalcScaleDownPerPodCMObject",
        5,
        fixture_pods(5, []),
        object_metric(milli(2000), "AverageValue"),
        6000,
        None,
        3,
    ),
    (
        "TestReplicaCalcScaleDownCMObject",
        5,
        fixture_pods(5, []),
        object_metric(milli(20000)),
        12000,
        None,
        3,
    ),
    (
        "TestReplicaCalcScaleDownCMExternal",
        5,
        fixture_pods(5, []),
        external_metric(milli(14334)),
        8600,
        None,
        3,
    ),
    (
        "TestReplicaCalcScaleDownPerPodCMExternal",
        5,
        fixture_pods(5, []),
        external_metric(milli(2867), "AverageValue"),
        8600,
        None,
        3,
    ),
    (
        "TestReplicaCalcToleranceCM",
        3,
        fixture_pods(3, [20000, 21000, 21000]),
        pods_metric(milli(20000)),
        NAN,
        None,
        3,
    ),
    (
        "TestReplicaCalcToleranceCMObject",
        3,
        fixture_pods(3, []),
        object_metric(milli(20000)),
        20666,
        None,
        3,
    ),
    (
        "TestReplicaCalcTolerancePerPodCMObject",
        4,
        fixture_pods(4, []),
        object_metric(milli(5000), "AverageValue"),
        20166,
        None,
        4,
    ),
    (
        "TestReplicaCalcToleranceCMExternal",
        3,
        fixture_pods(3, []),
        external_metric(milli(8888)),
        8600,
        None,
        3,
    ),
    (
        "TestReplicaCalcTolerancePerPodCMExternal",
        3,
        fixture_pods(3, []),
        external_metric(milli(2900), "AverageValue"),
        8600,
        None,
        3,
    ),
    (
        "TestReplicaCalcConfigurableToleranceCM",
        3,
        fixture_pods(3, [20000, 21000, 21000]),
        pods_metric(milli(20000)),
        NAN,
        (0.1, 0.01),
        4,
    ),
    (
        "TestReplicaCalcConfigurableToleranceCMObject",
        3,
        fixture_pods(3, []),
        object_metric(milli(20000)),
        20666,
        (0.1, 0.01),
        4,
    ),
    (
        "TestReplicaCalcConfigurableTolerancePerPodCMObject",
        4,
        fixture_pods(4, []),
        object_metric(milli(5000), "AverageValue"),
        20208,
        (0.1, 0.01),
        5,
    ),
    (
        "TestReplicaCalcConfigurableToleranceCMExternal",
        3,
        fixture_pods(3, []),
        external_metric(milli(8800)),
        8900,
        (0.1, 0.01),
        4,
    ),
    (
        "TestReplicaCalcConfigurableTolerancePerPodCMExternal",
        3,
        fixture_pods(3, []),
        external_metric(milli(2800), "AverageValue"),
        8600,
        (0.1, 0.01),
        4,
    ),
    # item 3: a usage ratio of exactly 1 leaves the missing pods out and holds (was: scaled down
    # to the 3 pods with samples)
    (
        "TestPlainMetricReplicaCalcMissingMetricsNoChangeEq",
        5,
        fixture_pods(5, [20000, 19000, 21000]),
        pods_metric(milli(20000)),
        NAN,
        None,
        5,
    ),
    # a surge pod without a sample: counting it at the target would scale up on a scale-down
    (
        "TestReplicaCalcDuringRollingUpdateWithMaxSurgeCM",
        2,
        fixture_pods(3, [10000, 10000]),
        pods_metric(milli(17000)),
        NAN,
        None,
        2,
    ),
]


@pytest.mark.parametrize(
    ("current", "pods", "metric", "fleet", "tolerances", "expected"),
    [c[1:] for c in CM_CASES],
    ids=[c[0] for c in CM_CASES],
)
def test_custom_metric_cases(current, pods, metric, fleet, tolerances, expected):
    cfg = hpa([metric], tolerances=tolerances)
    assert desired(cfg, current, pods, fleet) == expected


def test_empty_metrics_are_unreadable_and_hold():
    """TestReplicaCalcEmptyMetrics: no pod has a sample -> an error upstream (the metric gives no
    recommendation); rlscale marks it unreadable, and with no readable metric holds the count."""
    cfg = hpa([pods_metric("100")])
    assert desired(cfg, 4, cpu_pods([], 1000, 3)) == 4


# --- groupPods (the parts a non-CPU metric uses) ------------------------------------------------

GROUP_CASES = [
    # (upstream sub-test, pods, (with samples, unready, missing))
    ("TestGroupPods/void", [], (0, 0, 0)),
    (
        "TestGroupPods/count in a ready pod - memory",
        [PodSample("bentham", "Succeeded", values={POD_FIELD: 1.0})],
        (1, 0, 0),
    ),
    ("TestGroupPods/a missing pod", [PodSample("epicurus", "Succeeded")], (0, 0, 1)),
    ("TestGroupPods/pending pods are unreadied", [PodSample("unscheduled", "Pending")], (0, 1, 0)),
    (
        "TestGroupPods/ignore pods with deletion timestamps",
        [PodSample("deleted", "Pending", deleting=True, values={POD_FIELD: 1.0})],
        (0, 0, 0),
    ),
    (
        "TestGroupPods/ignore pods in a failed state",
        [PodSample("failed", "Failed", values={POD_FIELD: 1.0})],
        (0, 0, 0),
    ),
]


@pytest.mark.parametrize(
    ("pods", "expected"), [c[1:] for c in GROUP_CASES], ids=[c[0] for c in GROUP_CASES]
)
def test_group_pods(pods, expected):
    g = group_pods(pods, POD_FIELD)
    assert (g.with_samples, g.unready, g.missing) == expected


def test_the_fleet_view_matches_the_pod_view_when_every_ready_pod_has_a_sample():
    """rlscale's own check: on the simulator's record (every Ready pod scraped) the fleet-level
    totals give the pod-level answer, for each upstream Pods case with no missing pod."""
    checked = 0
    for name, current, pods, metric, _, tolerances, expected in CM_CASES:
        if metric["type"] != "Pods" or any(p.sample is None for p in pods):
            continue
        cfg = hpa([metric], tolerances=tolerances)
        total = sum(p.sample or 0.0 for p in pods) / 1000.0
        m = replace(
            interval(current, pods),
            replicas_ready=float(len(pods)),
            replicas_starting=0.0,
            **{POD_FIELD: total},
        )
        assert desired_replicas(cfg, m)[0] == expected, name
        checked += 1
    assert checked >= 6


def test_plain_metric_replicas_fills_missing_pods_only_off_the_target():
    """calcPlainMetricReplicas: at u < 1 missing pods count at the target, at u > 1 at 0, at
    u = 1 not at all (so the count holds)."""
    tol = Tolerances()
    # u = 0.5 over 2 samples, 2 missing at the target: (1 + 2) / 4 = 0.75 -> ceil(3) = 3
    assert plain_metric_replicas(PodGroups(1.0, 2, 2, 0), 1.0, 4, tol)[0] == 3
    # u = 2 over 2 samples, 2 missing at 0: 4 / 4 = 1.0 -> within tolerance, hold 4
    assert plain_metric_replicas(PodGroups(4.0, 2, 2, 0), 1.0, 4, tol)[0] == 4
    # u = 1 exactly with 2 missing: hold (not ceil(2 / 4 x 4) = 2)
    assert plain_metric_replicas(PodGroups(2.0, 2, 2, 0), 1.0, 4, tol)[0] == 4


def test_a_ready_pod_without_a_sample_no_longer_counts_as_zero_load():
    """Item 2 of issue 12 on the pod view: 4 Running pods, 2 of them scraped at 1.5 x target.
    Dividing the total by the 4 Ready pods (0.75 x target) scaled down to 3; upstream takes the
    mean over the samples (u = 1.5), counts the 2 unscraped pods at 0 on this scale-up
    (u' = 0.75), sees the direction flip and holds 4."""
    cfg = hpa([pods_metric("10")])
    pods = [Pod(15000), Pod(15000), Pod(None), Pod(None)]
    assert desired(cfg, 4, pods) == 4


def test_object_average_value_divides_by_the_pods_not_spec_replicas():
    """GetObjectPerPodMetricReplicas(statusReplicas, ...): during a scale-up to 6 with 4 pods
    created, 40 / (10 x 4) = 1.0 is within tolerance and proposes the 4 pods (spec.replicas 6
    would have given 0.67 and ceil(40 / 10) = 4 as well, but through a scale-down verdict)."""
    cfg = hpa([object_metric("10", "AverageValue")])
    rec_pods = fixture_pods(4, [])
    m = interval(6, rec_pods, 40000)
    r = metric_recommendation(cfg.metrics[0], m, 6, cfg.tolerances, pods=pod_samples(rec_pods))
    assert r.replicas == 4 and r.ratio == pytest.approx(1.0) and r.note == "within tolerance"
