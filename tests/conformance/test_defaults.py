"""Upstream `pkg/apis/autoscaling/v2/defaults_test.go` (`GenerateHPAScaleUpRules`,
`GenerateHPAScaleDownRules`), ported on `HPAScalingRules.to_rules`.

Upstream leaves a scale-down `stabilizationWindowSeconds` nil and the controller fills it from
--horizontal-pod-autoscaler-downscale-stabilization (5 minutes by default,
`maybeInitScaleDownStabilizationWindow`); rlscale fills that 300 s at load, so a case expecting
nil expects 300 here.
"""

from __future__ import annotations

import pytest

from rlscale.policies.hpa import HPAScalingRules
from rlscale.safety import HPA_DEFAULT_DOWN, HPA_DEFAULT_UP


def given(pods=(0, 0), percent=(0, 0), window=None, select=None) -> HPAScalingRules:
    """The upstream test's input: a Pods and/or Percent policy when its value or period is set."""
    policies = []
    if pods != (0, 0):
        policies.append({"type": "Pods", "value": pods[0], "periodSeconds": pods[1]})
    if percent != (0, 0):
        policies.append({"type": "Percent", "value": percent[0], "periodSeconds": percent[1]})
    data: dict = {}
    if policies:
        data["policies"] = policies
    if window is not None:
        data["stabilizationWindowSeconds"] = window
    if select is not None:
        data["selectPolicy"] = select
    return HPAScalingRules.model_validate(data)


DOWN = [
    ("Default values", given(), [("Percent", 100, 15)], 300, "Max"),
    (
        "All parameters are specified",
        given((1, 2), (3, 4), 25, "Max"),
        [("Pods", 1, 2), ("Percent", 3, 4)],
        25,
        "Max",
    ),
    (
        "Percent policy is specified",
        given(percent=(1, 2), select="Min"),
        [("Percent", 1, 2)],
        300,
        "Min",
    ),
    ("Pods policy is specified", given(pods=(3, 4)), [("Pods", 3, 4)], 300, "Max"),
]

UP = [
    ("Default values", given(), [("Pods", 4, 15), ("Percent", 100, 15)], 0, "Max"),
    (
        "All parameters are specified",
        given((1, 2), (3, 4), 25, "Max"),
        [("Pods", 1, 2), ("Percent", 3, 4)],
        25,
        "Max",
    ),
    ("Pod policy is specified", given(pods=(1, 2), select="Min"), [("Pods", 1, 2)], 0, "Min"),
    ("Percent policy is specified", given(percent=(7, 10)), [("Percent", 7, 10)], 0, "Max"),
    (
        "Pod policy and stabilization window are specified",
        given(pods=(4, 2), window=25),
        [("Pods", 4, 2)],
        25,
        "Max",
    ),
    (
        "Percent policy and stabilization window are specified",
        given(percent=(7, 60), window=25),
        [("Percent", 7, 60)],
        25,
        "Max",
    ),
]


def _check(rules, policies, window, select):
    assert [(p.type, p.value, p.period_s) for p in rules.policies] == policies
    assert rules.stabilization_window_s == window
    assert rules.select_policy == select


@pytest.mark.parametrize(
    ("given_", "policies", "window", "select"),
    [c[1:] for c in DOWN],
    ids=[f"TestGenerateScaleDownRules/{c[0]}" for c in DOWN],
)
def test_generate_scale_down_rules(given_, policies, window, select):
    _check(given_.to_rules(HPA_DEFAULT_DOWN), policies, window, select)


@pytest.mark.parametrize(
    ("given_", "policies", "window", "select"),
    [c[1:] for c in UP],
    ids=[f"TestGenerateScaleUpRules/{c[0]}" for c in UP],
)
def test_generate_scale_up_rules(given_, policies, window, select):
    _check(given_.to_rules(HPA_DEFAULT_UP), policies, window, select)
