"""Upstream `pkg/controller/podautoscaler/horizontal_test.go`, ported case by case where rlscale
models the feature (see tests/conformance/README.md for what is not ported and why).

Whole-sync cases (`reconcileAutoscaler`) run the policy on the pod view and then the clamp with
the manifest's behaviour, with upstream's controller memory: a test case whose `recommendations`
is nil makes the controller record the current count first (`recordInitialRecommendation`); an
empty list does not. Upstream sets `scaleUpLimitFactor = 8` for its tests; rlscale keeps the
production 2 and no ported case reaches either limit unless said.
"""

from __future__ import annotations

import pytest

from rlscale.safety import SafetyLimits, ScalingPolicy, ScalingRules
from tests.conformance.upstream import (
    Pod,
    clamp_once,
    cpu_pods,
    events,
    external_metric,
    fixture_pods,
    hpa,
    milli,
    object_metric,
    pods_metric,
    reconcile,
)

T, F = True, False
R, X = "Running", "Failed"
NAN = float("nan")
NIL = None  # upstream `recommendations: nil`: the controller seeds the current count
EMPTY: list = []  # upstream `recommendations: []timestampedRecommendation{}`
MIN = 60.0


def unreadable_metric() -> dict:
    """A second metric that cannot be read (upstream: an invalid `CheddarCheese` source or an
    external metrics API that errors): an External metric whose value is NaN."""
    return external_metric("1")


