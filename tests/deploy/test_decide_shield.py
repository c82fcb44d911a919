"""The controller's run-time shield: its firings are the Decision's steps and reason, its
counters the exporter's; the target config turns it on for checkpoints, off for rules."""

from __future__ import annotations

import math

from rlscale.deploy.config import TargetConfig
from rlscale.deploy.decide import NO_CHANGE, SCALE, TargetMemory, decide, make_shield
from rlscale.deploy.exporter import ControllerMetrics
from rlscale.profiles.model import load_profile
from rlscale.safety import SafetyLimits
from rlscale.serving.capacity import slo_capacity_rps
from rlscale.serving.shield import ShieldConfig
from tests.deploy.fakes import T0, constant, reading
from tests.deploy.test_decide import reasons, state

PROFILE = load_profile("llama-3.1-8b-h100")
LIMITS = SafetyLimits(min_replicas=1, max_replicas=40)


def shielded(**cfg: float) -> TargetMemory:
    return TargetMemory(
        LIMITS,
        15.0,
        window_len=4,
        shield=make_shield(ShieldConfig(**cfg), PROFILE, None, interval_s=15.0),
    )


def tick(policy, mem, *, now=T0, replicas=None, **values):
    return decide(
        target="llm/llama",
        now_s=now,
        replicas=state(2) if replicas is None else replicas,
        reading=reading(now, **values),
        policy=policy,
        fallback=None,
        memory=mem,
    )


def test_a_policy_proposing_one_replica_under_heavy_load_is_floored() -> None:
    # 150 req/s of 1,000-token prompts: the policy asks for 1 of the 2 running
    r = tick(constant(1), shielded(), arrival_rps=150.0, prompt_tokens_per_s=150_000.0)
    assert r.outcome == SCALE and r.reason == "ShieldFloor" and r.shield == "ShieldFloor"
    step = next(s for s in r.steps if s.name == "shield")
    floored = int(step.detail.split(" -> ")[1].split(" ")[0])
    # the rule at the observed mix (1,000 prompt / 53 output tokens), 0.85 of its SLO capacity
    cap = slo_capacity_rps(PROFILE, 1000.0, 8000.0 / 150.0)
    assert r.proposed == 1 and floored >= math.ceil(150.0 / (cap * 1.02 * 0.85)) >= 4
    # the clamp's scale-up rate limit still applies after the floor
    assert r.desired is not None and 2 < r.desired <= floored
    assert "ShieldFloor" in reasons(r)


def test_the_same_proposal_unshielded_scales_down() -> None:
    mem = TargetMemory(LIMITS, 15.0, window_len=4)
    r = tick(constant(1), mem, arrival_rps=150.0, prompt_tokens_per_s=150_000.0)
    assert r.shield is None and r.desired == 1 and r.reason == "PolicyProposal"


def test_queue_and_consolidation_are_the_reasons_a_scale_down_is_refused() -> None:
    r = tick(
        constant(2),
        shielded(),
        replicas=state(6),
        arrival_rps=1.0,
        requests_waiting=60.0,
        prompt_tokens_per_s=1000.0,
        output_tokens_per_s=200.0,
    )
    assert (r.outcome, r.reason, r.desired) == (NO_CHANGE, "ShieldQueue", 6)
    r = tick(
        constant(1),
        shielded(),
        replicas=state(6),
        arrival_rps=60.0,
        prompt_tokens_per_s=60_000.0,
        output_tokens_per_s=12_000.0,
    )
    assert r.reason == "ShieldConsolidation" and r.desired is not None and 1 < r.desired <= 6


def test_handover_is_a_reason_and_a_metric() -> None:
    mem = shielded(breach_intervals=2, recover_intervals=2)
    metrics = ControllerMetrics()
    records = []
    for i in range(3):  # TTFT p95 over its SLO, the policy holds: hand-over on the second tick
        r = tick(
            constant(3),
            mem,
            now=T0 + 15.0 * i,
            replicas=state(3),
            arrival_rps=150.0,
            prompt_tokens_per_s=150_000.0,
            ttft_p95_s=8.0,
            requests_waiting=30.0,
        )
        metrics.publish(r, r.outcome, dry_run=False)
        records.append(r)
    assert [r.shield_handover for r in records] == [False, True, True]
    assert records[-1].reason in ("ShieldHandover", "ShieldFloor")
    labels = {"namespace": "llm", "deployment": "llama"}
    reg = metrics.registry
    assert reg.get_sample_value("rlscale_shield_handover", labels) == 1
    fired = sum(
        reg.get_sample_value("rlscale_shield_firings_total", {**labels, "kind": k}) or 0
        for k in ("ShieldHandover", "ShieldFloor")
    )
    assert fired >= 2


def test_target_config_shield_defaults() -> None:
    base = {"namespace": "llm", "deployment": "llama"}
    assert TargetConfig(**base).shield_config() is None  # the HPA stays the real HPA
    ppo = TargetConfig(**base, policy={"checkpoint": "/ckpt"})
    assert ppo.shield_config() == ShieldConfig()
    assert TargetConfig(**base, policy="ppo:/ckpt", shield=False).shield_config() is None
    rule = TargetConfig(**base, policy="hpa", shield={"floor_utilisation": 0.9})
    assert rule.shield_config() == ShieldConfig(floor_utilisation=0.9)
