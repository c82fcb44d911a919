"""The controller config: defaults, and errors that name the field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from rlscale.deploy.config import ControllerConfig, load_config, parse_config
from rlscale.errors import InputError

REPO = Path(__file__).resolve().parents[2]
MINIMAL = {"targets": [{"namespace": "llm", "deployment": "llama"}]}


def with_target(**target: object) -> dict:
    return {"targets": [{"namespace": "llm", "deployment": "llama", **target}]}


def test_a_minimal_config_gets_safe_defaults() -> None:
    cfg = parse_config(MINIMAL)
    t = cfg.targets[0]
    assert cfg.tick_s == 15 and not cfg.dry_run and cfg.leader_election.enabled
    assert cfg.lease_namespace == "llm"
    assert t.policy.rule == "hpa" and t.fallback is not None and t.fallback.rule == "hpa"
    assert t.metrics.required_fields == t.metrics.collected_fields
    assert cfg.target_dry_run(t) is False


def test_the_shipped_example_config_is_valid() -> None:
    doc = yaml.safe_load((REPO / "kubernetes" / "configmap.yaml").read_text())
    cfg = parse_config(yaml.safe_load(doc["data"]["controller.yaml"]))
    assert isinstance(cfg, ControllerConfig) and cfg.targets


@pytest.mark.parametrize(
    ("data", "field", "words"),
    [
        (
            with_target(limits={"min_replicas": 4, "max_replicas": 3}),
            "targets.0.limits",
            "max_replicas = 3, must be >= min_replicas (4)",
        ),
        (with_target(limits={"max_warm_replicas": 2}), "targets.0.limits", "needs a `standby:`"),
        (with_target(standby={"tier": "warm_node"}), "targets.0.standby", "needs `placeholder`"),
        (with_target(standby={"tier": "cold"}), "targets.0.standby.tier", "sleeping"),
        (
            with_target(standby={"tier": "sleeping", "placeholder": "p"}),
            "targets.0.standby",
            "drop `placeholder`",
        ),
        (
            with_target(standby={"tier": "sleeping", "drain": {"metrics_path": "metrics"}}),
            "targets.0.standby.drain.metrics_path",
            "starting with /",
        ),
        (
            with_target(standby={"tier": "warm_node", "placeholder": "llama"}),
            "targets.0",
            "is the target itself",
        ),
        (with_target(polcy={"rule": "hpa"}), "targets.0.polcy", "unknown field"),
        (with_target(policy={"rule": "hpa", "checkpoint": "x"}), "targets.0.policy", "exactly one"),
        (
            with_target(policy={"checkpoint": "x", "slo_weight": 5, "slo_target": 0.99}),
            "targets.0.policy",
            "not both",
        ),
        (
            with_target(policy={"checkpoint": "x", "slo_target": 1.5}),
            "targets.0.policy.slo_target",
            "less than 1",
        ),
        (
            with_target(metrics={"queries": {"ttft": "x"}}),
            "targets.0.metrics.queries",
            "unknown field 'ttft'",
        ),
        (
            with_target(
                metrics={"queries": {"ttft_p95_s": "histogram_quantile(0.95, x{ {{selectr}} })"}}
            ),
            "targets.0.metrics.queries",
            "unknown placeholder(s) {{selectr}}",
        ),
        (
            with_target(metrics={"rate_window": "1 minute"}),
            "targets.0.metrics.rate_window",
            "not a PromQL duration",
        ),
        (
            with_target(metrics={"queries": {"arrival_rps": None}}),
            "targets.0.metrics",
            "'arrival_rps' is required",
        ),
        (with_target(namespace="LLM"), "targets.0.namespace", "not a valid namespace"),
        ({"targets": []}, "targets", "at least 1"),
        (
            {
                "targets": [
                    {"namespace": "a", "deployment": "x"},
                    {"namespace": "a", "deployment": "x"},
                ]
            },
            None,
            "listed twice",
        ),
        (
            {
                "targets": [
                    {"namespace": "a", "deployment": "x"},
                    {"namespace": "b", "deployment": "x"},
                ]
            },
            None,
            "leader_election.namespace is required",
        ),
        (
            {**MINIMAL, "leader_election": {"lease_duration_s": 10, "renew_deadline_s": 10}},
            "leader_election",
            "renew_deadline_s = 10.0, must be < lease_duration_s",
        ),
        ({**MINIMAL, "prometheus": {"url": "prometheus:9090"}}, "prometheus.url", "http://"),
        ({**MINIMAL, "tick_s": 0}, "tick_s", "greater than or equal"),
    ],
)
def test_errors_name_the_field(data: dict, field: str | None, words: str) -> None:
    with pytest.raises(InputError) as e:
        parse_config(data, "controller.yaml")
    assert e.value.where == "controller.yaml"
    assert e.value.field == field
    assert words in e.value.problem


def test_a_file_that_is_not_yaml_names_the_line(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("targets:\n  - namespace: llm\n    deployment: [unclosed\n")
    with pytest.raises(InputError) as e:
        load_config(p)
    assert "not valid YAML" in str(e.value) and e.value.row is not None


def test_a_missing_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="file not found"):
        load_config(tmp_path / "nope.yaml")


def test_structured_checkpoint_choice_carries_the_slo_target() -> None:
    from rlscale.deploy.config import PolicyChoice
    from rlscale.deploy.policies import policy_spec

    spec = policy_spec(PolicyChoice(checkpoint="/ck", slo_target=0.995), "c.yaml", "policy")
    assert str(spec) == "ppo:/ck#slo_target=0.995"