# (upstream name, min, max, specReplicas, pods, metrics, fleet value, recommendations, expected)
SYNC_CASES = [
    ("TestScaleUp", 2, 6, 3, cpu_pods([300, 500, 700], 1000), [pods_metric("30")], NAN, NIL, 5),
    (
        "TestScaleUpIgnoresFailedPods",
        2,
        6,
        2,
        cpu_pods([500, 700], 1000, 4, ready=[T, T, F, F], phase=[R, R, X, X]),
        [pods_metric("30")],
        NAN,
        NIL,
        4,
    ),
    (
        "TestScaleUpIgnoresDeletionPods",
        2,
        6,
        2,
        cpu_pods([500, 700], 1000, 4, ready=[T, T, F, F], deleting=[F, F, T, T]),
        [pods_metric("30")],
        NAN,
        NIL,
        4,
    ),
    # the scale target's kind (Deployment, ReplicaSet) is not an input
    (
        "TestScaleUpDeployment",
        2,
        6,
        3,
        cpu_pods([300, 500, 700], 1000),
        [pods_metric("30")],
        NAN,
        NIL,
        5,
    ),
    (
        "TestScaleUpReplicaSet",
        2,
        6,
        3,
        cpu_pods([300, 500, 700], 1000),
        [pods_metric("30")],
        NAN,
        NIL,
        5,
    ),
    (
        "TestScaleUpCM",
        2,
        6,
        3,
        fixture_pods(3, [20000, 10000, 30000]),
        [pods_metric("15")],
        NAN,
        NIL,
        4,
    ),
    (
        "TestScaleUpCMUnreadyAndHotCpuNoLessScale",
        2,
        6,
        3,
        fixture_pods(3, [50000, 10000, 30000], ready=[T, T, F]),
        [pods_metric("15")],
        NAN,
        NIL,
        6,
    ),
    (
        "TestScaleUpCMUnreadyandCpuHot",
        2,
        6,
        3,
        fixture_pods(3, [50000, 15000, 30000], ready=[F, T, F]),
        [pods_metric("15")],
        NAN,
        NIL,
        6,
    ),
    (
        "TestScaleUpHotCpuNoScaleWouldScaleDown",
        2,
        6,
        3,
        fixture_pods(3, [50000, 15000, 30000]),
        [pods_metric("15")],
        NAN,
        NIL,
        6,
    ),
    ("TestScaleUpCMObject", 2, 6, 3, fixture_pods(3, []), [object_metric("15")], 20000, NIL, 4),
    (
        "TestScaleUpPerPodCMObject",
        2,
        6,
        3,
        fixture_pods(3, []),
        [object_metric("10", "AverageValue")],
        40000,
        NIL,
        4,
    ),
    (
        "TestScaleUpCMExternal",
        2,
        6,
        3,
        fixture_pods(3, []),
        [external_metric(milli(6666))],
        8600,
        NIL,
        4,
    ),
    (
        "TestScaleUpPerPodCMExternal",
        2,
        6,
        3,
        fixture_pods(3, []),
        [external_metric(milli(2222), "AverageValue")],
        8600,
        NIL,
        4,
    ),
    (
        "TestScaleDown",
        2,
        6,
        5,
        cpu_pods([100, 300, 500, 250, 250], 1000),
        [pods_metric("50")],
        NAN,
        EMPTY,
        3,
    ),
    # item 1 of issue 12: the same scale-down right after the controller starts waits
    (
        "TestScaleDownStabilizeInitialSize",
        2,
        6,
        5,
        cpu_pods([100, 300, 500, 250, 250], 1000),
        [pods_metric("50")],
        NAN,
        NIL,
        5,
    ),
    ("TestScaleDownCM", 2, 6, 5, fixture_pods(5, [12000] * 5), [pods_metric("20")], NAN, EMPTY, 3),
    ("TestScaleDownCMObject", 2, 6, 5, fixture_pods(5, []), [object_metric("20")], 12000, EMPTY, 3),
    (
        "TestScaleDownPerPodCMObject",
        2,
        6,
        5,
        fixture_pods(5, []),
        [object_metric("20", "AverageValue")],
        60000,
        EMPTY,
        3,
    ),
    (
        "TestScaleDownCMExternal",
        2,
        6,
        5,
        fixture_pods(5, []),
        [external_metric(milli(14400))],
        8600,
        EMPTY,
        3,
    ),
    (
        "TestScaleDownPerPodCMExternal",
        2,
        6,
        5,
        fixture_pods(5, []),
        [external_metric(milli(3000), "AverageValue")],
        8600,
        EMPTY,
        3,
    ),
    (
        "TestScaleDownIgnoresFailedPods",
        2,
        6,
        5,
        cpu_pods(
            [100, 300, 500, 250, 250], 1000, 7, ready=[T] * 5 + [F, F], phase=[R] * 5 + [X, X]
        ),
        [pods_metric("50")],
        NAN,
        EMPTY,
        3,
    ),
    (
        "TestScaleDownIgnoresDeletionPods",
        2,
        6,
        5,
        cpu_pods(
            [100, 300, 500, 250, 250], 1000, 7, ready=[T] * 5 + [F, F], deleting=[F] * 5 + [T, T]
        ),
        [pods_metric("50")],
        NAN,
        EMPTY,
        3,
    ),
    (
        "TestTolerance",
        1,
        5,
        3,
        cpu_pods([1010, 1030, 1020], 1000),
        [pods_metric("100")],
        NAN,
        NIL,
        3,
    ),
    (
        "TestToleranceCM",
        1,
        5,
        3,
        fixture_pods(3, [20000, 20001, 21000]),
        [pods_metric("20")],
        NAN,
        NIL,
        3,
    ),
    ("TestToleranceCMObject", 1, 5, 3, fixture_pods(3, []), [object_metric("20")], 20050, NIL, 3),
    (
        "TestToleranceCMExternal",
        2,
        6,
        4,
        fixture_pods(4, []),
        [external_metric(milli(8666))],
        8600,
        NIL,
        4,
    ),
    (
        "TestTolerancePerPodCMObject",
        2,
        6,
        4,
        fixture_pods(4, []),
        [object_metric(milli(2200), "AverageValue")],
        8600,
        NIL,
        4,
    ),
    (
        "TestTolerancePerPodCMExternal",
        2,
        6,
        4,
        fixture_pods(4, []),
        [external_metric(milli(2200), "AverageValue")],
        8600,
        NIL,
        4,
    ),
    # requests 0.9/1.0/1.1 (mean 1.0): no pod missing, so the mean-usage Pods metric agrees
    ("TestMinReplicas", 2, 5, 3, cpu_pods([10, 95, 10], 1000), [pods_metric("90")], NAN, EMPTY, 2),
    (
        "TestMinReplicasDesiredZero",
        2,
        5,
        3,
        cpu_pods([0, 0, 0], 1000),
        [pods_metric("90")],
        NAN,
        EMPTY,
        2,
    ),
    ("TestTooFewReplicas", 3, 5, 2, [], [pods_metric("90")], NAN, NIL, 3),
    ("TestTooManyReplicas", 3, 5, 10, [], [pods_metric("90")], NAN, NIL, 5),
    (
        "TestMaxReplicas",
        2,
        5,
        3,
        cpu_pods([8000, 9500, 1000], 1000),
        [pods_metric("90")],
        NAN,
        NIL,
        5,
    ),
    # item 2: 2 of 4 pods unscraped count as missing, not as zero load (rlscale had 2)
    (
        "TestMissingMetrics",
        2,
        6,
        4,
        cpu_pods([400, 95], 1000, 4),
        [pods_metric("100")],
        NAN,
        EMPTY,
        3,
    ),
    ("TestEmptyMetrics", 2, 6, 4, cpu_pods([], 1000, 4), [pods_metric("100")], NAN, NIL, 4),
    ("TestEventCreated", 1, 5, 1, cpu_pods([200], 200), [pods_metric("50")], NAN, NIL, 2),
    ("TestEventNotCreated", 1, 5, 2, cpu_pods([200, 200], 400), [pods_metric("50")], NAN, NIL, 2),
    # spec.replicas 4, but only the one pod upstream's fixture creates exists
    ("TestMissingReports", 1, 5, 4, cpu_pods([200], 200), [pods_metric("50")], NAN, EMPTY, 2),
    (
        "TestMoreReplicasThanSpecNoScale",
        1,
        8,
        4,
        cpu_pods([500] * 5, 1000),
        [pods_metric("50")],
        NAN,
        NIL,
        4,
    ),
    (
        "TestStabilizeDownscale",
        1,
        5,
        4,
        cpu_pods([50, 50, 50], 100),
        [pods_metric("100")],
        NAN,
        [(10, 10 * MIN), (4, 1 * MIN)],
        4,
    ),
    (
        "TestNoBackoffUpscaleCM",
        1,
        5,
        3,
        fixture_pods(3, [20000, 10000, 30000]),
        [pods_metric("15")],
        NAN,
        NIL,
        4,
    ),
    (
        "TestScaleUpRCImmediately",
        2,
        6,
        1,
        cpu_pods([0, 0, 0, 0], 1000),
        [pods_metric("80")],
        NAN,
        NIL,
        2,
    ),
    (
        "TestScaleDownRCImmediately",
        2,
        5,
        6,
        cpu_pods([8000, 9500, 1000], 1000),
        [pods_metric("50")],
        NAN,
        NIL,
        5,
    ),
    # one metric unreadable: it may not block a scale-up, and blocks a scale-down
    (
        "TestScaleUpOneMetricInvalid",
        2,
        6,
        3,
        cpu_pods([300, 400, 500], 1000),
        [pods_metric("30"), unreadable_metric()],
        NAN,
        NIL,
        4,
    ),
    (
        "TestScaleUpOneMetricEmpty",
        2,
        6,
        3,
        cpu_pods([300, 400, 500], 1000),
        [pods_metric("30"), unreadable_metric()],
        NAN,
        NIL,
        4,
    ),
    (
        "TestNoScaleDownOneMetricInvalid",
        2,
        6,
        5,
        cpu_pods([100, 300, 500, 250, 250], 1000),
        [pods_metric("50"), unreadable_metric()],
        NAN,
        EMPTY,
        5,
    ),
    (
        "TestNoScaleDownOneMetricEmpty",
        2,
        6,
        5,
        cpu_pods([100, 300, 500, 250, 250], 1000),
        [pods_metric("50"), unreadable_metric()],
        NAN,
        EMPTY,
        5,
    ),
    (
        "TestScaleUpBothMetricsEmpty",
        2,
        6,
        3,
        cpu_pods([], 1000, 3),
        [unreadable_metric()],
        NAN,
        NIL,
        3,
    ),
    (
        "TestConditionFailedGetMetrics/FailedGetPodsMetric",
        1,
        100,
        3,
        cpu_pods([], 100, 3),
        [pods_metric("15")],
        NAN,
        NIL,
        3,
    ),
    (
        "TestConditionFailedGetMetrics/FailedGetObjectMetric",
        1,
        100,
        3,
        fixture_pods(3, []),
        [object_metric("15")],
        NAN,
        NIL,
        3,
    ),
    (
        "TestConditionFailedGetMetrics/FailedGetExternalMetric",
        1,
        100,
        3,
        fixture_pods(3, []),
        [external_metric(milli(300))],
        NAN,
        NIL,
        3,
    ),
]


