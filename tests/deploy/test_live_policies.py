"""Policies for the live controller: rule policies by name, checkpoints refused at start-up when
tampered or mismatched."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from rlscale.contract import IntervalMetrics
from rlscale.deploy.config import TargetConfig
from rlscale.deploy.policies import build_target_policies
from rlscale.errors import InputError
from rlscale.profiles.model import load_profile
from tests.deploy.fakes import make_checkpoint


def target(**kw: object) -> TargetConfig:
    return TargetConfig.model_validate({"namespace": "llm", "deployment": "llama", **kw})


def window(n: int = 4) -> list[IntervalMetrics]:
    row = dict(
        time_s=0.0,
        interval_s=15.0,
        arrival_rps=60.0,
        prompt_tokens_per_s=6e4,
        output_tokens_per_s=1.2e4,
        requests_waiting=5.0,
        requests_running=80.0,
        kv_cache_usage=0.5,
        gpu_utilization_pct=90.0,
        ttft_p50_s=0.2,
        ttft_p95_s=0.5,
        ttft_p99_s=0.8,
        tpot_p50_s=0.02,
        tpot_p95_s=0.03,
        tpot_p99_s=0.04,
        replicas_desired=3.0,
        replicas_ready=3.0,
        replicas_starting=0.0,
        replicas_warm=0.0,
        replicas_draining=0.0,
    )
    return [IntervalMetrics(**{**row, "time_s": 15.0 * i}) for i in range(n)]


def test_the_default_policy_is_the_hpa_with_its_own_limits() -> None:
    p = build_target_policies(target())
    assert p.primary.policy.name == "hpa" and p.fallback is not None
    assert (p.limits.min_replicas, p.limits.max_replicas, p.limits.max_warm_replicas) == (2, 20, 0)
    assert p.primary.policy.decide(window()).replicas >= 3


def test_rule_policies_take_their_options() -> None:
    p = build_target_policies(
        target(policy={"rule": "threshold", "options": {"step_up": 2, "max_replicas": 8}})
    )
    assert p.limits.max_replicas == 8
    assert (
        build_target_policies(target(policy={"rule": "static", "options": {"replicas": 4}}))
        .primary.policy.decide(window())
        .replicas
        == 4
    )
    assert build_target_policies(target(policy={"rule": "tuned"})).primary.policy.name == "tuned"


@pytest.mark.parametrize(
    ("policy", "field", "words"),
    [
        (
            {"rule": "magic"},
            "policy.rule",
            "unknown policy 'magic'; valid: hpa[:PATH], threshold[:PATH], tuned, predictive",
        ),
        (
            {"rule": "oracle"},
            None,
            "the oracle plans on the workload's future, so it runs only offline",
        ),
        ({"rule": "static"}, "policy.options.replicas", "a count"),
        ("static", None, "static sizes for the workload's peak minute, so it runs only offline"),
        ({"rule": "static", "options": {"replicas": -1}}, "policy.options.replicas", "a count"),
        ({"rule": "hpa", "options": {"manifest": "/nope.yaml"}}, None, "HPA manifest not found"),
        (
            {"rule": "threshold", "options": {"step_upp": 1}},
            "policy.options.step_upp",
            "unknown field",
        ),
        # a standby pool offline only: live nothing would fill it
        ("tuned#warm=2", "policy", "add a `standby:` section"),
    ],
)
def test_bad_rule_specs_are_refused_with_the_field(
    policy: dict, field: str | None, words: str
) -> None:
    with pytest.raises(InputError) as e:
        build_target_policies(target(policy=policy))
    assert words in str(e.value)
    if field:
        assert e.value.field == field


def test_a_checkpoint_is_served_with_the_limits_it_was_trained_under(tmp_path: Path) -> None:
    ck = make_checkpoint(tmp_path / "ppo")
    p = build_target_policies(target(policy={"checkpoint": str(ck)}))
    assert p.primary.policy.name == "ppo:ppo" and p.window == 4 and p.slo.ttft_s == 2.0
    assert (p.limits.min_replicas, p.limits.max_replicas) == (2, 20)
    assert p.primary.policy.decide(window()).replicas >= 0
    assert "torch" in sys.modules


def test_a_tampered_checkpoint_is_refused(tmp_path: Path) -> None:
    ck = make_checkpoint(tmp_path / "ppo")
    norm = json.loads((ck / "obs_norm.json").read_text())
    norm["var"][0] = 4.0
    (ck / "obs_norm.json").write_text(json.dumps(norm))
    with pytest.raises(InputError) as e:
        build_target_policies(target(policy={"checkpoint": str(ck)}))
    assert e.value.field == "policy.checkpoint"
    assert "checkpoint refused" in str(e.value) and "sha256 mismatch" in str(e.value)


def test_a_checkpoint_for_another_profile_is_refused(tmp_path: Path) -> None:
    ck = make_checkpoint(tmp_path / "ppo", profile="llama-3.1-70b-fp8-4xh100", gpus_per_replica=4)
    with pytest.raises(
        InputError,
        match="trained for profile 'llama-3.1-70b-fp8-4xh100', the target runs 'llama-3.1-8b-h100'",
    ):
        build_target_policies(target(policy={"checkpoint": str(ck)}))


def test_a_checkpoint_for_another_slo_is_refused(tmp_path: Path) -> None:
    ck = make_checkpoint(tmp_path / "ppo", ttft_slo_s=1.0)
    with pytest.raises(InputError, match="trained for SLO ttft 1.0 s"):
        build_target_policies(target(policy={"checkpoint": str(ck)}, slo={"ttft_s": 2.0}))
    assert build_target_policies(target(policy={"checkpoint": str(ck)})).slo.ttft_s == 1.0


SLEEPING = {"tier": "sleeping"}


def test_a_rule_with_a_warm_pool_is_served_by_a_target_with_standby() -> None:
    p = build_target_policies(target(policy="tuned#warm=2", standby=SLEEPING))
    assert p.limits.max_warm_replicas == 2 and not p.warnings
    d = p.primary.policy.decide(window())
    assert d.warm_replicas == 2


def test_the_targets_max_warm_replicas_clamps_the_rules_pool_with_a_warning() -> None:
    p = build_target_policies(
        target(
            policy="tuned#warm=3",
            standby=SLEEPING,
            limits={"min_replicas": 1, "max_replicas": 8, "max_warm_replicas": 1},
        )
    )
    assert p.limits.max_warm_replicas == 1
    assert any("clamped to limits.max_warm_replicas = 1" in w for w in p.warnings)


def test_a_checkpoint_with_a_warm_pool_is_served_by_a_target_with_standby(tmp_path: Path) -> None:
    ck = make_checkpoint(tmp_path / "ppo", max_warm=4)
    p = build_target_policies(
        target(
            policy={"checkpoint": str(ck)},
            standby=SLEEPING,
        )
    )
    assert p.limits.max_warm_replicas == 4 and not p.warnings


def test_a_checkpoint_is_refused_by_a_target_whose_tier_it_did_not_learn(tmp_path: Path) -> None:
    # A pool sized for 10-s wakes (sleeping replicas) is too small where a wake takes minutes.
    ck = make_checkpoint(tmp_path / "ppo", max_warm=4)  # no tier in the manifest: sleeping
    with pytest.raises(InputError, match=r"standby\.tier.*learned to size a pool of 'sleeping'"):
        build_target_policies(
            target(
                policy={"checkpoint": str(ck)},
                standby={"tier": "warm_node", "placeholder": "vllm-placeholder"},
            )
        )


def test_the_shipped_learned_pool_checkpoint_is_served_with_its_tier() -> None:
    ck = Path(__file__).resolve().parents[2] / "checkpoints" / "ppo-llama-3.1-8b-h100-warm"
    p = build_target_policies(
        target(policy={"checkpoint": str(ck)}, standby=SLEEPING, profile="llama-3.1-8b-h100")
    )
    assert p.primary.standby_tier == "sleeping" and p.limits.max_warm_replicas == 2


def test_ignore_warm_pool_and_standby_together_are_refused(tmp_path: Path) -> None:
    ck = make_checkpoint(tmp_path / "ppo", max_warm=4)
    with pytest.raises(InputError, match="contradict"):
        build_target_policies(
            target(policy={"checkpoint": str(ck)}, standby=SLEEPING, ignore_warm_pool=True)
        )


def test_the_fallback_never_sizes_the_pool() -> None:
    with pytest.raises(InputError, match="the fallback does not size the pool"):
        build_target_policies(
            target(policy="tuned#warm=2", fallback="hpa#warm=1", standby=SLEEPING)
        )


def test_a_checkpoint_with_a_warm_pool_needs_an_explicit_opt_in(tmp_path: Path) -> None:
    ck = make_checkpoint(tmp_path / "ppo", max_warm=4)
    with pytest.raises(InputError, match=r"add a `standby:` section.*ignore_warm_pool: true"):
        build_target_policies(target(policy={"checkpoint": str(ck)}))
    p = build_target_policies(target(policy={"checkpoint": str(ck)}, ignore_warm_pool=True))
    assert p.limits.max_warm_replicas == 0 and p.warnings


def test_a_missing_checkpoint_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="checkpoint not found"):
        build_target_policies(target(policy={"checkpoint": str(tmp_path / "absent")}))


def test_explicit_limits_take_the_gpu_count_from_the_profile() -> None:
    p = build_target_policies(
        target(profile="llama-3.1-70b-fp8-4xh100", limits={"max_replicas": 6, "max_gpus": 16})
    )
    assert (
        p.limits.gpus_per_replica == load_profile("llama-3.1-70b-fp8-4xh100").gpus_per_replica == 4
    )
    with pytest.raises(InputError, match="gpus_per_replica = 2"):
        build_target_policies(
            target(profile="llama-3.1-70b-fp8-4xh100", limits={"gpus_per_replica": 2})
        )
