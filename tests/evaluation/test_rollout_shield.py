"""The evaluator's rollouts under the run-time shield: firing counts per summary, the default by
policy kind, the report's columns."""

from __future__ import annotations

import numpy as np

from rlscale.evaluation.report import SHIELD_COLUMNS, _md_table
from rlscale.evaluation.rollout import rollout, shield_for
from rlscale.policies.base import Decision
from rlscale.policies.registry import PolicyFactory
from rlscale.profiles.model import load_profile
from rlscale.safety import SafetyLimits
from rlscale.serving.shield import FIRING_COLUMNS, ShieldConfig
from rlscale.traces.workload import Workload

PROFILE = load_profile("llama-3.1-8b-h100")
LIMITS = SafetyLimits(min_replicas=1, max_replicas=40)


class One:
    name = "one"

    def reset(self) -> None:
        pass

    def decide(self, window) -> Decision:
        return Decision(1, "always one")


def long_prompts(n: int = 120) -> Workload:
    return Workload(
        name="long",
        source="test",
        interval_s=15.0,
        arrivals=np.full(n, 5.0 * 15.0),
        prompt_tokens=np.full(n, 10.0 * PROFILE.typical_prompt_tokens),
        output_tokens=np.full(n, float(PROFILE.typical_output_tokens)),
    )


def test_a_shielded_rollout_counts_its_firings_and_holds_the_slo() -> None:
    w = long_prompts()
    off = rollout(lambda s: One(), PROFILE, w, limits=LIMITS, initial_replicas=1).summaries[0]
    on = rollout(
        lambda s: One(), PROFILE, w, limits=LIMITS, initial_replicas=1, shield=ShieldConfig()
    ).summaries[0]
    d_off, d_on = off.as_dict(), on.as_dict()
    assert d_off["shield"] is False and all(d_off[c] == 0 for c in FIRING_COLUMNS)
    assert d_on["shield"] is True and d_on["shield_floor"] > 0
    assert on.slo_attainment > off.slo_attainment + 0.5
    assert on.mean_replicas > off.mean_replicas


def test_the_default_shield_follows_the_policy_kind() -> None:
    def factory(spec: str) -> PolicyFactory:
        return PolicyFactory(spec, spec, LIMITS, lambda s: One())

    assert shield_for(factory("ppo:checkpoints/x#slo_weight=5")) == ShieldConfig()
    assert shield_for(factory("tuned")) is None and shield_for(factory("hpa")) is None
    assert shield_for(lambda s: One()) is None


def test_the_report_table_has_the_shield_columns() -> None:
    row = {
        "policy": "ppo",
        "shield": True,
        "shield_floor": 12,
        "shield_queue": 0,
        "shield_consolidation": 3,
        "shield_handover": 1,
    }
    lines = _md_table([row], SHIELD_COLUMNS)
    assert "shield floor" in lines[0] and "| 12 | 0 | 3 | 1 |" in lines[2]


def test_the_evaluator_runs_learned_policies_under_the_shield_it_is_given(tmp_path) -> None:
    """`EvalSettings.shield` (`rlscale evaluate --shield`) is the shield of every `ppo:` run and of
    no rule; the report records it."""
    from rlscale.evaluation.evaluate import EvalSettings, run_evaluation
    from rlscale.evaluation.report import to_json

    t = np.arange(0, 3600, 60)
    rps = 40 + 120 * (t > 1800)  # a step the floor must follow
    trace = tmp_path / "step.csv"
    trace.write_text("timestamp,rps\n" + "".join(f"{a},{b}\n" for a, b in zip(t, rps, strict=True)))
    specs = ["ppo:checkpoints/ppo-llama-3.1-8b-h100", "tuned"]

    def run(shield: ShieldConfig) -> dict[str, dict]:
        res = run_evaluation(
            specs, [str(trace)], [PROFILE], EvalSettings(seeds=(0,), shield=shield)
        )
        assert to_json(res)["meta"]["shield"] == shield.model_dump()
        return {r["policy"]: r for r in res.records}

    shipped = run(ShieldConfig())
    # a floor sized at 30 % utilisation holds far more replicas than the policy asks for
    tight = run(ShieldConfig(floor_utilisation=0.3, consolidation_utilisation=0.3))
    ppo = next(p for p in shipped if p.startswith("ppo"))
    assert tight[ppo]["mean_replicas"] > 1.3 * shipped[ppo]["mean_replicas"]
    assert tight[ppo]["shield_floor"] > 0
    assert tight["tuned"] == shipped["tuned"]  # the rule runs unshielded either way
    assert tight["tuned"]["shield_floor"] == 0