@pytest.mark.parametrize(
    ("min_r", "max_r", "spec", "pods", "metrics", "fleet", "recs", "expected"),
    [c[1:] for c in SYNC_CASES],
    ids=[c[0] for c in SYNC_CASES],
)
def test_one_sync_without_behavior(min_r, max_r, spec, pods, metrics, fleet, recs, expected):
    cfg = hpa(metrics, min_r=min_r, max_r=max_r)
    assert cfg.limits.legacy_behavior
    assert reconcile(cfg, spec, pods, fleet, recommendations=recs) == expected


def test_no_backoff_upscale_cm_no_backoff_cpu():
    """TestNoBackoffUpscaleCMNoBackoffCpu: CPU (target 10 %) and qps (target 15) on the same
    levels; the max over metrics (CPU: ceil(20 x 3) = 60) is capped at maxReplicas 5."""
    levels = [20000, 10000, 30000]
    pods = [Pod(sample=lv / 1000 * 100 * 1000, second=lv) for lv in levels]  # CPU in %, qps
    cfg = hpa([pods_metric("10"), pods_metric("15", name="requests_running")], min_r=1, max_r=5)
    assert reconcile(cfg, 3, pods) == 5


def test_computed_tolerance_alg_implementation():
    """TestComputedToleranceAlgImplementation (the whole-sync twin of the replica calculator's):
    9 replicas just past the tolerance, 10 just inside it. Upstream's minReplicas 0 is not
    reached; rlscale's manifests need minReplicas >= 1."""
    start, used, requested = 10, 150, 300
    for bump, expected in ((0.01, 9), (0.004, 10)):
        target_pct = int((1 / ((requested / used) * 0.9) + bump) * 100)
        cfg = hpa([pods_metric(str(target_pct))], min_r=1, max_r=1000)
        assert (
            reconcile(cfg, start, cpu_pods([used] * start, requested), recommendations=EMPTY)
            == expected
        )


