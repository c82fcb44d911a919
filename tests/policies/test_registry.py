"""The one policy factory: one grammar, parsed at once, the same policy offline and live."""

from __future__ import annotations

import numpy as np
import pytest

from rlscale.contract import ActionSpec, IntervalMetrics, ObservationSpec
from rlscale.deploy.config import TargetConfig
from rlscale.deploy.policies import build_target_policies
from rlscale.errors import InputError
from rlscale.policies.registry import PolicySpec, make_policy
from rlscale.profiles.model import load_profile
from rlscale.traces.synthetic import default_workload

PROFILE = load_profile("llama-3.1-8b-h100")


def live(policy: object) -> TargetConfig:
    return TargetConfig.model_validate(
        {"namespace": "llm", "deployment": "llama", "policy": policy}
    )


def metrics(arrival_rps: float, waiting: float) -> IntervalMetrics:
    row = dict.fromkeys(IntervalMetrics.__dataclass_fields__, 0.0)
    return IntervalMetrics(
        **{**row, "interval_s": 15.0, "arrival_rps": arrival_rps, "requests_waiting": waiting}
    )


@pytest.mark.parametrize(
    "text",
    [
        "hpa",
        "hpa:m.yaml",
        "static:4",
        "target:0.7",
        "threshold#gpu_up_pct=80",
        "ppo:ck#slo_weight=10,warm=2",
        "tuned#target_scale=0.8,warm=2",
        "target:0.7#warm=2",
    ],
)
def test_a_spec_prints_as_it_was_written(text: str) -> None:
    assert str(PolicySpec.parse(text)) == text


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("tunde", "unknown policy 'tunde'"),
        ("static:x", "expected static:N"),
        ("target:1.5", "expected target:U with 0 < U <= 1"),
        ("target", "expected target:U"),
        ("ppo", "expected ppo:PATH"),
        ("target:0.7#window=3", "unknown option 'window'; allowed: warm"),
        ("static:2#warm=2", "static takes none|allowed: slo_target"),
        ("tuned#warm=1.5", "expected warm=N with N a pool size >= 0"),
        ("hpa#window=3", "unknown option .window.; allowed: target_scale"),
        ("ppo:ck#slo=3", "unknown option 'slo'; allowed: slo_weight, slo_target, warm, u"),
        ("ppo:ck#slo_weight", "expected KEY=NUMBER"),
        ("tuned:x", "tuned takes no argument"),
    ],
)
def test_a_bad_spec_fails_at_parse_with_one_line(text: str, words: str) -> None:
    with pytest.raises(InputError, match=words) as e:
        PolicySpec.parse(text)
    assert e.value.field == "policy" and "\n" not in str(e.value)


def test_static_n_is_n_replicas_offline_and_live() -> None:
    """`static:1` used to become 2 under the evaluator's default limits and stay 1 live."""
    offline = make_policy("static:1", profile=PROFILE, workload=default_workload())
    assert offline(0).decide([]).replicas == 1 and offline.limits.min_replicas <= 1
    for spelling in ("static:1", {"rule": "static", "options": {"replicas": 1}}):
        built = build_target_policies(live(spelling))
        assert built.primary.policy.decide([]).replicas == 1 and built.limits.min_replicas <= 1


def test_both_live_spellings_build_the_same_policy() -> None:
    a = build_target_policies(live("threshold#step_up=2,max_replicas=8"))
    b = build_target_policies(
        live({"rule": "threshold", "options": {"step_up": 2, "max_replicas": 8}})
    )
    assert a.limits == b.limits and a.primary.policy.config == b.primary.policy.config  # type: ignore[attr-defined]


def test_predictive_runs_live_through_the_factory() -> None:
    built = build_target_policies(live("predictive"))
    offline = make_policy("predictive", profile=PROFILE)
    assert built.primary.policy.name == "predictive" and built.limits == offline.limits
    window = [metrics(60.0, 0.0)]
    assert built.primary.policy.decide(window).replicas == offline(0).decide(window).replicas >= 1


def test_target_u_is_the_action_map_with_a_fixed_u() -> None:
    spec = ObservationSpec(
        replica_capacity_rps=PROFILE.capacity_rps(),
        max_batch=256.0,
        ttft_slo_s=2.0,
        tpot_slo_s=0.1,
        max_replicas=20.0,
        window=1,
    )
    act = ActionSpec(u_min=0.7, u_max=0.7)
    rule = make_policy("target:0.7", profile=PROFILE)(0)
    for rps, waiting in [(0.0, 0.0), (10.0, 0.0), (95.0, 300.0), (400.0, 12.0)]:
        m = metrics(rps, waiting)
        want, _ = act.decode(np.zeros(2), m.to_array(), spec)
        assert rule.decide([m]).replicas == max(0, int(want))


def test_workload_policies_are_refused_live_with_the_reason() -> None:
    with pytest.raises(
        InputError, match="oracle plans on the workload's future, so it runs only offline"
    ):
        build_target_policies(live("oracle"))


@pytest.mark.parametrize(
    "text", ["hpa#warm=2", "tuned#warm=2", "target:0.7#warm=2", "predictive#warm=2"]
)
def test_a_rule_with_warm_n_holds_the_pool_at_n_beside_the_same_replicas(text: str) -> None:
    bare = make_policy(text.split("#")[0], profile=PROFILE)
    pooled = make_policy(text, profile=PROFILE)
    # as ppo:PATH#warm=N: the limits let the pool stand by, the name keeps the setting apart
    assert bare.limits.max_warm_replicas == 0 and pooled.limits.max_warm_replicas == 2
    assert pooled.name.endswith("#warm=2")
    a, b = bare(0), pooled(0)
    for rps in (5.0, 40.0, 120.0, 10.0):
        window = [metrics(rps, 3.0)]
        da, db = a.decide(window), b.decide(window)
        assert da.warm_replicas is None and db.warm_replicas == 2
        assert db.replicas == da.replicas


def test_a_rule_with_warm_n_keeps_n_standing_by_in_a_rollout() -> None:
    from rlscale.evaluation.rollout import rollout
    from tests.conftest import constant_workload

    w = constant_workload(20.0, bins=200)
    runs = {}
    for spec in ("target:0.7", "target:0.7#warm=2"):
        f = make_policy(spec, profile=PROFILE)
        runs[spec] = rollout(f, PROFILE, w, seeds=(0,), limits=f.limits, record=True)
    bare, pooled = runs["target:0.7"], runs["target:0.7#warm=2"]
    from rlscale.contract import FIELD_INDEX

    warm = pooled.timeline[:, 0, FIELD_INDEX["replicas_warm"]]
    assert bare.timeline[:, 0, FIELD_INDEX["replicas_warm"]].max() == 0
    assert warm[-1] == 2  # filled after a cold start, then held
    # the same replicas serve; the pool is paid on top
    assert pooled.summaries[0].cost_usd > bare.summaries[0].cost_usd
