"""The release gate: parsing requirements, passing, failing with the reason, and bad input."""

from __future__ import annotations

import pytest

from rlscale.errors import InputError
from rlscale.evaluation.gate import check_gate, gate_from_args, load_gate, parse_requirement


def rows(cand_cost=80.0, cand_slo=0.995, workload="w1"):
    return [
        {
            "policy": "ppo:v3",
            "spec": "ppo:checkpoints/v3",
            "profile": "p",
            "workload": workload,
            "seed": "mean",
            "cost_usd": cand_cost,
            "slo_attainment": cand_slo,
            "ttft_p95_s": 0.8,
        },
        {
            "policy": "tuned",
            "spec": "tuned",
            "profile": "p",
            "workload": workload,
            "seed": "mean",
            "cost_usd": 100.0,
            "slo_attainment": 0.993,
            "ttft_p95_s": 0.7,
        },
    ]


def test_requirements_parse_with_a_factor_a_reference_or_a_number():
    r = parse_requirement("cost<=0.85*tuned")
    assert (r.metric, r.op, r.factor, r.reference) == ("cost_usd", "<=", 0.85, "tuned")
    r = parse_requirement("slo >= tuned")
    assert (r.metric, r.op, r.factor, r.reference) == ("slo_attainment", ">=", 1.0, "tuned")
    r = parse_requirement("ttft_p95 <= 2")
    assert (r.metric, r.reference, r.bound) == ("ttft_p95_s", None, 2.0)
    assert parse_requirement("cost <= 0.9 x ppo:checkpoints/v2").reference == "ppo:checkpoints/v2"


def test_the_gate_passes_when_every_requirement_holds():
    gate = gate_from_args(["cost<=0.85*tuned", "slo>=tuned"])
    checks = check_gate(gate, rows(), "ppo:checkpoints/v3")
    assert [c.passed for c in checks] == [True, True]


def test_the_gate_fails_and_says_which_requirement_and_by_how_much():
    gate = gate_from_args(["cost<=0.85*tuned", "slo>=tuned"])
    checks = check_gate(gate, rows(cand_cost=90.0), "ppo:v3")
    failed = [c for c in checks if not c.passed]
    assert len(failed) == 1
    msg = failed[0].message
    assert "FAILED" in msg and "cost_usd 90" in msg and "0.85 x tuned 100" in msg and "= 85" in msg
    assert "w1" in msg and "[cost<=0.85*tuned]" in msg


def test_a_requirement_must_hold_on_every_workload():
    gate = gate_from_args(["slo>=0.994"])
    checks = check_gate(gate, rows() + rows(cand_slo=0.99, workload="w2"), "ppo:v3")
    assert [(c.workload, c.passed) for c in checks] == [("w1", True), ("w2", False)]


def test_gate_files_name_the_candidate_and_the_requirements(tmp_path):
    p = tmp_path / "gate.yaml"
    p.write_text(
        "policy: ppo:checkpoints/v3\nrequire:\n  - cost <= 0.85 * tuned\n  - slo >= tuned\n"
    )
    gate = load_gate(p)
    assert gate.policy == "ppo:checkpoints/v3" and len(gate.requirements) == 2


@pytest.mark.parametrize("text", ["cost", "cost <= ", "cost =< tuned", "cost <= 0.85 * 3"])
def test_unreadable_requirements_are_input_errors(text):
    with pytest.raises(InputError):
        parse_requirement(text)


def test_bad_gate_files_and_references_are_input_errors(tmp_path):
    p = tmp_path / "gate.yaml"
    p.write_text("require: cost <= tuned\n")
    with pytest.raises(InputError, match="require"):
        load_gate(p)
    with pytest.raises(InputError, match="not found"):
        load_gate(tmp_path / "nope.yaml")
    with pytest.raises(InputError, match="reference policy 'hpa'"):
        check_gate(gate_from_args(["cost<=hpa"]), rows(), "ppo:v3")
    with pytest.raises(InputError, match="unknown metric"):
        check_gate(gate_from_args(["latency<=tuned"]), rows(), "ppo:v3")
    with pytest.raises(InputError, match="was not evaluated"):
        check_gate(gate_from_args(["cost<=tuned"]), rows(), "static")


def test_a_metric_typo_fails_when_the_gate_is_read_not_after_the_evaluation(tmp_path):
    with pytest.raises(InputError, match="unknown metric 'cots'") as e:
        gate_from_args(["cots <= 0.85 * tuned"])
    assert "cost" in str(e.value)  # lists what is known
    p = tmp_path / "gate.yaml"
    p.write_text("require:\n  - cost <= 0.85 * tuned\n  - slo_attainmnet >= tuned\n")
    with pytest.raises(InputError) as e:
        load_gate(p)
    assert (
        e.value.field == "require.1" and str(p) in str(e.value) and "slo_attainmnet" in str(e.value)
    )


def test_record_keys_and_their_spread_are_gate_metrics():
    assert (
        gate_from_args(["cold_starts <= 40", "cost_usd_std <= 5", "gpu_hours <= hpa"])
        .requirements[2]
        .reference
        == "hpa"
    )


def test_an_unknown_gate_file_key_is_named(tmp_path):
    p = tmp_path / "gate.yaml"
    p.write_text("polcy: ppo:v3\nrequire:\n  - cost <= tuned\n")
    with pytest.raises(InputError) as e:
        load_gate(p)
    assert e.value.field == "polcy" and "unknown field" in str(e.value)