@pytest.mark.parametrize(
    ("name", "max_r", "expected"),
    [("TestUpscaleCap", 100, 24), ("TestUpscaleCapGreaterThanMaxReplicas", 20, 20)],
)
def test_upscale_cap(name, max_r, expected):
    """TestUpscaleCap / ...GreaterThanMaxReplicas: scaleUp Percent 700 / 60 s from 3 caps a
    proposal of 60 at ceil(3 x 8) = 24 (or maxReplicas)."""
    behavior = {
        "scaleUp": {
            "stabilizationWindowSeconds": 0,
            "selectPolicy": "Max",
            "policies": [{"type": "Percent", "value": 700, "periodSeconds": 60}],
        }
    }
    cfg = hpa([pods_metric("10")], min_r=1, max_r=max_r, behavior=behavior)
    assert reconcile(cfg, 3, cpu_pods([100, 200, 300], 100)) == expected, name


def test_scale_down_with_scaling_rules():
    """TestScaleDownWithScalingRules: a `behavior` with only scaleUp rules; scaleDown takes the
    defaults (100 % per 15 s after the controller's 300 s window), with an empty history -> 3."""
    behavior = {
        "scaleUp": {
            "stabilizationWindowSeconds": 30,
            "selectPolicy": "Max",
            "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}],
        }
    }
    cfg = hpa([pods_metric("50")], min_r=2, max_r=6, behavior=behavior)
    assert reconcile(cfg, 5, cpu_pods([100, 300, 500, 250, 250], 1000), recommendations=EMPTY) == 3


# --- normalisation without behavior (stabilizeRecommendation, convertDesiredReplicasWithRules) ----

LEGACY = SafetyLimits(
    min_replicas=1,
    max_replicas=1000,
    scale_down=ScalingRules(stabilization_window_s=300),
    legacy_behavior=True,
)

NORMALIZE_CASES = [
    # (sub-test, recommendations (replicas, age s), prenormalized, expected)
    ("empty log", [], 5, 5),
    ("stabilize", [(4, 2 * MIN), (5, 1 * MIN)], 3, 5),
    ("no stabilize", [(1, 2 * MIN), (2, 1 * MIN)], 3, 3),
    ("no stabilize - old recommendations", [(10, 10 * MIN), (9, 9 * MIN)], 3, 3),
    (
        "stabilize - old recommendations",
        [(10, 10 * MIN), (4, 1 * MIN), (5, 2 * MIN), (9, 9 * MIN)],
        3,
        5,
    ),
]


@pytest.mark.parametrize(
    ("recs", "proposed", "expected"),
    [c[1:] for c in NORMALIZE_CASES],
    ids=[f"TestNormalizeDesiredReplicas/{c[0]}" for c in NORMALIZE_CASES],
)
def test_normalize_desired_replicas(recs, proposed, expected):
    # current is high enough that max(2 x current, 4) does not bind
    assert clamp_once(LEGACY, 100, proposed, recommendations=recs)[0] == expected


CONVERT_CASES = [
    # (annotation, current, desired, min, max, expected, reason or None)
    ("prenormalized desired replicas within range", 5, 7, 3, 8, 7, None),
    ("prenormalized desired replicas < minReplicas", 3, 1, 2, 8, 2, "TooFewReplicas"),
    ("prenormalized desired zeroed replicas within range", 1, 0, 0, 10, 0, None),
    (
        "maxReplicas is the limit because maxReplicas < scaleUpLimit",
        20,
        1000,
        1,
        10,
        10,
        "TooManyReplicas",
    ),
    # upstream's expectation is calculateScaleUpLimit(3); with the production factor 2: 6
    (
        "scaleUpLimit is the limit because scaleUpLimit < maxReplicas",
        3,
        1000,
        1,
        2000,
        6,
        "ScaleUpLimit",
    ),
]


@pytest.mark.parametrize(
    ("current", "proposed", "min_r", "max_r", "expected", "reason"),
    [c[1:] for c in CONVERT_CASES],
    ids=[f"TestConvertDesiredReplicasWithRules/{c[0]}" for c in CONVERT_CASES],
)
def test_convert_desired_replicas_with_rules(current, proposed, min_r, max_r, expected, reason):
    lim = SafetyLimits(
        min_replicas=min_r,
        max_replicas=max_r,
        legacy_behavior=True,
        scale_down=ScalingRules(stabilization_window_s=300),
    )
    got, reasons = clamp_once(lim, current, proposed)
    assert got == expected
    limiting = [r for r in reasons if r in ("TooFewReplicas", "TooManyReplicas", "ScaleUpLimit")]
    assert limiting == ([reason] if reason else [])


# --- normalisation with behavior ---------------------------------------------------------------


def rules(
    pods: int, pods_period: int, percent: int, percent_period: int, window: int
) -> ScalingRules:
    """`generateScalingRules`: Max select, the given policies (a 0 value is no policy)."""
    pols = []
    if pods:
        pols.append(ScalingPolicy(type="Pods", value=pods, period_s=pods_period))
    if percent:
        pols.append(ScalingPolicy(type="Percent", value=percent, period_s=percent_period))
    return ScalingRules(stabilization_window_s=window, select_policy="Max", policies=tuple(pols))


UP_DEFAULT = ScalingRules(
    policies=(
        ScalingPolicy(type="Pods", value=4, period_s=15),
        ScalingPolicy(type="Percent", value=100, period_s=15),
    )
)
DOWN_DEFAULT = ScalingRules(
    stabilization_window_s=300, policies=(ScalingPolicy(type="Percent", value=100, period_s=15),)
)
E3 = events([1, 5, 9], 120)

# (name, up events, down events, min, max, up rules, down rules, current, desired, expected, reason)
RULES_CASES = [
    (
        "prenormalized desired replicas within range",
        [],
        [],
        3,
        8,
        None,
        None,
        5,
        7,
        7,
        "DesiredWithinRange",
    ),
    (
        "prenormalized desired replicas < minReplicas",
        [],
        [],
        2,
        8,
        None,
        None,
        3,
        1,
        2,
        "TooFewReplicas",
    ),
    (
        "prenormalized desired replicas within range when minReplicas is 0",
        [],
        [],
        0,
        10,
        None,
        None,
        1,
        0,
        0,
        "DesiredWithinRange",
    ),
    (
        "maxReplicas is the limit because maxReplicas < scaleUpLimit",
        [],
        [],
        1,
        10,
        None,
        None,
        20,
        1000,
        10,
        "TooManyReplicas",
    ),
    (
        "desired replica count is more than the maximum replica count",
        [],
        [],
        100,
        150,
        None,
        None,
        100,
        1000,
        150,
        "TooManyReplicas",
    ),
    (
        "scaleUpLimit is the limit because scaleUpLimit < maxReplicas with user policies",
        [],
        [],
        1,
        2000,
        rules(0, 0, 1, 60, 0),
        None,
        3,
        1000,
        4,
        "ScaleUpLimit",
    ),
    ("scaleUp with default behavior", [], [], 1, 1000, None, None, 10, 50, 20, "ScaleUpLimit"),
    (
        "scaleUp with pods policy larger than percent policy",
        [],
        [],
        1,
        1000,
        rules(100, 60, 100, 60, 0),
        None,
        10,
        500,
        110,
        "ScaleUpLimit",
    ),
    (
        "scaleUp with percent policy larger than pods policy",
        [],
        [],
        1,
        1000,
        rules(2, 60, 100, 60, 0),
        None,
        10,
        500,
        20,
        "ScaleUpLimit",
    ),
    (
        "scaleUp with spec MaxReplicas limitation with large pod policy",
        [],
        [],
        1,
        1000,
        rules(100, 60, 0, 0, 0),
        None,
        10,
        50,
        50,
        "DesiredWithinRange",
    ),
    (
        "scaleUp with spec MaxReplicas limitation with large percent policy",
        [],
        [],
        1,
        1000,
        rules(10000, 60, 0, 0, 0),
        None,
        10,
        50,
        50,
        "DesiredWithinRange",
    ),
    (
        "scaleUp with pod policy limitation",
        [],
        [],
        1,
        1000,
        rules(30, 60, 0, 0, 0),
        None,
        10,
        50,
        40,
        "ScaleUpLimit",
    ),
    (
        "scaleUp with percent policy limitation",
        [],
        [],
        1,
        1000,
        rules(0, 0, 200, 60, 0),
        None,
        10,
        50,
        30,
        "ScaleUpLimit",
    ),
    (
        "scaleDown with percent policy larger than pod policy",
        [],
        [],
        1,
        1000,
        None,
        rules(20, 60, 1, 60, 300),
        100,
        2,
        80,
        "ScaleDownLimit",
    ),
    (
        "scaleDown with pod policy larger than percent policy",
        [],
        [],
        1,
        1000,
        None,
        rules(2, 60, 1, 60, 300),
        100,
        2,
        98,
        "ScaleDownLimit",
    ),
    (
        "scaleDown with spec MinReplicas=nil limitation with large pod policy",
        [],
        [],
        1,
        1000,
        None,
        rules(100, 60, 0, 0, 300),
        10,
        0,
        1,
        "TooFewReplicas",
    ),
    (
        "scaleDown with spec MinReplicas limitation with large pod policy",
        [],
        [],
        1,
        1000,
        None,
        rules(100, 60, 0, 0, 300),
        10,
        0,
        1,
        "TooFewReplicas",
    ),
    (
        "scaleDown with spec MinReplicas limitation with large percent policy",
        [],
        [],
        5,
        1000,
        None,
        rules(0, 0, 100, 60, 300),
        10,
        2,
        5,
        "TooFewReplicas",
    ),
    (
        "scaleDown with pod policy limitation",
        [],
        [],
        1,
        1000,
        None,
        rules(5, 60, 0, 0, 300),
        10,
        2,
        5,
        "ScaleDownLimit",
    ),
    (
        "scaleDown with percent policy limitation",
        [],
        [],
        1,
        1000,
        None,
        rules(0, 0, 50, 60, 300),
        10,
        5,
        5,
        "DesiredWithinRange",
    ),
    (
        "scaleUp with spec MaxReplicas limitation with large pod policy and events",
        E3,
        [],
        1,
        200,
        rules(300, 60, 0, 0, 0),
        None,
        100,
        500,
        200,
        "TooManyReplicas",
    ),
    (
        "scaleUp with spec MaxReplicas limitation with large percent policy and events",
        E3,
        [],
        1,
        200,
        rules(0, 0, 10000, 60, 0),
        None,
        100,
        500,
        200,
        "TooManyReplicas",
    ),
    (
        "scaleUp with currentReplicas limitation with rate.PeriodSeconds with a lot of recent scale up events",
        E3,
        [],
        1,
        1000,
        rules(5, 120, 0, 0, 0),
        None,
        100,
        500,
        100,
        "ScaleUpLimit",
    ),
    (
        "scaleUp with pod policy and previous scale up events",
        E3,
        [],
        1,
        1000,
        rules(150, 120, 0, 0, 0),
        None,
        100,
        500,
        235,
        "ScaleUpLimit",
    ),
    (
        "scaleUp with percent policy and previous scale up events",
        E3,
        [],
        1,
        1000,
        rules(0, 0, 200, 120, 0),
        None,
        100,
        500,
        255,
        "ScaleUpLimit",
    ),
    (
        "scaleUp with percent policy and previous scale up and down events",
        events([4], 120),
        events([2], 120),
        1,
        1000,
        rules(0, 0, 300, 300, 0),
        None,
        6,
        24,
        16,
        "ScaleUpLimit",
    ),
    (
        "scaleDown with default policy and previous events",
        [],
        E3,
        1,
        1000,
        None,
        None,
        10,
        5,
        5,
        "DesiredWithinRange",
    ),
    (
        "scaleDown with spec MinReplicas=nil limitation with large pod policy and previous events",
        [],
        E3,
        1,
        1000,
        None,
        rules(115, 120, 0, 0, 300),
        100,
        0,
        1,
        "TooFewReplicas",
    ),
    (
        "scaleDown with spec MinReplicas limitation with large pod policy and previous events",
        [],
        E3,
        5,
        1000,
        None,
        rules(130, 120, 0, 0, 300),
        100,
        0,
        5,
        "TooFewReplicas",
    ),
    (
        "scaleDown with spec MinReplicas limitation with large percent policy and previous events",
        [],
        E3,
        5,
        1000,
        None,
        rules(0, 0, 100, 120, 300),
        100,
        2,
        5,
        "TooFewReplicas",
    ),
    (
        "scaleDown with pod policy limitation and previous events",
        [],
        E3,
        1,
        1000,
        None,
        rules(5, 120, 0, 0, 300),
        100,
        2,
        100,
        "ScaleDownLimit",
    ),
    (
        "scaleDown with percent policy limitation and previous events",
        [],
        events([2, 4, 6], 120),
        1,
        1000,
        None,
        rules(0, 0, 50, 120, 300),
        100,
        0,
        56,
        "ScaleDownLimit",
    ),
    (
        "scaleDown with percent policy and previous scale up and down events",
        events([2], 120),
        events([4], 120),
        1,
        1000,
        None,
        rules(0, 0, 50, 180, 0),
        10,
        1,
        6,
        "ScaleDownLimit",
    ),
    (
        "scaleDown with previous events preventing further scale down",
        [],
        events([10, 10, 10], 120),
        1,
        1000,
        None,
        rules(0, 0, 10, 120, 300),
        100,
        0,
        100,
        "ScaleDownLimit",
    ),
    (
        "scaleDown with with previous events still allowing more scale down",
        [],
        events([10, 10, 10], 120),
        1,
        1000,
        None,
        rules(0, 0, 1000, 120, 300),
        10,
        5,
        5,
        "DesiredWithinRange",
    ),
    (
        "check 'outdated' flag for events for one behavior for up",
        events([8, 12, 9, 11], 120),
        [],
        1,
        1000,
        rules(1000, 60, 0, 0, 0),
        None,
        100,
        200,
        200,
        "DesiredWithinRange",
    ),
    (
        "check that events were not marked 'outdated' for two different policies in the behavior for up",
        events([8, 12, 9, 11], 120),
        [],
        1,
        1000,
        rules(1000, 120, 100, 60, 0),
        None,
        100,
        200,
        200,
        "DesiredWithinRange",
    ),
    (
        "check that events were marked 'outdated' for two different policies in the behavior for up",
        events([8, 12, 9, 11], 120),
        [],
        1,
        1000,
        rules(1000, 30, 100, 60, 0),
        None,
        100,
        200,
        200,
        "DesiredWithinRange",
    ),
    (
        "check 'outdated' flag for events for one behavior for down",
        [],
        events([8, 12, 9, 11], 120),
        1,
        1000,
        None,
        rules(1000, 60, 0, 0, 300),
        100,
        5,
        5,
        "DesiredWithinRange",
    ),
    (
        "check that events were not marked 'outdated' for two different policies in the behavior for down",
        [],
        events([8, 12, 9, 11], 120),
        1,
        1000,
        None,
        rules(1000, 120, 100, 60, 300),
        100,
        5,
        5,
        "DesiredWithinRange",
    ),
    (
        "check that events were marked 'outdated' for two different policies in the behavior for down",
        [],
        events([8, 12, 9, 11], 120),
        1,
        1000,
        None,
        rules(1000, 30, 100, 60, 300),
        100,
        5,
        5,
        "DesiredWithinRange",
    ),
]

_REASON_BITS = {"ScaleUpLimit", "ScaleDownLimit", "TooFewReplicas", "TooManyReplicas"}


@pytest.mark.parametrize(
    (
        "up_ev",
        "down_ev",
        "min_r",
        "max_r",
        "up",
        "down",
        "current",
        "proposed",
        "expected",
        "reason",
    ),
    [c[1:] for c in RULES_CASES],
    ids=[f"TestScalingWithRules/{c[0]}" for c in RULES_CASES],
)
def test_scaling_with_rules(
    up_ev, down_ev, min_r, max_r, up, down, current, proposed, expected, reason
):
    """convertDesiredReplicasWithBehaviorRate. Upstream calls it without stabilisation; the clamp
    always stabilises, which with an empty recommendation history is the proposal itself."""
    lim = SafetyLimits(
        min_replicas=min_r,
        max_replicas=max_r,
        scale_up=up or UP_DEFAULT,
        scale_down=down or DOWN_DEFAULT,
    )
    got, reasons = clamp_once(lim, current, proposed, up_events=up_ev, down_events=down_ev)
    assert got == expected
    limiting = [r for r in reasons if r in _REASON_BITS]
    # upstream names exactly one condition; when both a rate limit and a bound bite it names the
    # bound (the tighter), as the clamp's last flag does
    assert (limiting[-1] if limiting else "DesiredWithinRange") == reason


STABILIZE_CASES = [
    # (name, recommendations (replicas, age s), current, prenormalized, expected, up window, down window)
    ("empty recommendations for scaling down", [], 100, 5, 5, 0, 0),
    ("simple scale down stabilization", [(4, 2 * MIN), (5, 1 * MIN)], 100, 3, 5, 0, 180),
    ("simple scale up stabilization", [(4, 2 * MIN), (5, 1 * MIN)], 1, 7, 4, 300, 0),
    ("no scale down stabilization", [(1, 2 * MIN), (2, 1 * MIN)], 100, 3, 3, 300, 0),
    ("no scale up stabilization", [(4, 2 * MIN), (5, 1 * MIN)], 1, 3, 3, 0, 300),
    (
        "no scale down stabilization, reuse recommendation element",
        [(10, 10 * MIN), (9, 9 * MIN)],
        100,
        3,
        3,
        0,
        0,
    ),
    (
        "no scale up stabilization, reuse recommendation element",
        [(10, 10 * MIN), (9, 9 * MIN)],
        1,
        100,
        100,
        0,
        0,
    ),
    (
        "scale down stabilization, reuse one of obsolete recommendation element",
        [(10, 10 * MIN), (4, 1 * MIN), (5, 2 * MIN), (9, 9 * MIN)],
        100,
        3,
        5,
        0,
        180,
    ),
    (
        "scale up stabilization, reuse one of obsolete recommendation element",
        [(10, 100 * MIN), (6, 1 * MIN), (5, 2 * MIN), (9, 3 * MIN)],
        1,
        100,
        5,
        300,
        0,
    ),
    (
        "scale up and down stabilization, do not scale up when prenormalized rec goes down",
        [(2, 100 * MIN), (3, 3 * MIN)],
        2,
        1,
        2,
        300,
        300,
    ),
    (
        "scale up and down stabilization, do not scale down when prenormalized rec goes up",
        [(2, 100 * MIN), (1, 3 * MIN)],
        2,
        3,
        2,
        300,
        300,
    ),
]


@pytest.mark.parametrize(
    ("recs", "current", "proposed", "expected", "up_w", "down_w"),
    [c[1:] for c in STABILIZE_CASES],
    ids=[f"TestNormalizeDesiredReplicasWithBehavior/{c[0]}" for c in STABILIZE_CASES],
)
def test_normalize_desired_replicas_with_behavior(recs, current, proposed, expected, up_w, down_w):
    """stabilizeRecommendationWithBehaviors alone: windows only, no rate-limit policies."""
    lim = SafetyLimits(
        min_replicas=1,
        max_replicas=1000,
        scale_up=ScalingRules(stabilization_window_s=up_w),
        scale_down=ScalingRules(stabilization_window_s=down_w),
    )
    assert clamp_once(lim, current, proposed, recommendations=recs)[0] == expected


def test_calculate_scale_up_limit_with_scaling_rules():
    """TestCalculateScaleUpLimitWithScalingRules: from 1, Min of Pods 2 / 60 s (3) and Percent
    50 / 60 s (ceil(1.5) = 2) -> 2."""
    up = ScalingRules(
        stabilization_window_s=300,
        select_policy="Min",
        policies=(
            ScalingPolicy(type="Pods", value=2, period_s=60),
            ScalingPolicy(type="Percent", value=50, period_s=60),
        ),
    )
    lim = SafetyLimits(min_replicas=1, max_replicas=1000, scale_up=up)
    assert clamp_once(lim, 1, 1000, recommendations=[])[0] == 2


def test_calculate_scale_down_limit_with_behaviors():
    """TestCalculateScaleDownLimitWithBehaviors: from 5, the least change of Pods 2 (3) and
    Percent 50 (floor(2.5) = 2) -> 3."""
    down = ScalingRules(
        stabilization_window_s=300,
        select_policy="Min",
        policies=(
            ScalingPolicy(type="Pods", value=2, period_s=60),
            ScalingPolicy(type="Percent", value=50, period_s=60),
        ),
    )
    lim = SafetyLimits(min_replicas=1, max_replicas=1000, scale_down=down)
    assert clamp_once(lim, 5, 0, recommendations=[])[0] == 3
